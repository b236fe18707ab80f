//! Server/Client integration tests through the public API, over the in-memory network with
//! one virtual clock (tests/common). Nothing here reads the wall clock; every loop is
//! bounded.
mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcpnet::io::{
    Conditions, Direction, LinkConditioner, ManualClock, MemoryNetwork, MemorySocket, PollReport,
    Transport,
};
use kcpnet::wire::segment::{segments, Command, SegmentHeader};
use kcpnet::{
    Channel, Client, ClientCtx, Config, ConnectionId, ConnectionState, DisconnectReason, Error,
    ErrorCode, Event, OwnedEvent, Server,
};

/// The 30-byte Hello of a real kcp2k client (PROTOCOL.md §1, capture #000).
const KCP2K_HELLO: &str = "010000000000000000510080006800000000000000000000000100000001";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ------------------------------------------------------------------ helpers

/// Messages in `events` that belong to `id`, with their channels (owned copies).
fn data_of(events: &[OwnedEvent], id: ConnectionId) -> Vec<(Channel, Vec<u8>)> {
    common::data_of(events, Some(id))
        .into_iter()
        .map(|(c, d)| (c, d.to_vec()))
        .collect()
}

/// Asserts that `pair` is an `Error` with `code` followed by `Disconnected { id, reason }`.
fn assert_error_then_disconnected(
    pair: &[OwnedEvent],
    code: ErrorCode,
    id: ConnectionId,
    reason: DisconnectReason,
) {
    assert!(
        matches!(&pair[0], OwnedEvent::Error { code: c, .. } if *c == code),
        "{pair:?}"
    );
    assert_eq!(pair[1], OwnedEvent::Disconnected { id, reason });
}

fn disconnects(events: &[OwnedEvent], id: ConnectionId) -> Vec<DisconnectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Disconnected { id: i, reason } if *i == id => Some(*reason),
            _ => None,
        })
        .collect()
}

fn connects(events: &[OwnedEvent]) -> Vec<(ConnectionId, SocketAddr)> {
    events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Connected { id, addr } => Some((*id, *addr)),
            _ => None,
        })
        .collect()
}

/// The events of `id` that are not Data, in order (for checking Error/Disconnected order).
fn control_events(events: &[OwnedEvent], id: ConnectionId) -> Vec<OwnedEvent> {
    events
        .iter()
        .filter(|e| e.id() == id && !matches!(e, OwnedEvent::Data { .. }))
        .cloned()
        .collect()
}

fn connected_sim(config: Config, seed: u64) -> (Sim, ConnectionId) {
    let mut sim = Sim::new(config.clone(), seed);
    sim.add_client(config);
    sim.connect_all(200);
    let id = sim.server_id_of(0).expect("server reported the connection");
    (sim, id)
}

/// One step in the drained-queue form: the server's events are taken with `poll_event` and
/// handed (owned) to `on_server`, which may call back into the server. Clients as in the
/// harness.
fn step_queue(sim: &mut Sim, mut on_server: impl FnMut(&mut Server, &OwnedEvent)) {
    sim.server.tick_incoming();
    while let Some(ev) = sim.server.poll_event() {
        let ev = ev.to_owned_event();
        on_server(&mut sim.server, &ev);
        sim.server_events.push(ev);
    }
    sim.server.tick_outgoing();
    sim.step_clients();
}

/// One step in which the server is ticked but its events are never taken, and client
/// events are recorded.
fn step_server_never_drained(sim: &mut Sim) {
    sim.server.tick_incoming();
    sim.server.tick_outgoing();
    sim.step_clients();
}

fn now_ms(sim: &Sim) -> u64 {
    sim.clock.now().as_millis() as u64
}

// --------------------------------------------------------------- tap transport

/// What a [`Tap`] shares with the test: datagrams to inject from the tapped address, and a
/// record of what the endpoint sent.
#[derive(Default)]
struct TapState {
    inject: Vec<(Vec<u8>, SocketAddr)>,
    sent: Vec<Vec<u8>>,
}

type TapHandle = Arc<Mutex<TapState>>;

/// A client transport (memory socket + conditioner) through which the test can send raw
/// datagrams from the client's own address and see what the client sent.
struct Tap {
    inner: LinkConditioner<MemorySocket>,
    state: TapHandle,
}

