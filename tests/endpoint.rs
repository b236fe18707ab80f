//! Two sans-IO endpoints against each other: no transport, no clock object, only plain
//! `now` values and datagrams moved by hand through a lossy, delayed path. Covers the
//! handshake, data both ways under loss, and every close path.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::endpoint::{Endpoint, Outbox};
use kcpnet::{Channel, Config, ConnectionId, ConnectionState, DisconnectReason, Error, OwnedEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVER: &str = "10.0.0.1:7777";
const CLIENT: &str = "10.0.0.2:5000";

/// One direction: datagrams in flight with their arrival times.
#[derive(Default)]
struct Link {
    in_flight: VecDeque<(u64, Vec<u8>)>,
    loss: f64,
    latency_ms: u64,
    sent: u64,
    lost: u64,
}

impl Link {
    fn take(&mut self, outbox: &mut Outbox, now_ms: u64, rng: &mut StdRng) {
        while let Some((_, data)) = outbox.pop() {
            self.sent += 1;
            if rng.gen_bool(self.loss) {
                self.lost += 1;
                continue;
            }
            self.in_flight
                .push_back((now_ms + self.latency_ms, data.to_vec()));
        }
    }

    fn due(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        match self.in_flight.front() {
            Some(&(at, _)) if at <= now_ms => self.in_flight.pop_front().map(|(_, d)| d),
            _ => None,
        }
    }
}

/// A listening endpoint and a client endpoint connected through two [`Link`]s.
struct Pair {
    server: Endpoint,
    client: Endpoint,
    cid: ConnectionId,
    sid: Option<ConnectionId>,
    c2s: Link,
    s2c: Link,
    out: Outbox,
    rng: StdRng,
    now_ms: u64,
    server_events: Vec<OwnedEvent>,
    client_events: Vec<OwnedEvent>,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
}

impl Pair {
    fn new(seed: u64, loss: f64, latency_ms: u64) -> Pair {
        Pair::with_configs(seed, loss, latency_ms, Config::default(), Config::default())
    }

    fn with_configs(seed: u64, loss: f64, latency_ms: u64, server: Config, client: Config) -> Pair {
        let server_addr: SocketAddr = SERVER.parse().unwrap();
        let mut server = Endpoint::server(server).unwrap();
        server.seed_cookies_for_testing(seed);
        let mut client = Endpoint::client(client).unwrap();
        let now_ms = 1_000;
        let cid = client
            .connect(Duration::from_millis(now_ms), server_addr)
            .unwrap();
        let link = |loss| Link {
            loss,
            latency_ms,
            ..Link::default()
        };
        Pair {
            server,
            client,
            cid,
            sid: None,
            c2s: link(loss),
            s2c: link(loss),
            out: Outbox::new(),
            rng: StdRng::seed_from_u64(seed),
            now_ms,
            server_events: Vec::new(),
            client_events: Vec::new(),
            server_addr,
            client_addr: CLIENT.parse().unwrap(),
        }
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms)
    }

    /// Moves what the last call produced into the link toward the other end.
    fn take(&mut self, to_server: bool) {
        let link = if to_server {
            &mut self.c2s
        } else {
            &mut self.s2c
        };
        link.take(&mut self.out, self.now_ms, &mut self.rng);
    }

    fn collect(&mut self) {
        while let Some(e) = self.server.poll_event() {
            let e = e.to_owned_event();
            if let OwnedEvent::Connected { id, .. } = e {
                self.sid = Some(id);
            }
            self.server_events.push(e);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e.to_owned_event());
        }
    }

    /// One millisecond: deliver what is due each way, run both endpoints' timers, flush.
    fn step(&mut self) {
        let now = self.now();
        while let Some(d) = self.c2s.due(self.now_ms) {
            self.server
                .handle_datagram(now, self.client_addr, &d, &mut self.out);
            self.take(false);
        }
        self.server.handle_timeout(now, &mut self.out);
        self.server.flush(now, &mut self.out);
        self.take(false);
        while let Some(d) = self.s2c.due(self.now_ms) {
            self.client
                .handle_datagram(now, self.server_addr, &d, &mut self.out);
            self.take(true);
        }
        self.client.handle_timeout(now, &mut self.out);
        self.client.flush(now, &mut self.out);
        self.take(true);
        self.collect();
        self.now_ms += 1;
    }

    fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Pair) -> bool) {
        for _ in 0..max_ms {
            if done(self) {
                return;
            }
            self.step();
        }
        assert!(done(self), "not done after {max_ms} ms");
    }

    fn connect(&mut self) -> ConnectionId {
        self.run_until(20_000, |p| {
            p.client.is_connected(p.cid) && p.sid.is_some_and(|id| p.server.is_connected(id))
        });
        self.sid.unwrap()
    }

    fn server_send(&mut self, data: &[u8], channel: Channel) -> Result<(), Error> {
        let (now, sid) = (self.now(), self.sid.unwrap());
        let r = self.server.send(now, sid, data, channel, &mut self.out);
        self.take(false);
        r
    }

    fn client_send(&mut self, data: &[u8], channel: Channel) -> Result<(), Error> {
        let now = self.now();
        let r = self
            .client
            .send(now, self.cid, data, channel, &mut self.out);
        self.take(true);
        r
    }

    fn data(events: &[OwnedEvent], channel: Channel) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Data {
                    channel: c, data, ..
                } if *c == channel => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    fn disconnected(events: &[OwnedEvent]) -> Vec<DisconnectReason> {
        events
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Disconnected { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn both_closed(&self) -> bool {
        !Pair::disconnected(&self.server_events).is_empty()
            && !Pair::disconnected(&self.client_events).is_empty()
    }
}

fn message(tag: u8, i: u32) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&i.to_le_bytes());
    m.resize(16 + (i as usize * 37) % 3000, tag ^ i as u8);
    m
}

