//! Hostile input: property tests that throw garbage at a `Server` and a `Client`.
//!
//! The garbage is (a) arbitrary byte strings of 0..1500 bytes, (b) real kcp2k datagrams
//! (`tests/vectors/kcp2k/capture_basic.txt`, a real kcp2k client and server) with bytes
//! flipped, set, inserted, removed, truncated or appended, and (c) hand-built datagrams with a
//! valid kcp2k header and random KCP segment fields, so that the garbage also reaches the
//! deeper layers. Where the target has a cookie, most garbage is patched to carry it (as an
//! on-path attacker could), so that it passes the cookie check and reaches KCP and the
//! kcp2k message layer.
//!
//! Targets:
//! * a `Server`, from strangers: never an event, never a connection, at most a half-open
//!   peer per address that sent a valid Hello, never more than 3× the bytes back;
//! * a `Server`, from the address of a connected `Client`: the connection either keeps
//!   working or ends with exactly one `Disconnected` (after an `Error(InvalidReceive)` if it
//!   was a protocol violation), never `Data` after `Disconnected`, and its memory stays
//!   bounded;
//! * a `Client` while connecting and once connected, from the server's address (a raw
//!   `MemorySocket` plays the server): the same event-stream rules.
//!
//! Case counts are fixed (see [`config`]); `PROPTEST_CASES` overrides them, and
//! `PROPTEST_RNG_SEED` fixes proptest's seed. Failing cases are saved to
//! `tests/hostile_input.proptest-regressions` and replayed first on the next run.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kcpnet::io::{ManualClock, MemoryNetwork, MemorySocket, PollReport, Transport};
use kcpnet::wire::datagram::is_hello_datagram;
use kcpnet::{
    Channel, Client, Config, ConnectionId, DisconnectReason, ErrorCode, OwnedEvent, Server,
};
use proptest::prelude::*;
use proptest::sample::Index;

const SERVER_ADDR: &str = "10.0.0.1:7777";
const CLIENT_ADDR: &str = "10.0.1.1:5000";
/// The cookie of the real kcp2k server in the capture.
const REAL_COOKIE: u32 = 4_150_018_856;
/// The memory one connection may hold after a barrage of garbage.
const MEMORY_BOUND: usize = 512 * 1024;
/// The most events a tick may leave queued in these scenarios.
const EVENT_BOUND: usize = 1024;

/// `cases` unless `PROPTEST_CASES` is set; every other `PROPTEST_*` variable applies too.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

// ------------------------------------------------------------------ corpus

struct Capture {
    /// Client -> server datagrams, without the five unreliable Disconnects.
    c2s: Vec<Vec<u8>>,
    /// Server -> client datagrams, without the Disconnects.
    s2c: Vec<Vec<u8>>,
    /// The reliable-channel datagrams of `c2s`.
    c2s_reliable: Vec<Vec<u8>>,
    /// The server's handshake reply (#001: ACK of the client's Hello + the server's Hello).
    hello_reply: Vec<u8>,
}

/// The datagrams of the real kcp2k capture, by direction.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/kcp2k/capture_basic.txt"
        );
        let text = std::fs::read_to_string(path).expect("kcp2k capture");
        let mut c = Capture {
            c2s: Vec::new(),
            s2c: Vec::new(),
            c2s_reliable: Vec::new(),
            hello_reply: Vec::new(),
        };
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let bytes: Vec<u8> = (0..f[3].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).unwrap())
                .collect();
            if c.hello_reply.is_empty() && f[1] == "s2c" {
                c.hello_reply = bytes.clone();
            }
            let disconnect = bytes.len() == 6 && bytes[0] == 2 && bytes[5] == 5;
            if disconnect {
                continue;
            }
            if f[1] == "c2s" {
                if bytes[0] == 1 {
                    c.c2s_reliable.push(bytes.clone());
                }
                c.c2s.push(bytes);
            } else {
                c.s2c.push(bytes);
            }
        }
        assert!(c.c2s.len() > 100 && c.s2c.len() > 100 && c.c2s_reliable.len() > 100);
        assert_eq!(c.hello_reply.len(), 54);
        c
    })
}

// ----------------------------------------------------------------- garbage

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
    Append(Vec<u8>),
    /// Overwrite a little-endian u32 at some offset (KCP fields: sn, una, len, ts...).
    SetU32(Index, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting_u32 = prop_oneof![
        Just(0u32),
        Just(1),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        0u32..300,
        any::<u32>(),
    ];
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
        (any::<Index>(), interesting_u32).prop_map(|(i, v)| Mutation::SetU32(i, v)),
    ]
}

