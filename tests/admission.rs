//! `Connected` means admitted: a kcpnet client reports `Connected` only once the server has
//! created its connection (docs/PROTOCOL.md, "Handshake"), so nothing it sends after
//! `Connected` is dropped as coming from a stranger.
//!
//! The stateless server creates the connection when a datagram carrying its cookie and
//! `una <= 1` arrives. The client sends that proof of address as a reliable Ping, flushed
//! with its ACK of the server's Hello and retransmitted by KCP until the server acknowledges
//! it; against a kcpnet server (its Hello carries the extension block) the client waits for
//! that acknowledgement (or anything else only a connection sends). Against a bare Hello (a
//! kcp2k server, which admitted the client on its Hello) it is `Connected` at once.
//!
//! Virtual clock, in-memory network, seeded link conditioners; every loop is bounded.
mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcpnet::io::{
    ConditionerControl, Conditions, Direction, LinkConditioner, ManualClock, MemoryNetwork,
    MemorySocket, PollReport, Transport,
};
use kcpnet::wire::datagram::Datagram;
use kcpnet::wire::segment::{segments, Command};
use kcpnet::{Channel, Client, Config, ConnectionState, Error, OwnedEvent};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// 5% loss each way on the client's link, 10–15 ms one way.
fn lossy_link() -> Conditions {
    Conditions::lossy(0.05)
        .with_latency(ms(10))
        .with_jitter(ms(5))
}

/// The same link without loss.
fn clean_link() -> Conditions {
    Conditions::default()
        .with_latency(ms(10))
        .with_jitter(ms(5))
}

/// Virtual ms since the simulation started.
fn now(sim: &Sim) -> u64 {
    sim.clock.now().as_millis() as u64
}

/// When each side reported `Connected` (virtual ms), and the client's KCP RTO then.
#[derive(Debug, Default, Clone, Copy)]
struct Handshake {
    server_at: Option<u64>,
    client_at: Option<u64>,
    client_rto: u32,
}

/// Steps `sim` (one client) until the client is connected, noting when each side reported
/// it; `on_connected` runs in the step the client's `Connected` is seen (before the clock
/// moves on). Gives up after `max_steps`.
fn run_handshake(
    sim: &mut Sim,
    max_steps: u64,
    mut on_connected: impl FnMut(&mut Sim),
) -> Handshake {
    let mut h = Handshake::default();
    for _ in 0..max_steps {
        // One step by hand, so the time of each side's event is exact.
        let t = now(sim);
        sim.server.tick_incoming();
        while let Some(ev) = sim.server.poll_event() {
            let ev = ev.to_owned_event();
            if matches!(ev, OwnedEvent::Connected { .. }) && h.server_at.is_none() {
                h.server_at = Some(t);
            }
            sim.server_events.push(ev);
        }
        sim.server.tick_outgoing();
        let client = &mut sim.clients[0];
        client.tick_incoming();
        while let Some(ev) = client.poll_event() {
            sim.client_events[0].push(ev.to_owned_event());
        }
        let connected_now = h.client_at.is_none() && client.is_connected();
        if connected_now {
            h.client_at = Some(t);
            h.client_rto = client.connection_stats().rto_ms;
            on_connected(sim);
        }
        sim.clients[0].tick_outgoing();
        sim.clock.advance(ms(sim.step_ms));
        sim.steps += 1;
        if connected_now {
            break;
        }
    }
    h
}

