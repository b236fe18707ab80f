//! Settings: the `ikcp_setmtu` / `ikcp_wndsize` / `ikcp_nodelay` family and kcpnet's own knobs.

use super::memory::Peaks;
use super::{FragmentLimit, Kcp, KcpError, FRG_MAX, MTU_MIN, OVERHEAD, RTO_MIN, RTO_NDL, WND_RCV};

impl Kcp {
    /// Sets the MTU (the largest datagram KCP emits, excluding the reserved prefix).
    /// Fails below 50 bytes, like `ikcp_setmtu`.
    pub fn set_mtu(&mut self, mtu: u32) -> Result<(), KcpError> {
        if mtu < MTU_MIN {
            return Err(KcpError::InvalidMtu(mtu));
        }
        self.mtu = mtu;
        self.mss = mtu - OVERHEAD;
        self.buffer = Vec::new();
        self.pool.clear();
        // Segments still queued keep buffers of the old size.
        let in_use = self.total_queued() > 0;
        self.peak.mss = Peaks::raise(self.peak.mss, self.mss, in_use);
        Ok(())
    }

    /// The MTU set by [`Kcp::set_mtu`].
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The maximum segment payload, `mtu - 24`.
    pub fn mss(&self) -> u32 {
        self.mss
    }

    /// Sets the send and receive windows in segments; 0 leaves a window unchanged. The
    /// receive window never goes below 128 (`ikcp_wndsize`).
    pub fn set_wndsize(&mut self, snd: u32, rcv: u32) {
        if snd > 0 {
            self.snd_wnd = snd;
            let in_use = self.snd_buf.has_capacity();
            self.peak.snd_wnd = Peaks::raise(self.peak.snd_wnd, snd, in_use);
        }
        if rcv > 0 {
            self.rcv_wnd = rcv.max(WND_RCV);
            let in_use = self.rcv_buf.has_capacity() || self.rcv_queue.capacity() > 0;
            self.peak.rcv_wnd = Peaks::raise(self.peak.rcv_wnd, self.rcv_wnd, in_use);
        }
        if self.pool_auto {
            self.pool.set_limit(self.auto_pool_limit());
        }
    }

    /// The send window in segments.
    pub fn snd_wnd(&self) -> u32 {
        self.snd_wnd
    }

    /// The receive window in segments.
    pub fn rcv_wnd(&self) -> u32 {
        self.rcv_wnd
    }

    /// `ikcp_nodelay`: `nodelay` 0 (normal RTO), 1 (30 ms minimum RTO, ×1.5 backoff) or 2
    /// (backoff by half the smoothed RTO); `interval` in ms, clamped to 10..=5000; `resend`
    /// the fast-retransmit threshold (0 = off); `nc` 1 disables the congestion window. A
    /// negative argument leaves that setting unchanged.
    pub fn set_nodelay(&mut self, nodelay: i32, interval: i32, resend: i32, nc: i32) {
        if nodelay >= 0 {
            self.nodelay = nodelay;
            self.rx_minrto = if nodelay != 0 { RTO_NDL } else { RTO_MIN };
        }
        if interval >= 0 {
            self.interval = interval.clamp(10, 5000) as u32;
        }
        if resend >= 0 {
            self.fastresend = resend;
            self.fast_dirty = true;
        }
        if nc >= 0 {
            self.nocwnd = nc != 0;
        }
    }

    /// The flush interval in ms.
    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// Stream mode: messages are merged into full segments and every segment has `frg` 0, so
    /// `recv` returns the stream in segment-sized chunks.
    pub fn set_stream(&mut self, stream: bool) {
        self.stream = stream;
    }

    /// `IKCP_FASTACK_CONSERVE`: on (the default, ikcp 1.7.1) gives fast-ack credit only for
    /// ACKs newer than the segment's last transmission; off reproduces ikcp 1.7 (kcp2k's base).
    pub fn set_fastack_conserve(&mut self, on: bool) {
        self.fastack_conserve = on;
    }

