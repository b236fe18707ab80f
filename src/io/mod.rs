//! The I/O layer: datagram transports and clocks.
//!
//! The `Server` and `Client` drivers never touch sockets or read the wall clock
//! directly. They hold a `Box<dyn` [`Transport`]`>` and a `Box<dyn` [`Clock`]`>`
//! and pass the current time to every call, so the same driver code runs over:
//!
//! * [`UdpTransport`]: a real, non-blocking UDP socket (mio + socket2), with
//!   dual-stack IPv6 support and IPv4-mapped address normalisation;
//! * [`MemorySocket`]s on a [`MemoryNetwork`]: an in-process datagram network
//!   for tests and simulations that opens no OS sockets;
//! * [`LinkConditioner`]: a wrapper around any transport that simulates loss,
//!   bursty loss, latency, jitter, reordering, duplication and bandwidth caps,
//!   deterministically from a seed and the `now` arguments. Its knobs are turned through
//!   a [`ConditionerHandle`] ([`LinkConditioner::handle`]), which keeps working once the
//!   conditioner is boxed inside a driver.
//!
//! A [`Transport`] has no optional methods: besides receiving and sending, every transport
//! (and every wrapper of one) sends what it queued and reports late drops and unreachable
//! peers at [`poll`](Transport::poll) (a [`PollReport`]), says when it next has work
//! ([`next_wakeup`](Transport::next_wakeup)) and knows how to sleep
//! ([`wait`](Transport::wait)).
//!
//! Time comes from a [`Clock`]: [`SystemClock`] for real time, or
//! [`ManualClock`] for a virtual clock that tests advance by hand (which makes
//! a whole simulation over a [`MemoryNetwork`] and a [`LinkConditioner`] fully
//! deterministic).
//!
//! ```
//! use std::time::Duration;
//! use kcpnet::io::{
//!     Clock, Conditions, Direction, LinkConditioner, ManualClock, MemoryNetwork, PollReport,
//!     Transport,
//! };
//!
//! let net = MemoryNetwork::new();
//! let a = net.bind("127.0.0.1:1000".parse().unwrap()).unwrap();
//! let mut b = net.bind("127.0.0.1:2000".parse().unwrap()).unwrap();
//! let conditioner = LinkConditioner::new(a, 42);
//! let control = conditioner.handle();
//! let mut a: Box<dyn Transport> = Box::new(conditioner);
//! let latency = Conditions::default().with_latency(Duration::from_millis(50));
//! control.set_conditions(Direction::Send, latency).unwrap();
//!
//! let clock = ManualClock::new();
//! a.send_to(b"hello", b.local_addr().unwrap(), clock.now()).unwrap();
//! let mut buf = [0u8; 64];
//! assert!(b.recv_from(&mut buf, clock.now()).unwrap().is_none()); // still in flight
//! assert_eq!(a.next_wakeup(), Some(Duration::from_millis(50)));
//! clock.advance(Duration::from_millis(50));
//! let report = a.poll(clock.now()).unwrap(); // releases the delayed datagram
//! assert_eq!(report, PollReport::default()); // nothing dropped, nobody unreachable
//! let (len, from) = b.recv_from(&mut buf, clock.now()).unwrap().unwrap();
//! assert_eq!((&buf[..len], from), (&b"hello"[..], a.local_addr().unwrap()));
//! assert_eq!(control.stats(Direction::Send).delayed, 1);
//! ```

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

mod conditioner;
mod memory;
// The crate's only `unsafe`: the recvmmsg/sendmmsg wrappers behind batched UDP I/O.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys;
mod udp;

pub use conditioner::{
    ConditionerControl, ConditionerHandle, ConditionerStats, Conditions, Direction, GilbertElliott,
    LinkConditioner,
};
pub use memory::{MemoryNetwork, MemorySocket, MemoryStats};
pub use udp::{OffloadStats, SocketOptions, UdpTransport};

/// A datagram transport. `now` is the driver's clock reading (time since an
/// arbitrary origin); real sockets ignore it, simulated ones are driven by it.
///
/// Every method is required, so a wrapper (a packet counter, a pcap writer, an encryption
/// layer) that forgets to forward one does not compile: forwarding [`poll`](Transport::poll)
/// is what sends the datagrams a batching transport such as [`UdpTransport`] queues, and
/// reports the drops and refusals it found. `examples/packet_counter.rs` is a complete
/// wrapper.
///
/// No method but [`wait`](Transport::wait) blocks and no method panics.
pub trait Transport: Send + Sync {
    /// Receive one datagram into `buf`.
    ///
    /// Returns `Ok(Some((len, from)))` if one was pending and `Ok(None)` when
    /// nothing is pending (never blocks). A datagram larger than `buf` is
    /// truncated to `buf.len()` (and `len == buf.len()`).
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>>;

