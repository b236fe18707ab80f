//! Connection and endpoint statistics.

/// How good a connection's link is right now (like GameNetworkingSockets' connection status
/// or renet's `NetworkInfo`): [`crate::Server::connection_quality`],
/// [`crate::Client::connection_quality`], and [`ConnectionStats::quality`].
///
/// Rates cover a recent window: the last [`QUALITY_WINDOW_MS`] of whole 100 ms intervals
/// (less while the connection is younger; `window_ms` says how much), so traffic of the
/// last 100 ms is not counted yet.
///
/// # Which loss figure to show
///
/// | field | what it measures | show it |
/// |---|---|---|
/// | [`loss_out`](Self::loss_out) | datagrams this side sent that never reached the peer (the peer counts them) | **yes**: the link's loss on the way out, kcpnet peers |
/// | [`loss_in`](Self::loss_in) | datagrams the peer sent that never arrived here | yes, next to `loss_out` |
/// | [`retransmit_ratio`](Self::retransmit_ratio) | KCP segments retransmitted ÷ sent | with a kcp2k peer, the only figure: an upper bound of the round trip's loss |
///
/// [`ConnectionQuality::loss_estimate`] picks for you: `loss_out` when the peer reports,
/// else `retransmit_ratio`. Each is a [`LossEstimate`]: a value, the samples behind it and
/// a margin, so a dashboard can grey out (or show as a range) what is not known yet.
/// `peer_unreliable_loss` and `unreliable_loss_in` count the unreliable channel's messages
/// only (what an unreliable stream loses), and the deprecated `loss` is the retransmission
/// ratio of the last second, which at game packet rates rests on a handful of segments.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionQuality {
    /// KCP's smoothed round-trip time from the ACKs of its segments, in ms (0 before the
    /// first sample): the link's RTT, what the retransmission timer uses.
    pub kcp_rtt_ms: u32,
    /// KCP's RTT variation (mean deviation), in ms.
    pub kcp_rtt_var_ms: u32,
    /// The round trip of the latest Ping/Pong, in ms (`None` until the first Pong). Pings
    /// travel in the reliable stream, so under load this includes the time spent queued
    /// behind reliable data: it is the application-level latency, not the link's. On a
    /// server whose client pings (the server then sends no Pings of its own, see
    /// `docs/PROTOCOL.md`), it is the round trip of the server's latest acknowledged Pong,
    /// updated once per ping interval. Between kcpnet ends (the slow keepalive) a server
    /// answers an idle client's Pings mostly with the ACK alone: an idle client's figure is
    /// then KCP's sample from the ACK of its last Ping, and an idle server's is at most
    /// four keepalive intervals (12 s by default) old.
    pub ping_rtt_ms: Option<u32>,
    /// **The loss to show**: the fraction of this side's datagrams (every kind: data,
    /// ACKs, pings, reports) that did not reach the peer. The peer counts what arrives and
    /// reports it about once a second (kcpnet peers, quality-reports extension; unknown —
    /// `samples` 0 — with a kcp2k peer or for the first two seconds). One-way, so ACK loss
    /// on the way back does not inflate it, and right at any traffic rate: a connection
    /// sending a few messages a second gathers its samples over a longer time (see
    /// [`LossEstimate`] for the window and the margin).
    pub loss_out: LossEstimate,
    /// The fraction of the peer's datagrams that did not arrive here, counted here against
    /// the peer's reports (kcpnet peers; as [`loss_out`](Self::loss_out) otherwise).
    pub loss_in: LossEstimate,
    /// KCP data segments retransmitted (timeouts and fast resends) ÷ segments sent,
    /// retransmissions included, over the same sample window as `loss_out`. Known with
    /// every peer, kcp2k included, but an upper bound: a lost ACK causes a retransmission
    /// too, so with loss `p` each way it reads between `p` (many segments in flight, whose
    /// ACKs cover each other) and about `2p` (a few messages a second, each ACK alone), plus
    /// any timeout that fired early.
    pub retransmit_ratio: LossEstimate,
    /// The retransmission ratio of the last [`QUALITY_WINDOW_MS`] only (`window_ms`).
    #[deprecated(
        note = "the last second's retransmission ratio: a handful of segments at game packet \
                rates (33-50 % read on a 5 % link); use `loss_out` (kcpnet peers), \
                `retransmit_ratio` or `ConnectionQuality::loss_estimate()`"
    )]
    pub loss: f32,
    /// KCP segments sent in the last [`QUALITY_WINDOW_MS`]: the sample behind the
    /// deprecated `loss`.
    #[deprecated(note = "the sample of the deprecated `loss`; see `LossEstimate::samples`")]
    pub loss_samples: u32,
    /// Fraction of this side's unreliable **messages** the peer did not receive, as the
    /// peer reports it about once a second (kcpnet peers: quality-reports extension; `None`
    /// with a kcp2k peer or before a report covered any unreliable traffic): the
    /// unreliable channel alone, over the peer's last four reports.
    pub peer_unreliable_loss: Option<f32>,
    /// Fraction of the peer's unreliable messages this side did not receive, over its last
    /// four reports (kcpnet peers only, as above).
    pub unreliable_loss_in: Option<f32>,
    /// Bytes received per second in the window (whole datagrams, headers included).
    pub bytes_in_per_sec: f32,
    /// Bytes sent per second in the window (whole datagrams: data, ACKs, retransmissions).
    pub bytes_out_per_sec: f32,
    /// Application messages delivered per second in the window (both channels).
    pub messages_in_per_sec: f32,
    /// Application messages sent per second in the window (both channels).
    pub messages_out_per_sec: f32,
    /// The length of the window the rates cover, in ms.
    pub window_ms: u32,
    /// Time since the last datagram accepted from the peer, in ms.
    pub since_last_receive_ms: u32,
    /// Time since the handshake completed, in ms (0 while connecting).
    pub connected_ms: u32,
    /// Reliable payload bytes queued or in flight, not yet acknowledged (message header
    /// bytes and kcp2k's own Ping/Pong included).
    pub pending_reliable_bytes: usize,
    /// Reliable messages queued or in flight, not yet acknowledged (Pings included).
    pub pending_reliable_messages: usize,
    /// The peer's last advertised free receive window, in segments.
    pub peer_window: u32,
    /// The connection's send-rate cap in bytes per second (`Config::send_rate_limit`,
    /// `Server::set_send_rate`); `None` without one.
    pub send_rate_limit: Option<u32>,
    /// Under a send-rate cap, how long what waits to leave takes at the cap, in ms:
    /// reliable data not yet admitted to the send window, unreliable messages held back,
    /// and the bucket's debt. `None` without a cap. A game can hold back its own bulk
    /// traffic (or lower its update rate) when this grows.
    pub send_queue_ms: Option<u32>,
}

