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
//! # Data structures and costs
//! The send and receive buffers are rings indexed by sequence number (`sn - snd_una`,
//! `sn - rcv_nxt`), so an ACK, a `una`, a received segment and a duplicate test cost O(1).
//! Retransmission times sit in a min-heap, so [`Kcp::check`] is O(1) and a flush with
//! nothing due does not walk the send buffer. Without fast-ack conservation (kcp2k, ikcp
//! 1.7) fast-ack accounting is O(1) per datagram; with it (ikcp 1.7.1), it walks the
//! segments before the datagram's largest ACK, as ikcp does. `peek_size` is O(1).
//!
//! # Deviations from ikcp against hostile peers
//! None of these can happen between honest peers with matching settings, so the
//! conformance traces are unaffected; each is counted in [`InputDrops`].
//! * A PUSH longer than `mss` is neither stored nor acknowledged.
//! * An ACK for a sequence number never sent (`sn >= snd_nxt`) is ignored, including its
//!   RTT sample and its part in fast-ack accounting; a `una` beyond `snd_nxt` is ignored.
//! * Fragments must count down by one to 0 within a message (ikcp accepts any sequence and
//!   reassembles up to the next `frg == 0`): otherwise `recv` and `peek_size` fail with
//!   [`KcpError::BadFragments`] and `recv` discards that message.
//!
//! # Memory
//! A fresh `Kcp` allocates nothing until it is used. Segment payload buffers come from a
//! pool of free buffers of `mss` bytes (the instance's own, or one shared by many instances
//! and lent for each use: [`Kcp::lend_buffers`]), capped by default at
//! `snd_wnd + rcv_wnd + 256` ([`Kcp::set_pool_limit`]): as many as the windows and one
//! message of the largest fragment count need, so that steady-state traffic, messages of the
//! largest size included, allocates nothing per segment. The pool only holds buffers that
//! were in use at once before, so it never adds to the peak. The output buffer is
//! `reserved + mtu` bytes, allocated at the first flush (or lent:
//! [`Kcp::swap_output_buffer`]). Every window-sized structure grows explicitly, from one
//! entry, doubling, and never beyond its window, so apart from the send queue (which the
//! application fills) what a peer can make an instance hold is bounded by
//! [`Kcp::memory_bound`], about `(snd_wnd + 2 * rcv_wnd + pool) * mss` plus the ACK list;
//! the exact formula is documented there. [`Kcp::trim_memory`] releases the pool and the
//! queue capacity of an idle instance, which brings it back to about
//! `size_of::<Kcp>() + reserved + mtu` bytes plus the buffers it keeps.

use std::collections::VecDeque;
use std::fmt;

use crate::wire::segment::SEGMENT_HEADER_LEN;
use memory::Peaks;
use queue::HeadScan;
use segment::{Pool, Segment};
use window::{RecvBuf, SendBuf};

mod config;
mod input;
mod memory;
mod output;
mod queue;
mod rtt;
mod segment;
mod window;

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
    /// `recv` / `peek_size`: the fragments of the first message do not count down by one to
    /// 0 (for example `3, 3, 1` or `5, 2, 0`). kcpnet only: ikcp accepts any `frg` sequence
    /// and reassembles whatever it finds up to the next `frg == 0`. An honest peer never
    /// sends this; treat it as a protocol error. [`Kcp::recv`] discards the broken
    /// fragments when it reports this, so the queue does not stall. Code -4 (no ikcp
    /// equivalent).
    BadFragments,
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
            KcpError::BadFragments => -4,
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
            KcpError::BadFragments => {
                f.write_str("the fragments of the next message do not count down to 0")
            }
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

/// What [`Kcp::input`] and [`Kcp::recv`] dropped or ignored from the peer, by reason
/// ([`Kcp::input_drops`]). The first three are ikcp's own rules, counted; the others are
/// kcpnet's additions against hostile or misconfigured peers, which no honest peer with
/// matching settings triggers (see [`InputDrops::violations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputDrops {
    /// PUSH segments at or beyond `rcv_nxt + rcv_wnd`: neither stored nor acknowledged
    /// (ikcp's rule).
    pub beyond_window: u64,
    /// PUSH segments already received (below `rcv_nxt`, or already buffered): acknowledged
    /// again, not stored (ikcp's rule; retransmissions cause them).
    pub duplicates: u64,
    /// PUSH segments whose ACK was not queued because the pending-ACK list was full
    /// ([`Kcp::set_ack_limit`]); the same as [`Kcp::acks_dropped`].
    pub acks_over_limit: u64,
    /// PUSH segments whose payload is longer than our `mss`: neither stored nor
    /// acknowledged (ikcp stores them). A peer with a larger MTU, or a hostile one.
    pub oversized: u64,
    /// ACK segments for a sequence number never sent (`sn >= snd_nxt`): ignored, RTT sample
    /// and fast-ack accounting included (ikcp takes the RTT sample).
    pub ack_unsent: u64,
    /// Segments whose `una` lies beyond `snd_nxt`: that `una` is ignored (ikcp would take
    /// everything in flight as acknowledged); the rest of the segment is processed.
    pub una_unsent: u64,
    /// Messages discarded by [`Kcp::recv`] because their fragments did not count down
    /// ([`KcpError::BadFragments`]).
    pub bad_fragments: u64,
}

