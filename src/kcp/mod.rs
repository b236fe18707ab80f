//! The KCP ARQ core: a sans-IO state machine, byte-compatible with the reference C
//! implementation (`ikcp.c` 1.7.1, and 1.7 with [`Kcp::set_fastack_conserve`]`(false)`).
//!
//! A [`Kcp`] never touches a socket or a clock. The caller feeds it datagrams with
//! [`Kcp::input`], queues messages with [`Kcp::send`], takes reassembled messages with
//! [`Kcp::recv`], and calls [`Kcp::update`] with the current time in milliseconds (a `u32`
//! that wraps). Datagrams to transmit are handed to a caller-supplied closure.
//!
//! ```
//! use kcpnet::kcp::Kcp;
//!
//! let mut a = Kcp::new(7);
//! let mut b = Kcp::new(7);
//! a.set_nodelay(1, 10, 2, 1);
//! b.set_nodelay(1, 10, 2, 1);
//! a.send(b"hello").unwrap();
//!
//! let mut wire: Vec<Vec<u8>> = Vec::new();
//! a.update(0, |dgram| wire.push(dgram.to_vec()));
//! for d in &wire {
//!     b.input(d).unwrap();
//! }
//! let mut buf = [0u8; 64];
//! let n = b.recv(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"hello");
//! ```
//!
//! # Time and sequence arithmetic
//! Every timestamp and sequence number is a `u32` that wraps; comparisons go through the
//! signed 32-bit difference ([`time_diff`]), exactly as ikcp's `_itimediff`.
//!
//! # Memory
//! A fresh `Kcp` allocates nothing until it is used. Segment payload buffers come from a
//! small per-instance pool (capped by [`Kcp::set_pool_limit`], default 32 buffers of `mss`
//! bytes) so that steady-state traffic allocates nothing per segment; the output buffer is
//! `reserved + mtu` bytes, allocated at the first flush. An idle `Kcp` that has carried traffic
//! holds `size_of::<Kcp>()` plus the output buffer plus its pooled buffers and queue
//! capacities; [`Kcp::trim_memory`] releases the pool and the queue capacity, which brings it
//! back to about `size_of::<Kcp>() + reserved + mtu` bytes plus the buffers it keeps.

use std::collections::VecDeque;
use std::fmt;

use crate::wire::segment::{read_conv, Command, SegmentHeader, SEGMENT_HEADER_LEN};

/// Size of a segment header on the wire (`IKCP_OVERHEAD`).
pub const OVERHEAD: u32 = SEGMENT_HEADER_LEN as u32;

/// Minimum RTO in no-delay mode (ms).
pub const RTO_NDL: i32 = 30;
/// Minimum RTO in normal mode (ms).
pub const RTO_MIN: i32 = 100;
/// Initial RTO (ms).
pub const RTO_DEF: i32 = 200;
/// Upper bound of the smoothed RTO (ms).
pub const RTO_MAX: i32 = 60_000;
/// Default send window (segments).
pub const WND_SND: u32 = 32;
/// Default receive window (segments); also the floor of the receive window and the classic
/// fragment limit.
pub const WND_RCV: u32 = 128;
/// Default MTU of ikcp.
pub const MTU_DEF: u32 = 1400;
/// Default flush interval (ms).
pub const INTERVAL: u32 = 100;
/// Default dead-link threshold: a segment transmitted this many times marks the link dead.
pub const DEADLINK: u32 = 20;
/// Initial and minimum slow-start threshold.
pub const THRESH_INIT: u32 = 2;
/// Minimum slow-start threshold.
pub const THRESH_MIN: u32 = 2;
/// First window-probe delay (ms) (ikcp 1.7 / 1.7.1).
pub const PROBE_INIT: u32 = 7000;
/// Maximum window-probe delay (ms).
pub const PROBE_LIMIT: u32 = 120_000;
/// Default limit of fast retransmissions per segment.
pub const FASTACK_LIMIT: i32 = 5;
/// The largest fragment count a message may have: `frg` is one byte on the wire.
pub const FRG_MAX: usize = 255;
/// The smallest MTU ikcp accepts.
pub const MTU_MIN: u32 = 50;

