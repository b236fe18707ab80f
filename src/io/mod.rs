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
//!   deterministically from a seed and the `now` arguments.
//!
//! Time comes from a [`Clock`]: [`SystemClock`] for real time, or
//! [`ManualClock`] for a virtual clock that tests advance by hand (which makes
//! a whole simulation over a [`MemoryNetwork`] and a [`LinkConditioner`] fully
//! deterministic).
//!
//! ```
//! use std::time::Duration;
//! use kcpnet::io::{Conditions, LinkConditioner, ManualClock, MemoryNetwork, Clock, Transport};
//!
//! let net = MemoryNetwork::new();
//! let a = net.bind("127.0.0.1:1000".parse().unwrap()).unwrap();
//! let mut b = net.bind("127.0.0.1:2000".parse().unwrap()).unwrap();
//! let mut a = LinkConditioner::new(a, 42);
//! use kcpnet::io::{ConditionerControl, Direction};
//! a.set_conditions(Direction::Send, Conditions::default().with_latency(Duration::from_millis(50)))
//!     .unwrap();
//!
//! let clock = ManualClock::new();
//! a.send_to(b"hello", b.local_addr().unwrap(), clock.now()).unwrap();
//! let mut buf = [0u8; 64];
//! assert!(b.recv_from(&mut buf, clock.now()).unwrap().is_none()); // still in flight
//! clock.advance(Duration::from_millis(50));
//! a.poll(clock.now()).unwrap(); // releases the delayed datagram
//! let (len, from) = b.recv_from(&mut buf, clock.now()).unwrap().unwrap();
//! assert_eq!((&buf[..len], from), (&b"hello"[..], a.local_addr().unwrap()));
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
    ConditionerControl, ConditionerStats, Conditions, Direction, GilbertElliott, LinkConditioner,
};
pub use memory::{MemoryNetwork, MemorySocket, MemoryStats};
pub use udp::{OffloadStats, SocketOptions, UdpTransport};

/// A datagram transport. `now` is the driver's clock reading (time since an
/// arbitrary origin); real sockets ignore it, simulated ones are driven by it.
///
/// No method blocks and no method panics.
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
    /// Returns `Ok(true)` if it was handed to the network (which may still lose
    /// it, as UDP does) and `Ok(false)` if it was dropped because the socket's
    /// send buffer is full; the caller counts that as a drop and KCP
    /// retransmits.
    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> io::Result<bool>;

    /// The local address datagrams are sent from.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Release anything a wrapper holds back that is due by `now` (the link
    /// conditioner's delayed outgoing datagrams).
    ///
    /// The drivers call this at least once per tick. The default does nothing.
    fn poll(&mut self, now: Duration) -> io::Result<()> {
        let _ = now;
        Ok(())
    }

    /// The earliest time at which [`poll`](Transport::poll) (or, for delayed
    /// incoming datagrams, [`recv_from`](Transport::recv_from)) has work to do,
    /// if any, so applications can sleep until then. The default is `None`.
    fn next_wakeup(&self) -> Option<Duration> {
        None
    }

    /// Access to the link conditioner if this transport is one (used by
    /// `Server::set_conditions`). The default is `None`.
    fn conditioner(&mut self) -> Option<&mut dyn ConditionerControl> {
        None
    }

    /// Returns `true` once after the network reported the peer unreachable (an ICMP port
    /// unreachable on a UDP socket), so a client can give up at once instead of waiting for
    /// its timeout. The default is `false`.
    fn take_connection_refused(&mut self) -> bool {
        false
    }

    /// Returns, and resets to zero, how many datagrams [`send_to`](Transport::send_to)
    /// accepted with `Ok(true)` that were dropped afterwards, when the transport actually
    /// sent them (a batching transport queues datagrams and sends them at
    /// [`poll`](Transport::poll), where the socket buffer may turn out to be full). The
    /// drivers add it to their send-drop count after each `poll`. The default is 0: a
    /// transport that sends at once reports every drop through `send_to`'s result.
    fn take_send_drops(&mut self) -> u64 {
        0
    }

    /// Blocks until a datagram may be readable or `timeout` passed, whichever is first
    /// (spurious early returns are allowed). The drivers' `wait` calls it with the time
    /// until their next timer. [`UdpTransport`] sleeps in the OS poller; the default, used
    /// by in-memory transports driven by a virtual clock, returns at once.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let _ = timeout;
        Ok(())
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

    fn poll(&mut self, now: Duration) -> io::Result<()> {
        (**self).poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        (**self).next_wakeup()
    }

    fn conditioner(&mut self) -> Option<&mut dyn ConditionerControl> {
        (**self).conditioner()
    }

    fn take_connection_refused(&mut self) -> bool {
        (**self).take_connection_refused()
    }

    fn take_send_drops(&mut self) -> u64 {
        (**self).take_send_drops()
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
