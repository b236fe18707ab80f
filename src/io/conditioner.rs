//! The link conditioner: simulated loss, latency, jitter, reordering,
//! duplication and bandwidth limits around any [`Transport`].

use std::{
    cmp::{Ordering, Reverse},
    collections::{BinaryHeap, HashMap},
    io,
    net::SocketAddr,
    time::Duration,
};

use super::Transport;
use crate::error::Error;

/// The longest `latency`, `jitter` or `reorder_delay` [`Conditions::validate`]
/// accepts: one hour.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Datagrams whose bandwidth (serialisation) delay would exceed this are dropped.
const MAX_BANDWIDTH_BACKLOG: Duration = Duration::from_secs(1);
/// The most datagrams held in one direction's delay queue.
const MAX_QUEUED_DATAGRAMS: usize = 64 * 1024;
/// The most payload bytes held in one direction's delay queue.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// How many spare buffers each direction keeps for reuse.
const MAX_FREE_BUFFERS: usize = 1024;
/// Spare buffers larger than this are freed rather than kept.
const MAX_KEPT_BUFFER: usize = 65_536;
/// The size of the scratch buffer incoming datagrams are read into when the
/// receive direction is conditioned (larger than any UDP datagram).
const SCRATCH_SIZE: usize = 65_536;
/// The most datagrams one `recv_from` call reads from the inner transport.
const MAX_DRAIN_PER_CALL: usize = 1 << 20;

/// Bursty loss: the Gilbert–Elliott two-state Markov model.
///
/// The link is either *good* or *bad*. Before each datagram the state may
/// change (good → bad with probability `p_good_to_bad`, bad → good with
/// probability `p_bad_to_good`); the datagram is then lost with probability
/// `loss_good` or `loss_bad` depending on the state. With `loss_good = 0` and
/// `loss_bad = 1`, losses come in bursts of mean length `1 / p_bad_to_good`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability (0.0..=1.0) of moving from the good to the bad state, per datagram.
    pub p_good_to_bad: f64,
    /// Probability (0.0..=1.0) of moving from the bad to the good state, per datagram.
    pub p_bad_to_good: f64,
    /// Loss probability (0.0..=1.0) in the good state.
    pub loss_good: f64,
    /// Loss probability (0.0..=1.0) in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// A model with the given transition and loss probabilities.
    pub fn new(p_good_to_bad: f64, p_bad_to_good: f64, loss_good: f64, loss_bad: f64) -> Self {
        GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good,
            loss_bad,
        }
    }

    /// The long-run loss rate of the model (from its stationary distribution;
    /// if both transition probabilities are zero the link stays good).
    pub fn average_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total > 0.0 {
            let bad = self.p_good_to_bad / total;
            bad * self.loss_bad + (1.0 - bad) * self.loss_good
        } else {
            self.loss_good
        }
    }

    fn validate(&self) -> Result<(), Error> {
        check_probability("burst_loss.p_good_to_bad", self.p_good_to_bad)?;
        check_probability("burst_loss.p_bad_to_good", self.p_bad_to_good)?;
        check_probability("burst_loss.loss_good", self.loss_good)?;
        check_probability("burst_loss.loss_bad", self.loss_bad)
    }
}

/// Simulated network conditions for one direction (see [`LinkConditioner`]).
///
/// The default is a perfect link. A datagram's fate is decided when it enters
/// the conditioner:
///
/// 1. it is lost with probability `loss` (or per `burst_loss` when that is
///    `Some`, which replaces `loss`);
/// 2. with probability `duplicate`, a second copy is made;
/// 3. each copy is delayed by: the time the bandwidth cap needs to serialise
///    it behind the datagrams already on the link (if `bandwidth` is set; a
///    copy whose serialisation would finish more than 1 s from now is
///    dropped), plus `latency`, plus a uniform random `0..=jitter`; the
///    original is also held back by `reorder_delay` with probability `reorder`,
///    letting later datagrams overtake it.
///
/// Copies with zero total delay pass straight through; the others wait in a
/// delay queue and are released, in due-time order, once due.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// Probability (0.0..=1.0) a datagram is dropped.
    pub loss: f64,
    /// Fixed one-way delay added to every datagram.
    pub latency: Duration,
    /// Extra delay, uniform in `0..=jitter`, drawn for every datagram (and
    /// for each copy separately).
    pub jitter: Duration,
    /// Probability (0.0..=1.0) a datagram is held back by an extra
    /// `reorder_delay`, so later ones overtake it.
    pub reorder: f64,
    /// The extra delay of reordered datagrams; must be non-zero when
    /// `reorder > 0`.
    pub reorder_delay: Duration,
    /// Probability (0.0..=1.0) a second copy of a datagram is delivered (with
    /// its own jitter).
    pub duplicate: f64,
    /// Bandwidth cap in payload bytes per second (IP/UDP headers not
    /// counted): datagrams leave one after another at this rate, and any that
    /// would wait more than 1 s are dropped. `None`: unlimited.
    pub bandwidth: Option<u64>,
    /// Bursty loss; when `Some`, replaces `loss`.
    pub burst_loss: Option<GilbertElliott>,
}

fn check_probability(name: &str, p: f64) -> Result<(), Error> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{name} must be a probability between 0.0 and 1.0, got {p}"
        )))
    }
}

fn check_delay(name: &str, d: Duration) -> Result<(), Error> {
    if d <= MAX_DELAY {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{name} must be at most {MAX_DELAY:?}, got {d:?}"
        )))
    }
}

