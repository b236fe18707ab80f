//! The server's stateless handshake: cookies derived from the client's endpoint, and the
//! reply to a Hello computed from that datagram alone (SYN cookies, QUIC's stateless Retry).
//!
//! * A valid Hello from an unknown endpoint gets [`hello_reply`]: our Hello and an ACK of the
//!   client's sn 0, carrying `cookie = SipHash-2-4(key, endpoint ‖ epoch)` (low 32 bits, never
//!   0), where `key` is 128 bits from the OS CSPRNG drawn when the server starts and `epoch`
//!   is the server clock in units of [`COOKIE_EPOCH_MS`]. Nothing is stored.
//! * A datagram from an unknown endpoint whose cookie equals the cookie of this epoch or the
//!   previous one ([`CookieKey::verify`]) proves that the sender receives at that endpoint:
//!   only then is a connection created ([`super::Connection::new_server_verified`]).
//! * The client's side: on our Hello it sends its proof of address, the ACK of that Hello and
//!   a reliable Ping that KCP retransmits until acknowledged ([`is_handshake_reply`] admits
//!   both). Against a kcpnet server ([`announces_block`]) it reports `Connected` only once
//!   a datagram shows that the connection exists ([`proves_admission`]).
//!
//! A spoofer who does not receive at the address it claims never learns the cookie (31 bits
//! of a keyed PRF of the address): it can make the server send one 54-byte reply per 30-byte
//! Hello to the victim (1.8×; 63 bytes per 39-byte Hello offering extensions, 1.6×), and it
//! can fill nothing.
//!
//! **Extensions.** The set the server accepts from a Hello's offer (`docs/PROTOCOL.md`,
//! "Extensions") is computed from that Hello alone and bound into the cookie:
//! `cookie = (low 32 bits of SipHash | 0x8000_0000) XOR accepted`. The datagram that later
//! admits the client carries only the cookie, so [`CookieKey::verify_ext`] recovers the
//! accepted set from it: `cookie XOR (SipHash | 0x8000_0000)` must be a set of extensions
//! this version supports. Nothing is stored in between.

use std::net::SocketAddr;

use super::extensions::{
    hello_block, parse_hello_block, Extensions, BLOCK_LEN, MAGIC, OPTION_TOKEN,
};
use crate::wire::datagram::{Channel, Datagram, ReliableHeader, DATAGRAM_HEADER_LEN};
use crate::wire::segment::{segments, Command, SegmentHeader, SEGMENT_HEADER_LEN};

/// Cookies change every this many milliseconds of server time; a cookie of the current or
/// the previous epoch verifies, so a handshake has between 30 and 60 s to complete.
pub(crate) const COOKIE_EPOCH_MS: u64 = 30_000;

/// The stateless reply to a bare Hello: header, one ACK, one PUSH carrying the Hello byte
/// (54 bytes, as a kcp2k server's).
pub(crate) const BARE_REPLY_LEN: usize = DATAGRAM_HEADER_LEN + 2 * SEGMENT_HEADER_LEN + 1;

/// The largest stateless reply: [`BARE_REPLY_LEN`] plus the extension block (63 bytes).
pub(crate) const HELLO_REPLY_LEN: usize = BARE_REPLY_LEN + BLOCK_LEN;

/// The bit of the cookie's hash that is always set: it keeps `hash XOR accepted` non-zero
/// (0 means "no cookie yet" on the wire), so extension bits stay below it.
const COOKIE_HIGH_BIT: u32 = 0x8000_0000;
const _: () = assert!(Extensions::KNOWN.bits() < COOKIE_HIGH_BIT);

/// The server's secret for deriving cookies.
#[derive(Clone)]
pub(crate) struct CookieKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)") // never print the secret
    }
}

impl CookieKey {
    /// A key from 16 random bytes.
    pub(crate) fn new(k0: u64, k1: u64) -> CookieKey {
        CookieKey { k0, k1 }
    }

