//! Forward error correction on one connection (the `fec` feature; `docs/PROTOCOL.md`,
//! "FEC"): the encoder that wraps each outgoing datagram of an established connection into
//! a data shard and closes its group when it is full or at the end of the tick
//! ([`Connection::flush`]), and the decoder that hands data shards on at once and rebuilds
//! lost datagrams from parity. Negotiated as extension bit 5 (a peer that can decode);
//! each end encodes if its own `Config::fec` says so.
#![cfg_attr(
    not(feature = "fec"),
    allow(dead_code, unreachable_code, unused_variables)
)]

use super::{Connection, Ctx, Link, Tx};
use crate::config::Fec;
#[cfg(feature = "fec")]
use crate::wire::datagram::DATAGRAM_HEADER_LEN;

#[cfg(feature = "fec")]
use crate::fec::{Decoder, Encoder, Policy, Shard};

/// A connection's FEC state.
#[cfg(feature = "fec")]
#[derive(Debug)]
pub(crate) struct FecLink {
    /// `None` when this end does not encode (`Config::fec` off).
    enc: Option<Encoder>,
    dec: Decoder,
    /// The data-shard datagram being sent; the plain datagram being assembled.
    out: Vec<u8>,
    plain: Vec<u8>,
}

/// Without the feature no connection has FEC state.
#[cfg(not(feature = "fec"))]
#[derive(Debug)]
pub(crate) enum FecLink {}

/// Bytes FEC takes from a datagram's room: what a data shard adds (4) and what a parity
/// datagram has beyond its longest data datagram (4).
pub(crate) const FEC_OVERHEAD: usize = 8;
#[cfg(feature = "fec")]
const _: () = assert!(FEC_OVERHEAD == crate::fec::DATA_OVERHEAD + crate::fec::PARITY_OVERHEAD);

/// What FEC counted on a connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FecCounters {
    pub recovered: u64,
    pub parity_sent: u64,
    pub parity_bytes: u64,
    pub parity_received: u64,
    /// The encoder's current shape: data datagrams of a full group, parity per group.
    pub shape: Option<(u8, u8)>,
}

#[cfg(feature = "fec")]
impl FecLink {
    /// FEC state for a negotiated connection: decoding always, encoding as `fec` says.
    pub(crate) fn new(fec: Fec) -> FecLink {
        let policy = match fec {
            Fec::Fixed { data, parity } => Some(Policy::Fixed { k: data, m: parity }),
            Fec::Adaptive { data, parity } => Some(Policy::Adaptive { k: data, m: parity }),
            _ => None,
        };
        FecLink {
            enc: policy.map(Encoder::new),
            dec: Decoder::default(),
            out: Vec::new(),
            plain: Vec::new(),
        }
    }

    pub(crate) fn counters(&self) -> FecCounters {
        FecCounters {
            recovered: self.dec.stats.recovered,
            parity_sent: self.enc.as_ref().map_or(0, |e| e.parity_sent),
            parity_bytes: self.enc.as_ref().map_or(0, |e| e.parity_bytes),
            parity_received: self.dec.stats.parity_received,
            shape: self.enc.as_ref().map(Encoder::shape),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<FecLink>()
            + self.enc.as_ref().map_or(0, Encoder::heap_bytes)
            + self.dec.heap_bytes()
            + self.out.capacity()
            + self.plain.capacity()
    }
}

#[cfg(not(feature = "fec"))]
impl FecLink {
    pub(crate) fn counters(&self) -> FecCounters {
        match *self {}
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match *self {}
    }
}

impl Link {
    /// Sends `head ++ body` through FEC when this end encodes on an established connection:
    /// as a data shard, and the group's parity when the group is full. Returns false if FEC
    /// did not take it (the caller sends it as it is).
    pub(super) fn transmit_fec(&mut self, tx: &mut dyn Tx, head: &[u8], body: &[u8]) -> bool {
        #[cfg(feature = "fec")]
        {
            let Some(mut f) = self.fec.take() else {
                return false;
            };
            if !self.fec_encoding || f.enc.as_ref().is_none_or(Encoder::idle) {
                self.fec = Some(f);
                return false;
            }
            let to = self.remote;
            let FecLink {
                enc, out, plain, ..
            } = &mut *f;
            let Some(enc) = enc.as_mut() else {
                unreachable!("checked above")
            };
            let full = if body.is_empty() {
                enc.wrap(head, out)
            } else {
                plain.clear();
                plain.extend_from_slice(head);
                plain.extend_from_slice(body);
                enc.wrap(plain, out)
            };
            self.send_raw(tx, out, &[], to);
            if full {
                let cookie = self.cookie;
                enc.close(cookie, |p| self.send_raw(tx, p, &[], to));
            }
            self.fec = Some(f);
            true
        }
        #[cfg(not(feature = "fec"))]
        false
    }

