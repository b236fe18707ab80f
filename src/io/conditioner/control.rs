//! The control side of a link conditioner: the settings, random streams and counters a
//! [`LinkConditioner`] shares with its [`ConditionerHandle`]s, and the fate each datagram
//! draws from them.
//!
//! Sharing costs the per-datagram path little: while a direction's conditions are perfect a
//! datagram reads one atomic flag and takes no lock; otherwise deciding its fate takes one
//! uncontended lock. The counters are written by the conditioner alone (a handle only reads
//! them), so they are atomics updated with a load and a store, not a locked read-modify-write.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use super::conditions::{Conditions, Direction};
use crate::error::Error;

#[cfg(doc)]
use super::LinkConditioner;

/// Datagrams whose bandwidth (serialisation) delay would exceed this are dropped.
const MAX_BANDWIDTH_BACKLOG: Duration = Duration::from_secs(1);

/// What a [`LinkConditioner`] did, per direction or combined (see
/// [`ConditionerHandle::stats`]; [`ConditionerHandle::conditioner_stats`]
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

/// The knobs of a link conditioner, offered by both the [`LinkConditioner`] itself and its
/// [`ConditionerHandle`]s, for code that takes either.
pub trait ConditionerControl {
    /// Set the conditions for every remote address without a per-peer
    /// override, in `direction`. Datagrams already delayed keep their due times.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if [`Conditions::validate`] rejects them (the
    /// current conditions are then unchanged).
    fn set_conditions(&self, direction: Direction, conditions: Conditions) -> Result<(), Error>;

    /// Set the conditions for traffic to and from `peer` in `direction`,
    /// overriding the global ones for that address.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if [`Conditions::validate`] rejects them (the
    /// current conditions are then unchanged).
    fn set_peer_conditions(
        &self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error>;

    /// Remove `peer`'s overrides (both directions); the global conditions
    /// apply to it again.
    fn clear_peer_conditions(&self, peer: SocketAddr);

    /// The counters of both directions combined.
    fn conditioner_stats(&self) -> ConditionerStats;

    /// Restart the random streams from `seed`, derived as in [`LinkConditioner::new`], so
    /// that the fates of the datagrams from now on are reproducible (over a virtual clock and
    /// the in-memory network, exactly; over real sockets, up to timing).
    fn reseed(&self, seed: u64);
}

/// The control handle of a [`LinkConditioner`], from [`LinkConditioner::handle`]: sets its
/// conditions and reads its counters from anywhere, while the conditioner itself sits
/// inside a driver (boxed as a `dyn Transport`) or in another thread.
///
/// Clones refer to the same conditioner; a handle stays valid after the conditioner is
/// dropped (its settings then affect nothing). It is how `Server::set_conditions` and
/// `Client::set_conditions` reach the conditioner that `Server::bind` and `Client::connect`
/// put around their socket.
///
/// ```
/// use std::time::Duration;
/// use kcpnet::io::{Conditions, Direction, LinkConditioner, MemoryNetwork, Transport};
///
/// let net = MemoryNetwork::new();
/// let socket = net.bind("127.0.0.1:1000".parse().unwrap()).unwrap();
/// let conditioner = LinkConditioner::new(socket, 7);
/// let handle = conditioner.handle();
/// let mut transport: Box<dyn Transport> = Box::new(conditioner);
///
/// handle.set_conditions(Direction::Send, Conditions::lossy(1.0)).unwrap();
/// let to = "127.0.0.1:2000".parse().unwrap();
/// assert!(transport.send_to(b"lost", to, Duration::ZERO).unwrap());
/// assert_eq!(handle.stats(Direction::Send).dropped, 1);
/// ```
#[derive(Debug, Clone)]
pub struct ConditionerHandle {
    shared: Arc<Shared>,
}

impl ConditionerHandle {
    /// A new set of perfect conditions with streams derived from `seed`.
    pub(super) fn new(seed: u64) -> ConditionerHandle {
        let mut seeder = SplitMix64(seed);
        ConditionerHandle {
            shared: Arc::new(Shared {
                send: SideControl::new(seeder.next_u64()),
                recv: SideControl::new(seeder.next_u64()),
            }),
        }
    }

    /// The send direction's control.
    pub(super) fn send(&self) -> &SideControl {
        &self.shared.send
    }

    /// The receive direction's control.
    pub(super) fn recv(&self) -> &SideControl {
        &self.shared.recv
    }

    /// Set the conditions for every remote address without a per-peer
    /// override, in `direction`. Datagrams already delayed keep their due times.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if [`Conditions::validate`] rejects them (the
    /// current conditions are then unchanged).
    pub fn set_conditions(
        &self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        conditions.validate()?;
        if direction.includes_send() {
            self.shared.send.set_global(conditions.clone());
        }
        if direction.includes_receive() {
            self.shared.recv.set_global(conditions);
        }
        Ok(())
    }

    /// Set the conditions for traffic to and from `peer` in `direction`,
    /// overriding the global ones for that address.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if [`Conditions::validate`] rejects them (the
    /// current conditions are then unchanged).
    pub fn set_peer_conditions(
        &self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        conditions.validate()?;
        if direction.includes_send() {
            self.shared.send.set_peer(peer, conditions.clone());
        }
        if direction.includes_receive() {
            self.shared.recv.set_peer(peer, conditions);
        }
        Ok(())
    }

    /// Remove `peer`'s overrides (both directions); the global conditions
    /// apply to it again.
    pub fn clear_peer_conditions(&self, peer: SocketAddr) {
        self.shared.send.clear_peer(peer);
        self.shared.recv.clear_peer(peer);
    }

