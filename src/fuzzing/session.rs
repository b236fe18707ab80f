//! The `connection` fuzz target's session: a listening and a client [`Endpoint`] — the
//! real sans-IO endpoints the drivers run, admission and the connection table included —
//! wired through two in-memory paths that the fuzzer's bytes control.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::{memory_bound, message, Delivery, Input, Role, StreamCheck, MESSAGE_MIN};
use crate::config::Config;
use crate::connection::ConnectionState;
use crate::endpoint::{Endpoint, Outbox};
use crate::event::{ConnectionId, OwnedEvent};
use crate::wire::datagram::{Channel, Datagram};
use crate::wire::segment::{Command, SegmentHeader};

const SERVER: &str = "10.0.0.1:7777";
const CLIENT: &str = "10.0.1.1:5000";
/// Datagrams a direction's queue holds before further sends are lost.
const QUEUE_LIMIT: usize = 2048;
/// Old datagrams kept per direction for replays.
const HISTORY: usize = 64;
/// Operations read from one input (the rest is ignored).
const MAX_OPS: usize = 2000;
/// Application sends wait while this many segments are queued or in flight.
const APP_BACKLOG: usize = 8;
const TAG_CLIENT: u8 = 0xC1;
/// How long the final honest network may take to deliver what is outstanding.
const HORIZON_MS: u64 = 30 * 60 * 1000;
const TAG_SERVER: u8 = 0x5E;
/// The server's cookie seed: the harness computes the cookie it hands out (crafted
/// datagrams carrying a valid cookie).
const COOKIE_SEED: u64 = 0x0123_4567_89ab_cdef;

/// One direction of the simulated network.
#[derive(Default)]
struct Path {
    queue: VecDeque<Vec<u8>>,
    history: VecDeque<Vec<u8>>,
    delivery: Delivery,
}

impl Path {
    fn push(&mut self, d: Vec<u8>) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(d.clone());
        if self.queue.len() < QUEUE_LIMIT {
            self.queue.push_back(d);
        }
    }

    /// Takes every datagram an endpoint call produced.
    fn take(&mut self, outbox: &mut Outbox) {
        while let Some((_, d)) = outbox.pop() {
            let d = d.to_vec();
            self.push(d);
        }
    }
}

/// The listening endpoint and the event streams of its connections.
struct ServerEnd {
    endpoint: Endpoint,
    /// Every connection id the server reported, with its event stream.
    streams: Vec<(ConnectionId, StreamCheck)>,
    /// The latest connection that reported `Connected`.
    current: Option<ConnectionId>,
}

/// The client endpoint and its one connection.
struct ClientEnd {
    endpoint: Endpoint,
    id: ConnectionId,
    stream: StreamCheck,
}

/// A client and a listening [`Endpoint`] wired through two in-memory paths the input
/// controls: delivery, loss, duplication, reordering, replay, mutation and injection of
/// datagrams, time, timers, application sends and disconnects.
struct Session {
    config: Config,
    now_ms: u64,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
    client: ClientEnd,
    server: ServerEnd,
    c2s: Path,
    s2c: Path,
    /// Scratch sink for one endpoint call.
    outbox: Outbox,
    /// A server connection was admitted more than once: the two incarnations split the
    /// client's stream, so gaps and the final completeness check are off.
    readmitted: bool,
    bound: usize,
}

fn session_config(input: &mut Input<'_>) -> Config {
    let flags = input.u8();
    let more = input.u8();
    let big = flags & 4 != 0;
    let timeout_ms = [10_000, 2_000, 500, 30_000][(more & 3) as usize];
    let mut c = Config {
        mtu: [1200, 200, 576, 1400][(flags & 3) as usize],
        send_window_size: if big { 64 } else { 32 },
        receive_window_size: if big { 256 } else { 128 },
        no_delay: (flags >> 3) % 3,
        fast_resend: if flags & 0x20 != 0 { 2 } else { 0 },
        congestion_window: flags & 0x40 != 0,
        flush_on_tick: flags & 0x80 == 0,
        timeout_ms,
        handshake_timeout_ms: timeout_ms,
        linger_timeout_ms: [3_000, 100][((more >> 2) & 1) as usize],
        interval_ms: [10, 1, 30, 100][((more >> 3) & 3) as usize],
        max_retransmits: [20, 3][((more >> 5) & 1) as usize],
        queue_disconnect_threshold: if more & 0x80 != 0 { 300 } else { 10_000 },
        ..Config::default()
    };
    if more & 0x40 != 0 {
        // Throttling: the event queue holds little more than one largest message.
        c.max_pending_event_bytes = c.reliable_max_message_size() + 1 + 1024;
    }
    c
}

