//! Events reported by [`crate::Server`] and [`crate::Client`], and the queue that holds them.
//!
//! Message bytes live in one reusable byte arena owned by the queue, so delivering a message
//! allocates nothing once the arena has grown to the traffic's working size. An [`Event`]
//! borrows from the arena until the next call that changes the queue.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use crate::error::ErrorCode;
use crate::wire::datagram::Channel;

/// The longest close message, in bytes: [`CloseMessage::MAX_LEN`], and the limit the
/// close-reasons extension's Close datagram enforces on the wire (`docs/PROTOCOL.md`).
pub(crate) const MAX_CLOSE_MESSAGE: usize = 128;

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Identifies one connection for its whole life. A slot reused by a later connection gets a
/// new generation, so an old id never reaches the new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    index: u32,
    generation: u32,
}

impl ConnectionId {
    pub(crate) fn new(index: usize, generation: u32) -> Self {
        ConnectionId {
            index: index as u32,
            generation,
        }
    }

    /// The slot index (reused after the connection closes).
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The generation: unique among the connections that used this slot.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// Index and generation packed in one `u64` (for logs or maps keyed by integers).
    pub fn to_u64(self) -> u64 {
        (self.generation as u64) << 32 | self.index as u64
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// A close message: at most [`CloseMessage::MAX_LEN`] bytes of UTF-8, held inline so that
/// [`DisconnectReason`] stays `Copy` and a disconnect reason needs no allocation to read.
/// Dereferences to `str`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseMessage {
    len: u8,
    bytes: [u8; CloseMessage::MAX_LEN],
}

impl CloseMessage {
    /// The longest message, in bytes (on the wire too; a smaller `mtu` lowers what a
    /// connection can send: see [`crate::Server::disconnect_with`]).
    pub const MAX_LEN: usize = MAX_CLOSE_MESSAGE;

    /// The message `text`, or `None` if it is longer than [`CloseMessage::MAX_LEN`] bytes.
    pub fn new(text: &str) -> Option<CloseMessage> {
        (text.len() <= Self::MAX_LEN).then(|| Self::truncated(text))
    }

