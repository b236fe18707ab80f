//! The per-connection send-rate cap (`Config::send_rate_limit`, `set_send_rate`; issue 19):
//! a token bucket over every byte the connection puts on the wire.
//!
//! * **What counts.** Every datagram this connection sends spends its size as it leaves
//!   ([`Link::send_raw`](super::Link)): data, ACKs, retransmissions, Pings, reports, FEC
//!   parity, sealed overhead included. The bucket may go into debt (an ACK or a
//!   retransmission is never held back); debt holds new data until it is repaid.
//! * **Unreliable first.** An unreliable message leaves at once while the bucket has
//!   tokens and nothing is held before it; otherwise it waits in a small FIFO (at most
//!   [`Pacer::held_limit`] bytes, a quarter second at the cap) that the next flushes send
//!   *before* KCP admits new reliable data. A message that finds the FIFO full is dropped
//!   and counted (`ConnectionStats::unreliable_dropped_rate`); with
//!   `SendFlags::NO_DELAY` a message that cannot leave now is dropped and counted at once.
//! * **Reliable data is paced** by KCP's admission of new segments into the send window
//!   ([`Kcp::set_admit_budget`](crate::kcp::Kcp::set_admit_budget)): each flush admits what
//!   the tokens left after the unreliable traffic cover. Queued data waits in KCP's send
//!   queue, as it does behind a full window.
//! * **Bursts.** The bucket holds at most [`BURST_MS`] of the rate (at least two full
//!   datagrams), so a connection idle for a while sends at most that much at line rate.
//!
//! Tokens are kept in milli-bytes, so a refill of `rate × elapsed ms` is exact at any rate.

use log::trace;

use super::{Connection, Ctx};
use crate::error::Error;
use crate::wire::batch::ENTRY_OVERHEAD;

/// How many milliseconds of the rate the bucket holds at most.
pub(crate) const BURST_MS: u32 = 50;

/// How many milliseconds of the rate held unreliable messages may fill.
const HELD_MS: u32 = 250;

/// The largest the held-message FIFO grows, whatever the rate.
const HELD_MAX: usize = 256 * 1024;

/// One connection's rate cap.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// Bytes per second allowed.
    rate: u32,
    /// Milli-bytes that may be sent now (negative: debt).
    tokens: i64,
    /// Milli-bytes the bucket holds at most.
    depth: i64,
    /// When `tokens` was last refilled (ms).
    last: u32,
    /// Unreliable messages held back by the cap: (length u16 LE, message) entries from
    /// `held_start` on.
    held: Vec<u8>,
    held_start: usize,
    /// The largest `held.len() - held_start` may grow.
    held_limit: usize,
    /// Where a held message is taken out to be sent (kept to allocate once).
    scratch: Vec<u8>,
    /// The cap was lifted while messages were held: they all leave at the next flush, then
    /// the pacer goes.
    release: bool,
}

impl Pacer {
    /// A cap of `rate` bytes per second for a connection whose datagrams are at most `mtu`
    /// bytes, starting with a full bucket at `now`.
    pub(crate) fn new(rate: u32, mtu: u32, now: u32) -> Pacer {
        let depth = (rate as i64 * BURST_MS as i64).max(2 * mtu as i64 * 1000);
        Pacer {
            rate,
            tokens: depth,
            depth,
            last: now,
            held: Vec::new(),
            held_start: 0,
            held_limit: ((rate as u64 * HELD_MS as u64 / 1000).min(HELD_MAX as u64) as usize)
                .max(2 * mtu as usize),
            scratch: Vec::new(),
            release: false,
        }
    }

    /// The cap in bytes per second.
    pub(crate) fn rate(&self) -> u32 {
        self.rate
    }

    /// Changes the rate (the tokens and held messages stay).
    pub(crate) fn set_rate(&mut self, rate: u32, mtu: u32) {
        let fresh = Pacer::new(rate, mtu, self.last);
        self.rate = rate;
        self.depth = fresh.depth;
        self.held_limit = fresh.held_limit;
        self.tokens = self.tokens.min(self.depth);
    }

