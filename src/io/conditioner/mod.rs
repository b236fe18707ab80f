//! The link conditioner: simulated loss, latency, jitter, reordering,
//! duplication and bandwidth limits around any [`Transport`].
//!
//! * `conditions.rs`: what is simulated ([`Conditions`], [`GilbertElliott`], [`Direction`])
//!   and its validation;
//! * `control.rs`: the settings, random streams and counters shared with
//!   [`ConditionerHandle`]s, and the fate each datagram draws;
//! * `mod.rs` (this file): the engine, [`LinkConditioner`]: the delay queues and the
//!   [`Transport`] around the inner one.

use std::{
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
    io,
    net::SocketAddr,
    time::Duration,
};

use super::{PollReport, Transport};
use crate::error::Error;

mod conditions;
mod control;
#[cfg(test)]
mod tests;

pub use conditions::{Conditions, Direction, GilbertElliott};
pub use control::{ConditionerControl, ConditionerHandle, ConditionerStats};

use control::Counters;

/// The most datagrams held in one direction's delay queue.
const MAX_QUEUED_DATAGRAMS: usize = 64 * 1024;
/// The most payload bytes held in one direction's delay queue.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// How many spare buffers each direction keeps for reuse.
const MAX_FREE_BUFFERS: usize = 1024;
/// Spare buffers larger than this are freed rather than kept.
const MAX_KEPT_BUFFER: usize = 65_536;
/// The size of the scratch buffer incoming datagrams are read into when the
/// receive direction is conditioned (larger than any UDP datagram).
const SCRATCH_SIZE: usize = 65_536;
/// The most datagrams one `recv_from` call reads from the inner transport.
const MAX_DRAIN_PER_CALL: usize = 1 << 20;

/// A datagram waiting in a delay queue; ordered by `(due, seq)`.
#[derive(Debug)]
struct Delayed {
    due: Duration,
    seq: u64,
    addr: SocketAddr,
    data: Vec<u8>,
    /// A duplicate copy (whose refusal by the inner transport is not a send drop: the
    /// application's datagram is the other copy).
    copy: bool,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// One direction's delay queue and its spare buffers.
#[derive(Debug, Default)]
struct DelayQueue {
    queue: BinaryHeap<Reverse<Delayed>>,
    queued_bytes: usize,
    next_seq: u64,
    free: Vec<Vec<u8>>,
}

impl DelayQueue {
    fn next_due(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse(d)| d.due)
    }