impl Transport for Tap {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        self.inner.recv_from(buf, now)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> std::io::Result<bool> {
        self.state.lock().unwrap().sent.push(data.to_vec());
        self.inner.send_to(data, to, now)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll(&mut self, now: Duration) -> std::io::Result<PollReport> {
        let injected = std::mem::take(&mut self.state.lock().unwrap().inject);
        for (data, to) in injected {
            // Straight onto the network, past the conditioner.
            self.inner.inner_mut().send_to(&data, to, now)?;
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

/// Adds a client whose transport is a [`Tap`]; it sits at `client_addr(i)` like the others.
fn add_tapped_client(sim: &mut Sim, config: Config) -> (usize, TapHandle) {
    let i = sim.clients.len();
    let socket = sim.net.bind(client_addr(i)).unwrap();
    let state = TapHandle::default();
    let tap = Tap {
        inner: LinkConditioner::new(socket, 0xA11CE + i as u64),
        state: state.clone(),
    };
    let client = Client::with_transport(
        Box::new(tap),
        Box::new(sim.clock.clone()),
        sim.server_addr,
        config,
    )
    .unwrap();
    sim.clients.push(client);
    sim.client_events.push(Vec::new());
    (i, state)
}

/// The cookie in the last datagram the tapped client sent.
fn tapped_cookie(tap: &TapHandle) -> u32 {
    let st = tap.lock().unwrap();
    let last = st.sent.last().expect("the client sent something");
    u32::from_le_bytes(last[1..5].try_into().unwrap())
}

/// A raw socket on the simulated network that reads (and counts) everything but never
/// answers.
struct Silent {
    socket: MemorySocket,
    bytes: u64,
    datagrams: u64,
}

impl Silent {
    fn bind(net: &MemoryNetwork, addr: &str) -> Silent {
        Silent {
            socket: net.bind(addr.parse().unwrap()).unwrap(),
            bytes: 0,
            datagrams: 0,
        }
    }

    fn send(&mut self, data: &[u8], to: SocketAddr) {
        assert!(self.socket.send_to(data, to, Duration::ZERO).unwrap());
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 2048];
        for _ in 0..10_000 {
            match self.socket.recv_from(&mut buf, Duration::ZERO).unwrap() {
                Some((len, _)) => {
                    self.bytes += len as u64;
                    self.datagrams += 1;
                }
                None => break,
            }
        }
    }
}

// ==================================================================== 1. handshake

#[test]
fn handshake_reports_connected_once_on_both_sides() {
    let mut sim = Sim::new(Config::default(), 1);
    sim.add_client(Config::default());
    assert_eq!(sim.clients[0].state(), ConnectionState::Connecting);
    assert!(!sim.clients[0].is_connected());
    sim.connect_all(100);
    // Some more time, to see that nothing is reported twice.
    sim.run_for(Duration::from_millis(2500));

    let client_connects = connects(&sim.client_events[0]);
    assert_eq!(client_connects.len(), 1, "{:?}", sim.client_events[0]);
    assert_eq!(client_connects[0].1, sim.server_addr);
    assert_eq!(client_connects[0].0, sim.clients[0].id());

    let server_connects = connects(&sim.server_events);
    assert_eq!(server_connects.len(), 1, "{:?}", sim.server_events);
    let (id, addr) = server_connects[0];
    assert_eq!(addr, client_addr(0));
    assert!(sim
        .server_events
        .iter()
        .all(|e| matches!(e, OwnedEvent::Connected { .. })));
    assert!(sim.client_events[0]
        .iter()
        .all(|e| matches!(e, OwnedEvent::Connected { .. })));

    assert_eq!(sim.server.connection_count(), 1);
    assert_eq!(sim.server.stats().connections_accepted, 1);
    assert_eq!(sim.server.connections().collect::<Vec<_>>(), vec![id]);
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
    assert_eq!(sim.server.remote_addr(id), Some(client_addr(0)));
    assert_eq!(sim.clients[0].state(), ConnectionState::Connected);
    assert_eq!(sim.clients[0].remote_addr(), sim.server_addr);
    // Pings went both ways during 2.5 s: both sides measured the round trip (a few ms on
    // a 1 ms-step perfect link).
    let rtt = sim.server.rtt(id).expect("server rtt measured");
    assert!(rtt <= 20, "server rtt {rtt}");
    let rtt = sim.clients[0].rtt().expect("client rtt measured");
    assert!(rtt <= 20, "client rtt {rtt}");
    assert_eq!(
        sim.server.connection_stats(id).unwrap().rtt_ms,
        sim.server.rtt(id)
    );
}

// ===================================================================== 2. echo sizes

#[test]
fn messages_of_all_sizes_round_trip_on_their_channel() {
    let config = Config::default();
    let rmax = config.reliable_max_message_size();
    let umax = config.unreliable_max_message_size();
    assert_eq!((rmax, umax), (148_716, 1194));
    let (mut sim, id) = connected_sim(config, 2);

    let reliable: Vec<Vec<u8>> = [1, 100, 1200, 5000, rmax]
        .iter()
        .enumerate()
        .map(|(k, &n)| payload(1, k as u64, n))
        .collect();
    let unreliable: Vec<Vec<u8>> = [1, 100, umax]
        .iter()
        .enumerate()
        .map(|(k, &n)| payload(2, k as u64, n))
        .collect();
    for m in &reliable {
        sim.clients[0].send(m, Channel::Reliable).unwrap();
    }
    for m in &unreliable {
        sim.clients[0].send(m, Channel::Unreliable).unwrap();
    }
    let cid = sim.clients[0].id();
    for _ in 0..3000 {
        sim.step_echo();
        if data_of(&sim.client_events[0], cid).len() == 8 {
            break;
        }
    }
    let got = data_of(&sim.client_events[0], cid);
    let got_rel: Vec<Vec<u8>> = got
        .iter()
        .filter(|(c, _)| *c == Channel::Reliable)
        .map(|(_, d)| d.clone())
        .collect();
    let got_unrel: Vec<Vec<u8>> = got
        .iter()
        .filter(|(c, _)| *c == Channel::Unreliable)
        .map(|(_, d)| d.clone())
        .collect();
    assert!(got_rel == reliable, "reliable echoes differ");
    assert!(got_unrel == unreliable, "unreliable echoes differ");

    // The server saw the same messages on the same channels.
    let at_server = data_of(&sim.server_events, id);
    assert_eq!(at_server.len(), 8);
    assert_eq!(
        at_server
            .iter()
            .filter(|(c, _)| *c == Channel::Reliable)
            .count(),
        5
    );
    let stats = sim.server.connection_stats(id).unwrap();
    assert_eq!((stats.reliable_received, stats.unreliable_received), (5, 3));
    assert_eq!((stats.reliable_sent, stats.unreliable_sent), (5, 3));
}

// ================================================================ 3. invalid sends

#[test]
fn invalid_sends_are_refused_without_disconnecting() {
    let config = Config::default();
    let rmax = config.reliable_max_message_size();
    let umax = config.unreliable_max_message_size();
    let mut sim = Sim::new(config.clone(), 3);
    sim.add_client(config.clone());
    sim.add_client(config.clone());
    sim.connect_all(200);
    let id = sim.server_id_of(0).unwrap();
    let other = sim.server_id_of(1).unwrap();
    let cid = sim.clients[0].id();

    // Client side.
    let c = &mut sim.clients[0];
    match c.send(&vec![7; rmax + 1], Channel::Reliable) {
        Err(e @ Error::MessageTooLarge { size, max }) => {
            assert_eq!((size, max), (rmax + 1, rmax));
            assert_eq!(e.code(), ErrorCode::InvalidSend);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    match c.send(&vec![7; umax + 1], Channel::Unreliable) {
        Err(e @ Error::MessageTooLarge { size, max }) => {
            assert_eq!((size, max), (umax + 1, umax));
            assert_eq!(e.code(), ErrorCode::InvalidSend);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    for ch in [Channel::Reliable, Channel::Unreliable] {
        let e = c.send(&[], ch).unwrap_err();
        assert!(matches!(e, Error::EmptyMessage), "{e:?}");
        assert_eq!(e.code(), ErrorCode::InvalidSend);
    }
    // Server side.
    let s = &mut sim.server;
    assert!(matches!(
        s.send(id, &vec![1; rmax + 1], Channel::Reliable),
        Err(Error::MessageTooLarge { .. })
    ));
    assert!(matches!(
        s.send(id, &vec![1; umax + 1], Channel::Unreliable),
        Err(Error::MessageTooLarge { .. })
    ));
    assert!(matches!(
        s.send(id, &[], Channel::Reliable),
        Err(Error::EmptyMessage)
    ));
    assert!(matches!(
        s.send(id, &[], Channel::Unreliable),
        Err(Error::EmptyMessage)
    ));

    // Both directions still work.
    sim.clients[0].send(b"after", Channel::Reliable).unwrap();
    sim.clients[0]
        .send(b"after-u", Channel::Unreliable)
        .unwrap();
    sim.server.send(id, b"down", Channel::Reliable).unwrap();
    sim.server.send(id, b"down-u", Channel::Unreliable).unwrap();
    sim.run_for(Duration::from_millis(100));
    let mut up = data_of(&sim.server_events, id);
    up.sort_by_key(|(c, d)| (c.as_u8(), d.clone()));
    assert_eq!(
        up,
        vec![
            (Channel::Reliable, b"after".to_vec()),
            (Channel::Unreliable, b"after-u".to_vec())
        ]
    );
    let mut down = data_of(&sim.client_events[0], cid);
    down.sort_by_key(|(c, d)| (c.as_u8(), d.clone()));
    assert_eq!(
        down,
        vec![
            (Channel::Reliable, b"down".to_vec()),
            (Channel::Unreliable, b"down-u".to_vec())
        ]
    );
    assert!(sim.clients[0].is_connected());
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
    assert!(disconnects(&sim.server_events, id).is_empty());
    assert!(disconnects(&sim.client_events[0], cid).is_empty());

    // A closed id is unknown.
    sim.server.disconnect(other).unwrap();
    for ch in [Channel::Reliable, Channel::Unreliable] {
        let e = sim.server.send(other, b"x", ch).unwrap_err();
        assert!(matches!(e, Error::ConnectionClosed), "{e:?}");
        assert_eq!(e.code(), ErrorCode::ConnectionClosed);
    }
    assert!(matches!(
        sim.server.disconnect(other),
        Err(Error::ConnectionClosed)
    ));
    assert!(matches!(
        sim.server.disconnect_graceful(other),
        Err(Error::ConnectionClosed)
    ));
    assert_eq!(sim.server.state(other), None);
    // The first connection is untouched.
    sim.server.send(id, b"still", Channel::Reliable).unwrap();
}

// ================================================================= 4. bulk ordering

#[test]
fn ten_thousand_random_sized_reliable_messages_arrive_in_order() {
    const N: usize = 10_000;
    let (mut sim, id) = connected_sim(Config::default(), 4);
    let mut rng = Rng(0xB0B);
    let sizes: Vec<usize> = (0..N).map(|_| rng.range(1, 4000)).collect();
    let mut next_send = 0usize;
    let mut received = 0usize;
    let mut mismatch: Option<usize> = None;
    let mut steps = 0;
    while received < N && steps < 20_000 {
        // Keep a bounded backlog (as an application would, see `send_backlog`).
        while next_send < N && sim.clients[0].send_backlog() < 1000 {
            let m = payload(7, next_send as u64, sizes[next_send]);
            sim.clients[0].send(&m, Channel::Reliable).unwrap();
            next_send += 1;
        }
        sim.step_with(
            |_, ev| {
                if let Event::Data {
                    id: i,
                    channel,
                    data,
                } = ev
                {
                    assert_eq!(*i, id);
                    assert_eq!(*channel, Channel::Reliable);
                    if mismatch.is_none()
                        && (received >= N
                            || data.len() != sizes[received]
                            || *data != payload(7, received as u64, sizes[received]).as_slice())
                    {
                        mismatch = Some(received);
                    }
                    received += 1;
                }
            },
            |_, _, _| {},
        );
        steps += 1;
        // The harness logs every event; drop the bulky data to keep memory flat.
        sim.server_events.clear();
    }
    assert_eq!(mismatch, None, "message content or order differs");
    assert_eq!(
        received, N,
        "only {received} of {N} arrived in {steps} steps"
    );
    let stats = sim.server.connection_stats(id).unwrap();
    assert_eq!(stats.reliable_received, N as u64);
    assert!(sim.clients[0].is_connected());
    println!("10k messages took {steps} steps of 1 ms virtual time");
}

// ====================================================================== 5. idle + timeout

#[test]
fn idle_connection_stays_up_then_a_silent_link_times_out() {
    let config = Config::default();
    let timeout = config.timeout_ms as u64;
    let (mut sim, id) = connected_sim(config, 5);
    let cid = sim.clients[0].id();
    // Step through 15 s of idling, noting when the server last received a datagram.
    let mut last_rx_count = sim.server.stats().datagrams_received;
    let mut last_rx_at = now_ms(&sim);
    for _ in 0..15_000 {
        let before = now_ms(&sim);
        sim.step();
        let rx = sim.server.stats().datagrams_received;
        if rx != last_rx_count {
            last_rx_count = rx;
            last_rx_at = before;
        }
    }
    assert!(sim.clients[0].is_connected());
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
    assert!(disconnects(&sim.server_events, id).is_empty());
    assert!(disconnects(&sim.client_events[0], cid).is_empty());
    assert!(sim.server.rtt(id).is_some());
    assert!(sim.clients[0].rtt().is_some());
    // Pings flowed: with the slow keepalive one every 3 s after the first ones, mostly
    // answered by the server's ACK alone.
    let st = sim.server.connection_stats(id).unwrap();
    assert!(st.datagrams_received >= 8, "{st:?}");
    assert!(st.datagrams_sent >= 7, "{st:?}");

    // Silence the link from the client's side in both directions.
    sim.clients[0]
        .set_conditions(Direction::Both, Conditions::lossy(1.0))
        .unwrap();
    let silence = now_ms(&sim);
    let mut closed_at = None;
    for _ in 0..(timeout + 5000) {
        let before = now_ms(&sim);
        sim.step();
        let rx = sim.server.stats().datagrams_received;
        if rx != last_rx_count {
            last_rx_count = rx;
            last_rx_at = before;
        }
        if closed_at.is_none() && !disconnects(&sim.server_events, id).is_empty() {
            closed_at = Some(before);
        }
    }
    let closed_at = closed_at.expect("server timed the connection out");
    assert!(last_rx_at <= silence, "nothing arrives over a silent link");
    let since_rx = closed_at - last_rx_at;
    assert!(
        (timeout..=timeout + 1500).contains(&since_rx),
        "closed {since_rx} ms after the last datagram"
    );
    let since_silence = closed_at - silence;
    assert!(
        since_silence <= timeout + 1500,
        "closed {since_silence} ms after silence"
    );
    let ctl = control_events(&sim.server_events, id);
    assert_eq!(ctl.len(), 3, "{ctl:?}");
    assert_error_then_disconnected(&ctl[1..], ErrorCode::Timeout, id, DisconnectReason::Timeout);
    assert_eq!(sim.server.connection_count(), 0);
    assert_eq!(sim.server.state(id), None);
    // The client, hearing nothing either, timed out too, once.
    assert_eq!(
        disconnects(&sim.client_events[0], cid),
        vec![DisconnectReason::Timeout]
    );
    assert!(!sim.clients[0].is_connected());
}

/// One step; `last_rx` (the server's datagrams received, and the time of the step in which
/// that count last changed) is updated. Returns the time the step started at.
fn step_noting_rx(sim: &mut Sim, last_rx: &mut (u64, u64)) -> u64 {
    let before = now_ms(sim);
    sim.step();
    let rx = sim.server.stats().datagrams_received;
    if rx != last_rx.0 {
        *last_rx = (rx, before);
    }
    before
}

/// An idle pair with `config` on both ends, for 10 s after the quality reports settled:
/// the server sent `server` datagrams and the client `client`; both measure the RTT. Then
/// the client's datagrams stop: the server's own Ping (a new segment) comes `ping_after`
/// ms (±100) after the client's last datagram, and the connection survives the silence.
fn idle_pair(
    config: Config,
    seed: u64,
    server: std::ops::RangeInclusive<u64>,
    client: std::ops::RangeInclusive<u64>,
    ping_after: u64,
) {
    let (mut sim, id) = connected_sim(config, seed);
    let cid = sim.clients[0].id();
    // Quality reports go out until four identical ones were sent: let that pass.
    sim.run_for(Duration::from_secs(14));
    let (s0, c0) = (
        sim.server.stats().datagrams_sent,
        sim.clients[0].stats().datagrams_sent,
    );
    let mut last_rx = (sim.server.stats().datagrams_received, now_ms(&sim));
    for _ in 0..10_000 {
        step_noting_rx(&mut sim, &mut last_rx);
    }
    let server_sent = sim.server.stats().datagrams_sent - s0;
    let client_sent = sim.clients[0].stats().datagrams_sent - c0;
    println!("in 10 s idle: server sent {server_sent} datagrams, client {client_sent}");
    assert!(server.contains(&server_sent), "server sent {server_sent}");
    assert!(client.contains(&client_sent), "client sent {client_sent}");
    let rtt = sim
        .server
        .rtt(id)
        .expect("the server measures the RTT from its Pongs");
    assert!(rtt <= 10, "{rtt} ms over a perfect link ticked every ms");
    assert!(sim.clients[0].rtt().is_some());

    // The client's datagrams stop arriving (well under the 10 s timeout): the server no
    // longer hears Pings, so some time after the last one it sends a Ping of its own (a
    // new segment; until then it only retransmits its unacknowledged Pong).
    let new_segments = |sim: &Sim| {
        let st = sim.server.connection_stats(id).unwrap();
        st.segments_sent - st.retransmits - st.fast_retransmits
    };
    sim.clients[0]
        .set_conditions(Direction::Send, Conditions::lossy(1.0))
        .unwrap();
    let mut segments = new_segments(&sim);
    let mut first_ping_at = None;
    for _ in 0..(ping_after + 2_000) {
        let before = step_noting_rx(&mut sim, &mut last_rx);
        let n = new_segments(&sim);
        if n != segments {
            // A new segment after the client went silent is the server's own Ping; one
            // right after the last datagram arrived is the Pong to the last Ping.
            if before > last_rx.1 + 100 {
                first_ping_at.get_or_insert(before);
            }
            segments = n;
        }
        if first_ping_at.is_some() {
            break;
        }
    }
    let first_ping_at = first_ping_at.expect("the server pings a client whose Pings stopped");
    let after = first_ping_at - last_rx.1;
    assert!(
        (ping_after - 100..=ping_after + 100).contains(&after),
        "the server's own Ping came {after} ms after the client's last datagram"
    );
    sim.clients[0]
        .set_conditions(Direction::Send, Conditions::default())
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
    assert!(sim.clients[0].is_connected());
    assert!(disconnects(&sim.server_events, id).is_empty());
    assert!(disconnects(&sim.client_events[0], cid).is_empty());
}

/// An idle kcpnet pair negotiates the slow keepalive: every 3 s (the default 10 s timeout
/// ÷ 3) the client's Ping and the server's ACK of it; one answer in four also carries a
/// Pong, which the client ACKs (the server's round-trip sample). About two datagrams per
/// 3 s, under a quarter of kcp2k's rate. The server sends no Ping of its own while the
/// client pings (its answer is the client's keepalive) and quality reports stop once they
/// have nothing new to say; when the client's Pings stop arriving the server pings 6 s
/// (two keepalive intervals) after the last one.
#[test]
fn an_idle_kcpnet_pair_exchanges_a_ping_and_its_ack_and_the_server_pings_a_silent_client() {
    idle_pair(Config::default(), 23, 3..=4, 3..=5, 6_000);
}

/// Against a kcp2k-style client (no extensions) kcp2k's rate holds: three datagrams per
/// second (the client's Ping every second, the server's ACK + Pong, the client's ACK), and
/// the server pings 2 s after the client's last datagram.
#[test]
fn an_idle_kcp2k_client_keeps_kcp2ks_keepalive_rate() {
    let kcp2k = Config {
        kcpnet_extensions: false,
        ..Config::default()
    };
    idle_pair(kcp2k, 23, 9..=11, 18..=22, 2_000);
}

/// A dead peer is still found within the configured timeout with the slow keepalive: the
/// client falls silent for good, the server reports `Timeout` between `timeout_ms` and
/// `timeout_ms` + 1.5 s after the last datagram it received.
#[test]
fn a_silent_peer_times_out_within_the_timeout_with_the_slow_keepalive() {
    for timeout_ms in [4_000u32, 10_000] {
        let config = Config {
            timeout_ms,
            ..Config::default()
        };
        let (mut sim, id) = connected_sim(config, 41);
        assert!(sim
            .server
            .extensions(id)
            .unwrap()
            .contains(kcpnet::Extensions::SLOW_KEEPALIVE));
        let mut last_rx = (sim.server.stats().datagrams_received, now_ms(&sim));
        for _ in 0..12_000 {
            step_noting_rx(&mut sim, &mut last_rx);
        }
        sim.clients[0]
            .set_conditions(Direction::Send, Conditions::lossy(1.0))
            .unwrap();
        let mut closed_at = None;
        for _ in 0..(u64::from(timeout_ms) + 5_000) {
            let before = step_noting_rx(&mut sim, &mut last_rx);
            if closed_at.is_none() && !disconnects(&sim.server_events, id).is_empty() {
                closed_at = Some(before);
            }
        }
        let closed_at = closed_at.expect("the silent client timed out");
        let since = closed_at - last_rx.1;
        assert!(
            (u64::from(timeout_ms)..=u64::from(timeout_ms) + 1_500).contains(&since),
            "timeout {timeout_ms}: closed {since} ms after the last datagram"
        );
        assert_eq!(
            disconnects(&sim.server_events, id),
            vec![DisconnectReason::Timeout]
        );
    }
}

// ======================================================================= 6. dead link

#[test]
fn dead_link_is_reported_as_timeout_by_the_sender() {
    let config = Config {
        max_retransmits: 5,
        timeout_ms: 60_000,
        ..Config::default()
    };
    let (mut sim, id) = connected_sim(config, 6);
    let cid = sim.clients[0].id();
    sim.run_for(Duration::from_millis(100));
    sim.clients[0]
        .set_conditions(Direction::Send, Conditions::lossy(1.0))
        .unwrap();
    let start = now_ms(&sim);
    let mut seq = 0;
    for _ in 0..20_000 {
        if sim.clients[0].is_connected() && sim.steps % 10 == 0 {
            sim.clients[0]
                .send(&payload(6, seq, 100), Channel::Reliable)
                .unwrap();
            seq += 1;
        }
        sim.step();
        if !disconnects(&sim.client_events[0], cid).is_empty() {
            break;
        }
    }
    let elapsed = now_ms(&sim) - start;
    let ctl = control_events(&sim.client_events[0], cid);
    assert_eq!(ctl.len(), 3, "{ctl:?}");
    match &ctl[1] {
        OwnedEvent::Error { code, message, .. } => {
            assert_eq!(*code, ErrorCode::Timeout);
            assert!(message.contains("dead link"), "{message}");
        }
        other => panic!("expected Error, got {other:?}"),
    }
    assert_eq!(
        ctl[2],
        OwnedEvent::Disconnected {
            id: cid,
            reason: DisconnectReason::Timeout
        }
    );
    // Well before the 60 s receive timeout.
    assert!(elapsed < 20_000, "dead link took {elapsed} ms");
    // The server got the client's 5 Disconnects? No: client→server is lost. It is still up.
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
}

// ===================================================================== 7. congestion

#[test]
fn a_reader_that_never_drains_chokes_the_sender() {
    let base = Config::default();
    let server_config = Config {
        max_pending_event_bytes: base.reliable_max_message_size() + 1,
        queue_disconnect_threshold: 2000,
        ..Config::default()
    };
    let client_config = Config {
        queue_disconnect_threshold: 2000,
        ..Config::default()
    };
    let mut sim = Sim::new(server_config.clone(), 7);
    sim.add_client(client_config);
    let cid = sim.clients[0].id();
    for _ in 0..200 {
        if sim.clients[0].is_connected() && sim.server.connection_count() == 1 {
            break;
        }
        step_server_never_drained(&mut sim);
    }
    assert!(sim.clients[0].is_connected());
    let mut seq = 0;
    for _ in 0..20_000 {
        if sim.clients[0].is_connected() {
            sim.clients[0]
                .send(&payload(7, seq, 1000), Channel::Reliable)
                .unwrap();
            seq += 1;
        }
        step_server_never_drained(&mut sim);
        if !disconnects(&sim.client_events[0], cid).is_empty() {
            break;
        }
    }
    let ctl = control_events(&sim.client_events[0], cid);
    assert_eq!(ctl.len(), 3, "{ctl:?}");
    assert_error_then_disconnected(
        &ctl[1..],
        ErrorCode::Congestion,
        cid,
        DisconnectReason::Congestion,
    );
    // The choke came from the backlog: about threshold messages were queued, not all sent.
    assert!(seq >= 2000, "choked after only {seq} messages");
    assert!(seq < 5000, "took {seq} messages to choke");
    // The server held no more than its cap of undelivered message bytes.
    let held = sim.server.pending_events();
    assert!(
        held * 1000 <= server_config.max_pending_event_bytes + 1000,
        "{held} events held"
    );
}

// ======================================================================= 8. security

#[test]
fn wrong_cookie_datagrams_from_a_connected_address_are_dropped() {
    let mut sim = Sim::new(Config::default(), 8);
    let (c, tap) = add_tapped_client(&mut sim, Config::default());
    sim.connect_all(200);
    let id = sim.server_id_of(c).unwrap();
    sim.clients[c].send(b"first", Channel::Reliable).unwrap();
    sim.run_for(Duration::from_millis(50));
    let cookie = tapped_cookie(&tap);
    assert_ne!(cookie, 0);
    let bad = cookie ^ 0x0100_0001;

    // The client's next sequence number and its una, from what it sent.
    let (mut next_sn, mut una) = (0u32, 0u32);
    for d in tap.lock().unwrap().sent.iter().filter(|d| d[0] == 1) {
        for seg in segments(&d[5..]) {
            let (h, _) = seg.unwrap();
            una = una.max(h.una);
            if h.cmd == Command::Push {
                next_sn = next_sn.max(h.sn + 1);
            }
        }
    }
    let ts = now_ms(&sim) as u32;
    let forged_reliable = |cookie: u32| {
        let body = [3u8, b'E', b'V', b'I', b'L'];
        let h = SegmentHeader {
            conv: 0,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts,
            sn: next_sn,
            una,
            len: body.len() as u32,
        };
        let mut d = vec![1u8];
        d.extend_from_slice(&cookie.to_le_bytes());
        d.extend_from_slice(&h.to_bytes());
        d.extend_from_slice(&body);
        d
    };
    let forged_unreliable = |cookie: u32| {
        let mut d = vec![2u8];
        d.extend_from_slice(&cookie.to_le_bytes());
        d.push(4);
        d.extend_from_slice(b"evil");
        d
    };
    let forged_disconnect = |cookie: u32| {
        let mut d = vec![2u8];
        d.extend_from_slice(&cookie.to_le_bytes());
        d.push(5);
        d
    };
    let before = sim.server.stats().dropped_invalid;
    let events_before = sim.server_events.len();
    {
        let mut st = tap.lock().unwrap();
        for d in [
            forged_reliable(bad),
            forged_unreliable(bad),
            forged_disconnect(bad),
            forged_unreliable(0),
        ] {
            st.inject.push((d, sim.server_addr));
        }
    }
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.server.stats().dropped_invalid, before + 4);
    assert_eq!(
        sim.server_events.len(),
        events_before,
        "{:?}",
        &sim.server_events[events_before..]
    );
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
    assert!(sim.clients[c].is_connected());

    // The connection still carries real traffic, in both channels: the forged segment did
    // not take the sequence number of the next real message.
    sim.clients[c].send(b"real", Channel::Reliable).unwrap();
    sim.clients[c].send(b"real-u", Channel::Unreliable).unwrap();
    sim.run_for(Duration::from_millis(50));
    let got = data_of(&sim.server_events, id);
    let reliable: Vec<&[u8]> = got
        .iter()
        .filter(|(c, _)| *c == Channel::Reliable)
        .map(|(_, d)| d.as_slice())
        .collect();
    assert_eq!(reliable, vec![&b"first"[..], &b"real"[..]]);
    let unreliable: Vec<&[u8]> = got
        .iter()
        .filter(|(c, _)| *c == Channel::Unreliable)
        .map(|(_, d)| d.as_slice())
        .collect();
    assert_eq!(unreliable, vec![&b"real-u"[..]]);

    // Control: the same unreliable datagram with the right cookie is delivered, so it was
    // the cookie that got the forgery dropped.
    tap.lock()
        .unwrap()
        .inject
        .push((forged_unreliable(cookie), sim.server_addr));
    sim.run_for(Duration::from_millis(20));
    assert_eq!(
        data_of(&sim.server_events, id).last(),
        Some(&(Channel::Unreliable, b"evil".to_vec()))
    );
    assert_eq!(sim.server.stats().dropped_invalid, before + 4);
}

#[test]
fn spoofed_hello_gets_one_stateless_reply_and_no_state() {
    let config = Config::default();
    let mut sim = Sim::new(config.clone(), 9);
    let mut victim = Silent::bind(&sim.net, "10.66.0.1:4000");
    let hello = hex(KCP2K_HELLO);
    assert_eq!(hello.len(), 30);
    victim.send(&hello, sim.server_addr);
    for _ in 0..(config.handshake_timeout_ms as u64 + 2000) {
        sim.step();
        victim.drain();
        let st = sim.server.stats();
        assert_eq!(st.connections, 0, "state stored for a spoofed Hello");
    }
    assert!(sim.server_events.is_empty(), "{:?}", sim.server_events);
    // Exactly one reply, computed from the Hello alone: never retransmitted, since nothing
    // remembers it; 54 bytes for 30 (1.8x).
    assert_eq!(victim.datagrams, 1);
    assert_eq!(victim.bytes, 54);
    assert!(victim.bytes <= 3 * hello.len() as u64);
    let st = sim.server.stats();
    assert_eq!(st.hello_replies, 1);
    assert_eq!(st.connections_accepted, 0);
    assert_eq!(sim.server.connection_count(), 0);
}

#[test]
fn garbage_from_strangers_leaves_no_trace() {
    let mut sim = Sim::new(Config::default(), 10);
    let mut rng = Rng(99);
    let mut sent = 0u64;
    let mut strangers: Vec<Silent> = (0..4)
        .map(|k| Silent::bind(&sim.net, &format!("10.77.0.{}:{}", k + 1, 6000 + k)))
        .collect();
    let server = sim.server_addr;

    let seg = |cmd: Command, sn: u32, frg: u8, body: &[u8]| {
        let h = SegmentHeader {
            conv: 0,
            cmd,
            frg,
            wnd: 128,
            ts: 0,
            sn,
            una: 0,
            len: body.len() as u32,
        };
        let mut d = vec![1u8, 0, 0, 0, 0];
        d.extend_from_slice(&h.to_bytes());
        d.extend_from_slice(body);
        d
    };
    let mut crafted: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![2, 0, 0, 0, 0],
        hex("02deadbeef05"),                        // unreliable Disconnect
        hex("020000000005"),                        // ... with cookie 0
        hex("02deadbeef04616263"),                  // unreliable Data
        hex("02deadbeef09"),                        // undefined unreliable header
        seg(Command::Push, 0, 0, &[3, b'h', b'i']), // reliable Data without a Hello
        seg(Command::Push, 0, 0, &[2, 1, 2, 3, 4]), // Ping
        seg(Command::Push, 0, 0, &[4, 1, 2, 3, 4]), // Pong
        seg(Command::Push, 0, 0, &[9]),             // undefined reliable header
        seg(Command::Push, 0, 1, &[1]),             // a Hello fragment (frg 1)
        seg(Command::Push, 1, 0, &[1]),             // a Hello with sn 1
        seg(Command::Ack, 0, 0, &[]),
        seg(Command::WindowAsk, 0, 0, &[]),
    ];
    // A Hello with conv 1, and one with a truncated segment.
    let mut conv1 = hex(KCP2K_HELLO);
    conv1[5] = 1;
    crafted.push(conv1);
    let mut truncated = hex(KCP2K_HELLO);
    truncated[25] = 9; // len 9 but 1 byte follows
    crafted.push(truncated);
    let mut bad_channel = hex(KCP2K_HELLO);
    bad_channel[0] = 3;
    crafted.push(bad_channel);
    for _ in 0..200 {
        let len = rng.range(0, 1300);
        crafted.push((0..len).map(|_| rng.next_u64() as u8).collect());
    }
    for (k, d) in crafted.iter().enumerate() {
        strangers[k % 4].send(d, server);
        sent += 1;
        if k % 20 == 0 {
            sim.step();
        }
    }
    sim.run_for(Duration::from_secs(2));
    for s in &mut strangers {
        s.drain();
        assert_eq!(s.datagrams, 0, "a stranger got an answer");
    }
    assert!(sim.server_events.is_empty(), "{:?}", sim.server_events);
    assert_eq!(sim.server.connection_count(), 0);
    let st = sim.server.stats();
    assert_eq!(st.dropped_unknown, sent, "{st:?}");
    assert_eq!(st.datagrams_received, sent);
    assert_eq!((st.datagrams_sent, st.bytes_sent), (0, 0));
    assert_eq!((st.dropped_limit, st.hello_replies), (0, 0));
}

#[test]
fn a_hello_flood_from_10000_endpoints_stores_nothing_and_locks_nobody_out() {
    let mut sim = Sim::new(Config::default(), 11);
    let hello = hex(KCP2K_HELLO);
    let mut spoofed: Vec<Silent> = (0..10_000)
        .map(|k| {
            Silent::bind(
                &sim.net,
                &format!("10.88.{}.{}:{}", k / 250, 1 + k % 250, 7000 + k % 7),
            )
        })
        .collect();
    let memory_before = sim.server.stats();
    // The flood goes on while a real client connects: 10,000 Hellos, 500 per millisecond.
    sim.add_client(Config::default());
    let mut connected_at = None;
    for step in 0..200u64 {
        for s in spoofed.iter_mut().skip(step as usize * 500).take(500) {
            s.send(&hello, sim.server_addr);
        }
        sim.step();
        if connected_at.is_none() && sim.clients[0].is_connected() {
            connected_at = Some(step);
        }
        assert!(sim.server.stats().connections <= 1, "state for a spoofer");
    }
    let connected_at = connected_at.expect("the real client did not connect");
    assert!(connected_at < 20, "connected after {connected_at} steps");
    assert_eq!(sim.server.connection_count(), 1);
    let st = sim.server.stats();
    assert_eq!(
        st.hello_replies,
        10_000 + 1,
        "one reply per Hello, the client's included"
    );
    assert_eq!(memory_before.connections, 0);
    for s in &mut spoofed {
        s.drain();
        assert_eq!(
            (s.datagrams, s.bytes),
            (1, 54),
            "one 54-byte reply per 30-byte Hello"
        );
    }
    // The real connection works.
    sim.clients[0]
        .send(b"still here", Channel::Reliable)
        .unwrap();
    sim.run_for(Duration::from_millis(50));
    let id = sim.server_id_of(0).unwrap();
    assert_eq!(
        data_of(&sim.server_events, id).last(),
        Some(&(Channel::Reliable, b"still here".to_vec()))
    );
}

#[test]
fn ten_thousand_clients_connecting_at_the_same_moment_all_connect() {
    let mut sim = Sim::new(Config::default(), 21);
    for _ in 0..10_000 {
        sim.add_client(Config::default());
    }
    sim.connect_all(400);
    assert_eq!(sim.server.connection_count(), 10_000);
    assert_eq!(sim.server.stats().connections_accepted, 10_000);
}

// ========================================================================= 9. kick

fn kick_scenario(callback_form: bool) {
    let mut sim = Sim::new(Config::default(), 12);
    let (c, tap) = add_tapped_client(&mut sim, Config::default());
    sim.add_client(Config::default()); // a bystander
    sim.connect_all(200);
    let id = sim.server_id_of(c).unwrap();
    let bystander = sim.server_id_of(1).unwrap();
    let cid = sim.clients[c].id();
    sim.clients[c].send(b"hello", Channel::Reliable).unwrap();
    sim.run_for(Duration::from_millis(20));
    let cookie = tapped_cookie(&tap);

    // KICK and another message in the same step (one datagram).
    sim.clients[c].send(b"KICK", Channel::Reliable).unwrap();
    sim.clients[c].send(b"after", Channel::Reliable).unwrap();
    sim.clients[1]
        .send(b"bystander", Channel::Reliable)
        .unwrap();
    let mut kicked = 0;
    for _ in 0..50 {
        if callback_form {
            sim.step_with(
                |ctx, ev| {
                    if let Event::Data { id, data, .. } = ev {
                        if *data == b"KICK" {
                            ctx.disconnect(*id).unwrap();
                            kicked += 1;
                        }
                    }
                },
                |_, _, _| {},
            );
        } else {
            step_queue(&mut sim, |server, ev| {
                if let OwnedEvent::Data { id, data, .. } = ev {
                    if data == b"KICK" {
                        server.disconnect(*id).unwrap();
                        kicked += 1;
                    }
                }
            });
        }
    }
    assert_eq!(kicked, 1);
    assert_eq!(
        data_of(&sim.server_events, id),
        vec![
            (Channel::Reliable, b"hello".to_vec()),
            (Channel::Reliable, b"KICK".to_vec())
        ],
        "no Data after the kick"
    );
    // Nothing of the kicked id follows its Disconnected.
    let last = sim
        .server_events
        .iter()
        .rposition(|e| e.id() == id)
        .unwrap();
    assert_eq!(
        sim.server_events[last],
        OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::Local
        }
    );
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::Local]
    );
    assert_eq!(
        disconnects(&sim.client_events[c], cid),
        vec![DisconnectReason::Remote]
    );
    assert_eq!(sim.clients[c].state(), ConnectionState::Disconnected);
    assert_eq!(sim.server.state(id), None);
    assert!(matches!(
        sim.server.disconnect(id),
        Err(Error::ConnectionClosed)
    ));
    // The bystander is unaffected.
    assert_eq!(
        data_of(&sim.server_events, bystander),
        vec![(Channel::Reliable, b"bystander".to_vec())]
    );
    assert!(sim.clients[1].is_connected());

    // A kcp2k client answers a kick with 5 Disconnects; they arrive after the removal and
    // must produce nothing (kcp2k reports a phantom Disconnected for each).
    let events = sim.server_events.len();
    let unknown = sim.server.stats().dropped_unknown;
    let after_close = sim.server.stats().dropped_after_close;
    {
        let mut st = tap.lock().unwrap();
        let mut d = vec![2u8];
        d.extend_from_slice(&cookie.to_le_bytes());
        d.push(5);
        for _ in 0..5 {
            st.inject.push((d.clone(), sim.server_addr));
        }
    }
    sim.run_for(Duration::from_millis(20));
    assert_eq!(
        sim.server_events.len(),
        events,
        "{:?}",
        &sim.server_events[events..]
    );
    // Counted as what they are: copies for a connection that just closed, not strangers.
    assert_eq!(sim.server.stats().dropped_unknown, unknown);
    assert_eq!(sim.server.stats().dropped_after_close, after_close + 5);
    assert_eq!(sim.server.connection_count(), 1);
}

#[test]
fn server_kick_in_callback_form() {
    kick_scenario(true);
}

#[test]
fn server_kick_in_queue_form() {
    kick_scenario(false);
}

// ================================================================= 10. id aliasing

#[test]
fn connection_ids_never_alias_a_reused_slot() {
    let mut sim = Sim::new(Config::default(), 13);
    sim.add_client(Config::default());
    sim.connect_all(200);
    let old = sim.server_id_of(0).unwrap();
    sim.clients[0].disconnect();
    sim.run_for(Duration::from_millis(20));
    assert_eq!(
        disconnects(&sim.server_events, old),
        vec![DisconnectReason::Remote]
    );
    assert_eq!(
        disconnects(&sim.client_events[0], sim.clients[0].id()),
        vec![DisconnectReason::Local]
    );
    assert_eq!(sim.server.connection_count(), 0);

    let b = sim.add_client(Config::default());
    let ok = sim.run_until(200, |s| {
        s.clients[b].is_connected() && s.server.connection_count() == 1
    });
    assert!(ok);
    let new = sim.server_id_of(b).unwrap();
    assert_eq!(new.index(), old.index(), "the slot is reused");
    assert_ne!(new.generation(), old.generation());
    assert_ne!(new, old);
    assert_ne!(new.to_u64(), old.to_u64());
    assert!(matches!(
        sim.server.send(old, b"x", Channel::Reliable),
        Err(Error::ConnectionClosed)
    ));
    assert_eq!(sim.server.remote_addr(old), None);
    assert_eq!(sim.server.state(old), None);
    assert_eq!(sim.server.rtt(old), None);
    assert_eq!(sim.server.connection_stats(old), None);
    assert_eq!(sim.server.connection_memory(old), None);
    assert!(matches!(
        sim.server.disconnect(old),
        Err(Error::ConnectionClosed)
    ));
    assert_eq!(sim.server.remote_addr(new), Some(client_addr(b)));
    sim.server.send(new, b"to-b", Channel::Reliable).unwrap();
    sim.run_for(Duration::from_millis(20));
    assert_eq!(
        data_of(&sim.client_events[b], sim.clients[b].id()),
        vec![(Channel::Reliable, b"to-b".to_vec())]
    );
    assert_eq!(sim.server.connection_count(), 1);
}

// ======================================================== 11. graceful disconnect

#[test]
fn graceful_disconnect_delivers_everything_first() {
    let (mut sim, id) = connected_sim(Config::default(), 14);
    let cid = sim.clients[0].id();
    let msgs: Vec<Vec<u8>> = (0..50).map(|k| payload(11, k, 2000)).collect();
    for m in &msgs {
        sim.clients[0].send(m, Channel::Reliable).unwrap();
    }
    sim.clients[0].disconnect_graceful();
    assert_eq!(sim.clients[0].state(), ConnectionState::Disconnecting);
    assert!(matches!(
        sim.clients[0].send(b"late", Channel::Reliable),
        Err(Error::NotConnected)
    ));
    assert!(matches!(
        sim.clients[0].send(b"late", Channel::Unreliable),
        Err(Error::NotConnected)
    ));
    let mut server_done_at = None;
    let mut client_done_at = None;
    let mut backlog_at_client_done = None;
    for step in 0..5000u64 {
        sim.step();
        if server_done_at.is_none() && data_of(&sim.server_events, id).len() == 50 {
            server_done_at = Some(step);
        }
        if client_done_at.is_none() && !disconnects(&sim.client_events[0], cid).is_empty() {
            client_done_at = Some(step);
            backlog_at_client_done = Some(sim.clients[0].send_backlog());
        }
        if client_done_at.is_some() && !disconnects(&sim.server_events, id).is_empty() {
            break;
        }
    }
    let got: Vec<Vec<u8>> = data_of(&sim.server_events, id)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert!(got == msgs, "all 50 messages, in order");
    let server_done_at = server_done_at.unwrap();
    let client_done_at = client_done_at.expect("client finished the graceful disconnect");
    assert!(client_done_at >= server_done_at);
    assert_eq!(backlog_at_client_done, Some(0), "all acknowledged first");
    assert_eq!(
        disconnects(&sim.client_events[0], cid),
        vec![DisconnectReason::Local]
    );
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::Remote]
    );
    // Disconnected is the last server event of that id, after all 50 messages.
    assert_eq!(
        sim.server_events.iter().rev().find(|e| e.id() == id),
        Some(&OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::Remote
        })
    );
    // No error was reported on either side.
    assert!(!sim
        .server_events
        .iter()
        .chain(&sim.client_events[0])
        .any(|e| matches!(e, OwnedEvent::Error { .. })));
    assert_eq!(sim.clients[0].state(), ConnectionState::Disconnected);
    assert!(matches!(
        sim.clients[0].send(b"late", Channel::Reliable),
        Err(Error::ConnectionClosed)
    ));
}

