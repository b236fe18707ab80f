//! Bounded sample histories: one ring per connection and one for the whole endpoint.
//!
//! Everything here takes plain values (`ConnectionQuality`, `ConnectionStats`,
//! `EndpointStats`) copied out of a `Server` or `Client`; nothing keeps a borrow of them. The
//! memory is bounded by [`HistoryConfig`]: at most `capacity` samples per ring, at most
//! `max_connections` live connections tracked and at most `max_closed` closed ones kept.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use kcpnet::{Client, ConnectionId, ConnectionQuality, ConnectionStats, EndpointStats, Server};

/// The key of a connection's history: a [`ConnectionId`] packed by
/// [`ConnectionId::to_u64`] (generation in the high half, slot index in the low half), so that
/// a history can also be fed from plain numbers (tests, a replay, another process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionKey(pub u64);

impl ConnectionKey {
    /// The slot index.
    pub fn index(self) -> u32 {
        self.0 as u32
    }

    /// The generation of the slot.
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl From<ConnectionId> for ConnectionKey {
    fn from(id: ConnectionId) -> Self {
        ConnectionKey(id.to_u64())
    }
}

impl std::fmt::Display for ConnectionKey {
    /// Like [`ConnectionId`]'s: `#index.generation`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}.{}", self.index(), self.generation())
    }
}

/// The bounds and the sampling interval of a [`NetworkHistory`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryConfig {
    /// Samples kept per ring (per connection and for the endpoint); older ones are dropped.
    pub capacity: usize,
    /// Live connections tracked at once; connections beyond it are counted in
    /// [`NetworkHistory::untracked`] but get no history.
    pub max_connections: usize,
    /// Closed connections whose history is kept for viewing; the oldest closed ones are
    /// dropped first.
    pub max_closed: usize,
    /// Minimum time between two samples taken by [`NetworkHistory::sample_server`] /
    /// [`NetworkHistory::sample_client`]; calls in between are ignored. Zero samples on every
    /// call.
    pub interval: Duration,
}

impl Default for HistoryConfig {
    /// Ten minutes at 4 samples a second, 64 live and 16 closed connections.
    fn default() -> Self {
        HistoryConfig {
            capacity: 2400,
            max_connections: 64,
            max_closed: 16,
            interval: Duration::from_millis(250),
        }
    }
}

/// A fixed-capacity ring of timed samples, oldest first.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    samples: VecDeque<T>,
    capacity: usize,
}

/// A sample with a time stamp, in seconds since the history's own origin.
pub trait Timed {
    /// The time of the sample, in seconds.
    fn time(&self) -> f64;
}

impl<T: Timed> Ring<T> {
    /// An empty ring keeping at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Ring {
            samples: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    /// Appends a sample, dropping the oldest one when the ring is full.
    pub fn push(&mut self, sample: T) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the ring holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The most samples this ring holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<&T> {
        self.samples.back()
    }

    /// All samples, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator + '_ {
        self.samples.iter()
    }

    /// The samples of the last `span` seconds before `now` (`now - span <= t <= now`),
    /// oldest first.
    pub fn window(&self, now: f64, span: f64) -> impl Iterator<Item = &T> + '_ {
        let from = now - span;
        // Samples are pushed in time order: find the first one inside by binary search.
        let start = self.samples.partition_point(|s| s.time() < from);
        self.samples
            .range(start..)
            .take_while(move |s| s.time() <= now)
    }
}

