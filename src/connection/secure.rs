//! Secure sessions on one connection (`docs/SECURITY.md`): the session keys, the token a
//! client attaches until the server admitted it, the MSS that leaves room for the seal, and
//! the server's validation of a client's new address (migration).
//!
//! What leaves is sealed in [`super::Link::transmit_to`]; what arrives is opened in
//! [`Connection::handle_datagram`] (`receive.rs`) before the kcp2k framing is parsed, so
//! nothing unauthenticated reaches KCP.

// Without the `secure` feature no session exists: the code compiles and never runs.
#![cfg_attr(
    not(feature = "secure"),
    allow(dead_code, unreachable_code, unused_variables)
)]

use std::net::SocketAddr;

use log::{debug, trace};

use super::extensions::{
    hello_block, Extensions, OPTION_TOKEN, PATH_TOKEN_LEN, UNRELIABLE_PATH_CHALLENGE,
    UNRELIABLE_PATH_RESPONSE,
};
use super::{Connection, Ctx, Role};
use crate::config::Config;
use crate::secure::{CipherSuite, OpenError, Sealed, Session, SEAL_OVERHEAD};
use crate::wire::datagram::{Channel, ReliableHeader, DATAGRAM_HEADER_LEN};

/// A server sends toward an address it has not validated at most this many times the
/// bytes it received from there.
pub(crate) const PATH_AMPLIFICATION: u64 = 3;

/// Drops on the secure datagram path, counted by the endpoint (`EndpointStats`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SecureDrops {
    /// Sealed datagrams whose tag did not verify.
    pub forged: u64,
    /// Sealed datagrams whose packet number was seen already or is too old.
    pub replayed: u64,
    /// Unsealed (or malformed sealed) datagrams on a secure connection.
    pub unsealed: u64,
}

impl SecureDrops {
    fn count(&mut self, e: OpenError) {
        match e {
            OpenError::Forged => self.forged += 1,
            OpenError::Replayed => self.replayed += 1,
        }
    }
}

/// The secure state of a connection.
#[derive(Debug)]
pub(crate) struct SecureLink {
    pub(super) session: Session,
    /// Client: the token blob and the session's salt, attached to every datagram until the
    /// server admitted us.
    pub(super) token: Option<Box<[u8]>>,
    /// Whether datagrams are sealed: a server's from its creation, a client's once the
    /// server's Hello accepted the secure extension.
    pub(super) active: bool,
    /// Server: what the token told of the client.
    client_id: u64,
    user_data: Box<[u8]>,
    token_id: [u8; 16],
    /// Server: a new address of the client, being validated.
    probe: Option<Probe>,
}

/// A path validation under way.
#[derive(Debug, Clone, Copy)]
struct Probe {
    addr: SocketAddr,
    challenge: [u8; PATH_TOKEN_LEN],
    received: u64,
    sent: u64,
}

impl SecureLink {
    /// A client's secure state: sealed from the server's Hello on, the token attached until
    /// admission.
    pub(crate) fn client(session: Session, token_blob: Box<[u8]>) -> SecureLink {
        SecureLink {
            session,
            token: Some(token_blob),
            active: false,
            client_id: 0,
            user_data: Box::new([]),
            token_id: [0; 16],
            probe: None,
        }
    }

    /// A server's secure state for the client a token admitted.
    pub(crate) fn server(
        session: Session,
        client_id: u64,
        user_data: Box<[u8]>,
        token_id: [u8; 16],
    ) -> SecureLink {
        SecureLink {
            session,
            token: None,
            active: true,
            client_id,
            user_data,
            token_id,
            probe: None,
        }
    }
}

impl SecureLink {
    /// Heap bytes it holds: itself, the user data and a client's token attachment (fixed
    /// for the connection's life; a peer cannot grow it).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<SecureLink>()
            + self.user_data.len()
            + self.token.as_deref().map_or(0, <[u8]>::len)
    }
}

impl Connection {
    /// Makes this connection secure: KCP's MSS and the message limits shrink by the seal's
    /// overhead, so a sealed datagram is never larger than the MTU.
    pub(super) fn install_secure(&mut self, link: SecureLink) {
        self.shrink_room(SEAL_OVERHEAD);
        self.link.secure = Some(Box::new(link));
    }

