//! Harness of the `endpoints` fuzz target: a `kcpnet::Server` and its `Client`s on one
//! `MemoryNetwork` with one `ManualClock`, driven by a structured [`Scenario`] (decoded with
//! `arbitrary`'s derive): honest steps and clock jumps, application sends on both channels,
//! datagrams injected both ways from raw sockets (the peer's own address, or strangers'),
//! real datagrams taken from what the endpoints sent (replayed or mutated), crafted
//! segments, loss / latency / duplication / reordering on the client's link, hard and
//! graceful disconnects, reconnects and server shutdown.
//!
//! Checked all along: no panic; no event for a stranger (every server event belongs to a
//! connection of one of the legitimate client addresses); the event-stream rules of
//! `kcpnet::fuzzing::StreamCheck` (exactly one `Disconnected` per `Connected`, no `Data`
//! after it); reliable data exactly once and in order when nothing was forged, and all of
//! it once an honest network had 30 minutes (when no segment was retransmitted more than 4
//! times, so no timer can lie beyond that); no stranger gets back more than 3× the
//! bytes it sent; every connection's memory within `kcpnet::fuzzing::memory_bound`.
//!
//! Shared by `fuzz/fuzz_targets/endpoints.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use kcpnet::fuzzing::{memory_bound, message, Delivery, Role, StreamCheck};
use kcpnet::io::{
    Conditions, Direction, LinkConditioner, ManualClock, MemoryNetwork, MemorySocket, PollReport,
    Transport,
};
use kcpnet::wire::{Command, Datagram, SegmentHeader};
use kcpnet::{Channel, Client, Config, ConnectionId, OwnedEvent, Server};

/// Operations taken from one scenario (the rest is ignored).
const MAX_OPS: usize = 256;
/// Client incarnations (addresses) one scenario may use.
const MAX_CLIENTS: usize = 4;
const STRANGERS: usize = 3;
/// Datagrams remembered per endpoint for replays and mutations.
const TAP_LEN: usize = 64;
/// The application waits while this many segments are queued or in flight.
const APP_BACKLOG: usize = 8;
const TAG_SERVER: u8 = 0x50;
const TAG_CLIENT: u8 = 0xC0;
/// How long the final honest network may take to deliver what is outstanding.
const HORIZON: Duration = Duration::from_secs(30 * 60);

/// The whole input of one case.
#[derive(Debug, Arbitrary)]
pub struct Scenario {
    /// The configuration of both ends.
    pub config: ConfigChoice,
    /// Conditions on the client's link (both directions), if any.
    pub network: Option<NetChoice>,
    /// What happens, in order.
    pub ops: Vec<Op>,
}

/// A configuration both ends use (they must match in mtu and receive window).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ConfigChoice {
    mtu: u8,
    big_windows: bool,
    no_delay: u8,
    fast_resend: bool,
    congestion_window: bool,
    flush_on_tick: bool,
    timeout: u8,
    interval: u8,
    throttle: bool,
    one_connection: bool,
}

impl ConfigChoice {
    fn config(self) -> Config {
        let big = self.big_windows;
        let timeout_ms = [10_000, 2_000, 30_000][self.timeout as usize % 3];
        let mut c = Config {
            mtu: [1200, 200, 576, 1400][self.mtu as usize % 4],
            send_window_size: if big { 64 } else { 32 },
            receive_window_size: if big { 256 } else { 128 },
            no_delay: self.no_delay % 3,
            fast_resend: if self.fast_resend { 2 } else { 0 },
            congestion_window: self.congestion_window,
            flush_on_tick: self.flush_on_tick,
            timeout_ms,
            handshake_timeout_ms: timeout_ms,
            interval_ms: [10, 1, 30][self.interval as usize % 3],
            ..Config::default()
        };
        if self.throttle {
            c.max_pending_event_bytes = c.reliable_max_message_size() + 1 + 1024;
        }
        if self.one_connection {
            c.max_connections = 1;
        }
        c
    }
}