/// One sample of one connection, from its [`ConnectionQuality`] (and, when it was taken from
/// [`ConnectionStats`], its retransmission rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionSample {
    /// When, in seconds since the history's origin.
    pub t: f64,
    /// KCP's smoothed RTT from its ACKs, in ms (0 before the first sample).
    pub kcp_rtt_ms: f32,
    /// The latest Ping/Pong round trip, in ms (`None` until the first Pong).
    pub ping_rtt_ms: Option<f32>,
    /// The outgoing loss estimate, 0..=1 ([`ConnectionQuality::loss_estimate`]: this side's
    /// datagrams the peer did not get, or KCP's retransmission ratio with a kcp2k peer).
    pub loss_out: f32,
    /// The peer-reported loss of this side's unreliable messages, 0..=1 (kcpnet peers only).
    pub unreliable_loss_out: Option<f32>,
    /// The loss of the peer's unreliable messages seen here, 0..=1 (kcpnet peers only).
    pub unreliable_loss_in: Option<f32>,
    /// Bytes received per second.
    pub bytes_in_per_sec: f32,
    /// Bytes sent per second.
    pub bytes_out_per_sec: f32,
    /// Messages delivered per second.
    pub messages_in_per_sec: f32,
    /// Messages sent per second.
    pub messages_out_per_sec: f32,
    /// Reliable bytes queued or in flight, not yet acknowledged.
    pub pending_reliable_bytes: f32,
    /// The connection's send-rate cap in bytes per second
    /// ([`ConnectionQuality::send_rate_limit`]); `None` without one.
    pub send_rate_limit: Option<f32>,
    /// How long what waits behind the cap takes to leave, in ms
    /// ([`ConnectionQuality::send_queue_ms`]); `None` without a cap.
    pub send_queue_ms: Option<f32>,
    /// KCP retransmissions per second (timeouts and fast resends) since the previous sample;
    /// `None` for the first sample and for samples taken from a quality alone.
    pub retransmits_per_sec: Option<f32>,
    /// Datagrams rebuilt from FEC parity per second (`ConnectionStats::fec_recovered`) since
    /// the previous sample: losses repaired without a retransmission. `None` as for
    /// `retransmits_per_sec`.
    pub fec_recovered_per_sec: Option<f32>,
}

impl Timed for ConnectionSample {
    fn time(&self) -> f64 {
        self.t
    }
}

impl ConnectionSample {
    /// A sample from a connection's quality at `t` seconds (no retransmission rate).
    pub fn from_quality(t: f64, q: &ConnectionQuality) -> Self {
        ConnectionSample {
            t,
            kcp_rtt_ms: q.kcp_rtt_ms as f32,
            ping_rtt_ms: q.ping_rtt_ms.map(|v| v as f32),
            loss_out: q.loss_estimate().value,
            unreliable_loss_out: q.peer_unreliable_loss,
            unreliable_loss_in: q.unreliable_loss_in,
            bytes_in_per_sec: q.bytes_in_per_sec,
            bytes_out_per_sec: q.bytes_out_per_sec,
            messages_in_per_sec: q.messages_in_per_sec,
            messages_out_per_sec: q.messages_out_per_sec,
            pending_reliable_bytes: q.pending_reliable_bytes as f32,
            send_rate_limit: q.send_rate_limit.map(|v| v as f32),
            send_queue_ms: q.send_queue_ms.map(|v| v as f32),
            retransmits_per_sec: None,
            fec_recovered_per_sec: None,
        }
    }
}

/// One sample of the whole endpoint, from the differences of two [`EndpointStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointSample {
    /// When, in seconds since the history's origin.
    pub t: f64,
    /// Connections in the table.
    pub connections: usize,
    /// Bytes read from the socket per second.
    pub bytes_in_per_sec: f32,
    /// Bytes written to the socket per second.
    pub bytes_out_per_sec: f32,
    /// Datagrams read per second.
    pub datagrams_in_per_sec: f32,
    /// Datagrams written per second.
    pub datagrams_out_per_sec: f32,
    /// Datagrams dropped per second (unknown senders, invalid, over the limit, refused).
    pub dropped_per_sec: f32,
    /// Secure sessions: what the endpoint refused per second — connect tokens (invalid,
    /// expired, for another server, in use), Hellos without a token in `Required` mode, and
    /// sealed datagrams that were forged, replayed or unsealed. 0 without `Config::security`.
    pub security_refused_per_sec: f32,
    /// Secure sessions: clients that moved to a new address so far (a total).
    pub migrations: u64,
}