impl ConnectionQuality {
    /// The one loss figure for a dashboard or an adaptive sender: [`loss_out`](Self::loss_out)
    /// once the peer reported (kcpnet peers), else
    /// [`retransmit_ratio`](Self::retransmit_ratio) (kcp2k peers; an upper bound).
    pub fn loss_estimate(&self) -> LossEstimate {
        if self.loss_out.samples > 0 {
            self.loss_out
        } else {
            self.retransmit_ratio
        }
    }
}

/// A loss fraction with the evidence behind it (see [`ConnectionQuality`]'s table).
///
/// The samples are recent datagrams (or KCP segments), the older ones fading: at each
/// report, about once a second, what was counted before weighs 1/16 less, and at most the
/// last [`LossEstimate::MAX_SAMPLES`] count. A busy connection thus estimates over its last
/// few seconds, a quiet one over its last quarter minute or so (about 16 seconds' worth of
/// its datagrams), and the margin says how far to trust either. The margin is sampling
/// error only: right after the loss changes, the estimate lags by that window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossEstimate {
    /// The estimate, 0..=1 (0 when nothing was counted: see `samples`).
    pub value: f32,
    /// How many datagrams (segments) stand behind `value`, the faded ones counted by their
    /// weight; 0 means unknown.
    pub samples: u32,
    /// Half the width of the 99 % confidence interval around `value` (Wilson score
    /// interval of `samples` independent trials; the larger side), 0..=1; 1 when unknown.
    /// At 5 % loss it is about 3 points over 500 samples and 1 point over 4,000.
    pub margin: f32,
}

impl Default for LossEstimate {
    fn default() -> Self {
        LossEstimate::UNKNOWN
    }
}

/// How far a [`LossEstimate`] can be trusted ([`LossEstimate::confidence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum LossConfidence {
    /// Nothing counted yet (or a kcp2k peer, for the report-based figures).
    None,
    /// A margin over 2 points: a rough figure, show it as a range or greyed out.
    Low,
    /// A margin of 1 to 2 points.
    Medium,
    /// A margin of at most 1 point.
    High,
}

