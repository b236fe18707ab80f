//! The endpoint's part of secure sessions (the `secure` feature; `docs/SECURITY.md`): a
//! Hello's connect token checked before any reply, the sealed proof of address that admits
//! a token client (still stateless until then), the refusal of a token already in use from
//! another address, and the dispatch of a live session's datagram from a new address to its
//! connection (migration).

use std::collections::HashMap;
use std::net::SocketAddr;

use log::{debug, trace};

use super::table::Table;
use super::{Shared, Transmit};
use crate::connection::extensions::{close_head, CloseCause, Extensions};
use crate::connection::handshake::is_handshake_reply;
use crate::connection::{Connection, SecureLink};
use crate::io::AddrKey;
use crate::secure::{
    open_blob, session_key, CipherSuite, Grant, OpenError, Refusal, Sealed, Session, SALT_BYTES,
    TOKEN_BLOB_BYTES,
};
use crate::wire::datagram::{Channel, Datagram};

/// The token table holds `max(TOKENS_USED_FLOOR, 2 × max_connections)` entries at most.
const TOKENS_USED_FLOOR: usize = 1024;

/// Connect tokens that admitted a client, until they expire: a token is refused from
/// another address while its entry lives (`tokens_in_use`). Entries are made only for
/// clients that proved their address with a valid token, and at most
/// `max(1024, 2 × max_connections)` live at once (expired ones are dropped first; then a
/// new admission is refused until one expires): about 64 bytes each.
#[derive(Debug, Default)]
pub(crate) struct TokensUsed {
    map: HashMap<[u8; 16], (AddrKey, u64)>,
}

impl TokensUsed {
    /// Whether the token was used from an address other than `from` and has not expired.
    fn conflicts(&self, id: &[u8; 16], from: SocketAddr, now_unix: u64) -> bool {
        matches!(self.map.get(id), Some(&(addr, expires)) if addr != AddrKey(from) && expires > now_unix)
    }

    /// Records a use; false if the table is full of unexpired tokens.
    fn insert(&mut self, grant: &Grant, from: SocketAddr, now_unix: u64, cap: usize) -> bool {
        if self.map.len() >= cap {
            self.map.retain(|_, &mut (_, expires)| expires > now_unix);
            if self.map.len() >= cap {
                return false;
            }
        }
        self.map
            .insert(grant.token_id, (AddrKey(from), grant.expires_unix_secs));
        true
    }

    /// The client of token `id` moved to `to`.
    fn moved(&mut self, id: &[u8; 16], to: SocketAddr) {
        if let Some(entry) = self.map.get_mut(id) {
            entry.0 = AddrKey(to);
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<([u8; 16], (AddrKey, u64))>() + 8)
    }
}

impl Shared {
    /// Unix time now, in seconds.
    fn unix_now(&self) -> u64 {
        self.unix_origin_secs + self.now.at.as_secs()
    }

    fn count_refusal(&mut self, r: Refusal) {
        match r {
            Refusal::Invalid => self.stats.tokens_invalid += 1,
            Refusal::Expired => self.stats.tokens_expired += 1,
            Refusal::WrongServer => self.stats.tokens_wrong_server += 1,
        }
    }

    /// Opens a token blob with this server's settings; refusals are counted.
    fn open_token(&mut self, blob: Option<&[u8]>) -> Option<Grant> {
        let sec = self.config.security.as_ref()?;
        let Some(blob) = blob else {
            self.stats.tokens_invalid += 1;
            return None;
        };
        match open_blob(
            blob,
            &sec.key,
            sec.protocol_id,
            self.unix_now(),
            &sec.public_addresses,
        ) {
            Ok(g) => Some(g),
            Err(r) => {
                self.count_refusal(r);
                None
            }
        }
    }
}

/// Whether a Hello's token opens (a Hello that offers the secure extension is answered only
/// then: an invalid, expired or misaddressed token gets no reply, only a count).
pub(super) fn hello_token_opens(shared: &mut Shared, token: Option<&[u8]>) -> bool {
    shared.open_token(token).is_some()
}