/// Sends `count` reliable messages each way (as fast as the send queues take them) and
/// runs until both sides received them all; checks exactly once and in order.
fn exchange(p: &mut Pair, count: u32, max_ms: u64) {
    let (mut to_server, mut to_client) = (0u32, 0u32);
    let before = (
        Pair::data(&p.server_events, Channel::Reliable).len(),
        Pair::data(&p.client_events, Channel::Reliable).len(),
    );
    for _ in 0..max_ms {
        while to_server < count
            && p.client_send(&message(b'c', to_server), Channel::Reliable)
                .is_ok()
        {
            to_server += 1;
        }
        while to_client < count
            && p.server_send(&message(b's', to_client), Channel::Reliable)
                .is_ok()
        {
            to_client += 1;
        }
        p.step();
        let got = (
            Pair::data(&p.server_events, Channel::Reliable).len() - before.0,
            Pair::data(&p.client_events, Channel::Reliable).len() - before.1,
        );
        if got == (count as usize, count as usize) {
            break;
        }
    }
    let at_server = Pair::data(&p.server_events, Channel::Reliable);
    let at_client = Pair::data(&p.client_events, Channel::Reliable);
    let expect = |tag| (0..count).map(|i| message(tag, i)).collect::<Vec<_>>();
    assert_eq!(at_server[before.0..], expect(b'c')[..], "client -> server");
    assert_eq!(at_client[before.1..], expect(b's')[..], "server -> client");
}

#[test]
fn handshake_and_reliable_data_both_ways_under_loss() {
    for seed in 0..6 {
        let mut p = Pair::new(seed, 0.1, 20);
        p.connect();
        assert!(
            matches!(p.server_events[0], OwnedEvent::Connected { addr, .. } if addr == p.client_addr)
        );
        assert!(
            matches!(p.client_events[0], OwnedEvent::Connected { addr, .. } if addr == p.server_addr)
        );
        exchange(&mut p, 150, 120_000);
        assert!(
            p.c2s.lost > 0 && p.s2c.lost > 0,
            "seed {seed}: the links lost nothing"
        );
        // Unreliable messages under loss: some arrive, none twice, none corrupted.
        for i in 0..100 {
            p.client_send(format!("unreliable {i}").as_bytes(), Channel::Unreliable)
                .unwrap();
            p.step();
        }
        for _ in 0..200 {
            p.step(); // the last ones land
        }
        let got = Pair::data(&p.server_events, Channel::Unreliable);
        assert!(
            got.len() > 50 && got.len() < 100,
            "seed {seed}: {} of 100 unreliable",
            got.len()
        );
        let mut seen = std::collections::HashSet::new();
        for m in &got {
            assert!(
                (0..100).any(|i| format!("unreliable {i}").as_bytes() == m.as_slice()),
                "corrupted unreliable message"
            );
            assert!(
                seen.insert(m.clone()),
                "an unreliable message arrived twice"
            );
        }
        // Connected means admitted: nothing the client sent was taken for a stranger's.
        let stats = p.server.stats();
        assert_eq!(stats.dropped_unknown, 0, "seed {seed}: {stats:?}");
    }
}

