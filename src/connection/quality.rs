//! Connection quality: a ring of per-interval counters for windowed rates and the loss
//! estimate, the Pong flood limit, and the quality-reports extension (unreliable loss as the
//! peer sees it, over the last [`REPORT_SPAN`] reports).
//!
//! The ring holds the connection's cumulative counters at the last [`BUCKETS`] + 1
//! boundaries of [`BUCKET_MS`] intervals, so a window of [`QUALITY_WINDOW_MS`] is the
//! difference of two entries: fixed memory (264 bytes), no allocation, nothing to do per
//! message beyond the counters the connection keeps anyway. Counters change only inside the
//! connection's calls, each of which first records the boundaries passed since the previous
//! call ([`Window::roll`]), so an idle connection needs no wake-ups for it.

use super::extensions::{self, LOSS_UNKNOWN};
use super::{Connection, Ctx};
use crate::config::PING_INTERVAL_MS;
use crate::kcp::time_diff;
use crate::stats::{ConnectionQuality, QUALITY_WINDOW_MS};
use crate::wire::datagram::{UnreliableHeader, DATAGRAM_HEADER_LEN};

/// Length of one interval of the ring, in ms.
pub(crate) const BUCKET_MS: u32 = 100;
/// Intervals in a window.
pub(crate) const BUCKETS: usize = (QUALITY_WINDOW_MS / BUCKET_MS) as usize;
/// Most Pongs sent per ping interval: every honest Ping is answered (a peer pings once a
/// second), a Ping flood gets at most this many answers.
pub(crate) const PONG_LIMIT: u8 = 8;

/// Cumulative counters (wrapping `u32`: windows take differences).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub bytes_in: u32,
    pub bytes_out: u32,
    pub messages_in: u32,
    pub messages_out: u32,
    /// KCP segment transmissions, retransmissions included.
    pub segments_sent: u32,
    pub segments_retransmitted: u32,
}

impl Counters {
    fn minus(self, earlier: Counters) -> Counters {
        Counters {
            bytes_in: self.bytes_in.wrapping_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.wrapping_sub(earlier.bytes_out),
            messages_in: self.messages_in.wrapping_sub(earlier.messages_in),
            messages_out: self.messages_out.wrapping_sub(earlier.messages_out),
            segments_sent: self.segments_sent.wrapping_sub(earlier.segments_sent),
            segments_retransmitted: self
                .segments_retransmitted
                .wrapping_sub(earlier.segments_retransmitted),
        }
    }
}

/// The counters at the last `BUCKETS + 1` interval boundaries.
#[derive(Debug)]
pub(crate) struct Window {
    ring: [Counters; BUCKETS + 1],
    /// Index of the entry of `boundary`.
    head: u8,
    /// Entries recorded (at most `BUCKETS + 1`): a young connection has a shorter window.
    filled: u8,
    /// The newest recorded boundary (connection clock, ms).
    boundary: u32,
}

impl Window {
    /// A ring whose first boundary is `now`, with all counters zero.
    pub(crate) fn new(now: u32) -> Window {
        Window {
            ring: [Counters::default(); BUCKETS + 1],
            head: 0,
            filled: 1,
            boundary: now,
        }
    }

    /// Boundaries passed between the newest recorded one and `now`.
    fn passed(&self, now: u32) -> u32 {
        time_diff(now, self.boundary).max(0) as u32 / BUCKET_MS
    }

    /// Whether [`Window::roll`] has something to record at `now` (cheap: call it first).
    pub(crate) fn due(&self, now: u32) -> bool {
        time_diff(now, self.boundary) >= BUCKET_MS as i32
    }

    /// Records the boundaries passed up to `now` with `current`, the counters before this
    /// call changes them (they held since the previous call).
    pub(crate) fn roll(&mut self, now: u32, current: Counters) {
        let passed = self.passed(now);
        let n = (passed as usize).min(BUCKETS + 1);
        for _ in 0..n {
            self.head = ((self.head as usize + 1) % (BUCKETS + 1)) as u8;
            self.ring[self.head as usize] = current;
        }
        self.filled = (self.filled as usize + n).min(BUCKETS + 1) as u8;
        self.boundary = self.boundary.wrapping_add(passed.wrapping_mul(BUCKET_MS));
    }