const ASK_SEND: u32 = 1;
const ASK_TELL: u32 = 2;

/// `_itimediff`: the signed difference `later - earlier` of two wrapping `u32` values.
#[inline]
pub fn time_diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// Which rule limits the number of fragments of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentLimit {
    /// ikcp's rule: refuse a message of `128` fragments or more, whatever the receive
    /// window. Both peers can always reassemble what the other sends.
    Classic,
    /// kcp2k's rule: refuse `count >= rcv_wnd` (this instance's receive window) and
    /// `count > 255`. Allows larger messages, but only works when the peer's receive
    /// window is at least as large as ours.
    Kcp2k,
}

/// Errors of the KCP core, each mapped to ikcp's negative return code by [`KcpError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KcpError {
    /// `input`: the datagram is shorter than one segment header (ikcp -1).
    InputTooShort,
    /// `input`: a segment's conversation id is not ours (ikcp -1).
    ConvMismatch,
    /// `input`: a segment's `len` runs past the end of the datagram (ikcp -2).
    InputTruncated,
    /// `input`: a segment's command byte is not PUSH/ACK/WASK/WINS (ikcp -3).
    UnknownCommand(u8),
    /// `recv`: no message is queued (ikcp -1).
    RecvEmpty,
    /// `recv`: the first message has not been fully received yet (ikcp -2).
    RecvIncomplete,
    /// `recv`: the caller's buffer is smaller than the next message (ikcp -3).
    BufferTooSmall {
        /// The size of the next message.
        needed: usize,
    },
    /// `send`: the message needs more fragments than allowed (ikcp -2).
    TooManyFragments {
        /// Fragments the message would need.
        count: usize,
        /// The exclusive limit that applied.
        limit: usize,
    },
    /// `set_mtu`: the MTU is below 50 bytes (ikcp -1).
    InvalidMtu(u32),
}

impl KcpError {
    /// The negative return code ikcp gives for the same condition.
    pub fn code(&self) -> i32 {
        match self {
            KcpError::InputTooShort | KcpError::ConvMismatch => -1,
            KcpError::InputTruncated => -2,
            KcpError::UnknownCommand(_) => -3,
            KcpError::RecvEmpty => -1,
            KcpError::RecvIncomplete => -2,
            KcpError::BufferTooSmall { .. } => -3,
            KcpError::TooManyFragments { .. } => -2,
            KcpError::InvalidMtu(_) => -1,
        }
    }
}

impl fmt::Display for KcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KcpError::InputTooShort => f.write_str("datagram shorter than a KCP header"),
            KcpError::ConvMismatch => f.write_str("conversation id mismatch"),
            KcpError::InputTruncated => f.write_str("segment length exceeds the datagram"),
            KcpError::UnknownCommand(c) => write!(f, "unknown KCP command {c}"),
            KcpError::RecvEmpty => f.write_str("no message queued"),
            KcpError::RecvIncomplete => f.write_str("next message incomplete"),
            KcpError::BufferTooSmall { needed } => {
                write!(f, "buffer too small, next message has {needed} bytes")
            }
            KcpError::TooManyFragments { count, limit } => {
                write!(f, "message needs {count} fragments, limit is below {limit}")
            }
            KcpError::InvalidMtu(m) => write!(f, "mtu {m} is below the minimum of {MTU_MIN}"),
        }
    }
}

impl std::error::Error for KcpError {}

