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
            self.snd_queue.push_back(seg);
            data = &data[a..];
            tail = &tail[b..];
            sent += a + b;
        }
        Ok(sent)
    }

    // ------------------------------------------------------------------- recv

    /// The size of the next complete message, without removing it.
    pub fn peek_size(&self) -> Result<usize, KcpError> {
        let first = self.rcv_queue.front().ok_or(KcpError::RecvEmpty)?;
        if first.frg == 0 {
            return Ok(first.data.len());
        }
        if self.rcv_queue.len() < first.frg as usize + 1 {
            return Err(KcpError::RecvIncomplete);
        }
        let mut len = 0;
        for seg in &self.rcv_queue {
            len += seg.data.len();
            if seg.frg == 0 {
                break;
            }
        }
        Ok(len)
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
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, KcpError> {
        if self.rcv_queue.is_empty() {
            return Err(KcpError::RecvEmpty);
        }
        let size = match self.peek_size() {
            Ok(n) => n,
            Err(_) => return Err(KcpError::RecvIncomplete),
        };
        if size > buf.len() {
            return Err(KcpError::BufferTooSmall { needed: size });
        }
        let recover = self.rcv_queue.len() >= self.rcv_wnd as usize;

        let mut len = 0;
        while let Some(seg) = self.rcv_queue.pop_front() {
            let n = seg.data.len();
            buf[len..len + n].copy_from_slice(&seg.data);
            len += n;
            let last = seg.frg == 0;
            self.free_segment(seg);
            if last {
                break;
            }
        }
        debug_assert_eq!(len, size);

        self.move_rcv_buf();

        if self.rcv_queue.len() < self.rcv_wnd as usize && recover {
            // Fast recover: tell the peer the window reopened.
            self.probe |= ASK_TELL;
        }
        Ok(len)
    }

    /// Moves in-order segments from `rcv_buf` to `rcv_queue` while the queue has room.
    pub(super) fn move_rcv_buf(&mut self) {
        while self.rcv_queue.len() < self.rcv_wnd as usize {
            let Some(seg) = self.rcv_buf.pop_ready() else {
                break;
            };
            debug_assert_eq!(seg.sn, self.rcv_nxt);
            grow_deque(&mut self.rcv_queue, self.rcv_wnd as usize);
            self.rcv_queue.push_back(seg);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
    }
}
