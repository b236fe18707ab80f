//! The two windows indexed by sequence number: the send buffer (segments in flight, with
//! their retransmission timers and lazy fast-ack counts) and the receive buffer (segments
//! received out of order).
//!
//! ikcp keeps both as sorted linked lists and scans them. Here slot `i` of a ring holds the
//! segment with `sn = base + i` (wrapping), so finding, inserting and removing a segment is
//! O(1), and popping acknowledged segments from the front is O(1) each.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::segment::{grow_deque, Segment};
use super::time_diff;

/// Timer heap entries are rebuilt from the live segments once this many stale entries may
/// have accumulated beyond one per segment.
const TIMER_SLACK: usize = 16;

/// The most entries the timer heap of a send window of `window` segments holds: one per
/// segment, plus one per segment sent in a flush, plus the slack.
pub(super) fn timer_limit(window: usize) -> usize {
    2 * window + TIMER_SLACK
}

/// Bytes of one retransmission-timer entry.
pub(super) const TIMER_BYTES: usize = std::mem::size_of::<Reverse<(i64, u32)>>();

/// One position of the send window.
#[derive(Debug)]
pub(super) struct SendSlot {
    seg: Option<Segment>,
    /// Lazy fast-ack credit: one unit for every segment at an earlier position (see
    /// [`SendBuf::add_fastack_below`]).
    mark: u32,
}

/// What the timer heap knows about the earliest retransmission relative to a time `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Earliest {
    /// Nothing in flight.
    Empty,
    /// The smallest `time_diff(resendts, now)` over the segments in flight; exact.
    Exact(i32),
    /// Some timer is 2^31 ms or more away from `now`, where wrapping comparisons stop
    /// being an order: the caller must scan the segments like ikcp.
    Unknown,
}

/// The send buffer: slot `i` holds the segment `sn = base + i`, or `None` once that segment
/// has been acknowledged out of order. The first slot is always occupied (acknowledged
/// slots at the front are dropped at once), so `base` is ikcp's `snd_una` and
/// `base + span` is `snd_nxt`.
///
/// Retransmission times live in each segment as an unwrapped 64-bit key (see
/// [`Segment::resend_key`]); a min-heap of `(key, sn)` with lazy deletion gives the earliest
/// one in O(1). An entry is valid while a segment with that `sn` is in the buffer and still
/// has that key; invalid entries are popped when they reach the top and the heap is rebuilt
/// when they could outnumber the segments.
///
/// Fast-ack counts are kept lazily for the non-conserving rule ("every segment before
/// `maxack` gets one more"): a mark on the slot of `maxack` stands for one unit for every
/// earlier slot, so the count of a segment is its own `fastack` plus the marks of all later
/// slots. [`SendBuf::walk`] folds the marks into the segments.
#[derive(Debug, Default)]
pub(super) struct SendBuf {
    slots: VecDeque<SendSlot>,
    base: u32,
    live: usize,
    marks: u32,
    timers: BinaryHeap<Reverse<(i64, u32)>>,
    /// An upper bound of the keys of the segments in flight.
    key_hi: i64,
}

impl SendBuf {
    /// Bytes of one slot.
    pub(super) const SLOT_BYTES: usize = std::mem::size_of::<SendSlot>();

    /// An empty buffer whose next sn is `sn`.
    #[cfg(test)]
    pub(super) fn starting_at(sn: u32) -> SendBuf {
        SendBuf {
            base: sn,
            key_hi: i64::MIN,
            ..SendBuf::default()
        }
    }

    /// The sequence number of the first slot (`snd_una`).
    pub(super) fn base(&self) -> u32 {
        self.base
    }

    /// One past the last slot (`snd_nxt`).
    pub(super) fn end(&self) -> u32 {
        self.base.wrapping_add(self.slots.len() as u32)
    }