    /// The keyed hash of `addr` and `epoch`, with its top bit set.
    fn base(&self, addr: &SocketAddr, epoch: u64) -> u32 {
        let mut msg = [0u8; 1 + 16 + 2 + 4 + 8];
        let n = encode_endpoint(addr, &mut msg);
        msg[n..n + 8].copy_from_slice(&epoch.to_le_bytes());
        siphash24(self.k0, self.k1, &msg[..n + 8]) as u32 | COOKIE_HIGH_BIT
    }

    /// The cookie for `addr` in `epoch` when no extension is accepted: never 0 (0 means "no
    /// cookie yet" on the wire).
    #[cfg(test)] // the extension-less form, for the unit tests
    pub(crate) fn cookie(&self, addr: &SocketAddr, epoch: u64) -> u32 {
        self.cookie_with(addr, epoch, Extensions::NONE)
    }

    /// The cookie for `addr` in `epoch` that binds the `accepted` extensions: never 0.
    pub(crate) fn cookie_with(&self, addr: &SocketAddr, epoch: u64, accepted: Extensions) -> u32 {
        self.base(addr, epoch) ^ accepted.bits()
    }

    /// The cookie handed out now (server clock `now_ms`) when no extension is accepted.
    #[cfg(test)] // the extension-less form, for the unit tests
    pub(crate) fn current(&self, addr: &SocketAddr, now_ms: u64) -> u32 {
        self.current_with(addr, now_ms, Extensions::NONE)
    }

    /// The cookie handed out now for a Hello whose offer gave `accepted`.
    pub(crate) fn current_with(&self, addr: &SocketAddr, now_ms: u64, accepted: Extensions) -> u32 {
        self.cookie_with(addr, now_ms / COOKIE_EPOCH_MS, accepted)
    }

    /// Whether `cookie` is one handed out to `addr` in this epoch or the previous one.
    #[cfg(test)] // the extension-less form, for the unit tests
    pub(crate) fn verify(&self, addr: &SocketAddr, cookie: u32, now_ms: u64) -> bool {
        self.verify_ext(addr, cookie, now_ms).is_some()
    }

    /// The extensions bound into `cookie` if it is one handed out to `addr` in this epoch or
    /// the previous one (two hashes, whatever the number of extensions), `None` otherwise.
    pub(crate) fn verify_ext(
        &self,
        addr: &SocketAddr,
        cookie: u32,
        now_ms: u64,
    ) -> Option<Extensions> {
        if cookie == 0 {
            return None;
        }
        let epoch = now_ms / COOKIE_EPOCH_MS;
        let check = |epoch: u64| {
            let x = cookie ^ self.base(addr, epoch);
            (x & !Extensions::KNOWN.bits() == 0).then(|| Extensions::from_bits_truncate(x))
        };
        check(epoch).or_else(|| if epoch > 0 { check(epoch - 1) } else { None })
    }
}

/// Writes the endpoint (family tag, address bytes, port, and for IPv6 the scope id) into
/// `out`; returns the length.
fn encode_endpoint(addr: &SocketAddr, out: &mut [u8]) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&a.ip().octets());
            out[5..7].copy_from_slice(&a.port().to_le_bytes());
            7
        }
        SocketAddr::V6(a) => {
            out[0] = 6;
            out[1..17].copy_from_slice(&a.ip().octets());
            out[17..19].copy_from_slice(&a.port().to_le_bytes());
            out[19..23].copy_from_slice(&a.scope_id().to_le_bytes());
            23
        }
    }
}

/// SipHash-2-4 (Aumasson & Bernstein) of `msg` under the key `(k0, k1)`: a keyed PRF, so
/// the cookie of an address cannot be computed without the key.
fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[7] = msg.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Whether `payload` (the KCP part of a reliable datagram carrying a cookie that verifies)
/// is what a client sends right after our stateless Hello reply: valid segments, conv 0,
/// and `una <= 1` in each — the client has received our Hello (sn 0) and nothing else.
/// That is kcp2k's ACK of our Hello, and a kcpnet client's proof of address (the ACK and a
/// reliable Ping, sn 1) and each retransmission of that Ping. A datagram of an older
/// connection from the same endpoint (after a kick, say) has seen more of our segments
/// (at least the Pong to its proof), so it does not resurrect a connection while its cookie
/// still verifies.
pub(crate) fn is_handshake_reply(payload: &[u8]) -> bool {
    let mut any = false;
    for seg in segments(payload) {
        match seg {
            Ok((h, _)) if h.conv == 0 && h.una <= 1 => any = true,
            _ => return false,
        }
    }
    any
}