    /// The counters of one direction, or of both combined for [`Direction::Both`].
    pub fn stats(&self, direction: Direction) -> ConditionerStats {
        match direction {
            Direction::Send => self.shared.send.counters.snapshot(),
            Direction::Receive => self.shared.recv.counters.snapshot(),
            Direction::Both => self
                .shared
                .send
                .counters
                .snapshot()
                .add(self.shared.recv.counters.snapshot()),
        }
    }

    /// The counters of both directions combined.
    pub fn conditioner_stats(&self) -> ConditionerStats {
        self.stats(Direction::Both)
    }

    /// Restart the random streams from `seed`, derived as in [`LinkConditioner::new`], so
    /// that the fates of the datagrams from now on are reproducible (over a virtual clock and
    /// the in-memory network, exactly; over real sockets, up to timing).
    pub fn reseed(&self, seed: u64) {
        let mut seeder = SplitMix64(seed);
        self.shared.send.policy().rng = SplitMix64(seeder.next_u64());
        self.shared.recv.policy().rng = SplitMix64(seeder.next_u64());
    }
}

impl ConditionerControl for ConditionerHandle {
    fn set_conditions(&self, direction: Direction, conditions: Conditions) -> Result<(), Error> {
        ConditionerHandle::set_conditions(self, direction, conditions)
    }

    fn set_peer_conditions(
        &self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        ConditionerHandle::set_peer_conditions(self, peer, direction, conditions)
    }

    fn clear_peer_conditions(&self, peer: SocketAddr) {
        ConditionerHandle::clear_peer_conditions(self, peer)
    }

    fn conditioner_stats(&self) -> ConditionerStats {
        ConditionerHandle::conditioner_stats(self)
    }

    fn reseed(&self, seed: u64) {
        ConditionerHandle::reseed(self, seed)
    }
}

/// Both directions' controls.
#[derive(Debug)]
struct Shared {
    send: SideControl,
    recv: SideControl,
}

/// One direction's settings, random stream and counters.
#[derive(Debug)]
pub(super) struct SideControl {
    /// Global and all per-peer conditions are perfect: datagrams pass without a lock.
    perfect: AtomicBool,
    policy: Mutex<Policy>,
    pub(super) counters: Counters,
}

/// One direction's conditions, the state they carry between datagrams, and its random
/// stream.
#[derive(Debug)]
struct Policy {
    global: Link,
    peers: HashMap<SocketAddr, Link>,
    rng: SplitMix64,
}

impl Policy {
    fn is_perfect(&self) -> bool {
        self.global.conditions.is_perfect()
            && self.peers.values().all(|l| l.conditions.is_perfect())
    }
}

/// The delays of up to two copies of a datagram (`None`: no such copy).
pub(super) type Fate = [Option<Duration>; 2];

impl SideControl {
    fn new(seed: u64) -> SideControl {
        SideControl {
            perfect: AtomicBool::new(true),
            policy: Mutex::new(Policy {
                global: Link::new(Conditions::default()),
                peers: HashMap::new(),
                rng: SplitMix64(seed),
            }),
            counters: Counters::default(),
        }
    }

    /// Nothing in this direction needs a fate drawn: datagrams pass untouched.
    pub(super) fn is_perfect(&self) -> bool {
        self.perfect.load(Ordering::Relaxed)
    }

    /// The policy, locked. Nothing panics while holding it, so a poisoned lock (which
    /// cannot happen) is simply taken over.
    fn policy(&self) -> MutexGuard<'_, Policy> {
        self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the policy with `f`, then refresh the perfect flag.
    fn update(&self, f: impl FnOnce(&mut Policy)) {
        let mut policy = self.policy();
        f(&mut policy);
        self.perfect.store(policy.is_perfect(), Ordering::Relaxed);
    }

    fn set_global(&self, conditions: Conditions) {
        self.update(|p| p.global = Link::new(conditions));
    }

    fn set_peer(&self, peer: SocketAddr, conditions: Conditions) {
        self.update(|p| {
            p.peers.insert(peer, Link::new(conditions));
        });
    }

    fn clear_peer(&self, peer: SocketAddr) {
        self.update(|p| {
            p.peers.remove(&peer);
        });
    }

    /// Decide what happens to a datagram of `len` bytes to/from `addr` (one lock).
    pub(super) fn decide(&self, addr: SocketAddr, now: Duration, len: usize) -> Fate {
        let mut guard = self.policy();
        let policy = &mut *guard;
        let link = match policy.peers.get_mut(&addr) {
            Some(link) => link,
            None => &mut policy.global,
        };
        let rng = &mut policy.rng;
        let stats = &self.counters;
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
            Counters::bump(&stats.dropped);
            return [None, None];
        }
        let copies = if rng.chance(c.duplicate) {
            Counters::bump(&stats.duplicated);
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
                    Counters::bump(&stats.dropped);
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
                Counters::bump(&stats.reordered);
                delay = delay.saturating_add(reorder_delay);
            }
            *slot = Some(delay);
        }
        fate
    }
}

/// One direction's counters (see [`ConditionerStats`]). Only the conditioner writes them.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) duplicated: AtomicU64,
    pub(super) reordered: AtomicU64,
    pub(super) delayed: AtomicU64,
}

impl Counters {
    /// Add one. The conditioner is the only writer (it holds the `&mut self` of every
    /// path that counts), so a load and a store suffice.
    pub(super) fn bump(counter: &AtomicU64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> ConditionerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConditionerStats {
            sent: get(&self.sent),
            received: get(&self.received),
            dropped: get(&self.dropped),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            delayed: get(&self.delayed),
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

/// A small, fast, seedable generator (SplitMix64): the same seed always gives
/// the same stream, independent of any crate version.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p` (draws nothing when `p <= 0`).
    pub(super) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// Uniform in `0..=max`.
    pub(super) fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64,
            None => self.next_u64(),
        }
    }
}