    /// Adds the tokens earned since the last refill (time going backwards earns nothing).
    pub(crate) fn refill(&mut self, now: u32) {
        let elapsed = now.wrapping_sub(self.last);
        if elapsed == 0 || elapsed > u32::MAX / 2 {
            return;
        }
        self.last = now;
        let earned = (self.rate as i64).saturating_mul(elapsed as i64);
        self.tokens = self.tokens.saturating_add(earned).min(self.depth);
    }

    /// Spends `bytes` that just left.
    pub(crate) fn spend(&mut self, bytes: usize) {
        let cost = i64::try_from(bytes)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        self.tokens = self.tokens.saturating_sub(cost);
    }

    /// Whole bytes that may still leave now (negative: debt).
    pub(crate) fn available(&self) -> i64 {
        self.tokens.div_euclid(1000)
    }

    /// Milliseconds until the bucket is out of debt (0 if it has tokens).
    pub(crate) fn ready_in(&self) -> u32 {
        if self.tokens > 0 {
            return 0;
        }
        let missing = 1i64.saturating_sub(self.tokens);
        let rate = (self.rate as i64).max(1);
        let ms = missing.saturating_add(rate - 1) / rate;
        ms.clamp(1, 60_000) as u32
    }

    /// Bytes of unreliable messages held back (their framing included).
    pub(crate) fn held_bytes(&self) -> usize {
        self.held.len() - self.held_start
    }

    /// Whether unreliable messages are held back.
    pub(crate) fn holds(&self) -> bool {
        self.held_bytes() > 0
    }

    /// The most the held-message FIFO holds, in bytes.
    pub(crate) fn held_limit(&self) -> usize {
        self.held_limit
    }

    /// Holds `msg` back for a later flush; false (nothing held) if the FIFO is full.
    pub(crate) fn hold(&mut self, msg: &[u8]) -> bool {
        let Ok(len) = u16::try_from(msg.len()) else {
            return false;
        };
        if self.held_bytes() + msg.len() + ENTRY_OVERHEAD > self.held_limit {
            return false;
        }
        if self.held_start > 0 && self.held_start * 2 >= self.held.len() {
            self.held.drain(..self.held_start);
            self.held_start = 0;
        }
        self.held.extend_from_slice(&len.to_le_bytes());
        self.held.extend_from_slice(msg);
        true
    }

    /// Takes the oldest held message out into `into` (cleared first); false if none.
    pub(crate) fn take_held(&mut self, into: &mut Vec<u8>) -> bool {
        let rest = &self.held[self.held_start..];
        if rest.len() < ENTRY_OVERHEAD {
            return false;
        }
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        into.clear();
        into.extend_from_slice(&rest[ENTRY_OVERHEAD..ENTRY_OVERHEAD + len]);
        self.held_start += ENTRY_OVERHEAD + len;
        if self.held_start == self.held.len() {
            self.held.clear();
            self.held_start = 0;
        }
        true
    }

    /// Drops every held message; how many there were.
    pub(crate) fn discard_held(&mut self) -> u64 {
        let mut n = 0;
        let mut at = self.held_start;
        while at + ENTRY_OVERHEAD <= self.held.len() {
            at += ENTRY_OVERHEAD + u16::from_le_bytes([self.held[at], self.held[at + 1]]) as usize;
            n += 1;
        }
        self.held.clear();
        self.held_start = 0;
        n
    }

    /// How long `queued` more bytes (plus the held messages and the debt) take to leave
    /// at the cap, in ms.
    pub(crate) fn queued_ms(&self, queued: usize) -> u32 {
        let debt = (-self.available()).max(0) as u64;
        let bytes = queued as u64 + self.held_bytes() as u64 + debt;
        (bytes.saturating_mul(1000) / (self.rate as u64).max(1)).min(u32::MAX as u64) as u32
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Pacer>() + self.held.capacity() + self.scratch.capacity()
    }

    /// The most [`Pacer::heap_bytes`] reaches (the FIFO may hold up to its limit of slack
    /// before it compacts, and the scratch buffer one message).
    pub(crate) fn memory_bound(&self) -> usize {
        std::mem::size_of::<Pacer>() + 3 * self.held_limit
    }
}