impl Timed for EndpointSample {
    fn time(&self) -> f64 {
        self.t
    }
}

/// The history of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionHistory {
    /// Its samples, oldest first.
    pub samples: Ring<ConnectionSample>,
    /// When it was last sampled, in seconds.
    pub last_seen: f64,
    /// When it was first missing from a full sample (it closed), in seconds.
    pub closed_at: Option<f64>,
    /// Its retransmission counter at the previous sample: (time, retransmits + fast).
    last_retransmits: Option<(f64, u64)>,
    /// Its FEC rebuilt-datagram counter at the previous sample: (time, total).
    last_fec: Option<(f64, u64)>,
}

impl ConnectionHistory {
    fn new(capacity: usize, t: f64) -> Self {
        ConnectionHistory {
            samples: Ring::new(capacity),
            last_seen: t,
            closed_at: None,
            last_retransmits: None,
            last_fec: None,
        }
    }

    /// Whether it was missing from a later full sample.
    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some()
    }
}

/// What the connection table is sorted by (RTT and loss descending: the worst first; live
/// connections always before closed ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Connection id, ascending.
    #[default]
    Id,
    /// KCP RTT, highest first.
    Rtt,
    /// Outgoing loss estimate, highest first.
    Loss,
}

/// One row of the connection table: a connection's newest sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionRow {
    /// The connection.
    pub id: ConnectionKey,
    /// Whether it has closed.
    pub closed: bool,
    /// Its newest sample.
    pub latest: ConnectionSample,
}

/// Bounded histories of an endpoint and of its connections, fed with plain values.
#[derive(Debug, Clone)]
pub struct NetworkHistory {
    config: HistoryConfig,
    endpoint: Ring<EndpointSample>,
    last_endpoint: Option<(f64, EndpointStats)>,
    connections: BTreeMap<ConnectionKey, ConnectionHistory>,
    /// Closed connections, oldest closure first.
    closed_order: VecDeque<ConnectionKey>,
    untracked: usize,
    last_sample: Option<f64>,
    /// Reused between full samples (no allocation per frame).
    seen: Vec<ConnectionKey>,
}

impl Default for NetworkHistory {
    fn default() -> Self {
        NetworkHistory::new(HistoryConfig::default())
    }
}

impl NetworkHistory {
    /// An empty history with these bounds.
    pub fn new(config: HistoryConfig) -> Self {
        NetworkHistory {
            config,
            endpoint: Ring::new(config.capacity),
            last_endpoint: None,
            connections: BTreeMap::new(),
            closed_order: VecDeque::new(),
            untracked: 0,
            last_sample: None,
            seen: Vec::new(),
        }
    }

    /// The bounds.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The endpoint's samples.
    pub fn endpoint(&self) -> &Ring<EndpointSample> {
        &self.endpoint
    }

    /// The history of one connection, live or closed.
    pub fn connection(&self, id: ConnectionKey) -> Option<&ConnectionHistory> {
        self.connections.get(&id)
    }