impl LossEstimate {
    /// Nothing counted.
    pub const UNKNOWN: LossEstimate = LossEstimate {
        value: 0.0,
        samples: 0,
        margin: 1.0,
    };

    /// The most samples an estimate keeps (older ones are scaled down to make room).
    pub const MAX_SAMPLES: u32 = 4096;

    /// An estimate of `value` (clamped to 0..=1) from `samples` trials, with its margin.
    /// A value that is not a number, or no samples, gives [`LossEstimate::UNKNOWN`].
    pub fn new(value: f32, samples: u32) -> LossEstimate {
        if samples == 0 || value.is_nan() {
            return LossEstimate::UNKNOWN;
        }
        let p = value.clamp(0.0, 1.0);
        LossEstimate {
            value: p,
            samples,
            margin: wilson_margin(p as f64, samples as f64) as f32,
        }
    }

    /// Whether anything was counted.
    pub fn is_known(&self) -> bool {
        self.samples > 0
    }

    /// The margin as a level: [`LossConfidence::High`] within 1 point,
    /// [`LossConfidence::Medium`] within 2, else [`LossConfidence::Low`].
    pub fn confidence(&self) -> LossConfidence {
        if self.samples == 0 {
            LossConfidence::None
        } else if self.margin <= 0.01 {
            LossConfidence::High
        } else if self.margin <= 0.02 {
            LossConfidence::Medium
        } else {
            LossConfidence::Low
        }
    }
}

/// The z-score of a two-sided 99 % interval.
const Z99: f64 = 2.576;

/// The larger distance from `p` to the ends of the Wilson score interval of `n` trials.
fn wilson_margin(p: f64, n: f64) -> f64 {
    let z2 = Z99 * Z99;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z99 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let (lo, hi) = ((centre - half).max(0.0), (centre + half).min(1.0));
    (p - lo).max(hi - p).clamp(0.0, 1.0)
}

/// The window of [`ConnectionQuality`]'s rates (and of the deprecated `loss`), in ms.
pub const QUALITY_WINDOW_MS: u32 = 1000;

/// Counters and gauges of one connection (like ENet's per-peer or GameNetworkingSockets'
/// connection status). Counters start at zero when the connection is created.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionStats {
    /// Round-trip time of the latest kcp2k Ping/Pong, in ms (`None` until the first Pong);
    /// includes queueing behind reliable data (see [`ConnectionQuality::ping_rtt_ms`]).
    pub rtt_ms: Option<u32>,
    /// KCP's smoothed RTT from its ACKs, in ms (0 before the first sample): the link's RTT.
    pub srtt_ms: u32,
    /// KCP's RTT variation, in ms.
    pub rttvar_ms: u32,
    /// KCP's current retransmission timeout, in ms.
    pub rto_ms: u32,
    /// Datagrams sent (all channels).
    pub datagrams_sent: u64,
    /// Datagrams received and accepted.
    pub datagrams_received: u64,
    /// Bytes sent, kcp2k header included.
    pub bytes_sent: u64,
    /// Bytes received in accepted datagrams.
    pub bytes_received: u64,
    /// Reliable messages queued by the application.
    pub reliable_sent: u64,
    /// Reliable messages delivered to the application.
    pub reliable_received: u64,
    /// Unreliable messages sent.
    pub unreliable_sent: u64,
    /// Unreliable messages sent with [`SendFlags::NO_DELAY`](crate::SendFlags::NO_DELAY)
    /// that could not leave at once (the handshake was not complete, or the send-rate cap
    /// held traffic back) and were dropped.
    pub unreliable_dropped_no_delay: u64,
    /// Unreliable messages the send-rate cap dropped: held back while more than a quarter
    /// second of the cap (at least two datagrams) already waited, or held when the
    /// connection closed.
    pub unreliable_dropped_rate: u64,
    /// Unreliable messages delivered to the application.
    pub unreliable_received: u64,
    /// KCP segments retransmitted after a timeout.
    pub retransmits: u64,
    /// KCP segments retransmitted early (fast resend).
    pub fast_retransmits: u64,
    /// KCP data segments sent, retransmissions included: the lifetime loss estimate is
    /// `(retransmits + fast_retransmits) / segments_sent`.
    pub segments_sent: u64,
    /// Datagrams dropped on receive: wrong cookie, malformed, or rejected by KCP.
    pub datagrams_dropped: u64,
    /// Datagrams not sent: the anti-amplification budget of a half-open peer, or a full
    /// socket send buffer.
    pub sends_dropped: u64,
    /// Segments waiting to enter the send window (backlog).
    pub send_queue: u32,
    /// Segments sent and not yet acknowledged.
    pub in_flight: u32,
    /// Segments received and waiting to be taken by the application.
    pub recv_queue: u32,
    /// Segments received out of order, waiting for the gap to fill.
    pub recv_buffer: u32,
    /// The peer's last advertised receive window, in segments.
    pub remote_window: u32,
    /// KCP segments refused on input, by reason (beyond the window, duplicates, oversized,
    /// ACKs or `una` for data never sent, bad fragment counts): see `docs/PROTOCOL.md`.
    pub input_drops: crate::kcp::InputDrops,
    /// The link right now: RTTs named apart, windowed loss and rates, pending bytes.
    pub quality: ConnectionQuality,
    /// FEC: datagrams the peer lost that this end rebuilt from parity (no retransmission
    /// was needed for them).
    pub fec_recovered: u64,
    /// FEC: parity datagrams this end sent (`Config::fec`).
    pub fec_parity_sent: u64,
    /// FEC: bytes of those parity datagrams (the bandwidth FEC costs).
    pub fec_parity_bytes: u64,
    /// FEC: parity datagrams received from the peer.
    pub fec_parity_received: u64,
    /// FEC: the shape this end encodes with now, `(data, parity)`: datagrams in a full
    /// group and parity datagrams per group (with `Fec::Adaptive`, what the measured loss
    /// asks for; parity 0 on a clean link). `None` when this end sends no FEC.
    pub fec_shape: Option<(u8, u8)>,
}