    /// A client connection that presents a connect token: its Hello offers every extension
    /// and the secure one, with the token blob as an option of the extension block; every
    /// datagram after the server's Hello is sealed with `session`, and carries `attachment`
    /// (the blob and the session's salt) until the server admitted us.
    pub(crate) fn new_client_secure(
        remote: SocketAddr,
        config: &Config,
        now: u32,
        session: Session,
        attachment: &[u8],
    ) -> Self {
        let blob = &attachment[..attachment.len().saturating_sub(crate::secure::SALT_BYTES)];
        let mut c = Connection::new(Role::Client, remote, 0, config, now);
        c.install_secure(SecureLink::client(session, attachment.into()));
        c.offered = Extensions::ALL | Extensions::SECURE | Extensions::AES_GCM;
        let mut body = Vec::with_capacity(hello_block(c.offered).len() + 3 + blob.len());
        body.extend_from_slice(&hello_block(c.offered));
        body.push(OPTION_TOKEN);
        body.extend_from_slice(&(blob.len() as u16).to_le_bytes());
        body.extend_from_slice(blob);
        let _ = c
            .kcp
            .send_with_header(&[ReliableHeader::Hello.as_u8()], &body);
        c
    }

    /// Handles a datagram that was opened outside the connection (the proof of address that
    /// created it): `plain` is the opened kcp2k datagram, `wire_len` the sealed length.
    pub(crate) fn handle_opened(&mut self, ctx: &mut Ctx<'_>, plain: &[u8], wire_len: usize) {
        self.handle_plain(ctx, plain, wire_len);
    }

    /// Whether this is a secure session.
    pub(crate) fn is_secure(&self) -> bool {
        self.link.secure.is_some()
    }

    /// Server: the client id and user data of the token that admitted the client.
    pub(crate) fn secure_session(&self) -> Option<(u64, &[u8])> {
        match (self.role, self.link.secure.as_deref()) {
            (Role::Server, Some(s)) => Some((s.client_id, &s.user_data)),
            _ => None,
        }
    }

    /// Server: the id of the token that admitted the client.
    pub(crate) fn token_id(&self) -> Option<[u8; 16]> {
        match (self.role, self.link.secure.as_deref()) {
            (Role::Server, Some(s)) => Some(s.token_id),
            _ => None,
        }
    }

    /// Opens a sealed datagram from the peer into `out` and marks its packet number seen.
    /// `None` (counted) for anything else: unsealed, malformed, forged, replayed, or sealed
    /// before the session is active.
    pub(super) fn open_sealed(
        &mut self,
        ctx: &mut Ctx<'_>,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        let role = self.role;
        let s = self.link.secure.as_deref_mut()?;
        let sealed = Sealed::parse(bytes)
            .filter(|d| s.active && (d.token.is_none() || role == Role::Server));
        let Some(d) = sealed else {
            trace!("{}: dropping an unsealed datagram", self.link.remote);
            ctx.secure_drops.unsealed += 1;
            self.link.stats.datagrams_dropped += 1;
            return None;
        };
        match s.session.open(&d, out) {
            Ok(pn) => Some(pn),
            Err(e) => {
                trace!("{}: dropping a sealed datagram: {e:?}", self.link.remote);
                ctx.secure_drops.count(e);
                self.link.stats.datagrams_dropped += 1;
                None
            }
        }
    }