/// Whether `payload` (the KCP part of a reliable datagram from our server, carrying its
/// cookie, that KCP accepted) could only have been sent by a server connection that
/// admitted us: it holds a segment the stateless reply never carries. That reply is an
/// `ACK sn=0` and a `PUSH sn=0` with `una = 1`, and a server that stores nothing never sends
/// anything else; an admitted connection has received our proof of address (sn ≥ 1), so it
/// acknowledges sn ≥ 1, or sends `una ≥ 2`, or sends segments of its own beyond its Hello
/// (a Pong, data, a window probe). A retransmission of its Hello before it saw our proof
/// looks like the stateless reply and proves nothing.
pub(crate) fn proves_admission(payload: &[u8]) -> bool {
    segments(payload).any(|seg| match seg {
        Ok((h, _)) => !(h.sn == 0 && h.una <= 1 && matches!(h.cmd, Command::Ack | Command::Push)),
        Err(_) => false,
    })
}

/// Whether a server's Hello payload (the bytes after its header byte) carries the kcpnet
/// extension block: the server is kcpnet with `kcpnet_extensions` on, so it admits us only
/// on our proof of address (stateless handshake). A bare Hello comes from a kcp2k server
/// (which admitted us on our Hello) or from a kcpnet server with extensions off: the two
/// cannot be told apart.
pub(crate) fn announces_block(hello_payload: &[u8]) -> bool {
    matches!(hello_payload, [m0, m1, m2, m3, version, _, _, _, _, ..]
        if [*m0, *m1, *m2, *m3] == MAGIC && *version >= 1)
}

/// What the stateless reply needs from a client's Hello datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientHello<'a> {
    /// The `ts` of its Hello segment (our ACK echoes it).
    pub ts: u32,
    /// The extensions its Hello payload offers ([`Extensions::NONE`] for a bare Hello).
    pub offered: Extensions,
    /// The connect token blob of its extension block's options, if any.
    pub token: Option<&'a [u8]>,
}

/// Reads a Hello datagram (see [`crate::wire::datagram::is_hello_datagram`]): `None` if it
/// is not one.
pub(crate) fn parse_client_hello(hello: &[u8]) -> Option<ClientHello<'_>> {
    let d = Datagram::parse(hello).ok()?;
    if d.channel != Channel::Reliable {
        return None;
    }
    let mut found = None;
    for seg in segments(d.payload) {
        let (h, payload) = seg.ok()?;
        if h.cmd == Command::Push
            && h.conv == 0
            && h.sn == 0
            && h.frg == 0
            && payload.first() == Some(&ReliableHeader::Hello.as_u8())
        {
            found = Some(ClientHello {
                ts: h.ts,
                offered: parse_hello_block(&payload[1..]),
                token: super::extensions::hello_option(&payload[1..], OPTION_TOKEN),
            });
        }
    }
    found
}

/// The reliable Hello message a server sends when it accepted `accepted`: the bare Hello
/// byte, or the byte and the extension block. Returns the buffer and the message length.
pub(crate) fn server_hello(accepted: Extensions) -> ([u8; 1 + BLOCK_LEN], usize) {
    let mut m = [0u8; 1 + BLOCK_LEN];
    m[0] = ReliableHeader::Hello.as_u8();
    if accepted.is_empty() {
        return (m, 1);
    }
    m[1..].copy_from_slice(&hello_block(accepted));
    (m, 1 + BLOCK_LEN)
}

/// The reply to a client Hello without extensions (a bare Hello); see [`write_hello_reply`].
/// Returns the reply's length in `out`, or `None` if `hello` is not a Hello datagram.
#[cfg(test)] // the extension-less form, for the unit tests
pub(crate) fn hello_reply(
    hello: &[u8],
    cookie: u32,
    wnd: u16,
    now: u32,
    out: &mut [u8; HELLO_REPLY_LEN],
) -> Option<usize> {
    let h = parse_client_hello(hello)?;
    Some(write_hello_reply(
        h.ts,
        cookie,
        Extensions::NONE,
        wnd,
        now,
        out,
    ))
}

