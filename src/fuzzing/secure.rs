//! The `secure` fuzz target's session: a listening [`Endpoint`] with secure sessions
//! (`SecurityMode::Required` or `Mixed`, chosen by the input), an honest client that
//! connects with a connect token, and an attacker the input drives: Hellos with mutated
//! token blobs and options, sealed datagrams (`0x81`/`0x82`/`0xC1`/`0xC2`) with mutated
//! cookies, packet numbers, token attachments and bodies, replays and bit flips of the real
//! sealed datagrams, segments appended to the server's plain stateless reply, path responses
//! and NAT-style source rewrites from other addresses, a
//! thief who connects with the honest client's token from another address, a plain
//! kcp2k-compatible client, and (marked as forgery) datagrams sealed with the session's real
//! keys, as the token's holder can.
//!
//! Checks (every one panics): the event-stream rules of [`StreamCheck`] on every server
//! connection and both clients; the honest client's reliable messages arrive exactly once
//! and in order, in both directions, whatever the attacker does without the keys
//! ([`Delivery`]), and completely once an honest network ran; no server connection (so no
//! event) for an address that did not pass admission (in `Required` mode: only secure
//! sessions of the issued token); server memory bounded by what the input could create
//! (connections, `stats().shared_buffer_bytes`, each connection within [`memory_bound`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{memory_bound, message, Delivery, Input, Role, StreamCheck, MESSAGE_MIN};
use crate::config::Config;
use crate::connection::extensions::{
    hello_block, Extensions, OPTION_TOKEN, PATH_TOKEN_LEN, UNRELIABLE_PATH_CHALLENGE,
    UNRELIABLE_PATH_RESPONSE,
};
use crate::connection::ConnectionState;
use crate::endpoint::{Endpoint, Outbox};
use crate::event::{ConnectionId, OwnedEvent};
use crate::secure::{
    derive_session_key, open_datagram, seal_datagram, CipherSuite, ConnectToken, PrivateKey,
    SecureConfig, SecurityMode, TokenParams, ATTACHMENT_BYTES, SALT_BYTES, TOKEN_BLOB_BYTES,
};
use crate::wire::datagram::{Channel, ReliableHeader};
use crate::wire::segment::{Command, SegmentHeader};

const SERVER: &str = "10.0.0.1:7777";
/// The honest client's address, and the one a NAT rebinding gives it.
const CLIENTS: [&str; 2] = ["10.0.1.1:5000", "10.0.1.1:6001"];
/// Addresses the attacker sends from (the first one also rewrites the honest client's
/// datagrams, as a NAT would).
const ATTACKERS: [&str; 3] = ["10.6.6.6:4000", "10.6.6.7:4001", "10.0.1.1:5001"];
/// Where the two other real clients connect from: the thief (the honest client's token
/// from another address) and a plain kcp2k-compatible client (admitted in `Mixed` only).
const OTHERS: [&str; 2] = ["10.9.9.9:9000", "10.7.7.7:7000"];
const PROTOCOL: u64 = 0x6b63_706e_6574_0001;
/// Unix time at the session's start.
const UNIX0: u64 = 1_800_000_000;
const SERVER_KEY: [u8; 32] = [0x42; 32];
const HONEST_ID: u64 = 7;
const COOKIE_SEED: u64 = 0x0123_4567_89ab_cdef;
const QUEUE_LIMIT: usize = 1024;
const HISTORY: usize = 64;
const MAX_OPS: usize = 1500;
const APP_BACKLOG: usize = 8;
const TAG_CLIENT: u8 = 0xC1;
const TAG_SERVER: u8 = 0x5E;
const HORIZON_MS: u64 = 30 * 60 * 1000;
/// The endpoint's shared buffers, closed-connection memory and token table may hold this
/// much beyond what its connections justify (measured: a few KiB).
const SHARED_BASE: usize = 64 * 1024;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| unreachable!())
}

/// A datagram on its way to the server, and where it comes from.
#[derive(Clone)]
struct ToServer {
    from: SocketAddr,
    data: Vec<u8>,
}

/// The tokens of a session: the honest client's and refused variants.
struct Tokens {
    honest: ConnectToken,
    /// Expired, another protocol id, another server, another key: each refused.
    refused: Vec<ConnectToken>,
}

impl Tokens {
    fn new(input: &mut Input<'_>) -> Tokens {
        let mut rng = StdRng::seed_from_u64(input.u16() as u64);
        let key = PrivateKey::from_bytes(SERVER_KEY);
        let params = |protocol_id, server: &str, created, valid_secs| TokenParams {
            protocol_id,
            client_id: HONEST_ID,
            server_addresses: vec![addr(server)],
            user_data: b"player 7".to_vec(),
            created_unix_secs: created,
            valid_secs,
        };
        let make = |k: &PrivateKey, p: &TokenParams, rng: &mut StdRng| {
            ConnectToken::generate_with_rng(k, p, rng).unwrap_or_else(|e| panic!("{e}"))
        };
        let valid = [60, 5, 3600][input.u8() as usize % 3];
        let honest = make(&key, &params(PROTOCOL, SERVER, UNIX0 - 1, valid), &mut rng);
        let refused = vec![
            make(&key, &params(PROTOCOL, SERVER, UNIX0 - 600, 10), &mut rng),
            make(&key, &params(PROTOCOL + 1, SERVER, UNIX0, 60), &mut rng),
            make(
                &key,
                &params(PROTOCOL, "10.0.0.2:7777", UNIX0, 60),
                &mut rng,
            ),
            make(
                &PrivateKey::from_bytes([0x43; 32]),
                &params(PROTOCOL, SERVER, UNIX0, 60),
                &mut rng,
            ),
        ];
        Tokens { honest, refused }
    }
}

