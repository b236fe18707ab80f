//! Connect tokens: what a backend (matchmaker, lobby, web login) gives one client so that a
//! game server admits it, and the part of it the server opens (`docs/SECURITY.md`,
//! `docs/PROTOCOL.md` "Secure sessions").
//!
//! ```text
//! ConnectToken (772 bytes, what the backend sends the client over its own channel)
//!   0    8  magic "KNETTOK1"
//!   8    8  protocol id, u64 LE
//!  16    8  created, unix seconds, u64 LE
//!  24    8  expires, unix seconds, u64 LE
//!  32   24  nonce (XChaCha20-Poly1305)
//!  56    1  server address count n, 1..=8
//!  57  152  8 addresses of 19 bytes (n used, the rest zero): kind 4 | 6, 16 address
//!           bytes (IPv4 in the first 4, the rest zero), port u16 LE
//! 209   32  client-to-server key
//! 241   32  server-to-client key
//! 273  499  the private part, sealed under the backend's and servers' shared key with
//!           the nonce above and bytes 0..32 as associated data:
//!             0    8  client id, u64 LE
//!             8  153  address count and the 8 addresses, as above
//!           161   32  client-to-server key
//!           193   32  server-to-client key
//!           225    2  user data length, u16 LE, ≤ 256
//!           227  256  user data, zero padded
//!           483   16  Poly1305 tag
//!
//! Token blob (555 bytes, what the client puts in its Hello): bytes 0..56 ++ bytes 273..772
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};

/// Bytes of a serialized [`ConnectToken`].
pub const CONNECT_TOKEN_BYTES: usize = 772;
/// The most server addresses a token names.
pub const MAX_TOKEN_ADDRESSES: usize = 8;
/// The most user data a token carries, in bytes.
pub const MAX_USER_DATA: usize = 256;

pub(crate) const MAGIC: [u8; 8] = *b"KNETTOK1";
const ADDRESS_BYTES: usize = 19;
const ADDRESSES_BYTES: usize = 1 + MAX_TOKEN_ADDRESSES * ADDRESS_BYTES;
const KEY_BYTES: usize = 32;
const TAG_BYTES: usize = 16;
/// Bytes 0..32 of a token: the private part's associated data.
const AAD_BYTES: usize = 32;
const NONCE_AT: usize = 32;
const NONCE_BYTES: usize = 24;
const ADDRESSES_AT: usize = 56;
const C2S_AT: usize = ADDRESSES_AT + ADDRESSES_BYTES;
const S2C_AT: usize = C2S_AT + KEY_BYTES;
const PRIVATE_AT: usize = S2C_AT + KEY_BYTES;
/// The private part in clear: client id, addresses, two keys, user data length and bytes.
const PRIVATE_BYTES: usize = 8 + ADDRESSES_BYTES + 2 * KEY_BYTES + 2 + MAX_USER_DATA;
const SEALED_BYTES: usize = PRIVATE_BYTES + TAG_BYTES;
/// Bytes of the token blob a client sends in its Hello: the token's first 56 bytes (magic,
/// protocol id, times, nonce) and the sealed private part.
pub(crate) const TOKEN_BLOB_BYTES: usize = ADDRESSES_AT + SEALED_BYTES;

const _: () = assert!(PRIVATE_AT + SEALED_BYTES == CONNECT_TOKEN_BYTES);
const _: () = assert!(TOKEN_BLOB_BYTES == 555);

/// A 32-byte secret shared by the backend that issues connect tokens and the game servers
/// that accept them. Its `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_BYTES]);

impl PrivateKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> PrivateKey {
        let mut k = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut k);
        PrivateKey(k)
    }

    /// The key from its bytes (as stored in the backend's and the servers' configuration).
    pub const fn from_bytes(bytes: [u8; KEY_BYTES]) -> PrivateKey {
        PrivateKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// Why a token could not be made or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// No server address, or more than [`MAX_TOKEN_ADDRESSES`].
    Addresses,
    /// User data longer than [`MAX_USER_DATA`].
    UserDataTooLong,
    /// The token would expire before or when it is created (`valid_secs` 0, or an overflow).
    Lifetime,
    /// Bytes that are not a connect token of this version (wrong length or magic, or fields
    /// out of range).
    Malformed,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Addresses => "a connect token names 1 to 8 server addresses",
            TokenError::UserDataTooLong => "a connect token carries at most 256 bytes of user data",
            TokenError::Lifetime => "a connect token must be valid for at least one second",
            TokenError::Malformed => "not a connect token of this version",
        })
    }
}