#[test]
fn graceful_disconnect_over_a_silent_link_ends_after_the_linger_timeout() {
    let config = Config::default();
    let linger = config.linger_timeout_ms as u64;
    let (mut sim, _id) = connected_sim(config, 15);
    let cid = sim.clients[0].id();
    sim.clients[0]
        .set_conditions(Direction::Both, Conditions::lossy(1.0))
        .unwrap();
    for k in 0..10 {
        sim.clients[0]
            .send(&payload(15, k, 2000), Channel::Reliable)
            .unwrap();
    }
    sim.clients[0].disconnect_graceful();
    let start = now_ms(&sim);
    let mut done_at = None;
    for _ in 0..(linger + 3000) {
        sim.step();
        if done_at.is_none() && !disconnects(&sim.client_events[0], cid).is_empty() {
            done_at = Some(now_ms(&sim) - start);
        }
    }
    let done_at = done_at.expect("graceful disconnect completed");
    assert!(
        (linger..=linger + 100).contains(&done_at),
        "finished after {done_at} ms"
    );
    assert_eq!(
        control_events(&sim.client_events[0], cid)[1..],
        [OwnedEvent::Disconnected {
            id: cid,
            reason: DisconnectReason::Local
        }]
    );
}

// ==================================================================== 12. event forms

