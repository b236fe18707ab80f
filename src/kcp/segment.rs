//! Segments as held in the queues, the per-instance pool of payload buffers, and the
//! capacity-growth rule shared by the queues.

use std::collections::VecDeque;

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
    pub(super) rto: u32,
    pub(super) fastack: u32,
    pub(super) xmit: u32,
    /// ikcp's `resendts`, unwrapped: `resend_key as u32 == resendts`, and keys of the same
    /// instance compare as a timeline (see `Kcp::time64`). [`Segment::UNSENT`] before the
    /// first transmission.
    pub(super) resend_key: i64,
    pub(super) data: Vec<u8>,
}

impl Segment {
    /// `resend_key` of a segment that has not been transmitted yet.
    pub(super) const UNSENT: i64 = i64::MIN;

    /// ikcp's `resendts`.
    pub(super) fn resendts(&self) -> u32 {
        self.resend_key as u32
    }

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

/// Free payload buffers kept for reuse, each of capacity `mss`.
#[derive(Debug)]
pub(super) struct Pool {
    bufs: Vec<Vec<u8>>,
    limit: usize,
}

impl Pool {
    pub(super) fn new(limit: usize) -> Pool {
        Pool {
            bufs: Vec::new(),
            limit,
        }
    }

    /// An empty buffer of capacity `mss`: a pooled one if there is one (a pooled buffer of
    /// another capacity, left by an earlier `mss`, is freed instead).
    pub(super) fn take(&mut self, mss: usize) -> Vec<u8> {
        match self.bufs.pop() {
            Some(mut buf) if buf.capacity() == mss => {
                buf.clear();
                buf
            }
            _ => Vec::with_capacity(mss),
        }
    }

    /// Keeps `buf` for reuse if the pool has room and `buf` has capacity `mss`.
    pub(super) fn put(&mut self, buf: Vec<u8>, mss: usize) {
        if self.bufs.len() < self.limit && buf.capacity() == mss {
            grow_vec(&mut self.bufs, self.limit);
            self.bufs.push(buf);
        }
    }

    /// Buffers in the pool.
    pub(super) fn len(&self) -> usize {
        self.bufs.len()
    }

    /// The most buffers kept.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    pub(super) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        self.bufs.truncate(limit);
        self.bufs.shrink_to(limit);
    }

    pub(super) fn clear(&mut self) {
        self.bufs.clear();
    }

    /// Keeps at most `keep` buffers and releases spare capacity.
    pub(super) fn trim(&mut self, keep: usize) {
        self.bufs.truncate(keep);
        self.bufs.shrink_to_fit();
    }

    /// Makes `shared` this pool's store of free buffers until [`Pool::give_back`], leaving
    /// `shared` empty. Buffers pooled here before move into `shared` first (as the limit
    /// allows) and this pool's own storage is freed, so a pool that only ever works on lent
    /// storage holds no memory of its own.
    pub(super) fn lend_from(&mut self, shared: &mut Vec<Vec<u8>>, mss: usize) {
        if self.bufs.capacity() > 0 {
            for buf in std::mem::take(&mut self.bufs) {
                if shared.len() < self.limit && buf.capacity() == mss {
                    grow_vec(shared, self.limit);
                    shared.push(buf);
                }
            }
        }
        std::mem::swap(&mut self.bufs, shared);
    }

    /// Hands the lent storage of [`Pool::lend_from`] back to `shared` (with the buffers
    /// freed into it meanwhile, minus those taken).
    pub(super) fn give_back(&mut self, shared: &mut Vec<Vec<u8>>) {
        std::mem::swap(&mut self.bufs, shared);
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.bufs.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.bufs.iter().map(|b| b.capacity()).sum::<usize>()
    }
}

impl Kcp {
    pub(super) fn new_segment(&mut self, data: &[u8]) -> Segment {
        let mut buf = self.pool.take(self.mss as usize);
        buf.extend_from_slice(data);
        Segment {
            frg: 0,
            wnd: 0,
            ts: 0,
            sn: 0,
            una: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
            resend_key: Segment::UNSENT,
            data: buf,
        }
    }

    pub(super) fn free_segment(&mut self, seg: Segment) {
        self.pool.put(seg.data, self.mss as usize);
    }
}

/// Makes room for one more element in `q`: doubles the capacity (from 1, so the queues of an
/// idle connection, which hold one ping at a time, stay at one element), but not beyond
/// `limit` unless one more element needs it. Keeping growth explicit keeps the capacity of
/// each window-sized queue at most its window.
pub(super) fn grow_deque<T>(q: &mut VecDeque<T>, limit: usize) {
    let need = q.len() + 1;
    if need > q.capacity() {
        let target = need.max(q.capacity().saturating_mul(2).min(limit));
        q.reserve_exact(target - q.len());
    }
}

/// [`grow_deque`] for a `Vec`.
pub(super) fn grow_vec<T>(v: &mut Vec<T>, limit: usize) {
    let need = v.len() + 1;
    if need > v.capacity() {
        let target = need.max(v.capacity().saturating_mul(2).min(limit));
        v.reserve_exact(target - v.len());
    }
}