/// Runs a pair until both sides reported `Disconnected`; their reasons.
fn close_reasons(p: &mut Pair, max_ms: u64) -> (DisconnectReason, DisconnectReason) {
    p.run_until(max_ms, Pair::both_closed);
    let (s, c) = (
        Pair::disconnected(&p.server_events),
        Pair::disconnected(&p.client_events),
    );
    assert_eq!(
        (s.len(), c.len()),
        (1, 1),
        "one Disconnected per side: {s:?} {c:?}"
    );
    (s[0], c[0])
}

#[test]
fn every_close_path_reports_its_reason_on_both_sides() {
    type Close = fn(&mut Pair);
    let cases: [(&str, Close, DisconnectReason, DisconnectReason); 8] = [
        (
            "client disconnect",
            |p| {
                let now = p.now();
                p.client.disconnect(now, p.cid, &mut p.out).unwrap();
                p.take(true);
            },
            DisconnectReason::Remote,
            DisconnectReason::Local,
        ),
        (
            "server kick",
            |p| {
                let (now, sid) = (p.now(), p.sid.unwrap());
                p.server.disconnect(now, sid, &mut p.out).unwrap();
                p.take(false);
            },
            DisconnectReason::Local,
            DisconnectReason::Remote,
        ),
        (
            "server kick with a reason",
            |p| {
                let (now, sid) = (p.now(), p.sid.unwrap());
                p.server
                    .disconnect_with(now, sid, 4001, "cheating", &mut p.out)
                    .unwrap();
                p.take(false);
            },
            DisconnectReason::Local,
            DisconnectReason::App {
                code: 4001,
                message: kcpnet::CloseMessage::new("cheating").unwrap(),
            },
        ),
        (
            "client graceful",
            |p| {
                let now = p.now();
                p.client
                    .disconnect_graceful(now, p.cid, &mut p.out)
                    .unwrap();
                p.take(true);
            },
            DisconnectReason::Remote,
            DisconnectReason::Local,
        ),
        (
            "server graceful with a reason",
            |p| {
                let (now, sid) = (p.now(), p.sid.unwrap());
                p.server
                    .disconnect_graceful_with(now, sid, 7, "match over", &mut p.out)
                    .unwrap();
                p.take(false);
            },
            DisconnectReason::Local,
            DisconnectReason::App {
                code: 7,
                message: kcpnet::CloseMessage::new("match over").unwrap(),
            },
        ),
        (
            "server shutdown",
            |p| {
                let now = p.now();
                p.server.close_all(now, &mut p.out);
                p.take(false);
            },
            DisconnectReason::Closed,
            DisconnectReason::RemoteShutdown,
        ),
        (
            "half-close both ways",
            |p| {
                let (now, sid) = (p.now(), p.sid.unwrap());
                p.client.shutdown_send(now, p.cid, &mut p.out).unwrap();
                p.take(true);
                p.server.shutdown_send(now, sid, &mut p.out).unwrap();
                p.take(false);
            },
            DisconnectReason::Finished,
            DisconnectReason::Finished,
        ),
        (
            "the client vanishes",
            |p| {
                // Nothing reaches the server any more: it times out, the client learns why.
                p.c2s.loss = 1.0;
            },
            DisconnectReason::Timeout,
            DisconnectReason::RemoteTimeout,
        ),
    ];
    for (name, close, server_reason, client_reason) in cases {
        let mut p = Pair::new(42, 0.05, 15);
        p.connect();
        exchange(&mut p, 20, 30_000);
        close(&mut p);
        let reasons = close_reasons(&mut p, 60_000);
        assert_eq!(reasons, (server_reason, client_reason), "{name}");
        // Nothing lingers: the server forgot the connection, the client keeps it for
        // queries only, and neither has anything scheduled.
        assert_eq!(p.server.connection_count(), 0, "{name}");
        assert_eq!(
            p.client.state(p.cid),
            Some(ConnectionState::Disconnected),
            "{name}"
        );
        for _ in 0..3_000 {
            p.step();
        }
        assert_eq!(
            p.server.poll_timeout(),
            None,
            "{name}: server still scheduled"
        );
        assert_eq!(
            p.client.poll_timeout(),
            None,
            "{name}: client still scheduled"
        );
        let late = p.server.send(
            p.now(),
            p.sid.unwrap(),
            b"late",
            Channel::Reliable,
            &mut p.out,
        );
        assert!(
            matches!(late, Err(Error::ConnectionClosed)),
            "{name}: {late:?}"
        );
    }
}