/// Over 200 seeds at 5% loss each way: the server reports `Connected` no later than the
/// client (so within one RTO of it, the bound the rule promises), no datagram of the pair
/// is ever dropped as coming from a stranger while the client sends unreliable messages in
/// every tick from its `Connected` on. (The client's `Connected` follows the server's by
/// the server's answer to the proof: half a round trip, plus an RTO per lost answer.)
#[test]
fn under_loss_the_server_has_admitted_the_client_when_it_reports_connected() {
    let mut lags = Vec::new();
    let mut sent_total = 0u64;
    let mut received_total = 0usize;
    for seed in 0..200u64 {
        let mut sim = Sim::new(Config::default(), seed);
        sim.add_client(Config::default());
        sim.clients[0]
            .set_conditions(Direction::Both, lossy_link())
            .unwrap();
        let mut seq = 0u64;
        let h = run_handshake(&mut sim, 20_000, |s| {
            s.clients[0]
                .send(&payload(seed, 0, 32), Channel::Unreliable)
                .unwrap();
        });
        seq += 1;
        let (Some(server_at), Some(client_at)) = (h.server_at, h.client_at) else {
            panic!("seed {seed}: handshake incomplete: {h:?}");
        };
        assert!(
            server_at <= client_at,
            "seed {seed}: the server reported Connected at {server_at} ms, after the client \
             ({client_at} ms, RTO {} ms)",
            h.client_rto
        );
        lags.push(client_at - server_at);
        // Unreliable messages in every tick for 300 ms after Connected.
        for _ in 0..300 {
            sim.clients[0]
                .send(&payload(seed, seq, 32), Channel::Unreliable)
                .unwrap();
            seq += 1;
            sim.step();
        }
        sim.run_for(ms(200));
        let stats = sim.server.stats();
        assert_eq!(
            stats.dropped_unknown, 0,
            "seed {seed}: the server dropped datagrams of its only client as unknown: {stats:?}"
        );
        assert_eq!(stats.connections_accepted, 1, "seed {seed}");
        assert_eq!(sim.clients[0].stats().dropped_unknown, 0, "seed {seed}");
        let id = sim.server_id_of(0).unwrap();
        sent_total += seq;
        received_total += data_of(&sim.server_events, Some(id)).len();
    }
    lags.sort_unstable();
    println!(
        "client Connected after the server's: p50 {} ms, max {} ms; unreliable messages \
         received {received_total} of {sent_total} at 5% loss",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
    // Only the link's loss: about 5% of the messages.
    assert!(received_total as f64 >= 0.9 * sent_total as f64);
}

/// Over 200 seeds the handshake runs at 5% loss each way; from the client's `Connected` on
/// the link is lossless, and every unreliable message sent from that tick on arrives (none
/// is dropped because the server did not know the client yet).
#[test]
fn every_unreliable_message_sent_after_connected_arrives_over_a_clean_link() {
    for seed in 0..200u64 {
        let mut sim = Sim::new(Config::default(), seed);
        sim.add_client(Config::default());
        sim.clients[0]
            .set_conditions(Direction::Both, lossy_link())
            .unwrap();
        let first = payload(seed, 0, 20);
        let h = run_handshake(&mut sim, 20_000, |s| {
            s.clients[0]
                .set_conditions(Direction::Both, clean_link())
                .unwrap();
            // In the very tick `Connected` is reported.
            s.clients[0].send(&first, Channel::Unreliable).unwrap();
        });
        assert!(h.client_at.is_some(), "seed {seed}: {h:?}");
        let mut sent = vec![first.clone()];
        for k in 1..50 {
            let m = payload(seed, k, 20);
            sim.clients[0].send(&m, Channel::Unreliable).unwrap();
            sent.push(m);
            sim.step();
        }
        sim.run_for(ms(100));
        let id = sim.server_id_of(0).expect("server connected");
        let got: Vec<Vec<u8>> = data_of(&sim.server_events, Some(id))
            .into_iter()
            .map(|(c, d)| {
                assert_eq!(c, Channel::Unreliable);
                d.to_vec()
            })
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut sent_sorted = sent.clone();
        sent_sorted.sort();
        assert_eq!(
            got_sorted,
            sent_sorted,
            "seed {seed}: {} of {} messages arrived; server stats {:?}",
            got.len(),
            sent.len(),
            sim.server.stats()
        );
        assert_eq!(sim.server.stats().dropped_unknown, 0, "seed {seed}");
    }
}

/// A client transport (a seeded conditioner) that notes when the client sent its first
/// datagram carrying a cookie: its proof of address, sent while it processed the server's
/// Hello — the moment it reported `Connected` before the proof existed.
struct NoteProof {
    inner: LinkConditioner<MemorySocket>,
    proof_at: Arc<Mutex<Option<u64>>>,
}

impl Transport for NoteProof {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        self.inner.recv_from(buf, now)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> std::io::Result<bool> {
        let mut at = self.proof_at.lock().unwrap();
        if at.is_none() && data.len() > 5 && data[1..5] != [0; 4] {
            *at = Some(now.as_millis() as u64);
        }
        drop(at);
        self.inner.send_to(data, to, now)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll(&mut self, now: Duration) -> std::io::Result<PollReport> {
        self.inner.poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        self.inner.next_wakeup()
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.inner.wait(timeout)
    }
}

/// What waiting for admission costs a kcpnet client, over 200 seeds at 5% loss each way on
/// a 10–15 ms link: the time from its proof of address (sent when it processed the server's
/// Hello, where it used to report `Connected`) to its `Connected`. One round trip, plus an
/// RTO per lost proof or lost answer.
#[test]
fn waiting_for_admission_costs_a_round_trip() {
    let mut waits = Vec::new();
    for seed in 0..200u64 {
        let mut sim = Sim::new(Config::default(), seed);
        let proof_at = Arc::new(Mutex::new(None));
        let inner = LinkConditioner::new(sim.net.bind(client_addr(0)).unwrap(), seed + 1);
        inner.set_conditions(Direction::Both, lossy_link()).unwrap();
        let client = Client::with_transport(
            Box::new(NoteProof {
                inner,
                proof_at: proof_at.clone(),
            }),
            Box::new(sim.clock.clone()),
            sim.server_addr,
            Config::default(),
        )
        .unwrap();
        sim.clients.push(client);
        sim.client_events.push(Vec::new());
        let h = run_handshake(&mut sim, 20_000, |_| {});
        let client_at = h.client_at.expect("connected");
        let proof_at = proof_at.lock().unwrap().expect("a proof was sent");
        assert!(h.server_at.unwrap() <= client_at);
        waits.push(client_at - proof_at);
    }
    waits.sort_unstable();
    let (p50, p99, max) = (waits[100], waits[198], waits[199]);
    println!("proof of address to Connected: p50 {p50} ms, p99 {p99} ms, max {max} ms");
    // A round trip is 20-30 ms here (+ 1 ms steps).
    assert!((20..=32).contains(&p50), "p50 {p50} ms");
}

// ------------------------------------------------------- losing the proof of address

/// What the [`DropProof`] transport shares with the test.
#[derive(Default)]
struct ProofLog {
    /// Every datagram the client sent (the dropped one included), with the time.
    sent: Vec<(u64, Vec<u8>)>,
    /// The dropped datagram and when.
    dropped: Option<(u64, Vec<u8>)>,
}

/// A client transport that drops exactly one datagram: the first one carrying a cookie (the
/// client's proof of address, with its ACK of the server's Hello).
struct DropProof {
    inner: MemorySocket,
    log: Arc<Mutex<ProofLog>>,
}

impl Transport for DropProof {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        self.inner.recv_from(buf, now)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> std::io::Result<bool> {
        let mut log = self.log.lock().unwrap();
        let t = now.as_millis() as u64;
        log.sent.push((t, data.to_vec()));
        if log.dropped.is_none() && data.len() > 5 && data[1..5] != [0; 4] {
            log.dropped = Some((t, data.to_vec()));
            return Ok(true); // lost on the way
        }
        self.inner.send_to(data, to, now)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll(&mut self, now: Duration) -> std::io::Result<PollReport> {
        self.inner.poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        self.inner.next_wakeup()
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.inner.wait(timeout)
    }
}

/// The KCP segments of a reliable datagram: (cmd, sn, una, first payload byte, payload len).
fn segs(dg: &[u8]) -> Vec<(Command, u32, u32, Option<u8>, usize)> {
    let d = Datagram::parse(dg).expect("a valid datagram");
    assert_eq!(d.channel, Channel::Reliable);
    segments(d.payload)
        .map(|s| {
            let (h, p) = s.expect("a valid segment");
            (h.cmd, h.sn, h.una, p.first().copied(), p.len())
        })
        .collect()
}

/// The client's proof of address (ACK of the server's Hello + a reliable Ping, sn 1) is
/// lost: the client stays `Connecting` (its sends refused) and the server knows nothing of
/// it until KCP retransmits the Ping one RTO later, well before the first keepalive Ping
/// (500 ms or more); that retransmission admits it, and the client reports `Connected` once
/// the server answered.
#[test]
fn a_lost_proof_of_address_is_retransmitted_and_admits_the_client() {
    let mut sim = Sim::new(Config::default(), 7);
    let socket = sim.net.bind(client_addr(0)).unwrap();
    let log = Arc::new(Mutex::new(ProofLog::default()));
    let client = Client::with_transport(
        Box::new(DropProof {
            inner: socket,
            log: log.clone(),
        }),
        Box::new(sim.clock.clone()),
        sim.server_addr,
        Config::default(),
    )
    .unwrap();
    sim.clients.push(client);
    sim.client_events.push(Vec::new());

    // Until the proof is dropped.
    assert!(sim.run_until(1_000, |_| log.lock().unwrap().dropped.is_some()));
    let (dropped_at, proof) = log.lock().unwrap().dropped.clone().unwrap();
    let proof_segs = segs(&proof);
    assert!(
        proof_segs.contains(&(Command::Ack, 0, 1, None, 0)),
        "the ACK of the server's Hello: {proof_segs:?}"
    );
    assert!(
        proof_segs.contains(&(Command::Push, 1, 1, Some(2), 5)),
        "a reliable Ping (header 2, 4-byte timestamp), sn 1, una 1: {proof_segs:?}"
    );
    let rto = sim.clients[0].connection_stats().rto_ms as u64;

    // Nothing admitted yet: the client waits, its sends are refused.
    let mut retransmitted_at = None;
    for _ in 0..1_000 {
        if sim.server.connection_count() > 0 {
            break;
        }
        assert_eq!(sim.clients[0].state(), ConnectionState::Connecting);
        assert!(!sim.clients[0].is_connected());
        assert!(matches!(
            sim.clients[0].send(b"too early", Channel::Unreliable),
            Err(Error::NotConnected)
        ));
        sim.step();
    }
    assert_eq!(
        sim.server.connection_count(),
        1,
        "the retransmission admits"
    );
    for (t, dg) in &log.lock().unwrap().sent {
        if *t > dropped_at && segs(dg).iter().any(|s| s.0 == Command::Push && s.1 == 1) {
            retransmitted_at = Some(*t);
            break;
        }
    }
    let retransmitted_at = retransmitted_at.expect("the Ping was retransmitted");
    let gap = retransmitted_at - dropped_at;
    println!("proof lost at {dropped_at} ms, retransmitted {gap} ms later (RTO {rto} ms)");
    // KCP checks its timers every `interval_ms` (10).
    assert!(
        gap <= rto + 10,
        "retransmitted after {gap} ms, RTO {rto} ms"
    );
    assert!(gap < 500, "not the keepalive Ping: {gap} ms");

    // The server is first; the client follows on its answer.
    let server_at = now(&sim);
    assert!(sim.run_until(100, |s| s.clients[0].is_connected()));
    assert!(now(&sim) >= server_at);
    assert_eq!(sim.server.stats().dropped_unknown, 0);
    assert_eq!(sim.server.stats().connections_accepted, 1);
    sim.clients[0].send(b"now", Channel::Unreliable).unwrap();
    sim.run_for(ms(10));
    let id = sim.server_id_of(0).unwrap();
    assert_eq!(
        data_of(&sim.server_events, Some(id)),
        vec![(Channel::Unreliable, &b"now"[..])]
    );
}

// ----------------------------------------------------------------- a bare Hello

/// The real kcp2k server's reply to the capture's Hello (capture #001): a bare Hello.
fn kcp2k_hello_reply() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/kcp2k/capture_basic.txt"
    );
    let text = std::fs::read_to_string(path).expect("capture file");
    let line = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split_whitespace().nth(1) == Some("s2c"))
        .expect("the server's first datagram");
    let hex = line.split_whitespace().nth(3).unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Against a kcp2k server (the real server's bare Hello reply, played by a raw socket) the
/// client reports `Connected` in the tick that reply arrives, as before: no added delay. Its
/// proof of address still goes out at once (the ACK and a plain kcp2k Ping).
#[test]
fn a_bare_hello_connects_at_once() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::starting_at(Duration::from_secs(1));
    let server_addr: SocketAddr = "10.0.0.1:18800".parse().unwrap();
    let mut server = net.bind(server_addr).unwrap();
    let mut client = Client::with_transport(
        Box::new(net.bind(client_addr(0)).unwrap()),
        Box::new(clock.clone()),
        server_addr,
        Config::default(),
    )
    .unwrap();
    client.tick_outgoing(); // the Hello
    let mut buf = [0u8; 2048];
    let (n, from) = server.recv_from(&mut buf, clock.now()).unwrap().unwrap();
    assert_eq!(n, 39, "the Hello with kcpnet's offer");
    clock.advance(ms(20));
    server
        .send_to(&kcp2k_hello_reply(), from, clock.now())
        .unwrap();
    client.tick_incoming();
    assert!(client.is_connected(), "Connected on the bare reply itself");
    assert!(matches!(
        client.poll_event().map(|e| e.to_owned_event()),
        Some(OwnedEvent::Connected { .. })
    ));
    // The proof went out while the reply was processed: ACK sn 0 and Ping sn 1, una 1.
    let (n, _) = server.recv_from(&mut buf, clock.now()).unwrap().unwrap();
    let s = segs(&buf[..n]);
    assert!(s.contains(&(Command::Ack, 0, 1, None, 0)), "{s:?}");
    assert!(s.contains(&(Command::Push, 1, 1, Some(2), 5)), "{s:?}");
    client.send(b"hi", Channel::Unreliable).unwrap();
}

/// A kcpnet server with `kcpnet_extensions` off answers a bare Hello, which the client
/// cannot tell from kcp2k's: it reports `Connected` on it, and the proof it sent at once
/// admits it there one trip later (the server's `Connected` follows by the link's delay).
#[test]
fn a_kcpnet_server_without_extensions_admits_on_the_proof() {
    let server_config = Config {
        kcpnet_extensions: false,
        ..Config::default()
    };
    let mut sim = Sim::new(server_config, 3);
    sim.add_client(Config::default());
    sim.clients[0]
        .set_conditions(Direction::Both, Conditions::default().with_latency(ms(10)))
        .unwrap();
    let h = run_handshake(&mut sim, 1_000, |_| {});
    let client_at = h.client_at.expect("connected");
    assert!(sim.run_until(100, |s| s.server.connection_count() == 1));
    let id = sim.server_id_of(0).unwrap();
    let server_at = now(&sim) - 1;
    assert!(
        server_at >= client_at && server_at - client_at <= 12,
        "client {client_at} ms, server {server_at} ms"
    );
    assert!(sim.server.extensions(id).unwrap().is_empty());
    assert_eq!(sim.server.stats().dropped_unknown, 0);
}

// ------------------------------------------------------------- older connections

/// A datagram of an older connection from the same address (the server kicked it, the
/// client did not hear of it) does not create a new connection while its cookie still
/// verifies: after the handshake the client has received the server's Pong to its proof,
/// so its segments carry `una >= 2`.
#[test]
fn a_kicked_clients_datagrams_do_not_readmit_it() {
    let mut sim = Sim::new(Config::default(), 11);
    sim.add_client(Config::default());
    sim.connect_all(1_000);
    sim.run_for(ms(50));
    let id = sim.server_id_of(0).unwrap();
    // The client hears nothing more from the server: it never learns of the kick.
    sim.clients[0]
        .set_conditions(Direction::Receive, Conditions::lossy(1.0))
        .unwrap();
    sim.server.disconnect(id).unwrap();
    sim.run_for(ms(10));
    assert_eq!(sim.server.connection_count(), 0);
    assert!(sim.clients[0].is_connected());
    let before = sim.server.stats().dropped_after_close;
    sim.clients[0]
        .send(b"after the kick", Channel::Reliable)
        .unwrap();
    sim.run_for(ms(1_500)); // retransmissions and a keepalive Ping
    assert_eq!(sim.server.connection_count(), 0, "re-admitted");
    assert_eq!(sim.server.stats().connections_accepted, 1);
    // Counted as datagrams of a connection that just closed (same address and cookie).
    assert!(sim.server.stats().dropped_after_close > before);
}

// ---------------------------------------------------------------- a full server

/// A server at `max_connections` drops the proof of a further client (`dropped_limit`), and
/// each of its retransmissions: that client never reports `Connected` (before, it did, and
/// timed out 10 s later with the server knowing nothing of it); its sends are refused and the
/// handshake timeout ends the attempt.
#[test]
fn a_client_the_full_server_cannot_admit_stays_connecting_until_the_handshake_timeout() {
    let server_config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let client_config = Config {
        handshake_timeout_ms: 3_000,
        ..Config::default()
    };
    let mut sim = Sim::new(server_config, 5);
    sim.add_client(client_config.clone());
    sim.connect_all(1_000);
    let late = sim.add_client(client_config);
    let start = now(&sim);
    let mut ended_at = None;
    for _ in 0..4_000 {
        sim.step();
        if sim.clients[late].state() == ConnectionState::Disconnected {
            ended_at = Some(now(&sim));
            break;
        }
        assert!(!sim.clients[late].is_connected());
        assert!(matches!(
            sim.clients[late].send(b"x", Channel::Unreliable),
            Err(Error::NotConnected)
        ));
    }
    let ended_at = ended_at.expect("the handshake timed out");
    assert!(
        (start + 3_000..=start + 3_100).contains(&ended_at),
        "{start} → {ended_at}"
    );
    let events = &sim.client_events[late];
    assert!(
        matches!(
            &events[..],
            [
                OwnedEvent::Error {
                    code: kcpnet::ErrorCode::Timeout,
                    ..
                },
                OwnedEvent::Disconnected {
                    reason: kcpnet::DisconnectReason::Timeout,
                    ..
                }
            ]
        ),
        "{events:?}"
    );
    let stats = sim.server.stats();
    assert!(
        stats.dropped_limit >= 3,
        "the proof and its retransmissions: {stats:?}"
    );
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.dropped_unknown, 0);
}