impl Conditions {
    /// Check every field: probabilities must be finite and within
    /// `0.0..=1.0`, delays at most one hour, `bandwidth` non-zero, and
    /// `reorder_delay` non-zero when `reorder > 0`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        check_probability("loss", self.loss)?;
        check_probability("reorder", self.reorder)?;
        check_probability("duplicate", self.duplicate)?;
        check_delay("latency", self.latency)?;
        check_delay("jitter", self.jitter)?;
        check_delay("reorder_delay", self.reorder_delay)?;
        if self.reorder > 0.0 && self.reorder_delay.is_zero() {
            return Err(Error::InvalidConfig(
                "reorder > 0 needs a non-zero reorder_delay".to_string(),
            ));
        }
        if self.bandwidth == Some(0) {
            return Err(Error::InvalidConfig(
                "bandwidth must be at least 1 byte per second (use loss 1.0 to drop everything)"
                    .to_string(),
            ));
        }
        if let Some(ge) = &self.burst_loss {
            ge.validate()?;
        }
        Ok(())
    }

    /// Whether these conditions leave every datagram untouched (no loss,
    /// delay, reordering, duplication, bandwidth cap or burst-loss model).
    pub fn is_perfect(&self) -> bool {
        self.loss == 0.0
            && self.latency.is_zero()
            && self.jitter.is_zero()
            && (self.reorder == 0.0 || self.reorder_delay.is_zero())
            && self.duplicate == 0.0
            && self.bandwidth.is_none()
            && self.burst_loss.is_none()
    }

    /// A perfect link except for random loss with probability `loss`.
    pub fn lossy(loss: f64) -> Self {
        Conditions {
            loss,
            ..Conditions::default()
        }
    }

    /// These conditions with random loss probability `loss`.
    pub fn with_loss(self, loss: f64) -> Self {
        Conditions { loss, ..self }
    }

    /// These conditions with a fixed one-way `latency`.
    pub fn with_latency(self, latency: Duration) -> Self {
        Conditions { latency, ..self }
    }

    /// These conditions with up to `jitter` of extra random delay.
    pub fn with_jitter(self, jitter: Duration) -> Self {
        Conditions { jitter, ..self }
    }

    /// These conditions where a datagram is held back by `delay` with
    /// probability `probability`.
    pub fn with_reorder(self, probability: f64, delay: Duration) -> Self {
        Conditions {
            reorder: probability,
            reorder_delay: delay,
            ..self
        }
    }

    /// These conditions where a datagram is duplicated with probability
    /// `probability`.
    pub fn with_duplicate(self, probability: f64) -> Self {
        Conditions {
            duplicate: probability,
            ..self
        }
    }

    /// These conditions with a bandwidth cap of `bytes_per_sec` payload bytes
    /// per second.
    pub fn with_bandwidth(self, bytes_per_sec: u64) -> Self {
        Conditions {
            bandwidth: Some(bytes_per_sec),
            ..self
        }
    }

    /// These conditions with bursty loss (replacing `loss`).
    pub fn with_burst_loss(self, model: GilbertElliott) -> Self {
        Conditions {
            burst_loss: Some(model),
            ..self
        }
    }
}

/// Which traffic a setting applies to, from the conditioned transport's
/// point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Datagrams we send.
    Send,
    /// Datagrams we receive.
    Receive,
    /// Both.
    Both,
}

impl Direction {
    fn includes_send(self) -> bool {
        matches!(self, Direction::Send | Direction::Both)
    }

    fn includes_receive(self) -> bool {
        matches!(self, Direction::Receive | Direction::Both)
    }
}

/// What a [`LinkConditioner`] did, per direction or combined (see
/// [`LinkConditioner::stats`]; [`ConditionerControl::conditioner_stats`]
/// returns the combined counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConditionerStats {
    /// Datagrams the application passed to `send_to` (entering the Send
    /// direction). Always 0 in the Receive direction's counters.
    pub sent: u64,
    /// Datagrams read from the inner transport (entering the Receive
    /// direction). Always 0 in the Send direction's counters.
    pub received: u64,
    /// Datagrams (or duplicate copies) discarded: lost, over the bandwidth
    /// backlog, or over the delay-queue limits.
    pub dropped: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Datagrams held back by `reorder_delay`.
    pub reordered: u64,
    /// Datagrams (or copies) that went through the delay queue because their
    /// delay was non-zero.
    pub delayed: u64,
}

impl ConditionerStats {
    fn add(self, other: ConditionerStats) -> ConditionerStats {
        ConditionerStats {
            sent: self.sent + other.sent,
            received: self.received + other.received,
            dropped: self.dropped + other.dropped,
            duplicated: self.duplicated + other.duplicated,
            reordered: self.reordered + other.reordered,
            delayed: self.delayed + other.delayed,
        }
    }
}

/// Control of a link conditioner through a trait object (what
/// `Transport::conditioner` returns, used by `Server::set_conditions`).
pub trait ConditionerControl {
    /// Set the conditions for every remote address without a per-peer
    /// override, in `direction`. Datagrams already delayed keep their due times.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if [`Conditions::validate`] rejects them (the
    /// current conditions are then unchanged).
    fn set_conditions(&mut self, direction: Direction, conditions: Conditions)
        -> Result<(), Error>;

    /// Set the conditions for traffic to and from `peer` in `direction`,
    /// overriding the global ones for that address.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if [`Conditions::validate`] rejects them (the
    /// current conditions are then unchanged).
    fn set_peer_conditions(
        &mut self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error>;

    /// Remove `peer`'s overrides (both directions); the global conditions
    /// apply to it again.
    fn clear_peer_conditions(&mut self, peer: SocketAddr);

    /// The counters of both directions combined.
    fn conditioner_stats(&self) -> ConditionerStats;

    /// Restart the random streams from `seed`, derived as in [`LinkConditioner::new`], so
    /// that the fates of the datagrams from now on are reproducible (over a virtual clock and
    /// the in-memory network, exactly; over real sockets, up to timing).
    fn reseed(&mut self, seed: u64);
}

/// A small, fast, seedable generator (SplitMix64): the same seed always gives
/// the same stream, independent of any crate version.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p` (draws nothing when `p <= 0`).
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64,
            None => self.next_u64(),
        }
    }
}

/// Conditions plus the state they carry between datagrams.
#[derive(Debug)]
struct Link {
    conditions: Conditions,
    /// Gilbert–Elliott state.
    bad: bool,
    /// When the bandwidth-capped link finishes sending what it already has.
    busy_until: Duration,
}

impl Link {
    fn new(conditions: Conditions) -> Link {
        Link {
            conditions,
            bad: false,
            busy_until: Duration::ZERO,
        }
    }
}

/// A datagram waiting in a delay queue; ordered by `(due, seq)`.
#[derive(Debug)]
struct Delayed {
    due: Duration,
    seq: u64,
    addr: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The delays of up to two copies of a datagram (`None`: no such copy).
type Fate = [Option<Duration>; 2];

/// One direction's conditions, state, delay queue and counters.
#[derive(Debug)]
struct Side {
    global: Link,
    peers: HashMap<SocketAddr, Link>,
    /// Global and all per-peer conditions are perfect: the fast path.
    perfect: bool,
    queue: BinaryHeap<Reverse<Delayed>>,
    queued_bytes: usize,
    next_seq: u64,
    free: Vec<Vec<u8>>,
    rng: SplitMix64,
    stats: ConditionerStats,
}

impl Side {
    fn new(seed: u64) -> Side {
        Side {
            global: Link::new(Conditions::default()),
            peers: HashMap::new(),
            perfect: true,
            queue: BinaryHeap::new(),
            queued_bytes: 0,
            next_seq: 0,
            free: Vec::new(),
            rng: SplitMix64(seed),
            stats: ConditionerStats::default(),
        }
    }