fn apply(m: &Mutation, d: &mut Vec<u8>) {
    match m {
        Mutation::FlipBit(i, bit) if !d.is_empty() => {
            let i = i.index(d.len());
            d[i] ^= 1 << bit;
        }
        Mutation::SetByte(i, b) if !d.is_empty() => {
            let i = i.index(d.len());
            d[i] = *b;
        }
        Mutation::Insert(i, b) => {
            let i = i.index(d.len() + 1);
            d.insert(i, *b);
        }
        Mutation::Remove(i) if !d.is_empty() => {
            let i = i.index(d.len());
            d.remove(i);
        }
        Mutation::Truncate(i) => {
            let n = i.index(d.len() + 1);
            d.truncate(n);
        }
        Mutation::Append(bytes) => d.extend_from_slice(bytes),
        Mutation::SetU32(i, v) if d.len() >= 4 => {
            let i = i.index(d.len() - 3);
            d[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => {}
    }
}

/// One hostile datagram: a base, optionally patched with the target's cookie, then mutated.
#[derive(Debug, Clone)]
struct Garbage {
    base: Vec<u8>,
    patch_cookie: bool,
    mutations: Vec<Mutation>,
}

impl Garbage {
    /// The datagram for a target whose cookie is `cookie` (`None`: the sender does not know
    /// it, the base is left as it is).
    fn build(&self, cookie: Option<u32>) -> Vec<u8> {
        let mut d = self.base.clone();
        if let (true, Some(c), true) = (self.patch_cookie, cookie, d.len() >= 5) {
            d[1..5].copy_from_slice(&c.to_le_bytes());
        }
        for m in &self.mutations {
            apply(m, &mut d);
        }
        d
    }
}

/// A KCP segment with random, mostly plausible fields.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![4 => Just(0u32), 1 => any::<u32>()],
        prop_oneof![8 => 81u8..=84, 1 => any::<u8>()],
        prop_oneof![Just(0u8), 0u8..4, any::<u8>()],
        any::<u16>(),
        any::<u32>(),
        // sn and una near the real ones (small: connections are young), or anywhere.
        prop_oneof![0u32..8, 0u32..200, any::<u32>()],
        prop_oneof![0u32..8, 0u32..200, any::<u32>()],
        prop::collection::vec(any::<u8>(), 0..1200),
        prop_oneof![8 => Just(None), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![Just(None), (1u8..=4).prop_map(Some)],
    )
        .prop_map(
            |(conv, cmd, frg, wnd, ts, sn, una, mut data, bad_len, header)| {
                if let (Some(h), false) = (header, data.is_empty()) {
                    data[0] = h; // a kcp2k message header byte (Hello, Ping, Data, Pong)
                }
                let len = bad_len.unwrap_or(data.len() as u32);
                let mut s = Vec::with_capacity(24 + data.len());
                s.extend_from_slice(&conv.to_le_bytes());
                s.push(cmd);
                s.push(frg);
                s.extend_from_slice(&wnd.to_le_bytes());
                s.extend_from_slice(&ts.to_le_bytes());
                s.extend_from_slice(&sn.to_le_bytes());
                s.extend_from_slice(&una.to_le_bytes());
                s.extend_from_slice(&len.to_le_bytes());
                s.extend_from_slice(&data);
                s
            },
        )
}

/// A reliable datagram (cookie 0, to be patched) of 1..3 random segments.
fn structured_reliable() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(segment(), 1..3).prop_map(|segs| {
        let mut d = vec![1u8, 0, 0, 0, 0];
        for s in segs {
            d.extend_from_slice(&s);
        }
        d
    })
}

/// A datagram with a kcp2k header: reliable with 1..3 segments, or unreliable with a random
/// header byte, or a random channel byte.
fn structured() -> BoxedStrategy<Vec<u8>> {
    let reliable = structured_reliable();
    // Mostly Data: a Disconnect or an undefined header ends a connection at once, which
    // would leave the rest of a case nothing to test.
    let unreliable = (
        prop_oneof![16 => Just(4u8), 1 => Just(5u8), 1 => any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..1300),
    )
        .prop_map(|(h, p)| {
            let mut d = vec![2u8, 0, 0, 0, 0, h];
            d.extend_from_slice(&p);
            d
        });
    let other_channel =
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(c, p)| {
            let mut d = vec![c, 0, 0, 0, 0];
            d.extend_from_slice(&p);
            d
        });
    prop_oneof![6 => reliable, 3 => unreliable, 1 => other_channel].boxed()
}

