//! Sealed datagrams: every datagram of a secure session, after the Hello exchange, is
//! authenticated and encrypted with AES-256-GCM or ChaCha20-Poly1305 (the negotiated
//! [`CipherSuite`], both `ring`'s) under the key of its direction (`docs/PROTOCOL.md`
//! "Secure sessions").
//!
//! ```text
//! 0   1  0x80 | channel (0x81 reliable, 0x82 unreliable); | 0x40 when a token blob follows
//!        the cookie (0xC1, 0xC2: a client's datagrams until the server admitted it)
//! 1   4  cookie, u32 LE (in clear: what a stranger must echo)
//! [5 555 token blob, with 0x40 only]
//! +0  8  packet number, u64 LE, per direction from 0
//! +8  …  ciphertext of the kcp2k payload (what follows the cookie in a plain datagram)
//! end 16 tag (GCM or Poly1305)
//! nonce: packet number u64 LE ++ 4 zero bytes; associated data: channel byte, cookie,
//! packet number (13 bytes; the token blob is authenticated by its own AEAD)
//! ```

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

/// The AEAD that seals a session's datagrams, negotiated in the Hello (the
/// `AES_GCM` extension bit, accepted by the server when its `SecureConfig::cipher` says so).
/// Both are `ring`'s (BoringSSL's assembly, CPU features detected at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherSuite {
    /// AES-256-GCM: the default, 0.2 µs to seal a 1,200-byte datagram (as much to open it)
    /// on x86-64 with AES-NI and CLMUL, where ChaCha20-Poly1305 takes 0.7 µs
    /// (`docs/SECURITY.md`, "Amplification, cost and memory").
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439): for hosts without AES instructions.
    ChaCha20Poly1305,
}

/// One direction's cipher: the expanded key, inline (the session lives in the connection's
/// boxed secure state, whose size `SecureLink::heap_bytes` counts).
#[derive(Clone)]
struct Cipher(LessSafeKey);

impl Cipher {
    fn new(suite: CipherSuite, key: &[u8; 32]) -> Cipher {
        let algorithm = match suite {
            CipherSuite::Aes256Gcm => &AES_256_GCM,
            CipherSuite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        };
        // Both algorithms take exactly 32-byte keys, the only reason `new` can fail.
        let key = UnboundKey::new(algorithm, key).expect("a 32-byte key");
        Cipher(LessSafeKey::new(key))
    }

    /// Encrypts `buf` in place; the tag, or `None` if `buf` is beyond the AEAD's limit
    /// (which no datagram reaches).
    fn seal(&self, nonce: Nonce, aad: &[u8], buf: &mut [u8]) -> Option<Tag> {
        self.0
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
            .ok()
    }

    /// Decrypts `buf` in place; false (and `buf` not the plaintext) if the tag does not verify.
    fn open(&self, nonce: Nonce, aad: &[u8], buf: &mut [u8], tag: Tag) -> bool {
        self.0
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf, 0..)
            .is_ok()
    }
}

use super::token::TOKEN_BLOB_BYTES;

/// Bytes of the salt a client draws for each session.
pub(crate) const SALT_BYTES: usize = 16;
/// What a client's datagram carries after its cookie until the server admitted it: the
/// token blob and the session's salt.
pub(crate) const ATTACHMENT_BYTES: usize = TOKEN_BLOB_BYTES + SALT_BYTES;

/// A session key: the first 32 bytes of XChaCha20's keystream (block 1) under the token's
/// key of that direction, with the nonce `"KNETKDF1" ++ salt`. Every session (every
/// connection attempt, even with the same token from the same address) draws a new salt,
/// so no two sessions share a key.
pub(crate) fn session_key(token_key: &[u8; 32], salt: &[u8; SALT_BYTES]) -> [u8; 32] {
    let mut nonce = [0u8; 24];
    nonce[..8].copy_from_slice(b"KNETKDF1");
    nonce[8..].copy_from_slice(salt);
    let mut out = [0u8; 32];
    let cipher = XChaCha20Poly1305::new(Key::from_slice(token_key));
    // Encrypting zeros yields the keystream; the tag is not needed.
    let _ = cipher.encrypt_in_place_detached(XNonce::from_slice(&nonce), b"", &mut out);
    out
}

/// The flag of a sealed datagram's first byte.
pub(crate) const SEALED: u8 = 0x80;
/// The flag of a sealed datagram that carries a token blob.
pub(crate) const WITH_TOKEN: u8 = 0x40;
/// Bytes of the packet number.
pub(crate) const PN_BYTES: usize = 8;
/// Bytes of the AEAD's tag (GCM or Poly1305).
pub(crate) const TAG_BYTES: usize = 16;
/// What sealing adds to a datagram (without a token blob): the packet number and the tag.
pub const SEAL_OVERHEAD: usize = PN_BYTES + TAG_BYTES;
/// The kcp2k header: channel byte and cookie.
const HEADER: usize = 5;
/// Packet numbers older than the newest by this many or more are refused.
pub(crate) const REPLAY_WINDOW: u64 = 128;