/// The least a rate cap may be: a full datagram per second.
pub(crate) fn check_rate(rate: u32, mtu: u32) -> Result<(), Error> {
    if rate < mtu {
        return Err(Error::InvalidArgument(format!(
            "send rate cap {rate} bytes/s is below one datagram (mtu {mtu} bytes) per second; \
             use None for no cap"
        )));
    }
    Ok(())
}

impl Connection {
    /// Caps what this connection sends at `rate` bytes per second (`None`: no cap). Held
    /// unreliable messages leave at the next flush, under the new cap if there is one,
    /// all of them if the cap is lifted.
    pub(crate) fn set_send_rate(&mut self, rate: Option<u32>, now: u32) -> Result<(), Error> {
        let mtu = self.limits.mtu;
        match (rate, self.link.pacer.as_deref_mut()) {
            (Some(rate), Some(p)) => {
                check_rate(rate, mtu)?;
                p.refill(now);
                p.set_rate(rate, mtu);
                p.release = false;
            }
            (Some(rate), None) => {
                check_rate(rate, mtu)?;
                self.link.pacer = Some(Box::new(Pacer::new(rate, mtu, now)));
            }
            (None, Some(p)) if p.holds() => p.release = true,
            (None, _) => {
                self.link.pacer = None;
                self.kcp.set_admit_budget(None);
            }
        }
        Ok(())
    }

    /// The cap in bytes per second, if any.
    pub(crate) fn send_rate(&self) -> Option<u32> {
        self.link
            .pacer
            .as_deref()
            .filter(|p| !p.release)
            .map(Pacer::rate)
    }

    /// An unreliable message under the cap: whether it may leave now. If not, it is held
    /// for a later flush, or, with `no_delay` or when the FIFO is full, dropped and
    /// counted. Always true without a cap.
    pub(super) fn pace_unreliable(&mut self, now: u32, data: &[u8], no_delay: bool) -> bool {
        if self.link.pacer.is_none() {
            return true;
        }
        let pending = self.batch_bytes() as i64;
        let Some(p) = self.link.pacer.as_deref_mut() else {
            return true;
        };
        p.refill(now);
        if !p.holds() && (p.release || p.available() - pending > 0) {
            return true;
        }
        if no_delay {
            self.link.stats.unreliable_dropped_no_delay += 1;
        } else if !p.hold(data) {
            trace!(
                "{}: send rate cap: held unreliable messages over {} bytes, dropping one",
                self.link.remote,
                p.held_limit()
            );
            self.link.stats.unreliable_dropped_rate += 1;
        }
        false
    }

    /// Before a flush under the cap: refills the bucket, sends the held unreliable messages
    /// the tokens cover (and the batch they join), then gives KCP what is left to admit new
    /// reliable data with. Nothing without a cap.
    pub(super) fn pace_flush(&mut self, ctx: &mut Ctx<'_>) {
        let Some(p) = self.link.pacer.as_deref_mut() else {
            return;
        };
        p.refill(ctx.now);
        if p.holds() {
            let mut msg = std::mem::take(&mut p.scratch);
            loop {
                let pending = self.batch_bytes() as i64;
                let Some(p) = self.link.pacer.as_deref_mut() else {
                    break;
                };
                if (!p.release && p.available() - pending <= 0) || !p.take_held(&mut msg) {
                    break;
                }
                self.send_unreliable(ctx, &msg);
                self.link.stats.unreliable_sent += 1;
            }
            if let Some(p) = self.link.pacer.as_deref_mut() {
                p.scratch = msg;
            }
        }
        self.flush_unreliable(ctx);
        match self.link.pacer.as_deref() {
            Some(p) if p.release => {
                // The cap was lifted and what it held has left.
                self.link.pacer = None;
                self.kcp.set_admit_budget(None);
            }
            Some(p) => self.kcp.set_admit_budget(Some(p.available().max(0))),
            None => {}
        }
    }

    /// Whether held unreliable messages wait for the cap.
    pub(super) fn pace_holds(&self) -> bool {
        self.link.pacer.as_deref().is_some_and(Pacer::holds)
    }

