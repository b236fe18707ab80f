//! Close reasons, half-close and connection quality (issue 9), on the in-memory network with
//! the link conditioner and a virtual clock: kcpnet ↔ kcpnet, kcpnet ↔ a kcpnet end with
//! `kcpnet_extensions` off (which speaks exactly kcp2k's wire: a bare Hello, a bare reply),
//! and kcpnet ↔ the real kcp2k datagrams of `tests/vectors/kcp2k/capture_basic.txt`.

mod common;

use common::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcpnet::io::{
    ConditionerControl, Conditions, Direction, LinkConditioner, ManualClock, MemoryNetwork,
    MemorySocket, PollReport, Transport,
};
use kcpnet::wire::datagram::Datagram;
use kcpnet::wire::segment::{segments, Command};
use kcpnet::{
    Channel, Client, CloseMessage, Config, ConnectionId, ConnectionState, DisconnectReason, Error,
    Extensions, OwnedEvent, Server,
};

// ------------------------------------------------------------------------ helpers

fn disconnects(events: &[OwnedEvent], id: ConnectionId) -> Vec<DisconnectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Disconnected { id: i, reason } if *i == id => Some(*reason),
            _ => None,
        })
        .collect()
}

fn peer_send_closed(events: &[OwnedEvent], id: ConnectionId) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, OwnedEvent::PeerSendClosed { id: i } if *i == id))
        .count()
}