    /// The counters' growth over the window ending at the newest boundary ≤ `now`, and the
    /// window's length in ms. `current` are the counters now.
    pub(crate) fn delta(&self, now: u32, current: Counters) -> (Counters, u32) {
        // Virtual entries: index `head` is the newest recorded, `head + k` the boundaries
        // passed since (all at `current`: nothing changed without a call).
        let k = self.passed(now) as i64;
        let end = k;
        let oldest = -(self.filled as i64 - 1);
        let start = (end - BUCKETS as i64).max(oldest);
        let at = |v: i64| {
            if v > 0 {
                current
            } else {
                let slots = (BUCKETS + 1) as i64;
                let i = (self.head as i64 + v).rem_euclid(slots) as usize;
                self.ring[i]
            }
        };
        let len = (end - start) as u32 * BUCKET_MS;
        (at(end).minus(at(start)), len)
    }
}

/// Pongs are answered up to [`PONG_LIMIT`] per ping interval.
#[derive(Debug, Default)]
pub(crate) struct PongLimiter {
    window_start: u32,
    sent: u8,
}

impl PongLimiter {
    /// Whether a Pong may be sent at `now` (and counts it).
    pub(crate) fn allow(&mut self, now: u32) -> bool {
        if self.sent == 0 || time_diff(now, self.window_start) >= PING_INTERVAL_MS as i32 {
            self.window_start = now;
            self.sent = 0;
        }
        if self.sent >= PONG_LIMIT {
            return false;
        }
        self.sent += 1;
        true
    }
}

/// Reports spanned by the unreliable loss estimate: a report delayed by its own
/// retransmission makes the messages that arrived meanwhile count for its interval; over
/// several intervals that error shrinks in proportion.
pub(crate) const REPORT_SPAN: usize = 4;

/// The quality-reports extension's state.
#[derive(Debug)]
pub(crate) struct Reports {
    /// (the peer's `unreliable_sent`, our unreliable messages received) when each of the
    /// last [`REPORT_SPAN`] reports was processed, oldest first; (0, 0) at the start.
    history: [(u32, u32); REPORT_SPAN],
    /// Loss of the peer's unreliable messages over those reports (1/10 000).
    loss_in: u16,
    /// Loss of our unreliable messages, as the peer last reported (1/10 000).
    peer_loss: u16,
    /// Our last report (`unreliable_sent`, `loss_seen`) and how many times in a row since
    /// it changed we had the same to say.
    last_sent: u32,
    last_loss: u16,
    repeats: u8,
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            history: [(0, 0); REPORT_SPAN],
            loss_in: LOSS_UNKNOWN,
            peer_loss: LOSS_UNKNOWN,
            last_sent: 0,
            last_loss: LOSS_UNKNOWN,
            repeats: 0,
        }
    }
}

fn loss_fraction(v: u16) -> Option<f32> {
    (v != LOSS_UNKNOWN).then_some(v as f32 / 10_000.0)
}

impl Reports {
    /// A report from the peer: it had sent `peer_sent` unreliable messages, we received
    /// `received`; it saw `peer_loss` of ours.
    pub(crate) fn on_report(&mut self, peer_sent: u32, peer_loss: u16, received: u32) {
        let (sent0, received0) = self.history[0];
        let sent = peer_sent.wrapping_sub(sent0);
        let got = received.wrapping_sub(received0);
        self.loss_in = if sent == 0 || sent > i32::MAX as u32 {
            LOSS_UNKNOWN
        } else {
            let lost = sent.saturating_sub(got) as u64;
            (lost * 10_000 / sent as u64) as u16
        };
        self.history.rotate_left(1);
        self.history[REPORT_SPAN - 1] = (peer_sent, received);
        self.peer_loss = if peer_loss > 10_000 {
            LOSS_UNKNOWN
        } else {
            peer_loss
        };
    }

    /// What our next report says about the peer's unreliable messages.
    pub(crate) fn loss_in(&self) -> u16 {
        self.loss_in
    }

    /// Whether a report saying `sent` and `loss` must go out. Once the same report went out
    /// [`REPORT_SPAN`] times after it last changed, the peer's estimate has reached what any
    /// number of further copies gives it (nothing sent over its whole span: unknown; our
    /// `loss` unchanged), so an idle connection stops reporting until something changes.
    pub(crate) fn should_send(&mut self, sent: u32, loss: u16) -> bool {
        if (sent, loss) == (self.last_sent, self.last_loss) {
            self.repeats = self.repeats.saturating_add(1);
        } else {
            (self.last_sent, self.last_loss, self.repeats) = (sent, loss, 0);
        }
        self.repeats as usize <= REPORT_SPAN
    }
}