    /// Closes the open FEC group (the end of a tick): its parity goes out.
    pub(super) fn close_fec_group(&mut self, tx: &mut dyn Tx) {
        #[cfg(feature = "fec")]
        {
            let Some(mut f) = self.fec.take() else {
                return;
            };
            if let Some(enc) = f.enc.as_mut().filter(|e| e.is_open()) {
                let (cookie, to) = (self.cookie, self.remote);
                enc.close(cookie, |p| self.send_raw(tx, p, &[], to));
            }
            self.fec = Some(f);
        }
    }

    /// Whether a FEC group waits for its parity (the connection must be flushed this tick).
    pub(super) fn fec_group_open(&self) -> bool {
        #[cfg(feature = "fec")]
        return self
            .fec
            .as_deref()
            .and_then(|f| f.enc.as_ref())
            .is_some_and(Encoder::is_open);
        #[cfg(not(feature = "fec"))]
        false
    }
}

impl Connection {
    /// Starts FEC on a connection that negotiated it, if this end encodes (`fec`): KCP's
    /// MSS and the message limits shrink by [`FEC_OVERHEAD`], so data and parity shards fit
    /// the MTU. A connection that only decodes gets its state with the first shard (FEC off
    /// costs nothing).
    pub(super) fn install_fec(&mut self, fec: Fec) {
        #[cfg(feature = "fec")]
        {
            if self.link.fec.is_some() || fec.bounds().is_none() {
                return;
            }
            self.shrink_room(FEC_OVERHEAD);
            self.link.fec = Some(Box::new(FecLink::new(fec)));
        }
    }

    /// The peer measured the loss of our datagrams: an adaptive encoder plans its groups by
    /// it.
    pub(super) fn fec_loss_measured(&mut self, estimate: crate::stats::LossEstimate) {
        #[cfg(feature = "fec")]
        if let Some(enc) = self.link.fec.as_deref_mut().and_then(|f| f.enc.as_mut()) {
            enc.set_loss((estimate.samples > 0).then_some((estimate.value, estimate.margin)));
        }
    }

    /// Whether a FEC group waits for its parity.
    pub(crate) fn fec_group_open(&self) -> bool {
        self.link.fec_group_open()
    }

    /// What FEC counted.
    pub(crate) fn fec_counters(&self) -> FecCounters {
        self.link
            .fec
            .as_deref()
            .map_or(FecCounters::default(), FecLink::counters)
    }

    /// A data or parity shard from the peer (plain, opened if the session is secure): a
    /// data shard goes on at once as the datagram it wraps; parity may rebuild lost ones,
    /// which go on as if they had arrived. Malformed shards, or shards with another cookie,
    /// are dropped and counted.
    pub(super) fn on_fec_shard(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8], wire_len: usize) {
        #[cfg(feature = "fec")]
        {
            let cookie_ok =
                bytes.get(1..DATAGRAM_HEADER_LEN) == Some(&self.link.cookie.to_le_bytes()[..]);
            let fec = self
                .link
                .fec
                .take()
                .or_else(|| Some(Box::new(FecLink::new(Fec::Off))));
            let (Some(mut f), Some(shard), true) = (fec, Shard::parse(bytes), cookie_ok) else {
                self.link.stats.datagrams_dropped += 1;
                return;
            };
            let mut rebuilt: Vec<Vec<u8>> = Vec::new();
            let mut deliver = None;
            match shard {
                Shard::Data {
                    group,
                    index,
                    inner,
                } => {
                    if f.dec
                        .on_data(group, index, inner, |r| rebuilt.push(r.to_vec()))
                    {
                        deliver = Some(inner);
                    }
                }
                Shard::Parity {
                    group,
                    index,
                    k,
                    m,
                    bytes,
                } => f
                    .dec
                    .on_parity(group, index, k, m, bytes, |r| rebuilt.push(r.to_vec())),
            }
            let mut plain = std::mem::take(&mut f.plain);
            self.link.fec = Some(f);
            let cookie = self.link.cookie.to_le_bytes();
            let mut hand_on = |c: &mut Connection, ctx: &mut Ctx<'_>, inner: &[u8], len| {
                if !matches!(inner.first(), Some(&(1 | 2))) {
                    // Only a kcp2k datagram travels in a shard (no nesting).
                    c.link.stats.datagrams_dropped += 1;
                    return;
                }
                plain.clear();
                plain.push(inner[0]);
                plain.extend_from_slice(&cookie);
                plain.extend_from_slice(&inner[1..]);
                c.handle_plain(ctx, &plain, len);
            };
            match deliver {
                Some(inner) => hand_on(self, ctx, inner, wire_len),
                None => self.note_received(ctx, wire_len),
            }
            for r in &rebuilt {
                hand_on(self, ctx, r, r.len() + DATAGRAM_HEADER_LEN - 1);
            }
            if let Some(f) = self.link.fec.as_deref_mut() {
                f.plain = plain;
            }
        }
    }
}