fn forms_scenario(callback_form: bool) -> (Vec<OwnedEvent>, Vec<Vec<OwnedEvent>>) {
    let mut sim = Sim::new(Config::default(), 16);
    sim.add_client(Config::default());
    sim.add_client(Config::default());
    sim.set_all_conditions(
        Direction::Both,
        Conditions::lossy(0.05)
            .with_latency(Duration::from_millis(5))
            .with_jitter(Duration::from_millis(3)),
    );
    let mut rng = Rng(16);
    for step in 0..3000u64 {
        if step % 7 == 0 {
            for i in 0..2 {
                if sim.clients[i].is_connected() {
                    let len = rng.range(1, 3000);
                    let ch = if len <= 1000 && rng.next_u64().is_multiple_of(2) {
                        Channel::Unreliable
                    } else {
                        Channel::Reliable
                    };
                    sim.clients[i]
                        .send(&payload(i as u64, step, len), ch)
                        .unwrap();
                }
            }
        }
        if step == 2000 {
            sim.clients[1].disconnect();
        }
        if callback_form {
            sim.step_echo();
        } else {
            step_queue(&mut sim, |server, ev| {
                if let OwnedEvent::Data { id, channel, data } = ev {
                    server.send(*id, data, *channel).unwrap();
                }
            });
        }
    }
    (sim.server_events, sim.client_events)
}