/// A copy of the internal counters that ikcp's conformance traces record (`st` events),
/// plus `ts_flush`. Useful for diagnostics and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KcpSnapshot {
    /// Oldest unacknowledged sequence number.
    pub snd_una: u32,
    /// Next sequence number to send.
    pub snd_nxt: u32,
    /// Next sequence number expected from the peer.
    pub rcv_nxt: u32,
    /// The peer's last advertised free receive window.
    pub rmt_wnd: u32,
    /// Congestion window (segments).
    pub cwnd: u32,
    /// Slow-start threshold.
    pub ssthresh: u32,
    /// Congestion-avoidance byte counter.
    pub incr: u32,
    /// Smoothed RTT (ms).
    pub rx_srtt: i32,
    /// RTT variation (ms).
    pub rx_rttval: i32,
    /// Current retransmission timeout (ms).
    pub rx_rto: i32,
    /// Segments waiting in the send queue (not yet in the window).
    pub nsnd_que: u32,
    /// Segments in flight (sent, not yet acknowledged).
    pub nsnd_buf: u32,
    /// Segments received in order, waiting for the application.
    pub nrcv_que: u32,
    /// Segments received out of order.
    pub nrcv_buf: u32,
    /// ACKs waiting for the next flush.
    pub ackcount: u32,
    /// Pending window-probe flags.
    pub probe: u32,
    /// Current window-probe delay (ms).
    pub probe_wait: u32,
    /// Time of the next window probe.
    pub ts_probe: u32,
    /// Total retransmissions by timeout.
    pub xmit: u32,
    /// 0, or `0xFFFF_FFFF` once the link is dead.
    pub state: u32,
    /// Time of the next interval flush.
    pub ts_flush: u32,
}

/// One segment held in a queue. `conv` and `cmd` are implied (ours, PUSH).
#[derive(Debug)]
struct Segment {
    frg: u8,
    wnd: u16,
    ts: u32,
    sn: u32,
    una: u32,
    resendts: u32,
    rto: u32,
    fastack: u32,
    xmit: u32,
    data: Vec<u8>,
}

