//! Connection quality: a ring of per-interval counters for windowed rates, the loss
//! estimates ([`LossWindow`]: datagrams lost each way from the peer's reports, and KCP's
//! retransmission ratio), the Pong flood limit, and the quality-reports extension
//! (unreliable loss as the peer sees it, over the last [`REPORT_SPAN`] reports; datagram
//! counts and the datagram loss each side sees).
//!
//! The ring holds the connection's cumulative counters at the last [`BUCKETS`] + 1
//! boundaries of [`BUCKET_MS`] intervals, so a window of [`QUALITY_WINDOW_MS`] is the
//! difference of two entries: fixed memory (264 bytes), no allocation, nothing to do per
//! message beyond the counters the connection keeps anyway. Counters change only inside the
//! connection's calls, each of which first records the boundaries passed since the previous
//! call ([`Window::roll`]), so an idle connection needs no wake-ups for it.

use super::extensions::{self, QualityReport, LOSS_UNKNOWN};
use super::{Connection, Ctx};
use crate::config::PING_INTERVAL_MS;
use crate::kcp::time_diff;
use crate::stats::{ConnectionQuality, LossEstimate, QUALITY_WINDOW_MS};
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

/// The weight what a [`LossWindow`] counted keeps at each update (about once a second).
const FADE: f32 = 1.0 - 1.0 / 16.0;

/// A loss ratio over recent trials (datagrams or segments), [`LossEstimate`]'s window: at
/// each update, about once a second, the counts so far fade by [`FADE`] and the new ones
/// are added; past [`LossEstimate::MAX_SAMPLES`] trials both sums are scaled down. So the
/// estimate always rests on as many recent samples as the traffic gave, up to that many,
/// and it follows a change within seconds on a busy connection (two thirds of a step in
/// about 7 s at 600 datagrams a second), within half a minute on a quiet one. 20 bytes, no allocation; updates come once a second, never per
/// datagram.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LossWindow {
    /// The cumulative (trials, successes) of the last update; `None` before the first,
    /// which only sets it (what came before is not comparable: handshake, stateless replies).
    base: Option<(u32, u32)>,
    /// Faded sums of trials and of failures (trials − successes: negative in an interval
    /// where datagrams counted lost in the previous one arrived late, or duplicates came).
    trials: f32,
    lost: f32,
}

impl LossWindow {
    /// Counts up to the cumulative `trials` and `successes` (wrapping `u32`). An update
    /// whose trials went backwards (a reordered report) is ignored.
    pub(crate) fn update(&mut self, trials: u32, successes: u32) {
        let Some((t0, s0)) = self.base else {
            self.base = Some((trials, successes));
            return;
        };
        let dt = trials.wrapping_sub(t0);
        if dt > i32::MAX as u32 {
            return;
        }
        let ds = successes.wrapping_sub(s0).min(i32::MAX as u32);
        self.base = Some((trials, successes));
        self.trials = self.trials * FADE + dt as f32;
        self.lost = self.lost * FADE + (dt as f32 - ds as f32);
        let cap = LossEstimate::MAX_SAMPLES as f32;
        if self.trials > cap {
            self.lost *= cap / self.trials;
            self.trials = cap;
        }
    }