/// Whether a datagram's first byte marks it sealed.
pub(crate) fn is_sealed(first: u8) -> bool {
    first & SEALED != 0
}

/// A sealed datagram's parts, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sealed<'a> {
    /// The plain channel byte (1 or 2).
    pub(crate) channel: u8,
    pub(crate) cookie: u32,
    /// The token blob and the salt, for a datagram with [`WITH_TOKEN`].
    pub(crate) token: Option<&'a [u8]>,
    pub(crate) pn: u64,
    /// Bytes 0 .. the packet number's end, for the associated data (without the blob).
    first: u8,
    body: &'a [u8],
}

impl<'a> Sealed<'a> {
    /// Parses the clear parts; `None` for anything that is not a sealed datagram of this
    /// version (wrong flags, channel not 1 or 2, too short).
    pub(crate) fn parse(data: &'a [u8]) -> Option<Sealed<'a>> {
        let first = *data.first()?;
        let channel = first & !(SEALED | WITH_TOKEN);
        // Channels 1 and 2, and FEC's data (3) and parity (4) shards.
        if first & SEALED == 0 || !(1..=4).contains(&channel) {
            return None;
        }
        let cookie = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?);
        let (token, rest) = if first & WITH_TOKEN != 0 {
            let blob = data.get(HEADER..HEADER + ATTACHMENT_BYTES)?;
            (Some(blob), &data[HEADER + ATTACHMENT_BYTES..])
        } else {
            (None, &data[HEADER..])
        };
        if rest.len() < PN_BYTES + TAG_BYTES {
            return None;
        }
        let pn = u64::from_le_bytes(rest[..PN_BYTES].try_into().ok()?);
        Some(Sealed {
            channel,
            cookie,
            token,
            pn,
            first,
            body: &rest[PN_BYTES..],
        })
    }
}

/// The nonce of packet number `pn`: `pn` u64 LE ++ 4 zero bytes. Unique per key: packet
/// numbers only grow, and every session has its own keys.
fn nonce(pn: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&pn.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(first: u8, cookie: u32, pn: u64) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[0] = first & !WITH_TOKEN;
    a[1..5].copy_from_slice(&cookie.to_le_bytes());
    a[5..].copy_from_slice(&pn.to_le_bytes());
    a
}

/// Which packet numbers arrived: the newest and a bitmap of the [`REPLAY_WINDOW`] before it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplayWindow {
    /// Newest packet number seen, plus one (0: none yet).
    next: u64,
    /// Bit `i`: packet number `next - 1 - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    /// Whether `pn` is new: newer than the newest, or inside the window and not seen.
    pub(crate) fn is_fresh(&self, pn: u64) -> bool {
        if pn >= self.next {
            return true;
        }
        let age = self.next - 1 - pn;
        age < REPLAY_WINDOW && self.seen & (1u128 << age) == 0
    }

    /// Whether `pn` is newer than every packet number seen.
    pub(crate) fn is_newest(&self, pn: u64) -> bool {
        pn >= self.next
    }

    /// Marks `pn` seen (call after it authenticated and only if [`Self::is_fresh`]).
    pub(crate) fn mark(&mut self, pn: u64) {
        if pn >= self.next {
            let shift = pn + 1 - self.next;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.next = pn + 1;
        } else {
            self.seen |= 1u128 << (self.next - 1 - pn);
        }
    }
}

/// Why a sealed datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Its packet number was seen already or is older than the window.
    Replayed,
    /// The tag does not verify: forged, altered, or under another key.
    Forged,
}

/// The keys and counters of one secure session, one per connection.
pub(crate) struct Session {
    send: Cipher,
    next_pn: u64,
    recv: Cipher,
    window: ReplayWindow,
    /// The keys, kept until the suite is settled (a client learns it from the server's
    /// Hello).
    keys: Option<Box<([u8; 32], [u8; 32])>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("next_pn", &self.next_pn)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session that seals with `send_key` and opens with `recv_key`. Its packet numbers
    /// start at a random value below 2⁶², so even a session whose keys were used before (a
    /// replayed proof of address) does not repeat a nonce.
    pub(crate) fn new(suite: CipherSuite, send_key: &[u8; 32], recv_key: &[u8; 32]) -> Session {
        Session {
            send: Cipher::new(suite, send_key),
            next_pn: rand::random::<u64>() >> 2,
            recv: Cipher::new(suite, recv_key),
            window: ReplayWindow::default(),
            keys: None,
        }
    }

