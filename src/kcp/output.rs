//! `ikcp_update`, `ikcp_flush` and `ikcp_check`: ACKs, window probing, admission of new
//! data, first transmissions, timeout and fast retransmissions, packing into datagrams, and
//! the congestion-window reaction.

use super::segment::Segment;
use super::window::{timer_limit, Earliest};
use super::{time_diff, Kcp, ASK_SEND, ASK_TELL, PROBE_INIT, PROBE_LIMIT, THRESH_MIN};
use crate::wire::segment::{Command, SegmentHeader, SEGMENT_HEADER_LEN};

impl Kcp {
    fn wnd_unused(&self) -> u16 {
        let used = self.rcv_queue.len() as u32;
        if used < self.rcv_wnd {
            (self.rcv_wnd - used) as u16
        } else {
            0
        }
    }

    pub(super) fn effective_window(&self) -> u32 {
        let cwnd = self.snd_wnd.min(self.rmt_wnd);
        if self.nocwnd {
            cwnd
        } else {
            self.cwnd.min(cwnd)
        }
    }

    /// `ikcp_update`: call regularly with the current time in ms. Flushes when the interval
    /// has elapsed (the first call always flushes), handing each datagram to `output`.
    pub fn update<F: FnMut(&mut [u8])>(&mut self, current: u32, output: F) {
        self.current = current;
        if !self.updated {
            self.updated = true;
            self.ts_flush = current;
        }
        let mut slap = time_diff(current, self.ts_flush);
        if !(-10000..10000).contains(&slap) {
            self.ts_flush = current;
            slap = 0;
        }
        if slap >= 0 {
            self.ts_flush = self.ts_flush.wrapping_add(self.interval);
            if time_diff(current, self.ts_flush) >= 0 {
                self.ts_flush = current.wrapping_add(self.interval);
            }
            self.flush(output);
        }
    }

    /// Sets the clock and flushes at once, outside the interval schedule (does nothing before
    /// the first [`Kcp::update`]). Timers still fire by their own deadlines; this only sends
    /// pending ACKs and newly admitted data earlier.
    pub fn flush_at<F: FnMut(&mut [u8])>(&mut self, current: u32, output: F) {
        self.current = current;
        self.flush(output);
    }

    /// `ikcp_flush`: sends pending ACKs, probes, new data and due retransmissions, using the
    /// time of the last update. Does nothing before the first [`Kcp::update`].
    pub fn flush<F: FnMut(&mut [u8])>(&mut self, mut output: F) {
        if !self.updated {
            return;
        }
        let current = self.current;
        let reserved = self.reserved;
        let mtu = self.mtu as usize;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        // Allocated once, at its final size: a datagram never outgrows it.
        let capacity = self.output_capacity();
        if buffer.capacity() < capacity {
            buffer.reserve_exact(capacity);
        }
        buffer.resize(reserved, 0);
        let emit = |buffer: &mut Vec<u8>, output: &mut F| {
            if buffer.len() > reserved {
                output(&mut buffer[..]);
            }
            buffer.truncate(reserved);
        };

        let mut tmpl = SegmentHeader {
            conv: self.conv,
            cmd: Command::Ack,
            frg: 0,
            wnd: self.wnd_unused(),
            ts: 0,
            sn: 0,
            una: self.rcv_nxt,
            len: 0,
        };
        let overhead = SEGMENT_HEADER_LEN;

        for i in 0..self.acklist.len() {
            if buffer.len() - reserved + overhead > mtu {
                emit(&mut buffer, &mut output);
            }
            let (sn, ts) = self.acklist[i];
            tmpl.sn = sn;
            tmpl.ts = ts;
            buffer.extend_from_slice(&tmpl.to_bytes());
        }
        self.acklist.clear();

        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = current.wrapping_add(self.probe_wait);
            } else if time_diff(current, self.ts_probe) >= 0 {
                if self.probe_wait < PROBE_INIT {
                    self.probe_wait = PROBE_INIT;
                }
                self.probe_wait += self.probe_wait / 2;
                if self.probe_wait > PROBE_LIMIT {
                    self.probe_wait = PROBE_LIMIT;
                }
                self.ts_probe = current.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }

        // WASK and WINS reuse the template, so they carry the sn/ts of the last ACK written.
        for (flag, cmd) in [
            (ASK_SEND, Command::WindowAsk),
            (ASK_TELL, Command::WindowTell),
        ] {
            if self.probe & flag != 0 {
                tmpl.cmd = cmd;
                if buffer.len() - reserved + overhead > mtu {
                    emit(&mut buffer, &mut output);
                }
                buffer.extend_from_slice(&tmpl.to_bytes());
            }
        }
        self.probe = 0;