    fn update_perfect(&mut self) {
        self.perfect = self.global.conditions.is_perfect()
            && self.peers.values().all(|l| l.conditions.is_perfect());
    }

    fn next_due(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse(d)| d.due)
    }

    /// Decide what happens to a datagram of `len` bytes to/from `addr`.
    fn decide(&mut self, addr: SocketAddr, now: Duration, len: usize) -> Fate {
        let link = match self.peers.get_mut(&addr) {
            Some(link) => link,
            None => &mut self.global,
        };
        let rng = &mut self.rng;
        let stats = &mut self.stats;
        let c = &link.conditions;
        let lost = match c.burst_loss {
            Some(ge) => {
                if link.bad {
                    if rng.chance(ge.p_bad_to_good) {
                        link.bad = false;
                    }
                } else if rng.chance(ge.p_good_to_bad) {
                    link.bad = true;
                }
                rng.chance(if link.bad { ge.loss_bad } else { ge.loss_good })
            }
            None => rng.chance(c.loss),
        };
        if lost {
            stats.dropped += 1;
            return [None, None];
        }
        let copies = if rng.chance(c.duplicate) {
            stats.duplicated += 1;
            2
        } else {
            1
        };
        let (latency, jitter_ns) = (
            c.latency,
            u64::try_from(c.jitter.as_nanos()).unwrap_or(u64::MAX),
        );
        let (reorder, reorder_delay, bandwidth) = (c.reorder, c.reorder_delay, c.bandwidth);
        let mut fate: Fate = [None, None];
        for (i, slot) in fate.iter_mut().enumerate().take(copies) {
            let mut delay = Duration::ZERO;
            if let Some(bps) = bandwidth {
                let start = link.busy_until.max(now);
                let tx_ns = (len as u128 * 1_000_000_000) / u128::from(bps.max(1));
                let tx = Duration::from_nanos(u64::try_from(tx_ns).unwrap_or(u64::MAX));
                let done = start.saturating_add(tx);
                let backlog = done.saturating_sub(now);
                if backlog > MAX_BANDWIDTH_BACKLOG {
                    stats.dropped += 1;
                    continue;
                }
                link.busy_until = done;
                delay = backlog;
            }
            delay = delay.saturating_add(latency);
            if jitter_ns > 0 {
                delay = delay.saturating_add(Duration::from_nanos(rng.up_to(jitter_ns)));
            }
            if i == 0 && !reorder_delay.is_zero() && rng.chance(reorder) {
                stats.reordered += 1;
                delay = delay.saturating_add(reorder_delay);
            }
            *slot = Some(delay);
        }
        fate
    }

