//! `ikcp_input`: ACK, PUSH, WASK and WINS processing, una/wnd piggy-backing, fast-ack
//! accounting and congestion-window growth.

use super::segment::grow_vec;
use super::{time_diff, Kcp, KcpError, ASK_TELL};
use crate::wire::segment::{read_conv, Command, SegmentHeader, SEGMENT_HEADER_LEN};

impl Kcp {
    /// Feeds one received datagram (one or more segments). Segments processed before an
    /// error stay processed, as in ikcp.
    pub fn input(&mut self, data: &[u8]) -> Result<(), KcpError> {
        if data.len() < SEGMENT_HEADER_LEN {
            return Err(KcpError::InputTooShort);
        }
        let prev_una = self.snd_una;
        let mut maxack = 0u32;
        let mut latest_ts = 0u32;
        let mut flag = false;
        let mut rest = data;

        while rest.len() >= SEGMENT_HEADER_LEN {
            if read_conv(rest) != Some(self.conv) {
                return Err(KcpError::ConvMismatch);
            }
            let (hdr, payload) = match SegmentHeader::parse(rest) {
                Ok(v) => v,
                Err(crate::wire::WireError::UnknownCommand(c)) => {
                    return Err(KcpError::UnknownCommand(c))
                }
                Err(_) => return Err(KcpError::InputTruncated),
            };
            rest = &rest[SEGMENT_HEADER_LEN + payload.len()..];

            self.rmt_wnd = hdr.wnd as u32;
            if time_diff(hdr.una, self.snd_nxt) > 0 {
                // The peer claims to have received data we never sent (kcpnet: ignored;
                // ikcp would take everything in flight as acknowledged).
                self.drops.una_unsent += 1;
            } else {
                self.parse_una(hdr.una);
            }
            self.shrink_buf();

            match hdr.cmd {
                Command::Ack if time_diff(hdr.sn, self.snd_nxt) >= 0 => {
                    // An ACK for a sn never sent (kcpnet: ignored, RTT sample included).
                    self.drops.ack_unsent += 1;
                }
                Command::Ack => {
                    let rtt = time_diff(self.current, hdr.ts);
                    if rtt >= 0 {
                        self.update_ack(rtt);
                    }
                    self.parse_ack(hdr.sn);
                    self.shrink_buf();
                    if !flag {
                        flag = true;
                        maxack = hdr.sn;
                        latest_ts = hdr.ts;
                    } else if time_diff(hdr.sn, maxack) > 0
                        && (!self.fastack_conserve || time_diff(hdr.ts, latest_ts) > 0)
                    {
                        maxack = hdr.sn;
                        latest_ts = hdr.ts;
                    }
                }
                Command::Push if payload.len() > self.mss as usize => {
                    // No honest peer with our MTU sends this (kcpnet: neither stored nor
                    // acknowledged; ikcp stores it).
                    self.drops.oversized += 1;
                }
                Command::Push => {
                    if time_diff(hdr.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        if self.acklist.len() < self.ack_limit {
                            grow_vec(&mut self.acklist, self.peak.ack_limit);
                            self.acklist.push((hdr.sn, hdr.ts));
                        } else {
                            self.drops.acks_over_limit += 1;
                        }
                        if time_diff(hdr.sn, self.rcv_nxt) >= 0 {
                            self.parse_data(&hdr, payload);
                        } else {
                            self.drops.duplicates += 1;
                        }
                    } else {
                        self.drops.beyond_window += 1;
                    }
                }
                Command::WindowAsk => self.probe |= ASK_TELL,
                Command::WindowTell => {}
            }
        }

        if flag {
            self.parse_fastack(maxack, latest_ts);
        }

        if time_diff(self.snd_una, prev_una) > 0 && self.cwnd < self.rmt_wnd {
            let mss = self.mss;
            if self.cwnd < self.ssthresh {
                self.cwnd += 1;
                self.incr = self.incr.wrapping_add(mss);
            } else {
                if self.incr < mss {
                    self.incr = mss;
                }
                self.incr = self
                    .incr
                    .wrapping_add(mss.wrapping_mul(mss) / self.incr + mss / 16);
                if (self.cwnd + 1).wrapping_mul(mss) <= self.incr {
                    self.cwnd = self.incr.div_ceil(mss.max(1));
                }
            }
            if self.cwnd > self.rmt_wnd {
                self.cwnd = self.rmt_wnd;
                self.incr = self.rmt_wnd.wrapping_mul(mss);
            }
        }
        Ok(())
    }

    fn shrink_buf(&mut self) {
        // The first slot of the send buffer is always occupied (or the buffer is empty and
        // its base is `snd_nxt`), which is ikcp's rule.
        self.snd_una = self.snd_buf.base();
        debug_assert_eq!(self.snd_buf.end(), self.snd_nxt);
    }

    fn parse_una(&mut self, una: u32) {
        let mss = self.mss as usize;
        let pool = &mut self.pool;
        self.snd_buf.pop_below(una, |seg| pool.put(seg.data, mss));
    }

    fn parse_ack(&mut self, sn: u32) {
        if time_diff(sn, self.snd_una) < 0 || time_diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        if let Some(seg) = self.snd_buf.remove(sn) {
            self.free_segment(seg);
        }
    }

    /// ikcp's `parse_fastack`: one more fast-ack for every segment before `sn` (with
    /// conservation: only for those last sent no later than `ts`). Without conservation this
    /// is O(1) (a lazy mark); with it, O(segments before `sn`).
    fn parse_fastack(&mut self, sn: u32, ts: u32) {
        if time_diff(sn, self.snd_una) < 0 || time_diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        let changed = if self.fastack_conserve {
            let mut changed = false;
            for seg in self.snd_buf.iter_below_mut(sn) {
                if time_diff(ts, seg.ts) >= 0 {
                    seg.fastack = seg.fastack.wrapping_add(1);
                    changed = true;
                }
            }
            changed
        } else {
            self.snd_buf.add_fastack_below(sn)
        };
        if changed {
            self.fast_dirty = true;
            self.fastack_events += 1;
        }
    }

    fn parse_data(&mut self, hdr: &SegmentHeader, payload: &[u8]) {
        let sn = hdr.sn;
        if time_diff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0
            || time_diff(sn, self.rcv_nxt) < 0
        {
            return;
        }
        if self.rcv_buf.contains(self.rcv_nxt, sn) {
            self.drops.duplicates += 1;
        } else {
            let mut seg = self.new_segment(payload);
            seg.frg = hdr.frg;
            seg.wnd = hdr.wnd;
            seg.ts = hdr.ts;
            seg.sn = sn;
            seg.una = hdr.una;
            if let Err(seg) = self
                .rcv_buf
                .insert(self.rcv_nxt, seg, self.peak.rcv_wnd as usize)
            {
                self.free_segment(seg);
            }
        }
        self.move_rcv_buf();
    }
}