/// A client endpoint with one connection attempt.
struct ClientEnd {
    endpoint: Endpoint,
    id: ConnectionId,
    stream: StreamCheck,
    /// Its datagrams, not yet delivered (a thief's are delivered at once).
    queue: VecDeque<Vec<u8>>,
}

struct Session {
    /// The AEAD the server's config asks for (every client offers AES-256-GCM).
    suite: CipherSuite,
    config: Config,
    mode: SecurityMode,
    now_ms: u64,
    server_addr: SocketAddr,
    tokens: Tokens,
    server: Endpoint,
    /// Every server connection id that reported an event, with its event stream.
    streams: Vec<(ConnectionId, StreamCheck)>,
    /// The server's connection of the honest client (the latest that reported Connected).
    current: Option<ConnectionId>,
    client: ClientEnd,
    /// The honest client's address now (index into `CLIENTS`).
    client_at: usize,
    /// The thief and the plain client, once started (see [`OTHERS`]).
    others: [Option<ClientEnd>; 2],
    /// The honest client's datagrams on their way to the server.
    c2s: VecDeque<ToServer>,
    /// The server's datagrams to the honest client.
    s2c: VecDeque<Vec<u8>>,
    /// Past datagrams of each direction, for replays.
    c2s_history: VecDeque<Vec<u8>>,
    s2c_history: VecDeque<Vec<u8>>,
    /// What the server sent to attacker addresses (replies, path challenges, data after a
    /// NAT-style migration): the attacker may relay them to the client.
    captured: VecDeque<Vec<u8>>,
    c2s_delivery: Delivery,
    s2c_delivery: Delivery,
    /// Addresses a connection may legitimately exist for: the honest client's own ones and
    /// those its datagrams were delivered from, the thief's, those the server answered (a
    /// plain handshake in `Mixed`), and any the key holder sent from.
    may_connect: Vec<SocketAddr>,
    /// Addresses the honest client's datagrams reached the server from.
    honest_from: Vec<SocketAddr>,
    /// Someone sealed datagrams with the session's real keys.
    key_holder: bool,
    /// The honest client was admitted more than once (a replayed proof of address after a
    /// close): its stream is split between incarnations.
    readmitted: bool,
    /// The most connections the server held at once.
    peak_connections: usize,
    outbox: Outbox,
    /// Where the server's latest call sent how many bytes.
    sent_to: Vec<(SocketAddr, usize)>,
    bound: usize,
}

fn session_config(input: &mut Input<'_>) -> Config {
    let flags = input.u8();
    let more = input.u8();
    let timeout_ms = [10_000, 2_000, 500, 30_000][(more & 3) as usize];
    Config {
        mtu: [1200, 660, 800, 1400][(flags & 3) as usize],
        send_window_size: if flags & 4 != 0 { 64 } else { 32 },
        receive_window_size: if flags & 4 != 0 { 256 } else { 128 },
        no_delay: (flags >> 3) % 3,
        fast_resend: if flags & 0x20 != 0 { 2 } else { 0 },
        congestion_window: flags & 0x40 != 0,
        flush_on_tick: flags & 0x80 == 0,
        timeout_ms,
        handshake_timeout_ms: timeout_ms,
        linger_timeout_ms: [3_000, 100][((more >> 2) & 1) as usize],
        interval_ms: [10, 1, 30, 100][((more >> 3) & 3) as usize],
        max_retransmits: [20, 3][((more >> 5) & 1) as usize],
        ..Config::default()
    }
}

