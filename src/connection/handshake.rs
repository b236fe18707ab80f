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
//!
//! A spoofer who does not receive at the address it claims never learns the cookie (32 bits
//! of a keyed PRF of the address): it can make the server send one 54-byte reply per 30-byte
//! Hello to the victim (1.8×), and it can fill nothing.

use std::net::SocketAddr;

use crate::wire::datagram::{Channel, Datagram, ReliableHeader, DATAGRAM_HEADER_LEN};
use crate::wire::segment::{segments, Command, SegmentHeader, SEGMENT_HEADER_LEN};

/// Cookies change every this many milliseconds of server time; a cookie of the current or
/// the previous epoch verifies, so a handshake has between 30 and 60 s to complete.
pub(crate) const COOKIE_EPOCH_MS: u64 = 30_000;

/// The largest stateless reply: header, one ACK, one PUSH carrying the Hello byte.
pub(crate) const HELLO_REPLY_LEN: usize = DATAGRAM_HEADER_LEN + 2 * SEGMENT_HEADER_LEN + 1;

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

    /// The cookie for `addr` in `epoch`: never 0 (0 means "no cookie yet" on the wire).
    pub(crate) fn cookie(&self, addr: &SocketAddr, epoch: u64) -> u32 {
        let mut msg = [0u8; 1 + 16 + 2 + 4 + 8];
        let n = encode_endpoint(addr, &mut msg);
        msg[n..n + 8].copy_from_slice(&epoch.to_le_bytes());
        let h = siphash24(self.k0, self.k1, &msg[..n + 8]);
        match h as u32 {
            0 => 1,
            c => c,
        }
    }

    /// The cookie handed out now (server clock `now_ms`).
    pub(crate) fn current(&self, addr: &SocketAddr, now_ms: u64) -> u32 {
        self.cookie(addr, now_ms / COOKIE_EPOCH_MS)
    }

    /// Whether `cookie` is the one of `addr` in this epoch or the previous one.
    pub(crate) fn verify(&self, addr: &SocketAddr, cookie: u32, now_ms: u64) -> bool {
        let epoch = now_ms / COOKIE_EPOCH_MS;
        cookie != 0
            && (self.cookie(addr, epoch) == cookie
                || (epoch > 0 && self.cookie(addr, epoch - 1) == cookie))
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
/// and `una <= 1` in each — the client has received our Hello (sn 0) and nothing else. A
/// datagram of an older connection from the same endpoint (after a kick, say) has seen more
/// of our segments, so it does not resurrect a connection while its cookie still verifies.
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

/// The reply to a client Hello, computed from the Hello datagram alone: `[1][cookie]`, an
/// ACK of the client's sn 0 (echoing its `ts`), and our `PUSH sn=0 [Hello]` — the same
/// segments a kcp2k server sends (capture #001), 54 bytes. `wnd` is our receive window,
/// `now` our KCP clock. Returns the reply's length in `out`, or `None` if `hello` is not a
/// Hello datagram (see [`crate::wire::datagram::is_hello_datagram`]).
pub(crate) fn hello_reply(
    hello: &[u8],
    cookie: u32,
    wnd: u16,
    now: u32,
    out: &mut [u8; HELLO_REPLY_LEN],
) -> Option<usize> {
    let d = Datagram::parse(hello).ok()?;
    if d.channel != Channel::Reliable {
        return None;
    }
    let mut client_ts = None;
    for seg in segments(d.payload) {
        let (h, payload) = seg.ok()?;
        if h.cmd == Command::Push
            && h.conv == 0
            && h.sn == 0
            && h.frg == 0
            && payload.first() == Some(&ReliableHeader::Hello.as_u8())
        {
            client_ts = Some(h.ts);
        }
    }
    let client_ts = client_ts?;
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
        len: 1,
        ..ack
    };
    let (a, rest) = out[DATAGRAM_HEADER_LEN..].split_at_mut(SEGMENT_HEADER_LEN);
    ack.emit(a).ok()?;
    push.emit(rest).ok()?;
    out[HELLO_REPLY_LEN - 1] = ReliableHeader::Hello.as_u8();
    Some(HELLO_REPLY_LEN)
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
}