#[test]
fn a_half_closed_connection_still_delivers_the_other_way() {
    let mut p = Pair::new(7, 0.05, 10);
    let sid = p.connect();
    let now = p.now();
    p.client.shutdown_send(now, p.cid, &mut p.out).unwrap();
    p.take(true);
    p.run_until(10_000, |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, OwnedEvent::PeerSendClosed { .. }))
    });
    assert_eq!(p.server.state(sid), Some(ConnectionState::PeerSendClosed));
    assert!(matches!(
        p.client_send(b"x", Channel::Reliable),
        Err(Error::SendClosed)
    ));
    for i in 0..30 {
        p.server_send(&message(b's', i), Channel::Reliable).unwrap();
    }
    p.run_until(20_000, |p| {
        Pair::data(&p.client_events, Channel::Reliable).len() == 30
    });
}

#[test]
fn strangers_get_one_stateless_reply_and_leave_nothing() {
    let mut server = Endpoint::server(Config::default()).unwrap();
    let mut out = Outbox::new();
    let now = Duration::from_secs(5);
    // A kcp2k Hello from a fresh client endpoint, taken from a client endpoint's output.
    let mut client = Endpoint::client(Config::default()).unwrap();
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    client.connect(now, server_addr).unwrap();
    client.flush(now, &mut out);
    let (_, hello) = out.pop().unwrap();
    let hello = hello.to_vec();
    for port in 0..1_000u16 {
        let from = SocketAddr::from(([192, 0, 2, 1], 10_000 + port));
        server.handle_datagram(now, from, &hello, &mut out);
        server.handle_datagram(now, from, b"garbage", &mut out);
    }
    assert_eq!(server.connection_count(), 0);
    assert_eq!(out.len(), 1_000, "one reply per Hello, none to garbage");
    let stats = server.stats();
    assert_eq!((stats.hello_replies, stats.dropped_unknown), (1_000, 1_000));
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn a_client_endpoint_admits_nobody_and_refuses_a_second_connect() {
    let mut client = Endpoint::client(Config::default()).unwrap();
    let mut out = Outbox::new();
    let now = Duration::from_secs(1);
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    client.connect(now, server_addr).unwrap();
    assert!(matches!(
        client.connect(now, server_addr),
        Err(Error::InvalidArgument(_))
    ));
    client.flush(now, &mut out);
    let (_, hello) = out.pop().unwrap();
    let hello = hello.to_vec();
    let stranger: SocketAddr = CLIENT.parse().unwrap();
    client.handle_datagram(now, stranger, &hello, &mut out);
    assert!(out.is_empty(), "a client endpoint answered a stranger");
    assert_eq!(client.stats().dropped_unknown, 1);
    assert_eq!(client.connection_count(), 1);
}

#[test]
fn redundant_disconnect_copies_are_not_counted_as_strangers() {
    let mut p = Pair::new(3, 0.0, 5);
    p.connect();
    let now = p.now();
    p.client.disconnect(now, p.cid, &mut p.out).unwrap();
    p.take(true);
    close_reasons(&mut p, 5_000);
    let stats = p.server.stats();
    assert_eq!(stats.dropped_unknown, 0, "{stats:?}");
    assert!(stats.dropped_after_close >= 4, "{stats:?}");
}

#[test]
fn requests_on_unknown_ids_fail_with_typed_errors() {
    let mut p = Pair::new(5, 0.0, 1);
    let sid = p.connect();
    let now = p.now();
    p.server.disconnect(now, sid, &mut p.out).unwrap();
    assert!(matches!(
        p.server.disconnect(now, sid, &mut p.out),
        Err(Error::ConnectionClosed)
    ));
    assert!(matches!(
        p.server.send(now, sid, b"", Channel::Reliable, &mut p.out),
        Err(Error::ConnectionClosed)
    ));
    assert!(p
        .client
        .send(now, p.cid, b"", Channel::Reliable, &mut p.out)
        .is_err());
}

/// A draining server closes its connections gracefully with the drain's reason (queued
/// messages first), tells a kcpnet client that tries to join why, answers a client without
/// close reasons nothing, and stores nothing for either.
#[test]
fn a_draining_server_delivers_then_closes_and_admits_nobody() {
    let mut p = Pair::new(9, 0.05, 10);
    p.connect();
    for i in 0..40 {
        p.server_send(&message(b's', i), Channel::Reliable).unwrap();
    }
    let now = p.now();
    assert!(matches!(
        p.server.begin_drain(now, 7, &"x".repeat(200), &mut p.out),
        Err(Error::ReasonTooLong { .. })
    ));
    assert!(!p.server.is_draining());
    p.server
        .begin_drain(now, 1001, "server draining", &mut p.out)
        .unwrap();
    p.take(false);
    assert!(p.server.is_draining());
    let drained = DisconnectReason::App {
        code: 1001,
        message: kcpnet::CloseMessage::new("server draining").unwrap(),
    };
    assert_eq!(
        close_reasons(&mut p, 30_000),
        (DisconnectReason::Local, drained)
    );
    let got = Pair::data(&p.client_events, Channel::Reliable);
    assert_eq!(got, (0..40).map(|i| message(b's', i)).collect::<Vec<_>>());
    assert_eq!(p.server.connection_count(), 0);

    // A kcpnet client that tries now is told why and never connects.
    let mut late = Endpoint::client(Config::default()).unwrap();
    let late_addr: SocketAddr = "10.0.0.3:6000".parse().unwrap();
    let id = late.connect(p.now(), p.server_addr).unwrap();
    let mut events = Vec::new();
    for _ in 0..2_000 {
        let now = p.now();
        late.handle_timeout(now, &mut p.out);
        late.flush(now, &mut p.out);
        let mut to_server = Vec::new();
        while let Some((_, d)) = p.out.pop() {
            to_server.push(d.to_vec());
        }
        for d in to_server {
            p.server.handle_datagram(now, late_addr, &d, &mut p.out);
            let mut replies = Vec::new();
            while let Some((_, r)) = p.out.pop() {
                replies.push(r.to_vec());
            }
            for r in replies {
                late.handle_datagram(now, p.server_addr, &r, &mut p.out);
            }
        }
        while let Some(e) = late.poll_event() {
            events.push(e.to_owned_event());
        }
        if !events.is_empty() {
            break;
        }
        p.now_ms += 1;
    }
    assert_eq!(
        events,
        vec![OwnedEvent::Disconnected {
            id,
            reason: drained
        }]
    );
    assert_eq!(p.server.connection_count(), 0);
    assert!(p.server.stats().refused_draining >= 1);

    // A client without close reasons (as kcp2k) gets no Hello reply at all.
    let mut plain = Endpoint::client(Config {
        kcpnet_extensions: false,
        ..Config::default()
    })
    .unwrap();
    plain.connect(p.now(), p.server_addr).unwrap();
    plain.flush(p.now(), &mut p.out);
    let (_, hello) = p.out.pop().unwrap();
    let hello = hello.to_vec();
    let refused = p.server.stats().refused_draining;
    p.server.handle_datagram(
        p.now(),
        "10.0.0.4:7000".parse().unwrap(),
        &hello,
        &mut p.out,
    );
    assert!(p.out.is_empty(), "a draining server answered a kcp2k Hello");
    assert_eq!(p.server.stats().refused_draining, refused + 1);
}

/// A kcp2k datagram carrying one KCP segment (`payload` after the 24-byte header).
fn kcp2k_segment(
    cookie: [u8; 4],
    cmd: kcpnet::wire::Command,
    ts: u32,
    sn: u32,
    una: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut d = vec![1];
    d.extend_from_slice(&cookie);
    let header = kcpnet::wire::SegmentHeader {
        conv: 0,
        cmd,
        frg: 0,
        wnd: 128,
        ts,
        sn,
        una,
        len: payload.len() as u32,
    };
    let mut h = [0u8; kcpnet::wire::SEGMENT_HEADER_LEN];
    header.emit(&mut h).unwrap();
    d.extend_from_slice(&h);
    d.extend_from_slice(payload);
    d
}

/// The real kcp2k client (seen with `interop/run.sh`) reports `Connected` on the server's
/// Hello reply and sends unreliable messages at once, straight to the socket, while its
/// reliable ACK of the Hello leaves only at its next tick. A kcpnet server admits it on the
/// first datagram whose cookie verifies — that unreliable one — and delivers the messages;
/// the ACK that follows completes the handshake. Written byte for byte as kcp2k sends it.
#[test]
fn a_kcp2k_clients_unreliable_messages_ahead_of_its_ack_are_delivered() {
    use kcpnet::wire::Command;
    let from: SocketAddr = CLIENT.parse().unwrap();
    let mut server = Endpoint::server(Config::default()).unwrap();
    let mut out = Outbox::new();
    let now = Duration::from_secs(1);
    // kcp2k's bare Hello: a reliable PUSH sn 0 of the one byte 01, cookie 0.
    let hello = kcp2k_segment([0; 4], Command::Push, 0, 0, 0, &[1]);
    server.handle_datagram(now, from, &hello, &mut out);
    let (_, reply) = out.pop().expect("the stateless Hello reply");
    let cookie: [u8; 4] = reply[1..5].try_into().unwrap();
    assert!(out.pop().is_none());
    assert_eq!(
        server.connection_count(),
        0,
        "nothing stored before the proof"
    );
    // Three unreliable messages ahead of the ACK.
    for m in [&b"first"[..], b"second", b"third"] {
        let mut d = vec![2];
        d.extend_from_slice(&cookie);
        d.push(4);
        d.extend_from_slice(m);
        server.handle_datagram(now, from, &d, &mut out);
    }
    // Then the reliable ACK of the server's Hello (sn 0), at kcp2k's next tick.
    let later = now + Duration::from_millis(10);
    let ack = kcp2k_segment(cookie, Command::Ack, 0, 0, 1, &[]);
    server.handle_datagram(later, from, &ack, &mut out);
    server.handle_timeout(later, &mut out);
    let mut events = Vec::new();
    while let Some(e) = server.poll_event() {
        events.push(e.to_owned_event());
    }
    let data: Vec<&[u8]> = events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data { data, .. } => Some(&data[..]),
            _ => None,
        })
        .collect();
    assert!(
        matches!(events.first(), Some(OwnedEvent::Connected { .. })),
        "{events:?}"
    );
    assert_eq!(data, vec![&b"first"[..], b"second", b"third"]);
    assert_eq!(server.connection_count(), 1);
    let st = server.stats();
    assert_eq!((st.dropped_unknown, st.connections_accepted), (0, 1));
    // The ACK acknowledged the server's Hello: nothing in flight.
    let id = server.connections().next().unwrap();
    assert_eq!(server.connection_stats(id).unwrap().in_flight, 0);
}