/// Garbage aimed at a peer whose real traffic looks like `corpus`.
fn garbage(corpus: &'static [Vec<u8>]) -> impl Strategy<Value = Garbage> {
    let arbitrary = prop::collection::vec(any::<u8>(), 0..1500).prop_map(|base| Garbage {
        base,
        patch_cookie: false,
        mutations: Vec::new(),
    });
    let mutated = (
        any::<Index>(),
        prop::bool::weighted(0.8),
        prop::collection::vec(mutation(), 1..6),
    )
        .prop_map(move |(i, patch_cookie, mutations)| Garbage {
            base: i.get(corpus).clone(),
            patch_cookie,
            mutations,
        });
    let built = (
        structured(),
        prop::bool::weighted(0.9),
        prop::collection::vec(mutation(), 0..2),
    )
        .prop_map(|(base, patch_cookie, mutations)| Garbage {
            base,
            patch_cookie,
            mutations,
        });
    prop_oneof![2 => arbitrary, 4 => mutated, 4 => built]
}

/// Garbage from strangers, with the real kcp2k Hello (capture #000) now and then.
fn stranger_garbage() -> impl Strategy<Value = Garbage> {
    let hello = Garbage {
        base: capture().c2s[0].clone(),
        patch_cookie: false,
        mutations: Vec::new(),
    };
    assert!(is_hello_datagram(&hello.base));
    prop_oneof![9 => garbage(&capture().c2s), 1 => Just(hello)]
}

/// Garbage on the reliable channel only (mutated reliable datagrams of the capture and
/// random segments), nearly always carrying the cookie: it goes deep into KCP and rarely
/// ends the connection, so it can pile up.
fn reliable_garbage() -> impl Strategy<Value = Garbage> {
    let corpus: &'static [Vec<u8>] = &capture().c2s_reliable;
    let mutated = (any::<Index>(), prop::collection::vec(mutation(), 1..4)).prop_map(
        move |(i, mutations)| Garbage {
            base: i.get(corpus).clone(),
            patch_cookie: true,
            mutations,
        },
    );
    let built = structured_reliable().prop_map(|base| Garbage {
        base,
        patch_cookie: true,
        mutations: Vec::new(),
    });
    prop_oneof![mutated, built]
}

// ---------------------------------------------------------------- plumbing

/// A `MemorySocket` shared between a `Client` and the test, so that the test can send
/// datagrams from the client's own address. Records the cookie the client sends with.
#[derive(Clone)]
struct Shared {
    socket: Arc<Mutex<MemorySocket>>,
    cookie: Arc<Mutex<Option<u32>>>,
}

impl Transport for Shared {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        self.socket.lock().unwrap().recv_from(buf, now)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> std::io::Result<bool> {
        if data.len() > 5 {
            let c = u32::from_le_bytes(data[1..5].try_into().unwrap());
            if c != 0 {
                *self.cookie.lock().unwrap() = Some(c);
            }
        }
        self.socket.lock().unwrap().send_to(data, to, now)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.lock().unwrap().local_addr()
    }

