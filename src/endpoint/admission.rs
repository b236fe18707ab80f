//! Admission of new peers on a listening endpoint: the stateless handshake (a Hello gets a
//! reply computed from the datagram alone; nothing is stored) and the creation of a
//! connection once a datagram carries back the cookie of that reply. Also the short memory
//! of recently closed connections, so that their peers' redundant close datagrams are
//! counted as what they are rather than as strangers.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use log::{debug, trace};

use super::table::Table;
use super::{Shared, Transmit};
use crate::connection::extensions::{close_head, CloseCause};
use crate::connection::handshake::{
    is_handshake_reply, parse_client_hello, write_hello_reply, HELLO_REPLY_LEN,
};
use crate::connection::{Connection, Extensions};
use crate::io::AddrKey;
use crate::wire::datagram::{Channel, Datagram, UnreliableHeader};

/// How long the endpoint remembers a closed connection's address and cookie: the peer's
/// redundant close datagrams (kcp2k sends five at once) and data already in flight arrive
/// within a round trip or two.
const RECENTLY_CLOSED_MS: u64 = 2_000;
/// At most this many closed connections are remembered (about 64 KiB); the oldest is
/// forgotten first. Its datagrams then count as `dropped_unknown`, as before.
const RECENTLY_CLOSED_MAX: usize = 1024;

/// The address and cookie of connections that closed in the last [`RECENTLY_CLOSED_MS`].
#[derive(Debug, Default)]
pub(crate) struct RecentlyClosed {
    by_addr: HashMap<AddrKey, (u32, u64)>,
    order: VecDeque<(AddrKey, u64)>,
}

impl RecentlyClosed {
    /// Remembers that the connection of `remote` with `cookie` closed at `now_ms`.
    pub fn insert(&mut self, remote: SocketAddr, cookie: u32, now_ms: u64) {
        self.expire(now_ms);
        if self.order.len() >= RECENTLY_CLOSED_MAX {
            if let Some((key, at)) = self.order.pop_front() {
                self.forget(key, at);
            }
        }
        self.by_addr.insert(AddrKey(remote), (cookie, now_ms));
        self.order.push_back((AddrKey(remote), now_ms));
    }

    /// Whether a datagram from `from` carrying `cookie` belongs to a connection that closed
    /// recently.
    pub fn contains(&mut self, from: SocketAddr, cookie: u32, now_ms: u64) -> bool {
        if self.order.is_empty() {
            return false;
        }
        self.expire(now_ms);
        matches!(self.by_addr.get(&AddrKey(from)), Some(&(c, _)) if c == cookie && c != 0)
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(key, at)) = self.order.front() {
            if now_ms.saturating_sub(at) < RECENTLY_CLOSED_MS {
                break;
            }
            self.order.pop_front();
            self.forget(key, at);
        }
        if self.order.is_empty() && self.by_addr.capacity() > 64 {
            self.by_addr = HashMap::new();
            self.order = VecDeque::new();
        }
    }

    /// Forgets `key` if its entry is the one made at `at` (a later close of the same
    /// address keeps its own entry).
    fn forget(&mut self, key: AddrKey, at: u64) {
        if matches!(self.by_addr.get(&key), Some(&(_, t)) if t == at) {
            self.by_addr.remove(&key);
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.by_addr.capacity() * (std::mem::size_of::<(AddrKey, (u32, u64))>() + 8)
            + self.order.capacity() * std::mem::size_of::<(AddrKey, u64)>()
    }
}