/// The reliable messages of `id`, and whether any data event follows its
/// `PeerSendClosed`.
fn reliable_of(events: &[OwnedEvent], id: ConnectionId) -> (Vec<Vec<u8>>, bool) {
    let mut out = Vec::new();
    let mut closed = false;
    let mut after = false;
    for e in events {
        match e {
            OwnedEvent::Data {
                id: i,
                channel: Channel::Reliable,
                data,
            } if *i == id => {
                after |= closed;
                out.push(data.clone());
            }
            OwnedEvent::Data { id: i, .. } if *i == id => after |= closed,
            OwnedEvent::PeerSendClosed { id: i } if *i == id => closed = true,
            _ => {}
        }
    }
    (out, after)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One server and one client; the client's transport carries `conditions` both ways, so
/// each one-way path goes through the conditioner exactly once.
fn pair(seed: u64, server: Config, client: Config, conditions: Conditions) -> (Sim, ConnectionId) {
    let mut sim = Sim::new(server, seed);
    sim.add_client(client);
    sim.clients[0]
        .set_conditions(Direction::Both, conditions)
        .unwrap();
    sim.connect_all(20_000);
    let id = sim.server_id_of(0).unwrap();
    (sim, id)
}

fn lossy(loss: f64) -> Conditions {
    Conditions::lossy(loss).with_latency(ms(20))
}

/// Steps until both ends have closed (or `max_ms` pass).
fn run_until_closed(sim: &mut Sim, id: ConnectionId, max_ms: u64) {
    let done = sim.run_until(max_ms, |s| {
        s.server.state(id).is_none() && s.clients[0].state() == ConnectionState::Disconnected
    });
    assert!(
        done,
        "not closed within {max_ms} ms: server {:?}, client {:?}",
        sim.server.state(id),
        sim.clients[0].state()
    );
}

/// A datagram of kcpnet's extensions: a Close, a Hello with a payload, or a reliable
/// message whose header is kcpnet's (0x10 and up). `starts` tracks which PUSH segments
/// start a message (by sn, from the previous segment's `frg`).
fn kcpnet_bytes(dg: &[u8], frg_of: &mut BTreeMap<u32, u8>) -> Option<String> {
    let d = Datagram::parse(dg).ok()?;
    match d.channel {
        Channel::Unreliable => (d.payload[0] >= 0x10).then(|| format!("unreliable {dg:02x?}")),
        Channel::Reliable => {
            let mut found = None;
            for seg in segments(d.payload) {
                let (h, payload) = seg.ok()?;
                if h.cmd != Command::Push {
                    continue;
                }
                frg_of.insert(h.sn, h.frg);
                let starts = h.sn == 0 || frg_of.get(&(h.sn - 1)) == Some(&0);
                if starts && (payload[0] >= 0x10 || (payload[0] == 1 && payload.len() > 1)) {
                    found = Some(format!("reliable sn {} {:02x?}", h.sn, payload));
                }
            }
            found
        }
    }
}

/// Datagrams seen by a [`Tap`]: (virtual ms, bytes), both ways; and raw datagrams to send
/// to the server from the client's address at the next poll.
#[derive(Default)]
struct TapLog {
    sent: Vec<(u64, Vec<u8>)>,
    received: Vec<(u64, Vec<u8>)>,
    inject: Vec<Vec<u8>>,
}

type TapHandle = Arc<Mutex<TapLog>>;

/// A client transport that records every datagram it sends and receives, and sends the
/// test's raw datagrams.
struct Tap {
    inner: LinkConditioner<MemorySocket>,
    log: TapHandle,
    server: SocketAddr,
}

impl Transport for Tap {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        let r = self.inner.recv_from(buf, now)?;
        if let Some((n, _)) = r {
            let t = now.as_millis() as u64;
            self.log
                .lock()
                .unwrap()
                .received
                .push((t, buf[..n].to_vec()));
        }
        Ok(r)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> std::io::Result<bool> {
        let t = now.as_millis() as u64;
        self.log.lock().unwrap().sent.push((t, data.to_vec()));
        self.inner.send_to(data, to, now)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll(&mut self, now: Duration) -> std::io::Result<PollReport> {
        let inject = std::mem::take(&mut self.log.lock().unwrap().inject);
        for d in inject {
            self.inner.inner_mut().send_to(&d, self.server, now)?;
        }
        self.inner.poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        self.inner.next_wakeup()
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.inner.wait(timeout)
    }
}

/// [`pair`] with a tapped client.
fn tapped_pair(
    seed: u64,
    server: Config,
    client: Config,
    conditions: Conditions,
) -> (Sim, ConnectionId, TapHandle) {
    let mut sim = Sim::new(server, seed);
    let socket = sim.net.bind(client_addr(0)).unwrap();
    let log = TapHandle::default();
    let tap = Tap {
        inner: LinkConditioner::new(socket, seed ^ 0xA11CE),
        log: log.clone(),
        server: sim.server_addr,
    };
    // The conditioner sits inside the tap, out of the client's reach: set it directly.
    tap.inner
        .set_conditions(Direction::Both, conditions)
        .unwrap();
    let c = Client::with_transport(
        Box::new(tap),
        Box::new(sim.clock.clone()),
        sim.server_addr,
        client,
    )
    .unwrap();
    sim.clients.push(c);
    sim.client_events.push(Vec::new());
    sim.connect_all(20_000);
    let id = sim.server_id_of(0).unwrap();
    (sim, id, log)
}

/// Asserts that nothing the tapped client sent or received used a kcpnet extension but,
/// for a kcpnet client (`offers`), the offer in its Hello, which kcp2k ignores.
fn assert_plain_kcp2k(log: &TapHandle, offers: bool) {
    let log = log.lock().unwrap();
    let mut frg = BTreeMap::new();
    for (_, dg) in &log.sent {
        match kcpnet_bytes(dg, &mut frg) {
            Some(what) if offers && what.starts_with("reliable sn 0 [01, 4b, 4e, 45, 54") => {}
            other => assert_eq!(other, None, "client sent"),
        }
    }
    let mut frg = BTreeMap::new();
    for (_, dg) in &log.received {
        assert_eq!(kcpnet_bytes(dg, &mut frg), None, "client received");
    }
}

fn no_extensions() -> Config {
    Config {
        kcpnet_extensions: false,
        ..Config::default()
    }
}

// ================================================================== close reasons

/// What one scenario does, and what each side must report.
struct Scenario {
    name: &'static str,
    server: Config,
    client: Config,
    /// Conditions of the client's transport (both ways).
    conditions: Conditions,
    /// Runs the close; called every step until both sides closed.
    act: fn(&mut Sim, ConnectionId, u64),
    server_sees: fn(&DisconnectReason) -> bool,
    client_sees: fn(&DisconnectReason) -> bool,
}

fn scenarios(loss: f64) -> Vec<Scenario> {
    let short = Config {
        timeout_ms: 2_000,
        ..Config::default()
    };
    vec![
        Scenario {
            name: "server kicks with a reason",
            server: Config::default(),
            client: Config::default(),
            conditions: lossy(loss),
            act: |s, id, step| {
                if step == 0 {
                    s.server
                        .disconnect_with(id, 403, "kicked: speed hack")
                        .unwrap();
                }
            },
            server_sees: |r| *r == DisconnectReason::Local,
            client_sees: |r| matches!(r, DisconnectReason::App { code: 403, message } if message.as_str() == "kicked: speed hack"),
        },
        Scenario {
            name: "client leaves with a reason",
            server: Config::default(),
            client: Config::default(),
            conditions: lossy(loss),
            act: |s, _, step| {
                if step == 0 {
                    s.clients[0].disconnect_with(7, "rage quit ✓").unwrap();
                }
            },
            server_sees: |r| matches!(r, DisconnectReason::App { code: 7, message } if &**message == "rage quit ✓"),
            client_sees: |r| *r == DisconnectReason::Local,
        },
        Scenario {
            name: "server kicks without a reason",
            server: Config::default(),
            client: Config::default(),
            conditions: lossy(loss),
            act: |s, id, step| {
                if step == 0 {
                    s.server.disconnect(id).unwrap();
                }
            },
            server_sees: |r| *r == DisconnectReason::Local,
            client_sees: |r| *r == DisconnectReason::Remote,
        },
        Scenario {
            name: "server shuts down",
            server: Config::default(),
            client: Config::default(),
            conditions: lossy(loss),
            act: |s, _, step| {
                if step == 0 {
                    s.server.shutdown();
                }
            },
            server_sees: |r| *r == DisconnectReason::Closed,
            client_sees: |r| *r == DisconnectReason::RemoteShutdown,
        },
        Scenario {
            name: "the server sees a protocol error (mtu mismatch)",
            server: Config::default(),
            client: Config {
                mtu: 1400,
                ..Config::default()
            },
            conditions: lossy(loss),
            act: |s, _, step| {
                // Unreliable, so repeat until one gets through.
                if step % 20 == 0 && s.clients[0].is_connected() {
                    let _ = s.clients[0].send(&[9; 1300], Channel::Unreliable);
                }
            },
            server_sees: |r| *r == DisconnectReason::ProtocolError,
            client_sees: |r| matches!(r, DisconnectReason::RemoteProtocolError { message } if message.contains("mtu")),
        },
        Scenario {
            name: "the server times out (the client's sends are lost)",
            server: short.clone(),
            client: short.clone(),
            conditions: lossy(loss),
            act: |s, _, step| {
                if step == 0 {
                    s.clients[0]
                        .set_conditions(Direction::Send, Conditions::lossy(1.0))
                        .unwrap();
                }
            },
            server_sees: |r| *r == DisconnectReason::Timeout,
            client_sees: |r| *r == DisconnectReason::RemoteTimeout,
        },
        Scenario {
            name: "the server chokes",
            server: Config {
                queue_disconnect_threshold: 50,
                ..Config::default()
            },
            client: Config::default(),
            conditions: lossy(loss),
            act: |s, id, step| {
                if step == 0 {
                    for _ in 0..60 {
                        s.server.send(id, &[1; 100], Channel::Reliable).unwrap();
                    }
                }
            },
            server_sees: |r| *r == DisconnectReason::Congestion,
            client_sees: |r| *r == DisconnectReason::RemoteCongestion,
        },
        Scenario {
            name: "server closes gracefully with a reason",
            server: Config::default(),
            client: Config::default(),
            conditions: lossy(loss),
            act: |s, id, step| {
                if step == 0 {
                    for k in 0..20 {
                        s.server
                            .send(id, &payload(1, k, 3000), Channel::Reliable)
                            .unwrap();
                    }
                    s.server
                        .disconnect_graceful_with(id, 1, "match over")
                        .unwrap();
                }
            },
            server_sees: |r| *r == DisconnectReason::Local,
            client_sees: |r| matches!(r, DisconnectReason::App { code: 1, message } if message.as_str() == "match over"),
        },
    ]
}

fn run_scenario(sc: &Scenario, seed: u64) -> Sim {
    let (mut sim, id) = pair(
        seed,
        sc.server.clone(),
        sc.client.clone(),
        sc.conditions.clone(),
    );
    let cid = sim.clients[0].id();
    for step in 0..30_000 {
        if sim.server.state(id).is_none() && sim.clients[0].state() == ConnectionState::Disconnected
        {
            break;
        }
        (sc.act)(&mut sim, id, step);
        sim.step();
    }
    let server = disconnects(&sim.server_events, id);
    let client = disconnects(&sim.client_events[0], cid);
    assert!(
        server.len() == 1 && (sc.server_sees)(&server[0]),
        "{} (seed {seed}): the server saw {server:?}",
        sc.name
    );
    assert!(
        client.len() == 1 && (sc.client_sees)(&client[0]),
        "{} (seed {seed}): the client saw {client:?}",
        sc.name
    );
    sim
}

/// Every close reason reaches a kcpnet peer under 20% loss on each path (the cause travels in
/// each of the five close datagrams), and the causes are told apart: a kick (with and
/// without a reason), a shutdown, a protocol error, a timeout, congestion, a graceful close
/// with a reason after its queued data.
#[test]
fn each_close_reason_arrives_under_20_percent_loss() {
    for sc in scenarios(0.20) {
        for seed in 1..=16 {
            let sim = run_scenario(&sc, seed);
            if sc.name.starts_with("server closes gracefully") {
                let (got, _) = reliable_of(&sim.client_events[0], sim.clients[0].id());
                let want: Vec<Vec<u8>> = (0..20).map(|k| payload(1, k, 3000)).collect();
                assert_eq!(got, want, "every queued message before the reason");
            }
        }
    }
}

/// Against a kcp2k peer (a kcpnet end with the extensions off speaks exactly kcp2k) every
/// close is a plain Disconnect: the kcp2k side sees `Remote`, and no extension byte travels.
#[test]
fn close_reasons_degrade_to_a_plain_disconnect_against_kcp2k() {
    for (server, client) in [
        (Config::default(), no_extensions()),
        (no_extensions(), Config::default()),
    ] {
        // The server kicks with a reason.
        let (mut sim, id, log) = tapped_pair(3, server.clone(), client.clone(), lossy(0.0));
        assert_eq!(sim.server.extensions(id), Some(Extensions::NONE));
        assert_eq!(sim.clients[0].extensions(), Extensions::NONE);
        sim.server.disconnect_with(id, 403, "kicked").unwrap();
        run_until_closed(&mut sim, id, 1_000);
        let cid = sim.clients[0].id();
        assert_eq!(
            disconnects(&sim.server_events, id),
            vec![DisconnectReason::Local]
        );
        assert_eq!(
            disconnects(&sim.client_events[0], cid),
            vec![DisconnectReason::Remote]
        );
        let plain: Vec<Vec<u8>> = log
            .lock()
            .unwrap()
            .received
            .iter()
            .map(|(_, d)| d.clone())
            .filter(|d| d[0] == 2)
            .collect();
        assert_eq!(plain.len(), 5);
        assert!(
            plain.iter().all(|d| d.len() == 6 && d[5] == 5),
            "{plain:02x?}"
        );
        assert_plain_kcp2k(&log, client.kcpnet_extensions);

        // The client leaves with a reason; the server shuts down on another connection.
        let (mut sim, id, log) = tapped_pair(4, server.clone(), client.clone(), lossy(0.0));
        sim.clients[0].disconnect_with(9, "bye").unwrap();
        run_until_closed(&mut sim, id, 1_000);
        assert_eq!(
            disconnects(&sim.server_events, id),
            vec![DisconnectReason::Remote]
        );
        let sent: Vec<Vec<u8>> = log
            .lock()
            .unwrap()
            .sent
            .iter()
            .map(|(_, d)| d.clone())
            .filter(|d| d[0] == 2)
            .collect();
        assert_eq!(sent.len(), 5);
        assert!(sent.iter().all(|d| d.len() == 6 && d[5] == 5));
        assert_plain_kcp2k(&log, client.kcpnet_extensions);

        let (mut sim, id, log) = tapped_pair(5, server.clone(), client.clone(), lossy(0.0));
        sim.server.shutdown();
        sim.run_for(ms(100));
        let cid = sim.clients[0].id();
        assert_eq!(
            disconnects(&sim.client_events[0], cid),
            vec![DisconnectReason::Remote]
        );
        let _ = id;
        assert_plain_kcp2k(&log, client.kcpnet_extensions);
    }
}

#[test]
fn a_close_message_is_capped_with_a_typed_error() {
    let (mut sim, id) = pair(6, Config::default(), Config::default(), lossy(0.0));
    let long = "x".repeat(CloseMessage::MAX_LEN + 1);
    assert!(matches!(
        sim.server.disconnect_with(id, 1, &long),
        Err(Error::ReasonTooLong {
            size: 129,
            max: 128
        })
    ));
    assert!(sim.server.is_connected(id), "nothing happened");
    assert!(matches!(
        sim.clients[0].disconnect_with(1, &long),
        Err(Error::ReasonTooLong { .. })
    ));
    assert!(sim.clients[0].is_connected());
    // Exactly 128 bytes (multi-byte characters included) go through whole.
    let max = "é".repeat(64);
    sim.server.disconnect_with(id, 2, &max).unwrap();
    run_until_closed(&mut sim, id, 1_000);
    let cid = sim.clients[0].id();
    assert_eq!(
        disconnects(&sim.client_events[0], cid),
        vec![DisconnectReason::App {
            code: 2,
            message: CloseMessage::new(&max).unwrap()
        }]
    );
    assert_eq!(
        format!("{}", disconnects(&sim.client_events[0], cid)[0]),
        format!("closed by the peer: code 2: {max}")
    );
    // A small mtu carries less: 64 - 12 bytes.
    let small = Config {
        mtu: 64,
        ..Config::default()
    };
    let (mut sim, id) = pair(7, small.clone(), small, lossy(0.0));
    assert!(matches!(
        sim.server.disconnect_with(id, 1, &"y".repeat(53)),
        Err(Error::ReasonTooLong { size: 53, max: 52 })
    ));
    sim.server.disconnect_with(id, 1, &"y".repeat(52)).unwrap();
    run_until_closed(&mut sim, id, 1_000);
    let cid = sim.clients[0].id();
    assert!(matches!(
        disconnects(&sim.client_events[0], cid)[..],
        [DisconnectReason::App { code: 1, message }] if message.len() == 52
    ));
}

// ===================================================================== half-close

/// Runs a half-close under `conditions`: the `first` side queues `n` reliable messages and
/// shuts down its sending; the other side, once it saw `PeerSendClosed`, sends `n` of its
/// own and shuts down too. Checks everything both ways.
fn half_close(seed: u64, conditions: Conditions, server_first: bool, n: u64) {
    let (mut sim, id) = pair(seed, Config::default(), Config::default(), conditions);
    let cid = sim.clients[0].id();
    assert_eq!(sim.server.extensions(id), Some(Extensions::ALL));
    assert_eq!(sim.clients[0].extensions(), Extensions::ALL);
    let (a, b) = if server_first { (10, 20) } else { (20, 10) };
    // The first side: everything queued, then the shutdown.
    for k in 0..n {
        let m = payload(a, k, 50 + (k as usize * 997) % 4000);
        if server_first {
            sim.server.send(id, &m, Channel::Reliable).unwrap();
        } else {
            sim.clients[0].send(&m, Channel::Reliable).unwrap();
        }
    }
    if server_first {
        sim.server.shutdown_send(id).unwrap();
        sim.server.shutdown_send(id).unwrap(); // again: a no-op
        assert_eq!(sim.server.state(id), Some(ConnectionState::SendClosed));
        assert!(matches!(
            sim.server.send(id, b"late", Channel::Reliable),
            Err(Error::SendClosed)
        ));
        assert!(matches!(
            sim.server.send(id, b"late", Channel::Unreliable),
            Err(Error::SendClosed)
        ));
        assert_eq!(sim.server.send_capacity(id), Some(0));
    } else {
        sim.clients[0].shutdown_send().unwrap();
        assert_eq!(sim.clients[0].state(), ConnectionState::SendClosed);
        assert!(matches!(
            sim.clients[0].send(b"late", Channel::Reliable),
            Err(Error::SendClosed)
        ));
    }
    // The other side sees the event after every message, then answers and shuts down.
    let seen = |s: &Sim| {
        if server_first {
            peer_send_closed(&s.client_events[0], cid) == 1
        } else {
            peer_send_closed(&s.server_events, id) == 1
        }
    };
    assert!(sim.run_until(60_000, seen), "PeerSendClosed never came");
    if server_first {
        assert_eq!(sim.clients[0].state(), ConnectionState::PeerSendClosed);
        assert_eq!(sim.server.state(id), Some(ConnectionState::SendClosed));
    } else {
        assert_eq!(sim.server.state(id), Some(ConnectionState::PeerSendClosed));
        assert_eq!(sim.clients[0].state(), ConnectionState::SendClosed);
    }
    for k in 0..n {
        let m = payload(b, k, 30 + (k as usize * 1231) % 5000);
        if server_first {
            sim.clients[0].send(&m, Channel::Reliable).unwrap();
            // The half-closed side can still send unreliable messages too.
            if k == 0 {
                sim.clients[0].send(b"u", Channel::Unreliable).unwrap();
            }
        } else {
            sim.server.send(id, &m, Channel::Reliable).unwrap();
        }
    }
    if server_first {
        sim.clients[0].shutdown_send().unwrap();
    } else {
        sim.server.shutdown_send(id).unwrap();
    }
    run_until_closed(&mut sim, id, 60_000);

    let want_a: Vec<Vec<u8>> = (0..n)
        .map(|k| payload(a, k, 50 + (k as usize * 997) % 4000))
        .collect();
    let want_b: Vec<Vec<u8>> = (0..n)
        .map(|k| payload(b, k, 30 + (k as usize * 1231) % 5000))
        .collect();
    let (at_client, client_after) = reliable_of(&sim.client_events[0], cid);
    let (at_server, server_after) = reliable_of(&sim.server_events, id);
    let (to_client, to_server) = if server_first {
        (want_a, want_b)
    } else {
        (want_b, want_a)
    };
    assert_eq!(
        at_client, to_client,
        "every message to the client (seed {seed})"
    );
    assert_eq!(
        at_server, to_server,
        "every message to the server (seed {seed})"
    );
    assert!(
        !client_after && !server_after,
        "no data after PeerSendClosed"
    );
    assert_eq!(peer_send_closed(&sim.client_events[0], cid), 1);
    assert_eq!(peer_send_closed(&sim.server_events, id), 1);
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::Finished]
    );
    assert_eq!(
        disconnects(&sim.client_events[0], cid),
        vec![DisconnectReason::Finished]
    );
    assert!(matches!(
        sim.server.send(id, b"x", Channel::Reliable),
        Err(Error::ConnectionClosed)
    ));
}