/// Counters of a whole server (or client) endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams read from the socket.
    pub datagrams_received: u64,
    /// Datagrams written to the socket.
    pub datagrams_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Datagrams from unknown endpoints that were neither a valid Hello nor carried a cookie
    /// that verifies (dropped, no state, no reply).
    pub dropped_unknown: u64,
    /// Datagrams of a connection that had just closed (within 2 s, same address and
    /// cookie): the peer's redundant close datagrams (kcp2k repeats its Disconnect five
    /// times) and data that was already in flight. Not strangers, so not `dropped_unknown`.
    pub dropped_after_close: u64,
    /// Valid Hellos from unknown endpoints answered with the stateless reply (nothing stored).
    pub hello_replies: u64,
    /// Handshakes a draining server refused (`Server::begin_drain`): Hellos it did not answer
    /// and proofs of address it answered with the drain's reason instead of a connection.
    pub refused_draining: u64,
    /// Peers that proved their address while `max_connections` was reached (dropped).
    pub dropped_limit: u64,
    /// Datagrams dropped by a connection (bad cookie, malformed, KCP-invalid).
    pub dropped_invalid: u64,
    /// Sends the socket refused (its buffer was full) or that failed.
    pub send_errors: u64,
    /// Connections that completed the handshake.
    pub connections_accepted: u64,
    /// Secure sessions: connect tokens refused because they did not open (forged,
    /// tampered, another key), were not of this protocol id, or were malformed (or a Hello
    /// offered the secure extension without a token). No reply is sent.
    pub tokens_invalid: u64,
    /// Secure sessions: connect tokens refused because they had expired.
    pub tokens_expired: u64,
    /// Secure sessions: connect tokens refused because they name other servers.
    pub tokens_wrong_server: u64,
    /// Secure sessions: connect tokens refused because a client used them from another
    /// address (a stolen or replayed token).
    pub tokens_in_use: u64,
    /// Secure sessions (`SecurityMode::Required`): Hellos without a token, not answered.
    pub refused_unauthenticated: u64,
    /// Secure sessions: sealed datagrams whose tag did not verify (forged or altered).
    pub sealed_forged: u64,
    /// Secure sessions: sealed datagrams replayed (a packet number seen before or too old).
    pub sealed_replayed: u64,
    /// Secure sessions: unsealed datagrams on a secure connection, dropped unread.
    pub unsealed_dropped: u64,
    /// Secure sessions: clients that moved to a new address (validated).
    pub migrations: u64,
    /// Connections currently in the table.
    pub connections: usize,
    /// Heap bytes of the buffers every connection shares, which no per-connection figure
    /// counts: the free KCP payload buffers kept for reuse (at most the windows' worth,
    /// `send_window_size + receive_window_size + 256` buffers of one MSS) and the output
    /// buffer. A gauge, read when the stats are taken.
    pub shared_buffer_bytes: usize,
}
