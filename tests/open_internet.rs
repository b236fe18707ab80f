//! Fit for the open internet: send backpressure, the client's handshake against forged
//! datagrams, and the per-connection memory bound against a lying peer. Virtual clock,
//! memory network.

mod common;

use std::time::Duration;

use common::{payload, Sim, SERVER_ADDR};
use kcpnet::io::{ManualClock, MemoryNetwork, Transport};
use kcpnet::{Channel, Client, Config, ConnectionState, Error, ErrorCode, Event, OwnedEvent};

/// The server answers a trigger message with a burst of up to `burst` 1000-byte reliable
/// messages, sent while it holds the event in a drain, until the first send fails. Returns
/// how many were accepted and the error.
fn burst_from_drain(sim: &mut Sim, burst: u64) -> (u64, Option<Error>) {
    let mut accepted = 0u64;
    let mut error = None;
    sim.server.tick_incoming();
    let mut drain = sim.server.drain_events();
    while let Some((ev, server)) = drain.next() {
        if let Event::Data { id, .. } = ev {
            for seq in 0..burst {
                match server.send(id, &payload(1, seq, 1000), Channel::Reliable) {
                    Ok(()) => accepted += 1,
                    Err(e) => {
                        assert_eq!(server.send_capacity(id), Some(0));
                        assert!(server.is_connected(id), "backpressure must not disconnect");
                        error = Some(e);
                        break;
                    }
                }
            }
        }
    }
    drop(drain);
    sim.server.tick_outgoing();
    (accepted, error)
}

fn connected_pair(config: Config, seed: u64) -> Sim {
    let mut sim = Sim::new(config.clone(), seed);
    sim.add_client(config);
    sim.connect_all(1_000);
    sim
}

/// Ticks until the client received `n` reliable messages (or `max_steps` pass) and returns
/// them in arrival order.
fn client_receives(sim: &mut Sim, n: usize, max_steps: u64) -> Vec<Vec<u8>> {
    sim.run_until(max_steps, |s| {
        s.client_events[0]
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    OwnedEvent::Data {
                        channel: Channel::Reliable,
                        ..
                    }
                )
            })
            .count()
            >= n
    });
    sim.client_events[0]
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data {
                channel: Channel::Reliable,
                data,
                ..
            } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn backpressure_in_the_drain_form() {
    let config = Config {
        send_queue_limit: 200 * 1024,
        ..Config::default()
    };
    let mut sim = connected_pair(config.clone(), 31);
    sim.clients[0].send(b"go", Channel::Reliable).unwrap();
    sim.clients[0].tick_outgoing();
    let (accepted, error) = burst_from_drain(&mut sim, 50_000);
    let Some(Error::SendQueueFull { queued, limit }) = error else {
        panic!("expected SendQueueFull, got {error:?} after {accepted} sends");
    };
    assert_eq!(limit, config.send_queue_limit);
    assert!(queued >= limit, "{queued} < {limit}");
    // Never more than the limit plus one message (each 1000-byte message is one segment).
    assert!(queued <= limit + config.kcp_mss(), "{queued}");
    assert_eq!(
        Error::SendQueueFull { queued, limit }.code(),
        ErrorCode::SendQueueFull
    );
    // Everything accepted arrives, in order; nothing was lost or disconnected.
    let got = client_receives(&mut sim, accepted as usize, 60_000);
    assert_eq!(got.len(), accepted as usize);
    for (seq, m) in got.iter().enumerate() {
        assert_eq!(m, &payload(1, seq as u64, 1000));
    }
    let id = sim.server_id_of(0).unwrap();
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
    sim.run_for(Duration::from_millis(100)); // the last ACKs
    assert_eq!(sim.server.send_capacity(id), Some(config.send_queue_limit));
    assert!(!sim.server_events.iter().any(|e| matches!(
        e,
        OwnedEvent::Disconnected { .. } | OwnedEvent::Error { .. }
    )));
}

