//! `ikcp_input`: ACK, PUSH, WASK and WINS processing, una/wnd piggy-backing, fast-ack
//! accounting and congestion-window growth.

use std::collections::VecDeque;

use super::segment::Segment;
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
            self.parse_una(hdr.una);
            self.shrink_buf();

            match hdr.cmd {
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
                Command::Push => {
                    if time_diff(hdr.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        if self.acklist.len() < self.ack_limit {
                            self.acklist.push((hdr.sn, hdr.ts));
                        } else {
                            self.acks_dropped += 1;
                        }
                        if time_diff(hdr.sn, self.rcv_nxt) >= 0 {
                            self.parse_data(&hdr, payload);
                        }
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
        self.snd_una = match self.snd_buf.front() {
            Some(seg) => seg.sn,
            None => self.snd_nxt,
        };
    }

    fn parse_una(&mut self, una: u32) {
        while let Some(seg) = self.snd_buf.front() {
            if time_diff(una, seg.sn) > 0 {
                if let Some(seg) = self.snd_buf.pop_front() {
                    self.free_segment(seg);
                }
            } else {
                break;
            }
        }
    }

    /// Index of `sn` in a queue sorted by wrapping sequence order, or where it would go.
    fn search(queue: &VecDeque<Segment>, sn: u32) -> Result<usize, usize> {
        queue.binary_search_by(|seg| time_diff(seg.sn, sn).cmp(&0))
    }

    fn parse_ack(&mut self, sn: u32) {
        if time_diff(sn, self.snd_una) < 0 || time_diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        if let Ok(i) = Self::search(&self.snd_buf, sn) {
            if let Some(seg) = self.snd_buf.remove(i) {
                self.free_segment(seg);
            }
        }
    }

    fn parse_fastack(&mut self, sn: u32, ts: u32) {
        if time_diff(sn, self.snd_una) < 0 || time_diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        let conserve = self.fastack_conserve;
        for seg in self.snd_buf.iter_mut() {
            if time_diff(sn, seg.sn) < 0 {
                break;
            }
            if sn != seg.sn && (!conserve || time_diff(ts, seg.ts) >= 0) {
                seg.fastack = seg.fastack.wrapping_add(1);
            }
        }
    }

    fn parse_data(&mut self, hdr: &SegmentHeader, payload: &[u8]) {
        let sn = hdr.sn;
        if time_diff(sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) >= 0
            || time_diff(sn, self.rcv_nxt) < 0
        {
            return;
        }
        if let Err(pos) = Self::search(&self.rcv_buf, sn) {
            let mut seg = self.new_segment(payload);
            seg.frg = hdr.frg;
            seg.wnd = hdr.wnd;
            seg.ts = hdr.ts;
            seg.sn = sn;
            seg.una = hdr.una;
            self.rcv_buf.insert(pos, seg);
        }
        self.move_rcv_buf();
    }
}
