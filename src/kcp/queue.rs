//! The application side: `send` (fragmentation into the send queue) and `recv` /
//! `peek_size` (reassembly from the receive queue).

use super::segment::grow_deque;
use super::{Kcp, KcpError, ASK_TELL};

impl Kcp {
    /// Queues a message (or, in stream mode, bytes). Returns the number of bytes queued.
    /// Nothing is transmitted until the next flush.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, KcpError> {
        self.send_with_header(&[], data)
    }

    /// Like [`Kcp::send`] for the message `header ++ data`, without building it in a
    /// temporary buffer first (kcp2k puts one header byte before every reliable message).
    pub fn send_with_header(&mut self, header: &[u8], data: &[u8]) -> Result<usize, KcpError> {
        if header.is_empty() {
            return self.send_parts(data, &[]);
        }
        self.send_parts(header, data)
    }

    fn send_parts(&mut self, mut data: &[u8], mut tail: &[u8]) -> Result<usize, KcpError> {
        let mss = self.mss as usize;
        let mut sent = 0usize;

        if self.stream {
            if let Some(last) = self.snd_queue.back_mut() {
                if last.data.len() < mss {
                    let room = mss - last.data.len();
                    let a = data.len().min(room);
                    let b = tail.len().min(room - a);
                    last.data.extend_from_slice(&data[..a]);
                    last.data.extend_from_slice(&tail[..b]);
                    last.frg = 0;
                    data = &data[a..];
                    tail = &tail[b..];
                    sent = a + b;
                }
            }
            if data.is_empty() && tail.is_empty() {
                return Ok(sent);
            }
        }

        let total = data.len() + tail.len();
        let count = if total <= mss { 1 } else { total.div_ceil(mss) };
        let limit = self.fragment_limit_count();
        if count >= limit {
            if self.stream && sent > 0 {
                return Ok(sent);
            }
            return Err(KcpError::TooManyFragments { count, limit });
        }

        for i in 0..count {
            let a = data.len().min(mss);
            let b = tail.len().min(mss - a);
            let mut seg = self.new_segment(&data[..a]);
            seg.data.extend_from_slice(&tail[..b]);
            seg.frg = if self.stream {
                0
            } else {
                (count - i - 1) as u8
            };
            grow_deque(&mut self.snd_queue, usize::MAX);
            self.snd_queue.push_back(seg);
            data = &data[a..];
            tail = &tail[b..];
            sent += a + b;
        }
        Ok(sent)
    }

    // ------------------------------------------------------------------- recv

    /// The size of the next complete message, without removing it. O(1).
    ///
    /// Fails with [`KcpError::BadFragments`] when the fragments of that message do not
    /// count down by one to 0 (ikcp would reassemble them anyway).
    pub fn peek_size(&self) -> Result<usize, KcpError> {
        if self.rcv_queue.is_empty() {
            return Err(KcpError::RecvEmpty);
        }
        match self.rcv_head.state {
            HeadState::Complete => Ok(self.rcv_head.bytes),
            HeadState::Incomplete => Err(KcpError::RecvIncomplete),
            HeadState::Bad => Err(KcpError::BadFragments),
        }
    }

    /// True when the first queued message can never be completed: its first fragment
    /// announces more fragments than the receive window can hold (ikcp keeps at most
    /// `rcv_wnd` segments in the receive queue). ikcp would stall forever; a peer with a
    /// larger receive window than ours, or a hostile one, causes it.
    pub fn is_recv_stalled(&self) -> bool {
        self.rcv_queue
            .front()
            .is_some_and(|seg| seg.frg as u32 + 1 > self.rcv_wnd)
    }

    /// Takes the next complete message into `buf` and returns its length.
    ///
    /// When the fragments of the next message do not count down by one to 0, fails with
    /// [`KcpError::BadFragments`] (counted in [`InputDrops::bad_fragments`]) and discards
    /// that message whole: every fragment up to the next one with `frg == 0` (where ikcp
    /// would end it), including those still to arrive. Nothing of it is ever delivered and
    /// the messages after it are. An honest peer never causes this, so the caller should
    /// treat it as a protocol error.
    ///
    /// [`InputDrops::bad_fragments`]: super::InputDrops::bad_fragments
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, KcpError> {
        if self.rcv_queue.is_empty() {
            return Err(KcpError::RecvEmpty);
        }
        let size = self.rcv_head.bytes;
        let bad = match self.rcv_head.state {
            HeadState::Incomplete => return Err(KcpError::RecvIncomplete),
            HeadState::Complete if size > buf.len() => {
                return Err(KcpError::BufferTooSmall { needed: size })
            }
            HeadState::Complete => false,
            HeadState::Bad => true,
        };
        let recover = self.rcv_queue.len() >= self.rcv_wnd as usize;

        let mut len = 0;
        if bad {
            // The broken message ends, as ikcp delimits messages, at the next `frg == 0`.
            // Whatever of it has not arrived yet is discarded as it arrives.
            self.rcv_discarding = true;
            while let Some(seg) = self.rcv_queue.pop_front() {
                self.rcv_discarding = seg.frg != 0;
                self.free_segment(seg);
                if !self.rcv_discarding {
                    break;
                }
            }
        } else {
            for _ in 0..self.rcv_head.segs {
                let Some(seg) = self.rcv_queue.pop_front() else {
                    break;
                };
                let n = seg.data.len();
                buf[len..len + n].copy_from_slice(&seg.data);
                len += n;
                self.free_segment(seg);
            }
        }
        self.rcv_head = HeadScan::default();
        self.scan_head();

        self.move_rcv_buf();

        if self.rcv_queue.len() < self.rcv_wnd as usize && recover {
            // Fast recover: tell the peer the window reopened.
            self.probe |= ASK_TELL;
        }
        if bad {
            self.drops.bad_fragments += 1;
            return Err(KcpError::BadFragments);
        }
        debug_assert_eq!(len, size);
        Ok(len)
    }

    /// Moves in-order segments from `rcv_buf` to `rcv_queue` while the queue has room.
    pub(super) fn move_rcv_buf(&mut self) {
        let mut moved = false;
        while self.rcv_queue.len() < self.rcv_wnd as usize {
            let Some(seg) = self.rcv_buf.pop_ready() else {
                break;
            };
            debug_assert_eq!(seg.sn, self.rcv_nxt);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            if self.rcv_discarding {
                // The rest of a message `recv` reported as `BadFragments`.
                self.rcv_discarding = seg.frg != 0;
                self.free_segment(seg);
                continue;
            }
            grow_deque(&mut self.rcv_queue, self.peak.rcv_wnd as usize);
            self.rcv_queue.push_back(seg);
            moved = true;
        }
        if moved {
            self.scan_head();
        }
    }

    /// Extends [`HeadScan`] over segments that joined the first message. Each segment is
    /// looked at once while it belongs to the first message, so this is O(1) amortized.
    fn scan_head(&mut self) {
        let Some(first) = self.rcv_queue.front() else {
            self.rcv_head = HeadScan::default();
            return;
        };
        let top = first.frg as usize;
        let head = &mut self.rcv_head;
        while head.state == HeadState::Incomplete && head.segs < self.rcv_queue.len() {
            let seg = &self.rcv_queue[head.segs];
            if seg.frg as usize + head.segs != top {
                head.state = HeadState::Bad;
                break;
            }
            head.bytes += seg.data.len();
            head.segs += 1;
            if seg.frg == 0 {
                head.state = HeadState::Complete;
            }
        }
    }
}

/// What is known of the first message in the receive queue, kept up to date as segments
/// arrive so that [`Kcp::peek_size`] is O(1): the first `segs` segments count down from the
/// first one's `frg`, and hold `bytes` bytes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HeadScan {
    segs: usize,
    bytes: usize,
    state: HeadState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum HeadState {
    /// The last fragment (`frg == 0`) has not arrived.
    #[default]
    Incomplete,
    /// `segs` segments form the whole message.
    Complete,
    /// The segment after the first `segs` breaks the countdown.
    Bad,
}