impl Session {
    fn new(input: &mut Input<'_>) -> Session {
        let config = session_config(input);
        let start: u64 = match input.u8() % 4 {
            0 => 1_000,
            // The KCP clock (ms as u32) wraps a few seconds in.
            1 => u32::MAX as u64 - 3_000,
            2 => input.u32() as u64,
            _ => (1u64 << 32) * 5 + input.u16() as u64,
        };
        let server_addr: SocketAddr = SERVER.parse().unwrap_or_else(|_| unreachable!());
        let client_addr: SocketAddr = CLIENT.parse().unwrap_or_else(|_| unreachable!());
        let bound = memory_bound(&config);
        let mut server = Endpoint::server(config.clone()).unwrap_or_else(|e| panic!("{e}"));
        server.seed_cookies_for_testing(COOKIE_SEED);
        let mut client = Endpoint::client(config.clone()).unwrap_or_else(|e| panic!("{e}"));
        let id = client
            .connect(Duration::from_millis(start), server_addr)
            .unwrap_or_else(|e| panic!("{e}"));
        Session {
            client: ClientEnd {
                endpoint: client,
                id,
                stream: StreamCheck::new("client", Role::Client),
            },
            server: ServerEnd {
                endpoint: server,
                streams: Vec::new(),
                current: None,
            },
            config,
            now_ms: start,
            server_addr,
            client_addr,
            c2s: Path::default(),
            s2c: Path::default(),
            outbox: Outbox::new(),
            readmitted: false,
            bound,
        }
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms)
    }

    /// Runs `f` on the client endpoint at the current time; collects its output and events.
    fn with_client<R>(&mut self, f: impl FnOnce(&mut Endpoint, Duration, &mut Outbox) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.client.endpoint, now, &mut self.outbox);
        self.c2s.take(&mut self.outbox);
        self.drain_client_events();
        r
    }

    /// Runs `f` on the server endpoint at the current time; collects its output and events.
    fn with_server<R>(&mut self, f: impl FnOnce(&mut Endpoint, Duration, &mut Outbox) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.server.endpoint, now, &mut self.outbox);
        self.s2c.take(&mut self.outbox);
        self.drain_server_events();
        r
    }

    fn drain_client_events(&mut self) {
        while let Some(e) = self.client.endpoint.poll_event() {
            let e = e.to_owned_event();
            assert_eq!(e.id(), self.client.id, "client: an event for another id");
            self.client.stream.on_event(&e);
            if let OwnedEvent::Connected { addr, .. } = &e {
                assert_eq!(*addr, self.server_addr, "client: Connected to a stranger");
            }
            if let OwnedEvent::Data { channel, data, .. } = &e {
                self.s2c
                    .delivery
                    .on_data("server -> client", TAG_SERVER, *channel, data);
            }
        }
    }

    fn drain_server_events(&mut self) {
        while let Some(e) = self.server.endpoint.poll_event() {
            let e = e.to_owned_event();
            let id = e.id();
            if let OwnedEvent::Connected { addr, .. } = &e {
                assert_eq!(*addr, self.client_addr, "server: Connected for a stranger");
                if self.server.current.is_some() {
                    // A later incarnation for the same client (SYN-cookie style, within the
                    // cookie's lifetime): the client's one stream is split between them, and
                    // replays may repeat to the new one what the old one delivered.
                    self.readmitted = true;
                    self.c2s.delivery.forged = true;
                    self.s2c.delivery.forged = true;
                }
                self.server.current = Some(id);
            }
            let i = match self.server.streams.iter().position(|(s, _)| *s == id) {
                Some(i) => i,
                None => {
                    let check = StreamCheck::new(format!("server {id}"), Role::Server);
                    self.server.streams.push((id, check));
                    self.server.streams.len() - 1
                }
            };
            self.server.streams[i].1.on_event(&e);
            if let OwnedEvent::Data { channel, data, .. } = &e {
                self.c2s
                    .delivery
                    .on_data("client -> server", TAG_CLIENT, *channel, data);
            }
        }
    }

    /// What the server does with a datagram from the client's address.
    fn server_receive(&mut self, d: &[u8]) {
        let (from, before) = (self.client_addr, self.server.endpoint.connection_count());
        let (sent, hellos) = {
            let s = self.server.endpoint.stats();
            (s.bytes_sent, s.hello_replies)
        };
        self.with_server(|e, now, out| e.handle_datagram(now, from, d, out));
        let stats = self.server.endpoint.stats();
        if before == 0 && self.server.endpoint.connection_count() == 0 {
            // A stranger's datagram: at most the stateless Hello reply (twice its size), or,
            // if it proved its address, was admitted and closed again within the same
            // datagram (an over-mtu datagram, say), the Close datagrams that the half-open
            // send budget allows: three times what it sent.
            let reply = stats.bytes_sent - sent;
            let factor = if stats.hello_replies > hellos { 2 } else { 3 };
            assert!(
                reply <= factor * d.len() as u64,
                "stateless reply of {reply} bytes to {}",
                d.len()
            );
        }
    }

    fn client_receive(&mut self, d: &[u8]) {
        let from = self.server_addr;
        self.with_client(|e, now, out| e.handle_datagram(now, from, d, out));
    }

    fn deliver(&mut self, to_server: bool) {
        let path = if to_server {
            &mut self.c2s
        } else {
            &mut self.s2c
        };
        if let Some(d) = path.queue.pop_front() {
            self.receive(to_server, &d);
        }
    }

    fn receive(&mut self, to_server: bool, d: &[u8]) {
        if to_server {
            self.server_receive(d);
        } else {
            self.client_receive(d);
        }
    }

    fn tick_client(&mut self) {
        self.with_client(|e, now, out| {
            e.handle_timeout(now, out);
            e.flush(now, out);
        });
    }

    fn tick_server(&mut self) {
        self.with_server(|e, now, out| {
            e.handle_timeout(now, out);
            e.flush(now, out);
        });
    }

    fn send(&mut self, from_client: bool, channel: Channel, len: u16) {
        let (path, tag) = if from_client {
            (&self.c2s, TAG_CLIENT)
        } else {
            (&self.s2c, TAG_SERVER)
        };
        let (seq, max) = match channel {
            Channel::Reliable => (path.delivery.sent, 4 * self.config.kcp_mss()),
            Channel::Unreliable => (
                path.delivery.sent_unreliable,
                self.config.unreliable_max_message_size(),
            ),
        };
        let len = MESSAGE_MIN + len as usize % (max - MESSAGE_MIN + 1);
        let m = message(tag, seq, len);
        let result = if from_client {
            let id = self.client.id;
            if self.client.endpoint.send_backlog(id).unwrap_or(0) >= APP_BACKLOG {
                return;
            }
            self.with_client(|e, now, out| e.send(now, id, &m, channel, out))
        } else {
            let Some(id) = self.server.current else {
                return;
            };
            if self.server.endpoint.send_backlog(id).unwrap_or(usize::MAX) >= APP_BACKLOG {
                return;
            }
            self.with_server(|e, now, out| e.send(now, id, &m, channel, out))
        };
        if result.is_ok() {
            let path = if from_client {
                &mut self.c2s
            } else {
                &mut self.s2c
            };
            match channel {
                Channel::Reliable => path.delivery.sent += 1,
                Channel::Unreliable => path.delivery.sent_unreliable += 1,
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    /// Delivers everything queued, ticks both ends and advances 10 ms: an honest network.
    fn step(&mut self) {
        for _ in 0..2 * QUEUE_LIMIT {
            if self.c2s.queue.is_empty() && self.s2c.queue.is_empty() {
                break;
            }
            self.deliver(true);
            self.deliver(false);
        }
        self.with_server(|e, now, out| e.handle_timeout(now, out));
        self.with_client(|e, now, out| e.handle_timeout(now, out));
        self.tick_server();
        self.tick_client();
        self.advance(10);
    }

    fn both_connected(&self) -> bool {
        self.client.endpoint.is_connected(self.client.id)
            && self
                .server
                .current
                .is_some_and(|id| self.server.endpoint.is_connected(id))
    }

    fn check_memory(&self) {
        let client = self.client.endpoint.connection_memory(self.client.id);
        assert!(
            client.unwrap_or(0) <= self.bound,
            "client connection holds {client:?} bytes, bound {}",
            self.bound
        );
        for id in self.server.endpoint.connections() {
            let m = self.server.endpoint.connection_memory(id).unwrap_or(0);
            assert!(
                m <= self.bound,
                "server connection {id} holds {m} bytes, bound {}",
                self.bound
            );
        }
    }

    /// Something forged reaches one end: it can carry data (this path) as well as ACKs and
    /// `una` for the other direction's data, so neither direction's delivery is checked.
    fn forged(&mut self) {
        self.c2s.delivery.forged = true;
        self.s2c.delivery.forged = true;
    }

    fn path(&mut self, to_server: bool) -> &mut Path {
        if to_server {
            &mut self.c2s
        } else {
            &mut self.s2c
        }
    }

    fn op(&mut self, input: &mut Input<'_>) {
        let code = input.u8();
        let to_server = code & 0x80 != 0;
        match code & 0x1f {
            0..=3 => self.deliver(to_server),
            4 => {
                // Deliver everything queued in both directions.
                let n = self.c2s.queue.len() + self.s2c.queue.len();
                for _ in 0..n {
                    self.deliver(true);
                    self.deliver(false);
                }
            }
            5 => {
                self.path(to_server).queue.pop_front();
            }
            6 => {
                let p = self.path(to_server);
                if let Some(d) = p.queue.front().cloned() {
                    if p.queue.len() < QUEUE_LIMIT {
                        p.queue.push_back(d);
                    }
                }
            }
            7 => {
                let p = self.path(to_server);
                if p.queue.len() >= 2 {
                    p.queue.swap(0, 1);
                }
            }
            8 => {
                // Replay an old datagram of this path (a late duplicate: not a forgery).
                let i = input.u8() as usize;
                let p = self.path(to_server);
                if !p.history.is_empty() {
                    let d = p.history[i % p.history.len()].clone();
                    self.receive(to_server, &d);
                }
            }
            9 => {
                // Mutate the next datagram of this path.
                let (pos, value, kind) = (input.u16() as usize, input.u8(), input.u8());
                if let Some(d) = self.path(to_server).queue.front_mut() {
                    mutate(d, pos, value, kind);
                    self.forged();
                }
            }
            10 => {
                // Inject raw bytes from the peer's address.
                let len = input.u8() as usize * 8 + (input.u8() as usize & 7);
                let d = input.bytes(len).to_vec();
                self.forged();
                self.receive(to_server, &d);
            }
            11 => {
                // Inject a datagram of crafted segments carrying the right cookie.
                let d = self.crafted(to_server, input);
                self.forged();
                self.receive(to_server, &d);
            }
            12 | 13 => self.advance(input.u8() as u64),
            14 => self.advance(input.u16() as u64 * 4),
            15 => {
                if to_server {
                    self.tick_server();
                } else {
                    self.tick_client();
                }
            }
            16 => {
                if to_server {
                    self.with_server(|e, now, out| e.handle_timeout(now, out));
                } else {
                    self.with_client(|e, now, out| e.handle_timeout(now, out));
                }
            }
            17 | 18 => {
                let channel = if code & 0x20 != 0 {
                    Channel::Unreliable
                } else {
                    Channel::Reliable
                };
                self.send(!to_server, channel, input.u16());
            }
            19 => {
                let graceful = code & 0x20 != 0;
                let close = |e: &mut Endpoint, id, now, out: &mut Outbox| {
                    let _ = if graceful {
                        e.disconnect_graceful(now, id, out)
                    } else {
                        e.disconnect(now, id, out)
                    };
                };
                if to_server {
                    if let Some(id) = self.server.current {
                        self.with_server(|e, now, out| close(e, id, now, out));
                    }
                } else {
                    let id = self.client.id;
                    self.with_client(|e, now, out| close(e, id, now, out));
                }
            }
            20 => {
                // Cap (or uncap) one end's sending: pacing under everything above.
                let v = input.u16();
                let rate = (v != 0).then(|| 20_000 + u32::from(v) * 8);
                if to_server {
                    if let Some(id) = self.server.current {
                        self.with_server(|e, now, out| {
                            let _ = e.set_send_rate(now, id, rate, out);
                        });
                    }
                } else {
                    let id = self.client.id;
                    self.with_client(|e, now, out| {
                        let _ = e.set_send_rate(now, id, rate, out);
                    });
                }
            }
            _ => self.step(),
        }
        self.check_memory();
    }

    /// A reliable datagram of one or two segments with fields from the input, carrying the
    /// cookie the receiving end expects (an on-path attacker's forgery).
    fn crafted(&self, to_server: bool, input: &mut Input<'_>) -> Vec<u8> {
        let path = if to_server { &self.c2s } else { &self.s2c };
        // The cookie the path's real sender uses (its latest datagram), or the one the
        // server hands out now, or none.
        let latest = path
            .history
            .iter()
            .rev()
            .find_map(|d| Datagram::parse(d).ok().map(|g| g.cookie));
        let cookie = match input.u8() % 3 {
            0 => latest.unwrap_or(0),
            1 => self.server.endpoint.current_cookie(self.client_addr),
            _ => 0,
        };
        let mut d = vec![Channel::Reliable.as_u8()];
        d.extend_from_slice(&cookie.to_le_bytes());
        let count = 1 + (input.u8() & 1) as usize;
        for _ in 0..count {
            let flags = input.u8();
            let cmd = [
                Command::Push,
                Command::Ack,
                Command::WindowAsk,
                Command::WindowTell,
            ][(flags & 3) as usize];
            let small = |v: u32| if flags & 0x80 != 0 { v } else { v % 300 };
            let len = (input.u8() as u32 * 8) % 1400;
            let header = SegmentHeader {
                conv: 0,
                cmd,
                frg: if flags & 4 != 0 { input.u8() } else { 0 },
                wnd: input.u16(),
                ts: input.u32(),
                sn: small(input.u32()),
                una: small(input.u32()),
                len: if flags & 8 != 0 { input.u32() } else { len },
            };
            d.extend_from_slice(&header.to_bytes());
            let fill = input.u8();
            let header_byte = 1 + (flags >> 4) % 4; // Hello, Ping, Data, Pong
            d.push(header_byte);
            d.extend((1..len).map(|i| fill.wrapping_add(i as u8)));
        }
        d
    }

    fn trace(&self, code: u8) {
        let server = self.server.current.map(|id| {
            let e = &self.server.endpoint;
            (id, e.state(id), e.connection_stats(id))
        });
        let client = &self.client.endpoint;
        eprintln!(
            "op {code:#04x} (kind {}, to server {}) at {} ms: client {:?} {:?}; server {:?}; \
             c2s queued {} delivery {:?}; s2c queued {} delivery {:?}",
            code & 0x1f,
            code & 0x80 != 0,
            self.now_ms,
            client.state(self.client.id),
            client.connection_stats(self.client.id),
            server,
            self.c2s.queue.len(),
            self.c2s.delivery,
            self.s2c.queue.len(),
            self.s2c.delivery,
        );
    }

    /// The state of the client's connection and of the server's current one.
    fn states(&self) -> (Option<ConnectionState>, Option<ConnectionState>) {
        let server = self
            .server
            .current
            .and_then(|id| self.server.endpoint.state(id));
        (self.client.endpoint.state(self.client.id), server)
    }

    /// Retransmissions on both ends' current connections.
    fn retransmits(&self) -> u64 {
        let of = |e: &Endpoint, id: Option<ConnectionId>| {
            id.and_then(|id| e.connection_stats(id))
                .map_or(0, |s| s.retransmits)
        };
        of(&self.client.endpoint, Some(self.client.id))
            + of(&self.server.endpoint, self.server.current)
    }

    /// Lets an honest network run until both directions delivered what was sent (or the
    /// connection ended), then checks completeness, closes both ends and checks that every
    /// stream ended properly.
    fn finish(mut self) {
        // Event-driven: deliver, run both ends, jump to the earliest deadline (at most 1 s,
        // the ping interval). Bounded in iterations and to 30 minutes of virtual time.
        let start = self.now_ms;
        // Nothing to check for completeness once something was forged: a short run suffices.
        let horizon = if self.c2s.delivery.forged && self.s2c.delivery.forged {
            60_000
        } else {
            HORIZON_MS
        };
        let mut settled = false;
        for _ in 0..4_000 {
            let up = self.both_connected();
            let done = self.c2s.delivery.received == self.c2s.delivery.sent
                && self.s2c.delivery.received == self.s2c.delivery.sent;
            let (client, server) = self.states();
            let closing = client == Some(ConnectionState::Disconnecting)
                || server == Some(ConnectionState::Disconnecting);
            let connecting = client == Some(ConnectionState::Connecting);
            if (!up && !closing && !connecting) || (up && done) || self.now_ms - start > horizon {
                settled = true;
                break;
            }
            self.step();
            self.check_memory();
            // The earliest deadline of either endpoint, at most 1 s away.
            let next = [
                self.client.endpoint.poll_timeout(),
                self.server.endpoint.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .map(|at| at.as_millis() as u64)
            .min()
            .unwrap_or(u64::MAX);
            let wait = next.saturating_sub(self.now_ms).min(1_000) as i64;
            // `step` already advanced 10 ms.
            self.advance(wait.saturating_sub(10).max(0) as u64);
        }
        // A segment's retransmission timeout doubles (about) on every timeout, from an RTO
        // of at most 60 s: after more than 4 timeouts it may lie beyond the horizon.
        let retransmits = self.retransmits();
        // Not checked when the iterations ran out first (timers due every few ms: a 1 ms
        // interval) before the horizon.
        if settled && self.both_connected() && !self.readmitted && retransmits <= 4 {
            for (name, p) in [
                ("client -> server", &self.c2s),
                ("server -> client", &self.s2c),
            ] {
                if !p.delivery.forged {
                    assert_eq!(
                        p.delivery.received,
                        p.delivery.sent,
                        "{name}: both ends connected after {} s of an honest network, but \
                         not every reliable message arrived",
                        (self.now_ms - start) / 1000
                    );
                }
            }
        }
        // Close what is open, as a driver's shutdown does.
        self.with_server(|e, now, out| e.close_all(now, out));
        let id = self.client.id;
        self.with_client(|e, now, out| {
            let _ = e.disconnect(now, id, out);
        });
        self.client.stream.finish();
        for (_, s) in &self.server.streams {
            s.finish();
        }
    }
}

/// Changes `d` at `pos` according to `kind`: flip, set, insert, remove, truncate, or set a
/// little-endian u32 (KCP fields).
fn mutate(d: &mut Vec<u8>, pos: usize, value: u8, kind: u8) {
    if d.is_empty() {
        d.push(value);
        return;
    }
    let i = pos % d.len();
    match kind % 6 {
        0 => d[i] ^= 1 << (value % 8),
        1 => d[i] = value,
        2 => d.insert(i, value),
        3 => {
            d.remove(i);
        }
        4 => d.truncate(i),
        _ => {
            let v = match value % 4 {
                0 => 0u32,
                1 => u32::MAX,
                2 => 0x8000_0000,
                _ => value as u32,
            };
            let i = i.min(d.len().saturating_sub(4));
            for (k, b) in v.to_le_bytes().iter().enumerate() {
                if let Some(x) = d.get_mut(i + k) {
                    *x = *b;
                }
            }
        }
    }
}

/// One fuzz case of the endpoint and its connections: a client and a listening endpoint
/// (the server's stateless handshake and admission included) exchange datagrams through two
/// paths that `input` controls (delivery, loss, duplication, reordering, replay, mutation,
/// injection of raw and crafted datagrams), with time, timers, application sends on both
/// channels and hard or graceful disconnects from `input` too.
///
/// Panics if an invariant breaks: the event-stream rules of [`StreamCheck`] (exactly one
/// `Disconnected` per `Connected`, no `Data` after it, no event for a stranger), exactly-once
/// in-order reliable delivery on a path where nothing was forged ([`Delivery`]), complete
/// delivery once an honest network had 30 minutes (when no segment was retransmitted more
/// than 4 times, so no timer can lie beyond that), and [`memory_bound`] on both connections.
pub fn connection_session(input: &[u8]) {
    // `KCPNET_FUZZ_TRACE=1` prints each operation and the state after it (for minimizing
    // and explaining a failing input).
    let trace = std::env::var_os("KCPNET_FUZZ_TRACE").is_some();
    let mut input = Input::new(input);
    let mut session = Session::new(&mut input);
    if trace {
        eprintln!("config {:?}, start {} ms", session.config, session.now_ms);
    }
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let code = input.clone().u8();
        session.op(&mut input);
        if trace {
            session.trace(code);
        }
    }
    session.finish();
}