#[test]
fn queue_and_callback_forms_deliver_the_same_events() {
    let (q_server, q_clients) = forms_scenario(false);
    let (c_server, c_clients) = forms_scenario(true);
    assert!(q_server.len() > 100, "{}", q_server.len());
    assert_eq!(connects(&q_server).len(), 2);
    assert!(q_server == c_server, "server event sequences differ");
    assert!(q_clients == c_clients, "client event sequences differ");
    // The callback form's replies reached the clients.
    let echoed = data_of(&c_clients[0], first_client_id(&c_clients[0]));
    assert!(echoed.len() > 50, "{}", echoed.len());
    let sent_by_0 = data_of(&c_server, connects(&c_server)[0].0).len();
    assert!(sent_by_0 > 50);
}

fn first_client_id(events: &[OwnedEvent]) -> ConnectionId {
    connects(events)[0].0
}

// ======================================================================== 13. client

#[test]
fn client_gives_up_when_nothing_answers() {
    let config = Config {
        handshake_timeout_ms: 2000,
        ..Config::default()
    };
    let net = MemoryNetwork::new();
    let clock = ManualClock::starting_at(Duration::from_secs(3));
    let socket = net.bind("10.0.0.5:5000".parse().unwrap()).unwrap();
    let nowhere: SocketAddr = "10.0.0.99:7777".parse().unwrap();
    let mut client =
        Client::with_transport(Box::new(socket), Box::new(clock.clone()), nowhere, config).unwrap();
    let start = clock.now();
    let mut events = Vec::new();
    let mut done_at = None;
    for _ in 0..6000 {
        client.tick_incoming();
        while let Some(ev) = client.poll_event() {
            events.push(ev.to_owned_event());
        }
        client.tick_outgoing();
        if done_at.is_none() && !events.is_empty() {
            done_at = Some((clock.now() - start).as_millis() as u64);
        }
        clock.advance(Duration::from_millis(1));
    }
    assert!(net.stats().sent > 0, "the client tried");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_error_then_disconnected(
        &events,
        ErrorCode::Timeout,
        client.id(),
        DisconnectReason::Timeout,
    );
    let done_at = done_at.unwrap();
    assert!((2000..=2100).contains(&done_at), "{done_at}");
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert!(matches!(
        client.send(b"x", Channel::Reliable),
        Err(Error::ConnectionClosed)
    ));
}