impl std::error::Error for TokenError {}

/// What a backend puts in a [`ConnectToken`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParams {
    /// The game's protocol id: a server accepts only tokens with its own
    /// (`SecureConfig::protocol_id`), so one key can serve several games or versions.
    pub protocol_id: u64,
    /// The player's id, as the backend knows it; the server's app reads it
    /// (`Server::secure_session`), and a token is refused while a client connected with the same
    /// token from another address.
    pub client_id: u64,
    /// The addresses of the servers this token is valid for (1 to 8), as the client reaches
    /// them: a server accepts a token only if one of them is one of its
    /// `SecureConfig::public_addresses`.
    pub server_addresses: Vec<SocketAddr>,
    /// Up to 256 bytes the server's app reads (`Server::secure_session`), sealed: the client can
    /// neither read nor change them.
    pub user_data: Vec<u8>,
    /// When the token is made, in seconds since the Unix epoch.
    pub created_unix_secs: u64,
    /// For how long after `created_unix_secs` a server accepts the token to open a session
    /// (the session itself lasts as long as the connection).
    pub valid_secs: u64,
}

/// A connect token (the format is in the module docs and `docs/PROTOCOL.md`): made by a
/// backend with [`ConnectToken::generate`], sent to one client as bytes
/// ([`ConnectToken::as_bytes`]) over the backend's own secure channel (HTTPS), read back by
/// the client with [`ConnectToken::from_bytes`] and given to `Client::connect_with_token`.
///
/// The public part tells the client where to connect and the session keys; the private part,
/// sealed under the [`PrivateKey`] the backend shares with the servers, tells the server the
/// same keys, the client id and the user data, and cannot be read or changed by the client.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectToken {
    bytes: Box<[u8; CONNECT_TOKEN_BYTES]>,
}

impl fmt::Debug for ConnectToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectToken")
            .field("protocol_id", &self.protocol_id())
            .field("created_unix_secs", &self.created_unix_secs())
            .field("expires_unix_secs", &self.expires_unix_secs())
            .field("server_addresses", &self.server_addresses())
            .finish_non_exhaustive()
    }
}

impl ConnectToken {
    /// Makes a token for one client, with fresh session keys and nonce from the operating
    /// system's CSPRNG.
    ///
    /// ```
    /// use kcpnet::secure::{ConnectToken, PrivateKey, TokenParams};
    ///
    /// let key = PrivateKey::generate(); // shared by the backend and the game servers
    /// let token = ConnectToken::generate(&key, &TokenParams {
    ///     protocol_id: 0x4b43_504e_4554_0001,
    ///     client_id: 42,
    ///     server_addresses: vec!["203.0.113.7:7777".parse().unwrap()],
    ///     user_data: b"player:42;team:red".to_vec(),
    ///     created_unix_secs: 1_800_000_000,
    ///     valid_secs: 30,
    /// })?;
    /// let bytes: &[u8] = token.as_bytes(); // what the backend sends the client
    /// assert_eq!(ConnectToken::from_bytes(bytes)?, token);
    /// # Ok::<(), kcpnet::secure::TokenError>(())
    /// ```
    pub fn generate(key: &PrivateKey, params: &TokenParams) -> Result<ConnectToken, TokenError> {
        ConnectToken::generate_with_rng(key, params, &mut rand::rngs::OsRng)
    }