    /// `text` cut to [`CloseMessage::MAX_LEN`] bytes at a character boundary.
    pub fn truncated(text: &str) -> CloseMessage {
        let text = truncate_utf8(text, Self::MAX_LEN);
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        CloseMessage {
            len: text.len() as u8,
            bytes,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ever built from a `&str` cut at a character boundary.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl Default for CloseMessage {
    fn default() -> Self {
        CloseMessage {
            len: 0,
            bytes: [0; Self::MAX_LEN],
        }
    }
}

impl std::ops::Deref for CloseMessage {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for CloseMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CloseMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection ended.
///
/// The `Remote…`, `App` and `Finished` variants need a kcpnet peer (they travel in the
/// close-reasons and half-close extensions, `docs/PROTOCOL.md`); a kcp2k peer's every close
/// arrives as [`DisconnectReason::Remote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// This side called `disconnect`, `disconnect_with` or `disconnect_graceful` (or a
    /// graceful disconnect completed).
    Local,
    /// The peer closed without a reason: kcp2k's Disconnect (every close of a kcp2k peer),
    /// or a kcpnet peer's `disconnect` / `disconnect_graceful`.
    Remote,
    /// Nothing was received for `timeout_ms`, the link died, or the handshake timed out.
    Timeout,
    /// The peer violated the protocol (see the preceding [`Event::Error`]).
    ProtocolError,
    /// The queues grew past the choke threshold.
    Congestion,
    /// The socket reported the peer unreachable, or this server shut down.
    Closed,
    /// The peer's application closed with a reason (`disconnect_with`): a kick with a code
    /// and a message, say.
    App {
        /// The application's code (its meaning is the application's).
        code: u32,
        /// The application's message.
        message: CloseMessage,
    },
    /// The peer's server shut down (`Server::shutdown`).
    RemoteShutdown,
    /// The peer closed because this side violated the protocol, as the peer saw it.
    RemoteProtocolError {
        /// The peer's error text (cut to [`CloseMessage::MAX_LEN`] bytes).
        message: CloseMessage,
    },
    /// The peer closed because it heard nothing from this side for its timeout, or its
    /// link to this side died (it reached us the other way).
    RemoteTimeout,
    /// The peer closed because its queues choked.
    RemoteCongestion,
    /// Both sides shut down their sending (`shutdown_send`) and every message was
    /// delivered both ways: the connection finished normally.
    Finished,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Local => f.write_str("closed by this side"),
            DisconnectReason::Remote => f.write_str("closed by the peer"),
            DisconnectReason::Timeout => f.write_str("timed out"),
            DisconnectReason::ProtocolError => f.write_str("the peer violated the protocol"),
            DisconnectReason::Congestion => f.write_str("congestion (queues choked)"),
            DisconnectReason::Closed => f.write_str("closed (unreachable or shut down)"),
            DisconnectReason::App { code, message } => {
                write!(f, "closed by the peer: code {code}: {message}")
            }
            DisconnectReason::RemoteShutdown => f.write_str("the peer's server shut down"),
            DisconnectReason::RemoteProtocolError { message } => {
                write!(f, "the peer saw a protocol error: {message}")
            }
            DisconnectReason::RemoteTimeout => f.write_str("the peer timed out"),
            DisconnectReason::RemoteCongestion => f.write_str("the peer's queues choked"),
            DisconnectReason::Finished => f.write_str("finished (both sides shut down)"),
        }
    }
}

/// Something that happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The handshake completed. On a server this happens only after the client proved it
    /// receives at its address (it echoed the server's cookie). On a client it means the
    /// server has admitted it: against a kcpnet server it comes once the server answered
    /// the client's proof of address (so it follows the server's `Connected`, and nothing
    /// sent from now on is dropped as a stranger's); against a kcp2k server (a Hello
    /// without kcpnet's extension block), on the server's Hello, as kcp2k's client. See
    /// `docs/PROTOCOL.md`, "Handshake".
    Connected {
        /// The connection.
        id: ConnectionId,
        /// The peer's address (IPv4-mapped IPv6 normalised to IPv4).
        addr: SocketAddr,
    },
    /// A message arrived.
    Data {
        /// The connection.
        id: ConnectionId,
        /// Reliable (ordered, exactly once) or unreliable.
        channel: Channel,
        /// The message, borrowed from the event queue.
        data: &'a [u8],
    },
    /// The connection ended. A server reports exactly one per `Connected`; a client reports
    /// one at the end of every connection attempt, connected or not. No `Data` follows it.
    Disconnected {
        /// The connection.
        id: ConnectionId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A problem on a connection; usually followed by `Disconnected`.
    Error {
        /// The connection.
        id: ConnectionId,
        /// kcp2k's error code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: &'a str,
    },
    /// The peer shut down its sending (`shutdown_send`, kcpnet peers only): every message
    /// it sent has been delivered before this event and no more will come. This side can
    /// still send until it shuts down too; the connection then ends with
    /// `Disconnected { reason: Finished }` on both sides.
    PeerSendClosed {
        /// The connection.
        id: ConnectionId,
    },
    /// A secure session's client now reaches the server from another address (a NAT
    /// rebinding, Wi-Fi to mobile): an authenticated datagram came from `addr` and the
    /// client answered the server's challenge there, so the connection moved to it with
    /// nothing lost (`docs/SECURITY.md`, "Address migration"). Server side only.
    AddressChanged {
        /// The connection.
        id: ConnectionId,
        /// The client's new address.
        addr: SocketAddr,
    },
}

impl Event<'_> {
    /// The connection the event belongs to.
    pub fn id(&self) -> ConnectionId {
        match self {
            Event::Connected { id, .. }
            | Event::Data { id, .. }
            | Event::Disconnected { id, .. }
            | Event::Error { id, .. }
            | Event::PeerSendClosed { id }
            | Event::AddressChanged { id, .. } => *id,
        }
    }
}

/// An [`Event`] that owns its data, for keeping events past the next queue call or moving
/// them to another thread. Made by [`Event::to_owned_event`] (or `From<Event>`); this
/// allocates, unlike [`Event`] itself.
///
/// The message payload type `B` is `Vec<u8>` unless chosen otherwise: any type that can be
/// made from a `Vec<u8>` works (`Box<[u8]>`, `Arc<[u8]>`, `bytes::Bytes`, …), so an
/// integration can hand out the one event type with the buffer type it prefers.
///
/// ```
/// use std::sync::Arc;
/// use kcpnet::{Event, OwnedEvent};
/// # fn keep(event: Event<'_>) {
/// let plain: OwnedEvent = event.to_owned_event(); // data: Vec<u8>
/// let shared: OwnedEvent<Arc<[u8]>> = OwnedEvent::from(event); // data: Arc<[u8]>
/// assert_eq!(plain.id(), shared.id());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwnedEvent<B = Vec<u8>> {
    /// See [`Event::Connected`].
    Connected {
        /// The connection.
        id: ConnectionId,
        /// The peer's address.
        addr: SocketAddr,
    },
    /// See [`Event::Data`].
    Data {
        /// The connection.
        id: ConnectionId,
        /// The channel.
        channel: Channel,
        /// The message.
        data: B,
    },
    /// See [`Event::Disconnected`].
    Disconnected {
        /// The connection.
        id: ConnectionId,
        /// Why.
        reason: DisconnectReason,
    },
    /// See [`Event::Error`].
    Error {
        /// The connection.
        id: ConnectionId,
        /// kcp2k's error code.
        code: ErrorCode,
        /// The explanation.
        message: String,
    },
    /// See [`Event::PeerSendClosed`].
    PeerSendClosed {
        /// The connection.
        id: ConnectionId,
    },
    /// See [`Event::AddressChanged`].
    AddressChanged {
        /// The connection.
        id: ConnectionId,
        /// The client's new address.
        addr: SocketAddr,
    },
}