#[test]
fn half_close_server_first_delivers_everything_both_ways() {
    half_close(11, Conditions::default(), true, 40);
    for seed in 12..16 {
        half_close(seed, lossy(0.20), true, 40);
    }
}

#[test]
fn half_close_client_first_delivers_everything_both_ways() {
    half_close(21, Conditions::default(), false, 40);
    for seed in 22..26 {
        half_close(seed, lossy(0.20), false, 40);
    }
}

/// Both sides shut down in the same tick: each receives the other's SendShutdown before
/// its own is acknowledged; the connection still ends once, `Finished`, on both sides.
#[test]
fn simultaneous_half_close_finishes_once_on_each_side() {
    for seed in 30..36 {
        let conditions = if seed == 30 {
            Conditions::default()
        } else {
            lossy(0.2)
        };
        let (mut sim, id) = pair(seed, Config::default(), Config::default(), conditions);
        let cid = sim.clients[0].id();
        sim.server.send(id, b"s", Channel::Reliable).unwrap();
        sim.clients[0].send(b"c", Channel::Reliable).unwrap();
        sim.server.shutdown_send(id).unwrap();
        sim.clients[0].shutdown_send().unwrap();
        run_until_closed(&mut sim, id, 60_000);
        assert_eq!(
            disconnects(&sim.server_events, id),
            vec![DisconnectReason::Finished],
            "seed {seed}"
        );
        assert_eq!(
            disconnects(&sim.client_events[0], cid),
            vec![DisconnectReason::Finished],
            "seed {seed}"
        );
        assert_eq!(reliable_of(&sim.server_events, id).0, vec![b"c".to_vec()]);
        assert_eq!(
            reliable_of(&sim.client_events[0], cid).0,
            vec![b"s".to_vec()]
        );
    }
}