    /// Segments in flight.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// True when nothing is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn index(&self, sn: u32) -> Option<usize> {
        let i = sn.wrapping_sub(self.base) as usize;
        (i < self.slots.len()).then_some(i)
    }

    /// Appends `seg`, whose `sn` must be [`SendBuf::end`]. `limit` caps the growth of the
    /// slot capacity (the send window).
    pub(super) fn push(&mut self, seg: Segment, limit: usize) {
        debug_assert_eq!(seg.sn, self.end());
        if self.slots.is_empty() {
            self.base = seg.sn;
        }
        grow_deque(&mut self.slots, limit);
        self.slots.push_back(SendSlot {
            seg: Some(seg),
            mark: 0,
        });
        self.live += 1;
    }

    /// Removes segment `sn` (an ACK), if it is in flight.
    pub(super) fn remove(&mut self, sn: u32) -> Option<Segment> {
        let i = self.index(sn)?;
        let seg = self.slots[i].seg.take()?;
        self.live -= 1;
        if i == 0 {
            self.trim_front();
        }
        self.clean_timers();
        Some(seg)
    }

    /// Removes every segment with `sn < una` (a cumulative ACK), handing each to `free`.
    pub(super) fn pop_below(&mut self, una: u32, mut free: impl FnMut(Segment)) {
        let mut popped = false;
        while !self.slots.is_empty() && time_diff(una, self.base) > 0 {
            if let Some(slot) = self.slots.pop_front() {
                self.marks = self.marks.wrapping_sub(slot.mark);
                if let Some(seg) = slot.seg {
                    self.live -= 1;
                    free(seg);
                }
            }
            self.base = self.base.wrapping_add(1);
            popped = true;
        }
        if popped {
            self.trim_front();
            self.clean_timers();
        }
    }

    /// Drops acknowledged slots at the front, so that the first slot is occupied.
    fn trim_front(&mut self) {
        while let Some(slot) = self.slots.front() {
            if slot.seg.is_some() {
                break;
            }
            self.marks = self.marks.wrapping_sub(slot.mark);
            self.slots.pop_front();
            self.base = self.base.wrapping_add(1);
        }
        if self.slots.is_empty() {
            self.marks = 0;
            self.key_hi = i64::MIN;
        }
    }

    /// Gives one unit of fast-ack credit to every segment with `sn` before `maxack`, in
    /// O(1). `maxack` must be in flight's range `[base, end)`. Returns false when there is
    /// no earlier slot (nothing changed).
    pub(super) fn add_fastack_below(&mut self, maxack: u32) -> bool {
        match self.index(maxack) {
            Some(i) if i > 0 => {
                self.slots[i].mark = self.slots[i].mark.wrapping_add(1);
                self.marks = self.marks.wrapping_add(1);
                true
            }
            _ => false,
        }
    }

    /// The segments with `sn` before `maxack`, in sequence order. Their `fastack` field
    /// excludes the lazy marks, which is fine for adding to it.
    pub(super) fn iter_below_mut(&mut self, maxack: u32) -> impl Iterator<Item = &mut Segment> {
        let n = self.index(maxack).unwrap_or(0);
        self.slots
            .iter_mut()
            .take(n)
            .filter_map(|slot| slot.seg.as_mut())
    }

    /// The segments in flight, in sequence order (`fastack` excludes the lazy marks).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.slots.iter().filter_map(|slot| slot.seg.as_ref())
    }

    /// Heap bytes of the slots, the timers and the segments' buffers.
    pub(super) fn heap_bytes(&self) -> usize {
        self.storage_bytes() + self.iter().map(|s| s.data.capacity()).sum::<usize>()
    }

    /// Heap bytes of the slots and the timers (capacity).
    pub(super) fn storage_bytes(&self) -> usize {
        self.slots.capacity() * Self::SLOT_BYTES + self.timers.capacity() * TIMER_BYTES
    }

    /// Releases spare capacity.
    pub(super) fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
        self.timers.shrink_to_fit();
    }

    /// True if the slots or the timers hold heap memory.
    pub(super) fn has_capacity(&self) -> bool {
        self.slots.capacity() > 0 || self.timers.capacity() > 0
    }

    /// Calls `f` on every segment in flight, in sequence order, with its full fast-ack
    /// count in `fastack` (the marks are folded in). A segment whose `resend_key` `f`
    /// changes gets a new timer entry. `limit` caps the growth of the timer heap.
    pub(super) fn walk(&mut self, limit: usize, mut f: impl FnMut(&mut Segment)) {
        if self.timers.len() > self.live + TIMER_SLACK {
            self.rebuild_timers();
        }
        let need = self.timers.len() + self.live;
        if need > self.timers.capacity() {
            let target = need.max(self.timers.capacity().saturating_mul(2).min(limit));
            self.timers.reserve_exact(target - self.timers.len());
        }
        let mut suffix = self.marks;
        let mut hi = i64::MIN;
        for slot in self.slots.iter_mut() {
            suffix = suffix.wrapping_sub(slot.mark);
            slot.mark = 0;
            let Some(seg) = slot.seg.as_mut() else {
                continue;
            };
            seg.fastack = seg.fastack.wrapping_add(suffix);
            let old = seg.resend_key;
            f(seg);
            if seg.resend_key != old && seg.resend_key != Segment::UNSENT {
                self.timers.push(Reverse((seg.resend_key, seg.sn)));
            }
            hi = hi.max(seg.resend_key);
        }
        self.marks = 0;
        self.key_hi = hi;
        self.clean_timers();
    }

    fn timer_is_live(&self, key: i64, sn: u32) -> bool {
        self.index(sn)
            .and_then(|i| self.slots[i].seg.as_ref())
            .is_some_and(|seg| seg.resend_key == key)
    }

    /// Pops invalid entries off the top of the timer heap, so that the top is the earliest
    /// timer of a segment in flight.
    fn clean_timers(&mut self) {
        while let Some(&Reverse((key, sn))) = self.timers.peek() {
            if self.timer_is_live(key, sn) {
                break;
            }
            self.timers.pop();
        }
    }

    fn rebuild_timers(&mut self) {
        let mut v = std::mem::take(&mut self.timers).into_vec();
        v.clear();
        v.extend(
            self.iter()
                .filter(|s| s.resend_key != Segment::UNSENT)
                .map(|s| Reverse((s.resend_key, s.sn))),
        );
        self.timers = BinaryHeap::from(v);
    }

    /// The earliest retransmission relative to `now` (the unwrapped time matching the
    /// keys): exact whenever every timer lies within 2^31 ms of `now`.
    pub(super) fn earliest(&self, now: i64) -> Earliest {
        let Some(&Reverse((key, _))) = self.timers.peek() else {
            return Earliest::Empty;
        };
        let lo = key.wrapping_sub(now);
        let hi = self.key_hi.wrapping_sub(now);
        if lo > i32::MIN as i64 && hi <= i32::MAX as i64 {
            Earliest::Exact(lo as i32)
        } else {
            Earliest::Unknown
        }
    }

    /// Number of timer entries (valid or not).
    #[cfg(test)]
    pub(super) fn timer_entries(&self) -> usize {
        self.timers.len()
    }
}