/// A sealed datagram from an address without a connection.
pub(super) fn on_sealed_stranger(
    table: &mut Table,
    shared: &mut Shared,
    out: &mut dyn Transmit,
    listening: bool,
    data: &[u8],
    from: SocketAddr,
) {
    let Some(d) = Sealed::parse(data) else {
        shared.stats.dropped_unknown += 1;
        return;
    };
    if shared
        .recently_closed
        .contains(from, d.cookie, shared.now.ms)
    {
        shared.stats.dropped_after_close += 1;
        return;
    }
    if d.token.is_none() {
        migrate(table, shared, out, data, from, d.cookie);
        return;
    }
    if !listening || shared.config.security.is_none() {
        shared.stats.dropped_unknown += 1;
        return;
    }
    let Some(accepted) = shared
        .key
        .verify_ext(&from, d.cookie, shared.now.ms)
        .filter(|a| a.contains(Extensions::SECURE))
    else {
        trace!("dropping a sealed datagram from {from}: its cookie does not verify");
        shared.stats.dropped_unknown += 1;
        return;
    };
    let attachment = d.token.unwrap_or_default();
    let Some(grant) = shared.open_token(attachment.get(..TOKEN_BLOB_BYTES)) else {
        return;
    };
    let mut salt = [0u8; SALT_BYTES];
    salt.copy_from_slice(&attachment[TOKEN_BLOB_BYTES..]);
    let unix = shared.unix_now();
    if shared.tokens_used.conflicts(&grant.token_id, from, unix) {
        debug!("refusing {from}: its connect token is in use from another address");
        shared.stats.tokens_in_use += 1;
        return;
    }
    let suite = if accepted.contains(Extensions::AES_GCM) {
        CipherSuite::Aes256Gcm
    } else {
        CipherSuite::ChaCha20Poly1305
    };
    let mut session = Session::new(
        suite,
        &session_key(&grant.s2c, &salt),
        &session_key(&grant.c2s, &salt),
    );
    let mut plain = std::mem::take(&mut shared.open_buf);
    admit_sealed(
        table,
        shared,
        out,
        (data, &d, &mut plain),
        from,
        accepted,
        &mut session,
        grant,
    );
    shared.open_buf = plain;
}

/// The proof of address of a token client: opens it with the token's key, then creates the
/// secure connection (or, draining, answers with a sealed Close).
#[allow(clippy::too_many_arguments)]
fn admit_sealed(
    table: &mut Table,
    shared: &mut Shared,
    out: &mut dyn Transmit,
    (data, d, plain): (&[u8], &Sealed<'_>, &mut Vec<u8>),
    from: SocketAddr,
    accepted: Extensions,
    session: &mut Session,
    grant: Grant,
) {
    let pn = match session.check(d, plain) {
        Ok(pn) => pn,
        Err(e) => {
            match e {
                OpenError::Forged => shared.secure_drops.forged += 1,
                OpenError::Replayed => shared.secure_drops.replayed += 1,
            }
            return;
        }
    };
    let reply = matches!(Datagram::parse(plain), Ok(p) if p.channel == Channel::Reliable && is_handshake_reply(p.payload));
    if !reply {
        shared.stats.dropped_unknown += 1;
        return;
    }
    session.mark(pn);
    if let Some((code, message)) = shared.draining {
        shared.stats.refused_draining += 1;
        let head = close_head(d.cookie, CloseCause::App, code, message.len());
        let mut sealed = Vec::new();
        if session.seal(&head, message.as_bytes(), None, &mut sealed) {
            shared.send_datagram(out, &sealed, from);
        }
        return;
    }
    if table.live() >= shared.config.max_connections {
        debug!("dropping {from}: max_connections reached");
        shared.stats.dropped_limit += 1;
        return;
    }
    let cap = TOKENS_USED_FLOOR.max(shared.config.max_connections.saturating_mul(2));
    let unix = shared.unix_now();
    if !shared.tokens_used.insert(&grant, from, unix, cap) {
        shared.stats.tokens_in_use += 1;
        return;
    }
    let now = shared.now.kcp();
    let link = SecureLink::server(
        std::mem::replace(
            session,
            Session::new(CipherSuite::ChaCha20Poly1305, &[0; 32], &[0; 32]),
        ),
        grant.client_id,
        grant.user_data,
        grant.token_id,
    );
    let (config, buffers, output) = shared.parts_for_new_connection();
    let conn = Connection::new_server_verified_with(
        from,
        d.cookie,
        accepted,
        config,
        now,
        buffers,
        output,
        Some(link),
    );
    let idx = table.insert(conn);
    debug!("{from} proved its address with a connect token (slot {idx})");
    let wire_len = data.len();
    table.with_conn(shared, out, idx, |c, ctx| {
        c.handle_opened(ctx, plain, wire_len)
    });
    if table.slots[idx].conn.is_established() {
        shared.stats.connections_accepted += 1;
    }
    table.mark_dirty(idx);
    table.settle(shared, idx, false);
}

/// A live session's datagram from an address that is not its connection's: the connection
/// (found by cookie) opens it, takes its content and validates the new address; once the
/// client answered there, the table follows the move.
fn migrate(
    table: &mut Table,
    shared: &mut Shared,
    out: &mut dyn Transmit,
    data: &[u8],
    from: SocketAddr,
    cookie: u32,
) {
    let Some(&idx) = table.by_cookie.get(&cookie) else {
        shared.stats.dropped_unknown += 1;
        return;
    };
    let moved = table
        .with_conn(shared, out, idx, |c, ctx| {
            c.handle_from_new_address(ctx, data, from)
        })
        .flatten();
    if let Some(old) = moved {
        table.rekey(idx, old);
        shared.stats.migrations += 1;
        if let Some(token) = table.slots.get(idx).and_then(|s| s.conn.token_id()) {
            shared.tokens_used.moved(&token, from);
        }
    }
    table.mark_dirty(idx);
    table.remove_if_closed(shared, idx, false);
}