#[test]
fn client_connect_reports_dns_failure() {
    let e = Client::connect(("no-such-host.invalid", 1), Config::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::DnsResolve, "{e:?}");
    assert!(matches!(e, Error::DnsResolve(_)));
}

#[test]
fn invalid_configs_are_refused_by_every_constructor() {
    let bad = Config {
        mtu: 10,
        ..Config::default()
    };
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let sock = net.bind("10.0.0.1:1".parse().unwrap()).unwrap();
    match Server::with_transport(Box::new(sock), Box::new(clock.clone()), bad.clone()) {
        Err(e @ Error::InvalidConfig(_)) => assert!(e.to_string().contains("mtu"), "{e}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let sock = net.bind("10.0.0.2:1".parse().unwrap()).unwrap();
    match Client::with_transport(
        Box::new(sock),
        Box::new(clock.clone()),
        "10.0.0.1:1".parse().unwrap(),
        Config {
            max_pending_event_bytes: 10,
            ..Config::default()
        },
    ) {
        Err(e @ Error::InvalidConfig(_)) => {
            assert!(e.to_string().contains("max_pending_event_bytes"), "{e}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert!(matches!(
        Server::bind("127.0.0.1:0", bad.clone()),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Client::connect(("127.0.0.1", 9), bad),
        Err(Error::InvalidConfig(_))
    ));
}

// ======================================================================== memory

#[test]
fn idle_connection_memory_is_small() {
    let (mut sim, id) = connected_sim(Config::default(), 17);
    // The server's Pong to the client's proof of address is in flight when both ends have
    // reported `Connected` (one segment buffer): measure once it is acknowledged.
    let acked = |s: &Sim| s.server.connection_stats(id).unwrap().in_flight == 0;
    assert!(sim.run_until(100, acked));
    let fresh = sim.server.connection_memory(id).unwrap();
    sim.run_for(Duration::from_secs(5));
    let idle = sim.server.connection_memory(id).unwrap();
    println!("connection memory: {fresh} bytes after connecting, {idle} bytes after 5 s idle");
    // The output buffer and free payload buffers are shared by all connections: an idle
    // one holds its state and its queues' capacity of one or two entries (1.6 KB measured).
    assert!(fresh <= 2 * 1024, "{fresh}");
    assert!(idle <= 2 * 1024, "{idle}");

    // A burst grows the buffers; idling gives most of it back.
    for k in 0..20 {
        sim.server
            .send(id, &payload(17, k, 5000), Channel::Reliable)
            .unwrap();
    }
    // Idle again: trimmed at the second keepalive interval (3 s) without messages.
    sim.run_for(Duration::from_secs(8));
    let after_burst = sim.server.connection_memory(id).unwrap();
    println!("connection memory: {after_burst} bytes 8 s after a 100 KB burst");
    assert!(after_burst <= 2 * 1024, "{after_burst}");
}

// ============================================================ partial event draining

/// An application may take only some events per frame. Events left in the queue must keep
/// their contents whatever was taken before them (an Error included) and whatever arrives
/// meanwhile.
#[test]
fn partially_drained_queue_keeps_message_contents() {
    let mut sim = Sim::new(Config::default(), 18);
    sim.add_client(Config::default());
    sim.add_client(Config::default());
    sim.connect_all(200);
    let a = sim.server_id_of(0).unwrap();
    let b = sim.server_id_of(1).unwrap();
    // A goes silent and will time out while B keeps talking.
    sim.clients[0]
        .set_conditions(Direction::Both, Conditions::lossy(1.0))
        .unwrap();
    let mut sent = Vec::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut a_events = Vec::new();
    for step in 0..12_000u64 {
        // A burst first, then one message per frame while the server takes one event per
        // frame: the queue keeps a backlog of about the burst.
        let count = match step {
            0 => 50,
            s if s < 11_900 => 1,
            _ => 0,
        };
        for k in 0..count {
            let m = payload(18, 100 * step + k, 10 + ((step + k) as usize % 300));
            let ch = if (step + k) % 2 == 0 {
                Channel::Unreliable
            } else {
                Channel::Reliable
            };
            sim.clients[1].send(&m, ch).unwrap();
            sent.push(m);
        }
        sim.server.tick_incoming();
        for _ in 0..1 {
            let Some(ev) = sim.server.poll_event() else {
                break;
            };
            match ev {
                Event::Data { id, data, .. } => {
                    assert_eq!(id, b);
                    got.push(data.to_vec());
                }
                other if other.id() == a => a_events.push(other.to_owned_event()),
                _ => {}
            }
        }
        sim.server.tick_outgoing();
        for c in sim.clients.iter_mut() {
            c.tick_incoming();
            while c.poll_event().is_some() {}
            c.tick_outgoing();
        }
        sim.clock.advance(Duration::from_millis(1));
    }
    while let Some(ev) = sim.server.poll_event() {
        match ev {
            Event::Data { data, .. } => got.push(data.to_vec()),
            other if other.id() == a => a_events.push(other.to_owned_event()),
            _ => {}
        }
    }
    assert!(
        matches!(
            a_events.as_slice(),
            [
                OwnedEvent::Error {
                    code: ErrorCode::Timeout,
                    ..
                },
                OwnedEvent::Disconnected {
                    reason: DisconnectReason::Timeout,
                    ..
                }
            ]
        ),
        "{a_events:?}"
    );
    // Perfect link for B: everything arrives; unreliable and reliable may interleave
    // differently, so compare as multisets, and each message must be intact.
    assert_eq!(got.len(), sent.len());
    let mut g = got.clone();
    let mut s = sent.clone();
    g.sort();
    s.sort();
    assert!(g == s, "message contents changed");
}

// ================================================================ more server paths

#[test]
fn server_graceful_disconnect_delivers_queued_data_first() {
    let (mut sim, id) = connected_sim(Config::default(), 19);
    let cid = sim.clients[0].id();
    let msgs: Vec<Vec<u8>> = (0..30).map(|k| payload(19, k, 3000)).collect();
    for m in &msgs {
        sim.server.send(id, m, Channel::Reliable).unwrap();
    }
    sim.server.disconnect_graceful(id).unwrap();
    assert_eq!(sim.server.state(id), Some(ConnectionState::Disconnecting));
    assert!(matches!(
        sim.server.send(id, b"late", Channel::Reliable),
        Err(Error::NotConnected)
    ));
    // The connection is no longer listed as connected, but still counted until it closes.
    assert!(
        sim.run_until(3000, |s| !disconnects(&s.server_events, id).is_empty()
            && !disconnects(&s.client_events[0], cid).is_empty())
    );
    let got: Vec<Vec<u8>> = data_of(&sim.client_events[0], cid)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert!(got == msgs, "client got {} of 30 messages", got.len());
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::Local]
    );
    assert_eq!(
        disconnects(&sim.client_events[0], cid),
        vec![DisconnectReason::Remote]
    );
    assert_eq!(sim.server.connection_count(), 0);
    assert_eq!(sim.server.state(id), None);
}

#[test]
fn server_shutdown_reports_each_connection_once() {
    let mut sim = Sim::new(Config::default(), 20);
    for _ in 0..3 {
        sim.add_client(Config::default());
    }
    sim.connect_all(200);
    // Plus a spoofed Hello, which must not produce an event.
    let mut spoof = Silent::bind(&sim.net, "10.99.0.1:1234");
    spoof.send(&hex(KCP2K_HELLO), sim.server_addr);
    sim.run_for(Duration::from_millis(5));
    assert_eq!(sim.server.connection_count(), 3);
    sim.server.shutdown();
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.server.connection_count(), 0);
    for i in 0..3 {
        let id = sim.server_id_of(i).unwrap();
        assert_eq!(
            disconnects(&sim.server_events, id),
            vec![DisconnectReason::Closed]
        );
        // A kcpnet client is told why (close-reasons extension).
        assert_eq!(
            disconnects(&sim.client_events[i], sim.clients[i].id()),
            vec![DisconnectReason::RemoteShutdown]
        );
    }
    assert_eq!(
        sim.server_events
            .iter()
            .filter(|e| matches!(e, OwnedEvent::Disconnected { .. }))
            .count(),
        3
    );
}