    /// [`ConnectToken::generate`] with the keys and nonce drawn from `rng` (for test vectors
    /// and reproducible tests; use [`ConnectToken::generate`] otherwise).
    pub fn generate_with_rng<R: RngCore + CryptoRng>(
        key: &PrivateKey,
        params: &TokenParams,
        rng: &mut R,
    ) -> Result<ConnectToken, TokenError> {
        let n = params.server_addresses.len();
        if n == 0 || n > MAX_TOKEN_ADDRESSES {
            return Err(TokenError::Addresses);
        }
        if params.user_data.len() > MAX_USER_DATA {
            return Err(TokenError::UserDataTooLong);
        }
        let expires = params
            .created_unix_secs
            .checked_add(params.valid_secs)
            .filter(|_| params.valid_secs > 0)
            .ok_or(TokenError::Lifetime)?;
        let mut b = Box::new([0u8; CONNECT_TOKEN_BYTES]);
        b[0..8].copy_from_slice(&MAGIC);
        b[8..16].copy_from_slice(&params.protocol_id.to_le_bytes());
        b[16..24].copy_from_slice(&params.created_unix_secs.to_le_bytes());
        b[24..32].copy_from_slice(&expires.to_le_bytes());
        rng.fill_bytes(&mut b[NONCE_AT..NONCE_AT + NONCE_BYTES]);
        let addresses = write_addresses(&params.server_addresses);
        b[ADDRESSES_AT..C2S_AT].copy_from_slice(&addresses);
        rng.fill_bytes(&mut b[C2S_AT..PRIVATE_AT]);

        let mut private = [0u8; PRIVATE_BYTES];
        private[0..8].copy_from_slice(&params.client_id.to_le_bytes());
        private[8..8 + ADDRESSES_BYTES].copy_from_slice(&addresses);
        let keys_at = 8 + ADDRESSES_BYTES;
        private[keys_at..keys_at + 2 * KEY_BYTES].copy_from_slice(&b[C2S_AT..PRIVATE_AT]);
        let len_at = keys_at + 2 * KEY_BYTES;
        private[len_at..len_at + 2].copy_from_slice(&(params.user_data.len() as u16).to_le_bytes());
        private[len_at + 2..len_at + 2 + params.user_data.len()].copy_from_slice(&params.user_data);

        let cipher = XChaCha20Poly1305::new(Key::from_slice(key.as_bytes()));
        let nonce = *XNonce::from_slice(&b[NONCE_AT..NONCE_AT + NONCE_BYTES]);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, &b[..AAD_BYTES], &mut private)
            .map_err(|_| TokenError::Malformed)?;
        b[PRIVATE_AT..PRIVATE_AT + PRIVATE_BYTES].copy_from_slice(&private);
        b[PRIVATE_AT + PRIVATE_BYTES..].copy_from_slice(&tag);
        Ok(ConnectToken { bytes: b })
    }

    /// Reads a token the backend sent. Checks the format of the public part only (the
    /// private part is for the server).
    pub fn from_bytes(bytes: &[u8]) -> Result<ConnectToken, TokenError> {
        let b: &[u8; CONNECT_TOKEN_BYTES] = bytes.try_into().map_err(|_| TokenError::Malformed)?;
        if b[0..8] != MAGIC {
            return Err(TokenError::Malformed);
        }
        let addresses = read_addresses(&b[ADDRESSES_AT..C2S_AT]).ok_or(TokenError::Malformed)?;
        if addresses.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(ConnectToken {
            bytes: Box::new(*b),
        })
    }

    /// The token's bytes, what the backend sends the client.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..]
    }

    /// The protocol id.
    pub fn protocol_id(&self) -> u64 {
        u64_at(&self.bytes[..], 8)
    }

    /// When it was made, in seconds since the Unix epoch.
    pub fn created_unix_secs(&self) -> u64 {
        u64_at(&self.bytes[..], 16)
    }

    /// Until when a server accepts it to open a session, in seconds since the Unix epoch.
    pub fn expires_unix_secs(&self) -> u64 {
        u64_at(&self.bytes[..], 24)
    }

    /// The servers it is valid for, in the backend's order (the client tries the first).
    pub fn server_addresses(&self) -> Vec<SocketAddr> {
        read_addresses(&self.bytes[ADDRESSES_AT..C2S_AT]).unwrap_or_default()
    }

    /// The client's session keys: client to server, server to client.
    pub(crate) fn session_keys(&self) -> ([u8; 32], [u8; 32]) {
        let mut c2s = [0u8; 32];
        let mut s2c = [0u8; 32];
        c2s.copy_from_slice(&self.bytes[C2S_AT..S2C_AT]);
        s2c.copy_from_slice(&self.bytes[S2C_AT..PRIVATE_AT]);
        (c2s, s2c)
    }

    /// The blob the client sends in its Hello (the format is in the module docs).
    pub(crate) fn blob(&self) -> [u8; TOKEN_BLOB_BYTES] {
        let mut out = [0u8; TOKEN_BLOB_BYTES];
        out[..ADDRESSES_AT].copy_from_slice(&self.bytes[..ADDRESSES_AT]);
        out[ADDRESSES_AT..].copy_from_slice(&self.bytes[PRIVATE_AT..]);
        out
    }
}