/// The receive buffer: slot `i` holds the segment `sn = rcv_nxt + i` if it has arrived.
/// The caller owns `rcv_nxt` and passes it in; popping the first slot advances it by one.
/// The last slot is always occupied, so the ring never holds more slots than the highest
/// received offset plus one.
#[derive(Debug, Default)]
pub(super) struct RecvBuf {
    slots: VecDeque<Option<Segment>>,
    live: usize,
}

impl RecvBuf {
    /// Bytes of one slot.
    pub(super) const SLOT_BYTES: usize = std::mem::size_of::<Option<Segment>>();

    /// Segments held.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// True if segment `sn` is held, `base` being `rcv_nxt`.
    pub(super) fn contains(&self, base: u32, sn: u32) -> bool {
        let i = sn.wrapping_sub(base) as usize;
        self.slots.get(i).is_some_and(|s| s.is_some())
    }

    /// Stores `seg` at offset `seg.sn - base`. The caller has checked that the offset is
    /// inside the receive window; `limit` (the largest window) caps the growth of the
    /// capacity. Gives the segment back if that sn is already held, or lies at `limit` or
    /// beyond.
    pub(super) fn insert(&mut self, base: u32, seg: Segment, limit: usize) -> Result<(), Segment> {
        let i = seg.sn.wrapping_sub(base) as usize;
        if i < self.slots.len() {
            if self.slots[i].is_some() {
                return Err(seg);
            }
        } else if i >= limit {
            // Outside the window: the caller should not have asked.
            return Err(seg);
        } else {
            let need = i + 1;
            if need > self.slots.capacity() {
                let cap = self.slots.capacity();
                let target = need.max(cap.saturating_mul(2).min(limit));
                self.slots.reserve_exact(target - self.slots.len());
            }
            self.slots.resize_with(need, || None);
        }
        self.slots[i] = Some(seg);
        self.live += 1;
        Ok(())
    }