    /// Every connection with a history (live and kept closed ones), by id.
    pub fn connections(&self) -> impl Iterator<Item = (ConnectionKey, &ConnectionHistory)> + '_ {
        self.connections.iter().map(|(id, h)| (*id, h))
    }

    /// Live connections seen in the latest full sample but not tracked, because
    /// `max_connections` were tracked already.
    pub fn untracked(&self) -> usize {
        self.untracked
    }

    /// The time of the newest sample, in seconds.
    pub fn now(&self) -> Option<f64> {
        self.last_sample
    }

    /// The most samples this history can hold in all its rings together: the bound of its
    /// memory is this times the size of one sample, plus the maps' overhead.
    pub fn sample_bound(&self) -> usize {
        self.config.capacity * (1 + self.config.max_connections + self.config.max_closed)
    }

    /// The samples it holds now, in all its rings.
    pub fn sample_count(&self) -> usize {
        self.endpoint.len()
            + self
                .connections
                .values()
                .map(|h| h.samples.len())
                .sum::<usize>()
    }

    /// Records the endpoint's counters at `t` seconds: a rate sample once two were recorded.
    pub fn record_endpoint(&mut self, t: f64, stats: &EndpointStats) {
        if let Some((t0, prev)) = self.last_endpoint {
            let dt = t - t0;
            if dt > 0.0 {
                let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / dt) as f32;
                let refused = |s: &EndpointStats| {
                    s.tokens_invalid
                        + s.tokens_expired
                        + s.tokens_wrong_server
                        + s.tokens_in_use
                        + s.refused_unauthenticated
                        + s.sealed_forged
                        + s.sealed_replayed
                        + s.unsealed_dropped
                };
                let dropped = |s: &EndpointStats| {
                    s.dropped_unknown
                        + s.dropped_after_close
                        + s.dropped_limit
                        + s.dropped_invalid
                        + s.refused_draining
                };
                self.endpoint.push(EndpointSample {
                    t,
                    connections: stats.connections,
                    bytes_in_per_sec: rate(stats.bytes_received, prev.bytes_received),
                    bytes_out_per_sec: rate(stats.bytes_sent, prev.bytes_sent),
                    datagrams_in_per_sec: rate(stats.datagrams_received, prev.datagrams_received),
                    datagrams_out_per_sec: rate(stats.datagrams_sent, prev.datagrams_sent),
                    dropped_per_sec: rate(dropped(stats), dropped(&prev)),
                    security_refused_per_sec: rate(refused(stats), refused(&prev)),
                    migrations: stats.migrations,
                });
            } else if dt < 0.0 {
                return; // time went backwards: ignore
            }
        }
        self.last_endpoint = Some((t, *stats));
        self.bump(t);
    }

    /// Records one connection's quality at `t` seconds (no retransmission rate). Returns
    /// `false` when the connection is not tracked (the live bound is reached).
    pub fn record_quality(
        &mut self,
        t: f64,
        id: ConnectionKey,
        quality: &ConnectionQuality,
    ) -> bool {
        let sample = ConnectionSample::from_quality(t, quality);
        self.record_sample(id, sample, None)
    }

    /// Records one connection's statistics at `t` seconds: its quality and its
    /// retransmission rate since the previous sample. Returns `false` when the connection is
    /// not tracked (the live bound is reached).
    pub fn record_stats(&mut self, t: f64, id: ConnectionKey, stats: &ConnectionStats) -> bool {
        let sample = ConnectionSample::from_quality(t, &stats.quality);
        self.record_sample(
            id,
            sample,
            Some((
                stats.retransmits + stats.fast_retransmits,
                stats.fec_recovered,
            )),
        )
    }

    fn record_sample(
        &mut self,
        id: ConnectionKey,
        mut sample: ConnectionSample,
        counters: Option<(u64, u64)>,
    ) -> bool {
        let t = sample.t;
        if !self.connections.contains_key(&id) {
            if self.live() >= self.config.max_connections {
                return false;
            }
            self.connections
                .insert(id, ConnectionHistory::new(self.config.capacity, t));
        }
        let Some(h) = self.connections.get_mut(&id) else {
            return false;
        };
        if h.samples.latest().is_some_and(|s| s.t > t) {
            return true; // time went backwards: ignore
        }
        if h.closed_at.take().is_some() {
            // Seen again (the caller's full sample had missed it): live once more.
            self.closed_order.retain(|c| *c != id);
        }
        if let Some((total, fec)) = counters {
            let per_sec = |last: Option<(f64, u64)>, now: u64| {
                last.and_then(|(t0, prev)| {
                    let dt = t - t0;
                    (dt > 0.0).then(|| (now.saturating_sub(prev) as f64 / dt) as f32)
                })
            };
            sample.retransmits_per_sec = per_sec(h.last_retransmits, total);
            sample.fec_recovered_per_sec = per_sec(h.last_fec, fec);
            h.last_retransmits = Some((t, total));
            h.last_fec = Some((t, fec));
        }
        h.last_seen = t;
        h.samples.push(sample);
        self.bump(t);
        true
    }

    fn bump(&mut self, t: f64) {
        if self.last_sample.is_none_or(|l| t > l) {
            self.last_sample = Some(t);
        }
    }

    fn live(&self) -> usize {
        self.connections.len() - self.closed_order.len()
    }

    /// Ends a full sample: every live connection not in `present` is marked closed at `t`,
    /// and the oldest closed histories beyond `max_closed` are dropped. `untracked` is the
    /// number of present connections the caller could not record. `present` may be in any
    /// order (sorted is cheaper).
    pub fn retain_present(&mut self, t: f64, present: &[ConnectionKey], untracked: usize) {
        self.untracked = untracked;
        let sorted;
        let present = if present.is_sorted() {
            present
        } else {
            sorted = {
                let mut v = present.to_vec();
                v.sort_unstable();
                v
            };
            &sorted[..]
        };
        for (id, h) in self.connections.iter_mut() {
            if h.closed_at.is_none() && present.binary_search(id).is_err() {
                h.closed_at = Some(t);
                self.closed_order.push_back(*id);
            }
        }
        while self.closed_order.len() > self.config.max_closed {
            if let Some(old) = self.closed_order.pop_front() {
                self.connections.remove(&old);
            }
        }
    }

    /// Whether `interval` has passed since the last full sample (always true for the first).
    pub fn due(&self, t: f64) -> bool {
        self.last_sample
            .is_none_or(|l| t - l >= self.config.interval.as_secs_f64() || t < l)
    }

    /// Samples a server at `t` seconds, if the interval has passed: its endpoint counters and
    /// every connection's statistics; connections that are gone are marked closed. The
    /// borrow of `server` ends with the call. Returns whether a sample was taken.
    pub fn sample_server(&mut self, t: f64, server: &Server) -> bool {
        if !self.due(t) {
            return false;
        }
        self.record_endpoint(t, &server.stats());
        let mut seen = std::mem::take(&mut self.seen);
        seen.clear();
        let mut untracked = 0;
        for id in server.connections() {
            if let Some(stats) = server.connection_stats(id) {
                if self.record_stats(t, id.into(), &stats) {
                    seen.push(id.into());
                } else {
                    untracked += 1;
                }
            }
        }
        seen.sort_unstable();
        self.retain_present(t, &seen, untracked);
        self.seen = seen;
        true
    }

    /// Samples a client at `t` seconds, if the interval has passed: its endpoint counters and
    /// its one connection's statistics (once connected). Returns whether a sample was taken.
    pub fn sample_client(&mut self, t: f64, client: &Client) -> bool {
        if !self.due(t) {
            return false;
        }
        self.record_endpoint(t, &client.stats());
        let id = ConnectionKey::from(client.id());
        let present = client.is_connected();
        if present {
            self.record_stats(t, id, &client.connection_stats());
        }
        let ids: &[ConnectionKey] = if present { &[id] } else { &[] };
        self.retain_present(t, ids, 0);
        true
    }

    /// The connection table: each connection's newest sample, sorted, live connections first.
    pub fn rows(&self, sort: SortBy) -> Vec<ConnectionRow> {
        let mut rows: Vec<ConnectionRow> = self
            .connections
            .iter()
            .filter_map(|(id, h)| {
                h.samples.latest().map(|s| ConnectionRow {
                    id: *id,
                    closed: h.is_closed(),
                    latest: *s,
                })
            })
            .collect();
        match sort {
            SortBy::Id => {} // the map is ordered by id
            SortBy::Rtt => rows.sort_by(|a, b| b.latest.kcp_rtt_ms.total_cmp(&a.latest.kcp_rtt_ms)),
            SortBy::Loss => rows.sort_by(|a, b| b.latest.loss_out.total_cmp(&a.latest.loss_out)),
        }
        // Live connections first (a stable sort keeps the order within each group).
        rows.sort_by_key(|r| r.closed);
        rows
    }
}
