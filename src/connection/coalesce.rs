//! Coalesced unreliable messages (the `COALESCE` extension, bit 6; `docs/PROTOCOL.md`,
//! "Coalesced unreliable messages"): between kcpnet peers, the small unreliable messages
//! sent to a peer within one tick share datagrams up to the MTU ([`crate::wire::batch`]),
//! and each is still its own message on arrival. The batch leaves when the next message
//! would not fit, at the end of the tick ([`Connection::flush`]), with a `FLUSH` send, or
//! before the connection's close datagrams. A batch of one goes out as the plain kcp2k
//! datagram it would have been. A kcp2k peer never sees one: it did not negotiate the bit.

use super::extensions::Extensions;
use super::{Connection, Ctx};
use crate::wire::batch::{self, BATCH_HEADER, ENTRY_OVERHEAD};
use crate::wire::datagram::{UnreliableHeader, DATAGRAM_HEADER_LEN};

/// The unreliable messages waiting to share a datagram.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The entries (length u16 LE, message), as on the wire after the header byte.
    bytes: Vec<u8>,
    /// How many messages `bytes` holds.
    count: u32,
}

impl Batch {
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

impl Connection {
    /// Whether this connection coalesces its unreliable messages: its config says so and
    /// the peer decodes batches.
    fn coalesces(&self) -> bool {
        self.limits.coalesce && self.ext.contains(Extensions::COALESCE)
    }

    /// Sends an unreliable message (checked by the caller): into the batch when this
    /// connection coalesces and the message is small enough to share a datagram, else at
    /// once, after whatever the batch holds (order is kept).
    pub(super) fn send_unreliable(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) {
        let room = self.limits.unreliable_max as usize;
        let entry = data.len() + ENTRY_OVERHEAD;
        if !self.coalesces() || entry > room {
            self.flush_unreliable(ctx);
            let head = self.link.unreliable_header(UnreliableHeader::Data);
            self.link.transmit(ctx.tx, &head, data);
            return;
        }
        if self.batch.bytes.len() + entry > room {
            self.flush_unreliable(ctx);
        }
        if batch::push_entry(&mut self.batch.bytes, data) {
            self.batch.count += 1;
        }
    }

    /// Whether unreliable messages wait in the batch or behind the rate cap (the connection
    /// must be flushed this tick).
    pub(crate) fn unreliable_pending(&self) -> bool {
        self.batch.count > 0 || self.pace_holds()
    }

    /// The size of the datagram the batch would make now (0 when empty).
    pub(super) fn batch_bytes(&self) -> usize {
        match self.batch.count {
            0 => 0,
            1 => self.batch.bytes.len() - ENTRY_OVERHEAD + DATAGRAM_HEADER_LEN + 1,
            _ => self.batch.bytes.len() + DATAGRAM_HEADER_LEN + 1,
        }
    }

    /// Sends the batch: as one coalesced datagram, or as a plain kcp2k datagram when it
    /// holds one message.
    pub(super) fn flush_unreliable(&mut self, ctx: &mut Ctx<'_>) {
        if self.batch.count == 0 {
            return;
        }
        let mut head = self.link.unreliable_header(UnreliableHeader::Data);
        let body = if self.batch.count == 1 {
            &self.batch.bytes[ENTRY_OVERHEAD..]
        } else {
            head[DATAGRAM_HEADER_LEN] = BATCH_HEADER;
            &self.batch.bytes[..]
        };
        self.link.transmit(ctx.tx, &head, body);
        self.batch.bytes.clear();
        self.batch.count = 0;
    }

    /// Drops what the batch holds (the connection closed without telling the peer).
    pub(super) fn discard_unreliable(&mut self) {
        self.batch.bytes.clear();
        self.batch.count = 0;
    }

    /// A coalesced datagram from the peer (its bytes after the header byte): every message
    /// is delivered as if it had come alone, or, if the datagram does not parse, none is and
    /// it is counted as dropped.
    pub(super) fn on_batch(&mut self, ctx: &mut Ctx<'_>, body: &[u8]) {
        match batch::entries(body) {
            Ok(messages) => {
                for msg in messages {
                    self.deliver_unreliable(ctx, msg);
                }
            }
            Err(_) => self.link.stats.datagrams_dropped += 1,
        }
    }
}