    /// The estimate: failures ÷ trials, with the margin of that many samples.
    pub(crate) fn estimate(&self) -> LossEstimate {
        let n = self.trials.round() as u32;
        if n == 0 {
            return LossEstimate::UNKNOWN;
        }
        LossEstimate::new(self.lost / self.trials, n)
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
    /// Loss of the peer's datagrams: its `datagrams_sent` against ours received.
    datagrams_in: LossWindow,
    /// Loss of our datagrams as the peer last reported it: 1/10 000 (or [`LOSS_UNKNOWN`])
    /// and the samples behind it.
    datagrams_out: (u16, u16),
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
            datagrams_in: LossWindow::default(),
            datagrams_out: (LOSS_UNKNOWN, 0),
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

    /// The datagram fields of a report from the peer: it had sent `peer_sent` datagrams, we
    /// received `received`; it saw `loss` (1/10 000) of ours over `samples`.
    pub(crate) fn on_datagram_report(
        &mut self,
        peer_sent: u32,
        received: u32,
        loss: u16,
        samples: u16,
    ) {
        self.datagrams_in.update(peer_sent, received);
        self.datagrams_out = if loss > 10_000 || samples == 0 {
            (LOSS_UNKNOWN, 0)
        } else {
            (loss, samples)
        };
    }

    /// Loss of the peer's datagrams, counted here.
    pub(crate) fn datagram_loss_in(&self) -> LossEstimate {
        self.datagrams_in.estimate()
    }

    /// Loss of our datagrams, as the peer reported it.
    pub(crate) fn datagram_loss_out(&self) -> LossEstimate {
        match self.datagrams_out {
            (LOSS_UNKNOWN, _) | (_, 0) => LossEstimate::UNKNOWN,
            (loss, samples) => LossEstimate::new(loss as f32 / 10_000.0, samples as u32),
        }
    }

    /// What our next report says about the peer's datagrams: 1/10 000 (or
    /// [`LOSS_UNKNOWN`]) and the samples behind it.
    fn datagram_loss_seen(&self) -> (u16, u16) {
        let e = self.datagrams_in.estimate();
        if e.samples == 0 {
            (LOSS_UNKNOWN, 0)
        } else {
            (
                (e.value * 10_000.0).round() as u16,
                e.samples.min(u16::MAX as u32) as u16,
            )
        }
    }

    /// Whether a report saying `sent` and `loss` must go out. Once the same report went out
    /// [`REPORT_SPAN`] times after it last changed, the peer's estimate has reached what any
    /// number of further copies gives it (nothing sent over its whole span: unknown; our
    /// `loss` unchanged), so an idle connection stops reporting until something changes.
    /// `active`: reliable messages moved since the last report, which the datagram counts
    /// must hear of (an idle connection's pings alone do not keep reports going; their
    /// datagrams are counted in the first report after it).
    pub(crate) fn should_send(&mut self, sent: u32, loss: u16, active: bool) -> bool {
        if (sent, loss) == (self.last_sent, self.last_loss) && !active {
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

    /// Once per ping interval: counts KCP's segments into the retransmission ratio.
    pub(super) fn update_retransmit_ratio(&mut self) {
        let c = self.counters();
        // Successes: first transmissions (`snd_nxt`), so failures are the retransmissions.
        let first = c.segments_sent.wrapping_sub(c.segments_retransmitted);
        self.retransmits.update(c.segments_sent, first);
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
        let (send_rate_limit, send_queue_ms) = self.pace_quality(self.kcp.queued_wire_bytes());
        #[allow(deprecated)] // `loss` and `loss_samples` are still filled in
        ConnectionQuality {
            kcp_rtt_ms: k.rx_srtt.max(0) as u32,
            kcp_rtt_var_ms: k.rx_rttval.max(0) as u32,
            ping_rtt_ms: self.rtt,
            loss_out: self.reports.datagram_loss_out(),
            loss_in: self.reports.datagram_loss_in(),
            retransmit_ratio: self.retransmits.estimate(),
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
            send_rate_limit,
            send_queue_ms,
        }
    }

    /// Sends a quality report (once per ping interval), if the extension was negotiated and
    /// the report would tell the peer something ([`Reports::should_send`]).
    /// `active`: reliable messages moved since the last one ([`Reports::should_send`]).
    pub(super) fn send_quality_report(&mut self, ctx: &mut Ctx<'_>, active: bool) {
        if !self.ext.contains(extensions::Extensions::QUALITY_REPORTS) {
            return;
        }
        let (sent, loss) = (
            self.link.stats.unreliable_sent as u32,
            self.reports.loss_in(),
        );
        if !self.reports.should_send(sent, loss, active) {
            return;
        }
        let (datagram_loss, samples) = self.reports.datagram_loss_seen();
        let report = extensions::quality_report(&QualityReport {
            unreliable_sent: sent,
            loss_seen: loss,
            datagrams: Some((
                self.link.stats.datagrams_sent as u32,
                datagram_loss,
                samples,
            )),
        });
        let mut head = self.link.unreliable_header(UnreliableHeader::Data);
        head[DATAGRAM_HEADER_LEN] = extensions::UNRELIABLE_QUALITY_REPORT;
        self.link.transmit(ctx.tx, &head, &report);
    }

    /// A quality report from the peer (the bytes after its header byte).
    pub(super) fn on_quality_report(&mut self, ctx: &mut Ctx<'_>, body: &[u8]) {
        match extensions::parse_quality_report(body) {
            Some(r) => {
                let received = self.link.stats.unreliable_received as u32;
                self.reports
                    .on_report(r.unreliable_sent, r.loss_seen, received);
                if let Some((sent, loss, samples)) = r.datagrams {
                    // This report is not counted yet on either side.
                    // What the link delivered: datagrams FEC rebuilt were lost on it.
                    let received = self
                        .link
                        .stats
                        .datagrams_received
                        .wrapping_sub(self.fec_counters().recovered)
                        as u32;
                    self.reports
                        .on_datagram_report(sent, received, loss, samples);
                    self.fec_loss_measured(self.reports.datagram_loss_out());
                }
            }
            None => self.protocol_error(
                ctx,
                format!(
                    "quality report shorter than {} bytes",
                    extensions::QUALITY_REPORT_MIN_LEN
                ),
            ),
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
        let sent: Vec<bool> = (0..8)
            .map(|_| r.should_send(0, LOSS_UNKNOWN, false))
            .collect();
        assert_eq!(sent, [true, true, true, true, false, false, false, false]);
        // A message was sent: the new report, four more copies (the last one makes the
        // peer's span free of new messages), then silence again.
        let sent: Vec<bool> = (0..7)
            .map(|_| r.should_send(1, LOSS_UNKNOWN, false))
            .collect();
        assert_eq!(sent, [true, true, true, true, true, false, false]);
        // A new loss figure from the peer's side counts as a change too.
        assert!(r.should_send(1, 250, false));
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

    #[test]
    fn a_loss_window_counts_from_its_second_update_and_fades() {
        let mut w = LossWindow::default();
        assert_eq!(w.estimate(), LossEstimate::UNKNOWN);
        // The first update is the baseline: whatever came before is not counted.
        w.update(1_000, 10);
        assert_eq!(w.estimate().samples, 0);
        // 100 sent, 90 arrived.
        w.update(1_100, 100);
        let e = w.estimate();
        assert_eq!((e.samples, (e.value * 1000.0).round()), (100, 100.0));
        // A datagram counted lost arrives late in the next interval: it is paid back.
        w.update(1_200, 201);
        let e = w.estimate();
        assert!((e.value - (10.0 * FADE - 1.0) / (100.0 * FADE + 100.0)).abs() < 1e-6);
        // A reordered (older) update is ignored; counters wrap.
        let before = (w.trials, w.lost);
        w.update(1_150, 150);
        assert_eq!((w.trials, w.lost), before);
        let mut v = LossWindow::default();
        v.update(u32::MAX - 50, u32::MAX - 50);
        v.update(49, 39);
        assert_eq!(v.estimate().samples, 100);
        assert!((v.estimate().value - 0.10).abs() < 1e-6);
        // Duplicates (more arrived than were sent): never below zero.
        let mut d = LossWindow::default();
        d.update(0, 0);
        d.update(100, 103);
        assert_eq!(d.estimate().value, 0.0);
    }

    #[test]
    fn a_loss_window_keeps_at_most_its_samples_and_follows_a_change() {
        let mut w = LossWindow::default();
        let (mut sent, mut got) = (0u32, 0u32);
        w.update(sent, got);
        // 1,000 datagrams a second at 10 % loss for a minute: capped, and exact.
        for _ in 0..60 {
            sent += 1000;
            got += 900;
            w.update(sent, got);
        }
        let e = w.estimate();
        assert_eq!(e.samples, LossEstimate::MAX_SAMPLES);
        assert!((e.value - 0.10).abs() < 1e-4, "{e:?}");
        // The loss drops to 0: within 10 s the estimate is down from 10 % to about 1 %.
        for _ in 0..10 {
            sent += 1000;
            got += 1000;
            w.update(sent, got);
        }
        assert!(w.estimate().value < 0.012, "{:?}", w.estimate());
        // A quiet connection: 5 datagrams a second; what it counted fades, so after two
        // minutes at 20 % the estimate is close to 20 %, on the last quarter minute or so.
        for _ in 0..120 {
            sent += 5;
            got += 4;
            w.update(sent, got);
        }
        let e = w.estimate();
        assert!((e.value - 0.20).abs() < 0.03, "{e:?}");
        assert!((60..=100).contains(&e.samples), "{e:?}");
    }

    #[test]
    fn datagram_reports_give_both_directions() {
        let mut r = Reports::default();
        assert_eq!(r.datagram_loss_seen(), (LOSS_UNKNOWN, 0));
        r.on_datagram_report(500, 480, LOSS_UNKNOWN, 0);
        assert_eq!(r.datagram_loss_out(), LossEstimate::UNKNOWN);
        r.on_datagram_report(1_500, 1_430, 250, 800);
        // Ours: 50 of 1,000 lost.
        assert_eq!(r.datagram_loss_seen(), (500, 1000));
        assert_eq!(r.datagram_loss_in().samples, 1000);
        // Theirs, as reported.
        let out = r.datagram_loss_out();
        assert_eq!((out.value, out.samples), (0.025, 800));
        assert!(out.margin > 0.01 && out.margin < 0.03, "{out:?}");
        // Nonsense from the peer is unknown, not a figure.
        r.on_datagram_report(2_500, 2_430, 10_001, 800);
        assert_eq!(r.datagram_loss_out(), LossEstimate::UNKNOWN);
    }

    #[test]
    fn activity_keeps_reports_going() {
        let mut r = Reports::default();
        for _ in 0..10 {
            assert!(r.should_send(0, LOSS_UNKNOWN, true));
        }
        let sent: Vec<bool> = (0..6)
            .map(|_| r.should_send(0, LOSS_UNKNOWN, false))
            .collect();
        assert_eq!(sent, [true, true, true, true, false, false]);
    }
}
