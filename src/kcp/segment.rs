//! Segments as held in the queues, and the per-instance pool of payload buffers.

use super::Kcp;
use crate::wire::segment::{Command, SegmentHeader};

/// One segment held in a queue. `conv` and `cmd` are implied (ours, PUSH).
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) frg: u8,
    pub(super) wnd: u16,
    pub(super) ts: u32,
    pub(super) sn: u32,
    pub(super) una: u32,
    pub(super) resendts: u32,
    pub(super) rto: u32,
    pub(super) fastack: u32,
    pub(super) xmit: u32,
    pub(super) data: Vec<u8>,
}

impl Segment {
    pub(super) fn header(&self, conv: u32) -> SegmentHeader {
        SegmentHeader {
            conv,
            cmd: Command::Push,
            frg: self.frg,
            wnd: self.wnd,
            ts: self.ts,
            sn: self.sn,
            una: self.una,
            len: self.data.len() as u32,
        }
    }
}

impl Kcp {
    /// Releases pooled buffers beyond `keep` and spare queue capacity. Call on idle
    /// connections to bring their memory back down after a burst.
    pub fn trim_memory(&mut self, keep: usize) {
        self.pool.truncate(keep);
        self.pool.shrink_to_fit();
        self.snd_queue.shrink_to_fit();
        self.snd_buf.shrink_to_fit();
        self.rcv_queue.shrink_to_fit();
        self.rcv_buf.shrink_to_fit();
        self.acklist.shrink_to_fit();
    }

    /// Heap bytes currently held by this instance (buffers, pool and queue capacity).
    pub fn heap_bytes(&self) -> usize {
        let seg = std::mem::size_of::<Segment>();
        let queued: usize = self
            .snd_queue
            .iter()
            .chain(self.snd_buf.iter())
            .chain(self.rcv_queue.iter())
            .chain(self.rcv_buf.iter())
            .map(|s| s.data.capacity())
            .sum();
        let pooled: usize = self.pool.iter().map(|b| b.capacity()).sum();
        queued
            + pooled
            + self.pool.capacity() * std::mem::size_of::<Vec<u8>>()
            + (self.snd_queue.capacity()
                + self.snd_buf.capacity()
                + self.rcv_queue.capacity()
                + self.rcv_buf.capacity())
                * seg
            + self.acklist.capacity() * 8
            + self.buffer.capacity()
    }

    pub(super) fn new_segment(&mut self, data: &[u8]) -> Segment {
        let mut buf = self
            .pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.mss as usize));
        buf.clear();
        buf.extend_from_slice(data);
        Segment {
            frg: 0,
            wnd: 0,
            ts: 0,
            sn: 0,
            una: 0,
            resendts: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
            data: buf,
        }
    }

    pub(super) fn free_segment(&mut self, seg: Segment) {
        if self.pool.len() < self.pool_limit {
            self.pool.push(seg.data);
        }
    }
}
