//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay
//! (`tests/fuzz_corpus.rs`); compiled only with the `fuzzing` feature, which adds no
//! dependency. Not part of the public API: nothing here is stable.
//!
//! * [`connection_session`] drives a client and a listening [`crate::endpoint::Endpoint`]
//!   (the code the drivers run: admission, the connection table, timers) from raw fuzzer
//!   bytes, and checks the invariants the application relies on.
//! * [`memory_bound`], [`Input`], [`message`] / [`parse_message`] and [`StreamCheck`] are
//!   shared with the harnesses under `fuzz/harness/`.
//!
//! Every check panics with a message naming the broken invariant, so a fuzzer reports it as
//! a crash and the corpus replay as a failed test.

use std::net::SocketAddr;

use crate::config::Config;
use crate::connection::Connection;
use crate::event::{DisconnectReason, OwnedEvent};
use crate::wire::datagram::Channel;

mod session;
pub use session::connection_session;
#[cfg(feature = "secure")]
mod secure;
#[cfg(feature = "secure")]
pub use secure::secure_session;
#[cfg(feature = "fec")]
mod fec;
#[cfg(feature = "fec")]
pub use fec::fec_session;

/// The most bytes one connection may hold in the fuzz harnesses: the library's own bound
/// for `config` (the bound of `docs/PROTOCOL.md`, "Memory per connection", which
/// `Server::connection_memory_bound` reports) plus 64 bytes for the server's slot
/// bookkeeping around the connection.
pub fn memory_bound(config: &Config) -> usize {
    let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
    Connection::new_server_verified(nowhere, 1, config, 0).memory_bound() + 64
}

/// A reader over fuzzer bytes that never fails: once the input is exhausted every read
/// returns zeros (or nothing), so any byte string is a valid program.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    /// True once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next bit of a byte: `self.u8() & 1 == 1`.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` next bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
}

/// The smallest message [`message`] makes: 4 bytes of sequence number and a tag byte.
pub const MESSAGE_MIN: usize = 5;

/// A self-checking application message: `seq` (u32 LE), `tag`, then `len - 5` bytes derived
/// from both, so a receiver can tell a real message from garbage or a mix of two.
pub fn message(tag: u8, seq: u32, len: usize) -> Vec<u8> {
    let len = len.max(MESSAGE_MIN);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&seq.to_le_bytes());
    m.push(tag);
    m.extend((0..len - MESSAGE_MIN).map(|i| filler(tag, seq, i)));
    m
}

fn filler(tag: u8, seq: u32, i: usize) -> u8 {
    (seq as u8)
        .wrapping_mul(31)
        .wrapping_add(tag.wrapping_mul(7))
        .wrapping_add(i as u8)
        ^ (i >> 8) as u8
}

/// `(tag, seq)` of a message made by [`message`], or `None` if `data` is not one.
pub fn parse_message(data: &[u8]) -> Option<(u8, u32)> {
    if data.len() < MESSAGE_MIN {
        return None;
    }
    let seq = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let tag = data[4];
    let ok = data[MESSAGE_MIN..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == filler(tag, seq, i));
    ok.then_some((tag, seq))
}

/// Which end of a connection a [`StreamCheck`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server's connection: its first event, if any, is `Connected`.
    Server,
    /// A client's attempt: `Connected` is optional, `Disconnected` ends every attempt.
    Client,
}

/// The event-stream rules for one connection id: `Connected` first and at most once, no
/// `Data` before `Connected` or after `Disconnected`, an `Error` only right before the
/// `Disconnected`, at most one `Disconnected`. [`StreamCheck::finish`] then asks for
/// exactly one `Disconnected` per `Connected` (and per client attempt).
#[derive(Debug, Clone)]
pub struct StreamCheck {
    label: String,
    role: Role,
    /// Events seen so far.
    pub events: usize,
    /// `Connected` was seen.
    pub connected: bool,
    /// `Disconnected` was seen (and with which reason).
    pub disconnected: Option<DisconnectReason>,
    error_pending: bool,
}

