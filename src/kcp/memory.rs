//! Memory accounting: what a `Kcp` holds ([`Kcp::heap_bytes`]), the most a peer can make
//! it hold ([`Kcp::memory_bound`]), and [`Kcp::trim_memory`].

use std::mem::size_of;

use super::segment::Segment;
use super::window::{timer_limit, RecvBuf, SendBuf, TIMER_BYTES};
use super::{Kcp, OVERHEAD};

/// The largest values of the settings that size the buffers since those buffers were
/// last empty. Capacities are capped by these, so lowering a setting while its buffers
/// hold memory never invalidates the bound; on a fresh instance the setting simply applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peaks {
    pub(super) mss: u32,
    pub(super) snd_wnd: u32,
    pub(super) rcv_wnd: u32,
    pub(super) ack_limit: usize,
}

impl Peaks {
    /// The new peak after a setting changes from `old` to `new`: `new` if the buffers it
    /// sizes hold no memory, else the larger of the two.
    pub(super) fn raise<T: Ord>(old: T, new: T, in_use: bool) -> T {
        if in_use {
            old.max(new)
        } else {
            new
        }
    }
}

impl Kcp {
    /// Lends this instance a pool of free payload buffers shared by many instances, until
    /// [`Kcp::reclaim_buffers`]: meanwhile `shared` *is* this instance's pool (`send` and
    /// `input` take buffers from it, freed segments go back to it up to
    /// [`Kcp::pool_limit`]) and the caller's `shared` is left empty. Buffers this instance
    /// pooled on its own before move into the shared pool first. O(1) once the instance
    /// has no pool of its own: with a lend/reclaim pair around each use, an idle instance
    /// holds no payload buffer and no pool storage.
    pub fn lend_buffers(&mut self, shared: &mut Vec<Vec<u8>>) {
        self.pool.lend_from(shared, self.mss as usize);
    }

    /// Gives the pool lent by [`Kcp::lend_buffers`] back to `shared`.
    pub fn reclaim_buffers(&mut self, shared: &mut Vec<Vec<u8>>) {
        self.pool.give_back(shared);
    }

    /// Exchanges this instance's output buffer (where `flush` assembles datagrams) with
    /// `other`: lending one buffer shared by many instances before a flush and taking it back
    /// after saves `reserved + mtu` bytes per instance. An empty buffer is grown at the next
    /// flush, so an instance works without one.
    pub fn swap_output_buffer(&mut self, other: &mut Vec<u8>) {
        std::mem::swap(&mut self.buffer, other);
    }

    /// Releases pooled buffers beyond `keep` and spare queue capacity. Call on idle
    /// connections to bring their memory back down after a burst.
    pub fn trim_memory(&mut self, keep: usize) {
        self.pool.trim(keep);
        self.snd_queue.shrink_to_fit();
        self.snd_buf.shrink_to_fit();
        self.rcv_queue.shrink_to_fit();
        self.rcv_buf.shrink_to_fit();
        self.acklist.shrink_to_fit();
    }

    /// Heap bytes currently held by this instance: segment buffers (queued, in flight,
    /// received and pooled), queue and ring capacity, timers, pending ACKs and the output
    /// buffer. It includes the send queue; see [`Kcp::snd_queue_heap_bytes`].
    pub fn heap_bytes(&self) -> usize {
        self.snd_queue_heap_bytes()
            + self.rcv_queue.capacity() * size_of::<Segment>()
            + self
                .rcv_queue
                .iter()
                .map(|s| s.data.capacity())
                .sum::<usize>()
            + self.pool.heap_bytes()
            + self.snd_buf.heap_bytes()
            + self.rcv_buf.heap_bytes()
            + self.acklist.capacity() * size_of::<(u32, u32)>()
            + self.buffer.capacity()
    }

    /// Heap bytes of the queues and rings alone: [`Kcp::heap_bytes`] without the free
    /// buffers of the pool and the output buffer (which a driver may lend and reclaim).
    pub fn queue_heap_bytes(&self) -> usize {
        self.heap_bytes() - self.pool.heap_bytes() - self.buffer.capacity()
    }

    /// Heap bytes of the queues' and rings' own storage (their capacity, whether in use or
    /// spare), without the segments' payload buffers: what [`Kcp::trim_memory`] can give
    /// back from an instance with nothing queued.
    pub fn ring_heap_bytes(&self) -> usize {
        (self.snd_queue.capacity() + self.rcv_queue.capacity()) * size_of::<Segment>()
            + self.snd_buf.storage_bytes()
            + self.rcv_buf.storage_bytes()
            + self.acklist.capacity() * size_of::<(u32, u32)>()
    }

    /// Heap bytes of the send queue (messages accepted by [`Kcp::send`] that the window has
    /// not admitted yet): the application, not the peer, decides how large it grows, so
    /// [`Kcp::memory_bound`] leaves it out.
    pub fn snd_queue_heap_bytes(&self) -> usize {
        self.snd_queue.capacity() * size_of::<Segment>()
            + self
                .snd_queue
                .iter()
                .map(|s| s.data.capacity())
                .sum::<usize>()
    }

    /// The most heap memory the send queue holds while it has at most `segments` segments
    /// (each buffer has capacity `mss`; the queue's capacity is at most twice its longest
    /// length).
    pub fn snd_queue_bound(&self, segments: usize) -> usize {
        segments * (2 * size_of::<Segment>() + self.mss as usize)
    }

    /// The most heap memory this instance can hold apart from its send queue, whatever the
    /// peer sends: `heap_bytes() - snd_queue_heap_bytes() <= memory_bound()` always holds.
    ///
    /// With `M` the largest `mss`, `Ws` / `Wr` the largest send / receive windows and `A`
    /// the largest ACK limit set so far, `P` the pool cap ([`Kcp::pool_limit`]), `R` the
    /// reserved prefix, and `S` / `Q` the sizes of a send-ring slot / queued segment:
    ///
    /// ```text
    ///   Ws * (S + M)              send buffer: at most Ws segments in flight
    /// + (2 * Ws + 16) * 16        retransmission timers
    /// + Wr * (S' + M)             receive buffer: sn in [rcv_nxt, rcv_nxt + Wr)
    /// + Wr * (Q + M)              receive queue: at most Wr segments
    /// + P * (24 + M)              pooled buffers
    /// + A * 8                     pending ACKs
    /// + R + M + 24                output buffer
    /// ```
    ///
    /// (`S'` is a receive-ring slot.) Every capacity is grown explicitly and capped by its
    /// window, and every segment buffer has capacity `mss`: a PUSH longer than `mss` is
    /// dropped ([`InputDrops::oversized`](super::InputDrops::oversized)).
    pub fn memory_bound(&self) -> usize {
        let m = self.peak.mss as usize;
        let ws = self.peak.snd_wnd as usize;
        let wr = self.peak.rcv_wnd as usize;
        ws * (SendBuf::SLOT_BYTES + m)
            + timer_limit(ws) * TIMER_BYTES
            + wr * (RecvBuf::SLOT_BYTES + m)
            + wr * (size_of::<Segment>() + m)
            + self.pool.limit() * (size_of::<Vec<u8>>() + m)
            + self.peak.ack_limit * size_of::<(u32, u32)>()
            + self.output_capacity()
    }

    /// The capacity of the output buffer: the reserved prefix plus the largest datagram,
    /// which is `mtu`, or one header and the longest segment queued before an MTU decrease.
    pub(super) fn output_capacity(&self) -> usize {
        self.reserved + (self.peak.mss + OVERHEAD) as usize
    }
}