/// Against a kcp2k peer `shutdown_send` is a graceful disconnect: queued messages are
/// delivered, then a plain Disconnect; the kcp2k side sees `Remote`. Both pairings, both
/// directions; no extension byte on the wire.
#[test]
fn half_close_against_kcp2k_is_a_graceful_disconnect() {
    for (server, client) in [
        (Config::default(), no_extensions()),
        (no_extensions(), Config::default()),
    ] {
        for server_first in [true, false] {
            let (mut sim, id, log) = tapped_pair(40, server.clone(), client.clone(), lossy(0.1));
            let cid = sim.clients[0].id();
            let msgs: Vec<Vec<u8>> = (0..20).map(|k| payload(5, k, 2500)).collect();
            for m in &msgs {
                if server_first {
                    sim.server.send(id, m, Channel::Reliable).unwrap();
                } else {
                    sim.clients[0].send(m, Channel::Reliable).unwrap();
                }
            }
            if server_first {
                sim.server.shutdown_send(id).unwrap();
                assert_eq!(sim.server.state(id), Some(ConnectionState::Disconnecting));
            } else {
                sim.clients[0].shutdown_send().unwrap();
                assert_eq!(sim.clients[0].state(), ConnectionState::Disconnecting);
            }
            run_until_closed(&mut sim, id, 30_000);
            let (to, at_server, at_client) = (
                msgs,
                reliable_of(&sim.server_events, id).0,
                reliable_of(&sim.client_events[0], cid).0,
            );
            let (local, remote) = if server_first {
                assert_eq!(at_client, to);
                (
                    disconnects(&sim.server_events, id),
                    disconnects(&sim.client_events[0], cid),
                )
            } else {
                assert_eq!(at_server, to);
                (
                    disconnects(&sim.client_events[0], cid),
                    disconnects(&sim.server_events, id),
                )
            };
            assert_eq!(local, vec![DisconnectReason::Local]);
            assert_eq!(remote, vec![DisconnectReason::Remote]);
            assert_eq!(peer_send_closed(&sim.server_events, id), 0);
            assert_eq!(peer_send_closed(&sim.client_events[0], cid), 0);
            assert_plain_kcp2k(&log, client.kcpnet_extensions);
        }
    }
}

// =========================================================== the real kcp2k capture

/// The cookie the real kcp2k server handed out in the capture.
const REAL_COOKIE: u32 = 4_150_018_856;

