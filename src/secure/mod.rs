//! Secure sessions (the `secure` feature, on by default): connect tokens, authenticated
//! encryption of every datagram after the handshake, and address migration. A
//! kcpnet↔kcpnet extension negotiated in the Hello; with it off (the default `Config`), the
//! wire is byte-identical to kcp2k. The threat model is in `docs/SECURITY.md`, the bytes in
//! `docs/PROTOCOL.md` ("Secure sessions").
//!
//! * A backend holding a [`PrivateKey`] shared with the game servers makes a
//!   [`ConnectToken`] for each admitted player and sends it to the player's client over its
//!   own channel (HTTPS).
//! * The server runs with [`Config::security`](crate::Config::security) set to a
//!   [`SecureConfig`]: [`SecurityMode::Required`] admits only clients with a valid token,
//!   [`SecurityMode::Mixed`] also admits kcp2k clients, unauthenticated and marked so
//!   ([`Server::secure_session`](crate::Server::secure_session) is `None` for them).
//! * The client connects with [`Client::connect_with_token`](crate::Client::connect_with_token).
//!
//! This module is the layer under `connection`: the token format and the sealing of
//! datagrams, pure functions of bytes and keys.

#[cfg(feature = "secure")]
mod seal;
#[cfg(feature = "secure")]
mod token;

#[cfg(feature = "secure")]
pub use seal::CipherSuite;
#[cfg(feature = "secure")]
pub use seal::SEAL_OVERHEAD;
#[cfg(feature = "secure")]
pub(crate) use seal::{
    is_sealed, session_key, OpenError, Sealed, Session, ATTACHMENT_BYTES, SALT_BYTES,
};
#[cfg(feature = "secure")]
pub(crate) use token::{open_blob, Grant, Refusal, TOKEN_BLOB_BYTES};
#[cfg(feature = "secure")]
pub use token::{
    ConnectToken, PrivateKey, TokenError, TokenParams, CONNECT_TOKEN_BYTES, MAX_TOKEN_ADDRESSES,
    MAX_USER_DATA,
};

#[cfg(not(feature = "secure"))]
mod off;
#[cfg(not(feature = "secure"))]
pub use off::SEAL_OVERHEAD;
#[cfg(not(feature = "secure"))]
pub(crate) use off::{is_sealed, CipherSuite, OpenError, Sealed, Session, SALT_BYTES};

#[cfg(feature = "secure")]
use std::net::SocketAddr;

/// Which clients a server admits when [`Config::security`](crate::Config::security) is set.
/// Without it (`None`, the default) the server is kcp2k-compatible and admits every client
/// unauthenticated, as kcp2k does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    /// Only clients with a valid connect token; every datagram is sealed. A kcp2k client's
    /// Hello gets no reply (counted in `EndpointStats::refused_unauthenticated`).
    #[default]
    Required,
    /// Token clients get secure sessions; kcp2k clients (and kcpnet clients without a token)
    /// are admitted too, unauthenticated, for fleets that serve Unity clients and Rust
    /// clients at once. The app tells them apart with `Server::secure_session`.
    Mixed,
}

/// A server's secure-session settings ([`Config::security`](crate::Config::security)).
#[cfg(feature = "secure")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureConfig {
    /// Whom the server admits.
    pub mode: SecurityMode,
    /// Only tokens made for this protocol id are accepted.
    pub protocol_id: u64,
    /// The key shared with the backend that makes the tokens.
    pub key: PrivateKey,
    /// This server's addresses as clients reach it (its public address and port): a token
    /// is accepted only if it names one of them. `Server::bind` adds its bound address if
    /// it is not the unspecified address.
    pub public_addresses: Vec<SocketAddr>,
    /// The AEAD of sealed datagrams: AES-256-GCM (the default) is accepted when the client
    /// offers it (every kcpnet client does), else ChaCha20-Poly1305.
    pub cipher: CipherSuite,
}

#[cfg(feature = "secure")]
impl SecureConfig {
    /// [`SecurityMode::Required`] with `key` and `protocol_id`, valid for `public_addresses`.
    pub fn required(
        protocol_id: u64,
        key: PrivateKey,
        public_addresses: Vec<SocketAddr>,
    ) -> SecureConfig {
        SecureConfig {
            mode: SecurityMode::Required,
            protocol_id,
            key,
            public_addresses,
            cipher: CipherSuite::default(),
        }
    }
}

/// What a server knows of a client that connected with a connect token
/// ([`Server::secure_session`](crate::Server::secure_session)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecureSession<'a> {
    /// The client id the backend put in the token.
    pub client_id: u64,
    /// The user data the backend put in the token (at most 256 bytes).
    pub user_data: &'a [u8],
}

/// Seals the plain kcp2k datagram `plain` (`[channel][cookie][payload]`) under `key` with
/// packet number `pn`, as a secure session does (`docs/PROTOCOL.md`, "Sealed datagrams"):
/// for other implementations, dissectors and the published test vectors
/// (`tests/vectors/secure/`). `None` if `plain` is not a kcp2k datagram.
#[cfg(feature = "secure")]
pub fn seal_datagram(suite: CipherSuite, key: &[u8; 32], pn: u64, plain: &[u8]) -> Option<Vec<u8>> {
    let mut s = seal::Session::with_pn(suite, key, pn);
    let mut out = Vec::new();
    s.seal(plain, &[], None, &mut out).then_some(out)
}

/// Opens a sealed datagram under `key`: its packet number and the plain kcp2k datagram, or
/// `None` if it is not a sealed datagram or does not open.
#[cfg(feature = "secure")]
pub fn open_datagram(suite: CipherSuite, key: &[u8; 32], data: &[u8]) -> Option<(u64, Vec<u8>)> {
    let d = Sealed::parse(data)?;
    let s = seal::Session::with_pn(suite, key, 0);
    let mut out = Vec::new();
    s.check(&d, &mut out).ok().map(|pn| (pn, out))
}

/// The key of one direction of a session: derived from the token's key of that direction
/// and the salt the client drew for the session (`docs/PROTOCOL.md`, "Sealed datagrams").
#[cfg(feature = "secure")]
pub fn derive_session_key(token_key: &[u8; 32], salt: &[u8; 16]) -> [u8; 32] {
    session_key(token_key, salt)
}