impl Connection {
    /// The cumulative counters the window samples.
    pub(super) fn counters(&self) -> Counters {
        let s = &self.link.stats;
        let k = self.kcp.snapshot();
        let retransmitted = (k.xmit as u64).wrapping_add(self.kcp.fast_retransmits()) as u32;
        Counters {
            bytes_in: s.bytes_received as u32,
            bytes_out: s.bytes_sent as u32,
            messages_in: (s.reliable_received + s.unreliable_received) as u32,
            messages_out: (s.reliable_sent + s.unreliable_sent) as u32,
            segments_sent: k.snd_nxt.wrapping_add(retransmitted),
            segments_retransmitted: retransmitted,
        }
    }

    /// Records the window boundaries passed before this call at `now`: called first by
    /// every entry point that can change the counters.
    pub(super) fn roll_window(&mut self, now: u32) {
        if self.window.due(now) {
            let c = self.counters();
            self.window.roll(now, c);
        }
    }

    /// The link's quality at `now`.
    pub(crate) fn quality(&self, now: u32) -> ConnectionQuality {
        let k = self.kcp.snapshot();
        let (d, window_ms) = self.window.delta(now, self.counters());
        let per_sec = |v: u32| {
            if window_ms == 0 {
                0.0
            } else {
                v as f32 * 1000.0 / window_ms as f32
            }
        };
        let loss = if d.segments_sent == 0 {
            0.0
        } else {
            (d.segments_retransmitted as f32 / d.segments_sent as f32).min(1.0)
        };
        let (pending_bytes, pending_messages) = self.kcp.pending_send();
        ConnectionQuality {
            kcp_rtt_ms: k.rx_srtt.max(0) as u32,
            kcp_rtt_var_ms: k.rx_rttval.max(0) as u32,
            ping_rtt_ms: self.rtt,
            loss,
            loss_samples: d.segments_sent,
            peer_unreliable_loss: loss_fraction(self.reports.peer_loss),
            unreliable_loss_in: loss_fraction(self.reports.loss_in),
            bytes_in_per_sec: per_sec(d.bytes_in),
            bytes_out_per_sec: per_sec(d.bytes_out),
            messages_in_per_sec: per_sec(d.messages_in),
            messages_out_per_sec: per_sec(d.messages_out),
            window_ms,
            since_last_receive_ms: time_diff(now, self.last_receive).max(0) as u32,
            connected_ms: if self.established {
                time_diff(now, self.connected_at).max(0) as u32
            } else {
                0
            },
            pending_reliable_bytes: pending_bytes,
            pending_reliable_messages: pending_messages,
            peer_window: k.rmt_wnd,
        }
    }

    /// Sends a quality report (once per ping interval), if the extension was negotiated and
    /// the report would tell the peer something ([`Reports::should_send`]).
    pub(super) fn send_quality_report(&mut self, ctx: &mut Ctx<'_>) {
        if !self.ext.contains(extensions::Extensions::QUALITY_REPORTS) {
            return;
        }
        let (sent, loss) = (
            self.link.stats.unreliable_sent as u32,
            self.reports.loss_in(),
        );
        if !self.reports.should_send(sent, loss) {
            return;
        }
        let report = extensions::quality_report(sent, loss);
        let mut head = self.link.unreliable_header(UnreliableHeader::Data);
        head[DATAGRAM_HEADER_LEN] = extensions::UNRELIABLE_QUALITY_REPORT;
        self.link.transmit(ctx.tx, &head, &report);
    }