impl Session {
    fn new(input: &mut Input<'_>) -> Session {
        let mode_byte = input.u8();
        let mode = if mode_byte & 1 == 0 {
            SecurityMode::Required
        } else {
            SecurityMode::Mixed
        };
        let config = session_config(input);
        let tokens = Tokens::new(input);
        let start: u64 = match input.u8() % 3 {
            0 => 1_000,
            1 => u32::MAX as u64 - 3_000,
            _ => input.u32() as u64,
        };
        let server_addr = addr(SERVER);
        let mut server_config = config.clone();
        let suite = if mode_byte & 4 != 0 {
            CipherSuite::ChaCha20Poly1305
        } else {
            CipherSuite::Aes256Gcm
        };
        server_config.security = Some(SecureConfig {
            mode,
            protocol_id: PROTOCOL,
            key: PrivateKey::from_bytes(SERVER_KEY),
            public_addresses: vec![server_addr],
            cipher: suite,
        });
        if mode_byte & 2 != 0 {
            server_config.max_connections = 2;
        }
        let bound = memory_bound(&config);
        let now = Duration::from_millis(start);
        let mut server = Endpoint::server(server_config).unwrap_or_else(|e| panic!("{e}"));
        server.set_unix_time(now, UNIX0);
        server.seed_cookies_for_testing(COOKIE_SEED);
        let mut client = Endpoint::client(config.clone()).unwrap_or_else(|e| panic!("{e}"));
        let id = client
            .connect_with_token(now, &tokens.honest)
            .unwrap_or_else(|e| panic!("{e}"));
        Session {
            config,
            mode,
            suite,
            now_ms: start,
            server_addr,
            tokens,
            server,
            streams: Vec::new(),
            current: None,
            client: ClientEnd {
                endpoint: client,
                id,
                stream: StreamCheck::new("client", Role::Client),
                queue: VecDeque::new(),
            },
            client_at: 0,
            others: [None, None],
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            c2s_history: VecDeque::new(),
            s2c_history: VecDeque::new(),
            captured: VecDeque::new(),
            c2s_delivery: Delivery::default(),
            s2c_delivery: Delivery::default(),
            may_connect: CLIENTS.iter().map(|a| addr(a)).collect(),
            honest_from: Vec::new(),
            key_holder: false,
            readmitted: false,
            peak_connections: 0,
            outbox: Outbox::new(),
            sent_to: Vec::new(),
            bound,
        }
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms)
    }

    fn client_addr(&self) -> SocketAddr {
        addr(CLIENTS[self.client_at])
    }

    // ------------------------------------------------------------------ the ends

    fn with_client<R>(&mut self, f: impl FnOnce(&mut Endpoint, Duration, &mut Outbox) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.client.endpoint, now, &mut self.outbox);
        let from = self.client_addr();
        while let Some((to, d)) = self.outbox.pop() {
            assert_eq!(to, self.server_addr, "client: a datagram to {to}");
            let d = d.to_vec();
            push_history(&mut self.c2s_history, &d);
            if self.c2s.len() < QUEUE_LIMIT {
                self.c2s.push_back(ToServer { from, data: d });
            }
        }
        self.drain_client_events();
        r
    }

    fn with_server<R>(&mut self, f: impl FnOnce(&mut Endpoint, Duration, &mut Outbox) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.server, now, &mut self.outbox);
        self.sent_to.clear();
        while let Some((to, d)) = self.outbox.pop() {
            let d = d.to_vec();
            self.sent_to.push((to, d.len()));
            let other = OTHERS.iter().position(|a| addr(a) == to);
            if !self.may_connect.contains(&to) && other.is_none() {
                // A reply to an attacker: in `Mixed` it may complete a plain handshake.
                self.may_connect.push(to);
            }
            if CLIENTS.iter().any(|c| addr(c) == to) {
                push_history(&mut self.s2c_history, &d);
                if self.s2c.len() < QUEUE_LIMIT {
                    self.s2c.push_back(d);
                }
            } else if let Some(i) = other {
                if let Some(t) = self.others[i].as_mut() {
                    t.queue.push_back(d);
                }
            } else {
                push_history(&mut self.captured, &d);
            }
        }
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
                self.s2c_delivery
                    .on_data("server -> client", TAG_SERVER, *channel, data);
            }
        }
    }

    fn drain_server_events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            let e = e.to_owned_event();
            let id = e.id();
            if let OwnedEvent::Connected { addr, .. } = &e {
                self.on_server_connected(id, *addr);
            }
            if let OwnedEvent::AddressChanged { addr, .. } = &e {
                assert!(
                    self.key_holder || self.honest_from.contains(addr),
                    "server {id}: moved to {addr}, where no sealed datagram of the session \
                     came from"
                );
            }
            let i = match self.streams.iter().position(|(s, _)| *s == id) {
                Some(i) => i,
                None => {
                    let check = StreamCheck::new(format!("server {id}"), Role::Server);
                    self.streams.push((id, check));
                    self.streams.len() - 1
                }
            };
            self.streams[i].1.on_event(&e);
            if let OwnedEvent::Data { channel, data, .. } = &e {
                if Some(id) == self.current {
                    self.c2s_delivery
                        .on_data("client -> server", TAG_CLIENT, *channel, data);
                }
            }
        }
    }

    /// A server connection reported `Connected` from `from`: it must have passed admission.
    fn on_server_connected(&mut self, id: ConnectionId, from: SocketAddr) {
        let session = self.server.secure_session(id);
        match session {
            Some(s) => assert_eq!(
                s.client_id, HONEST_ID,
                "server {id}: a secure session of a token never issued"
            ),
            None => assert!(
                self.mode == SecurityMode::Mixed,
                "server {id}: an unauthenticated connection from {from} in Required mode"
            ),
        }
        assert!(
            self.may_connect.contains(&from),
            "server {id}: Connected for {from}, which never completed a handshake"
        );
        if session.is_some() && self.honest_from.contains(&from) {
            if self.current.is_some() {
                self.readmitted = true;
                self.forged();
            }
            self.current = Some(id);
        }
    }

    /// The server receives `d` from `from`.
    fn server_receive(&mut self, from: SocketAddr, d: &[u8]) {
        let known = |e: &Endpoint| e.connections().any(|id| e.remote_addr(id) == Some(from));
        let before = known(&self.server);
        self.with_server(|e, now, out| e.handle_datagram(now, from, d, out));
        if before || known(&self.server) {
            return;
        }
        // Toward an address without a connection: the stateless reply (63 bytes at most) or
        // a path challenge, within 3x of what arrived from there.
        let reply = self
            .sent_to
            .iter()
            .filter(|(a, _)| *a == from)
            .map(|(_, n)| n)
            .sum::<usize>();
        assert!(
            reply <= 3 * d.len() + 64,
            "{reply} bytes sent to {from} for {} bytes from there",
            d.len()
        );
    }

    fn client_receive(&mut self, d: &[u8]) {
        let from = self.server_addr;
        self.with_client(|e, now, out| e.handle_datagram(now, from, d, out));
    }

    fn deliver_to_server(&mut self, rewrite: Option<SocketAddr>) {
        if let Some(mut d) = self.c2s.pop_front() {
            if let Some(a) = rewrite {
                d.from = a;
            }
            self.honest_came_from(d.from);
            self.server_receive(d.from, &d.data);
        }
    }

    /// A datagram of the honest client reaches the server from `from`.
    fn honest_came_from(&mut self, from: SocketAddr) {
        if !self.honest_from.contains(&from) {
            self.honest_from.push(from);
        }
        if !self.may_connect.contains(&from) {
            self.may_connect.push(from);
        }
    }

    fn deliver_to_client(&mut self) {
        if let Some(d) = self.s2c.pop_front() {
            self.client_receive(&d);
        }
    }

    fn tick(&mut self, server: bool) {
        if server {
            self.with_server(|e, now, out| {
                e.handle_timeout(now, out);
                e.flush(now, out);
            });
        } else {
            self.with_client(|e, now, out| {
                e.handle_timeout(now, out);
                e.flush(now, out);
            });
        }
    }

    /// Another real client (`OTHERS[i]`: 0 the thief, with the honest client's token; 1 a
    /// plain kcp2k-compatible client), started on first use. Its traffic is delivered at
    /// once both ways.
    fn run_other(&mut self, i: usize) {
        let now = self.now();
        if self.others[i].is_none() {
            let mut endpoint =
                Endpoint::client(self.config.clone()).unwrap_or_else(|e| panic!("{e}"));
            let id = if i == 0 {
                endpoint.connect_with_token(now, &self.tokens.honest)
            } else {
                endpoint.connect(now, self.server_addr)
            }
            .unwrap_or_else(|e| panic!("{e}"));
            self.may_connect.push(addr(OTHERS[i]));
            self.others[i] = Some(ClientEnd {
                endpoint,
                id,
                stream: StreamCheck::new(["thief", "plain client"][i], Role::Client),
                queue: VecDeque::new(),
            });
        }
        for _ in 0..4 {
            let Some(t) = self.others[i].as_mut() else {
                return;
            };
            let server_addr = self.server_addr;
            while let Some(d) = t.queue.pop_front() {
                t.endpoint
                    .handle_datagram(now, server_addr, &d, &mut self.outbox);
            }
            t.endpoint.handle_timeout(now, &mut self.outbox);
            t.endpoint.flush(now, &mut self.outbox);
            while let Some(e) = t.endpoint.poll_event() {
                let e = e.to_owned_event();
                assert_eq!(e.id(), t.id, "{}: an event for another id", OTHERS[i]);
                t.stream.on_event(&e);
            }
            let mut out = Vec::new();
            while let Some((_, d)) = self.outbox.pop() {
                out.push(d.to_vec());
            }
            if out.is_empty() {
                break;
            }
            for d in out {
                self.server_receive(addr(OTHERS[i]), &d);
            }
        }
    }

    fn send(&mut self, from_client: bool, channel: Channel, len: u16) {
        let (delivery, tag) = if from_client {
            (&self.c2s_delivery, TAG_CLIENT)
        } else {
            (&self.s2c_delivery, TAG_SERVER)
        };
        let (seq, max) = match channel {
            Channel::Reliable => (delivery.sent, 3 * self.config.kcp_mss()),
            Channel::Unreliable => (delivery.sent_unreliable, 400),
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
            let Some(id) = self.current else {
                return;
            };
            if self.server.send_backlog(id).unwrap_or(usize::MAX) >= APP_BACKLOG {
                return;
            }
            self.with_server(|e, now, out| e.send(now, id, &m, channel, out))
        };
        if result.is_ok() {
            let delivery = if from_client {
                &mut self.c2s_delivery
            } else {
                &mut self.s2c_delivery
            };
            match channel {
                Channel::Reliable => delivery.sent += 1,
                Channel::Unreliable => delivery.sent_unreliable += 1,
            }
        }
    }

    /// Delivers everything queued (the client's datagrams from its own address), ticks
    /// every end and advances 10 ms: an honest network.
    fn step(&mut self) {
        for _ in 0..2 * QUEUE_LIMIT {
            if self.c2s.is_empty() && self.s2c.is_empty() {
                break;
            }
            self.deliver_to_server(None);
            self.deliver_to_client();
        }
        self.tick(true);
        self.tick(false);
        for i in 0..2 {
            if self.others[i].is_some() {
                self.run_other(i);
            }
        }
        self.now_ms += 10;
    }

    fn forged(&mut self) {
        self.c2s_delivery.forged = true;
        self.s2c_delivery.forged = true;
    }

    fn check(&mut self) {
        let n = self.server.connection_count();
        self.peak_connections = self.peak_connections.max(n);
        let ids: Vec<ConnectionId> = self.server.connections().collect();
        for id in ids {
            let m = self.server.connection_memory(id).unwrap_or(0);
            assert!(
                m <= self.bound,
                "server {id} holds {m} bytes, bound {}",
                self.bound
            );
            if let Some(a) = self.server.remote_addr(id) {
                assert!(
                    self.may_connect.contains(&a),
                    "server {id}: a connection for {a}, which never completed a handshake"
                );
            }
            if self.mode == SecurityMode::Required {
                assert!(
                    self.server.is_secure(id),
                    "server {id}: an unauthenticated connection in Required mode"
                );
            }
        }
        assert!(
            n <= self.may_connect.len(),
            "{n} server connections for {} addresses",
            self.may_connect.len()
        );
        let shared = self.server.stats().shared_buffer_bytes;
        let bound = SHARED_BASE + self.peak_connections * self.bound;
        assert!(
            shared <= bound,
            "the server's shared memory holds {shared} bytes, bound {bound}"
        );
        let c = self.client.endpoint.connection_memory(self.client.id);
        assert!(
            c.unwrap_or(0) <= self.bound,
            "client holds {c:?} bytes, bound {}",
            self.bound
        );
    }

    // ------------------------------------------------------------------ the attacker

    /// An address the attacker sends from.
    fn attacker(&self, b: u8) -> SocketAddr {
        match b % 5 {
            0..=2 => addr(ATTACKERS[(b % 5) as usize]),
            3 => self.client_addr(),
            _ => addr(CLIENTS[1 - self.client_at]),
        }
    }

    /// The newest cookie seen on the wire (the honest connection's), or 0.
    fn latest_cookie(&self) -> u32 {
        self.c2s_history
            .iter()
            .chain(self.s2c_history.iter())
            .rev()
            .find_map(|d| {
                d.get(1..5)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            })
            .unwrap_or(0)
    }

    /// The honest client's attachment (its token blob and salt) from one of its sealed
    /// datagrams that carry it.
    fn honest_attachment(&self) -> Option<Vec<u8>> {
        self.c2s_history.iter().rev().find_map(|d| {
            (d.first() == Some(&0xC1) || d.first() == Some(&0xC2))
                .then(|| d.get(5..5 + ATTACHMENT_BYTES).map(<[u8]>::to_vec))
                .flatten()
        })
    }

    /// A token blob: the honest one, a refused one, or either with a byte changed, or junk.
    fn token_blob(&self, input: &mut Input<'_>) -> Vec<u8> {
        let choice = input.u8();
        let mut blob = match choice % 6 {
            0 | 1 => self.tokens.honest.blob().to_vec(),
            2..=5 => self.tokens.refused[(choice % 6 - 2) as usize]
                .blob()
                .to_vec(),
            _ => unreachable!(),
        };
        match (choice >> 3) % 4 {
            0 => {}
            1 => {
                let (pos, bit) = (input.u16() as usize % blob.len(), input.u8());
                blob[pos] ^= 1 << (bit % 8);
            }
            2 => blob.truncate(input.u16() as usize % (TOKEN_BLOB_BYTES + 1)),
            _ => {
                let len = input.u16() as usize % (TOKEN_BLOB_BYTES + 32);
                blob = input.bytes(len).to_vec();
            }
        }
        blob
    }

    /// A client Hello with a token option (and maybe others), built from scratch.
    fn hello(&self, input: &mut Input<'_>) -> Vec<u8> {
        let flags = input.u8();
        let ext = Extensions::from_bits_truncate(input.u8() as u32 & 0x3f);
        let mut payload = vec![ReliableHeader::Hello.as_u8()];
        if flags & 1 == 0 {
            payload.extend_from_slice(&hello_block(ext | Extensions::SECURE));
        } else {
            payload.extend_from_slice(&hello_block(ext));
        }
        if flags & 2 != 0 {
            // An unknown option first.
            let len = input.u8() as usize % 16;
            payload.push(input.u8() | 2);
            payload.extend_from_slice(&(len as u16).to_le_bytes());
            payload.extend_from_slice(&vec![0xAB; len]);
        }
        if flags & 4 == 0 {
            let blob = self.token_blob(input);
            payload.push(OPTION_TOKEN);
            let len = if flags & 8 != 0 {
                input.u16()
            } else {
                blob.len() as u16
            };
            payload.extend_from_slice(&len.to_le_bytes());
            payload.extend_from_slice(&blob);
        }
        if flags & 0x10 != 0 {
            let n = input.u8() as usize % 8;
            payload.extend_from_slice(input.bytes(n));
        }
        let header = SegmentHeader {
            conv: 0,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts: input.u32(),
            sn: if flags & 0x20 != 0 {
                input.u32() % 4
            } else {
                0
            },
            una: 0,
            len: payload.len() as u32,
        };
        let mut d = vec![Channel::Reliable.as_u8()];
        d.extend_from_slice(&(if flags & 0x40 != 0 { input.u32() } else { 0 }).to_le_bytes());
        d.extend_from_slice(&header.to_bytes());
        d.extend_from_slice(&payload);
        d
    }

    /// A sealed datagram the attacker makes without the keys.
    fn sealed_without_keys(&self, input: &mut Input<'_>) -> Vec<u8> {
        let flags = input.u8();
        let first = [0x81, 0x82, 0xC1, 0xC2][(flags & 3) as usize];
        let cookie = match (flags >> 2) % 4 {
            0 | 1 => self.latest_cookie(),
            2 => self.latest_cookie() ^ (1 << (input.u8() % 32)),
            _ => input.u32(),
        };
        let mut d = vec![first];
        d.extend_from_slice(&cookie.to_le_bytes());
        if first & 0x40 != 0 {
            let mut att = match (flags >> 4) % 3 {
                0 => self.honest_attachment().unwrap_or_default(),
                1 => self.token_blob(input),
                _ => Vec::new(),
            };
            att.resize(ATTACHMENT_BYTES, input.u8());
            d.extend_from_slice(&att);
        }
        // A packet number near the newest real one (or anything).
        let real = self
            .c2s_history
            .iter()
            .chain(self.s2c_history.iter())
            .rev()
            .find_map(|d| open_pn(d))
            .unwrap_or(0);
        let pn = match (flags >> 6) % 4 {
            0 => real.wrapping_add(input.u8() as u64),
            1 => real.wrapping_sub(input.u8() as u64),
            2 => u64::MAX - input.u8() as u64,
            _ => u64::from_le_bytes([
                input.u8(),
                input.u8(),
                input.u8(),
                input.u8(),
                input.u8(),
                input.u8(),
                input.u8(),
                input.u8(),
            ]),
        };
        d.extend_from_slice(&pn.to_le_bytes());
        let len = input.u8() as usize * 4 % 1400;
        let body = input.bytes(len);
        d.extend_from_slice(body);
        d.resize(d.len() + len - body.len(), 0);
        d.extend_from_slice(input.bytes(16));
        d
    }

    /// The session keys (client to server, server to client) of the honest client's
    /// session, as the token's holder can derive them (the salt travels in clear).
    fn session_keys(&self) -> Option<([u8; 32], [u8; 32])> {
        let att = self.honest_attachment()?;
        let mut salt = [0u8; SALT_BYTES];
        salt.copy_from_slice(&att[TOKEN_BLOB_BYTES..]);
        let (c2s, s2c) = self.tokens.honest.session_keys();
        Some((
            derive_session_key(&c2s, &salt),
            derive_session_key(&s2c, &salt),
        ))
    }

    /// The latest path challenge the server sent anywhere, opened with the server's key.
    fn latest_challenge(&self, s2c_key: &[u8; 32]) -> Option<[u8; PATH_TOKEN_LEN]> {
        self.captured
            .iter()
            .chain(self.s2c_history.iter())
            .rev()
            .filter_map(|d| open_datagram(self.suite, s2c_key, d))
            .find_map(|(_, p)| {
                (p.len() >= 6 + PATH_TOKEN_LEN && p[0] == 2 && p[5] == UNRELIABLE_PATH_CHALLENGE)
                    .then(|| {
                        let mut c = [0u8; PATH_TOKEN_LEN];
                        c.copy_from_slice(&p[6..6 + PATH_TOKEN_LEN]);
                        c
                    })
            })
    }

    /// A datagram sealed with the session's real client-to-server key (the token holder's
    /// forgery): crafted KCP segments, a path response, or raw bytes; with or without the
    /// attachment. `None` before the honest client drew its salt.
    fn sealed_with_keys(&self, input: &mut Input<'_>) -> Option<Vec<u8>> {
        let (c2s, s2c) = self.session_keys()?;
        let flags = input.u8();
        let cookie = self.latest_cookie();
        let c = cookie.to_le_bytes();
        let plain = match flags % 3 {
            0 => crafted(cookie, input),
            1 => {
                let mut p = vec![2, c[0], c[1], c[2], c[3], UNRELIABLE_PATH_RESPONSE];
                match self.latest_challenge(&s2c) {
                    Some(ch) if flags & 8 == 0 => p.extend_from_slice(&ch),
                    _ => p.extend_from_slice(input.bytes(PATH_TOKEN_LEN)),
                }
                p
            }
            _ => {
                let mut p = vec![1 + (flags >> 7), c[0], c[1], c[2], c[3]];
                let n = input.u8() as usize;
                p.extend_from_slice(input.bytes(n));
                p
            }
        };
        let real = self
            .c2s_history
            .iter()
            .rev()
            .find_map(|d| open_pn(d))
            .unwrap_or(0);
        let pn = real.wrapping_add(1 + input.u8() as u64);
        let mut d = seal_datagram(self.suite, &c2s, pn, &plain)?;
        if flags & 0x10 != 0 {
            // With the attachment: a proof of address.
            let att = self.honest_attachment()?;
            d[0] |= 0x40;
            d.splice(5..5, att);
        }
        Some(d)
    }

    fn op(&mut self, input: &mut Input<'_>) {
        let code = input.u8();
        let to_server = code & 0x80 != 0;
        match code & 0x1f {
            0..=3 => {
                if to_server {
                    self.deliver_to_server(None);
                } else {
                    self.deliver_to_client();
                }
            }
            4 => {
                let n = self.c2s.len() + self.s2c.len();
                for _ in 0..n {
                    self.deliver_to_server(None);
                    self.deliver_to_client();
                }
            }
            5 => {
                if to_server {
                    self.c2s.pop_front();
                } else {
                    self.s2c.pop_front();
                }
            }
            6 => {
                if to_server {
                    if let Some(d) = self.c2s.front().cloned() {
                        self.c2s.push_back(d);
                    }
                } else if let Some(d) = self.s2c.front().cloned() {
                    self.s2c.push_back(d);
                }
            }
            7 => {
                if to_server && self.c2s.len() >= 2 {
                    self.c2s.swap(0, 1);
                } else if self.s2c.len() >= 2 {
                    self.s2c.swap(0, 1);
                }
            }
            8 => {
                // Replay a real datagram of this direction, maybe from another address.
                let (i, from) = (input.u8() as usize, input.u8());
                if to_server {
                    if !self.c2s_history.is_empty() {
                        let d = self.c2s_history[i % self.c2s_history.len()].clone();
                        let from = self.attacker(from);
                        self.honest_came_from(from);
                        self.server_receive(from, &d);
                    }
                } else if !self.s2c_history.is_empty() {
                    let d = self.s2c_history[i % self.s2c_history.len()].clone();
                    self.client_receive(&d);
                }
            }
            9 => {
                // Mutate the next datagram of this direction (the seal must catch it).
                let (pos, value, kind) = (input.u16() as usize, input.u8(), input.u8());
                let d = if to_server {
                    self.c2s.front_mut().map(|d| &mut d.data)
                } else {
                    self.s2c.front_mut()
                };
                if let Some(d) = d {
                    mutate(d, pos, value, kind);
                }
            }
            10 => {
                // Raw bytes from an attacker address (or the server's, to the client).
                let from = input.u8();
                let len = input.u8() as usize * 4 + (input.u8() as usize & 3);
                let d = input.bytes(len).to_vec();
                if to_server {
                    let from = self.attacker(from);
                    self.server_receive(from, &d);
                } else {
                    self.client_receive(&d);
                }
            }
            11 => {
                let from = self.attacker(input.u8());
                let d = self.hello(input);
                self.server_receive(from, &d);
            }
            12 => {
                let from = self.attacker(input.u8());
                let d = self.sealed_without_keys(input);
                if to_server {
                    self.server_receive(from, &d);
                } else {
                    self.client_receive(&d);
                }
            }
            13 => {
                // The token's holder seals with the real keys: everything may change.
                let from = self.attacker(input.u8());
                if let Some(d) = self.sealed_with_keys(input) {
                    self.key_holder = true;
                    self.forged();
                    if !self.may_connect.contains(&from) {
                        self.may_connect.push(from);
                    }
                    self.server_receive(from, &d);
                }
            }
            14 => {
                // A NAT (or an on-path attacker) rewrites the source of the next datagram.
                let from = self.attacker(input.u8());
                self.deliver_to_server(Some(from));
            }
            15 => {
                // The honest client's NAT rebinds: its datagrams leave from the other address.
                self.client_at = 1 - self.client_at;
                let from = self.client_addr();
                for d in self.c2s.iter_mut() {
                    d.from = from;
                }
            }
            16 => {
                // Relay to the client what the server sent to an attacker address.
                let i = input.u8() as usize;
                if !self.captured.is_empty() {
                    let d = self.captured[i % self.captured.len()].clone();
                    self.client_receive(&d);
                }
            }
            17 => self.run_other((code >> 5) as usize & 1),
            18 => {
                // A path response without the keys, from anywhere: unsealed, or sealed with
                // garbage.
                let from = self.attacker(input.u8());
                let c = self.latest_cookie().to_le_bytes();
                let sealed = input.bool();
                let mut d = vec![if sealed { 0x82 } else { 2 }, c[0], c[1], c[2], c[3]];
                if sealed {
                    d.extend_from_slice(&input.u32().to_le_bytes());
                    d.extend_from_slice(&[0; 4]);
                }
                d.push(UNRELIABLE_PATH_RESPONSE);
                d.extend_from_slice(input.bytes(PATH_TOKEN_LEN + if sealed { 16 } else { 0 }));
                self.server_receive(from, &d);
            }
            19 | 20 => self.now_ms += input.u8() as u64,
            21 => self.now_ms += input.u16() as u64 * 4,
            22 => self.tick(to_server),
            23 | 24 => {
                let channel = if code & 0x20 != 0 {
                    Channel::Unreliable
                } else {
                    Channel::Reliable
                };
                self.send(!to_server, channel, input.u16());
            }
            25 => {
                let graceful = code & 0x20 != 0;
                let close = |e: &mut Endpoint, id, now, out: &mut Outbox| {
                    let _ = if graceful {
                        e.disconnect_graceful(now, id, out)
                    } else {
                        e.disconnect(now, id, out)
                    };
                };
                if to_server {
                    if let Some(id) = self.current {
                        self.with_server(|e, now, out| close(e, id, now, out));
                    }
                } else {
                    let id = self.client.id;
                    self.with_client(|e, now, out| close(e, id, now, out));
                }
            }
            26 => {
                // Tamper with the server's plain stateless reply on its way to the client:
                // append crafted segments (its own cookie). The reply is not sealed, but
                // nothing appended may reach the client's stream (not a forgery to excuse).
                if let Some(d) = self.s2c.front_mut().filter(|d| d.len() >= 5 && d[0] == 1) {
                    let cookie = u32::from_le_bytes([d[1], d[2], d[3], d[4]]);
                    let extra = crafted(cookie, input);
                    d.extend_from_slice(&extra[5..]);
                }
            }
            _ => self.step(),
        }
        self.check();
    }

    fn both_connected(&self) -> bool {
        self.client.endpoint.is_connected(self.client.id)
            && self.current.is_some_and(|id| self.server.is_connected(id))
    }

    fn retransmits(&self) -> u64 {
        let c = self
            .client
            .endpoint
            .connection_stats(self.client.id)
            .map_or(0, |s| s.retransmits);
        let s = self
            .current
            .and_then(|id| self.server.connection_stats(id))
            .map_or(0, |s| s.retransmits);
        c + s
    }

    /// An honest network until both directions delivered what was sent (or the connection
    /// ended), then the completeness check, close, and the end-of-stream checks.
    fn finish(mut self) {
        let start = self.now_ms;
        let horizon = if self.c2s_delivery.forged {
            60_000
        } else {
            HORIZON_MS
        };
        let mut settled = false;
        for _ in 0..4_000 {
            let up = self.both_connected();
            let done = self.c2s_delivery.received == self.c2s_delivery.sent
                && self.s2c_delivery.received == self.s2c_delivery.sent;
            let client = self.client.endpoint.state(self.client.id);
            let server = self.current.and_then(|id| self.server.state(id));
            let closing = client == Some(ConnectionState::Disconnecting)
                || server == Some(ConnectionState::Disconnecting);
            let connecting = client == Some(ConnectionState::Connecting);
            if (!up && !closing && !connecting) || (up && done) || self.now_ms - start > horizon {
                settled = true;
                break;
            }
            self.step();
            self.check();
            let next = [
                self.client.endpoint.poll_timeout(),
                self.server.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .map(|at| at.as_millis() as u64)
            .min()
            .unwrap_or(u64::MAX);
            let wait = next.saturating_sub(self.now_ms).min(1_000);
            self.now_ms += wait.saturating_sub(10);
        }
        if settled && self.both_connected() && !self.readmitted && self.retransmits() <= 4 {
            for (name, d) in [
                ("client -> server", &self.c2s_delivery),
                ("server -> client", &self.s2c_delivery),
            ] {
                if !d.forged {
                    assert_eq!(
                        d.received,
                        d.sent,
                        "{name}: both ends connected after {} s of an honest network, but \
                         not every reliable message arrived",
                        (self.now_ms - start) / 1000
                    );
                }
            }
        }
        self.with_server(|e, now, out| e.close_all(now, out));
        let id = self.client.id;
        self.with_client(|e, now, out| {
            let _ = e.disconnect(now, id, out);
        });
        self.client.stream.finish();
        let now = self.now();
        for mut t in std::mem::take(&mut self.others).into_iter().flatten() {
            let _ = t.endpoint.disconnect(now, t.id, &mut self.outbox);
            while let Some(e) = t.endpoint.poll_event() {
                t.stream.on_event(&e.to_owned_event());
            }
            t.stream.finish();
        }
        for (_, s) in &self.streams {
            s.finish();
        }
    }
}