    /// A client's session, whose suite the server's Hello will settle
    /// ([`Session::settle`]); until then it would seal with ChaCha20-Poly1305.
    pub(crate) fn unsettled(send_key: &[u8; 32], recv_key: &[u8; 32]) -> Session {
        let mut s = Session::new(CipherSuite::ChaCha20Poly1305, send_key, recv_key);
        s.keys = Some(Box::new((*send_key, *recv_key)));
        s
    }

    /// Settles the suite of an [`Session::unsettled`] session (the keys are then forgotten).
    pub(crate) fn settle(&mut self, suite: CipherSuite) {
        if let Some(k) = self.keys.take() {
            self.send = Cipher::new(suite, &k.0);
            self.recv = Cipher::new(suite, &k.1);
        }
    }

    /// A session that seals and opens with `key`, its first packet number `pn` (for the
    /// public sealing functions and test vectors).
    pub(crate) fn with_pn(suite: CipherSuite, key: &[u8; 32], pn: u64) -> Session {
        let mut s = Session::new(suite, key, key);
        s.next_pn = pn;
        s
    }

    /// Packet numbers received so far.
    pub(crate) fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Seals the plain datagram `head ++ body` (`[channel][cookie][payload]`, `head` at
    /// least 5 bytes) into `out`, with `token` after the cookie if given. Returns false if
    /// the datagram is not a kcp2k datagram (cannot happen for the connection's own).
    pub(crate) fn seal(
        &mut self,
        head: &[u8],
        body: &[u8],
        token: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> bool {
        if head.len() < HEADER || !(1..=4).contains(&head[0]) {
            return false;
        }
        let pn = self.next_pn;
        self.next_pn += 1;
        let mut first = SEALED | head[0];
        if token.is_some() {
            first |= WITH_TOKEN;
        }
        let cookie = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        out.clear();
        out.push(first);
        out.extend_from_slice(&head[1..HEADER]);
        if let Some(t) = token {
            out.extend_from_slice(t);
        }
        out.extend_from_slice(&pn.to_le_bytes());
        let start = out.len();
        out.extend_from_slice(&head[HEADER..]);
        out.extend_from_slice(body);
        match self
            .send
            .seal(nonce(pn), &aad(first, cookie, pn), &mut out[start..])
        {
            Some(tag) => {
                out.extend_from_slice(tag.as_ref());
                true
            }
            None => false,
        }
    }

    /// Opens `d` into `out` as the plain datagram `[channel][cookie][payload]` and marks its
    /// packet number seen. Nothing is marked if it fails.
    pub(crate) fn open(&mut self, d: &Sealed<'_>, out: &mut Vec<u8>) -> Result<u64, OpenError> {
        self.check(d, out)?;
        self.window.mark(d.pn);
        Ok(d.pn)
    }

    /// Opens `d` into `out` without marking its packet number (the caller marks it with
    /// [`Session::mark`] once it accepts the datagram).
    pub(crate) fn check(&self, d: &Sealed<'_>, out: &mut Vec<u8>) -> Result<u64, OpenError> {
        if !self.window.is_fresh(d.pn) {
            return Err(OpenError::Replayed);
        }
        let ct_len = d.body.len() - TAG_BYTES;
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&d.body[ct_len..]);
        out.clear();
        out.push(d.channel);
        out.extend_from_slice(&d.cookie.to_le_bytes());
        out.extend_from_slice(&d.body[..ct_len]);
        if !self.recv.open(
            nonce(d.pn),
            &aad(d.first, d.cookie, d.pn),
            &mut out[HEADER..],
            Tag::from(tag),
        ) {
            out.clear();
            return Err(OpenError::Forged);
        }
        Ok(d.pn)
    }

    /// Marks `pn` seen.
    pub(crate) fn mark(&mut self, pn: u64) {
        self.window.mark(pn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        pair_of(CipherSuite::Aes256Gcm)
    }

    fn pair_of(suite: CipherSuite) -> (Session, Session) {
        (
            Session::new(suite, &[1; 32], &[2; 32]),
            Session::new(suite, &[2; 32], &[1; 32]),
        )
    }

    #[test]
    fn both_suites_seal_and_open_and_do_not_open_each_other() {
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
            let (mut a, mut b) = pair_of(suite);
            assert!(a.seal(&[2, 1, 2, 3, 4, 4], b"state", None, &mut wire));
            let d = Sealed::parse(&wire).unwrap();
            assert!(b.open(&d, &mut plain).is_ok());
            assert_eq!(plain, [2, 1, 2, 3, 4, 4, b's', b't', b'a', b't', b'e']);
        }
        let (mut a, _) = pair_of(CipherSuite::Aes256Gcm);
        let (_, mut b) = pair_of(CipherSuite::ChaCha20Poly1305);
        assert!(a.seal(&[2, 1, 2, 3, 4, 4], b"state", None, &mut wire));
        let d = Sealed::parse(&wire).unwrap();
        assert_eq!(b.open(&d, &mut plain), Err(OpenError::Forged));
        // An unsettled client session takes the suite the server's Hello settles.
        let mut c = Session::unsettled(&[1; 32], &[2; 32]);
        c.settle(CipherSuite::Aes256Gcm);
        let (_, mut server) = pair_of(CipherSuite::Aes256Gcm);
        assert!(c.seal(&[1, 9, 9, 9, 9, 0], b"", None, &mut wire));
        assert!(server
            .open(&Sealed::parse(&wire).unwrap(), &mut plain)
            .is_ok());
    }

    #[test]
    fn sealed_datagrams_open_once_and_only_unaltered() {
        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        assert!(a.seal(&[1, 5, 6, 7, 8, 0xAA], &[0xBB, 0xCC], None, &mut wire));
        assert_eq!(wire.len(), 5 + 3 + SEAL_OVERHEAD);
        let d = Sealed::parse(&wire).unwrap();
        let first = b.open(&d, &mut plain).unwrap();
        assert_eq!(plain, [1, 5, 6, 7, 8, 0xAA, 0xBB, 0xCC]);
        // The same datagram again is a replay.
        assert_eq!(b.open(&d, &mut plain), Err(OpenError::Replayed));
        // Every single bit flipped: refused, by parse or by the tag.
        assert!(a.seal(&[2, 5, 6, 7, 8, 4], b"hello", None, &mut wire));
        for i in 0..wire.len() * 8 {
            let mut w = wire.clone();
            w[i / 8] ^= 1 << (i % 8);
            if let Some(d) = Sealed::parse(&w) {
                assert!(b.open(&d, &mut plain).is_err(), "bit {i}");
            }
        }
        let d = Sealed::parse(&wire).unwrap();
        assert_eq!(b.open(&d, &mut plain), Ok(first + 1));
        // The other direction's key does not open it.
        let (mut c, _) = pair();
        assert_eq!(c.open(&d, &mut plain), Err(OpenError::Forged));
    }

    #[test]
    fn a_token_blob_travels_in_clear_and_outside_the_tag() {
        let (mut a, mut b) = pair();
        let blob = [7u8; ATTACHMENT_BYTES];
        let mut wire = Vec::new();
        assert!(a.seal(&[1, 0, 0, 0, 0x80, 9], &[], Some(&blob), &mut wire));
        assert_eq!(wire[0], 0xC1);
        let d = Sealed::parse(&wire).unwrap();
        assert_eq!(d.token, Some(&blob[..]));
        let mut plain = Vec::new();
        assert!(b.open(&d, &mut plain).is_ok());
        assert_eq!(plain, [1, 0, 0, 0, 0x80, 9]);
    }

    #[test]
    fn the_replay_window_keeps_128_packet_numbers() {
        let mut w = ReplayWindow::default();
        assert!(w.is_fresh(0));
        for pn in [0, 2, 5, 300] {
            w.mark(pn);
        }
        assert!(!w.is_fresh(300));
        assert!(w.is_fresh(299));
        assert!(w.is_fresh(173)); // age 127: the oldest the window keeps
        assert!(!w.is_fresh(172)); // age 128: too old
        w.mark(250);
        assert!(!w.is_fresh(250));
        assert!(!w.is_fresh(5)); // far too old
        assert!(w.is_newest(301) && !w.is_newest(300));
    }

    #[test]
    fn each_salt_gives_other_session_keys() {
        let k = [3u8; 32];
        let a = session_key(&k, &[1; SALT_BYTES]);
        assert_ne!(a, session_key(&k, &[2; SALT_BYTES]));
        assert_ne!(a, session_key(&[4; 32], &[1; SALT_BYTES]));
        assert_eq!(a, session_key(&k, &[1; SALT_BYTES]));
    }

    #[test]
    fn the_expanded_keys_live_inside_the_session() {
        // Inline, not boxed: `SecureLink::heap_bytes` counts `size_of` of the secure state,
        // so a key kept elsewhere would escape `Server::connection_memory`.
        let key = std::mem::size_of::<LessSafeKey>();
        assert!(
            key >= 15 * 16,
            "AES-256's 15 round keys are in it ({key} bytes)"
        );
        assert!(std::mem::size_of::<Session>() >= 2 * key);
    }

    #[test]
    fn parse_refuses_what_is_not_sealed() {
        assert!(Sealed::parse(&[]).is_none());
        assert!(Sealed::parse(&[1, 0, 0, 0, 0]).is_none());
        assert!(Sealed::parse(&[0x85; 40]).is_none());
        assert!(Sealed::parse(&[0x80; 40]).is_none());
        assert!(Sealed::parse(&[0x81; 28]).is_none());
        assert!(Sealed::parse(&[0x81; 29]).is_some());
        assert!(Sealed::parse(&[0xC1; 100]).is_none());
    }
}