/// Loss, duplication, reordering and delay on the client's link.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct NetChoice {
    loss: u8,
    duplicate: u8,
    reorder: u8,
    latency_ms: u8,
    jitter_ms: u8,
    seed: u64,
}

impl NetChoice {
    fn conditions(self) -> Conditions {
        let p = |b: u8| b as f64 / 255.0 * 0.3;
        let mut c = Conditions::default()
            .with_loss(p(self.loss))
            .with_duplicate(p(self.duplicate))
            .with_latency(Duration::from_millis(self.latency_ms as u64 % 100))
            .with_jitter(Duration::from_millis(self.jitter_ms as u64 % 50));
        if self.reorder > 0 {
            c = c.with_reorder(p(self.reorder), Duration::from_millis(30));
        }
        c
    }
}

/// One thing that happens.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// Tick both ends (incoming, events, outgoing), then advance the clock.
    Step {
        /// Milliseconds to advance.
        ms: u8,
    },
    /// That many 10 ms steps.
    Steps {
        /// How many.
        count: u8,
    },
    /// Advance the clock without ticking (the game loop stalled).
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// An application send.
    Send {
        /// From the client (else the server, to the current client).
        from_client: bool,
        /// Reliable or unreliable.
        reliable: bool,
        /// Message length (reduced to what the channel takes).
        len: u16,
    },
    /// A datagram injected from a raw socket.
    Inject {
        /// To the server (else to the current client).
        to_server: bool,
        /// From whom.
        source: Source,
        /// What.
        datagram: Forge,
    },
    /// A hard or graceful disconnect.
    Disconnect {
        /// The client disconnects (else the server disconnects the current client).
        client: bool,
        /// Gracefully.
        graceful: bool,
    },
    /// The current client goes away (hard disconnect) and a new one connects from a new
    /// address.
    Reconnect,
    /// The server shuts down (every connection closed).
    Shutdown,
}

/// Where an injected datagram comes from.
#[derive(Debug, Arbitrary)]
pub enum Source {
    /// The legitimate peer's own address (the server's for the client and vice versa): on
    /// the path.
    Peer,
    /// One of a few raw sockets at other addresses.
    Stranger(u8),
}

/// An injected datagram.
#[derive(Debug, Arbitrary)]
pub enum Forge {
    /// Any bytes.
    Raw(Vec<u8>),
    /// A datagram the sending side's legitimate end sent recently, mutated (or, with no
    /// mutations, replayed as a late duplicate).
    Real {
        /// Which one (modulo how many were recorded).
        pick: u16,
        /// Changes made to it.
        mutations: Vec<Mutation>,
    },
    /// A kcp2k Hello.
    Hello {
        /// Its ts field.
        ts: u32,
        /// Its cookie.
        cookie: CookieChoice,
    },
    /// A reliable datagram of crafted segments.
    Segments {
        /// Its cookie.
        cookie: CookieChoice,
        /// The segments.
        segments: Vec<Seg>,
    },
}

/// A cookie for a crafted datagram.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum CookieChoice {
    /// 0 (no cookie yet).
    Zero,
    /// The one the path's legitimate sender uses now.
    Real,
    /// Any value.
    Value(u32),
}

/// A crafted KCP segment.
#[derive(Debug, Arbitrary)]
pub struct Seg {
    cmd: u8,
    frg: u8,
    wnd: u16,
    ts: u32,
    sn: u16,
    una: u16,
    far: Option<(u32, u32)>,
    len: Option<u32>,
    header: u8,
    payload_len: u16,
}

/// A change to a datagram.
#[derive(Debug, Arbitrary)]
pub enum Mutation {
    /// Flip one bit.
    FlipBit(u16, u8),
    /// Set one byte.
    Set(u16, u8),
    /// Insert a byte.
    Insert(u16, u8),
    /// Remove a byte.
    Remove(u16),
    /// Keep only a prefix.
    Truncate(u16),
    /// Overwrite a little-endian u32 (a KCP field).
    SetU32(u16, u32),
    /// Append bytes.
    Append(Vec<u8>),
}