#[test]
fn backpressure_in_the_callback_form() {
    let config = Config {
        send_queue_limit: 100 * 1024,
        ..Config::default()
    };
    let mut sim = connected_pair(config.clone(), 32);
    sim.clients[0].send(b"go", Channel::Reliable).unwrap();
    sim.clients[0].tick_outgoing();
    let mut accepted = 0u64;
    let mut error = None;
    sim.server.tick_incoming_with(|server, ev| {
        if let Event::Data { id, .. } = ev {
            for seq in 0..50_000 {
                match server.send(id, &payload(2, seq, 1000), Channel::Reliable) {
                    Ok(()) => accepted += 1,
                    Err(e) => {
                        assert!(server.is_connected(id));
                        error = Some(e);
                        break;
                    }
                }
            }
        }
    });
    sim.server.tick_outgoing();
    assert!(
        matches!(error, Some(Error::SendQueueFull { .. })),
        "{error:?}"
    );
    let expected = (config.send_queue_limit / config.kcp_mss()) as u64;
    assert!(
        (expected..=expected + 1).contains(&accepted),
        "{accepted} accepted for a limit of {expected} segments"
    );
    let got = client_receives(&mut sim, accepted as usize, 60_000);
    assert_eq!(got.len(), accepted as usize);
    assert!(got
        .iter()
        .enumerate()
        .all(|(seq, m)| m == &payload(2, seq as u64, 1000)));
}

#[test]
fn client_backpressure_and_capacity() {
    let config = Config {
        send_queue_limit: 64 * 1024,
        ..Config::default()
    };
    let mut sim = connected_pair(config.clone(), 33);
    assert_eq!(sim.clients[0].send_capacity(), config.send_queue_limit);
    let mut accepted = 0;
    let err = loop {
        match sim.clients[0].send(&payload(3, accepted, 5000), Channel::Reliable) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "no backpressure");
    };
    assert!(matches!(err, Error::SendQueueFull { .. }), "{err:?}");
    assert_eq!(sim.clients[0].send_capacity(), 0);
    assert!(sim.clients[0].is_connected());
    // Unreliable sends are not queued, so they still go out.
    sim.clients[0]
        .send(b"position", Channel::Unreliable)
        .unwrap();
    sim.run_until(20_000, |s| {
        s.server_events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    OwnedEvent::Data {
                        channel: Channel::Reliable,
                        ..
                    }
                )
            })
            .count()
            >= accepted as usize
    });
    assert_eq!(sim.clients[0].send_capacity(), config.send_queue_limit);
}

/// A raw socket at the server's address plays a server that forges datagrams to a client.
#[test]
fn a_connecting_client_ignores_a_disconnect_before_it_has_the_cookie() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr = SERVER_ADDR.parse().unwrap();
    let mut fake_server = net.bind(server_addr).unwrap();
    let mut client = Client::with_transport(
        Box::new(net.bind("10.0.9.9:5000".parse().unwrap()).unwrap()),
        Box::new(clock.clone()),
        server_addr,
        Config::default(),
    )
    .unwrap();
    client.tick_outgoing(); // the Hello goes out
    let mut buf = [0u8; 1500];
    let (_, client_addr) = fake_server
        .recv_from(&mut buf, clock.now())
        .unwrap()
        .expect("the client's Hello");
    // Forged unreliable Disconnects with a made-up cookie (and with cookie 0).
    for d in [[2u8, 0x44, 0x33, 0x22, 0x11, 5], [2, 0, 0, 0, 0, 5]] {
        fake_server.send_to(&d, client_addr, clock.now()).unwrap();
    }
    client.tick_incoming();
    assert!(
        client.poll_event().is_none(),
        "a forged Disconnect was taken"
    );
    assert_eq!(client.state(), ConnectionState::Connecting);
    clock.advance(Duration::from_millis(10));
    client.tick_outgoing();
    assert_eq!(client.state(), ConnectionState::Connecting);
}

// ================================================== memory bound against a lying peer

use kcpnet::io::MemorySocket;
use kcpnet::wire::datagram::Datagram;
use kcpnet::wire::segment::{Command, SegmentHeader};
use kcpnet::{ConnectionId, Server};

/// A peer that speaks raw datagrams: it completes the handshake by hand, then lies.
struct Liar {
    clock: ManualClock,
    server: Server,
    raw: MemorySocket,
    cookie: u32,
    id: Option<ConnectionId>,
    events: Vec<OwnedEvent>,
    peak_memory: usize,
    bound: usize,
}

const LIAR_ADDR: &str = "10.6.6.6:6666";