#[test]
fn protocol_violations_from_a_connected_client_close_it() {
    // (datagram body after the cookie, as a reliable message payload) -> expected error
    let cases: [&[u8]; 3] = [&[3], &[9, 1, 2], &[1]];
    for (k, msg) in cases.iter().enumerate() {
        let mut sim = Sim::new(Config::default(), 21 + k as u64);
        let (c, tap) = add_tapped_client(&mut sim, Config::default());
        sim.connect_all(200);
        let id = sim.server_id_of(c).unwrap();
        let cid = sim.clients[c].id();
        sim.run_for(Duration::from_millis(30));
        let cookie = tapped_cookie(&tap);
        let (mut next_sn, mut una) = (0u32, 0u32);
        for d in tap.lock().unwrap().sent.iter().filter(|d| d[0] == 1) {
            for seg in segments(&d[5..]) {
                let (h, _) = seg.unwrap();
                una = una.max(h.una);
                if h.cmd == Command::Push {
                    next_sn = next_sn.max(h.sn + 1);
                }
            }
        }
        let h = SegmentHeader {
            conv: 0,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts: now_ms(&sim) as u32,
            sn: next_sn,
            una,
            len: msg.len() as u32,
        };
        let mut d = vec![1u8];
        d.extend_from_slice(&cookie.to_le_bytes());
        d.extend_from_slice(&h.to_bytes());
        d.extend_from_slice(msg);
        tap.lock().unwrap().inject.push((d, sim.server_addr));
        sim.run_for(Duration::from_millis(30));
        let ctl = control_events(&sim.server_events, id);
        match msg[0] {
            1 => {
                // A second Hello: kcp2k disconnects without OnError.
                assert_eq!(
                    disconnects(&sim.server_events, id),
                    vec![DisconnectReason::ProtocolError],
                    "{ctl:?}"
                );
            }
            _ => {
                assert_eq!(ctl.len(), 3, "{ctl:?}");
                assert!(
                    matches!(
                        ctl[1],
                        OwnedEvent::Error {
                            code: ErrorCode::InvalidReceive,
                            ..
                        }
                    ),
                    "{ctl:?}"
                );
                assert_eq!(
                    ctl[2],
                    OwnedEvent::Disconnected {
                        id,
                        reason: DisconnectReason::ProtocolError
                    }
                );
            }
        }
        assert!(data_of(&sim.server_events, id).is_empty());
        // The (kcpnet) client is told, with the server's error text.
        let told = disconnects(&sim.client_events[c], cid);
        assert!(
            matches!(
                told.as_slice(),
                [DisconnectReason::RemoteProtocolError { message }] if !message.is_empty()
            ),
            "the client is told: {told:?}"
        );
        assert_eq!(sim.server.connection_count(), 0);
    }
}

// ================================================================= slow reader

/// A server application that takes its events only every 50 ms, with the smallest event
/// budget: KCP's flow control holds the sender back while the budget is full, and the
/// stream resumes as soon as the application has taken the events (not at the next ping,
/// a second later).
#[test]
fn a_slow_reader_throttles_the_sender_without_stalling() {
    let base = Config::default();
    let server_config = Config {
        max_pending_event_bytes: base.reliable_max_message_size() + 1,
        ..Config::default()
    };
    let mut sim = Sim::new(server_config, 22);
    sim.add_client(Config::default());
    sim.connect_all(200);
    let id = sim.server_id_of(0).unwrap();
    const N: u64 = 2000;
    for k in 0..N {
        sim.clients[0]
            .send(&payload(22, k, 1000), Channel::Reliable)
            .unwrap();
    }
    let start = now_ms(&sim);
    let mut got = 0u64;
    let mut ok = true;
    let mut steps = 0;
    while got < N && steps < 20_000 {
        if steps % 50 == 0 {
            while let Some(ev) = sim.server.poll_event() {
                if let Event::Data { id: i, data, .. } = ev {
                    assert_eq!(i, id);
                    ok &= data == payload(22, got, 1000).as_slice();
                    got += 1;
                }
            }
        }
        step_server_never_drained(&mut sim);
        steps += 1;
    }
    let took = now_ms(&sim) - start;
    println!("slow reader: {got} messages of 1000 bytes in {took} ms of virtual time");
    assert!(ok, "content differs");
    assert_eq!(got, N);
    assert!(sim.clients[0].is_connected());
    // 2 MB at one 148 KB event budget per 50 ms is about 0.7 s; a stream that waits for the
    // next ping after each drain takes over 10 s.
    assert!(took < 3000, "took {took} ms");
}

// ====================================================================== churn

/// Many clients come and go over lossy links while the server application drains events
/// partially, kicks, and disconnects gracefully; the event streams must stay clean: per id
/// Connected first, Data only while connected, exactly one Disconnected, nothing after it,
/// ids never reused, and every reliable stream an exact prefix of what was sent.
#[test]
fn churn_keeps_event_streams_clean() {
    use std::collections::HashMap;
    let mut sim = Sim::new(Config::default(), 23);
    sim.server
        .set_conditions(
            Direction::Send,
            Conditions::lossy(0.05).with_latency(Duration::from_millis(3)),
        )
        .unwrap();
    let mut rng = Rng(23);
    let mut sent: Vec<Vec<Vec<u8>>> = Vec::new(); // reliable messages per client
    let mut by_id: HashMap<ConnectionId, usize> = HashMap::new(); // id -> client index
    let mut state: HashMap<ConnectionId, u8> = HashMap::new(); // 1 connected, 2 closed
    let mut received: HashMap<ConnectionId, Vec<Vec<u8>>> = HashMap::new();
    let mut kicks = 0;
    let mut graceful = 0;
    const STEPS: u64 = 15_000;
    for step in 0..STEPS {
        // Arrivals.
        let live = sim
            .clients
            .iter()
            .filter(|c| c.state() != ConnectionState::Disconnected)
            .count();
        if step < STEPS - 3000 && live < 12 && rng.next_u64().is_multiple_of(50) {
            let i = sim.add_client(Config::default());
            let conditions = Conditions::lossy(0.05).with_latency(Duration::from_millis(2));
            sim.clients[i]
                .set_conditions(Direction::Send, conditions)
                .unwrap();
            sent.push(Vec::new());
        }
        // Client behaviour.
        for (i, (c, sent)) in sim.clients.iter_mut().zip(sent.iter_mut()).enumerate() {
            if !c.is_connected() {
                continue;
            }
            let r = rng.next_u64() % 1000;
            if step >= STEPS - 3000 || r < 2 {
                c.disconnect();
            } else if r < 4 {
                c.disconnect_graceful();
            } else if r < 200 {
                let len = rng.range(1, 2500);
                let m = payload(i as u64, sent.len() as u64, len);
                c.send(&m, Channel::Reliable).unwrap();
                sent.push(m);
            } else if r < 260 {
                let m = payload(1000 + i as u64, step, rng.range(1, 1000));
                c.send(&m, Channel::Unreliable).unwrap();
            }
        }
        // Server: partial draining, kicks.
        sim.server.tick_incoming();
        let budget = rng.range(0, 6);
        for _ in 0..budget {
            let Some(ev) = sim.server.poll_event() else {
                break;
            };
            let ev = ev.to_owned_event();
            let id = ev.id();
            match &ev {
                OwnedEvent::Connected { addr, .. } => {
                    assert!(!state.contains_key(&id), "id {id} reused");
                    state.insert(id, 1);
                    let i = (0..sim.clients.len())
                        .find(|&i| client_addr(i) == *addr)
                        .unwrap();
                    by_id.insert(id, i);
                }
                OwnedEvent::Data { channel, data, .. } => {
                    assert_eq!(state.get(&id), Some(&1), "Data for {id} outside its life");
                    if *channel == Channel::Reliable {
                        received.entry(id).or_default().push(data.clone());
                    }
                    let r = rng.next_u64() % 1000;
                    if r < 3 {
                        // The connection may have ended already (its Disconnected waits
                        // further down the queue).
                        match sim.server.disconnect(id) {
                            Ok(()) => kicks += 1,
                            Err(Error::ConnectionClosed) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    } else if r < 5 {
                        match sim.server.disconnect_graceful(id) {
                            Ok(()) => graceful += 1,
                            Err(Error::ConnectionClosed) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    } else if r < 100 {
                        // Replies may fail once the connection is disconnecting.
                        let _ = sim.server.send(id, data, *channel);
                    }
                }
                OwnedEvent::Disconnected { .. } => {
                    assert_eq!(
                        state.get(&id),
                        Some(&1),
                        "Disconnected for {id} twice or early"
                    );
                    state.insert(id, 2);
                }
                OwnedEvent::Error { .. } => {
                    assert_eq!(state.get(&id), Some(&1), "Error for {id} outside its life");
                }
                other => panic!("unexpected event {other:?}"),
            }
            sim.server_events.push(ev);
        }
        sim.server.tick_outgoing();
        for (i, client) in sim.clients.iter_mut().enumerate() {
            client.tick_incoming();
            while let Some(ev) = client.poll_event() {
                sim.client_events[i].push(ev.to_owned_event());
            }
            client.tick_outgoing();
        }
        sim.clock.advance(Duration::from_millis(1));
    }
    // Drain what is left and let every timeout run out.
    for _ in 0..12_000 {
        sim.server.tick_incoming();
        while let Some(ev) = sim.server.poll_event() {
            let ev = ev.to_owned_event();
            let id = ev.id();
            match &ev {
                OwnedEvent::Data { channel, data, .. } => {
                    assert_eq!(state.get(&id), Some(&1));
                    if *channel == Channel::Reliable {
                        received.entry(id).or_default().push(data.clone());
                    }
                }
                OwnedEvent::Disconnected { .. } => {
                    assert_eq!(state.get(&id), Some(&1));
                    state.insert(id, 2);
                }
                OwnedEvent::Connected { .. } => panic!("late Connected"),
                OwnedEvent::Error { .. } => assert_eq!(state.get(&id), Some(&1)),
                other => panic!("unexpected event {other:?}"),
            }
        }
        sim.server.tick_outgoing();
        for c in sim.clients.iter_mut() {
            c.tick_incoming();
            while c.poll_event().is_some() {}
            c.tick_outgoing();
        }
        sim.clock.advance(Duration::from_millis(1));
    }
    println!(
        "churn: {} clients, {} connections, {kicks} kicks, {graceful} graceful",
        sim.clients.len(),
        state.len()
    );
    assert!(state.len() >= 20, "{}", state.len());
    assert!(kicks > 0 && graceful > 0);
    assert!(
        state.values().all(|&s| s == 2),
        "every connection ended once"
    );
    assert_eq!(sim.server.connection_count(), 0);
    for (id, msgs) in &received {
        let i = by_id[id];
        assert!(
            msgs.len() <= sent[i].len() && msgs[..] == sent[i][..msgs.len()],
            "reliable stream of client {i} ({id}) is not a prefix of what it sent"
        );
    }
    // Every client attempt ended exactly once.
    for (i, events) in sim.client_events.iter().enumerate() {
        let n = events
            .iter()
            .filter(|e| matches!(e, OwnedEvent::Disconnected { .. }))
            .count();
        assert_eq!(n, 1, "client {i}: {events:?}");
        let connected = events
            .iter()
            .filter(|e| matches!(e, OwnedEvent::Connected { .. }))
            .count();
        assert!(connected <= 1);
    }
}

// ================================================================ clock wrap

/// KCP's clock is a wrapping u32 of milliseconds (49.7 days). A connection that lives
/// across the wrap keeps working: no spurious timeout, messages flow, pings measure.
#[test]
fn connection_survives_the_32_bit_millisecond_wrap() {
    let mut sim = Sim::new(Config::default(), 24);
    sim.clock.set(Duration::from_millis((1u64 << 32) - 3000));
    sim.add_client(Config::default());
    sim.connect_all(200);
    let id = sim.server_id_of(0).unwrap();
    let cid = sim.clients[0].id();
    let mut sent = Vec::new();
    // Traffic through the wrap, then 5 s with pings only, then traffic again.
    for step in 0..12_000u64 {
        if step % 20 == 0 && !(4000..9000).contains(&step) {
            let m = payload(24, step, 500);
            sim.clients[0].send(&m, Channel::Reliable).unwrap();
            sent.push(m);
        }
        if step == 4000 {
            assert!(sim.clock.now() > Duration::from_millis(1 << 32));
        }
        sim.step_echo();
    }
    sim.run_for(Duration::from_millis(100));
    let echoed: Vec<Vec<u8>> = data_of(&sim.client_events[0], cid)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert!(echoed == sent, "{} of {} echoed", echoed.len(), sent.len());
    assert!(disconnects(&sim.server_events, id).is_empty());
    assert!(disconnects(&sim.client_events[0], cid).is_empty());
    let rtt = sim.server.rtt(id).unwrap();
    assert!(rtt < 50, "rtt {rtt}");
    assert!(sim.clients[0].rtt().unwrap() < 50);

    // A silent link still times out on time.
    sim.clients[0]
        .set_conditions(Direction::Both, Conditions::lossy(1.0))
        .unwrap();
    let start = now_ms(&sim);
    let ok = sim.run_until(15_000, |s| !disconnects(&s.server_events, id).is_empty());
    assert!(ok);
    let took = now_ms(&sim) - start;
    assert!(
        (9_000..=11_500).contains(&took),
        "timed out after {took} ms"
    );
}

// ============================================================ client callback form

/// One step in which the server only records its events and client 0 is ticked in the
/// callback form with `handler`; its events are recorded in `sim.client_events[0]`.
fn step_client_callback(sim: &mut Sim, mut handler: impl FnMut(&mut ClientCtx<'_>, &Event<'_>)) {
    let log = &mut sim.server_events;
    sim.server
        .tick_incoming_with(|_, ev| log.push(ev.to_owned_event()));
    sim.server.tick_outgoing();
    let log = &mut sim.client_events[0];
    sim.clients[0].tick_incoming_with(|ctx, ev| {
        log.push(ev.to_owned_event());
        handler(ctx, &ev);
    });
    sim.clients[0].tick_outgoing();
    sim.clock.advance(Duration::from_millis(1));
}

#[test]
fn client_callback_form_replies_and_disconnects_cleanly() {
    let (mut sim, id) = connected_sim(Config::default(), 25);
    let cid = sim.clients[0].id();
    sim.server.send(id, b"ping?", Channel::Reliable).unwrap();
    for _ in 0..30 {
        step_client_callback(&mut sim, |ctx, ev| {
            if let Event::Data { data, .. } = ev {
                if *data == b"ping?" {
                    ctx.send(b"pong!", Channel::Reliable).unwrap();
                }
            }
        });
    }
    assert_eq!(
        data_of(&sim.server_events, id),
        vec![(Channel::Reliable, b"pong!".to_vec())]
    );
    // BYE and another message in one datagram: nothing after the disconnect.
    sim.server.send(id, b"BYE", Channel::Reliable).unwrap();
    sim.server.send(id, b"after", Channel::Reliable).unwrap();
    for _ in 0..30 {
        step_client_callback(&mut sim, |ctx, ev| {
            if let Event::Data { data, .. } = ev {
                if *data == b"BYE" {
                    ctx.disconnect();
                    assert_eq!(ctx.state(), ConnectionState::Disconnected);
                }
            }
        });
    }
    let all = &sim.client_events[0];
    let data: Vec<Vec<u8>> = data_of(all, cid).into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, vec![b"ping?".to_vec(), b"BYE".to_vec()]);
    assert_eq!(disconnects(all, cid), vec![DisconnectReason::Local]);
    assert_eq!(
        all.last(),
        Some(&OwnedEvent::Disconnected {
            id: cid,
            reason: DisconnectReason::Local
        })
    );
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::Remote]
    );
}