    /// Send one datagram (never blocks).
    ///
    /// Returns `Ok(true)` if it was handed to the network or queued for
    /// [`poll`](Transport::poll) (the network may still lose it, as UDP does) and
    /// `Ok(false)` if it was dropped because the socket's send buffer is full; the caller
    /// counts that as a drop and KCP retransmits.
    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> io::Result<bool>;

    /// The local address datagrams are sent from.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Send what is queued or held back and due by `now` (a batching transport's pending
    /// batch, the link conditioner's delayed datagrams), and report what happened since the
    /// last poll: datagrams [`send_to`](Transport::send_to) had accepted that were dropped
    /// after all, and whether the network reported a peer unreachable.
    ///
    /// The drivers call it at least once per tick (at the start of `tick_incoming` and the
    /// end of `tick_outgoing`). A wrapper forwards it to the transport it wraps and merges
    /// its own findings into the report ([`PollReport::merge`]); a transport with nothing
    /// to send later and nothing to report returns `Ok(PollReport::default())`.
    ///
    /// # Errors
    ///
    /// An error that is not about one datagram. What was found until then is kept for the
    /// next poll, not lost.
    fn poll(&mut self, now: Duration) -> io::Result<PollReport>;

    /// The earliest time at which [`poll`](Transport::poll) (or, for delayed incoming
    /// datagrams, [`recv_from`](Transport::recv_from)) has work to do, if any, so
    /// applications can sleep until then: `Some(now)` or earlier for "at once" (a batching
    /// transport with datagrams queued answers `Some(Duration::ZERO)`), `None` for "only when
    /// a datagram arrives". A wrapper returns the earlier of its own time and its inner
    /// transport's.
    fn next_wakeup(&self) -> Option<Duration>;

    /// Blocks until a datagram may be readable or `timeout` passed, whichever is first
    /// (spurious early returns are allowed). The drivers' `wait` calls it with the time
    /// until their next timer (already capped by [`next_wakeup`](Transport::next_wakeup)).
    /// [`UdpTransport`] sends its pending batch, then sleeps in the OS poller; in-memory
    /// transports driven by a virtual clock return at once. A wrapper forwards it.
    ///
    /// # Errors
    ///
    /// Whatever the OS poller reports (an interrupted wait is not an error).
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
}

/// What a [`Transport::poll`] found since the previous poll.
///
/// Build one with [`PollReport::new`] or `PollReport::default()` (nothing to report), and
/// combine a wrapper's own report with its inner transport's with [`PollReport::merge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollReport {
    /// Datagrams that [`Transport::send_to`] accepted with `Ok(true)` and that were dropped
    /// afterwards, when the transport actually sent them (a batching transport queues
    /// datagrams and sends them at `poll`, where the socket buffer may turn out to be full;
    /// a link conditioner releases delayed ones). The drivers move them from their
    /// datagrams-sent count to their send-error count. A transport that sends at once
    /// reports each drop through `send_to`'s result instead and reports 0 here.
    pub send_drops: u64,
    /// The network reported a peer unreachable (an ICMP "port unreachable" on a UDP socket,
    /// seen by a receive or a send), so a client can give up at once instead of waiting
    /// for its timeout. Reported once per report, at the poll after it was seen.
    pub connection_refused: bool,
}

impl PollReport {
    /// A report of `send_drops` dropped datagrams and, if `connection_refused`, an
    /// unreachable peer.
    pub fn new(send_drops: u64, connection_refused: bool) -> PollReport {
        PollReport {
            send_drops,
            connection_refused,
        }
    }