/// A datagram from an endpoint without a connection. Nothing is stored for it: on a
/// listening endpoint a valid Hello gets the stateless reply and a reliable datagram whose
/// cookie verifies creates the connection; anything else is dropped and counted.
pub(super) fn on_stranger(
    table: &mut Table,
    shared: &mut Shared,
    out: &mut dyn Transmit,
    listening: bool,
    data: &[u8],
    from: SocketAddr,
) {
    #[cfg(feature = "secure")]
    if data.first().is_some_and(|&b| crate::secure::is_sealed(b)) {
        super::secure::on_sealed_stranger(table, shared, out, listening, data, from);
        return;
    }
    let Ok(d) = Datagram::parse(data) else {
        trace!("dropping {} bytes from unknown {from}", data.len());
        shared.stats.dropped_unknown += 1;
        return;
    };
    if shared
        .recently_closed
        .contains(from, d.cookie, shared.now.ms)
    {
        trace!("dropping a datagram of {from}'s closed connection");
        shared.stats.dropped_after_close += 1;
        return;
    }
    if !listening {
        trace!("dropping {} bytes from {from}: not a peer", data.len());
        shared.stats.dropped_unknown += 1;
        return;
    }
    // The proof of address: the client's reliable reply to our Hello, or — a kcp2k client
    // reports `Connected` on our Hello reply and may send unreliable messages before the
    // reliable ACK leaves at its next tick — an unreliable Data datagram. Either carries a
    // cookie only the source address could have learnt; admitting on the first keeps those
    // messages (the ACK that follows then acknowledges our Hello).
    let proof = match d.channel {
        Channel::Reliable => is_handshake_reply(d.payload),
        Channel::Unreliable => {
            d.payload.first() == Some(&UnreliableHeader::Data.as_u8()) && shared.draining.is_none()
        }
    };
    if proof {
        if let Some(accepted) = shared.key.verify_ext(&from, d.cookie, shared.now.ms) {
            if accepted.contains(Extensions::SECURE) || !shared.config.admits_unauthenticated() {
                // A secure handshake's proof comes sealed, with its token.
                trace!("dropping an unsealed proof of address from {from}");
                shared.stats.dropped_unknown += 1;
                return;
            }
            if shared.draining.is_some() {
                refuse(shared, out, from, d.cookie, accepted);
            } else {
                admit(table, shared, out, data, from, d.cookie, accepted);
            }
            return;
        }
    }
    match parse_client_hello(data) {
        Some(hello)
            if shared.draining.is_some() && !hello.offered.contains(Extensions::CLOSE_REASONS) =>
        {
            // A draining server admits nobody, and a peer without close reasons could not be
            // told why: no reply, so it does not believe it connected (a kcp2k client reports
            // `Connected` on the Hello reply).
            trace!("draining: no Hello reply to {from}");
            shared.stats.refused_draining += 1;
        }
        Some(hello) => {
            // The accepted extensions follow from this Hello alone and are bound into the
            // cookie, so admission recovers them without state.
            let mut accepted = if shared.config.kcpnet_extensions {
                hello.offered & Extensions::ALL
            } else {
                Extensions::NONE
            };
            if hello.offered.contains(Extensions::SECURE) && shared.config.secure_enabled() {
                // A token client: its token must open before anything is sent back.
                #[cfg(feature = "secure")]
                if !super::secure::hello_token_opens(shared, hello.token) {
                    trace!("no Hello reply to {from}: its connect token was refused");
                    return;
                }
                accepted = accepted | Extensions::SECURE;
                #[cfg(feature = "secure")]
                if hello.offered.contains(Extensions::AES_GCM)
                    && shared
                        .config
                        .security
                        .as_ref()
                        .is_some_and(|s| s.cipher == crate::secure::CipherSuite::Aes256Gcm)
                {
                    accepted = accepted | Extensions::AES_GCM;
                }
            } else if !shared.config.admits_unauthenticated() {
                trace!("no Hello reply to {from}: this server admits token clients only");
                shared.stats.refused_unauthenticated += 1;
                return;
            }
            let cookie = shared.key.current_with(&from, shared.now.ms, accepted);
            let wnd = shared.config.receive_window_size.min(u16::MAX as u32) as u16;
            let mut reply = [0u8; HELLO_REPLY_LEN];
            let n = write_hello_reply(
                hello.ts,
                cookie,
                accepted,
                wnd,
                shared.now.kcp(),
                &mut reply,
            );
            trace!("stateless Hello reply to {from}");
            shared.stats.hello_replies += 1;
            shared.send_datagram(out, &reply[..n], from);
        }
        None => {
            trace!("dropping {} bytes from unknown {from}", data.len());
            shared.stats.dropped_unknown += 1;
        }
    }
}

/// A draining endpoint's answer to a peer that proved its address: one Close datagram with
/// the drain's reason (the peer learns why it was not admitted), computed from the datagram
/// alone like the Hello reply — nothing is stored. A peer that did not negotiate close
/// reasons gets nothing.
fn refuse(
    shared: &mut Shared,
    out: &mut dyn Transmit,
    from: SocketAddr,
    cookie: u32,
    accepted: Extensions,
) {
    shared.stats.refused_draining += 1;
    let Some((code, message)) = shared.draining else {
        return;
    };
    if !accepted.contains(Extensions::CLOSE_REASONS) {
        return;
    }
    debug!("draining: refusing {from} ({code}: {message})");
    let head = close_head(cookie, CloseCause::App, code, message.len());
    let mut reply =
        [0u8; crate::connection::extensions::CLOSE_OVERHEAD + crate::event::MAX_CLOSE_MESSAGE];
    reply[..head.len()].copy_from_slice(&head);
    reply[head.len()..head.len() + message.len()].copy_from_slice(message.as_bytes());
    shared.send_datagram(out, &reply[..head.len() + message.len()], from);
}

/// Creates the connection of a peer that proved it receives at `from` (its datagram
/// carries the cookie of our stateless reply), and feeds it that datagram.
fn admit(
    table: &mut Table,
    shared: &mut Shared,
    out: &mut dyn Transmit,
    data: &[u8],
    from: SocketAddr,
    cookie: u32,
    accepted: Extensions,
) {
    if table.live() >= shared.config.max_connections {
        debug!("dropping {from}: max_connections reached");
        shared.stats.dropped_limit += 1;
        return;
    }
    let now = shared.now.kcp();
    let (config, buffers, output) = shared.parts_for_new_connection();
    let conn = Connection::new_server_verified_with(
        from, cookie, accepted, config, now, buffers, output, None,
    );
    let idx = table.insert(conn);
    debug!("{from} proved its address (slot {idx})");
    table.with_conn(shared, out, idx, |c, ctx| c.handle_datagram(ctx, data));
    if table.slots[idx].conn.is_established() {
        shared.stats.connections_accepted += 1;
    }
    table.mark_dirty(idx);
    table.settle(shared, idx, false);
}