/// Issue 19: a datagram that leaves the connection nothing to do (the ACK of everything in
/// flight) only reschedules it: the endpoint is not due at once, sends nothing, and still
/// detects the peer going silent within the configured timeout, counted from that ACK.
#[test]
fn an_ack_of_everything_in_flight_only_reschedules_the_connection() {
    let mut p = Pair::new(7, 0.0, 10);
    let sid = p.connect();
    // Let the handshake's traffic settle (the first keepalives are acknowledged).
    for _ in 0..500 {
        p.step();
    }
    p.server_send(b"hello", Channel::Reliable).unwrap();
    p.run_until(200, |p| {
        Pair::data(&p.client_events, Channel::Reliable).last() == Some(&b"hello".to_vec())
    });
    // The client's answer is in flight toward the server: its ACK alone.
    assert_eq!(p.c2s.in_flight.len(), 1, "one datagram: the ACK");
    let (at, ack) = p.c2s.in_flight.pop_front().unwrap();
    while p.now_ms < at {
        p.step();
    }
    assert_eq!(
        p.server.send_backlog(sid),
        Some(1),
        "the message is still in flight"
    );
    let sent_before = p.s2c.sent;
    let now = p.now();
    p.server
        .handle_datagram(now, p.client_addr, &ack, &mut p.out);
    p.take(false);
    assert_eq!(
        p.server.send_backlog(sid),
        Some(0),
        "the ACK acknowledged it"
    );
    assert_eq!(p.s2c.sent, sent_before, "nothing to send in answer");
    let next = p
        .server
        .poll_timeout()
        .expect("a live connection has a deadline");
    assert!(next > now, "nothing due at once: {next:?} at {now:?}");

    // From now on the client is silent: the server times it out, counted from the ACK.
    let ack_ms = p.now_ms;
    p.c2s.loss = 1.0;
    let timeout = u64::from(Config::default().timeout_ms);
    p.run_until(timeout + 100, |p| {
        !Pair::disconnected(&p.server_events).is_empty()
    });
    assert_eq!(
        Pair::disconnected(&p.server_events),
        vec![DisconnectReason::Timeout]
    );
    assert!(
        p.now_ms <= ack_ms + timeout + 2,
        "timed out at +{} ms, configured {timeout} ms",
        p.now_ms - ack_ms
    );
}