fn push_history(h: &mut VecDeque<Vec<u8>>, d: &[u8]) {
    if h.len() == HISTORY {
        h.pop_front();
    }
    h.push_back(d.to_vec());
}

/// The packet number of a sealed datagram (read in clear), if `d` is one.
fn open_pn(d: &[u8]) -> Option<u64> {
    let first = *d.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let at = if first & 0x40 != 0 {
        5 + ATTACHMENT_BYTES
    } else {
        5
    };
    let b = d.get(at..at + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// A plain reliable datagram of one or two crafted segments carrying `cookie`.
fn crafted(cookie: u32, input: &mut Input<'_>) -> Vec<u8> {
    let mut d = vec![Channel::Reliable.as_u8()];
    d.extend_from_slice(&cookie.to_le_bytes());
    for _ in 0..1 + (input.u8() & 1) {
        let flags = input.u8();
        let cmd = [
            Command::Push,
            Command::Ack,
            Command::WindowAsk,
            Command::WindowTell,
        ][(flags & 3) as usize];
        let small = |v: u32| if flags & 0x80 != 0 { v } else { v % 300 };
        let len = (input.u8() as u32 * 8) % 1000;
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
        d.push(1 + (flags >> 4) % 5);
        d.extend((1..len).map(|i| fill.wrapping_add(i as u8)));
    }
    d
}

/// Changes `d` at `pos`: flip a bit, set a byte, insert, remove, truncate.
fn mutate(d: &mut Vec<u8>, pos: usize, value: u8, kind: u8) {
    if d.is_empty() {
        d.push(value);
        return;
    }
    let i = pos % d.len();
    match kind % 5 {
        0 => d[i] ^= 1 << (value % 8),
        1 => d[i] = value,
        2 => d.insert(i, value),
        3 => {
            d.remove(i);
        }
        _ => d.truncate(i),
    }
}

/// One fuzz case of secure sessions: see the module docs (what is driven, what is checked).
/// `KCPNET_FUZZ_TRACE=1` prints each operation.
pub fn secure_session(input: &[u8]) {
    let trace = std::env::var_os("KCPNET_FUZZ_TRACE").is_some();
    let mut input = Input::new(input);
    let mut session = Session::new(&mut input);
    if trace {
        eprintln!(
            "mode {:?}, config {:?}, start {} ms",
            session.mode, session.config, session.now_ms
        );
    }
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let code = input.clone().u8();
        session.op(&mut input);
        if trace {
            eprintln!(
                "op {code:#04x} (kind {}) at {} ms: client {:?}, server {:?} ({} connections), \
                 c2s {} {:?}, s2c {} {:?}",
                code & 0x1f,
                session.now_ms,
                session.client.endpoint.state(session.client.id),
                session.current.and_then(|id| session.server.state(id)),
                session.server.connection_count(),
                session.c2s.len(),
                session.c2s_delivery,
                session.s2c.len(),
                session.s2c_delivery,
            );
        }
    }
    session.finish();
}
