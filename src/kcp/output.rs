//! `ikcp_update`, `ikcp_flush` and `ikcp_check`: ACKs, window probing, admission of new
//! data, first transmissions, timeout and fast retransmissions, packing into datagrams, and
//! the congestion-window reaction.

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
        while time_diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some(mut seg) = self.snd_queue.pop_front() else {
                break;
            };
            seg.wnd = tmpl.wnd;
            seg.ts = current;
            seg.sn = self.snd_nxt;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            seg.una = self.rcv_nxt;
            seg.resendts = current;
            seg.rto = self.rx_rto as u32;
            seg.fastack = 0;
            seg.xmit = 0;
            self.snd_buf.push_back(seg);
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

        let mut change = false;
        let mut lost = false;
        let mut fast = 0u64;
        for seg in self.snd_buf.iter_mut() {
            let mut needsend = false;
            if seg.xmit == 0 {
                needsend = true;
                seg.xmit += 1;
                seg.rto = self.rx_rto as u32;
                seg.resendts = current.wrapping_add(seg.rto).wrapping_add(rtomin);
            } else if time_diff(current, seg.resendts) >= 0 {
                needsend = true;
                seg.xmit = seg.xmit.wrapping_add(1);
                self.xmit = self.xmit.wrapping_add(1);
                if self.nodelay == 0 {
                    seg.rto = seg.rto.wrapping_add(seg.rto.max(self.rx_rto as u32));
                } else {
                    let step = if self.nodelay < 2 {
                        seg.rto as i32
                    } else {
                        self.rx_rto
                    };
                    seg.rto = seg.rto.wrapping_add((step / 2) as u32);
                }
                seg.resendts = current.wrapping_add(seg.rto);
                lost = true;
            } else if seg.fastack >= resent
                && (seg.xmit as i32 <= self.fastlimit || self.fastlimit <= 0)
            {
                needsend = true;
                seg.xmit = seg.xmit.wrapping_add(1);
                seg.fastack = 0;
                seg.resendts = current.wrapping_add(seg.rto);
                change = true;
                fast += 1;
            }

            if needsend {
                seg.ts = current;
                seg.wnd = tmpl.wnd;
                seg.una = self.rcv_nxt;
                if buffer.len() - reserved + overhead + seg.data.len() > mtu {
                    emit(&mut buffer, &mut output);
                }
                buffer.extend_from_slice(&seg.header(self.conv).to_bytes());
                buffer.extend_from_slice(&seg.data);
                if seg.xmit >= self.dead_link {
                    self.state = u32::MAX;
                }
            }
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
        let mut tm_packet = i32::MAX;
        for seg in &self.snd_buf {
            let diff = time_diff(seg.resendts, current);
            if diff <= 0 {
                return current;
            }
            tm_packet = tm_packet.min(diff);
        }
        let minimal = (tm_packet.min(tm_flush) as u32).min(self.interval);
        current.wrapping_add(minimal)
    }
}