    fn poll(&mut self, now: Duration) -> std::io::Result<PollReport> {
        self.socket.lock().unwrap().poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        self.socket.lock().unwrap().next_wakeup()
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.socket.lock().unwrap().wait(timeout)
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn new_server(net: &MemoryNetwork, clock: &ManualClock) -> Server {
    let mut server = Server::with_transport(
        Box::new(net.bind(addr(SERVER_ADDR)).unwrap()),
        Box::new(clock.clone()),
        Config::default(),
    )
    .unwrap();
    server.seed_cookies_for_testing(0x0bad_c0de);
    server
}

/// Drains every event of `server` into `log`, checking the queue length first.
fn drain_server(server: &mut Server, log: &mut Vec<OwnedEvent>) {
    assert!(server.pending_events() <= EVENT_BOUND, "event queue grew");
    while let Some(e) = server.poll_event() {
        log.push(e.to_owned_event());
    }
}

fn drain_client(client: &mut Client, log: &mut Vec<OwnedEvent>) {
    while let Some(e) = client.poll_event() {
        log.push(e.to_owned_event());
    }
    assert!(log.len() <= 100_000, "client event log grew without bound");
}

/// Reads everything waiting on a raw socket; returns (datagrams, bytes).
fn drain_raw(socket: &mut MemorySocket, now: Duration) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    while let Some((n, _)) = socket.recv_from(&mut buf, now).unwrap() {
        out.push(buf[..n].to_vec());
    }
    out
}

/// Checks the event stream of one connection (`events` filtered to it) after `Connected`:
/// at most one `Disconnected`, nothing after it, an `Error` only right before it and only
/// with a sensible code for the reason. Returns whether it disconnected.
fn check_stream(label: &str, events: &[&OwnedEvent]) -> Result<bool, TestCaseError> {
    let mut disconnected = false;
    for (n, e) in events.iter().enumerate() {
        prop_assert!(
            !disconnected,
            "{}: {:?} after Disconnected: {:?}",
            label,
            e,
            events
        );
        match e {
            OwnedEvent::Connected { .. } => {
                prop_assert!(false, "{}: a second Connected: {:?}", label, events)
            }
            OwnedEvent::Data { .. } => {}
            OwnedEvent::Error { code, message, .. } => {
                let reason = match events.get(n + 1) {
                    Some(OwnedEvent::Disconnected { reason, .. }) => *reason,
                    _ => {
                        return Err(TestCaseError::fail(format!(
                            "{label}: Error not followed by Disconnected: {events:?}"
                        )))
                    }
                };
                prop_assert!(!message.is_empty(), "{}: an Error without a message", label);
                prop_assert!(
                    matches!(
                        (code, reason),
                        (ErrorCode::InvalidReceive, DisconnectReason::ProtocolError)
                    ),
                    "{}: unexpected error {:?} / reason {:?}: {:?}",
                    label,
                    code,
                    reason,
                    events
                );
            }
            OwnedEvent::Disconnected { reason, .. } => {
                disconnected = true;
                let after_error = n > 0 && matches!(events[n - 1], OwnedEvent::Error { .. });
                prop_assert!(
                    matches!(
                        (reason, after_error),
                        // A forged (or mutated-into) kcp2k Disconnect: no error.
                        (DisconnectReason::Remote, false) | (DisconnectReason::ProtocolError, true)
                    ),
                    "{}: unexpected end {:?}: {:?}",
                    label,
                    reason,
                    events
                );
            }
            // Garbage carrying the cookie can spell the half-close message (reliable header
            // 0x10) at the next sequence number: the peer's address may half-close.
            OwnedEvent::PeerSendClosed { .. } => {}
            other => prop_assert!(false, "unexpected event {:?}", other),
        }
    }
    Ok(disconnected)
}

// ---------------------------------------------------------- server targets

/// A server and a connected client whose socket the test shares.
struct Pair {
    clock: ManualClock,
    server: Server,
    client: Client,
    tap: Shared,
    cookie: u32,
    id: Option<ConnectionId>,
    server_events: Vec<OwnedEvent>,
    client_events: Vec<OwnedEvent>,
}

impl Pair {
    fn new() -> Pair {
        let net = MemoryNetwork::new();
        let clock = ManualClock::starting_at(Duration::from_secs(1));
        let server = new_server(&net, &clock);
        let tap = Shared {
            socket: Arc::new(Mutex::new(net.bind(addr(CLIENT_ADDR)).unwrap())),
            cookie: Arc::new(Mutex::new(None)),
        };
        let client = Client::with_transport(
            Box::new(tap.clone()),
            Box::new(clock.clone()),
            addr(SERVER_ADDR),
            Config::default(),
        )
        .unwrap();
        let mut p = Pair {
            clock,
            server,
            client,
            tap,
            cookie: 0,
            id: None,
            server_events: Vec::new(),
            client_events: Vec::new(),
        };
        for _ in 0..100 {
            p.step();
            if p.client.is_connected() && p.server.connection_count() == 1 {
                break;
            }
        }
        assert!(p.client.is_connected() && p.server.connection_count() == 1);
        p.id = p.server.connections().next();
        p.cookie = p
            .tap
            .cookie
            .lock()
            .unwrap()
            .expect("the client sent its cookie");
        p
    }

    fn step(&mut self) {
        self.server.tick_incoming();
        drain_server(&mut self.server, &mut self.server_events);
        self.server.tick_outgoing();
        self.client.tick_incoming();
        drain_client(&mut self.client, &mut self.client_events);
        self.client.tick_outgoing();
        self.clock.advance(Duration::from_millis(1));
    }