    /// A quality report from the peer (the bytes after its header byte).
    pub(super) fn on_quality_report(&mut self, ctx: &mut Ctx<'_>, body: &[u8]) {
        match extensions::parse_quality_report(body) {
            Some((sent, loss)) => {
                let received = self.link.stats.unreliable_received as u32;
                self.reports.on_report(sent, loss, received);
            }
            None => self.protocol_error(ctx, "quality report shorter than 6 bytes".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes_out: u32, segments_sent: u32, segments_retransmitted: u32) -> Counters {
        Counters {
            bytes_out,
            segments_sent,
            segments_retransmitted,
            ..Counters::default()
        }
    }

    #[test]
    fn window_covers_the_last_second_of_whole_intervals() {
        let start = u32::MAX - 250; // the clock wraps inside the test
        let mut w = Window::new(start);
        // 10 bytes per ms for 3 s, one call per ms.
        let mut total = 0u32;
        for t in 0..3000u32 {
            let now = start.wrapping_add(t);
            if w.due(now) {
                w.roll(now, c(total, 0, 0));
            }
            total += 10;
        }
        let now = start.wrapping_add(3000);
        let (d, len) = w.delta(now, c(total, 0, 0));
        assert_eq!(len, 1000);
        assert_eq!(d.bytes_out, 10_000);
        // Half a second later with no calls in between: the window slides over silence.
        let (d, len) = w.delta(now.wrapping_add(500), c(total, 0, 0));
        assert_eq!(len, 1000);
        assert_eq!(d.bytes_out, 5_000);
        let (d, _) = w.delta(now.wrapping_add(5000), c(total, 0, 0));
        assert_eq!(d.bytes_out, 0);
    }

    #[test]
    fn a_young_window_is_shorter_and_a_long_gap_is_recorded() {
        let mut w = Window::new(1000);
        let (d, len) = w.delta(1050, c(7, 0, 0));
        assert_eq!((d.bytes_out, len), (0, 0));
        w.roll(1350, c(300, 10, 1));
        let (d, len) = w.delta(1350, c(400, 20, 2));
        assert_eq!((d.bytes_out, d.segments_sent, len), (300, 10, 300));
        // A 10 s gap: the whole ring is refilled at once.
        w.roll(11_360, c(400, 20, 2));
        let (d, len) = w.delta(11_360, c(900, 20, 2));
        assert_eq!((d.bytes_out, len), (0, 1000));
    }

    #[test]
    fn pongs_answer_every_ping_but_not_a_flood() {
        let mut p = PongLimiter::default();
        // One Ping a second, even early and late: always answered.
        for t in [0u32, 990, 1985, 3001, 3999] {
            assert!(p.allow(t));
        }
        let mut q = PongLimiter::default();
        let answered = (0..1000u32).filter(|&t| q.allow(t)).count();
        assert_eq!(answered, PONG_LIMIT as usize);
    }

    #[test]
    fn identical_reports_stop_after_the_span_and_resume_on_a_change() {
        let mut r = Reports::default();
        // A fresh connection with nothing sent (what the peer assumes before any report):
        // four copies, then silence.
        let sent: Vec<bool> = (0..8).map(|_| r.should_send(0, LOSS_UNKNOWN)).collect();
        assert_eq!(sent, [true, true, true, true, false, false, false, false]);
        // A message was sent: the new report, four more copies (the last one makes the
        // peer's span free of new messages), then silence again.
        let sent: Vec<bool> = (0..7).map(|_| r.should_send(1, LOSS_UNKNOWN)).collect();
        assert_eq!(sent, [true, true, true, true, true, false, false]);
        // A new loss figure from the peer's side counts as a change too.
        assert!(r.should_send(1, 250));
        // The receiver's view after the copies that were sent is the fixed point that more
        // copies would keep: the peer's sends over the span are zero, so unknown.
        let mut peer = Reports::default();
        for _ in 0..=REPORT_SPAN {
            peer.on_report(7, LOSS_UNKNOWN, 7);
        }
        assert_eq!(peer.loss_in(), LOSS_UNKNOWN);
        let before = (peer.history, peer.loss_in, peer.peer_loss);
        peer.on_report(7, LOSS_UNKNOWN, 7);
        assert_eq!((peer.history, peer.loss_in, peer.peer_loss), before);
    }

    #[test]
    fn reports_give_the_loss_over_the_last_reports() {
        let mut r = Reports::default();
        r.on_report(100, LOSS_UNKNOWN, 90);
        assert_eq!(r.loss_in(), 1000);
        assert_eq!(loss_fraction(r.peer_loss), None);
        r.on_report(300, 2500, 270);
        assert_eq!(r.loss_in(), 1000);
        assert_eq!(loss_fraction(r.peer_loss), Some(0.25));
        // A late report counted 20 messages too many, the next one 20 too few: over the
        // span the error is shared.
        r.on_report(500, 0, 470);
        r.on_report(700, 0, 650);
        assert_eq!(r.loss_in(), 714); // 50 of 700 since the start
        r.on_report(900, 0, 810);
        assert_eq!(r.loss_in(), 1000); // (900 - 100) sent, (810 - 90) received
        for _ in 0..REPORT_SPAN {
            r.on_report(900, 0, 815); // nothing sent for a while: unknown
        }
        assert_eq!(r.loss_in(), LOSS_UNKNOWN);
        r.on_report(910, 0, 830); // duplicates: never negative
        assert_eq!(r.loss_in(), 0);
    }
}