    /// Removes the first slot if its segment (`sn == rcv_nxt`) has arrived.
    pub(super) fn pop_ready(&mut self) -> Option<Segment> {
        if !matches!(self.slots.front(), Some(Some(_))) {
            return None;
        }
        let seg = self.slots.pop_front().flatten()?;
        self.live -= 1;
        Some(seg)
    }

    /// The segments held, in sequence order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.slots.iter().flatten()
    }

    /// Heap bytes of the slots and the segments' buffers.
    pub(super) fn heap_bytes(&self) -> usize {
        self.storage_bytes() + self.iter().map(|s| s.data.capacity()).sum::<usize>()
    }

    /// Heap bytes of the slots (capacity).
    pub(super) fn storage_bytes(&self) -> usize {
        self.slots.capacity() * Self::SLOT_BYTES
    }

    /// Releases spare capacity.
    pub(super) fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
    }

    /// True if the slots hold heap memory.
    pub(super) fn has_capacity(&self) -> bool {
        self.slots.capacity() > 0
    }
}

#[cfg(test)]
mod tests {
    //! The rings against naive models: a sorted `Vec` of segments, ikcp style.

    use super::*;

    fn seg(sn: u32) -> Segment {
        Segment {
            frg: 0,
            wnd: 0,
            ts: 0,
            sn,
            una: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
            resend_key: Segment::UNSENT,
            data: vec![sn as u8],
        }
    }

    impl SendBuf {
        fn sns(&self) -> Vec<u32> {
            self.iter().map(|s| s.sn).collect()
        }
    }

    /// Deterministic xorshift32.
    struct Rng(u32);