/// The capture's datagrams: (ms, client to server, bytes).
fn capture() -> Vec<(f64, bool, Vec<u8>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/kcp2k/capture_basic.txt"
    );
    std::fs::read_to_string(path)
        .expect("capture file")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let bytes = (0..f[3].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).unwrap())
                .collect();
            (f[0].parse().unwrap(), f[1] == "c2s", bytes)
        })
        .collect()
}

struct RawPeer {
    net: MemoryNetwork,
    clock: ManualClock,
    socket: MemorySocket,
    buf: Vec<u8>,
}

impl RawPeer {
    fn new(at: &str) -> RawPeer {
        let net = MemoryNetwork::new();
        let socket = net.bind(at.parse().unwrap()).unwrap();
        RawPeer {
            net,
            clock: ManualClock::starting_at(Duration::from_secs(1)),
            socket,
            buf: vec![0; 65_536],
        }
    }

    fn send(&mut self, data: &[u8], to: SocketAddr) {
        self.socket.send_to(data, to, self.clock.now()).unwrap();
    }

    fn take(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((n, _)) = self
            .socket
            .recv_from(&mut self.buf, self.clock.now())
            .unwrap()
        {
            out.push(self.buf[..n].to_vec());
        }
        out
    }
}

fn plain_disconnects(datagrams: &[Vec<u8>], cookie: u32) -> usize {
    let mut want = vec![2u8];
    want.extend_from_slice(&cookie.to_le_bytes());
    want.push(5);
    datagrams.iter().filter(|d| **d == want).count()
}

/// The real kcp2k client's datagrams against a kcpnet server: its bare Hello gets the
/// 54-byte kcp2k reply (no extension byte), the connection negotiates nothing, and
/// `disconnect_with` and `shutdown_send` degrade to the plain Disconnect (five `02 cookie
/// 05`), which is all the kcp2k client would see.
#[test]
fn the_real_kcp2k_client_gets_plain_kcp2k_from_every_close() {
    let cap = capture();
    for how in [
        "disconnect_with",
        "shutdown_send",
        "disconnect_graceful_with",
    ] {
        let mut raw = RawPeer::new("127.0.0.1:50000");
        let server_addr: SocketAddr = "127.0.0.1:18800".parse().unwrap();
        let mut server = Server::with_transport(
            Box::new(raw.net.bind(server_addr).unwrap()),
            Box::new(raw.clock.clone()),
            Config::default(),
        )
        .unwrap();
        server.seed_cookies_for_testing(42);
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let mut cookie = None;
        let tick = |server: &mut Server, raw: &mut RawPeer, events: &mut Vec<OwnedEvent>| {
            server.tick_incoming();
            while let Some(e) = server.poll_event() {
                events.push(e.to_owned_event());
            }
            server.tick_outgoing();
            raw.clock.advance(ms(1));
        };
        // The handshake and the first data datagrams (#000 .. #010), cookies patched.
        for (_, c2s, bytes) in cap.iter().take(11).filter(|l| l.1).cloned() {
            assert!(c2s);
            let mut dg = bytes;
            if u32::from_le_bytes(dg[1..5].try_into().unwrap()) == REAL_COOKIE {
                dg[1..5].copy_from_slice(&cookie.unwrap_or(0u32).to_le_bytes());
            }
            raw.send(&dg, server_addr);
            tick(&mut server, &mut raw, &mut events);
            for r in raw.take() {
                cookie.get_or_insert(u32::from_le_bytes(r[1..5].try_into().unwrap()));
                replies.push(r);
            }
        }
        let cookie = cookie.unwrap();
        assert_eq!(
            replies[0].len(),
            54,
            "the kcp2k server's reply, byte for byte in size"
        );
        let mut frg = BTreeMap::new();
        for r in &replies {
            assert_eq!(kcpnet_bytes(r, &mut frg), None);
        }
        let id = events[0].id();
        assert!(matches!(events[0], OwnedEvent::Connected { .. }));
        assert_eq!(server.extensions(id), Some(Extensions::NONE));
        match how {
            "disconnect_with" => server.disconnect_with(id, 403, "kicked").unwrap(),
            "shutdown_send" => {
                server.shutdown_send(id).unwrap();
                assert_eq!(server.state(id), Some(ConnectionState::Disconnecting));
            }
            _ => server.disconnect_graceful_with(id, 1, "bye").unwrap(),
        }
        let mut after = Vec::new();
        for _ in 0..4_000 {
            tick(&mut server, &mut raw, &mut events);
            after.extend(raw.take());
            if server.connection_count() == 0 {
                break;
            }
        }
        assert_eq!(server.connection_count(), 0, "{how}");
        while let Some(e) = server.poll_event() {
            events.push(e.to_owned_event());
        }
        assert_eq!(plain_disconnects(&after, cookie), 5, "{how}: {after:02x?}");
        for r in &after {
            assert_eq!(kcpnet_bytes(r, &mut frg), None, "{how}");
        }
        assert_eq!(
            disconnects(&events, id),
            vec![DisconnectReason::Local],
            "{how}"
        );
    }
}

/// A kcpnet client against the real kcp2k server's answer (capture #001): its Hello offers
/// the extensions (kcp2k ignores the offer), the bare Hello in the answer means none, and
/// from then on the client speaks plain kcp2k: data, `disconnect_with` and `shutdown_send`
/// all look as they would from a kcp2k client.
#[test]
fn a_kcpnet_client_falls_back_to_kcp2k_on_the_real_servers_bare_hello() {
    let cap = capture();
    let server_reply = &cap[1].2;
    assert!(!cap[1].1);
    for how in ["disconnect_with", "shutdown_send"] {
        let mut raw = RawPeer::new("127.0.0.1:18800");
        let server_addr: SocketAddr = "127.0.0.1:18800".parse().unwrap();
        let client_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let mut client = Client::with_transport(
            Box::new(raw.net.bind(client_addr).unwrap()),
            Box::new(raw.clock.clone()),
            server_addr,
            Config::default(),
        )
        .unwrap();
        client.tick_outgoing();
        let hello = raw.take();
        assert_eq!(hello.len(), 1);
        assert_eq!(
            hello[0].len(),
            39,
            "30 bytes of kcp2k Hello + the 9-byte offer"
        );
        assert_eq!(
            &hello[0][29..],
            &[
                0x01,
                0x4B,
                0x4E,
                0x45,
                0x54,
                0x01,
                Extensions::ALL.bits() as u8,
                0x00,
                0x00,
                0x00
            ],
            "Hello, \"KNET\", version 1, bits 0-2 (and 5, FEC, with the `fec` feature)"
        );
        raw.send(server_reply, client_addr);
        client.tick_incoming();
        let mut events = Vec::new();
        while let Some(e) = client.poll_event() {
            events.push(e.to_owned_event());
        }
        assert!(
            matches!(events[..], [OwnedEvent::Connected { .. }]),
            "{events:?}"
        );
        assert_eq!(client.extensions(), Extensions::NONE);
        client.send(b"hi", Channel::Reliable).unwrap();
        client.tick_outgoing();
        match how {
            "disconnect_with" => client.disconnect_with(7, "bye").unwrap(),
            _ => {
                client.shutdown_send().unwrap();
                assert_eq!(client.state(), ConnectionState::Disconnecting);
            }
        }
        let mut sent = Vec::new();
        for _ in 0..4_000 {
            client.tick_incoming();
            while let Some(e) = client.poll_event() {
                events.push(e.to_owned_event());
            }
            client.tick_outgoing();
            raw.clock.advance(ms(1));
            sent.extend(raw.take());
            if client.state() == ConnectionState::Disconnected {
                break;
            }
        }
        assert_eq!(client.state(), ConnectionState::Disconnected, "{how}");
        sent.extend(raw.take());
        while let Some(e) = client.poll_event() {
            events.push(e.to_owned_event());
        }
        assert_eq!(plain_disconnects(&sent, REAL_COOKIE), 5, "{how}");
        let mut frg = BTreeMap::new();
        for d in &sent {
            assert_eq!(kcpnet_bytes(d, &mut frg), None, "{how}");
        }
        assert_eq!(
            disconnects(&events, client.id()),
            vec![DisconnectReason::Local]
        );
    }
}