    /// Queue a copy of `data` for release at `due`; drops it (and counts the
    /// drop) if the queue is at its limits.
    fn enqueue(
        &mut self,
        counters: &Counters,
        due: Duration,
        addr: SocketAddr,
        data: &[u8],
        copy: bool,
    ) {
        if self.queue.len() >= MAX_QUEUED_DATAGRAMS
            || self.queued_bytes.saturating_add(data.len()) > MAX_QUEUED_BYTES
        {
            Counters::bump(&counters.dropped);
            return;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.extend_from_slice(data);
        self.queued_bytes += data.len();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Counters::bump(&counters.delayed);
        self.queue.push(Reverse(Delayed {
            due,
            seq,
            addr,
            data: buf,
            copy,
        }));
    }

    /// Take the earliest datagram if it is due by `now`.
    fn pop_due(&mut self, now: Duration) -> Option<Delayed> {
        if self.next_due()? > now {
            return None;
        }
        let Reverse(d) = self.queue.pop()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(d.data.len());
        Some(d)
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < MAX_FREE_BUFFERS && buf.capacity() <= MAX_KEPT_BUFFER {
            buf.clear();
            self.free.push(buf);
        }
    }
}

/// A [`Transport`] wrapper that simulates bad networks, like
/// GameNetworkingSockets' `FakePacketLoss`/`Lag`/`Reorder`/`Dup` settings.
///
/// Each direction has global [`Conditions`] (perfect by default) and optional
/// per-peer overrides keyed by the remote address, set through the conditioner itself
/// ([`ConditionerControl`]) or through a [`ConditionerHandle`] from
/// [`handle`](LinkConditioner::handle), which keeps working once the conditioner is boxed
/// inside a driver:
///
/// * **Send** conditions apply to datagrams passed to `send_to`. Delayed ones
///   are held in a queue and handed to the inner transport by
///   [`poll`](Transport::poll) once due (and opportunistically at the start of
///   `send_to` and `recv_from`). A delayed datagram the inner transport then refuses
///   (`Ok(false)` or an error) is reported in [`PollReport::send_drops`], since `send_to`
///   had accepted it.
/// * **Receive** conditions apply to datagrams read from the inner transport.
///   `recv_from` reads the inner transport into a delay queue and returns the
///   earliest datagram that is due by `now`, in (due time, arrival) order; a
///   datagram whose delay is zero is returned at once.
///
/// Datagrams whose fate is "no delay" pass straight through without queueing
/// or copying, and when a direction's conditions are perfect the only
/// overhead is reading one atomic flag (no lock); otherwise each datagram's fate takes
/// one uncontended lock.
///
/// Everything is driven by the `now` arguments (no wall-clock reads) and a
/// seeded generator, so the same seed and the same sequence of calls give the
/// same fates: with a virtual clock ([`ManualClock`](super::ManualClock)) and
/// a [`MemoryNetwork`](super::MemoryNetwork) a simulation is fully
/// deterministic. Memory is bounded: each direction's delay queue holds at
/// most 65 536 datagrams and 64 MiB; beyond that datagrams are dropped and
/// counted. Buffers are recycled, so the steady state does not allocate.
///
/// A datagram the simulated network drops still makes `send_to` return `Ok(true)`: from
/// the sender's point of view it went out and the network lost it.
#[derive(Debug)]
pub struct LinkConditioner<T: Transport> {
    inner: T,
    control: ConditionerHandle,
    send: DelayQueue,
    recv: DelayQueue,
    /// Delayed outgoing datagrams the inner transport refused when they came due, since
    /// the last `poll`.
    send_drops: u64,
    /// Where conditioned incoming datagrams are read to (allocated on first use).
    scratch: Vec<u8>,
}

impl<T: Transport> LinkConditioner<T> {
    /// Wrap `inner` with perfect conditions; `seed` determines every random
    /// decision.
    pub fn new(inner: T, seed: u64) -> Self {
        LinkConditioner {
            inner,
            control: ConditionerHandle::new(seed),
            send: DelayQueue::default(),
            recv: DelayQueue::default(),
            send_drops: 0,
            scratch: Vec::new(),
        }
    }