impl<B> OwnedEvent<B> {
    /// The connection the event belongs to.
    pub fn id(&self) -> ConnectionId {
        match self {
            OwnedEvent::Connected { id, .. }
            | OwnedEvent::Data { id, .. }
            | OwnedEvent::Disconnected { id, .. }
            | OwnedEvent::Error { id, .. }
            | OwnedEvent::PeerSendClosed { id }
            | OwnedEvent::AddressChanged { id, .. } => *id,
        }
    }

    /// The same event with its payload converted by `f` (only `Data` has one).
    pub fn map_data<C>(self, f: impl FnOnce(B) -> C) -> OwnedEvent<C> {
        match self {
            OwnedEvent::Connected { id, addr } => OwnedEvent::Connected { id, addr },
            OwnedEvent::Data { id, channel, data } => OwnedEvent::Data {
                id,
                channel,
                data: f(data),
            },
            OwnedEvent::Disconnected { id, reason } => OwnedEvent::Disconnected { id, reason },
            OwnedEvent::Error { id, code, message } => OwnedEvent::Error { id, code, message },
            OwnedEvent::PeerSendClosed { id } => OwnedEvent::PeerSendClosed { id },
            OwnedEvent::AddressChanged { id, addr } => OwnedEvent::AddressChanged { id, addr },
        }
    }
}

impl Event<'_> {
    /// Copies the event into an [`OwnedEvent`] with a `Vec<u8>` payload (`OwnedEvent::from`
    /// makes any other payload type).
    pub fn to_owned_event(&self) -> OwnedEvent {
        OwnedEvent::from(self)
    }
}

impl<B: From<Vec<u8>>> From<&Event<'_>> for OwnedEvent<B> {
    fn from(event: &Event<'_>) -> Self {
        match *event {
            Event::Connected { id, addr } => OwnedEvent::Connected { id, addr },
            Event::Data { id, channel, data } => OwnedEvent::Data {
                id,
                channel,
                data: B::from(data.to_vec()),
            },
            Event::Disconnected { id, reason } => OwnedEvent::Disconnected { id, reason },
            Event::Error { id, code, message } => OwnedEvent::Error {
                id,
                code,
                message: message.to_string(),
            },
            Event::PeerSendClosed { id } => OwnedEvent::PeerSendClosed { id },
            Event::AddressChanged { id, addr } => OwnedEvent::AddressChanged { id, addr },
        }
    }
}