    /// Chooses the fragment-count rule applied by [`Kcp::send`].
    pub fn set_fragment_limit(&mut self, limit: FragmentLimit) {
        self.fragment_limit = limit;
    }

    /// The largest message [`Kcp::send`] accepts in message mode with the current MTU,
    /// windows and fragment rule.
    pub fn max_message_size(&self) -> usize {
        let limit = self.fragment_limit_count();
        (limit - 1) * self.mss as usize
    }

    pub(super) fn fragment_limit_count(&self) -> usize {
        match self.fragment_limit {
            FragmentLimit::Classic => WND_RCV as usize,
            FragmentLimit::Kcp2k => (self.rcv_wnd as usize).min(FRG_MAX + 1),
        }
    }

    /// Sets the dead-link threshold: when a segment has been transmitted this many times the
    /// link is reported dead ([`Kcp::is_dead`]).
    pub fn set_dead_link(&mut self, n: u32) {
        self.dead_link = n;
    }

    /// Sets how many times one segment may be fast-retransmitted (`fastlimit`; ≤ 0 = no limit).
    pub fn set_fast_limit(&mut self, n: i32) {
        self.fastlimit = n;
        self.fast_dirty = true;
    }

    /// Reserves `n` bytes at the front of every datagram handed to the output closure. KCP
    /// never writes them; the caller fills them in (kcp2k puts its channel byte and cookie
    /// there), which saves a copy per datagram. The MTU does not include them.
    pub fn set_reserved(&mut self, n: usize) {
        self.reserved = n;
        self.buffer = Vec::new();
    }

    /// Caps the number of pending ACKs kept between flushes (default 8192). ikcp keeps all;
    /// the cap only bounds memory against a flood of duplicates, and a dropped ACK is
    /// recovered by retransmission.
    pub fn set_ack_limit(&mut self, n: usize) {
        self.ack_limit = n.max(1);
        let in_use = self.acklist.capacity() > 0;
        self.peak.ack_limit = Peaks::raise(self.peak.ack_limit, self.ack_limit, in_use);
    }

    /// Limits how much new data the following flushes move from the send queue into the
    /// send window: `Some(bytes)` admits a segment only while the budget covers its size
    /// (payload plus the 24-byte header), and each admission spends that size. ACKs, probes and retransmissions are never held back. `None` (the default)
    /// removes the limit: admission is ikcp's, bounded by the windows alone. A rate cap
    /// above KCP sets this before each flush (see `connection::pacing`).
    pub fn set_admit_budget(&mut self, bytes: Option<i64>) {
        self.admit_budget = bytes;
    }

    /// Caps how many free segment buffers are kept for reuse. The default,
    /// `snd_wnd + rcv_wnd + 256`, follows [`Kcp::set_wndsize`] until this is called: enough
    /// for a full send window, a full receive window and one message of the largest
    /// fragment count queued, so that messages up to the largest size allocate nothing in
    /// steady state. Free buffers beyond `n` are released at once.
    pub fn set_pool_limit(&mut self, n: usize) {
        self.pool_auto = false;
        self.pool.set_limit(n);
    }

    /// The most free segment buffers kept for reuse (see [`Kcp::set_pool_limit`]).
    pub fn pool_limit(&self) -> usize {
        self.pool.limit()
    }

    /// Free segment buffers currently kept for reuse.
    pub fn pooled_buffers(&self) -> usize {
        self.pool.len()
    }

    /// The default pool cap for the current windows.
    pub(super) fn auto_pool_limit(&self) -> usize {
        self.snd_wnd as usize + self.rcv_wnd as usize + FRG_MAX + 1
    }

    /// The dead-link threshold set by [`Kcp::set_dead_link`].
    pub fn dead_link(&self) -> u32 {
        self.dead_link
    }
}