// ======================================================================== quality

fn wide() -> Config {
    Config {
        send_window_size: 512,
        receive_window_size: 512,
        ..Config::default()
    }
}

/// Client → server bulk traffic (`per_ms` one-segment reliable messages per ms) for
/// `secs` seconds with `loss` on the data path and `latency` each way; the client's loss
/// estimate read once a second after a 2 s warm-up.
fn loss_readings(seed: u64, loss: f64, latency: u64, per_ms: usize, secs: u64) -> Vec<(f32, u32)> {
    let (mut sim, _) = pair(seed, wide(), wide(), Conditions::lossy(0.0));
    sim.clients[0]
        .set_conditions(
            Direction::Send,
            Conditions::lossy(loss).with_latency(ms(latency)),
        )
        .unwrap();
    sim.clients[0]
        .set_conditions(
            Direction::Receive,
            Conditions::lossy(0.0).with_latency(ms(latency)),
        )
        .unwrap();
    let mut readings = Vec::new();
    for t in 0..secs * 1000 {
        for k in 0..per_ms {
            let _ = sim.clients[0].send(&payload(7, t * 8 + k as u64, 1000), Channel::Reliable);
        }
        sim.step();
        if t >= 2000 && t % 1000 == 0 {
            let q = sim.clients[0].connection_quality();
            // The deprecated 1 s retransmission ratio still works (bulk traffic gives it
            // samples enough; `tests/loss_estimate.rs` covers game packet rates).
            #[allow(deprecated)]
            readings.push((q.loss, q.loss_samples));
        }
    }
    readings
}

/// The loss estimate (retransmitted ÷ sent segments over the last second) is within 2
/// percentage points of the conditioner's configured loss: pooled over ten readings at every
/// loss rate, and in every single reading up to 10% (at 20% KCP's backoff sometimes stalls
/// the window, and a reading then has a handful of samples).
#[test]
fn the_loss_estimate_matches_the_configured_loss() {
    for (seed, loss) in [(50, 0.02), (51, 0.05), (52, 0.10), (53, 0.20)] {
        let readings = loss_readings(seed, loss, 10, 2, 12);
        // Pooled: Σ retransmitted / Σ sent, each reading weighted by its samples.
        let samples: f64 = readings.iter().map(|r| r.1 as f64).sum();
        let mean = readings
            .iter()
            .map(|r| r.0 as f64 * r.1 as f64)
            .sum::<f64>()
            / samples;
        println!(
            "configured loss {:.0}%: estimate {:.2}% pooled, readings {:?}",
            loss * 100.0,
            mean * 100.0,
            readings
                .iter()
                .map(|r| format!("{:.1}% of {}", r.0 * 100.0, r.1))
                .collect::<Vec<_>>()
        );
        assert!((mean - loss).abs() <= 0.02, "mean {mean} for {loss}");
        for &(l, n) in &readings {
            if loss <= 0.10 {
                assert!(n > 1000, "{n} segments in a window");
                assert!((l as f64 - loss).abs() <= 0.02, "reading {l} for {loss}");
            }
        }
    }
    // No loss, no retransmission.
    let clean = loss_readings(54, 0.0, 10, 2, 4);
    assert!(clean.iter().all(|r| r.0 == 0.0 && r.1 > 1000), "{clean:?}");
}

/// KCP's RTT is within 10% of the configured delay (50 ms each way), and stays there under
/// load, while the Ping/Pong RTT — pings wait in the reliable stream behind the backlog —
/// reports the queueing delay: the two are named apart.
#[test]
fn the_kcp_rtt_matches_the_configured_delay_and_ping_rtt_shows_queueing() {
    let delay = Conditions::lossy(0.0).with_latency(ms(50));
    let (mut sim, id) = pair(60, Config::default(), Config::default(), delay);
    for t in 0..10_000u64 {
        if t % 100 == 0 {
            sim.clients[0]
                .send(&payload(8, t, 100), Channel::Reliable)
                .unwrap();
        }
        sim.step();
    }
    let q = sim.clients[0].connection_quality();
    let sq = sim.server.connection_quality(id).unwrap();
    println!(
        "idle: client KCP RTT {} ms (var {}), ping {:?} ms; server KCP RTT {} ms, ping {:?} ms",
        q.kcp_rtt_ms, q.kcp_rtt_var_ms, q.ping_rtt_ms, sq.kcp_rtt_ms, sq.ping_rtt_ms
    );
    for rtt in [q.kcp_rtt_ms, sq.kcp_rtt_ms] {
        assert!(
            (90..=110).contains(&rtt),
            "KCP RTT {rtt} for a 100 ms round trip"
        );
    }
    for rtt in [q.ping_rtt_ms.unwrap(), sq.ping_rtt_ms.unwrap()] {
        assert!((90..=110).contains(&rtt), "ping RTT {rtt} while idle");
    }
    assert_eq!(
        sim.clients[0].connection_stats().srtt_ms,
        q.kcp_rtt_ms,
        "the same estimator as ConnectionStats::srtt_ms"
    );

    // A backlog of 1,600 segments: with a 32-segment window and a 100 ms round trip it takes
    // 5 s to drain, and the pings queued behind it wait that long (between kcpnet ends a
    // busy connection pings every 2.25–3 s: at least one Ping joins the queue early).
    for k in 0..1_600 {
        sim.clients[0]
            .send(&payload(9, k, 1100), Channel::Reliable)
            .unwrap();
    }
    let mut max_ping = 0;
    let mut kcp = Vec::new();
    for t in 0..7_000u64 {
        sim.step();
        if t % 100 == 0 {
            let q = sim.clients[0].connection_quality();
            max_ping = max_ping.max(q.ping_rtt_ms.unwrap_or(0));
            if t >= 500 {
                kcp.push(q.kcp_rtt_ms);
            }
        }
    }
    let worst = kcp.iter().map(|r| r.abs_diff(100)).max().unwrap();
    println!("loaded: ping RTT up to {max_ping} ms, KCP RTT {kcp:?}");
    assert!(
        max_ping > 500,
        "pings queued behind the backlog: {max_ping} ms"
    );
    assert!(worst <= 10, "KCP RTT under load: {kcp:?}");
}