    /// Queue a copy of `data` for release at `due`; drops it (and counts the
    /// drop) if the queue is at its limits.
    fn enqueue(&mut self, due: Duration, addr: SocketAddr, data: &[u8]) {
        if self.queue.len() >= MAX_QUEUED_DATAGRAMS
            || self.queued_bytes.saturating_add(data.len()) > MAX_QUEUED_BYTES
        {
            self.stats.dropped += 1;
            return;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.extend_from_slice(data);
        self.queued_bytes += data.len();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.stats.delayed += 1;
        self.queue.push(Reverse(Delayed {
            due,
            seq,
            addr,
            data: buf,
        }));
    }

    /// Take the earliest datagram if it is due by `now`.
    fn pop_due(&mut self, now: Duration) -> Option<Delayed> {
        if self.next_due()? > now {
            return None;
        }
        let Reverse(d) = self.queue.pop()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(d.data.len());
        Some(d)
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < MAX_FREE_BUFFERS && buf.capacity() <= MAX_KEPT_BUFFER {
            buf.clear();
            self.free.push(buf);
        }
    }

    fn set_global(&mut self, conditions: Conditions) {
        self.global = Link::new(conditions);
        self.update_perfect();
    }

    fn set_peer(&mut self, peer: SocketAddr, conditions: Conditions) {
        self.peers.insert(peer, Link::new(conditions));
        self.update_perfect();
    }

    fn clear_peer(&mut self, peer: SocketAddr) {
        if self.peers.remove(&peer).is_some() {
            self.update_perfect();
        }
    }
}

/// A [`Transport`] wrapper that simulates bad networks, like
/// GameNetworkingSockets' `FakePacketLoss`/`Lag`/`Reorder`/`Dup` settings.
///
/// Each direction has global [`Conditions`] (perfect by default) and optional
/// per-peer overrides keyed by the remote address:
///
/// * **Send** conditions apply to datagrams passed to `send_to`. Delayed ones
///   are held in a queue and handed to the inner transport by
///   [`poll`](Transport::poll) once due (and opportunistically at the start of
///   `send_to` and `recv_from`).
/// * **Receive** conditions apply to datagrams read from the inner transport.
///   `recv_from` reads the inner transport into a delay queue and returns the
///   earliest datagram that is due by `now`, in (due time, arrival) order; a
///   datagram whose delay is zero is returned at once.
///
/// Datagrams whose fate is "no delay" pass straight through without queueing
/// or copying, and when a direction's conditions are perfect the only
/// overhead is a branch.
///
/// Everything is driven by the `now` arguments (no wall-clock reads) and a
/// seeded generator, so the same seed and the same sequence of calls give the
/// same fates: with a virtual clock ([`ManualClock`](super::ManualClock)) and
/// a [`MemoryNetwork`](super::MemoryNetwork) a simulation is fully
/// deterministic. Memory is bounded: each direction's delay queue holds at
/// most 65 536 datagrams and 64 MiB; beyond that datagrams are dropped and
/// counted. Buffers are recycled, so the steady state does not allocate.
///
/// A dropped datagram still makes `send_to` return `Ok(true)`: from the
/// sender's point of view it went out and the network lost it.
#[derive(Debug)]
pub struct LinkConditioner<T: Transport> {
    inner: T,
    send: Side,
    recv: Side,
    /// Where conditioned incoming datagrams are read to (allocated on first use).
    scratch: Vec<u8>,
}

impl<T: Transport> LinkConditioner<T> {
    /// Wrap `inner` with perfect conditions; `seed` determines every random
    /// decision.
    pub fn new(inner: T, seed: u64) -> Self {
        let mut seeder = SplitMix64(seed);
        LinkConditioner {
            inner,
            send: Side::new(seeder.next_u64()),
            recv: Side::new(seeder.next_u64()),
            scratch: Vec::new(),
        }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwrap the transport; datagrams still in the delay queues are discarded.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The counters of one direction, or of both combined for
    /// [`Direction::Both`].
    pub fn stats(&self, direction: Direction) -> ConditionerStats {
        match direction {
            Direction::Send => self.send.stats,
            Direction::Receive => self.recv.stats,
            Direction::Both => self.send.stats.add(self.recv.stats),
        }
    }

    /// How many datagrams wait in the delay queue of one direction, or of both
    /// for [`Direction::Both`].
    pub fn queued(&self, direction: Direction) -> usize {
        match direction {
            Direction::Send => self.send.queue.len(),
            Direction::Receive => self.recv.queue.len(),
            Direction::Both => self.send.queue.len() + self.recv.queue.len(),
        }
    }

    /// Hand every delayed outgoing datagram due by `now` to the inner
    /// transport. Errors from the inner transport drop that datagram; the
    /// first is returned after the others have been sent.
    fn flush_send(&mut self, now: Duration) -> io::Result<()> {
        let mut first_err = None;
        while let Some(d) = self.send.pop_due(now) {
            if let Err(e) = self.inner.send_to(&d.data, d.addr, now) {
                log::debug!(
                    "link conditioner: delayed datagram to {} failed: {e}",
                    d.addr
                );
                first_err.get_or_insert(e);
            }
            self.send.recycle(d.data);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Flush due outgoing datagrams; errors belong to earlier sends and are
    /// only logged (by `flush_send`).
    fn flush_send_quietly(&mut self, now: Duration) {
        if !self.send.queue.is_empty() {
            let _ = self.flush_send(now);
        }
    }
}

impl<T: Transport> Transport for LinkConditioner<T> {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.flush_send_quietly(now);
        for _ in 0..MAX_DRAIN_PER_CALL {
            if let Some(d) = self.recv.pop_due(now) {
                let len = d.data.len().min(buf.len());
                buf[..len].copy_from_slice(&d.data[..len]);
                let from = d.addr;
                self.recv.recycle(d.data);
                return Ok(Some((len, from)));
            }
            if self.recv.perfect {
                let got = self.inner.recv_from(buf, now)?;
                if got.is_some() {
                    self.recv.stats.received += 1;
                }
                return Ok(got);
            }
            if self.scratch.len() < SCRATCH_SIZE {
                self.scratch.resize(SCRATCH_SIZE, 0);
            }
            let Some((n, from)) = self.inner.recv_from(&mut self.scratch, now)? else {
                return Ok(None);
            };
            let n = n.min(self.scratch.len());
            self.recv.stats.received += 1;
            let fate = self.recv.decide(from, now, n);
            let mut direct = None;
            for delay in fate.into_iter().flatten() {
                if delay.is_zero() && direct.is_none() {
                    let len = n.min(buf.len());
                    buf[..len].copy_from_slice(&self.scratch[..len]);
                    direct = Some((len, from));
                } else {
                    self.recv
                        .enqueue(now.saturating_add(delay), from, &self.scratch[..n]);
                }
            }
            if direct.is_some() {
                return Ok(direct);
            }
        }
        Ok(None)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> io::Result<bool> {
        self.flush_send_quietly(now);
        self.send.stats.sent += 1;
        if self.send.perfect {
            return self.inner.send_to(data, to, now);
        }
        let fate = self.send.decide(to, now, data.len());
        let mut result = Ok(true);
        for (i, delay) in fate.into_iter().enumerate() {
            let Some(delay) = delay else { continue };
            if delay.is_zero() {
                match self.inner.send_to(data, to, now) {
                    Ok(false) if i == 0 => {
                        if result.is_ok() {
                            result = Ok(false);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
            } else {
                self.send.enqueue(now.saturating_add(delay), to, data);
            }
        }
        result
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll(&mut self, now: Duration) -> io::Result<()> {
        let own = self.flush_send(now);
        let inner = self.inner.poll(now);
        own.and(inner)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        [
            self.send.next_due(),
            self.recv.next_due(),
            self.inner.next_wakeup(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn conditioner(&mut self) -> Option<&mut dyn ConditionerControl> {
        Some(self)
    }

    fn take_connection_refused(&mut self) -> bool {
        self.inner.take_connection_refused()
    }

    fn take_send_drops(&mut self) -> u64 {
        self.inner.take_send_drops()
    }

    /// Waits on the wrapped transport. Delayed datagrams held here are not waited for:
    /// the caller caps `timeout` by [`Transport::next_wakeup`].
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.wait(timeout)
    }
}

impl<T: Transport> ConditionerControl for LinkConditioner<T> {
    fn reseed(&mut self, seed: u64) {
        let mut seeder = SplitMix64(seed);
        self.send.rng = SplitMix64(seeder.next_u64());
        self.recv.rng = SplitMix64(seeder.next_u64());
    }

    fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        conditions.validate()?;
        if direction.includes_send() {
            self.send.set_global(conditions.clone());
        }
        if direction.includes_receive() {
            self.recv.set_global(conditions);
        }
        Ok(())
    }

    fn set_peer_conditions(
        &mut self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        conditions.validate()?;
        if direction.includes_send() {
            self.send.set_peer(peer, conditions.clone());
        }
        if direction.includes_receive() {
            self.recv.set_peer(peer, conditions);
        }
        Ok(())
    }

    fn clear_peer_conditions(&mut self, peer: SocketAddr) {
        self.send.clear_peer(peer);
        self.recv.clear_peer(peer);
    }

    fn conditioner_stats(&self) -> ConditionerStats {
        self.stats(Direction::Both)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ManualClock, MemoryNetwork, MemorySocket};

    const MS: Duration = Duration::from_millis(1);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn a_addr() -> SocketAddr {
        addr("10.0.0.1:1000")
    }

    fn b_addr() -> SocketAddr {
        addr("10.0.0.2:2000")
    }

    /// A conditioned socket `a` and a plain socket `b` on a fresh network.
    fn pair(seed: u64) -> (MemoryNetwork, LinkConditioner<MemorySocket>, MemorySocket) {
        let net = MemoryNetwork::with_queue_capacity(usize::MAX);
        let a = net.bind(a_addr()).unwrap();
        let b = net.bind(b_addr()).unwrap();
        (net, LinkConditioner::new(a, seed), b)
    }

    fn drain<T: Transport>(t: &mut T, now: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some((n, _)) = t.recv_from(&mut buf, now).unwrap() {
            out.push(buf[..n].to_vec());
        }
        out
    }

    fn numbered(i: u32) -> [u8; 4] {
        i.to_be_bytes()
    }

    fn number(d: &[u8]) -> u32 {
        u32::from_be_bytes(d.try_into().unwrap())
    }

    #[test]
    fn perfect_conditions_pass_through() {
        let (_net, mut a, mut b) = pair(1);
        let now = Duration::from_secs(5);
        assert!(a.send_to(b"out", b_addr(), now).unwrap());
        assert_eq!(drain(&mut b, now), vec![b"out".to_vec()]);
        b.send_to(b"in", a_addr(), now).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = a.recv_from(&mut buf, now).unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&b"in"[..], b_addr()));
        assert_eq!(a.next_wakeup(), None);
        assert_eq!(a.queued(Direction::Both), 0);
        assert!(a.scratch.is_empty(), "perfect path needs no scratch buffer");
        let s = a.conditioner_stats();
        assert_eq!((s.sent, s.received, s.dropped, s.delayed), (1, 1, 0, 0));
    }

    #[test]
    fn send_latency_holds_until_due() {
        let (_net, mut a, mut b) = pair(2);
        let clock = ManualClock::starting_at(Duration::from_secs(1));
        a.set_conditions(Direction::Send, Conditions::default().with_latency(50 * MS))
            .unwrap();
        let t0 = clock.now();
        assert!(a.send_to(b"late", b_addr(), t0).unwrap());
        assert_eq!(a.next_wakeup(), Some(t0 + 50 * MS));
        clock.advance(49 * MS);
        a.poll(clock.now()).unwrap();
        assert!(drain(&mut b, clock.now()).is_empty());
        clock.advance(MS);
        a.poll(clock.now()).unwrap();
        assert_eq!(drain(&mut b, clock.now()), vec![b"late".to_vec()]);
        assert_eq!(a.next_wakeup(), None);
        assert_eq!(a.stats(Direction::Send).delayed, 1);
    }

    #[test]
    fn receive_latency_holds_until_due() {
        let (_net, mut a, mut b) = pair(3);
        let clock = ManualClock::starting_at(Duration::from_secs(1));
        a.set_conditions(
            Direction::Receive,
            Conditions::default().with_latency(50 * MS),
        )
        .unwrap();
        let t0 = clock.now();
        b.send_to(b"x", a_addr(), t0).unwrap();
        b.send_to(b"y", a_addr(), t0).unwrap();
        let mut buf = [0u8; 8];
        assert!(a.recv_from(&mut buf, t0).unwrap().is_none());
        assert_eq!(a.next_wakeup(), Some(t0 + 50 * MS));
        assert!(a.recv_from(&mut buf, t0 + 49 * MS).unwrap().is_none());
        assert_eq!(
            drain(&mut a, t0 + 50 * MS),
            vec![b"x".to_vec(), b"y".to_vec()]
        );
    }

    #[test]
    fn opportunistic_flush_on_send_and_recv() {
        let (_net, mut a, mut b) = pair(4);
        a.set_conditions(Direction::Send, Conditions::default().with_latency(10 * MS))
            .unwrap();
        a.send_to(b"1", b_addr(), Duration::ZERO).unwrap();
        let mut buf = [0u8; 8];
        assert!(a.recv_from(&mut buf, 10 * MS).unwrap().is_none());
        assert_eq!(drain(&mut b, 10 * MS), vec![b"1".to_vec()]);
        a.send_to(b"2", b_addr(), 10 * MS).unwrap();
        a.send_to(b"3", b_addr(), 20 * MS).unwrap();
        assert_eq!(drain(&mut b, 20 * MS), vec![b"2".to_vec()]);
    }

    #[test]
    fn loss_rate_is_close_to_setting() {
        let (_net, mut a, mut b) = pair(5);
        a.set_conditions(Direction::Send, Conditions::lossy(0.2))
            .unwrap();
        let n = 20_000;
        let mut received = 0usize;
        for i in 0..n {
            assert!(a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap());
            received += drain(&mut b, Duration::ZERO).len();
        }
        let loss = 1.0 - received as f64 / f64::from(n);
        assert!((0.18..=0.22).contains(&loss), "observed loss {loss}");
        let s = a.stats(Direction::Send);
        assert_eq!(s.sent, u64::from(n));
        assert_eq!(s.dropped as usize, n as usize - received);
        assert_eq!(
            s.delayed, 0,
            "lost or zero-delay datagrams are never queued"
        );
    }

    #[test]
    fn receive_loss_rate_is_close_to_setting() {
        let (_net, mut a, mut b) = pair(6);
        a.set_conditions(Direction::Receive, Conditions::lossy(0.2))
            .unwrap();
        let n = 20_000u32;
        let mut received = 0usize;
        for i in 0..n {
            b.send_to(&numbered(i), a_addr(), Duration::ZERO).unwrap();
            if i % 100 == 99 {
                received += drain(&mut a, Duration::ZERO).len();
            }
        }
        let loss = 1.0 - received as f64 / f64::from(n);
        assert!((0.18..=0.22).contains(&loss), "observed loss {loss}");
        assert_eq!(a.stats(Direction::Receive).received, u64::from(n));
    }

    #[test]
    fn duplicate_delivers_twice() {
        let (_net, mut a, mut b) = pair(7);
        a.set_conditions(Direction::Both, Conditions::default().with_duplicate(1.0))
            .unwrap();
        for i in 0..100 {
            a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap();
        }
        let got: Vec<u32> = drain(&mut b, Duration::ZERO)
            .iter()
            .map(|d| number(d))
            .collect();
        let expected: Vec<u32> = (0..100).flat_map(|i| [i, i]).collect();
        assert_eq!(got, expected);
        for i in 0..50 {
            b.send_to(&numbered(i), a_addr(), Duration::ZERO).unwrap();
        }
        let got: Vec<u32> = drain(&mut a, Duration::ZERO)
            .iter()
            .map(|d| number(d))
            .collect();
        let expected: Vec<u32> = (0..50).flat_map(|i| [i, i]).collect();
        assert_eq!(got, expected);
        assert_eq!(a.conditioner_stats().duplicated, 150);
    }

    #[test]
    fn duplicate_with_jitter_delivers_each_twice() {
        let (_net, mut a, mut b) = pair(8);
        let c = Conditions::default()
            .with_duplicate(1.0)
            .with_latency(5 * MS)
            .with_jitter(20 * MS);
        a.set_conditions(Direction::Send, c).unwrap();
        for i in 0..200 {
            a.send_to(&numbered(i), b_addr(), i * MS).unwrap();
        }
        a.poll(Duration::from_secs(1)).unwrap();
        let mut got: Vec<u32> = drain(&mut b, Duration::ZERO)
            .iter()
            .map(|d| number(d))
            .collect();
        got.sort_unstable();
        let expected: Vec<u32> = (0..200).flat_map(|i| [i, i]).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn reorder_produces_out_of_order_delivery() {
        let (_net, mut a, mut b) = pair(9);
        let clock = ManualClock::new();
        a.set_conditions(
            Direction::Send,
            Conditions::default().with_reorder(0.3, 10 * MS),
        )
        .unwrap();
        let mut got = Vec::new();
        for i in 0..200 {
            a.send_to(&numbered(i), b_addr(), clock.now()).unwrap();
            clock.advance(MS);
            a.poll(clock.now()).unwrap();
            got.extend(drain(&mut b, clock.now()).iter().map(|d| number(d)));
        }
        clock.advance(Duration::from_secs(1));
        a.poll(clock.now()).unwrap();
        got.extend(drain(&mut b, clock.now()).iter().map(|d| number(d)));
        assert_eq!(got.len(), 200);
        assert!(got.windows(2).any(|w| w[0] > w[1]), "expected reordering");
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>());
        let reordered = a.stats(Direction::Send).reordered;
        assert!((30..=90).contains(&reordered), "reordered {reordered}");
    }

    #[test]
    fn receive_reorder_returns_in_due_order() {
        let (_net, mut a, mut b) = pair(10);
        a.set_conditions(
            Direction::Receive,
            Conditions::default().with_reorder(0.5, 5 * MS),
        )
        .unwrap();
        let mut got = Vec::new();
        for i in 0..100u32 {
            let now = Duration::from_millis(u64::from(i));
            b.send_to(&numbered(i), a_addr(), now).unwrap();
            got.extend(drain(&mut a, now).iter().map(|d| number(d)));
        }
        got.extend(
            drain(&mut a, Duration::from_secs(1))
                .iter()
                .map(|d| number(d)),
        );
        assert_eq!(got.len(), 100);
        assert!(got.windows(2).any(|w| w[0] > w[1]));
    }

    /// A run with every kind of impairment, recording (time, payload) deliveries.
    fn simulate(seed: u64) -> Vec<(Duration, bool, u32, usize)> {
        let (_net, mut a, mut b) = pair(seed);
        let c = Conditions::lossy(0.1)
            .with_latency(20 * MS)
            .with_jitter(15 * MS)
            .with_reorder(0.1, 30 * MS)
            .with_duplicate(0.05)
            .with_bandwidth(200_000);
        a.set_conditions(Direction::Both, c).unwrap();
        let clock = ManualClock::new();
        let mut log = Vec::new();
        for i in 0..2_000u32 {
            let size = 20 + (i as usize * 7) % 500;
            let mut payload = vec![0u8; size];
            payload[..4].copy_from_slice(&numbered(i));
            a.send_to(&payload, b_addr(), clock.now()).unwrap();
            b.send_to(&payload, a_addr(), clock.now()).unwrap();
            clock.advance(Duration::from_micros(700));
            a.poll(clock.now()).unwrap();
            let mut buf = [0u8; 600];
            while let Some((n, _)) = b.recv_from(&mut buf, clock.now()).unwrap() {
                log.push((clock.now(), false, number(&buf[..4]), n));
            }
            while let Some((n, _)) = a.recv_from(&mut buf, clock.now()).unwrap() {
                log.push((clock.now(), true, number(&buf[..4]), n));
            }
        }
        log
    }

    #[test]
    fn same_seed_same_fates() {
        let first = simulate(1234);
        let second = simulate(1234);
        assert!(first.len() > 1000);
        assert_eq!(first, second);
        assert_ne!(first, simulate(4321));
    }

    #[test]
    fn reseeding_makes_fates_reproducible() {
        let fates = |c: &mut LinkConditioner<MemorySocket>, b: &mut MemorySocket| {
            let t = Duration::ZERO;
            (0..2000u32)
                .map(|i| {
                    c.send_to(&i.to_le_bytes(), b_addr(), t).unwrap();
                    !drain(b, t).is_empty()
                })
                .collect::<Vec<bool>>()
        };
        let (_n1, mut a1, mut b1) = pair(1);
        let (_n2, mut a2, mut b2) = pair(2);
        for a in [&mut a1, &mut a2] {
            a.set_conditions(Direction::Send, Conditions::lossy(0.3))
                .unwrap();
        }
        assert_ne!(fates(&mut a1, &mut b1), fates(&mut a2, &mut b2));
        a1.reseed(77);
        a2.reseed(77);
        let (f1, f2) = (fates(&mut a1, &mut b1), fates(&mut a2, &mut b2));
        assert_eq!(f1, f2);
        let lost = f1.iter().filter(|ok| !**ok).count();
        assert!((500..700).contains(&lost), "{lost} of 2000 lost at 30%");
    }

    #[test]
    fn per_peer_conditions_override_global() {
        let net = MemoryNetwork::new();
        let mut a = LinkConditioner::new(net.bind(a_addr()).unwrap(), 11);
        let mut b = net.bind(b_addr()).unwrap();
        let c_addr = addr("10.0.0.3:3000");
        let mut c = net.bind(c_addr).unwrap();
        a.set_conditions(Direction::Both, Conditions::lossy(1.0))
            .unwrap();
        a.set_peer_conditions(c_addr, Direction::Both, Conditions::default())
            .unwrap();
        let t = Duration::ZERO;
        for _ in 0..10 {
            a.send_to(b"m", b_addr(), t).unwrap();
            a.send_to(b"m", c_addr, t).unwrap();
            b.send_to(b"from b", a_addr(), t).unwrap();
            c.send_to(b"from c", a_addr(), t).unwrap();
        }
        assert_eq!(drain(&mut b, t).len(), 0);
        assert_eq!(drain(&mut c, t).len(), 10);
        assert_eq!(drain(&mut a, t), vec![b"from c".to_vec(); 10]);

        // Send-only override: receiving from c is lossy again.
        a.clear_peer_conditions(c_addr);
        a.set_peer_conditions(c_addr, Direction::Send, Conditions::default())
            .unwrap();
        a.send_to(b"m", c_addr, t).unwrap();
        c.send_to(b"from c", a_addr(), t).unwrap();
        assert_eq!(drain(&mut c, t).len(), 1);
        assert!(drain(&mut a, t).is_empty());

        a.clear_peer_conditions(c_addr);
        a.send_to(b"m", c_addr, t).unwrap();
        assert!(drain(&mut c, t).is_empty());

        // A lossy override under perfect global conditions.
        a.set_conditions(Direction::Both, Conditions::default())
            .unwrap();
        a.set_peer_conditions(b_addr(), Direction::Send, Conditions::lossy(1.0))
            .unwrap();
        a.send_to(b"m", b_addr(), t).unwrap();
        a.send_to(b"m", c_addr, t).unwrap();
        assert!(drain(&mut b, t).is_empty());
        assert_eq!(drain(&mut c, t).len(), 1);
    }

    #[test]
    fn validate_rejects_bad_values() {
        let bad = [
            Conditions::lossy(1.5),
            Conditions::lossy(f64::NAN),
            Conditions::lossy(-0.1),
            Conditions::lossy(f64::INFINITY),
            Conditions::default().with_duplicate(2.0),
            Conditions::default().with_reorder(f64::NAN, MS),
            Conditions::default().with_reorder(0.5, Duration::ZERO),
            Conditions::default().with_latency(Duration::MAX),
            Conditions::default().with_jitter(Duration::from_secs(7200)),
            Conditions::default().with_bandwidth(0),
            Conditions::default().with_burst_loss(GilbertElliott::new(0.1, 0.5, 0.0, 1.1)),
            Conditions::default().with_burst_loss(GilbertElliott::new(-1.0, 0.5, 0.0, 1.0)),
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?} should be rejected"
            );
        }
        let good = [
            Conditions::default(),
            Conditions::lossy(1.0),
            Conditions::lossy(0.0)
                .with_latency(Duration::from_secs(3600))
                .with_reorder(1.0, MS)
                .with_bandwidth(1),
            Conditions::default().with_burst_loss(GilbertElliott::new(0.0, 0.0, 0.0, 1.0)),
        ];
        for c in good {
            assert!(c.validate().is_ok(), "{c:?} should be accepted");
        }

        let (_net, mut a, mut b) = pair(12);
        assert!(a
            .set_conditions(Direction::Both, Conditions::lossy(1.5))
            .is_err());
        assert!(a
            .set_peer_conditions(b_addr(), Direction::Send, Conditions::lossy(-1.0))
            .is_err());
        a.send_to(b"still perfect", b_addr(), Duration::ZERO)
            .unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
    }

    #[test]
    fn is_perfect() {
        assert!(Conditions::default().is_perfect());
        assert!(!Conditions::lossy(0.1).is_perfect());
        assert!(!Conditions::default().with_latency(MS).is_perfect());
        assert!(!Conditions::default().with_bandwidth(1000).is_perfect());
        assert!(!Conditions::default()
            .with_burst_loss(GilbertElliott::new(0.1, 0.1, 0.0, 1.0))
            .is_perfect());
    }

    #[test]
    fn bandwidth_cap_delays_then_drops() {
        let (_net, mut a, mut b) = pair(13);
        // 10 000 B/s: a 1000-byte datagram takes 100 ms to serialise.
        a.set_conditions(
            Direction::Send,
            Conditions::default().with_bandwidth(10_000),
        )
        .unwrap();
        let data = [0u8; 1000];
        for _ in 0..12 {
            assert!(a.send_to(&data, b_addr(), Duration::ZERO).unwrap());
        }
        // 10 fit in the 1 s backlog; the 11th would finish at 1.1 s.
        let s = a.stats(Direction::Send);
        assert_eq!((s.sent, s.delayed, s.dropped), (12, 10, 2));
        a.poll(99 * MS).unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 0);
        a.poll(100 * MS).unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
        a.poll(999 * MS).unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 8);
        a.poll(1000 * MS).unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
        // Once the link is idle again, a datagram waits only its own 100 ms.
        let t = Duration::from_secs(2);
        a.send_to(&data, b_addr(), t).unwrap();
        assert_eq!(a.next_wakeup(), Some(t + 100 * MS));
        // Half-way through, the link accepts more, queued behind it.
        a.send_to(&data[..500], b_addr(), t + 50 * MS).unwrap();
        assert_eq!(a.queued(Direction::Send), 2);
        a.poll(t + 149 * MS).unwrap();
        assert_eq!(drain(&mut b, t).len(), 1);
        a.poll(t + 150 * MS).unwrap();
        assert_eq!(drain(&mut b, t).len(), 1);
    }

    #[test]
    fn bandwidth_throughput_matches_cap() {
        let (_net, mut a, mut b) = pair(14);
        a.set_conditions(
            Direction::Send,
            Conditions::default().with_bandwidth(100_000),
        )
        .unwrap();
        let clock = ManualClock::new();
        let mut bytes = 0usize;
        // Offer 1 MB/s for 5 s; only ~100 kB/s gets through.
        for _ in 0..5_000 {
            a.send_to(&[0u8; 1000], b_addr(), clock.now()).unwrap();
            clock.advance(MS);
            a.poll(clock.now()).unwrap();
            bytes += drain(&mut b, clock.now())
                .iter()
                .map(Vec::len)
                .sum::<usize>();
        }
        assert!((490_000..=510_000).contains(&bytes), "{bytes} bytes in 5 s");
    }

    #[test]
    fn gilbert_elliott_produces_bursts() {
        let (_net, mut a, mut b) = pair(15);
        let ge = GilbertElliott::new(0.05, 0.25, 0.0, 1.0);
        a.set_conditions(Direction::Send, Conditions::default().with_burst_loss(ge))
            .unwrap();
        let n = 20_000u32;
        for i in 0..n {
            a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap();
        }
        let got: Vec<u32> = drain(&mut b, Duration::ZERO)
            .iter()
            .map(|d| number(d))
            .collect();
        let mut delivered = vec![false; n as usize];
        for i in &got {
            delivered[*i as usize] = true;
        }
        let mut bursts = Vec::new();
        let mut run = 0u32;
        for d in delivered {
            if d {
                if run > 0 {
                    bursts.push(run);
                }
                run = 0;
            } else {
                run += 1;
            }
        }
        let mean = f64::from(bursts.iter().sum::<u32>()) / bursts.len() as f64;
        assert!(mean > 2.0, "mean burst length {mean}");
        let loss = 1.0 - got.len() as f64 / f64::from(n);
        let expected = ge.average_loss();
        assert!(
            (loss - expected).abs() < 0.04,
            "loss {loss}, expected {expected}"
        );
    }

    #[test]
    fn burst_loss_replaces_loss() {
        let (_net, mut a, mut b) = pair(16);
        let c = Conditions::lossy(1.0).with_burst_loss(GilbertElliott::new(0.0, 0.0, 0.0, 1.0));
        a.set_conditions(Direction::Send, c).unwrap();
        for i in 0..100 {
            a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap();
        }
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 100);
    }

    #[test]
    fn delay_queue_is_bounded() {
        let (_net, mut a, b) = pair(17);
        a.set_conditions(
            Direction::Send,
            Conditions::default().with_latency(Duration::from_secs(1)),
        )
        .unwrap();
        let extra = 100;
        for _ in 0..(MAX_QUEUED_DATAGRAMS + extra) {
            a.send_to(b"q", b_addr(), Duration::ZERO).unwrap();
        }
        assert_eq!(a.queued(Direction::Send), MAX_QUEUED_DATAGRAMS);
        assert_eq!(a.stats(Direction::Send).dropped, extra as u64);
        a.poll(Duration::from_secs(1)).unwrap();
        assert_eq!(a.queued(Direction::Send), 0);
        assert_eq!(b.pending(), MAX_QUEUED_DATAGRAMS);
        assert!(a.send.free.len() <= MAX_FREE_BUFFERS);
    }

    #[test]
    fn steady_state_reuses_buffers() {
        let (_net, mut a, mut b) = pair(18);
        a.set_conditions(Direction::Send, Conditions::default().with_latency(MS))
            .unwrap();
        for i in 0..100u32 {
            let now = Duration::from_millis(u64::from(i));
            a.send_to(&[1u8; 100], b_addr(), now).unwrap();
            a.poll(now).unwrap();
        }
        a.poll(Duration::from_secs(1)).unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 100);
        assert!(
            a.send.free.len() <= 2,
            "buffers reused: {}",
            a.send.free.len()
        );
    }