impl Segment {
    fn header(&self, conv: u32) -> SegmentHeader {
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

/// The KCP control block. See the [module docs](self).
#[derive(Debug)]
pub struct Kcp {
    conv: u32,
    mtu: u32,
    mss: u32,
    state: u32,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    ssthresh: u32,
    rx_rttval: i32,
    rx_srtt: i32,
    rx_rto: i32,
    rx_minrto: i32,
    snd_wnd: u32,
    rcv_wnd: u32,
    rmt_wnd: u32,
    cwnd: u32,
    probe: u32,
    current: u32,
    interval: u32,
    ts_flush: u32,
    xmit: u32,
    nodelay: i32,
    updated: bool,
    ts_probe: u32,
    probe_wait: u32,
    dead_link: u32,
    incr: u32,
    fastresend: i32,
    fastlimit: i32,
    nocwnd: bool,
    stream: bool,
    fastack_conserve: bool,
    fragment_limit: FragmentLimit,
    reserved: usize,
    ack_limit: usize,
    acks_dropped: u64,
    fast_retransmits: u64,
    snd_queue: VecDeque<Segment>,
    snd_buf: VecDeque<Segment>,
    rcv_queue: VecDeque<Segment>,
    rcv_buf: VecDeque<Segment>,
    acklist: Vec<(u32, u32)>,
    pool: Vec<Vec<u8>>,
    pool_limit: usize,
    buffer: Vec<u8>,
}

impl Kcp {
    /// A new control block with ikcp's `ikcp_create` defaults: mtu 1400, windows 32/128,
    /// interval 100 ms, no-delay off, congestion control on, message mode, the classic
    /// fragment limit and fast-ack conservation on (ikcp 1.7.1).
    pub fn new(conv: u32) -> Kcp {
        Kcp {
            conv,
            mtu: MTU_DEF,
            mss: MTU_DEF - OVERHEAD,
            state: 0,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: THRESH_INIT,
            rx_rttval: 0,
            rx_srtt: 0,
            rx_rto: RTO_DEF,
            rx_minrto: RTO_MIN,
            snd_wnd: WND_SND,
            rcv_wnd: WND_RCV,
            rmt_wnd: WND_RCV,
            cwnd: 0,
            probe: 0,
            current: 0,
            interval: INTERVAL,
            ts_flush: INTERVAL,
            xmit: 0,
            nodelay: 0,
            updated: false,
            ts_probe: 0,
            probe_wait: 0,
            dead_link: DEADLINK,
            incr: 0,
            fastresend: 0,
            fastlimit: FASTACK_LIMIT,
            nocwnd: false,
            stream: false,
            fastack_conserve: true,
            fragment_limit: FragmentLimit::Classic,
            reserved: 0,
            ack_limit: 8192,
            acks_dropped: 0,
            fast_retransmits: 0,
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            acklist: Vec::new(),
            pool: Vec::new(),
            pool_limit: 32,
            buffer: Vec::new(),
        }
    }

    // ----------------------------------------------------------------- settings

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
        }
        if rcv > 0 {
            self.rcv_wnd = rcv.max(WND_RCV);
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

    fn fragment_limit_count(&self) -> usize {
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
    }

    /// Caps how many free segment buffers are kept for reuse (default 32).
    pub fn set_pool_limit(&mut self, n: usize) {
        self.pool_limit = n;
        self.pool.truncate(n);
    }

    // -------------------------------------------------------------- accessors

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// True once a segment reached the dead-link transmission count.
    pub fn is_dead(&self) -> bool {
        self.state == u32::MAX
    }

    /// `ikcp_waitsnd`: segments queued or in flight.
    pub fn wait_snd(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    /// Segments waiting in the send queue, in flight, received in order and received out of
    /// order, added up (kcp2k's choke measure).
    pub fn total_queued(&self) -> usize {
        self.snd_queue.len() + self.snd_buf.len() + self.rcv_queue.len() + self.rcv_buf.len()
    }

    /// The smoothed round-trip time in ms (0 before the first sample).
    pub fn srtt(&self) -> i32 {
        self.rx_srtt
    }

    /// The current retransmission timeout in ms.
    pub fn rto(&self) -> i32 {
        self.rx_rto
    }

    /// Fast retransmissions so far (timeout retransmissions are in [`KcpSnapshot::xmit`]).
    pub fn fast_retransmits(&self) -> u64 {
        self.fast_retransmits
    }

    /// ACKs dropped because the pending-ACK list hit its cap.
    pub fn acks_dropped(&self) -> u64 {
        self.acks_dropped
    }

    /// The internal counters, as recorded by the conformance traces.
    pub fn snapshot(&self) -> KcpSnapshot {
        KcpSnapshot {
            snd_una: self.snd_una,
            snd_nxt: self.snd_nxt,
            rcv_nxt: self.rcv_nxt,
            rmt_wnd: self.rmt_wnd,
            cwnd: self.cwnd,
            ssthresh: self.ssthresh,
            incr: self.incr,
            rx_srtt: self.rx_srtt,
            rx_rttval: self.rx_rttval,
            rx_rto: self.rx_rto,
            nsnd_que: self.snd_queue.len() as u32,
            nsnd_buf: self.snd_buf.len() as u32,
            nrcv_que: self.rcv_queue.len() as u32,
            nrcv_buf: self.rcv_buf.len() as u32,
            ackcount: self.acklist.len() as u32,
            probe: self.probe,
            probe_wait: self.probe_wait,
            ts_probe: self.ts_probe,
            xmit: self.xmit,
            state: self.state,
            ts_flush: self.ts_flush,
        }
    }

    /// True when a flush now would send something: pending ACKs or probes, or queued data
    /// the window admits. Drivers use it to flush early instead of waiting for the interval.
    pub fn has_pending_output(&self) -> bool {
        if !self.updated {
            return false;
        }
        if !self.acklist.is_empty() || self.probe != 0 {
            return true;
        }
        !self.snd_queue.is_empty()
            && time_diff(
                self.snd_nxt,
                self.snd_una.wrapping_add(self.effective_window()),
            ) < 0
    }

    /// True when nothing needs KCP's timers: no data queued or in flight, no pending ACKs or
    /// probes, and the peer's window is open. Such an instance need not be updated until new
    /// data is sent or received, which lets a driver skip idle connections entirely.
    pub fn is_idle(&self) -> bool {
        self.snd_queue.is_empty()
            && self.snd_buf.is_empty()
            && self.acklist.is_empty()
            && self.probe == 0
            && self.rmt_wnd != 0
    }

    /// Sets the clock used for RTT samples of the next [`Kcp::input`] without flushing.
    /// ikcp measures RTT against the time of the last update; a driver that knows the
    /// arrival time can call this first for more accurate samples.
    pub fn set_current(&mut self, current: u32) {
        self.current = current;
    }

    /// The dead-link threshold set by [`Kcp::set_dead_link`].
    pub fn dead_link(&self) -> u32 {
        self.dead_link
    }

    /// Releases pooled buffers beyond `keep` and spare queue capacity. Call on idle
    /// connections to bring their memory back down after a burst.
    pub fn trim_memory(&mut self, keep: usize) {
        self.pool.truncate(keep);
        self.pool.shrink_to_fit();
        self.snd_queue.shrink_to_fit();
        self.snd_buf.shrink_to_fit();
        self.rcv_queue.shrink_to_fit();
        self.rcv_buf.shrink_to_fit();
        self.acklist.shrink_to_fit();
    }

    /// Heap bytes currently held by this instance (buffers, pool and queue capacity).
    pub fn heap_bytes(&self) -> usize {
        let seg = std::mem::size_of::<Segment>();
        let queued: usize = self
            .snd_queue
            .iter()
            .chain(self.snd_buf.iter())
            .chain(self.rcv_queue.iter())
            .chain(self.rcv_buf.iter())
            .map(|s| s.data.capacity())
            .sum();
        let pooled: usize = self.pool.iter().map(|b| b.capacity()).sum();
        queued
            + pooled
            + self.pool.capacity() * std::mem::size_of::<Vec<u8>>()
            + (self.snd_queue.capacity()
                + self.snd_buf.capacity()
                + self.rcv_queue.capacity()
                + self.rcv_buf.capacity())
                * seg
            + self.acklist.capacity() * 8
            + self.buffer.capacity()
    }

    // --------------------------------------------------------------- segments

    fn new_segment(&mut self, data: &[u8]) -> Segment {
        let mut buf = self
            .pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.mss as usize));
        buf.clear();
        buf.extend_from_slice(data);
        Segment {
            frg: 0,
            wnd: 0,
            ts: 0,
            sn: 0,
            una: 0,
            resendts: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
            data: buf,
        }
    }

    fn free_segment(&mut self, seg: Segment) {
        if self.pool.len() < self.pool_limit {
            self.pool.push(seg.data);
        }
    }

    // ------------------------------------------------------------------ send

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
    fn move_rcv_buf(&mut self) {
        while let Some(seg) = self.rcv_buf.front() {
            if seg.sn == self.rcv_nxt && self.rcv_queue.len() < self.rcv_wnd as usize {
                if let Some(seg) = self.rcv_buf.pop_front() {
                    self.rcv_queue.push_back(seg);
                }
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            } else {
                break;
            }
        }
    }

    // ------------------------------------------------------------------ input

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

    fn update_ack(&mut self, rtt: i32) {
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttval = rtt / 2;
        } else {
            let delta = (rtt as i64 - self.rx_srtt as i64).abs();
            self.rx_rttval = ((3 * self.rx_rttval as i64 + delta) / 4) as i32;
            self.rx_srtt = ((7 * self.rx_srtt as i64 + rtt as i64) / 8) as i32;
            if self.rx_srtt < 1 {
                self.rx_srtt = 1;
            }
        }
        // ikcp compares the unsigned interval with the signed 4*rttval as unsigned values.
        let var = (self.rx_rttval as u32).wrapping_mul(4);
        let rto = (self.rx_srtt as u32).wrapping_add(self.interval.max(var)) as i32;
        // `_ibound_(minrto, rto, RTO_MAX)`, where ikcp's RTO_MAX is unsigned.
        let lo = rto.max(self.rx_minrto);
        self.rx_rto = if (lo as u32) < RTO_MAX as u32 {
            lo
        } else {
            RTO_MAX
        };
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

    // ------------------------------------------------------------------ flush

    fn wnd_unused(&self) -> u16 {
        let used = self.rcv_queue.len() as u32;
        if used < self.rcv_wnd {
            (self.rcv_wnd - used) as u16
        } else {
            0
        }
    }

    fn effective_window(&self) -> u32 {
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

#[cfg(test)]
mod tests;