    impl Rng {
        fn below(&mut self, n: u32) -> u32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            x % n
        }
    }

    #[test]
    fn send_buf_wraps_around_u32_max() {
        let start = u32::MAX - 3;
        let mut b = SendBuf::starting_at(start);
        for i in 0..8u32 {
            b.push(seg(start.wrapping_add(i)), 32);
        }
        assert_eq!(b.base(), start);
        assert_eq!(b.end(), 4);
        assert_eq!(b.len(), 8);
        // ACK out of order across the wrap: the front stays until it is acked itself.
        assert_eq!(b.remove(0).map(|s| s.sn), Some(0));
        assert_eq!(b.remove(u32::MAX).map(|s| s.sn), Some(u32::MAX));
        assert_eq!(b.base(), start);
        assert_eq!(b.sns(), vec![start, start + 1, start + 2, 1, 2, 3]);
        // Acking the front skips the already-acked slots.
        b.remove(start);
        b.remove(start + 1);
        b.remove(start + 2);
        assert_eq!(b.base(), 1);
        assert_eq!(b.sns(), vec![1, 2, 3]);
        // A cumulative ACK across what is left.
        let mut freed = Vec::new();
        b.pop_below(3, |s| freed.push(s.sn));
        assert_eq!(freed, vec![1, 2]);
        assert_eq!((b.base(), b.end(), b.len()), (3, 4, 1));
        b.pop_below(4, |_| {});
        assert!(b.is_empty());
        assert_eq!((b.base(), b.end()), (4, 4), "empty: base is snd_nxt");
    }

    #[test]
    fn send_buf_ignores_acks_outside_the_window() {
        let mut b = SendBuf::starting_at(100);
        for sn in 100..110 {
            b.push(seg(sn), 32);
        }
        // Never sent, far future, before the window, already acked.
        assert!(b.remove(110).is_none());
        assert!(b.remove(100 + (1 << 31)).is_none());
        assert!(b.remove(99).is_none());
        assert!(b.remove(105).is_some());
        assert!(b.remove(105).is_none(), "duplicate ACK");
        assert_eq!(b.len(), 9);
        // A una behind the window removes nothing.
        b.pop_below(50, |_| panic!("nothing below 50"));
        b.pop_below(100, |_| panic!("nothing below 100"));
        assert_eq!((b.base(), b.end()), (100, 110));
        // Marks need a segment before maxack.
        assert!(!b.add_fastack_below(100));
        assert!(!b.add_fastack_below(200));
        assert!(b.add_fastack_below(101));
    }

    /// Random pushes, ACKs, cumulative ACKs, fast-ack events and walks that re-key timers,
    /// against a sorted `Vec` processed the way ikcp does: the same segments, the same
    /// fast-ack counts, and `earliest` equal to the minimum over the list.
    #[test]
    fn send_buf_matches_a_linear_model() {
        for seed in 1..=20u32 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9));
            let start = u32::MAX - 40 + seed;
            let mut b = SendBuf::starting_at(start);
            let mut model: Vec<(u32, u32, i64)> = Vec::new(); // (sn, fastack, key)
            let mut next = start;
            let mut now: i64 = 1 << 40;
            for _ in 0..3000 {
                match rng.below(10) {
                    0..=2 if model.len() < 64 => {
                        b.push(seg(next), 64);
                        model.push((next, 0, Segment::UNSENT));
                        next = next.wrapping_add(1);
                    }
                    3 | 4 => {
                        let sn = b.base().wrapping_add(rng.below(80)).wrapping_sub(8);
                        let got = b.remove(sn).map(|s| s.sn);
                        let pos = model.iter().position(|m| m.0 == sn);
                        assert_eq!(got, pos.map(|p| model.remove(p).0));
                    }
                    5 => {
                        let una = b.base().wrapping_add(rng.below(8));
                        let mut freed = Vec::new();
                        b.pop_below(una, |s| freed.push(s.sn));
                        let keep = model.iter().position(|m| time_diff(una, m.0) <= 0);
                        let gone: Vec<u32> = model
                            .drain(..keep.unwrap_or(model.len()))
                            .map(|m| m.0)
                            .collect();
                        assert_eq!(freed, gone);
                    }
                    6 | 7 => {
                        let maxack = b.base().wrapping_add(rng.below(70));
                        if time_diff(maxack, b.end()) < 0 {
                            b.add_fastack_below(maxack);
                            for m in model.iter_mut() {
                                if time_diff(maxack, m.0) > 0 {
                                    m.1 += 1;
                                }
                            }
                        }
                    }
                    _ => {
                        now += rng.below(300) as i64;
                        let mut i = 0;
                        b.walk(2 * 64 + 16, |s| {
                            let m = &mut model[i];
                            assert_eq!((s.sn, s.fastack), (m.0, m.1));
                            if s.resend_key == Segment::UNSENT || rng.below(3) == 0 {
                                s.resend_key = now + rng.below(5000) as i64;
                            }
                            if rng.below(4) == 0 {
                                s.fastack = 0;
                            }
                            m.1 = s.fastack;
                            m.2 = s.resend_key;
                            i += 1;
                        });
                        assert_eq!(i, model.len());
                        assert!(b.timer_entries() <= 2 * model.len() + TIMER_SLACK);
                    }
                }
                assert_eq!(b.len(), model.len());
                assert_eq!(b.sns(), model.iter().map(|m| m.0).collect::<Vec<_>>());
                if let Some(first) = model.first() {
                    assert_eq!(b.base(), first.0);
                }
                let sent: Vec<i64> = model
                    .iter()
                    .map(|m| m.2)
                    .filter(|&k| k != Segment::UNSENT)
                    .collect();
                let expect = match sent.iter().min() {
                    None => Earliest::Empty,
                    Some(&k) => Earliest::Exact((k - now) as i32),
                };
                if sent.len() == model.len() {
                    assert_eq!(b.earliest(now), expect);
                }
            }
        }
    }

    #[test]
    fn earliest_is_unknown_beyond_half_the_clock() {
        let mut b = SendBuf::starting_at(0);
        b.push(seg(0), 4);
        b.push(seg(1), 4);
        let now = 1000;
        let mut keys = [now + 10, now + (1 << 31)].into_iter();
        b.walk(16, |s| s.resend_key = keys.next().unwrap_or_default());
        assert_eq!(b.earliest(now), Earliest::Unknown);
        // Once the far timer is acked and a walk refreshes the bound, it is exact again.
        b.remove(1);
        b.walk(16, |_| {});
        assert_eq!(b.earliest(now), Earliest::Exact(10));
        assert_eq!(b.earliest(now + 10), Earliest::Exact(0));
        assert_eq!(b.earliest(now - (1 << 31)), Earliest::Unknown);
        b.remove(0);
        assert_eq!(b.earliest(now), Earliest::Empty);
    }

    #[test]
    fn recv_buf_inserts_by_offset_and_rejects_duplicates() {
        let mut r = RecvBuf::default();
        let base = u32::MAX - 1;
        // Out of order, across the wrap.
        for sn in [1u32, u32::MAX, 3] {
            assert!(r.insert(base, seg(sn), 128).is_ok());
        }
        assert_eq!(r.len(), 3);
        assert!(r.contains(base, u32::MAX));
        assert!(!r.contains(base, base));
        assert!(!r.contains(base, 1000), "beyond the ring");
        let dup = r.insert(base, seg(1), 128);
        assert_eq!(dup.err().map(|s| s.sn), Some(1), "duplicate given back");
        assert_eq!(r.len(), 3);
        // Nothing is ready until rcv_nxt arrives.
        assert!(r.pop_ready().is_none());
        assert!(r.insert(base, seg(base), 128).is_ok());
        let mut next = base;
        let mut got = Vec::new();
        while let Some(s) = r.pop_ready() {
            assert_eq!(s.sn, next);
            got.push(s.sn);
            next = next.wrapping_add(1);
        }
        assert_eq!(got, vec![base, u32::MAX]);
        // sn 0 is missing: 1 and 3 wait.
        assert_eq!(next, 0);
        assert_eq!(r.iter().map(|s| s.sn).collect::<Vec<_>>(), vec![1, 3]);
        assert!(r.slots.capacity() <= 128);
    }

    #[test]
    fn recv_buf_capacity_stays_within_the_window() {
        let mut r = RecvBuf::default();
        assert!(r.insert(0, seg(99), 100).is_ok());
        assert_eq!(r.slots.len(), 100);
        assert!(r.slots.capacity() <= 100);
        for sn in 0..99 {
            assert!(r.insert(0, seg(sn), 100).is_ok());
        }
        assert_eq!(r.len(), 100);
        assert!(r.slots.capacity() <= 100);
    }
}