    #[test]
    fn works_as_boxed_transport_and_exposes_control() {
        let (_net, a, mut b) = pair(19);
        let mut t: Box<dyn Transport> = Box::new(a);
        let ctl = t.conditioner().expect("a conditioner");
        ctl.set_conditions(Direction::Send, Conditions::default().with_latency(5 * MS))
            .unwrap();
        t.send_to(b"boxed", b_addr(), Duration::ZERO).unwrap();
        assert_eq!(t.next_wakeup(), Some(5 * MS));
        t.poll(5 * MS).unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO), vec![b"boxed".to_vec()]);
        assert_eq!(t.conditioner().unwrap().conditioner_stats().delayed, 1);
        assert_eq!(t.local_addr().unwrap(), a_addr());
        let mut plain: Box<dyn Transport> = Box::new(b);
        assert!(plain.conditioner().is_none());
    }

    #[test]
    fn nested_conditioners_poll_through() {
        let net = MemoryNetwork::new();
        let inner = LinkConditioner::new(net.bind(a_addr()).unwrap(), 20);
        let mut b = net.bind(b_addr()).unwrap();
        let mut outer = LinkConditioner::new(inner, 21);
        outer
            .set_conditions(Direction::Send, Conditions::default().with_latency(10 * MS))
            .unwrap();
        outer
            .inner_mut()
            .set_conditions(Direction::Send, Conditions::default().with_latency(10 * MS))
            .unwrap();
        outer.send_to(b"deep", b_addr(), Duration::ZERO).unwrap();
        outer.poll(10 * MS).unwrap();
        assert_eq!(outer.next_wakeup(), Some(20 * MS));
        assert!(drain(&mut b, Duration::ZERO).is_empty());
        outer.poll(20 * MS).unwrap();
        assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
        let inner = outer.into_inner();
        assert_eq!(inner.stats(Direction::Send).delayed, 1);
        assert_eq!(inner.inner().local_addr().unwrap(), a_addr());
    }

    #[test]
    fn time_going_backwards_does_not_panic() {
        let (_net, mut a, mut b) = pair(22);
        let c = Conditions::lossy(0.1)
            .with_latency(5 * MS)
            .with_jitter(5 * MS)
            .with_bandwidth(50_000)
            .with_reorder(0.2, 3 * MS)
            .with_duplicate(0.2);
        a.set_conditions(Direction::Both, c).unwrap();
        let times = [
            Duration::from_secs(10),
            Duration::ZERO,
            Duration::MAX,
            3 * MS,
        ];
        let mut buf = [0u8; 4];
        for (i, t) in times.iter().cycle().take(400).enumerate() {
            a.send_to(&[0u8; 64], b_addr(), *t).unwrap();
            b.send_to(&[1u8; 64], a_addr(), *t).unwrap();
            a.poll(*t).unwrap();
            let _ = a.recv_from(&mut buf[..i % 4], *t).unwrap();
            let _ = a.next_wakeup();
        }
        a.poll(Duration::MAX).unwrap();
        drain(&mut a, Duration::MAX);
        assert_eq!(a.queued(Direction::Both), 0);
    }

    #[test]
    fn dropped_datagrams_still_report_sent() {
        let (_net, mut a, _b) = pair(23);
        a.set_conditions(Direction::Send, Conditions::lossy(1.0))
            .unwrap();
        assert!(a.send_to(b"gone", b_addr(), Duration::ZERO).unwrap());
        assert_eq!(a.stats(Direction::Send).dropped, 1);
        assert_eq!(a.stats(Direction::Receive), ConditionerStats::default());
    }

    #[test]
    fn rng_helpers() {
        let mut r = SplitMix64(0);
        for _ in 0..1000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.up_to(3) <= 3);
            assert_eq!(r.up_to(0), 0);
            assert!(r.chance(1.0));
            assert!(!r.chance(0.0));
        }
        let _ = r.up_to(u64::MAX);
    }
}