/// Why a server refused a token blob (each counted in `EndpointStats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a blob of this version, another protocol id, or it does not open (forged,
    /// tampered, another key).
    Invalid,
    /// Past its expiry time (or created in the future beyond the allowed clock skew).
    Expired,
    /// It does not name this server.
    WrongServer,
}

/// What an opened token grants: the session's keys and what the app learns of the client.
#[derive(Clone)]
pub(crate) struct Grant {
    pub(crate) client_id: u64,
    pub(crate) c2s: [u8; 32],
    pub(crate) s2c: [u8; 32],
    pub(crate) user_data: Box<[u8]>,
    /// The private part's tag: unique to the token, what "the same token" means.
    pub(crate) token_id: [u8; 16],
    pub(crate) expires_unix_secs: u64,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("client_id", &self.client_id)
            .field("user_data_len", &self.user_data.len())
            .finish_non_exhaustive()
    }
}

/// How far in the future a token's creation time may be on the server's clock (clock skew
/// between the backend and the servers).
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// Opens a token blob on a server: cheap checks first (length, magic, protocol id, times),
/// then the AEAD, then the address list. Allocates only for an accepted token.
pub(crate) fn open_blob(
    blob: &[u8],
    key: &PrivateKey,
    protocol_id: u64,
    now_unix_secs: u64,
    this_server: &[SocketAddr],
) -> Result<Grant, Refusal> {
    if blob.len() != TOKEN_BLOB_BYTES || blob[0..8] != MAGIC || u64_at(blob, 8) != protocol_id {
        return Err(Refusal::Invalid);
    }
    let created = u64_at(blob, 16);
    let expires = u64_at(blob, 24);
    if expires <= now_unix_secs || created > now_unix_secs.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(Refusal::Expired);
    }
    let mut private = [0u8; PRIVATE_BYTES];
    private.copy_from_slice(&blob[ADDRESSES_AT..ADDRESSES_AT + PRIVATE_BYTES]);
    let tag_bytes = &blob[ADDRESSES_AT + PRIVATE_BYTES..];
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.as_bytes()));
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(&blob[NONCE_AT..NONCE_AT + NONCE_BYTES]),
            &blob[..AAD_BYTES],
            &mut private,
            Tag::from_slice(tag_bytes),
        )
        .map_err(|_| Refusal::Invalid)?;
    // Authentic from here on: a malformed field means a backend bug, refused all the same.
    let addresses = read_addresses(&private[8..8 + ADDRESSES_BYTES]).ok_or(Refusal::Invalid)?;
    if !addresses.iter().any(|a| this_server.contains(a)) {
        return Err(Refusal::WrongServer);
    }
    let keys_at = 8 + ADDRESSES_BYTES;
    let len_at = keys_at + 2 * KEY_BYTES;
    let user_len = usize::from(u16::from_le_bytes([private[len_at], private[len_at + 1]]));
    if user_len > MAX_USER_DATA {
        return Err(Refusal::Invalid);
    }
    let mut c2s = [0u8; 32];
    let mut s2c = [0u8; 32];
    c2s.copy_from_slice(&private[keys_at..keys_at + KEY_BYTES]);
    s2c.copy_from_slice(&private[keys_at + KEY_BYTES..len_at]);
    let mut token_id = [0u8; 16];
    token_id.copy_from_slice(tag_bytes);
    Ok(Grant {
        client_id: u64_at(&private, 0),
        c2s,
        s2c,
        user_data: private[len_at + 2..len_at + 2 + user_len].into(),
        token_id,
        expires_unix_secs: expires,
    })
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn write_addresses(addresses: &[SocketAddr]) -> [u8; ADDRESSES_BYTES] {
    let mut out = [0u8; ADDRESSES_BYTES];
    out[0] = addresses.len() as u8;
    for (i, a) in addresses.iter().enumerate() {
        let at = 1 + i * ADDRESS_BYTES;
        let rec = &mut out[at..at + ADDRESS_BYTES];
        match a.ip() {
            IpAddr::V4(ip) => {
                rec[0] = 4;
                rec[1..5].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                rec[0] = 6;
                rec[1..17].copy_from_slice(&ip.octets());
            }
        }
        rec[17..19].copy_from_slice(&a.port().to_le_bytes());
    }
    out
}