impl InputDrops {
    /// The counts no honest peer with our MTU produces: `oversized + ack_unsent +
    /// una_unsent + bad_fragments`. A connection may treat any of them as a protocol error.
    pub fn violations(&self) -> u64 {
        self.oversized + self.ack_unsent + self.una_unsent + self.bad_fragments
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
    /// The latest RTT sample (ms), -1 before the first.
    rx_last: i32,
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
    /// Bytes of new data (segment headers included) the next flushes may still admit into
    /// the send window, for a rate cap above KCP (`None`: no cap, ikcp's behaviour).
    admit_budget: Option<i64>,
    drops: InputDrops,
    /// The largest settings so far, which bound the capacities (see `memory_bound`).
    peak: Peaks,
    /// What is known of the first message in `rcv_queue`.
    rcv_head: HeadScan,
    /// Discarding the rest of a message reported as `BadFragments`, up to its `frg == 0`.
    rcv_discarding: bool,
    fast_retransmits: u64,
    snd_queue: VecDeque<Segment>,
    snd_buf: SendBuf,
    rcv_queue: VecDeque<Segment>,
    rcv_buf: RecvBuf,
    /// `current` at the last flush, and its unwrapped 64-bit value: the timeline of the
    /// retransmission keys.
    clock32: u32,
    clock64: i64,
    /// Set when a fast retransmission may be due at the next flush: fast-ack counts grew,
    /// a fast-retransmit setting changed, or the last walk of the send buffer left a segment
    /// over the threshold (a timeout retransmission keeps its count).
    fast_dirty: bool,
    /// Fast-ack events so far (each adds at most one to a segment's count).
    fastack_events: u64,
    /// Tests: walk the send buffer in every flush, as ikcp does.
    #[cfg(test)]
    always_walk: bool,
    acklist: Vec<(u32, u32)>,
    pool: Pool,
    /// The pool cap follows the windows (no `set_pool_limit` yet).
    pool_auto: bool,
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
            rx_last: -1,
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
            admit_budget: None,
            drops: InputDrops::default(),
            peak: Peaks {
                mss: MTU_DEF - OVERHEAD,
                snd_wnd: WND_SND,
                rcv_wnd: WND_RCV,
                ack_limit: 8192,
            },
            rcv_head: HeadScan::default(),
            rcv_discarding: false,
            fast_retransmits: 0,
            snd_queue: VecDeque::new(),
            snd_buf: SendBuf::default(),
            rcv_queue: VecDeque::new(),
            rcv_buf: RecvBuf::default(),
            clock32: 0,
            clock64: 0,
            fast_dirty: false,
            fastack_events: 0,
            #[cfg(test)]
            always_walk: false,
            acklist: Vec::new(),
            pool: Pool::new(WND_SND as usize + WND_RCV as usize + FRG_MAX + 1),
            pool_auto: true,
            buffer: Vec::new(),
        }
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

    /// Payload bytes and messages queued or in flight, not yet acknowledged: O(segments held).
    /// Messages are counted by their last fragment (`frg == 0`) still held.
    pub fn pending_send(&self) -> (usize, usize) {
        self.snd_queue
            .iter()
            .chain(self.snd_buf.iter())
            .fold((0, 0), |(bytes, messages), s| {
                (bytes + s.data.len(), messages + usize::from(s.frg == 0))
            })
    }

    /// Bytes waiting in the send queue, not admitted to the window yet, as they will go on
    /// the wire (payload and segment header): O(segments queued).
    pub fn queued_wire_bytes(&self) -> usize {
        self.snd_queue
            .iter()
            .map(|s| s.data.len() + crate::wire::segment::SEGMENT_HEADER_LEN)
            .sum()
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

    /// The latest round-trip sample in ms (the age of the segment an ACK acknowledged, as
    /// its echoed timestamp tells), `None` before the first.
    pub fn last_rtt_sample(&self) -> Option<u32> {
        u32::try_from(self.rx_last).ok()
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
        self.drops.acks_over_limit
    }

    /// Segments and values from the peer dropped or ignored so far, by reason.
    pub fn input_drops(&self) -> InputDrops {
        self.drops
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
    /// the window (and the admission budget, if set) admits. Drivers use it to flush early instead of waiting for the interval.
    pub fn has_pending_output(&self) -> bool {
        if !self.updated {
            return false;
        }
        if !self.acklist.is_empty() || self.probe != 0 {
            return true;
        }
        !self.snd_queue.is_empty()
            && self.admit_budget.is_none_or(|b| {
                self.snd_queue
                    .front()
                    .is_some_and(|s| b >= (s.data.len() + SEGMENT_HEADER_LEN) as i64)
            })
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

    /// Whether received segments wait in the receive queue (a message, or the fragments of
    /// one, for [`Kcp::recv`]).
    pub fn has_received(&self) -> bool {
        !self.rcv_queue.is_empty()
    }

    /// Sets the clock used for RTT samples of the next [`Kcp::input`] without flushing.
    /// ikcp measures RTT against the time of the last update; a driver that knows the
    /// arrival time can call this first for more accurate samples.
    pub fn set_current(&mut self, current: u32) {
        self.current = current;
    }

    /// `t` on the 64-bit timeline of the retransmission keys: the value congruent to `t`
    /// modulo 2^32 that is nearest to the time of the last flush.
    fn time64(&self, t: u32) -> i64 {
        // Wrapping: 2^63 ms is far beyond any run, but time comes from the caller.
        self.clock64.wrapping_add(time_diff(t, self.clock32) as i64)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_rings;