    /// Client, before the server's Hello activated the session (a server's session is
    /// active from its creation): whether a plain datagram may be taken. Only the server's
    /// stateless reply comes in clear, and its only reliable data is the server's Hello
    /// (`PUSH sn 0`). Any other `PUSH` would enter the stream unauthenticated: appended to
    /// the reply by an on-path forger at `sn 2`, it waited in KCP's receive buffer and was
    /// delivered after admission in place of the server's own message (found by the
    /// `secure` fuzz target). Such a datagram is dropped and counted as unsealed.
    pub(super) fn plain_before_activation(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8]) -> bool {
        let only_hello = match crate::wire::datagram::Datagram::parse(bytes) {
            Ok(d) if d.channel == Channel::Reliable => crate::wire::segment::segments(d.payload)
                .all(|seg| {
                    seg.is_ok_and(|(h, _)| {
                        h.cmd != crate::wire::segment::Command::Push || h.sn == 0
                    })
                }),
            _ => true,
        };
        if !only_hello {
            trace!(
                "{}: dropping a plain datagram with data before activation",
                self.link.remote
            );
            ctx.secure_drops.unsealed += 1;
            self.link.stats.datagrams_dropped += 1;
        }
        only_hello
    }

    /// Client: the server's Hello arrived. With a token, it must accept the secure
    /// extension (a server that refuses the token does not answer at all, so a Hello
    /// without it comes from a server without secure sessions): from now on every datagram
    /// is sealed. Returns false, after a protocol error, if the server did not accept it.
    pub(super) fn activate_secure(&mut self, ctx: &mut Ctx<'_>, accepted: Extensions) -> bool {
        let Some(s) = self.link.secure.as_deref_mut() else {
            return true;
        };
        if !accepted.contains(Extensions::SECURE) {
            self.protocol_error(
                ctx,
                "the server did not accept our connect token: it is a kcp2k server or a \
                 kcpnet server without secure sessions"
                    .into(),
            );
            return false;
        }
        s.active = true;
        s.session.settle(if accepted.contains(Extensions::AES_GCM) {
            CipherSuite::Aes256Gcm
        } else {
            CipherSuite::ChaCha20Poly1305
        });
        true
    }

    /// Client: the server sealed a datagram for us, so it admitted us: the token is no
    /// longer attached.
    pub(super) fn secure_admitted(&mut self) {
        if let Some(s) = self.link.secure.as_deref_mut() {
            s.token = None;
        }
    }

    /// Client: answers the server's path challenge (from wherever our datagrams now leave).
    pub(super) fn answer_path_challenge(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) {
        if self.role != Role::Client || !self.is_secure() || payload.len() < PATH_TOKEN_LEN {
            return;
        }
        let head = path_head(self.link.cookie, UNRELIABLE_PATH_RESPONSE);
        self.link
            .transmit(&mut *ctx.tx, &head, &payload[..PATH_TOKEN_LEN]);
    }

    /// Server: a sealed datagram of this connection's session arrived from `from`, an
    /// address that is not the connection's. If it opens, its content is taken as usual
    /// (nothing lost), and: if it answers our challenge to `from`, the connection moves
    /// there (returns the old address); otherwise, if it is the newest datagram of the
    /// session, `from` is challenged, within [`PATH_AMPLIFICATION`] times what came from
    /// it. A datagram that does not open is dropped and counted.
    pub(crate) fn handle_from_new_address(
        &mut self,
        ctx: &mut Ctx<'_>,
        bytes: &[u8],
        from: SocketAddr,
    ) -> Option<SocketAddr> {
        if self.role != Role::Server || !self.established || !self.is_open() {
            return None;
        }
        let s = self.link.secure.as_deref_mut()?;
        let d = Sealed::parse(bytes).filter(|d| d.token.is_none())?;
        let newest = s.session.window().is_newest(d.pn);
        let mut buf = std::mem::take(ctx.open_buf);
        let opened = match s.session.open(&d, &mut buf) {
            Ok(_) => true,
            Err(e) => {
                ctx.secure_drops.count(e);
                self.link.stats.datagrams_dropped += 1;
                false
            }
        };
        let mut moved = None;
        if opened {
            let s = self.link.secure.as_deref_mut()?;
            let answers = buf.len() >= DATAGRAM_HEADER_LEN + 1 + PATH_TOKEN_LEN
                && buf[0] == Channel::Unreliable.as_u8()
                && buf[DATAGRAM_HEADER_LEN] == UNRELIABLE_PATH_RESPONSE
                && matches!(s.probe, Some(p) if p.addr == from
                    && buf[DATAGRAM_HEADER_LEN + 1..DATAGRAM_HEADER_LEN + 1 + PATH_TOKEN_LEN]
                        == p.challenge);
            if answers {
                s.probe = None;
                let old = self.link.remote;
                self.link.remote = from;
                self.note_received(ctx, bytes.len());
                debug!("{}: moved from {old} to {from}", ctx.id);
                ctx.events.push_address_changed(ctx.id, from);
                moved = Some(old);
            } else {
                self.handle_plain(ctx, &buf, bytes.len());
                if newest && self.is_open() {
                    self.challenge_path(ctx, from, bytes.len());
                }
            }
        }
        *ctx.open_buf = buf;
        moved
    }

    /// Server: challenges `from` (a new address of the client) to prove it receives there.
    fn challenge_path(&mut self, ctx: &mut Ctx<'_>, from: SocketAddr, received: usize) {
        let cookie = self.link.cookie;
        let Some(s) = self.link.secure.as_deref_mut() else {
            return;
        };
        let probe = match s.probe {
            Some(ref mut p) if p.addr == from => p,
            _ => s.probe.insert(Probe {
                addr: from,
                challenge: rand::random(),
                received: 0,
                sent: 0,
            }),
        };
        probe.received += received as u64;
        let len = (DATAGRAM_HEADER_LEN + 1 + PATH_TOKEN_LEN + SEAL_OVERHEAD) as u64;
        if probe.sent + len > PATH_AMPLIFICATION * probe.received {
            return;
        }
        probe.sent += len;
        let challenge = probe.challenge;
        let head = path_head(cookie, UNRELIABLE_PATH_CHALLENGE);
        trace!("{}: challenging {from}", ctx.id);
        self.link.transmit_to(&mut *ctx.tx, &head, &challenge, from);
    }
}

/// The head of a path challenge or response: `[2][cookie][header]`.
fn path_head(cookie: u32, header: u8) -> [u8; DATAGRAM_HEADER_LEN + 1] {
    let c = cookie.to_le_bytes();
    [Channel::Unreliable.as_u8(), c[0], c[1], c[2], c[3], header]
}