    /// A handle on this conditioner's settings and counters, for when the conditioner
    /// itself is out of reach (boxed in a `Server` or `Client`, or in another thread).
    pub fn handle(&self) -> ConditionerHandle {
        self.control.clone()
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwrap the transport; datagrams still in the delay queues are discarded.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The counters of one direction, or of both combined for
    /// [`Direction::Both`].
    pub fn stats(&self, direction: Direction) -> ConditionerStats {
        self.control.stats(direction)
    }

    /// How many datagrams wait in the delay queue of one direction, or of both
    /// for [`Direction::Both`].
    pub fn queued(&self, direction: Direction) -> usize {
        match direction {
            Direction::Send => self.send.queue.len(),
            Direction::Receive => self.recv.queue.len(),
            Direction::Both => self.send.queue.len() + self.recv.queue.len(),
        }
    }

    /// Hand every delayed outgoing datagram due by `now` to the inner
    /// transport. One it refuses is logged and counted as a send drop (unless it was a
    /// duplicate copy).
    #[inline]
    fn flush_send(&mut self, now: Duration) {
        // Nothing delayed (a perfect link): nothing to do on every call.
        if self.send.queue.is_empty() {
            return;
        }
        while let Some(d) = self.send.pop_due(now) {
            let refused = match self.inner.send_to(&d.data, d.addr, now) {
                Ok(sent) => !sent,
                Err(e) => {
                    log::debug!(
                        "link conditioner: delayed datagram to {} failed: {e}",
                        d.addr
                    );
                    true
                }
            };
            if refused && !d.copy {
                self.send_drops += 1;
            }
            self.send.recycle(d.data);
        }
    }
}

impl<T: Transport> Transport for LinkConditioner<T> {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.flush_send(now);
        let control = self.control.recv();
        for _ in 0..MAX_DRAIN_PER_CALL {
            if let Some(d) = self.recv.pop_due(now) {
                let len = d.data.len().min(buf.len());
                buf[..len].copy_from_slice(&d.data[..len]);
                let from = d.addr;
                self.recv.recycle(d.data);
                return Ok(Some((len, from)));
            }
            if control.is_perfect() {
                let got = self.inner.recv_from(buf, now)?;
                if got.is_some() {
                    Counters::bump(&control.counters.received);
                }
                return Ok(got);
            }
            if self.scratch.len() < SCRATCH_SIZE {
                self.scratch.resize(SCRATCH_SIZE, 0);
            }
            let Some((n, from)) = self.inner.recv_from(&mut self.scratch, now)? else {
                return Ok(None);
            };
            let n = n.min(self.scratch.len());
            Counters::bump(&control.counters.received);
            let fate = control.decide(from, now, n);
            let mut direct = None;
            for (i, delay) in fate.into_iter().enumerate() {
                let Some(delay) = delay else { continue };
                if delay.is_zero() && direct.is_none() {
                    let len = n.min(buf.len());
                    buf[..len].copy_from_slice(&self.scratch[..len]);
                    direct = Some((len, from));
                } else {
                    self.recv.enqueue(
                        &control.counters,
                        now.saturating_add(delay),
                        from,
                        &self.scratch[..n],
                        i > 0,
                    );
                }
            }
            if direct.is_some() {
                return Ok(direct);
            }
        }
        Ok(None)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> io::Result<bool> {
        self.flush_send(now);
        let control = self.control.send();
        Counters::bump(&control.counters.sent);
        if control.is_perfect() {
            return self.inner.send_to(data, to, now);
        }
        let fate = control.decide(to, now, data.len());
        let mut result = Ok(true);
        for (i, delay) in fate.into_iter().enumerate() {
            let Some(delay) = delay else { continue };
            if delay.is_zero() {
                match self.inner.send_to(data, to, now) {
                    Ok(false) if i == 0 => {
                        if result.is_ok() {
                            result = Ok(false);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
            } else {
                self.send.enqueue(
                    &control.counters,
                    now.saturating_add(delay),
                    to,
                    data,
                    i > 0,
                );
            }
        }
        result
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Releases the delayed outgoing datagrams due by `now`, then polls the inner transport;
    /// the report adds the delayed datagrams the inner transport refused to its own. If the
    /// inner poll fails, those drops are kept for the next poll.
    fn poll(&mut self, now: Duration) -> io::Result<PollReport> {
        self.flush_send(now);
        let inner = self.inner.poll(now)?;
        let own = PollReport::new(std::mem::take(&mut self.send_drops), false);
        Ok(inner.merge(own))
    }

    fn next_wakeup(&self) -> Option<Duration> {
        [
            self.send.next_due(),
            self.recv.next_due(),
            self.inner.next_wakeup(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Waits on the wrapped transport. Delayed datagrams held here are not waited for:
    /// the caller caps `timeout` by [`Transport::next_wakeup`].
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.wait(timeout)
    }
}

impl<T: Transport> ConditionerControl for LinkConditioner<T> {
    fn set_conditions(&self, direction: Direction, conditions: Conditions) -> Result<(), Error> {
        self.control.set_conditions(direction, conditions)
    }

    fn set_peer_conditions(
        &self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        self.control
            .set_peer_conditions(peer, direction, conditions)
    }

    fn clear_peer_conditions(&self, peer: SocketAddr) {
        self.control.clear_peer_conditions(peer)
    }

    fn conditioner_stats(&self) -> ConditionerStats {
        self.control.conditioner_stats()
    }

    fn reseed(&self, seed: u64) {
        self.control.reseed(seed)
    }
}