fn apply(m: &Mutation, d: &mut Vec<u8>) {
    let at = |i: u16, n: usize| i as usize % n.max(1);
    match m {
        Mutation::FlipBit(i, b) if !d.is_empty() => {
            let i = at(*i, d.len());
            d[i] ^= 1 << (b % 8);
        }
        Mutation::Set(i, b) if !d.is_empty() => {
            let i = at(*i, d.len());
            d[i] = *b;
        }
        Mutation::Insert(i, b) => {
            let i = at(*i, d.len() + 1);
            d.insert(i, *b);
        }
        Mutation::Remove(i) if !d.is_empty() => {
            let i = at(*i, d.len());
            d.remove(i);
        }
        Mutation::Truncate(i) => {
            let n = at(*i, d.len() + 1);
            d.truncate(n);
        }
        Mutation::SetU32(i, v) if d.len() >= 4 => {
            let i = at(*i, d.len() - 3);
            d[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        Mutation::Append(bytes) => d.extend(bytes.iter().take(256)),
        _ => {}
    }
}

/// The datagrams an endpoint sent recently, with their destinations.
type Recorded = VecDeque<(SocketAddr, Vec<u8>)>;

/// A `MemorySocket` shared between an endpoint and the harness (which injects from the
/// endpoint's address), recording what the endpoint sends.
#[derive(Clone)]
struct Tap {
    socket: Arc<Mutex<MemorySocket>>,
    sent: Arc<Mutex<Recorded>>,
}

impl Tap {
    fn new(socket: MemorySocket) -> Tap {
        Tap {
            socket: Arc::new(Mutex::new(socket)),
            sent: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    fn inject(&self, data: &[u8], to: SocketAddr, now: Duration) {
        let _ = lock(&self.socket).send_to(data, to, now);
    }

    /// The recorded datagrams sent to `to`.
    fn sent_to(&self, to: SocketAddr) -> Vec<Vec<u8>> {
        lock(&self.sent)
            .iter()
            .filter(|(a, _)| *a == to)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport for Tap {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        lock(&self.socket).recv_from(buf, now)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> std::io::Result<bool> {
        {
            let mut sent = lock(&self.sent);
            if sent.len() == TAP_LEN {
                sent.pop_front();
            }
            sent.push_back((to, data.to_vec()));
        }
        lock(&self.socket).send_to(data, to, now)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        lock(&self.socket).local_addr()
    }

    fn poll(&mut self, now: Duration) -> std::io::Result<PollReport> {
        lock(&self.socket).poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        lock(&self.socket).next_wakeup()
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        lock(&self.socket).wait(timeout)
    }
}

/// One client incarnation and what was sent each way between it and the server.
struct ClientSlot {
    addr: SocketAddr,
    client: Option<Client>,
    tap: Tap,
    stream: StreamCheck,
    /// Client to server.
    up: Delivery,
    /// Server to client.
    down: Delivery,
    /// Its connection id on the server (the latest, if it was admitted twice).
    server_id: Option<ConnectionId>,
    admitted: usize,
}

struct World {
    config: Config,
    bound: usize,
    clock: ManualClock,
    net: MemoryNetwork,
    server_addr: SocketAddr,
    server: Server,
    server_tap: Tap,
    /// Checkers of the server's connections.
    server_streams: HashMap<ConnectionId, (StreamCheck, usize)>,
    clients: Vec<ClientSlot>,
    network: Option<NetChoice>,
    strangers: Vec<(MemorySocket, u64, u64)>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

impl World {
    fn new(scenario: &Scenario) -> World {
        let config = scenario.config.config();
        let net = MemoryNetwork::new();
        let clock = ManualClock::starting_at(Duration::from_secs(1));
        let server_addr = addr("10.0.0.1:7777");
        let server_tap = Tap::new(net.bind(server_addr).expect("bind the server"));
        let mut server = Server::with_transport(
            Box::new(server_tap.clone()),
            Box::new(clock.clone()),
            config.clone(),
        )
        .expect("a valid config");
        server.seed_cookies_for_testing(0x5eed);
        let strangers = (0..STRANGERS)
            .map(|i| {
                let a = addr(&format!("10.9.9.{}:{}", i + 1, 4000 + i));
                (net.bind(a).expect("bind a stranger"), 0, 0)
            })
            .collect();
        let mut w = World {
            bound: memory_bound(&config),
            config,
            clock,
            net,
            server_addr,
            server,
            server_tap,
            server_streams: HashMap::new(),
            clients: Vec::new(),
            network: scenario.network,
            strangers,
        };
        w.new_client();
        w
    }

    fn new_client(&mut self) {
        let k = self.clients.len();
        let a = addr(&format!("10.0.1.{}:5000", k + 1));
        let tap = Tap::new(self.net.bind(a).expect("bind a client"));
        let conditioner = LinkConditioner::new(tap.clone(), 1 + k as u64);
        if let Some(n) = self.network {
            use kcpnet::io::ConditionerControl;
            conditioner.reseed(n.seed);
            conditioner
                .set_conditions(Direction::Both, n.conditions())
                .expect("valid conditions");
        }
        let client = Client::with_transport(
            Box::new(conditioner),
            Box::new(self.clock.clone()),
            self.server_addr,
            self.config.clone(),
        )
        .expect("a valid config");
        self.clients.push(ClientSlot {
            addr: a,
            client: Some(client),
            tap,
            stream: StreamCheck::new(format!("client {k}"), Role::Client),
            up: Delivery::default(),
            down: Delivery::default(),
            server_id: None,
            admitted: 0,
        });
    }

    fn current(&mut self) -> &mut ClientSlot {
        self.clients.last_mut().expect("a client")
    }

    fn drain_server(&mut self) {
        while let Some(e) = self.server.poll_event() {
            let e = e.to_owned_event();
            let id = e.id();
            if let OwnedEvent::Connected { addr, .. } = &e {
                let k = self
                    .clients
                    .iter()
                    .position(|c| c.addr == *addr)
                    .unwrap_or_else(|| panic!("server: Connected for a stranger {addr}"));
                let slot = &mut self.clients[k];
                slot.admitted += 1;
                slot.server_id = Some(id);
                if slot.admitted > 1 {
                    // Admitted again (a replayed handshake reply within the cookie's
                    // lifetime): the client's one stream is split between two server
                    // connections, and replays may repeat to the new one what the old
                    // one delivered.
                    slot.up.forged = true;
                    slot.down.forged = true;
                }
                let check = StreamCheck::new(format!("server {id} (client {k})"), Role::Server);
                assert!(
                    self.server_streams.insert(id, (check, k)).is_none(),
                    "server: id {id} reused"
                );
            }
            let (check, k) = self
                .server_streams
                .get_mut(&id)
                .unwrap_or_else(|| panic!("server: an event for an unknown connection: {e:?}"));
            check.on_event(&e);
            if let OwnedEvent::Data { channel, data, .. } = &e {
                let k = *k;
                let label = format!("client {k} -> server {id}");
                self.clients[k]
                    .up
                    .on_data(&label, TAG_CLIENT + k as u8, *channel, data);
            }
        }
    }

    fn drain_client(&mut self, k: usize) {
        let slot = &mut self.clients[k];
        let Some(client) = slot.client.as_mut() else {
            return;
        };
        while let Some(e) = client.poll_event() {
            let e = e.to_owned_event();
            slot.stream.on_event(&e);
            if let OwnedEvent::Data { channel, data, .. } = &e {
                let label = format!("server -> client {k}");
                slot.down
                    .on_data(&label, TAG_SERVER + k as u8, *channel, data);
            }
        }
    }

    fn step(&mut self, ms: u64) {
        self.server.tick_incoming();
        self.drain_server();
        self.server.tick_outgoing();
        for k in 0..self.clients.len() {
            if let Some(c) = self.clients[k].client.as_mut() {
                c.tick_incoming();
                self.drain_client(k);
                if let Some(c) = self.clients[k].client.as_mut() {
                    c.tick_outgoing();
                }
            }
        }
        self.drain_strangers();
        self.check_memory();
        self.clock.advance(Duration::from_millis(ms));
    }

    fn drain_strangers(&mut self) {
        let now = self.clock.now();
        let mut buf = vec![0u8; 65_536];
        for (i, (socket, sent, got)) in self.strangers.iter_mut().enumerate() {
            while let Ok(Some((n, _))) = socket.recv_from(&mut buf, now) {
                *got += n as u64;
            }
            assert!(
                *got <= 3 * *sent,
                "stranger {i} got {got} bytes back for {sent} sent"
            );
        }
    }

    fn check_memory(&self) {
        for id in self.server.connections() {
            let m = self.server.connection_memory(id).unwrap_or(0);
            assert!(
                m <= self.bound,
                "server connection {id} holds {m} bytes, bound {}",
                self.bound
            );
        }
        for (k, slot) in self.clients.iter().enumerate() {
            if let Some(c) = &slot.client {
                let m = c.connection_memory();
                assert!(
                    m <= self.bound,
                    "client {k} holds {m} bytes, bound {}",
                    self.bound
                );
            }
        }
    }

    fn send(&mut self, from_client: bool, reliable: bool, len: u16) {
        let channel = if reliable {
            Channel::Reliable
        } else {
            Channel::Unreliable
        };
        let max = if reliable {
            4 * self.config.kcp_mss()
        } else {
            self.config.unreliable_max_message_size()
        };
        let len = 5 + len as usize % (max - 4);
        let k = self.clients.len() - 1;
        let slot = self.clients.last_mut().expect("a client");
        let delivery = if from_client {
            &mut slot.up
        } else {
            &mut slot.down
        };
        let seq = if reliable {
            delivery.sent
        } else {
            delivery.sent_unreliable
        };
        let result = if from_client {
            let Some(c) = slot.client.as_mut() else {
                return;
            };
            if !c.is_connected() || c.send_backlog() >= APP_BACKLOG {
                return;
            }
            c.send(&message(TAG_CLIENT + k as u8, seq, len), channel)
        } else {
            let Some(id) = slot.server_id else { return };
            if !self.server.is_connected(id)
                || self.server.send_backlog(id).unwrap_or(0) >= APP_BACKLOG
            {
                return;
            }
            self.server
                .send(id, &message(TAG_SERVER + k as u8, seq, len), channel)
        };
        match result {
            Ok(()) if reliable => delivery.sent += 1,
            Ok(()) => delivery.sent_unreliable += 1,
            Err(e) => panic!("send of a valid message on a connected peer failed: {e}"),
        }
    }

    fn inject(&mut self, to_server: bool, source: &Source, forge: &Forge) {
        let now = self.clock.now();
        let client_addr = self.current().addr;
        let (to, legit_tap) = if to_server {
            (self.server_addr, self.current().tap.clone())
        } else {
            (client_addr, self.server_tap.clone())
        };
        let real = if to_server {
            legit_tap.sent_to(self.server_addr)
        } else {
            legit_tap.sent_to(client_addr)
        };
        let real_cookie = real
            .iter()
            .rev()
            .find_map(|d| Datagram::parse(d).ok().map(|g| g.cookie))
            .unwrap_or(0);
        let cookie = |c: CookieChoice| match c {
            CookieChoice::Zero => 0,
            CookieChoice::Real => real_cookie,
            CookieChoice::Value(v) => v,
        };
        let mut replay = false;
        let d = match forge {
            Forge::Raw(bytes) => bytes.clone(),
            Forge::Real { pick, mutations } => {
                if real.is_empty() {
                    return;
                }
                let mut d = real[*pick as usize % real.len()].clone();
                for m in mutations.iter().take(8) {
                    apply(m, &mut d);
                }
                replay = mutations.is_empty();
                d
            }
            Forge::Hello { ts, cookie: c } => {
                let mut d = vec![1];
                d.extend_from_slice(&cookie(*c).to_le_bytes());
                let h = SegmentHeader {
                    conv: 0,
                    cmd: Command::Push,
                    frg: 0,
                    wnd: 128,
                    ts: *ts,
                    sn: 0,
                    una: 0,
                    len: 1,
                };
                d.extend_from_slice(&h.to_bytes());
                d.push(1);
                d
            }
            Forge::Segments {
                cookie: c,
                segments,
            } => {
                let mut d = vec![1];
                d.extend_from_slice(&cookie(*c).to_le_bytes());
                for s in segments.iter().take(4) {
                    let cmd = [
                        Command::Push,
                        Command::Ack,
                        Command::WindowAsk,
                        Command::WindowTell,
                    ][s.cmd as usize % 4];
                    let payload_len = s.payload_len as usize % 1400;
                    let (sn, una) = s.far.unwrap_or((s.sn as u32, s.una as u32));
                    let h = SegmentHeader {
                        conv: 0,
                        cmd,
                        frg: s.frg,
                        wnd: s.wnd,
                        ts: s.ts,
                        sn,
                        una,
                        len: s.len.unwrap_or(payload_len as u32),
                    };
                    d.extend_from_slice(&h.to_bytes());
                    if payload_len > 0 {
                        d.push(1 + s.header % 4);
                        d.extend((1..payload_len).map(|i| (i as u8).wrapping_mul(s.header)));
                    }
                }
                d
            }
        };
        match source {
            Source::Peer => {
                if !replay {
                    // Forged data on this path, forged ACKs for the other direction.
                    let slot = self.current();
                    slot.up.forged = true;
                    slot.down.forged = true;
                }
                legit_tap.inject(&d, to, now);
            }
            Source::Stranger(i) => {
                let (socket, sent, _) = &mut self.strangers[*i as usize % STRANGERS];
                *sent += d.len() as u64;
                let _ = socket.send_to(&d, to, now);
            }
        }
    }

    fn retire_client(&mut self) {
        let k = self.clients.len() - 1;
        if let Some(c) = self.clients[k].client.as_mut() {
            c.disconnect();
        }
        self.drain_client(k);
        self.clients[k].stream.finish();
        self.clients[k].client = None;
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Step { ms } => self.step(*ms as u64),
            Op::Steps { count } => {
                for _ in 0..*count {
                    self.step(10);
                }
            }
            Op::Advance { ms } => self.clock.advance(Duration::from_millis(*ms as u64)),
            Op::Send {
                from_client,
                reliable,
                len,
            } => self.send(*from_client, *reliable, *len),
            Op::Inject {
                to_server,
                source,
                datagram,
            } => self.inject(*to_server, source, datagram),
            Op::Disconnect { client, graceful } => {
                if *client {
                    if let Some(c) = self.current().client.as_mut() {
                        if *graceful {
                            c.disconnect_graceful();
                        } else {
                            c.disconnect();
                        }
                    }
                    let k = self.clients.len() - 1;
                    self.drain_client(k);
                } else if let Some(id) = self.current().server_id {
                    let r = if *graceful {
                        self.server.disconnect_graceful(id)
                    } else {
                        self.server.disconnect(id)
                    };
                    if let Err(e) = r {
                        assert!(
                            matches!(e, kcpnet::Error::ConnectionClosed),
                            "disconnect of a known id: {e}"
                        );
                    }
                    self.drain_server();
                }
            }
            Op::Reconnect => {
                if self.clients.len() < MAX_CLIENTS {
                    self.retire_client();
                    self.new_client();
                }
            }
            Op::Shutdown => {
                self.server.shutdown();
                self.drain_server();
            }
        }
    }

    fn finish(mut self) {
        // An honest network from now on.
        for slot in &mut self.clients {
            if let Some(c) = slot.client.as_mut() {
                let _ = c.set_conditions(Direction::Both, Conditions::default());
            }
        }
        let k = self.clients.len() - 1;
        // Event-driven: tick, then jump to the earliest timer (10 ms to 1 s). Bounded in
        // iterations and to 30 minutes of virtual time.
        let start = self.clock.now();
        // Nothing to check for completeness once something was forged: a short run suffices.
        let horizon = if self.clients[k].up.forged && self.clients[k].down.forged {
            Duration::from_secs(60)
        } else {
            HORIZON
        };
        let mut settled = false;
        for _ in 0..4_000 {
            let slot = &self.clients[k];
            let Some(c) = slot.client.as_ref() else { break };
            let up = c.is_connected()
                && slot
                    .server_id
                    .is_some_and(|id| self.server.is_connected(id));
            let done = slot.up.received == slot.up.sent && slot.down.received == slot.down.sent;
            let settling = matches!(
                c.state(),
                kcpnet::ConnectionState::Connecting | kcpnet::ConnectionState::Disconnecting
            ) || slot
                .server_id
                .and_then(|id| self.server.state(id))
                .is_some_and(|s| s == kcpnet::ConnectionState::Disconnecting)
                // The client connected; its answer is still on the way to the server.
                || (c.is_connected() && slot.server_id.is_none());
            if (up && done) || (!up && !settling) || self.clock.now() - start > horizon {
                settled = true;
                break;
            }
            let delay = [self.server.poll_delay(), c.poll_delay()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(Duration::from_secs(1));
            let ms = delay.as_millis().clamp(10, 1000) as u64;
            self.step(ms);
        }
        let slot = &self.clients[k];
        let up = slot.client.as_ref().is_some_and(|c| c.is_connected())
            && slot
                .server_id
                .is_some_and(|id| self.server.is_connected(id));
        // A segment's retransmission timeout doubles (about) on every timeout, from an RTO
        // of at most 60 s: after more than 4 timeouts it may lie beyond the horizon.
        let retransmits = slot
            .client
            .as_ref()
            .map_or(0, |c| c.connection_stats().retransmits)
            + slot
                .server_id
                .and_then(|id| self.server.connection_stats(id))
                .map_or(0, |s| s.retransmits);
        // Not checked when the iterations ran out before the horizon.
        if settled && up && retransmits <= 4 {
            for (name, d) in [
                ("client -> server", &slot.up),
                ("server -> client", &slot.down),
            ] {
                if !d.forged {
                    assert_eq!(
                        d.received,
                        d.sent,
                        "{name}: both ends connected after {:?} of an honest network, but \
                         not every reliable message arrived",
                        self.clock.now() - start
                    );
                }
            }
        }
        // Close everything and check that every stream ended properly: the client first,
        // then the server once nothing is in flight to it any more.
        self.retire_client();
        for _ in 0..4 {
            self.step(10);
            self.server.shutdown();
            self.drain_server();
            if self.net.queued(self.server_addr) == 0 {
                break;
            }
        }
        for (check, _) in self.server_streams.values() {
            check.finish();
        }
        assert_eq!(self.server.connection_count(), 0);
    }
}

/// One fuzz case from a decoded scenario.
pub fn run_scenario(scenario: &Scenario) {
    let mut world = World::new(scenario);
    for op in scenario.ops.iter().take(MAX_OPS) {
        world.op(op);
    }
    world.finish();
}

/// One fuzz case from raw bytes (decoded as `arbitrary` does for the fuzz target).
pub fn run(data: &[u8]) {
    if let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) {
        run_scenario(&scenario);
    }
}