    /// When held unreliable messages may leave (ms from now), if any wait.
    pub(super) fn pace_ready_in(&self) -> Option<u32> {
        self.link.pacer.as_deref().filter(|p| p.holds()).map(|p| {
            if p.release {
                0
            } else {
                p.ready_in()
            }
        })
    }

    /// Drops the held unreliable messages (the connection closed), counting them.
    pub(super) fn pace_discard(&mut self) {
        if let Some(p) = self.link.pacer.as_deref_mut() {
            self.link.stats.unreliable_dropped_rate += p.discard_held();
        }
    }

    /// The cap and the time what is queued takes to leave under it, for
    /// `ConnectionQuality`.
    pub(super) fn pace_quality(&self, pending_reliable: usize) -> (Option<u32>, Option<u32>) {
        match self.link.pacer.as_deref() {
            Some(p) => (
                Some(p.rate()),
                Some(p.queued_ms(pending_reliable + self.batch_bytes())),
            ),
            None => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_its_depth() {
        let mut p = Pacer::new(100_000, 1200, 0);
        // 50 ms of 100 kB/s = 5,000 bytes.
        assert_eq!(p.available(), 5_000);
        p.spend(8_000);
        assert_eq!(p.available(), -3_000);
        assert_eq!(p.ready_in(), 31);
        p.refill(10);
        assert_eq!(p.available(), -2_000);
        p.refill(1_000);
        assert_eq!(p.available(), 5_000);
        // Time going backwards earns nothing.
        p.spend(5_000);
        p.refill(999);
        assert_eq!(p.available(), 0);
    }

    #[test]
    fn a_slow_rate_still_lets_two_datagrams_through() {
        let p = Pacer::new(1_000, 1200, 0);
        assert_eq!(p.available(), 2_400);
        assert_eq!(p.held_limit(), 2_400);
    }

    #[test]
    fn held_messages_come_out_in_order_within_the_limit() {
        let mut p = Pacer::new(10_000, 1200, 0);
        assert_eq!(p.held_limit(), 2_500);
        assert!(p.hold(b"one"));
        assert!(p.hold(b"two"));
        assert!(!p.hold(&[0u8; 2_500]));
        let mut out = Vec::new();
        assert!(p.take_held(&mut out));
        assert_eq!(out, b"one");
        assert!(p.hold(b"three"));
        assert!(p.take_held(&mut out));
        assert_eq!(out, b"two");
        assert!(p.take_held(&mut out));
        assert_eq!(out, b"three");
        assert!(!p.take_held(&mut out));
        assert!(!p.holds());
        assert!(p.hold(b"x") && p.hold(b"y"));
        assert_eq!(p.discard_held(), 2);
        assert!(!p.holds());
    }

    #[test]
    fn extreme_rates_and_clocks_do_not_overflow() {
        let mut p = Pacer::new(u32::MAX, 65_507, 0);
        assert_eq!(p.held_limit(), HELD_MAX);
        p.refill(u32::MAX / 2);
        p.spend(usize::MAX >> 24);
        assert!(p.ready_in() >= 1 && p.ready_in() <= 60_000);
        let _ = p.queued_ms(usize::MAX >> 8);
        p.spend(usize::MAX);
        assert_eq!(p.ready_in(), 60_000);
        let mut q = Pacer::new(64, 64, u32::MAX - 5);
        q.spend(1_000_000);
        q.refill(10); // across the wrap
        assert_eq!(q.ready_in(), 60_000);
        assert!(q.queued_ms(0) > 15_000_000);
    }

    #[test]
    fn the_queue_estimate_counts_debt_and_held_bytes() {
        let mut p = Pacer::new(1_000, 100, 0);
        p.spend(200); // the 200-byte bucket is empty now
        assert_eq!(p.queued_ms(1_000), 1_000);
        p.spend(500);
        assert_eq!(p.queued_ms(1_000), 1_500);
        assert!(p.hold(&[1u8; 98]));
        assert_eq!(p.queued_ms(1_000), 1_600);
    }
}