    /// Sends `data` to the server from the client's address.
    fn inject(&mut self, data: &[u8]) {
        let now = self.clock.now();
        let mut s = self.tap.socket.lock().unwrap();
        let _ = s.send_to(data, addr(SERVER_ADDR), now);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Garbage from unknown endpoints: no events, no connections, no state at all (a valid
    /// Hello gets a stateless reply, stores nothing), no more than 3× back.
    #[test]
    fn strangers_never_get_a_connection(
        datagrams in prop::collection::vec((0usize..4, stranger_garbage()), 1..40),
    ) {
        let net = MemoryNetwork::new();
        let clock = ManualClock::starting_at(Duration::from_secs(1));
        let mut server = new_server(&net, &clock);
        let addrs: Vec<SocketAddr> =
            (0..4).map(|i| addr(&format!("10.9.9.{}:{}", i + 1, 4000 + i))).collect();
        let mut raws: Vec<MemorySocket> =
            addrs.iter().map(|a| net.bind(*a).unwrap()).collect();
        let mut sent_bytes = [0usize; 4];
        let mut got_bytes = [0usize; 4];
        let mut hello_from: HashSet<usize> = HashSet::new();
        let mut events = Vec::new();
        for (k, (who, g)) in datagrams.iter().enumerate() {
            let d = g.build(None);
            if is_hello_datagram(&d) {
                hello_from.insert(*who);
            }
            let _ = raws[*who].send_to(&d, addr(SERVER_ADDR), clock.now());
            sent_bytes[*who] += d.len();
            if k % 3 == 0 {
                server.tick_incoming();
                drain_server(&mut server, &mut events);
                server.tick_outgoing();
                clock.advance(Duration::from_millis(1));
            }
        }
        // Let retransmissions and the handshake timeout run (100 ms steps, 11 s).
        for _step in 0..120 {
            server.tick_incoming();
            drain_server(&mut server, &mut events);
            server.tick_outgoing();
            for (i, raw) in raws.iter_mut().enumerate() {
                for d in drain_raw(raw, clock.now()) {
                    got_bytes[i] += d.len();
                }
            }
            prop_assert_eq!(server.connection_count(), 0);
            prop_assert_eq!(server.stats().connections, 0, "state stored for a stranger");
            clock.advance(Duration::from_millis(100));
        }
        prop_assert!(events.is_empty(), "strangers produced events: {:?}", events);
        prop_assert_eq!(server.stats().connections, 0);
        prop_assert_eq!(server.stats().hello_replies as usize <= datagrams.len(), true);
        for i in 0..4 {
            if !hello_from.contains(&i) {
                prop_assert_eq!(got_bytes[i], 0, "a reply to a stranger without a Hello");
            }
            prop_assert!(
                got_bytes[i] <= 3 * sent_bytes[i],
                "amplification: {} bytes back for {}", got_bytes[i], sent_bytes[i]
            );
        }
    }

    /// Garbage of every kind from a connected client's address: the connection either
    /// keeps working or closes cleanly.
    #[test]
    fn server_connection_survives_or_closes_cleanly(
        datagrams in prop::collection::vec(garbage(&capture().c2s), 1..40),
    ) {
        garbage_from_connected_client(&datagrams)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// 200 reliable-channel garbage datagrams carrying the cookie from a connected client's
    /// address: they reach KCP; the connection's memory stays bounded throughout.
    #[test]
    fn server_memory_bounded_under_reliable_garbage(
        datagrams in prop::collection::vec(reliable_garbage(), 200),
    ) {
        garbage_from_connected_client(&datagrams)?;
    }
}

/// Sends `datagrams` (patched with the connection's cookie where they ask for it) to a
/// server from the address of its connected client, while the client keeps sending real
/// messages, then checks the outcome.
fn garbage_from_connected_client(datagrams: &[Garbage]) -> Result<(), TestCaseError> {
    let mut p = Pair::new();
    let id = p.id.unwrap();
    let before = p.server_events.len();
    let mut peak = 0;
    for (k, g) in datagrams.iter().enumerate() {
        let d = g.build(Some(p.cookie));
        p.inject(&d);
        if k % 5 == 0 {
            // Real traffic keeps flowing meanwhile.
            if p.client.is_connected() {
                let m = format!("real message {k}");
                p.client.send(m.as_bytes(), Channel::Reliable).unwrap();
            }
            p.step();
        }
        if let Some(mem) = p.server.connection_memory(id) {
            peak = peak.max(mem);
            prop_assert!(mem <= MEMORY_BOUND, "connection holds {} bytes", mem);
        }
    }
    for _ in 0..200 {
        p.step();
    }
    // A probe after the garbage.
    let probe = b"unreliable probe after the garbage";
    let client_up = p.client.is_connected();
    if client_up {
        p.client.send(probe, Channel::Unreliable).unwrap();
    }
    for _ in 0..50 {
        p.step();
    }
    if let Some(mem) = p.server.connection_memory(id) {
        prop_assert!(mem <= MEMORY_BOUND, "connection holds {} bytes", mem);
    }
    prop_assert!(p.server.connection_count() <= 1);

    let all: Vec<&OwnedEvent> = p.server_events[before..].iter().collect();
    let mine: Vec<&OwnedEvent> = all.iter().copied().filter(|e| e.id() == id).collect();
    let closed = check_stream("server", &mine)?;
    // Another connection can only appear for the same address after this one closed, when
    // a datagram replayed from the start of the capture carries the address's cookie: the
    // stateless handshake admits a peer that proves it receives there (like SYN cookies,
    // within the cookie's lifetime). Its stream must be well formed too.
    let others: Vec<&OwnedEvent> = all.iter().copied().filter(|e| e.id() != id).collect();
    if !others.is_empty() {
        prop_assert!(
            closed,
            "a second connection while the first is open: {:?}",
            others
        );
        let close_at = all
            .iter()
            .position(|e| e.id() == id && matches!(e, OwnedEvent::Disconnected { .. }))
            .unwrap();
        let first_other = all.iter().position(|e| e.id() != id).unwrap();
        prop_assert!(
            first_other > close_at,
            "a new connection before the old one closed"
        );
        let mut ids: Vec<_> = others.iter().map(|e| e.id()).collect();
        ids.dedup();
        for other in ids {
            let stream: Vec<&OwnedEvent> =
                others.iter().copied().filter(|e| e.id() == other).collect();
            prop_assert!(
                matches!(stream[0], OwnedEvent::Connected { addr: a, .. } if *a == addr(CLIENT_ADDR)),
                "{:?}",
                stream
            );
            check_stream("server (re-admitted)", &stream[1..])?;
        }
    }
    if std::env::var_os("KCPNET_HOSTILE_STATS").is_some() {
        eprintln!(
            "server case: {} datagrams, closed {closed}, last {:?}, peak memory {peak}",
            datagrams.len(),
            mine.last().map(|e| match e {
                OwnedEvent::Data { .. } => "Data".to_string(),
                e => format!("{e:?}"),
            })
        );
    }
    if closed {
        prop_assert!(
            p.server.state(id).is_none(),
            "a closed connection stays in the table"
        );
        let connected = others
            .iter()
            .filter(|e| matches!(e, OwnedEvent::Connected { .. }))
            .count();
        let disconnected = others
            .iter()
            .filter(|e| matches!(e, OwnedEvent::Disconnected { .. }))
            .count();
        prop_assert_eq!(p.server.connection_count(), connected - disconnected);
    } else {
        prop_assert!(p.server.state(id).is_some(), "connection vanished silently");
        if client_up {
            prop_assert!(
                mine.iter().any(|e| matches!(
                    e,
                    OwnedEvent::Data { channel: Channel::Unreliable, data, .. }
                        if data.as_slice() == probe
                )),
                "the connection is up but the probe did not arrive"
            );
        }
    }
    let client_events: Vec<&OwnedEvent> = p.client_events.iter().skip(1).collect();
    check_client_stream(&client_events)
}

/// The client's own events after its `Connected`: well formed (the client sees only the
/// server's real datagrams here, which may include Disconnect).
fn check_client_stream(events: &[&OwnedEvent]) -> Result<(), TestCaseError> {
    let mut done = false;
    for e in events {
        prop_assert!(!done, "client: {:?} after Disconnected", e);
        match e {
            OwnedEvent::Connected { .. } => prop_assert!(false, "client: second Connected"),
            OwnedEvent::Disconnected { .. } => done = true,
            _ => {}
        }
    }
    Ok(())
}

/// Fills the receive window of a connection with forged, never-completing fragments (the
/// first fragment is always missing) and forged out-of-window segments: memory stays bounded.
#[test]
fn forged_segments_fill_at_most_the_receive_window() {
    let mut p = Pair::new();
    let id = p.id.unwrap();
    let mss = Config::default().kcp_mss();
    let mut sent = 0;
    for round in 0..2u32 {
        // The client's proof of address was sn 1; sn 2 (its first keepalive Ping, 500 ms
        // away) stays missing.
        for sn in 3..400u32 {
            // frg > 0 everywhere, so no message ever completes; sn spans the window and far
            // beyond it.
            let mut d = vec![1u8];
            d.extend_from_slice(&p.cookie.to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes()); // conv
            d.push(81); // PUSH
            d.push(200); // frg
            d.extend_from_slice(&128u16.to_le_bytes());
            d.extend_from_slice(&(round * 1000 + sn).to_le_bytes()); // ts
            d.extend_from_slice(&(sn + round * 100_000).to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes()); // una
            d.extend_from_slice(&(mss as u32).to_le_bytes());
            d.extend(std::iter::repeat_n(0xAB, mss));
            p.inject(&d);
            sent += 1;
            if sn % 10 == 0 {
                p.step();
            }
        }
    }
    for _ in 0..100 {
        p.step();
    }
    let mem = p.server.connection_memory(id);
    let stats = p.server.connection_stats(id);
    println!("after {sent} forged segments: memory {mem:?} bytes, stats {stats:?}");
    let mem = mem.expect("forged fragments are not a protocol error");
    assert!(mem <= MEMORY_BOUND, "connection holds {mem} bytes");
    let stats = stats.unwrap();
    assert!(stats.recv_buffer as usize <= 128, "{stats:?}");
    assert_eq!(p.server.pending_events(), 0);
    // And the connection still works.
    p.client.send(b"still here", Channel::Unreliable).unwrap();
    for _ in 0..10 {
        p.step();
    }
    assert!(matches!(
        p.server_events.last(),
        Some(OwnedEvent::Data { data, .. }) if data.as_slice() == b"still here"
    ));
}

// ---------------------------------------------------------- client targets

/// A client and a raw socket playing its server.
struct FakeServer {
    clock: ManualClock,
    server: MemorySocket,
    client: Client,
    events: Vec<OwnedEvent>,
    /// Datagrams the client sent.
    from_client: Vec<Vec<u8>>,
}

impl FakeServer {
    fn new() -> FakeServer {
        let net = MemoryNetwork::new();
        let clock = ManualClock::starting_at(Duration::from_secs(1));
        let server = net.bind(addr(SERVER_ADDR)).unwrap();
        let client = Client::with_transport(
            Box::new(net.bind(addr(CLIENT_ADDR)).unwrap()),
            Box::new(clock.clone()),
            addr(SERVER_ADDR),
            Config::default(),
        )
        .unwrap();
        let mut f = FakeServer {
            clock,
            server,
            client,
            events: Vec::new(),
            from_client: Vec::new(),
        };
        f.step();
        assert!(
            f.from_client.iter().any(|d| is_hello_datagram(d)),
            "the client sends a Hello first"
        );
        f
    }

    fn step(&mut self) {
        self.client.tick_incoming();
        drain_client(&mut self.client, &mut self.events);
        self.client.tick_outgoing();
        let now = self.clock.now();
        self.from_client.extend(drain_raw(&mut self.server, now));
        self.clock.advance(Duration::from_millis(1));
    }

    fn send(&mut self, data: &[u8]) {
        let now = self.clock.now();
        let _ = self.server.send_to(data, addr(CLIENT_ADDR), now);
    }

    /// Completes the handshake with the real kcp2k server's reply (capture #001: ACK of the
    /// client's Hello plus the server's Hello, cookie `REAL_COOKIE`).
    fn connect(&mut self) {
        let hello_reply = capture().hello_reply.clone();
        self.send(&hello_reply);
        for _ in 0..5 {
            self.step();
        }
        assert!(self.client.is_connected(), "events: {:?}", self.events);
        assert!(matches!(self.events[..], [OwnedEvent::Connected { .. }]));
    }
}

/// The events of a client attempt: an optional `Connected` first, data only after it, at
/// most one `Disconnected` and nothing after it, `Error` only right before `Disconnected`.
fn check_client_attempt(events: &[OwnedEvent]) -> Result<bool, TestCaseError> {
    let connected = matches!(events.first(), Some(OwnedEvent::Connected { .. }));
    let rest: Vec<&OwnedEvent> = events.iter().skip(usize::from(connected)).collect();
    if !connected {
        prop_assert!(
            !rest.iter().any(|e| matches!(e, OwnedEvent::Data { .. })),
            "Data before Connected: {:?}",
            events
        );
    }
    let mut done = false;
    for (n, e) in rest.iter().enumerate() {
        prop_assert!(!done, "{:?} after Disconnected: {:?}", e, events);
        match e {
            OwnedEvent::Connected { .. } => prop_assert!(false, "Connected twice: {:?}", events),
            OwnedEvent::Data { .. } => {}
            OwnedEvent::Error { code, .. } => {
                prop_assert!(
                    matches!(rest.get(n + 1), Some(OwnedEvent::Disconnected { .. })),
                    "Error not followed by Disconnected: {:?}",
                    events
                );
                prop_assert!(
                    matches!(code, ErrorCode::InvalidReceive | ErrorCode::Timeout),
                    "unexpected error code {:?}",
                    code
                );
            }
            OwnedEvent::Disconnected { reason, .. } => {
                done = true;
                let after_error = n > 0 && matches!(rest[n - 1], OwnedEvent::Error { .. });
                prop_assert!(
                    matches!(
                        (reason, after_error),
                        (DisconnectReason::Remote, false)
                            | (DisconnectReason::ProtocolError, true)
                            | (DisconnectReason::Timeout, true)
                    ),
                    "unexpected end {:?}: {:?}",
                    reason,
                    events
                );
            }
            other => prop_assert!(false, "unexpected event {:?}", other),
        }
    }
    Ok(done)
}

proptest! {
    #![proptest_config(config(256))]

    /// Garbage from the server's address while the client is connecting, with or without
    /// the real server's handshake reply somewhere among it.
    #[test]
    fn connecting_client_survives_garbage(
        datagrams in prop::collection::vec(garbage(&capture().s2c), 1..40),
        reply_at in prop::option::of(any::<Index>()),
    ) {
        let mut f = FakeServer::new();
        let reply_at = reply_at.map(|i| i.index(datagrams.len() + 1));
        for k in 0..=datagrams.len() {
            if reply_at == Some(k) {
                f.send(&capture().hello_reply);
            }
            let Some(g) = datagrams.get(k) else { break };
            // The sender plays the server: it may know the real server's cookie.
            let d = g.build(Some(REAL_COOKIE));
            f.send(&d);
            if k % 3 == 0 {
                f.step();
            }
        }
        for _ in 0..300 {
            f.step();
        }
        let s = f.client.connection_stats();
        prop_assert!(s.recv_buffer + s.recv_queue <= 2 * 128, "{:?}", s);
        let done = check_client_attempt(&f.events)?;
        prop_assert_eq!(done, f.client.state() == kcpnet::ConnectionState::Disconnected);
        if std::env::var_os("KCPNET_HOSTILE_STATS").is_some() {
            eprintln!(
                "connecting client case: reply {:?}, state {:?}, events {:?}",
                reply_at,
                f.client.state(),
                f.events.iter().filter(|e| !matches!(e, OwnedEvent::Data { .. })).collect::<Vec<_>>()
            );
        }
    }

    /// Garbage from the server's address once the client is connected: it keeps working or
    /// closes cleanly.
    #[test]
    fn connected_client_survives_garbage(
        datagrams in prop::collection::vec(garbage(&capture().s2c), 1..100),
    ) {
        let mut f = FakeServer::new();
        f.connect();
        for (k, g) in datagrams.iter().enumerate() {
            let d = g.build(Some(REAL_COOKIE));
            f.send(&d);
            if k % 4 == 0 {
                f.step();
            }
        }
        for _ in 0..200 {
            f.step();
        }
        let s = f.client.connection_stats();
        prop_assert!(s.recv_buffer + s.recv_queue <= 2 * 128, "{:?}", s);
        let up = f.client.is_connected();
        let mut probe = vec![2u8];
        probe.extend_from_slice(&REAL_COOKIE.to_le_bytes());
        probe.push(4);
        probe.extend_from_slice(b"probe from the server");
        f.send(&probe);
        for _ in 0..5 {
            f.step();
        }
        let done = check_client_attempt(&f.events)?;
        prop_assert_eq!(done, !up, "disconnected without a Disconnected event");
        if std::env::var_os("KCPNET_HOSTILE_STATS").is_some() {
            eprintln!(
                "connected client case: up {up}, events {:?}",
                f.events.iter().filter(|e| !matches!(e, OwnedEvent::Data { .. })).collect::<Vec<_>>()
            );
        }
        if up {
            prop_assert!(
                matches!(f.events.last(), Some(OwnedEvent::Data { channel: Channel::Unreliable, data, .. })
                    if data.as_slice() == b"probe from the server"),
                "the client is up but the probe did not arrive: {:?}",
                f.events.last()
            );
        }
    }
}

/// Sanity check of the corpus and of the capture's handshake against a `Client`.
#[test]
fn capture_handshake_connects_a_client() {
    let mut f = FakeServer::new();
    f.connect();
    let mut seen: HashMap<u8, usize> = HashMap::new();
    for d in &capture().s2c {
        *seen.entry(d[0]).or_default() += 1;
    }
    assert!(seen.contains_key(&1) && seen.contains_key(&2), "{seen:?}");
}