impl<B: From<Vec<u8>>> From<Event<'_>> for OwnedEvent<B> {
    fn from(event: Event<'_>) -> Self {
        OwnedEvent::from(&event)
    }
}

#[derive(Debug)]
enum Kind {
    Connected(SocketAddr),
    Data(Channel),
    /// Boxed: a reason with a message is 140 bytes, and records are many.
    Disconnected(Box<DisconnectReason>),
    PeerSendClosed,
    #[cfg_attr(not(feature = "secure"), allow(dead_code))]
    AddressChanged(SocketAddr),
    Error(ErrorCode, Cow<'static, str>),
    /// A data record cancelled because the application closed its connection.
    Cancelled,
}

#[derive(Debug)]
struct Record {
    id: ConnectionId,
    kind: Kind,
    start: usize,
    len: usize,
}

/// The queue behind `poll_event`: records plus one byte arena for message payloads.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    records: VecDeque<Record>,
    arena: Vec<u8>,
    /// Arena bytes before this offset belong to records already delivered.
    consumed: usize,
    pending_bytes: usize,
}

impl EventQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// True when no event is left to hand out (cancelled records are dropped first).
    pub(crate) fn is_drained(&mut self) -> bool {
        while matches!(self.records.front(), Some(r) if matches!(r.kind, Kind::Cancelled)) {
            self.records.pop_front();
        }
        self.records.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Bytes the arena can hold without growing.
    pub(crate) fn arena_capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Message bytes waiting to be delivered.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub(crate) fn push_connected(&mut self, id: ConnectionId, addr: SocketAddr) {
        self.push(id, Kind::Connected(addr));
    }

    pub(crate) fn push_disconnected(&mut self, id: ConnectionId, reason: DisconnectReason) {
        self.push(id, Kind::Disconnected(Box::new(reason)));
    }

    #[cfg_attr(not(feature = "secure"), allow(dead_code))]
    pub(crate) fn push_address_changed(&mut self, id: ConnectionId, addr: SocketAddr) {
        self.push(id, Kind::AddressChanged(addr));
    }

    pub(crate) fn push_peer_send_closed(&mut self, id: ConnectionId) {
        self.push(id, Kind::PeerSendClosed);
    }

    pub(crate) fn push_error(
        &mut self,
        id: ConnectionId,
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.push(id, Kind::Error(code, message.into()));
    }

    fn push(&mut self, id: ConnectionId, kind: Kind) {
        self.records.push_back(Record {
            id,
            kind,
            start: 0,
            len: 0,
        });
    }

    /// Copies a message into the arena and queues a data event.
    pub(crate) fn push_data(&mut self, id: ConnectionId, channel: Channel, data: &[u8]) {
        self.prepare();
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        self.commit(id, channel, start, 0, data.len());
    }

    /// Reserves `len` bytes at the end of the arena for a message that will be written in
    /// place (KCP's `recv` writes straight into it). Returns the slot's start offset.
    pub(crate) fn reserve(&mut self, len: usize) -> usize {
        self.prepare();
        let start = self.arena.len();
        self.arena.resize(start + len, 0);
        start
    }

    /// The bytes of a slot made by [`EventQueue::reserve`].
    pub(crate) fn slot_mut(&mut self, start: usize) -> &mut [u8] {
        &mut self.arena[start..]
    }

    /// Queues the reserved slot at `start` as a data event, skipping `skip` header bytes.
    pub(crate) fn commit_reserved(
        &mut self,
        id: ConnectionId,
        channel: Channel,
        start: usize,
        skip: usize,
    ) {
        let len = self.arena.len() - start;
        self.commit(id, channel, start, skip, len.saturating_sub(skip));
    }

    /// Gives back a reserved slot that will not become an event.
    pub(crate) fn unreserve(&mut self, start: usize) {
        self.arena.truncate(start);
    }

    fn commit(
        &mut self,
        id: ConnectionId,
        channel: Channel,
        start: usize,
        skip: usize,
        len: usize,
    ) {
        self.pending_bytes += len;
        self.records.push_back(Record {
            id,
            kind: Kind::Data(channel),
            start: start + skip,
            len,
        });
    }

    /// Drops delivered bytes from the arena when that is cheap or necessary.
    fn prepare(&mut self) {
        if self.records.is_empty() {
            self.arena.clear();
            self.consumed = 0;
        } else if self.consumed > 0 && self.consumed * 2 >= self.arena.len() {
            // Compact: move the undelivered tail to the front and rebase the records.
            let c = self.consumed;
            self.arena.copy_within(c.., 0);
            self.arena.truncate(self.arena.len() - c);
            for r in self.records.iter_mut() {
                if matches!(r.kind, Kind::Data(_)) {
                    r.start -= c;
                }
            }
            self.consumed = 0;
        }
    }

    /// Moves every record of `other` to the end of this queue (its message bytes are copied
    /// into this arena), leaving `other` empty.
    pub(crate) fn append(&mut self, other: &mut EventQueue) {
        if other.records.is_empty() {
            other.arena.clear();
            other.consumed = 0;
            return;
        }
        if self.records.is_empty() {
            // Nothing to keep here: take the other queue whole, keeping the larger arena.
            if self.arena.capacity() > other.arena.capacity() {
                self.arena.clear();
                self.arena.extend_from_slice(&other.arena);
                self.records = std::mem::take(&mut other.records);
                self.consumed = other.consumed;
                self.pending_bytes = other.pending_bytes;
            } else {
                std::mem::swap(self, other);
            }
            other.records.clear();
            other.arena.clear();
            other.consumed = 0;
            other.pending_bytes = 0;
            return;
        }
        while let Some(r) = other.records.pop_front() {
            match r.kind {
                Kind::Data(channel) => {
                    self.prepare();
                    let start = self.arena.len();
                    self.arena
                        .extend_from_slice(&other.arena[r.start..r.start + r.len]);
                    self.commit(r.id, channel, start, 0, r.len);
                }
                kind => self.push(r.id, kind),
            }
        }
        other.arena.clear();
        other.consumed = 0;
        other.pending_bytes = 0;
    }

    /// Cancels queued data events of `id` (its connection was closed by the application).
    pub(crate) fn cancel_data(&mut self, id: ConnectionId) {
        for r in self.records.iter_mut() {
            if r.id == id {
                if let Kind::Data(_) = r.kind {
                    self.pending_bytes -= r.len;
                    r.kind = Kind::Cancelled;
                }
            }
        }
    }

    /// Takes the next event. Its data borrows the queue.
    pub(crate) fn pop(&mut self) -> Option<Event<'_>> {
        loop {
            let Some(r) = self.records.pop_front() else {
                self.arena.clear();
                self.consumed = 0;
                return None;
            };
            let id = r.id;
            return Some(match r.kind {
                Kind::Cancelled => continue,
                Kind::Connected(addr) => Event::Connected { id, addr },
                Kind::Disconnected(reason) => Event::Disconnected {
                    id,
                    reason: *reason,
                },
                Kind::PeerSendClosed => Event::PeerSendClosed { id },
                Kind::AddressChanged(addr) => Event::AddressChanged { id, addr },
                Kind::Error(code, message) => {
                    // Park the message in the arena so the event can borrow it. `consumed`
                    // stays: data of later records may lie before the parked text, and
                    // compaction must not drop or rebase past it. The text is dead once the
                    // event is gone and is cleared with the rest of the arena.
                    let start = self.arena.len();
                    self.arena.extend_from_slice(message.as_bytes());
                    let text = std::str::from_utf8(&self.arena[start..]).unwrap_or("");
                    Event::Error {
                        id,
                        code,
                        message: text,
                    }
                }
                Kind::Data(channel) => {
                    self.pending_bytes -= r.len;
                    self.consumed = r.start + r.len;
                    Event::Data {
                        id,
                        channel,
                        data: &self.arena[r.start..r.start + r.len],
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> ConnectionId {
        ConnectionId::new(i, 1)
    }

    #[test]
    fn queue_delivers_in_order_and_reuses_the_arena() {
        let mut q = EventQueue::default();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        q.push_connected(id(0), addr);
        q.push_data(id(0), Channel::Reliable, b"hello");
        let s = q.reserve(4);
        q.slot_mut(s).copy_from_slice(&[3, b'a', b'b', b'c']);
        q.commit_reserved(id(0), Channel::Reliable, s, 1);
        q.push_error(id(0), ErrorCode::Timeout, "late");
        q.push_disconnected(id(0), DisconnectReason::Timeout);
        assert_eq!(q.pending_bytes(), 8);
        assert_eq!(q.pop(), Some(Event::Connected { id: id(0), addr }));
        assert_eq!(
            q.pop(),
            Some(Event::Data {
                id: id(0),
                channel: Channel::Reliable,
                data: b"hello"
            })
        );
        assert_eq!(
            q.pop(),
            Some(Event::Data {
                id: id(0),
                channel: Channel::Reliable,
                data: b"abc"
            })
        );
        assert_eq!(
            q.pop(),
            Some(Event::Error {
                id: id(0),
                code: ErrorCode::Timeout,
                message: "late"
            })
        );
        assert_eq!(
            q.pop(),
            Some(Event::Disconnected {
                id: id(0),
                reason: DisconnectReason::Timeout
            })
        );
        assert_eq!(q.pop(), None);
        assert_eq!(q.pending_bytes(), 0);
        let cap = q.arena.capacity();
        q.push_data(id(1), Channel::Unreliable, b"xy");
        assert_eq!(q.arena.capacity(), cap, "arena is reused");
    }

    #[test]
    fn cancelled_data_is_skipped_and_compaction_keeps_contents() {
        let mut q = EventQueue::default();
        for i in 0..10u8 {
            q.push_data(id(i as usize % 2), Channel::Reliable, &[i; 100]);
        }
        q.cancel_data(id(1));
        let mut seen = Vec::new();
        for _ in 0..3 {
            if let Some(Event::Data { data, .. }) = q.pop() {
                seen.push(data[0]);
            }
        }
        // Pushing now compacts the delivered half away.
        q.push_data(id(0), Channel::Unreliable, &[42; 10]);
        while let Some(ev) = q.pop() {
            if let Event::Data { data, .. } = ev {
                assert!(data.iter().all(|&b| b == data[0]));
                seen.push(data[0]);
            }
        }
        assert_eq!(seen, vec![0, 2, 4, 6, 8, 42]);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        let long = "é".repeat(100); // 200 bytes
        let cut = CloseMessage::truncated(&long);
        assert_eq!(cut.len(), MAX_CLOSE_MESSAGE);
        assert!(CloseMessage::new(&long).is_none());
        assert_eq!(CloseMessage::new("bye").as_deref(), Some("bye"));
    }

    #[test]
    fn owned_events_keep_every_variant_with_any_payload() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let events = [
            Event::Connected { id: id(0), addr },
            Event::Data {
                id: id(0),
                channel: Channel::Unreliable,
                data: b"abc",
            },
            Event::PeerSendClosed { id: id(0) },
            Event::Error {
                id: id(0),
                code: ErrorCode::Timeout,
                message: "late",
            },
            Event::Disconnected {
                id: id(0),
                reason: DisconnectReason::App {
                    code: 7,
                    message: CloseMessage::truncated("kicked"),
                },
            },
        ];
        for event in &events {
            let plain = event.to_owned_event();
            let boxed: OwnedEvent<Box<[u8]>> = OwnedEvent::from(event);
            assert_eq!(boxed.id(), event.id());
            assert_eq!(plain.clone().map_data(Vec::into_boxed_slice), boxed);
            match (event, plain) {
                (Event::Data { data, .. }, OwnedEvent::Data { data: owned, .. }) => {
                    assert_eq!(*data, &owned[..])
                }
                (Event::PeerSendClosed { .. }, OwnedEvent::PeerSendClosed { .. }) => {}
                (Event::Connected { addr: a, .. }, OwnedEvent::Connected { addr: b, .. }) => {
                    assert_eq!(*a, b)
                }
                (Event::Error { message: a, .. }, OwnedEvent::Error { message: b, .. }) => {
                    assert_eq!(*a, b)
                }
                (
                    Event::Disconnected { reason: a, .. },
                    OwnedEvent::Disconnected { reason: b, .. },
                ) => assert_eq!(*a, b),
                (e, o) => panic!("{e:?} became {o:?}"),
            }
        }
    }
}