/// Messages and bytes per second, both ways, are within 5% of the traffic sent (bytes
/// checked against what the client's transport really carried).
#[test]
fn the_rates_match_the_traffic() {
    let (mut sim, id, log) = tapped_pair(
        61,
        Config::default(),
        Config::default(),
        Conditions::lossy(0.0).with_latency(ms(15)),
    );
    // 50 unreliable messages of 300 bytes and 20 reliable ones of 500 bytes a second, and
    // the server sends 10 reliable messages of 1000 bytes a second back.
    for t in 0..6_000u64 {
        if t % 20 == 0 {
            sim.clients[0]
                .send(&payload(1, t, 300), Channel::Unreliable)
                .unwrap();
        }
        if t % 50 == 0 {
            sim.clients[0]
                .send(&payload(2, t, 500), Channel::Reliable)
                .unwrap();
        }
        if t % 100 == 0 {
            sim.server
                .send(id, &payload(3, t, 1000), Channel::Reliable)
                .unwrap();
        }
        sim.step();
    }
    let now = sim.clock.now().as_millis() as u64;
    let log = log.lock().unwrap();
    let rate = |v: &[(u64, Vec<u8>)]| {
        v.iter()
            .filter(|(t, _)| *t + 3_000 >= now)
            .map(|(_, d)| d.len())
            .sum::<usize>() as f32
            / 3.0
    };
    let (sent, received) = (rate(&log.sent), rate(&log.received));
    let q = sim.clients[0].connection_quality();
    let sq = sim.server.connection_quality(id).unwrap();
    println!(
        "client out {:.0} B/s (wire {sent:.0}), in {:.0} B/s (wire {received:.0}), \
         messages out {:.1}/s in {:.1}/s; server in {:.0} B/s, messages in {:.1}/s out {:.1}/s",
        q.bytes_out_per_sec,
        q.bytes_in_per_sec,
        q.messages_out_per_sec,
        q.messages_in_per_sec,
        sq.bytes_in_per_sec,
        sq.messages_in_per_sec,
        sq.messages_out_per_sec
    );
    let close = |a: f32, b: f32| (a - b).abs() <= 0.05 * b;
    assert_eq!(q.window_ms, 1000);
    assert!(close(q.messages_out_per_sec, 70.0));
    assert!(close(q.messages_in_per_sec, 10.0));
    assert!(close(sq.messages_in_per_sec, 70.0));
    assert!(close(sq.messages_out_per_sec, 10.0));
    assert!(
        close(q.bytes_out_per_sec, sent),
        "{} vs {sent}",
        q.bytes_out_per_sec
    );
    assert!(close(q.bytes_in_per_sec, received));
    assert!(close(sq.bytes_in_per_sec, sent));
    assert!(close(sq.bytes_out_per_sec, received));
    // What the application sent, plus kcp2k framing: 50 × 306 + 20 × 530 bytes a second.
    assert!(close(q.bytes_out_per_sec, 50.0 * 306.0 + 20.0 * 530.0));
}

/// Every 4-byte Ping is answered (kcp2k's sample rate: a kcp2k-style client, which pings
/// every second), even when jitter brings two Pings less than a second apart; the limit
/// only stops floods (unit-tested in `quality.rs`).
#[test]
fn every_ping_gets_a_pong() {
    let (mut sim, _, log) = tapped_pair(
        62,
        Config::default(),
        Config {
            kcpnet_extensions: false,
            ..Config::default()
        },
        Conditions::lossy(0.0)
            .with_latency(ms(40))
            .with_jitter(ms(30)),
    );
    sim.run_for(Duration::from_secs(30));
    let log = log.lock().unwrap();
    let count = |v: &[(u64, Vec<u8>)], header: u8| {
        let mut seen = BTreeMap::new();
        for (_, d) in v {
            let Ok(dg) = Datagram::parse(d) else { continue };
            if dg.channel != Channel::Reliable {
                continue;
            }
            for (h, p) in segments(dg.payload).flatten() {
                if h.cmd == Command::Push && p.len() == 5 && p[0] == header {
                    seen.insert(h.sn, ());
                }
            }
        }
        seen.len()
    };
    let pings = count(&log.sent, 2);
    let pongs = count(&log.received, 4);
    println!("{pings} pings sent, {pongs} pongs received in 30 s");
    assert!(pings >= 29);
    assert!(pongs + 1 >= pings, "{pongs} pongs for {pings} pings");
}

/// With the quality-reports extension each side learns what fraction of its unreliable
/// messages the other lost; against kcp2k there is no such figure.
#[test]
fn the_peer_reports_unreliable_loss() {
    let (mut sim, id) = pair(
        63,
        Config::default(),
        Config::default(),
        Conditions::lossy(0.0),
    );
    sim.clients[0]
        .set_conditions(
            Direction::Send,
            Conditions::lossy(0.10).with_latency(ms(20)),
        )
        .unwrap();
    let mut readings = Vec::new();
    for t in 0..12_000u64 {
        if t % 2 == 0 {
            sim.clients[0]
                .send(&payload(4, t, 100), Channel::Unreliable)
                .unwrap();
        }
        sim.step();
        if t >= 3_000 && t % 1000 == 0 {
            let q = sim.clients[0].connection_quality();
            let sq = sim.server.connection_quality(id).unwrap();
            readings.push((
                q.peer_unreliable_loss.unwrap(),
                sq.unreliable_loss_in.unwrap(),
            ));
        }
    }
    println!("client's unreliable loss as reported by the server / seen by it: {readings:?}");
    let mean = readings.iter().map(|r| r.0).sum::<f32>() / readings.len() as f32;
    assert!((mean - 0.10).abs() <= 0.02, "{mean}");
    for (reported, seen) in &readings {
        assert!((reported - 0.10).abs() <= 0.03 && (seen - 0.10).abs() <= 0.03);
    }
    // The server sends no unreliable traffic: nothing to report.
    assert_eq!(
        sim.server
            .connection_quality(id)
            .unwrap()
            .peer_unreliable_loss,
        None
    );

    let (mut sim, id) = pair(
        64,
        Config::default(),
        no_extensions(),
        Conditions::lossy(0.1),
    );
    for t in 0..3_000u64 {
        if t % 2 == 0 {
            let _ = sim.clients[0].send(&payload(4, t, 100), Channel::Unreliable);
        }
        sim.step();
    }
    assert_eq!(
        sim.clients[0].connection_quality().peer_unreliable_loss,
        None
    );
    assert_eq!(
        sim.server
            .connection_quality(id)
            .unwrap()
            .unreliable_loss_in,
        None
    );
}