/// The reply to a client Hello, computed from the Hello datagram alone: `[1][cookie]`, an
/// ACK of the client's sn 0 (echoing its `ts`), and our `PUSH sn=0 [Hello]` — the same
/// segments a kcp2k server sends (capture #001), 54 bytes; with `accepted` extensions the
/// Hello carries the extension block (63 bytes). `cookie` must bind `accepted`
/// ([`CookieKey::current_with`]); `wnd` is our receive window, `now` our KCP clock. Returns
/// the reply's length in `out`.
pub(crate) fn write_hello_reply(
    client_ts: u32,
    cookie: u32,
    accepted: Extensions,
    wnd: u16,
    now: u32,
    out: &mut [u8; HELLO_REPLY_LEN],
) -> usize {
    let (message, len) = server_hello(accepted);
    out[0] = Channel::Reliable.as_u8();
    out[1..DATAGRAM_HEADER_LEN].copy_from_slice(&cookie.to_le_bytes());
    let ack = SegmentHeader {
        conv: 0,
        cmd: Command::Ack,
        frg: 0,
        wnd,
        ts: client_ts,
        sn: 0,
        una: 1,
        len: 0,
    };
    let push = SegmentHeader {
        cmd: Command::Push,
        ts: now,
        len: len as u32,
        ..ack
    };
    let push_at = DATAGRAM_HEADER_LEN + SEGMENT_HEADER_LEN;
    let data_at = push_at + SEGMENT_HEADER_LEN;
    out[DATAGRAM_HEADER_LEN..push_at].copy_from_slice(&ack.to_bytes());
    out[push_at..data_at].copy_from_slice(&push.to_bytes());
    out[data_at..data_at + len].copy_from_slice(&message[..len]);
    data_at + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::datagram::is_hello_datagram;

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The reference implementation's test vector: key 00..0f, message 00..0e (15 bytes).
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(k0, k1, &msg), 0xa129_ca61_49be_45e5);
        // And the empty message (first entry of the reference vectors).
        assert_eq!(siphash24(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    fn cookies_depend_on_key_endpoint_and_epoch() {
        let key = CookieKey::new(1, 2);
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:5001".parse().unwrap();
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        let c = key.cookie(&a, 7);
        assert_ne!(c, 0);
        assert_ne!(c, key.cookie(&b, 7));
        assert_ne!(c, key.cookie(&a, 8));
        assert_ne!(c, key.cookie(&v6, 7));
        assert_ne!(c, CookieKey::new(1, 3).cookie(&a, 7));
        assert_eq!(c, key.cookie(&a, 7));
    }

    #[test]
    fn verify_accepts_this_and_the_previous_epoch_only() {
        let key = CookieKey::new(0xdead, 0xbeef);
        let a: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let t = 10 * COOKIE_EPOCH_MS + 5;
        let cookie = key.current(&a, t);
        assert!(key.verify(&a, cookie, t));
        assert!(key.verify(&a, cookie, t + COOKIE_EPOCH_MS)); // straddles a rotation
        assert!(!key.verify(&a, cookie, t + 2 * COOKIE_EPOCH_MS)); // expired
        assert!(!key.verify(&a, cookie, t - COOKIE_EPOCH_MS)); // not yet valid
        assert!(!key.verify(&"192.0.2.7:40001".parse().unwrap(), cookie, t));
        assert!(!key.verify(&a, 0, t));
        // At epoch 0 there is no previous epoch to fall back to.
        let c0 = key.current(&a, 0);
        assert!(key.verify(&a, c0, 1));
    }

    #[test]
    fn only_a_fresh_handshake_reply_admits() {
        let seg = |cmd, sn, una| {
            SegmentHeader {
                conv: 0,
                cmd,
                frg: 0,
                wnd: 128,
                ts: 1,
                sn,
                una,
                len: 0,
            }
            .to_bytes()
        };
        // The kcp2k client's answer (capture #002): ACK sn 0, una 1.
        assert!(is_handshake_reply(&seg(Command::Ack, 0, 1)));
        // A later datagram of an old connection: una 57.
        assert!(!is_handshake_reply(&seg(Command::Ack, 40, 57)));
        let mut two = seg(Command::Ack, 0, 1).to_vec();
        two.extend_from_slice(&seg(Command::Ack, 3, 9));
        assert!(!is_handshake_reply(&two));
        assert!(!is_handshake_reply(&[]));
        assert!(!is_handshake_reply(&[1, 2, 3]));
    }

    fn datagram_payload(segs: &[(Command, u32, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(cmd, sn, una) in segs {
            let len = u32::from(cmd == Command::Push);
            let h = SegmentHeader {
                conv: 0,
                cmd,
                frg: 0,
                wnd: 128,
                ts: 1,
                sn,
                una,
                len,
            };
            out.extend_from_slice(&h.to_bytes());
            if len == 1 {
                out.push(ReliableHeader::Ping.as_u8());
            }
        }
        out
    }

    #[test]
    fn the_proof_of_address_and_its_retransmissions_admit() {
        // The proof: ACK of our Hello, then the client's Ping (sn 1), both una 1.
        let proof = datagram_payload(&[(Command::Ack, 0, 1), (Command::Push, 1, 1)]);
        assert!(is_handshake_reply(&proof));
        // Its retransmission, alone or with a later connecting Ping.
        assert!(is_handshake_reply(&datagram_payload(&[(
            Command::Push,
            1,
            1
        )])));
        assert!(is_handshake_reply(&datagram_payload(&[
            (Command::Push, 1, 1),
            (Command::Push, 2, 1)
        ])));
        // Once the client got our Pong (sn 1): an older connection's datagram.
        assert!(!is_handshake_reply(&datagram_payload(&[(
            Command::Push,
            2,
            2
        )])));
    }

    #[test]
    fn only_a_connection_proves_admission() {
        // The stateless reply, and a retransmission of our Hello before the proof arrived.
        let reply = datagram_payload(&[(Command::Ack, 0, 1), (Command::Push, 0, 1)]);
        assert!(!proves_admission(&reply));
        assert!(!proves_admission(&datagram_payload(&[(
            Command::Push,
            0,
            1
        )])));
        assert!(!proves_admission(&[]));
        // The ACK of the proof, the Pong, una past the proof, a window probe.
        assert!(proves_admission(&datagram_payload(&[(Command::Ack, 1, 1)])));
        assert!(proves_admission(&datagram_payload(&[
            (Command::Ack, 1, 2),
            (Command::Push, 1, 2)
        ])));
        assert!(proves_admission(&datagram_payload(&[(
            Command::Push,
            0,
            2
        )])));
        assert!(proves_admission(&datagram_payload(&[(
            Command::WindowAsk,
            0,
            1
        )])));
    }

    #[test]
    fn only_a_hello_with_the_block_announces_kcpnet() {
        assert!(announces_block(&hello_block(Extensions::ALL)));
        assert!(announces_block(&hello_block(Extensions::NONE)));
        let mut later = hello_block(Extensions::HALF_CLOSE).to_vec();
        later.extend_from_slice(&[9, 1, 0]); // a later version's options
        assert!(announces_block(&later));
        assert!(!announces_block(&[]));
        assert!(!announces_block(&hello_block(Extensions::ALL)[..8]));
        let mut v0 = hello_block(Extensions::ALL);
        v0[4] = 0;
        assert!(!announces_block(&v0));
        let mut other = hello_block(Extensions::ALL);
        other[0] = b'X';
        assert!(!announces_block(&other));
    }

    #[test]
    fn reply_is_the_kcp2k_servers_54_bytes() {
        // The real client's Hello of the capture (#000): cookie 0, PUSH sn 0 ts 0x1c (28).
        let mut hello = vec![1, 0, 0, 0, 0];
        let seg = SegmentHeader {
            conv: 0,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts: 28,
            sn: 0,
            una: 0,
            len: 1,
        };
        hello.extend_from_slice(&seg.to_bytes());
        hello.push(1);
        assert!(is_hello_datagram(&hello));
        let mut out = [0u8; HELLO_REPLY_LEN];
        let n = hello_reply(&hello, 0x0102_0304, 128, 500, &mut out).unwrap();
        assert_eq!(n, 54);
        let d = Datagram::parse(&out[..n]).unwrap();
        assert_eq!(d.cookie, 0x0102_0304);
        let segs: Vec<_> = segments(d.payload).map(|s| s.unwrap()).collect();
        assert_eq!(segs.len(), 2);
        let (ack, _) = segs[0];
        assert_eq!(
            (ack.cmd, ack.sn, ack.ts, ack.una, ack.wnd),
            (Command::Ack, 0, 28, 1, 128)
        );
        let (push, payload) = segs[1];
        assert_eq!(
            (push.cmd, push.sn, push.frg, push.ts, push.una),
            (Command::Push, 0, 0, 500, 1)
        );
        assert_eq!(payload, &[1]);
        // Not a Hello: no reply.
        assert_eq!(hello_reply(&hello[..10], 1, 128, 0, &mut out), None);
        let mut data = hello.clone();
        *data.last_mut().unwrap() = 3;
        assert_eq!(hello_reply(&data, 1, 128, 0, &mut out), None);
    }

    fn hello_with(block: &[u8]) -> Vec<u8> {
        let mut hello = vec![1, 0, 0, 0, 0];
        let seg = SegmentHeader {
            conv: 0,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts: 28,
            sn: 0,
            una: 0,
            len: 1 + block.len() as u32,
        };
        hello.extend_from_slice(&seg.to_bytes());
        hello.push(1);
        hello.extend_from_slice(block);
        hello
    }

    #[test]
    fn an_offer_is_answered_with_the_accepted_set_bound_into_the_cookie() {
        let key = CookieKey::new(3, 4);
        let a: SocketAddr = "192.0.2.9:4000".parse().unwrap();
        let t = 5 * COOKIE_EPOCH_MS;
        let hello = hello_with(&hello_block(Extensions::ALL));
        assert_eq!(hello.len(), 39);
        let h = parse_client_hello(&hello).unwrap();
        assert_eq!(h.offered, Extensions::ALL);
        let cookie = key.current_with(&a, t, h.offered);
        let mut out = [0u8; HELLO_REPLY_LEN];
        let n = write_hello_reply(h.ts, cookie, h.offered, 128, 9, &mut out);
        assert_eq!(n, 63);
        assert!(n <= 3 * hello.len());
        let d = Datagram::parse(&out[..n]).unwrap();
        let segs: Vec<_> = segments(d.payload).map(|s| s.unwrap()).collect();
        assert_eq!(segs[1].1[0], 1);
        assert_eq!(parse_hello_block(&segs[1].1[1..]), Extensions::ALL);
        // The admitting datagram carries only the cookie: the set comes back from it.
        assert_eq!(key.verify_ext(&a, cookie, t), Some(Extensions::ALL));
        assert_eq!(
            key.verify_ext(&a, cookie, t + COOKIE_EPOCH_MS),
            Some(Extensions::ALL)
        );
        let plain = key.current(&a, t);
        assert_eq!(key.verify_ext(&a, plain, t), Some(Extensions::NONE));
        assert_ne!(plain, cookie);
        // A bit this version does not support, or another endpoint: refused.
        assert_eq!(key.verify_ext(&a, plain ^ 0x100, t), None);
        assert_eq!(
            key.verify_ext(&"192.0.2.9:4001".parse().unwrap(), cookie, t),
            None
        );
        // A partial offer gives a partial set; a bare Hello gives the 54-byte kcp2k reply.
        let partial = hello_with(&hello_block(Extensions::HALF_CLOSE));
        assert_eq!(
            parse_client_hello(&partial).unwrap().offered,
            Extensions::HALF_CLOSE
        );
        let bare = hello_with(&[]);
        assert_eq!(parse_client_hello(&bare).unwrap().offered, Extensions::NONE);
        assert_eq!(
            hello_reply(&bare, plain, 128, 9, &mut out),
            Some(BARE_REPLY_LEN)
        );
    }
}