        let cwnd = self.effective_window();
        let mut admitted = false;
        while time_diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            if let Some(budget) = self.admit_budget.as_mut() {
                let Some(next) = self.snd_queue.front() else {
                    break;
                };
                let cost = (next.data.len() + SEGMENT_HEADER_LEN) as i64;
                if *budget < cost {
                    break;
                }
                *budget -= cost;
            }
            let Some(mut seg) = self.snd_queue.pop_front() else {
                break;
            };
            seg.wnd = tmpl.wnd;
            seg.ts = current;
            seg.sn = self.snd_nxt;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            seg.una = self.rcv_nxt;
            // ikcp sets `resendts = current` here; the first transmission below overwrites it.
            seg.resend_key = Segment::UNSENT;
            seg.rto = self.rx_rto as u32;
            seg.fastack = 0;
            seg.xmit = 0;
            self.snd_buf.push(seg, self.peak.snd_wnd as usize);
            admitted = true;
        }

        let resent = if self.fastresend > 0 {
            self.fastresend as u32
        } else {
            u32::MAX
        };
        let rtomin = if self.nodelay == 0 {
            (self.rx_rto >> 3) as u32
        } else {
            0
        };

        let now64 = self.time64(current);
        self.clock32 = current;
        self.clock64 = now64;

        let mut change = false;
        let mut lost = false;
        let mut fast = 0u64;
        if admitted || self.retransmit_possible(now64, resent) {
            let rx_rto = self.rx_rto;
            let nodelay = self.nodelay;
            let fastlimit = self.fastlimit;
            let dead_link = self.dead_link;
            let conv = self.conv;
            let rcv_nxt = self.rcv_nxt;
            let wnd = tmpl.wnd;
            let mut timeouts = 0u32;
            let mut dead = false;
            let mut fast_pending = false;
            let limit = timer_limit(self.peak.snd_wnd as usize);
            self.snd_buf.walk(limit, |seg| {
                let mut needsend = false;
                if seg.xmit == 0 {
                    needsend = true;
                    seg.xmit += 1;
                    seg.rto = rx_rto as u32;
                    seg.resend_key = now64.wrapping_add(seg.rto.wrapping_add(rtomin) as i64);
                } else if time_diff(current, seg.resendts()) >= 0 {
                    needsend = true;
                    seg.xmit = seg.xmit.wrapping_add(1);
                    timeouts = timeouts.wrapping_add(1);
                    if nodelay == 0 {
                        seg.rto = seg.rto.wrapping_add(seg.rto.max(rx_rto as u32));
                    } else {
                        let step = if nodelay < 2 { seg.rto as i32 } else { rx_rto };
                        seg.rto = seg.rto.wrapping_add((step / 2) as u32);
                    }
                    seg.resend_key = now64.wrapping_add(seg.rto as i64);
                    lost = true;
                } else if seg.fastack >= resent && (seg.xmit as i32 <= fastlimit || fastlimit <= 0)
                {
                    needsend = true;
                    seg.xmit = seg.xmit.wrapping_add(1);
                    seg.fastack = 0;
                    seg.resend_key = now64.wrapping_add(seg.rto as i64);
                    change = true;
                    fast += 1;
                }

                if needsend {
                    seg.ts = current;
                    seg.wnd = wnd;
                    seg.una = rcv_nxt;
                    if buffer.len() - reserved + overhead + seg.data.len() > mtu {
                        emit(&mut buffer, &mut output);
                    }
                    buffer.extend_from_slice(&seg.header(conv).to_bytes());
                    buffer.extend_from_slice(&seg.data);
                    if seg.xmit >= dead_link {
                        dead = true;
                    }
                }
                // A segment retransmitted by timeout keeps its fast-ack count (ikcp resets it
                // only on a fast retransmission), so it may be fast-retransmitted next time.
                if seg.fastack >= resent && (seg.xmit as i32 <= fastlimit || fastlimit <= 0) {
                    fast_pending = true;
                }
            });
            self.xmit = self.xmit.wrapping_add(timeouts);
            if dead {
                self.state = u32::MAX;
            }
            self.fast_dirty = fast_pending;
        }
        emit(&mut buffer, &mut output);
        self.buffer = buffer;
        self.fast_retransmits += fast;

        if change {
            let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            self.cwnd = self.ssthresh.wrapping_add(resent);
            self.incr = self.cwnd.wrapping_mul(self.mss);
        }
        if lost {
            self.ssthresh = (cwnd / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = self.mss;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = self.mss;
        }
    }

    /// True if the walk of the send buffer in a flush at `now` (unwrapped) could retransmit
    /// something: a timer may be due, or a fast-ack count may have reached the threshold
    /// `resent` (see `fast_dirty`). When false, the walk would send nothing and change
    /// nothing, so the flush skips it: a flush with nothing due costs O(1) beyond its ACKs.
    fn retransmit_possible(&self, now: i64, resent: u32) -> bool {
        let due = match self.snd_buf.earliest(now) {
            Earliest::Empty => false,
            Earliest::Exact(diff) => diff <= 0,
            Earliest::Unknown => true,
        };
        // With fast resend off the threshold is u32::MAX, which a count reaches only after
        // that many fast-ack events.
        let fast =
            self.fast_dirty && (resent != u32::MAX || self.fastack_events >= u32::MAX as u64);
        #[cfg(test)]
        if self.always_walk {
            return true;
        }
        due || fast
    }

    /// When [`Kcp::update`] must next run if nothing is sent or received meanwhile.
    ///
    /// While the only work left is waiting for ACKs, every update before the earliest
    /// retransmission time flushes nothing and changes nothing; this returns the first time
    /// on the update schedule (`ts_flush` plus whole intervals) at or after that
    /// retransmission time, so a driver that sleeps until then sends exactly what updating
    /// every interval would. In every other case (ACKs, probes or data waiting, the peer's
    /// window closed, a fast retransmission possible, a window probe timer running) it is
    /// [`Kcp::check`]. Call [`Kcp::update`] when a datagram arrives or data is queued, as
    /// usual: this only spares the wake-ups in between.
    pub fn next_due(&self, current: u32) -> u32 {
        if !self.updated
            || !self.acklist.is_empty()
            || self.probe != 0
            || self.rmt_wnd == 0
            || self.ts_probe != 0
            || self.probe_wait != 0
            || !self.snd_queue.is_empty()
            || self.fast_dirty
        {
            return self.check(current);
        }
        let Earliest::Exact(diff) = self.snd_buf.earliest(self.time64(current)) else {
            return self.check(current);
        };
        let ts_flush = self.ts_flush;
        // Within `update`'s 10 s window, the schedule is `ts_flush` plus whole intervals,
        // even when updates were skipped: each one on it would have flushed nothing.
        if diff <= 0 || !(-10000..10000).contains(&time_diff(current, ts_flush)) {
            return self.check(current);
        }
        let resend = current.wrapping_add(diff as u32);
        let ahead = time_diff(resend, ts_flush);
        if ahead <= 0 {
            return self.check(current);
        }
        // `interval` is at least 10 (`set_nodelay` clamps it).
        let steps = (ahead as u32).div_ceil(self.interval);
        ts_flush.wrapping_add(steps.wrapping_mul(self.interval))
    }

    /// `ikcp_check`: the absolute time at which [`Kcp::update`] should next be called. It
    /// ignores pending ACKs and queued data (see [`Kcp::has_pending_output`]).
    pub fn check(&self, current: u32) -> u32 {
        if !self.updated {
            return current;
        }
        let mut ts_flush = self.ts_flush;
        let d = time_diff(current, ts_flush);
        if !(-10000..10000).contains(&d) {
            ts_flush = current;
        }
        if time_diff(current, ts_flush) >= 0 {
            return current;
        }
        let tm_flush = time_diff(ts_flush, current);
        let tm_packet = match self.snd_buf.earliest(self.time64(current)) {
            Earliest::Empty => i32::MAX,
            Earliest::Exact(diff) if diff <= 0 => return current,
            Earliest::Exact(diff) => diff,
            Earliest::Unknown => {
                // Timers 2^31 ms or more away: wrapping comparisons are not an order, so
                // scan like ikcp.
                let mut tm_packet = i32::MAX;
                for seg in self.snd_buf.iter() {
                    let diff = time_diff(seg.resendts(), current);
                    if diff <= 0 {
                        return current;
                    }
                    tm_packet = tm_packet.min(diff);
                }
                tm_packet
            }
        };
        let minimal = (tm_packet.min(tm_flush) as u32).min(self.interval);
        current.wrapping_add(minimal)
    }
}