/// The addresses of an address list, `None` if it is malformed (count over 8, a kind that
/// is neither 4 nor 6, or bytes set in unused records or after an IPv4 address).
fn read_addresses(b: &[u8]) -> Option<Vec<SocketAddr>> {
    let n = usize::from(b[0]);
    if n > MAX_TOKEN_ADDRESSES {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..MAX_TOKEN_ADDRESSES {
        let rec = &b[1 + i * ADDRESS_BYTES..1 + (i + 1) * ADDRESS_BYTES];
        if i >= n {
            if rec.iter().any(|&x| x != 0) {
                return None;
            }
            continue;
        }
        let port = u16::from_le_bytes([rec[17], rec[18]]);
        let ip = match rec[0] {
            4 if rec[5..17].iter().all(|&x| x == 0) => {
                IpAddr::V4(Ipv4Addr::new(rec[1], rec[2], rec[3], rec[4]))
            }
            6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&rec[1..17]);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return None,
        };
        out.push(SocketAddr::new(ip, port));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn params() -> TokenParams {
        TokenParams {
            protocol_id: 7,
            client_id: 42,
            server_addresses: vec![
                "127.0.0.1:4000".parse().unwrap(),
                "[::1]:4001".parse().unwrap(),
            ],
            user_data: b"hello".to_vec(),
            created_unix_secs: 1_000,
            valid_secs: 30,
        }
    }

    fn token() -> (PrivateKey, ConnectToken) {
        let key = PrivateKey::from_bytes([9; 32]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = ConnectToken::generate_with_rng(&key, &params(), &mut rng).unwrap();
        (key, t)
    }

    #[test]
    fn a_token_round_trips_and_opens_on_a_named_server() {
        let (key, t) = token();
        let back = ConnectToken::from_bytes(t.as_bytes()).unwrap();
        assert_eq!(back, t);
        assert_eq!(t.server_addresses(), params().server_addresses);
        assert_eq!(t.expires_unix_secs(), 1_030);
        let here: SocketAddr = "[::1]:4001".parse().unwrap();
        let g = open_blob(&t.blob(), &key, 7, 1_010, &[here]).unwrap();
        assert_eq!(g.client_id, 42);
        assert_eq!(&*g.user_data, b"hello");
        assert_eq!((g.c2s, g.s2c), t.session_keys());
    }

    #[test]
    fn refusals_are_told_apart() {
        let (key, t) = token();
        let here: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let blob = t.blob();
        assert_eq!(
            open_blob(&blob, &key, 8, 1_010, &[here]).unwrap_err(),
            Refusal::Invalid
        );
        assert_eq!(
            open_blob(&blob, &key, 7, 1_030, &[here]).unwrap_err(),
            Refusal::Expired
        );
        assert_eq!(
            open_blob(&blob, &key, 7, 900, &[here]).unwrap_err(),
            Refusal::Expired
        );
        let other: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        assert_eq!(
            open_blob(&blob, &key, 7, 1_010, &[other]).unwrap_err(),
            Refusal::WrongServer
        );
        let wrong_key = PrivateKey::from_bytes([8; 32]);
        assert_eq!(
            open_blob(&blob, &wrong_key, 7, 1_010, &[here]).unwrap_err(),
            Refusal::Invalid
        );
    }

    #[test]
    fn every_flipped_bit_of_the_blob_is_refused() {
        let (key, t) = token();
        let here: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let blob = t.blob();
        for i in 0..blob.len() * 8 {
            let mut b = blob;
            b[i / 8] ^= 1 << (i % 8);
            assert!(open_blob(&b, &key, 7, 1_010, &[here]).is_err(), "bit {i}");
        }
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        let key = PrivateKey::generate();
        let mut p = params();
        p.server_addresses.clear();
        assert_eq!(
            ConnectToken::generate(&key, &p).unwrap_err(),
            TokenError::Addresses
        );
        let mut p = params();
        p.user_data = vec![0; 257];
        assert_eq!(
            ConnectToken::generate(&key, &p).unwrap_err(),
            TokenError::UserDataTooLong
        );
        let mut p = params();
        p.valid_secs = 0;
        assert_eq!(
            ConnectToken::generate(&key, &p).unwrap_err(),
            TokenError::Lifetime
        );
        assert_eq!(
            ConnectToken::from_bytes(&[0; 10]).unwrap_err(),
            TokenError::Malformed
        );
        assert!(format!("{key:?}").contains(".."));
    }
}