fn seg(cmd: Command, sn: u32, una: u32, frg: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = SegmentHeader {
        conv: 0,
        cmd,
        frg,
        wnd: 128,
        ts: 0,
        sn,
        una,
        len: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

impl Liar {
    fn connect() -> Liar {
        let net = MemoryNetwork::new();
        let clock = ManualClock::starting_at(Duration::from_secs(5));
        let server_addr = SERVER_ADDR.parse().unwrap();
        let mut server = Server::with_transport(
            Box::new(net.bind(server_addr).unwrap()),
            Box::new(clock.clone()),
            Config::default(),
        )
        .unwrap();
        let mut raw = net.bind(LIAR_ADDR.parse().unwrap()).unwrap();
        let bound = server.connection_memory_bound();
        // Hello; the stateless reply carries the cookie.
        let mut hello = vec![1, 0, 0, 0, 0];
        hello.extend(seg(Command::Push, 0, 0, 0, &[1]));
        raw.send_to(&hello, server_addr, clock.now()).unwrap();
        server.tick_incoming();
        server.tick_outgoing();
        let mut buf = [0u8; 2048];
        let (n, _) = raw.recv_from(&mut buf, clock.now()).unwrap().unwrap();
        let cookie = Datagram::parse(&buf[..n]).unwrap().cookie;
        assert_eq!(
            server.connection_count(),
            0,
            "nothing stored before the echo"
        );
        let mut liar = Liar {
            clock,
            server,
            raw,
            cookie,
            id: None,
            events: Vec::new(),
            peak_memory: 0,
            bound,
        };
        // ACK sn 0 with una 1: the handshake reply.
        liar.send(&[seg(Command::Ack, 0, 1, 0, &[])]);
        liar.id = match liar.events.first() {
            Some(OwnedEvent::Connected { id, .. }) => Some(*id),
            other => panic!("not connected: {other:?}"),
        };
        liar
    }

    /// Sends one reliable datagram made of `segs` and runs a server tick.
    fn send(&mut self, segs: &[Vec<u8>]) {
        let mut d = vec![1];
        d.extend_from_slice(&self.cookie.to_le_bytes());
        for s in segs {
            d.extend_from_slice(s);
        }
        self.raw
            .send_to(&d, SERVER_ADDR.parse().unwrap(), self.clock.now())
            .unwrap();
        self.tick();
    }

    fn tick(&mut self) {
        self.server.tick_incoming();
        while let Some(e) = self.server.poll_event() {
            self.events.push(e.to_owned_event());
        }
        self.server.tick_outgoing();
        let mut buf = [0u8; 2048];
        while self
            .raw
            .recv_from(&mut buf, self.clock.now())
            .unwrap()
            .is_some()
        {}
        self.clock.advance(Duration::from_millis(1));
        if let Some(m) = self.id.and_then(|id| self.server.connection_memory(id)) {
            self.peak_memory = self.peak_memory.max(m);
            assert!(m <= self.bound, "{m} bytes held, bound {}", self.bound);
        }
    }

    fn error(&self) -> Option<(ErrorCode, String)> {
        self.events.iter().find_map(|e| match e {
            OwnedEvent::Error { code, message, .. } => Some((*code, message.clone())),
            _ => None,
        })
    }

    fn drops(&self) -> kcpnet::kcp::InputDrops {
        self.server
            .connection_stats(self.id.unwrap())
            .expect("still connected")
            .input_drops
    }
}

#[test]
fn segments_beyond_the_receive_window_are_dropped_and_counted() {
    let mut l = Liar::connect();
    for k in 0..500u32 {
        l.send(&[seg(Command::Push, 129 + k * 7, 1, 0, &[3; 1000])]);
    }
    assert!(l.error().is_none());
    assert!(l.server.is_connected(l.id.unwrap()));
    assert_eq!(l.drops().beyond_window, 500);
    assert!(l.peak_memory <= l.bound);
}

#[test]
fn fragments_that_do_not_count_down_are_a_protocol_error() {
    let mut l = Liar::connect();
    // A message announced as 3 fragments whose counter goes 2, 2, 0.
    l.send(&[
        seg(Command::Push, 1, 1, 2, &[3, 1, 1]),
        seg(Command::Push, 2, 1, 2, &[2, 2]),
        seg(Command::Push, 3, 1, 0, &[3, 3]),
    ]);
    let (code, message) = l.error().expect("an error");
    assert_eq!(code, ErrorCode::InvalidReceive);
    assert!(message.contains("count down"), "{message}");
    assert!(matches!(
        l.events.last(),
        Some(OwnedEvent::Disconnected {
            reason: kcpnet::DisconnectReason::ProtocolError,
            ..
        })
    ));
    assert_eq!(l.server.connection_count(), 0);
}

#[test]
fn a_255_fragment_message_cannot_pin_memory() {
    let mut l = Liar::connect();
    let mss = Config::default().kcp_mss();
    for i in 0..255u32 {
        let frg = (254 - i) as u8;
        let body = vec![if i == 0 { 3 } else { 7 }; mss];
        l.send(&[seg(Command::Push, 1 + i, 1, frg, &body)]);
    }
    // More fragments than the 128-segment receive window can hold: an error, not a stall.
    let (code, message) = l.error().expect("an error");
    assert_eq!(code, ErrorCode::InvalidReceive);
    assert!(message.contains("receive window"), "{message}");
    assert!(l.peak_memory <= l.bound);
}

#[test]
fn repeated_hellos_are_duplicates_and_a_new_hello_is_an_error() {
    let mut l = Liar::connect();
    for _ in 0..200 {
        l.send(&[seg(Command::Push, 0, 1, 0, &[1])]);
    }
    assert!(l.error().is_none(), "duplicates of the Hello are harmless");
    assert!(l.drops().duplicates >= 200);
    l.send(&[seg(Command::Push, 1, 1, 0, &[1])]);
    let (code, message) = l.error().expect("an error for a second Hello");
    assert_eq!(code, ErrorCode::InvalidReceive);
    assert!(message.contains("Hello"), "{message}");
}

#[test]
fn acks_and_una_for_data_never_sent_are_ignored_and_counted() {
    let mut l = Liar::connect();
    for k in 0..100 {
        l.send(&[seg(Command::Ack, 5_000 + k, 1, 0, &[])]);
    }
    l.send(&[seg(Command::Ack, 0, 9_999, 0, &[])]);
    assert!(l.error().is_none());
    let drops = l.drops();
    assert_eq!(drops.ack_unsent, 100);
    assert!(drops.una_unsent >= 1);
    // The connection still works: a real message arrives.
    l.send(&[seg(Command::Push, 1, 1, 0, b"\x03real")]);
    assert!(l
        .events
        .iter()
        .any(|e| matches!(e, OwnedEvent::Data { data, .. } if data.as_slice() == b"real")));
    assert!(l.peak_memory <= l.bound);
}

#[test]
fn a_datagram_longer_than_the_mtu_is_an_error_naming_both_mtus() {
    let mut l = Liar::connect();
    // The only way to carry a PUSH longer than mss: a datagram longer than the mtu.
    l.send(&[seg(Command::Push, 1, 1, 0, &[3; 1400])]);
    let (code, message) = l.error().expect("an error");
    assert_eq!(code, ErrorCode::InvalidReceive);
    assert!(
        message.contains("1200") && message.contains("1429"),
        "{message}"
    );
}

#[test]
fn the_memory_bound_is_a_formula_of_the_config() {
    let net = MemoryNetwork::new();
    let mut port = 1000;
    let mut mk = |config: Config| {
        port += 1;
        Server::with_transport(
            Box::new(
                net.bind(format!("10.0.0.1:{port}").parse().unwrap())
                    .unwrap(),
            ),
            Box::new(ManualClock::new()),
            config,
        )
        .unwrap()
        .connection_memory_bound()
    };
    let small = mk(Config::default());
    let big = mk(Config::mirror());
    let tiny_queue = mk(Config {
        send_queue_limit: 64 * 1024,
        ..Config::default()
    });
    println!(
        "connection memory bound: default {small} B, mirror {big} B, 64 KiB queue {tiny_queue} B"
    );
    assert!(big > small, "larger windows, larger bound");
    assert!(tiny_queue < small, "a smaller send queue, a smaller bound");
    // The default bound: about the receive/send windows of segments, the pool and the
    // send queue limit (4 MiB), well under 16 MB.
    assert!(small > Config::default().send_queue_limit);
    assert!(small < 16 * 1024 * 1024, "{small}");
}