#[test]
fn a_connecting_client_adopts_the_cookie_only_from_a_valid_datagram() {
    // A raw socket plays the server, so the test controls every byte the client gets.
    let sim = Sim::new(Config::default(), 31);
    let mut injector = sim.net.bind("10.9.9.9:1".parse().unwrap()).unwrap();
    let server_addr = injector.local_addr().unwrap();
    let socket = sim.net.bind(client_addr(7)).unwrap();
    let mut client = Client::with_transport(
        Box::new(socket),
        Box::new(sim.clock.clone()),
        server_addr,
        Config::default(),
    )
    .unwrap();
    client.tick_outgoing();
    let mut buf = vec![0u8; 2048];
    let (n, _) = injector
        .recv_from(&mut buf, sim.clock.now())
        .unwrap()
        .unwrap();
    assert_eq!(
        &buf[..5],
        &[1, 0, 0, 0, 0],
        "Hello with cookie 0 ({n} bytes)"
    );
    // A datagram with a non-zero cookie that KCP rejects (conv 7, not 0): not adopted.
    let mut junk = vec![1u8, 0xEF, 0xBE, 0xAD, 0xDE];
    let mut seg = SegmentHeader {
        conv: 7,
        cmd: Command::Ack,
        frg: 0,
        wnd: 128,
        ts: 0,
        sn: 0,
        una: 1,
        len: 0,
    }
    .to_bytes()
    .to_vec();
    junk.append(&mut seg);
    injector
        .send_to(&junk, client_addr(7), sim.clock.now())
        .unwrap();
    client.tick_incoming();
    // Now the real reply: ACK of the Hello plus the server's Hello, with cookie 0x01020304.
    let cookie = 0x0102_0304u32;
    let mut reply = vec![1u8];
    reply.extend_from_slice(&cookie.to_le_bytes());
    for (cmd, sn, len) in [(Command::Ack, 0u32, 0u32), (Command::Push, 0, 1)] {
        let h = SegmentHeader {
            conv: 0,
            cmd,
            frg: 0,
            wnd: 128,
            ts: 0,
            sn,
            una: if cmd == Command::Push { 1 } else { 0 },
            len,
        };
        reply.extend_from_slice(&h.to_bytes());
    }
    reply.push(1); // Hello
    injector
        .send_to(&reply, client_addr(7), sim.clock.now())
        .unwrap();
    client.tick_incoming();
    assert!(
        client.is_connected(),
        "the junk's cookie must not have been adopted: {:?}",
        client.connection_stats()
    );
    assert!(matches!(client.poll_event(), Some(Event::Connected { .. })));
    // Everything the client sends from now on carries the real cookie.
    client.tick_outgoing();
    let (n, _) = injector
        .recv_from(&mut buf, sim.clock.now())
        .unwrap()
        .unwrap();
    assert_eq!(&buf[1..5], &cookie.to_le_bytes(), "{:?}", &buf[..n]);
}

#[test]
fn mismatched_receive_windows_are_reported_not_stalled() {
    // The client may send messages of 254 fragments (receive window 4096); the server's
    // window of 128 can never hold them. kcp2k stalls until the timeout; we report it.
    let server_config = Config::default();
    let client_config = Config {
        receive_window_size: 4096,
        send_window_size: 256,
        ..Config::default()
    };
    let mut sim = Sim::new(server_config, 32);
    sim.add_client(client_config.clone());
    sim.connect_all(100);
    let id = sim.server_id_of(0).unwrap();
    let big = payload(1, 1, client_config.reliable_max_message_size());
    assert_eq!(big.len(), 297_433);
    sim.clients[0].send(&big, Channel::Reliable).unwrap();
    sim.run_until(2_000, |s| {
        s.server_events
            .iter()
            .any(|e| matches!(e, OwnedEvent::Disconnected { .. }))
    });
    let errors: Vec<_> = sim
        .server_events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Error {
                id: i,
                code,
                message,
            } if *i == id => Some((*code, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{:?}", sim.server_events);
    assert_eq!(errors[0].0, ErrorCode::InvalidReceive);
    assert!(
        errors[0].1.contains("receive_window_size"),
        "{}",
        errors[0].1
    );
    assert_eq!(
        disconnects(&sim.server_events, id),
        vec![DisconnectReason::ProtocolError]
    );
    assert!(
        sim.steps < 2_000,
        "reported long before any timeout (took {} ms)",
        sim.steps
    );
}

/// `broadcast` reaches every connected client once; `send_each` with a snapshot from
/// `connections_into` reaches exactly the chosen ones, while the server is free to send.
#[test]
fn broadcast_and_send_each_reach_exactly_their_targets() {
    let mut sim = Sim::new(Config::default(), 11);
    for _ in 0..5 {
        sim.add_client(Config::default());
    }
    sim.connect_all(5_000);
    assert_eq!(sim.server.broadcast(b"to all", Channel::Reliable), 5);
    let mut ids = Vec::new();
    sim.server.connections_into(&mut ids);
    assert_eq!(ids.len(), 5);
    let skipped = sim.server_id_of(2).unwrap();
    ids.retain(|&id| id != skipped);
    assert_eq!(sim.server.send_each(&ids, b"to four", Channel::Reliable), 4);
    sim.run_for(Duration::from_millis(500));
    // An ended id is skipped, not an error.
    sim.server.disconnect(sim.server_id_of(4).unwrap()).unwrap();
    assert_eq!(sim.server.broadcast(b"after a kick", Channel::Reliable), 4);
    sim.run_for(Duration::from_millis(500));
    for i in 0..5 {
        let got: Vec<Vec<u8>> = sim.client_events[i]
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Data { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect();
        let mut expect: Vec<&[u8]> = vec![b"to all"];
        if i != 2 {
            expect.push(b"to four");
        }
        if i != 4 {
            expect.push(b"after a kick");
        }
        assert_eq!(got, expect, "client {i}");
    }
}