    /// Both reports in one: the drops added up, the refusals combined.
    #[must_use]
    pub fn merge(self, other: PollReport) -> PollReport {
        PollReport {
            send_drops: self.send_drops.saturating_add(other.send_drops),
            connection_refused: self.connection_refused || other.connection_refused,
        }
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        (**self).recv_from(buf, now)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> io::Result<bool> {
        (**self).send_to(data, to, now)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        (**self).local_addr()
    }

    fn poll(&mut self, now: Duration) -> io::Result<PollReport> {
        (**self).poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        (**self).next_wakeup()
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        (**self).wait(timeout)
    }
}

/// A source of monotonic time for the drivers.
pub trait Clock: Send + Sync {
    /// The time elapsed since this clock's (arbitrary) origin. Never decreases.
    fn now(&self) -> Duration;
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// The real, monotonic clock: [`now`](Clock::now) is the time elapsed since
/// the clock was created.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose origin is the moment of this call.
    pub fn new() -> SystemClock {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A virtual clock that only moves when told to, with microsecond resolution.
///
/// Clones share the same time: a test keeps one clone and gives another to the
/// driver, then [`advance`](ManualClock::advance)s it step by step.
///
/// ```
/// use std::time::Duration;
/// use kcpnet::io::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let driver_clock = clock.clone();
/// clock.advance(Duration::from_millis(10));
/// assert_eq!(driver_clock.now(), Duration::from_millis(10));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

fn duration_to_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl ManualClock {
    /// A clock reading zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// A clock reading `start` (truncated to whole microseconds).
    pub fn starting_at(start: Duration) -> ManualClock {
        ManualClock {
            micros: Arc::new(AtomicU64::new(duration_to_micros(start))),
        }
    }

    /// Move the clock forward by `by` (truncated to whole microseconds,
    /// saturating at the largest representable time).
    pub fn advance(&self, by: Duration) {
        let by = duration_to_micros(by);
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Set the clock to `to` (truncated to whole microseconds).
    ///
    /// Setting it backwards is allowed but breaks the monotonicity the
    /// drivers expect; tests that do so get what they asked for.
    pub fn set(&self, to: Duration) {
        self.micros.store(duration_to_micros(to), Ordering::SeqCst);
    }

    /// The current reading (same as [`Clock::now`]).
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        ManualClock::now(self)
    }
}

/// A remote address as a hash-map key, hashed as one word (IPv4 and port) or one 128-bit
/// value (IPv6 and port) instead of the four small writes of `SocketAddr`'s own `Hash`:
/// the address lookup runs for every datagram. The map's hasher stays std's keyed SipHash,
/// so remote peers cannot aim collisions at it. Equal addresses hash equally (the IPv6
/// flow info and scope id, which `SocketAddr` equality also compares, are left out of the
/// hash only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddrKey(pub(crate) SocketAddr);

impl std::hash::Hash for AddrKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self.0 {
            SocketAddr::V4(a) => {
                state.write_u64(u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port()))
            }
            SocketAddr::V6(a) => {
                state.write_u128(u128::from(*a.ip()).rotate_left(16) ^ u128::from(a.port()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_keys_of_equal_addresses_hash_equally_and_differ_by_port_and_family() {
        use std::collections::HashMap;
        let mut map = HashMap::new();
        let addrs: Vec<SocketAddr> = [
            "10.0.0.1:1",
            "10.0.0.1:2",
            "10.0.0.2:1",
            "[::1]:1",
            "[::1]:2",
            "[::ffff:10.0.0.1]:1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(map.insert(AddrKey(*a), i), None, "{a}");
        }
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(map.get(&AddrKey(*a)), Some(&i), "{a}");
        }
    }

    #[test]
    fn poll_reports_merge() {
        assert_eq!(PollReport::default(), PollReport::new(0, false));
        let a = PollReport::new(3, false);
        let b = PollReport::new(4, true);
        assert_eq!(a.merge(b), PollReport::new(7, true));
        assert_eq!(b.merge(a), PollReport::new(7, true));
        assert_eq!(a.merge(a), PollReport::new(6, false));
        assert_eq!(
            PollReport::new(u64::MAX, false).merge(b).send_drops,
            u64::MAX
        );
    }

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let clock = ManualClock::new();
        let other = clock.clone();
        assert_eq!(other.now(), Duration::ZERO);
        clock.advance(Duration::from_millis(5));
        assert_eq!(other.now(), Duration::from_millis(5));
        other.set(Duration::from_secs(2));
        assert_eq!(clock.now(), Duration::from_secs(2));
        let boxed: Box<dyn Clock> = Box::new(other);
        clock.advance(Duration::from_micros(1));
        assert_eq!(boxed.now(), Duration::from_micros(2_000_001));
    }

    #[test]
    fn manual_clock_starting_at_and_saturation() {
        let clock = ManualClock::starting_at(Duration::from_secs(7));
        assert_eq!(clock.now(), Duration::from_secs(7));
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Duration::from_micros(u64::MAX));
        clock.set(Duration::MAX);
        assert_eq!(clock.now(), Duration::from_micros(u64::MAX));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock::default();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}
