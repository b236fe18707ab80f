//! The connection table: a slab of connections found by remote address, ids of index +
//! generation, the timer heap, and the dirty and throttled lists that decide which
//! connections a call touches.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, HashMap};

use super::Shared;
use super::Transmit;
use crate::connection::{Connection, ConnectionState, Ctx};
use crate::error::Error;
use crate::event::ConnectionId;
use crate::io::AddrKey;

/// One slab entry.
#[derive(Debug)]
pub(super) struct Slot {
    pub conn: Connection,
    pub generation: u32,
    /// Due time (scheduler ms) of this slot's live timer entry; `u64::MAX` if none.
    scheduled: u64,
    /// The connection's deadline (scheduler ms) as of its last `settle`. When it moved
    /// later than `scheduled`, the live entry is left in the heap and, once it comes due,
    /// put back at this time instead of running the connection for nothing.
    deadline: u64,
    /// The scheduler ms at which `process_dirty` processed it (`u64::MAX`: not since the
    /// last flush): `flush` need not process it again at the same ms.
    processed_at: u64,
    /// Listed in `Table::dirty`.
    dirty: bool,
    /// Listed in `Table::throttled`.
    throttled: bool,
    /// Closed, kept only for queries (an endpoint that does not listen keeps its ended
    /// connections until it is dropped, so a `Client` can still report their state and
    /// statistics): no address, no timers, never dirty.
    retired: bool,
}

// The fuzz harnesses (`fuzzing::memory_bound`) allow 64 bytes of slot bookkeeping around a
// connection.
const _: () = assert!(std::mem::size_of::<Slot>() <= std::mem::size_of::<Connection>() + 64);

/// Bytes a slot adds to its connection's inline state.
pub(super) const SLOT_OVERHEAD: usize = std::mem::size_of::<Slot>();

/// The connections: a slab found by address, the timer heap, the dirty list.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub slots: slab::Slab<Slot>,
    pub by_addr: HashMap<AddrKey, usize>,
    /// Secure connections by cookie, to find a session whose client's address changed
    /// (the first connection of a cookie only: two secure clients with the same cookie, a
    /// 2⁻³¹ chance per pair, leave the second without migration).
    pub by_cookie: HashMap<u32, usize>,
    next_generation: u32,
    /// Timer entries, [`timer_entry`]s: due time, slot, generation in one `u128` (cheap to
    /// compare and move). Entries whose slot was rescheduled or reused are skipped.
    timers: BinaryHeap<Reverse<u128>>,
    dirty: Vec<usize>,
    /// Connections whose complete messages wait for room in the event queue.
    throttled: Vec<usize>,
    /// Live (not retired) connections.
    live: usize,
}

/// A timer entry: due time (scheduler ms) in the high 64 bits, then slot index and
/// generation, so entries order by due time.
fn timer_entry(due: u64, idx: usize, generation: u32) -> u128 {
    (due as u128) << 64 | ((idx as u32) as u128) << 32 | generation as u128
}

/// The due time, slot index and generation of a timer entry.
fn timer_parts(entry: u128) -> (u64, usize, u32) {
    (
        (entry >> 64) as u64,
        (entry >> 32) as u32 as usize,
        entry as u32,
    )
}

impl Table {
    pub fn new() -> Table {
        Table {
            next_generation: 1,
            ..Table::default()
        }
    }