impl StreamCheck {
    /// A checker for one connection; `label` names it in panic messages.
    pub fn new(label: impl Into<String>, role: Role) -> StreamCheck {
        StreamCheck {
            label: label.into(),
            role,
            events: 0,
            connected: false,
            disconnected: None,
            error_pending: false,
        }
    }

    /// Checks the next event of this connection.
    pub fn on_event(&mut self, e: &OwnedEvent) {
        let label = &self.label;
        assert!(
            self.disconnected.is_none(),
            "{label}: {e:?} after Disconnected"
        );
        if self.error_pending {
            assert!(
                matches!(e, OwnedEvent::Disconnected { .. }),
                "{label}: Error not followed by Disconnected but by {e:?}"
            );
        }
        match e {
            OwnedEvent::Connected { .. } => {
                assert!(!self.connected, "{label}: a second Connected");
                assert_eq!(self.events, 0, "{label}: Connected is not the first event");
                self.connected = true;
            }
            OwnedEvent::Data { .. } => {
                assert!(self.connected, "{label}: Data before Connected: {e:?}");
            }
            OwnedEvent::Error { message, .. } => {
                assert!(!message.is_empty(), "{label}: an Error without a message");
                self.error_pending = true;
            }
            OwnedEvent::Disconnected { reason, .. } => {
                self.disconnected = Some(*reason);
                self.error_pending = false;
            }
            OwnedEvent::PeerSendClosed { .. } => {
                assert!(self.connected, "{label}: PeerSendClosed before Connected");
            }
            OwnedEvent::AddressChanged { .. } => {
                assert!(self.connected, "{label}: AddressChanged before Connected");
                assert!(
                    self.role == Role::Server,
                    "{label}: AddressChanged on a client"
                );
            }
        }
        if self.role == Role::Server && self.events == 0 {
            assert!(
                self.connected,
                "{label}: a server connection's first event is {e:?}, not Connected"
            );
        }
        self.events += 1;
    }

    /// At the end of a session, after every connection was closed: exactly one
    /// `Disconnected` per `Connected` (and for every client attempt).
    pub fn finish(&self) {
        let label = &self.label;
        assert!(!self.error_pending, "{label}: Error without Disconnected");
        match self.role {
            Role::Server => assert_eq!(
                self.connected,
                self.disconnected.is_some(),
                "{label}: Connected {} but Disconnected {:?}",
                self.connected,
                self.disconnected
            ),
            Role::Client => assert!(
                self.disconnected.is_some(),
                "{label}: a client attempt ended without Disconnected"
            ),
        }
    }
}

/// Exactly-once, in-order delivery of one direction's self-checking messages
/// ([`message`]): reliable messages arrive in sending order without gaps or duplicates,
/// unreliable ones are messages that were sent. Checked only while `forged` is false: a
/// forged datagram carrying the right cookie can legitimately replace reliable data on its
/// own path and acknowledge (so drop) reliable data of the other direction (kcp2k has no
/// integrity protection), so the harnesses set it on both directions.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Reliable messages the sender's `send` accepted.
    pub sent: u32,
    /// Unreliable messages the sender's `send` accepted.
    pub sent_unreliable: u32,
    /// Reliable messages received so far (the next expected sequence number).
    pub received: u32,
    /// Something was forged on this path: content checks are off.
    pub forged: bool,
}

impl Delivery {
    /// Checks one received message `data` on `channel`, sent with `tag`.
    pub fn on_data(&mut self, label: &str, tag: u8, channel: Channel, data: &[u8]) {
        if self.forged {
            return;
        }
        let Some((t, seq)) = parse_message(data) else {
            panic!(
                "{label}: garbage delivered on an unforged path ({channel}, {} bytes)",
                data.len()
            );
        };
        assert_eq!(t, tag, "{label}: a message of another sender");
        match channel {
            Channel::Reliable => {
                assert_eq!(
                    seq, self.received,
                    "{label}: reliable message {seq} delivered, expected {} (sent {})",
                    self.received, self.sent
                );
                assert!(
                    seq < self.sent,
                    "{label}: reliable message {seq} never sent"
                );
                self.received += 1;
            }
            Channel::Unreliable => assert!(
                seq < self.sent_unreliable,
                "{label}: unreliable message {seq} never sent"
            ),
        }
    }
}