/// Pending reliable bytes and messages, time since the last datagram, connected time and
/// the peer's window.
#[test]
fn pending_data_and_silence_are_visible() {
    let (mut sim, id) = pair(
        65,
        Config::default(),
        Config::default(),
        Conditions::lossy(0.0),
    );
    sim.run_for(ms(500));
    let q = sim.clients[0].connection_quality();
    assert_eq!(q.pending_reliable_messages, 0);
    assert!(q.since_last_receive_ms < 1000);
    assert!((500..=600).contains(&q.connected_ms), "{}", q.connected_ms);
    assert_eq!(q.peer_window, 128);
    // The link goes down both ways: what the client queues stays pending, silence grows.
    sim.clients[0]
        .set_conditions(Direction::Both, Conditions::lossy(1.0))
        .unwrap();
    for k in 0..10 {
        sim.clients[0]
            .send(&payload(6, k, 3000), Channel::Reliable)
            .unwrap();
    }
    sim.run_for(Duration::from_secs(3));
    let q = sim.clients[0].connection_quality();
    println!("link down 3 s: {q:?}");
    assert!(q.pending_reliable_messages >= 10);
    assert!(q.pending_reliable_bytes >= 10 * 3001);
    assert!(
        q.pending_reliable_bytes < 10 * 3001 + 100,
        "plus a ping or two"
    );
    // Nothing arrived since before the link went down (the server's first ping was due
    // later): silence since connecting.
    assert!(
        q.since_last_receive_ms >= 3_000,
        "{}",
        q.since_last_receive_ms
    );
    assert!(q.since_last_receive_ms <= q.connected_ms);
    assert!(
        q.retransmit_ratio.value > 0.9,
        "everything sent is being retransmitted: {:?}",
        q.retransmit_ratio
    );
    assert_eq!(q.bytes_in_per_sec, 0.0);
    let stats = sim.clients[0].connection_stats();
    assert_eq!(
        stats.quality.pending_reliable_bytes,
        q.pending_reliable_bytes
    );
    assert!(stats.segments_sent > stats.retransmits);
    let _ = id;
}

// ====================================================================== handshake

/// A client that sends unreliable messages the moment it sees `Connected` (before its
/// `tick_outgoing`) reaches the server: it reports `Connected` only once the server has
/// admitted it (see tests/admission.rs). (Before, the echo client's first unreliable
/// messages over UDP arrived ahead of its ACK of the server's Hello and were dropped as a
/// stranger's.)
#[test]
fn unreliable_messages_sent_on_connected_are_not_lost() {
    let mut sim = Sim::new(Config::default(), 70);
    sim.add_client(Config::default());
    let mut sent = false;
    for _ in 0..200 {
        sim.step_with(
            |_, _| {},
            |_, client, ev| {
                if let OwnedEvent::Connected { .. } = ev {
                    client.send(b"first", Channel::Unreliable).unwrap();
                    sent = true;
                }
            },
        );
    }
    assert!(sent);
    let got: Vec<_> = data_of(&sim.server_events, None);
    assert_eq!(got, vec![(Channel::Unreliable, &b"first"[..])]);
    assert_eq!(sim.server.stats().dropped_unknown, 0);
}

// ================================================================= hostile input

/// The cookie the tapped client uses (from its last datagram).
fn cookie_of(log: &TapHandle) -> u32 {
    let log = log.lock().unwrap();
    let last = &log.sent.last().unwrap().1;
    u32::from_le_bytes(last[1..5].try_into().unwrap())
}

fn inject(sim: &mut Sim, log: &TapHandle, datagram: Vec<u8>) {
    log.lock().unwrap().inject.push(datagram);
    sim.run_for(ms(100)); // 20 ms each way
}

/// kcpnet-only datagrams are undefined headers on a connection that did not negotiate
/// them (as for kcp2k); malformed ones are protocol errors; a valid Close is honoured.
#[test]
fn kcpnet_only_datagrams_are_checked() {
    let close = |cookie: u32, tail: &[u8]| {
        let mut d = vec![2];
        d.extend_from_slice(&cookie.to_le_bytes());
        d.push(0x10);
        d.extend_from_slice(tail);
        d
    };
    // Not negotiated (the client has the extensions off): a Close is an undefined header.
    let (mut sim, id, log) = tapped_pair(80, Config::default(), no_extensions(), lossy(0.0));
    let cookie = cookie_of(&log);
    inject(
        &mut sim,
        &log,
        close(cookie, &[1, 1, 0, 0, 0, 2, b'h', b'i']),
    );
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::ProtocolError]
    );
    // Negotiated: a cut-short Close, a wrong length, a message that is not UTF-8, a quality
    // report shorter than 6 bytes: protocol errors, told to the client.
    let bad: [&[u8]; 3] = [
        &[1, 1, 0],
        &[1, 1, 0, 0, 0, 5, b'h', b'i'],
        &[1, 1, 0, 0, 0, 2, 0xFF, 0xFE],
    ];
    for (seed, tail) in (81..).zip(bad) {
        let (mut sim, id, log) =
            tapped_pair(seed, Config::default(), Config::default(), lossy(0.0));
        let cookie = cookie_of(&log);
        inject(&mut sim, &log, close(cookie, tail));
        assert_eq!(
            disconnects(&sim.server_events, id),
            vec![DisconnectReason::ProtocolError],
            "{tail:02x?}"
        );
        assert!(sim.server_events.iter().any(|e| matches!(
            e,
            OwnedEvent::Error { message, .. } if message.contains("Close")
        )));
        let cid = sim.clients[0].id();
        let told = disconnects(&sim.client_events[0], cid);
        assert!(
            matches!(told[..], [DisconnectReason::RemoteProtocolError { .. }]),
            "{tail:02x?}: {told:?}"
        );
    }
    let (mut sim, id, log) = tapped_pair(85, Config::default(), Config::default(), lossy(0.0));
    let cookie = cookie_of(&log);
    let mut report = vec![2];
    report.extend_from_slice(&cookie.to_le_bytes());
    report.extend_from_slice(&[0x11, 1, 2, 3]);
    inject(&mut sim, &log, report);
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::ProtocolError]
    );
    // A valid Close with an unknown cause is a plain Disconnect; one with cause App gives
    // the code and the message.
    let (mut sim, id, log) = tapped_pair(86, Config::default(), Config::default(), lossy(0.0));
    let cookie = cookie_of(&log);
    inject(&mut sim, &log, close(cookie, &[99, 0, 0, 0, 0, 0]));
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::Remote]
    );
    let (mut sim, id, log) = tapped_pair(87, Config::default(), Config::default(), lossy(0.0));
    let cookie = cookie_of(&log);
    inject(
        &mut sim,
        &log,
        close(cookie, &[1, 0x93, 0x01, 0, 0, 3, b'b', b'y', b'e']),
    );
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::App {
            code: 403,
            message: CloseMessage::new("bye").unwrap()
        }]
    );
}