    /// Connections not yet closed.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn slot(&self, id: ConnectionId) -> Option<&Slot> {
        self.slots
            .get(id.index())
            .filter(|s| s.generation == id.generation())
    }

    /// The slot of a connection this endpoint still holds, or why there is none:
    /// `ConnectionClosed` for an id this endpoint handed out whose connection has ended,
    /// `UnknownConnection` otherwise.
    pub fn index_of(&self, id: ConnectionId) -> Result<usize, Error> {
        if self.slot(id).is_some() {
            return Ok(id.index());
        }
        let issued = id.generation() != 0 && id.generation() < self.next_generation;
        Err(if issued {
            Error::ConnectionClosed
        } else {
            Error::UnknownConnection
        })
    }

    /// Stores a new connection for its remote address; its slot index.
    pub fn insert(&mut self, conn: Connection) -> usize {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let remote = conn.remote();
        let idx = self.slots.insert(Slot {
            conn,
            generation,
            scheduled: u64::MAX,
            deadline: u64::MAX,
            processed_at: u64::MAX,
            dirty: false,
            throttled: false,
            retired: false,
        });
        self.by_addr.insert(AddrKey(remote), idx);
        if self.slots[idx].conn.token_id().is_some() {
            let cookie = self.slots[idx].conn.cookie();
            self.by_cookie.entry(cookie).or_insert(idx);
        }
        self.live += 1;
        idx
    }

    /// Removes the connection in slot `idx` at once, without a trace (it never ran).
    #[cfg(feature = "secure")]
    pub fn discard(&mut self, idx: usize) {
        if let Some(slot) = self.slots.try_remove(idx) {
            let remote = slot.conn.remote();
            if self.by_addr.get(&AddrKey(remote)) == Some(&idx) {
                self.by_addr.remove(&AddrKey(remote));
            }
            if !slot.retired {
                self.live -= 1;
            }
        }
    }

    /// The connection in slot `idx` moved from `old` to its current remote address.
    #[cfg_attr(not(feature = "secure"), allow(dead_code))]
    pub fn rekey(&mut self, idx: usize, old: std::net::SocketAddr) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        if self.by_addr.get(&AddrKey(old)) == Some(&idx) {
            self.by_addr.remove(&AddrKey(old));
        }
        self.by_addr.insert(AddrKey(slot.conn.remote()), idx);
    }

    /// The id of the connection in slot `idx`.
    pub fn id_of(&self, idx: usize) -> Option<ConnectionId> {
        self.slots
            .get(idx)
            .map(|s| ConnectionId::new(idx, s.generation))
    }

    /// Runs `f` on the connection in slot `idx` (if any and not retired).
    pub fn with_conn<R>(
        &mut self,
        shared: &mut Shared,
        out: &mut dyn Transmit,
        idx: usize,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(idx).filter(|s| !s.retired)?;
        let id = ConnectionId::new(idx, slot.generation);
        Some(shared.with_conn(out, &mut slot.conn, id, f))
    }

    pub fn mark_dirty(&mut self, idx: usize) {
        if let Some(slot) = self.slots.get_mut(idx) {
            if !slot.dirty && !slot.retired {
                slot.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Bookkeeping after a connection changed: throttling, removal of closed
    /// connections, and rescheduling.
    pub fn settle(&mut self, shared: &mut Shared, idx: usize, retain: bool) {
        if self.remove_if_closed(shared, idx, retain) {
            return;
        }
        let Some(slot) = self.slots.get_mut(idx).filter(|s| !s.retired) else {
            return;
        };
        if slot.conn.is_throttled() && !slot.throttled {
            slot.throttled = true;
            self.throttled.push(idx);
        }
        let due = shared.now.to_ms(slot.conn.next_deadline(shared.now.kcp()));
        slot.deadline = due;
        if due < slot.scheduled || slot.scheduled == u64::MAX {
            slot.scheduled = due;
            self.timers
                .push(Reverse(timer_entry(due, idx, slot.generation)));
        }
    }

    /// Removes the connection in slot `idx` if it has closed, so its address is free for a
    /// new handshake at once (with `retain`, the slot stays for queries, retired); whether
    /// it did. The address and cookie go to the recently-closed list, so the peer's
    /// redundant close datagrams are counted as such, not as strangers.
    pub fn remove_if_closed(&mut self, shared: &mut Shared, idx: usize, retain: bool) -> bool {
        let Some(slot) = self.slots.get_mut(idx) else {
            return false;
        };
        if slot.retired || slot.conn.state() != ConnectionState::Disconnected {
            return false;
        }
        let remote = slot.conn.remote();
        let cookie = slot.conn.cookie();
        let now_ms = shared.now.ms;
        shared.recently_closed.insert(remote, cookie, now_ms);
        if retain {
            slot.retired = true;
        } else {
            self.slots.remove(idx);
        }
        self.live -= 1;
        if self.by_addr.get(&AddrKey(remote)) == Some(&idx) {
            self.by_addr.remove(&AddrKey(remote));
        }
        if self.by_cookie.get(&cookie) == Some(&idx) {
            self.by_cookie.remove(&cookie);
        }
        // Stale timer entries and dirty-list entries are skipped by generation and
        // `retired` checks.
        true
    }

    /// Marks the connections that stopped taking messages for lack of event-queue room as
    /// dirty once there is room again, so their messages are taken and their window
    /// reopens now rather than at their next timer.
    pub fn retry_throttled(&mut self, shared: &Shared) {
        if self.throttled.is_empty()
            || shared.events.pending_bytes() >= shared.config.max_pending_event_bytes
        {
            return;
        }
        let throttled = std::mem::take(&mut self.throttled);
        for &idx in &throttled {
            if let Some(slot) = self.slots.get_mut(idx) {
                slot.throttled = false;
            }
            self.mark_dirty(idx);
        }
        // Keep the allocation; `settle` lists them again if they are still held back.
        self.throttled = throttled;
        self.throttled.clear();
    }

    /// Marks every connection whose timer is due as dirty. An entry whose connection's
    /// deadline has moved later since it was pushed (the ACK of what was in flight came,
    /// say) goes back into the heap at that deadline instead: nothing is due there.
    pub fn collect_due(&mut self, now_ms: u64) {
        while let Some((due, idx)) = self.live_top() {
            if due > now_ms {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[idx];
            slot.scheduled = u64::MAX;
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Runs the due and dirty connections' timers and takes their complete messages out of
    /// KCP (the datagrams they received were fed to them already).
    pub fn process_dirty(&mut self, shared: &mut Shared, out: &mut dyn Transmit, retain: bool) {
        self.collect_due(shared.now.ms);
        self.retry_throttled(shared);
        for i in 0..self.dirty.len() {
            let idx = self.dirty[i];
            if self
                .with_conn(shared, out, idx, |c, ctx| c.process(ctx))
                .is_none()
            {
                continue;
            }
            if self.remove_if_closed(shared, idx, retain) {
                continue;
            }
            let slot = &mut self.slots[idx];
            slot.processed_at = shared.now.ms;
            if slot.conn.is_throttled() && !slot.throttled {
                slot.throttled = true;
                self.throttled.push(idx);
            }
            // Rescheduled by `flush`: it stays dirty until then.
        }
    }

    /// Flushes the dirty and due connections (processing those not processed at this very
    /// ms) and reschedules each.
    pub fn flush(&mut self, shared: &mut Shared, out: &mut dyn Transmit, retain: bool) {
        self.collect_due(shared.now.ms);
        let dirty = std::mem::take(&mut self.dirty);
        let now_ms = shared.now.ms;
        for &idx in &dirty {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            slot.dirty = false;
            if slot.retired {
                continue;
            }
            // Processed by `process_dirty` at this very ms and not held back: its timers and
            // messages are done, only its sends remain.
            let processed = slot.processed_at == now_ms && !slot.conn.is_throttled();
            slot.processed_at = u64::MAX;
            self.with_conn(shared, out, idx, |c, ctx| {
                if !processed {
                    c.process(ctx);
                }
                c.flush(ctx);
            });
            self.settle(shared, idx, retain);
        }
        self.dirty = dirty;
        self.dirty.clear();
        // What `wait` sleeps until is then a time some connection needs.
        self.live_top();
    }

    /// The heap's first entry once it is a live timer, as (due ms, slot): stale entries at
    /// the top are dropped, and an entry whose connection's deadline moved later is re-keyed
    /// to it in place (one sift-down) instead of waking anyone.
    fn live_top(&mut self) -> Option<(u64, usize)> {
        while let Some(mut top) = self.timers.peek_mut() {
            let (due, idx, generation) = timer_parts(top.0);
            let Some(slot) = self.slots.get_mut(idx) else {
                PeekMut::pop(top);
                continue;
            };
            if slot.generation != generation || slot.scheduled != due || slot.retired {
                PeekMut::pop(top);
                continue;
            }
            if slot.deadline > due && slot.deadline != u64::MAX && !slot.dirty {
                slot.scheduled = slot.deadline;
                top.0 = timer_entry(slot.deadline, idx, generation);
                continue;
            }
            return Some((due, idx));
        }
        None
    }

    /// The earliest scheduler time (ms) at which a connection needs a call (0: at once,
    /// sends wait to be flushed); `None` if nothing is scheduled.
    pub fn next_due_ms(&self) -> Option<u64> {
        if !self.dirty.is_empty() {
            return Some(0);
        }
        if self.live == 0 {
            return None;
        }
        // `flush` leaves a live entry first (`live_top`); between a datagram and the next
        // flush a stale one may lead, which only wakes the endpoint early, once.
        self.timers
            .peek()
            .map(|&Reverse(entry)| timer_parts(entry).0)
    }

    /// Slot indices of every connection not yet closed.
    pub fn live_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| !s.retired)
            .map(|(i, _)| i)
    }
}
