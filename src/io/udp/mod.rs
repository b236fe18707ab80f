//! [`UdpTransport`]: a non-blocking UDP socket (mio), created through socket2.
//!
//! The files follow the transport's seams:
//!
//! * `mod.rs` (this file): the transport, its public API, the one function that decides what
//!   a failed receive means, and the dispatch to the path in use;
//! * `options.rs`: [`SocketOptions`] and the socket set-up (buffer sizes, DSCP,
//!   `SO_REUSEPORT`, dual mode);
//! * `plain.rs`: one syscall per datagram, the path on every system;
//! * `batch.rs` (Linux only): the `recvmmsg` ring, the `sendmmsg` batch, GSO and GRO and
//!   their fallbacks, on top of `io::sys` (where the `unsafe` lives); elsewhere `no_batch.rs`
//!   stands in for it, with a state type that has no values.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    time::Duration,
};

use super::{PollReport, Transport};

#[cfg(target_os = "linux")]
mod batch;
#[cfg(not(target_os = "linux"))]
#[path = "no_batch.rs"]
mod batch;
mod options;
mod plain;
#[cfg(target_os = "linux")]
mod sleep;
#[cfg(test)]
mod tests;

use batch::Batch;
pub use options::SocketOptions;

/// Counters of [`UdpTransport`]'s segmentation offload ([`SocketOptions::gso`] and
/// [`SocketOptions::gro`]) since the transport was bound, from
/// [`UdpTransport::offload_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffloadStats {
    /// GSO messages the kernel took (each carried two datagrams or more).
    pub gso_messages: u64,
    /// Datagrams sent inside those messages.
    pub gso_datagrams: u64,
    /// Times the kernel refused a GSO message and its datagrams were resent one by one.
    pub gso_fallbacks: u64,
    /// Coalesced buffers received (each held two datagrams or more).
    pub gro_buffers: u64,
    /// Datagrams split out of those buffers.
    pub gro_datagrams: u64,
}

/// A non-blocking UDP socket implementing [`Transport`].
///
/// * Source addresses of received datagrams that are IPv4-mapped IPv6
///   addresses (`::ffff:a.b.c.d`, as seen by a dual-mode socket) are reported
///   as plain IPv4 addresses, and sending to an IPv4 address from an IPv6
///   socket maps it back, so the rest of the crate only ever sees one form.
/// * `WouldBlock` becomes `Ok(None)` from `recv_from` and `Ok(false)` (a drop)
///   from `send_to`.
/// * An ICMP "port unreachable" reported by the OS (`ECONNREFUSED` on Linux
///   and macOS, `WSAECONNRESET` on Windows) is not an error: `recv_from`
///   skips it and notes it for the next [`poll`](Transport::poll), whose
///   [`PollReport::connection_refused`] says so once (the client uses it to notice a
///   server that is not there); `send_to` reports the datagram as dropped (`Ok(false)`)
///   and notes the same.
/// * On Windows a datagram too large for the receive buffer (`WSAEMSGSIZE`)
///   is skipped rather than truncated.
///
/// # Batched I/O (Linux, [`SocketOptions::batch`])
///
/// * **Receive.** `recv_from` asks the kernel for up to 4 datagrams with one `recvmmsg`
///   whenever its ring is empty (up to 32 in a burst: after a call that found more than
///   one, until one finds at most one) and hands them out one per call. Each slot of the
///   ring can hold 65,536 bytes (the drivers' buffer size), so no datagram is truncated
///   that a plain `recv_from` into the drivers' buffer would have kept whole; the ring's
///   2 MiB are reserved address space that only the kernel writes, so it costs resident
///   memory only for the pages datagrams land in. When a call returned fewer datagrams
///   than asked for (the kernel found the socket empty), the first `recv_from` after the
///   ring runs out returns `Ok(None)` without a syscall (and [`Transport::wait`] may
///   sleep); the next one asks again. A receive loop that gets one datagram thus makes one
///   syscall, not a second one that answers `EAGAIN`.
/// * **Send.** `send_to` copies the datagram into a batch (a buffer reused from call to
///   call: no allocation once it has grown to its high-water mark) and returns `Ok(true)`;
///   the batch goes out with `sendmmsg` (a batch of one with a plain `send`) when it holds
///   32 datagrams or 64 KiB, at
///   [`Transport::poll`] (the drivers call it at the end of every `tick_outgoing`), before
///   [`Transport::wait`] sleeps, and on drop. Datagrams the kernel did not take then
///   (socket buffer full, ICMP refusal, a per-datagram error) are dropped and **counted**
///   in the next [`PollReport::send_drops`], since `send_to` already reported them as
///   handed over. A full socket buffer drops the rest of the batch, as `Ok(false)` would
///   have for each. An ICMP refusal is reported in [`PollReport::connection_refused`] as
///   before.
///   Datagrams to the peer of [`connect`](UdpTransport::connect) go without an address.
/// * If the kernel answers `ENOSYS` the transport falls back to one syscall per datagram
///   for good (resending the pending batch that way) and logs it once.
///
/// # Segmentation offload (Linux, [`SocketOptions::gso`] and [`SocketOptions::gro`])
///
/// * **GSO.** While datagrams are queued, consecutive ones to the same destination that
///   have the same length form a run (a shorter datagram may end it); a run of two or more
///   leaves as *one* entry of the `sendmmsg` batch carrying a `UDP_SEGMENT` control message
///   with that length, which the kernel (or the network card) cuts back into exactly those
///   datagrams, so a run crosses the network stack once. A flush that mixes peers still
///   takes one syscall: runs and single datagrams are entries of the same batch. A run holds
///   at most 64 datagrams (the kernel's `UDP_MAX_SEGMENTS`) and 65,507 bytes (one IPv4
///   packet before the split); with GSO the batch goes out when it holds 32 entries, 256
///   datagrams or 256 KiB (instead of 32 datagrams or 64 KiB), at `poll`, before `wait`
///   sleeps and on drop as before. Empty datagrams never join a run.
/// * **Fallback.** GSO is only used if `getsockopt(UDP_SEGMENT)` works at bind (a kernel
///   without it would ignore the control message and send the run as one big datagram). If
///   the kernel refuses a run (`EIO`: no checksum offload on the route; `EINVAL`;
///   `ENOPROTOOPT`), GSO is turned off for the transport, logged once, and that run and
///   the rest of the batch are resent datagram by datagram; `EMSGSIZE` (a segment larger
///   than the route's MTU) resends the run the same way and keeps GSO for shorter segments
///   only. A refused run was taken by the kernel not at all, so nothing is lost or sent
///   twice, and [`PollReport::send_drops`] still counts every datagram the kernel did
///   not take (a dropped run counts each of its datagrams).
/// * **GRO.** `UDP_GRO` is set on the socket at bind, so the kernel may deliver several
///   datagrams of one sender as one buffer with a `UDP_GRO` control message giving their
///   length. `recv_from` splits it and returns the datagrams one per call, each with the
///   buffer's source, exactly as if they had arrived separately; a buffer without the
///   control message is one datagram. Outside bursts the single-datagram path then uses
///   `recvmsg` (to read the control message) straight into the caller's buffer, keeping the
///   rest of a coalesced buffer in the receive ring; a caller's buffer shorter than
///   65,536 bytes, which could cut a coalesced buffer short, is served through the ring.
/// * [`offload_stats`](UdpTransport::offload_stats) counts GSO messages, GRO buffers and
///   fallbacks; [`is_gso`](UdpTransport::is_gso) and [`is_gro`](UdpTransport::is_gro) say
///   whether each is in use.
///
/// The `now` arguments are ignored.
#[derive(Debug)]
pub struct UdpTransport {
    socket: mio::net::UdpSocket,
    local: SocketAddr,
    recv_buffer_size: usize,
    send_buffer_size: usize,
    /// What the receive and send paths found out along the way.
    status: Status,
    /// The peer set by [`UdpTransport::connect`]: datagrams to it use `send`, since BSD
    /// kernels refuse `sendto` with an address on a connected socket (EISCONN).
    peer: Option<SocketAddr>,
    /// The poller behind [`Transport::wait`], created (and the socket registered) at the
    /// first wait.
    poller: Option<mio::Poll>,
    events: Option<mio::Events>,
    /// The batching state; `None` when batching is off (always, off Linux).
    batch: Option<Box<Batch>>,
    /// The receive timeout a wait set: while `Some`, the socket is in blocking mode and
    /// waits sleep in the receive (`sleep.rs`); every other syscall passes `MSG_DONTWAIT`.
    receive_timeout: Option<Duration>,
    /// The socket is registered with an outside poller ([`UdpTransport::register`]).
    registered: bool,
}

/// What the receive and send paths of a [`UdpTransport`] noted for later.
#[derive(Debug, Default)]
struct Status {
    /// The last receive found the socket empty (`WouldBlock`). mio's readiness is
    /// edge-triggered, so `wait` may only sleep once the socket has been drained.
    drained: bool,
    /// The OS reported an ICMP "port unreachable" since the last successful
    /// [`poll`](Transport::poll).
    connection_refused: bool,
    /// Batched datagrams the kernel did not take, since the last successful `poll`.
    send_drops: u64,
}

/// What a receive loop does after its syscall failed (see [`Status::recv_failed`]).
enum RecvFailure {
    /// Nothing is pending: return `Ok(None)`.
    Empty,
    /// The error was dealt with (an interrupted call, an ICMP refusal, an oversized
    /// datagram): receive again.
    Retry,
    /// Report this error to the caller.
    Fatal(io::Error),
}

impl Status {
    /// The one place that decides what a failed receive means, for every receive loop
    /// (`recvfrom`, `recvmsg`, `recvmmsg`): `WouldBlock` is "nothing pending" (and marks the
    /// socket drained); an interrupted call is retried; an ICMP "port unreachable"
    /// (`ECONNREFUSED` on Linux and macOS, `WSAECONNRESET` on Windows) sets the
    /// connection-refused flag and is skipped; a datagram too large for the buffer on
    /// Windows (`WSAEMSGSIZE`) is skipped; anything else is an error.
    fn recv_failed(&mut self, local: SocketAddr, e: io::Error) -> RecvFailure {
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                self.drained = true;
                RecvFailure::Empty
            }
            io::ErrorKind::Interrupted => RecvFailure::Retry,
            _ if is_refused(&e) => {
                log::debug!("udp {local}: ignoring ICMP unreachable on recv: {e}");
                self.connection_refused = true;
                RecvFailure::Retry
            }
            _ if is_oversized(&e) => {
                log::debug!("udp {local}: dropped an oversized datagram: {e}");
                RecvFailure::Retry
            }
            _ => RecvFailure::Fatal(e),
        }
    }
}

/// The token of the socket in the transport's own poller.
const SOCKET_TOKEN: mio::Token = mio::Token(0);

/// How many consecutive skippable errors a receive swallows in one call before reporting
/// "nothing pending" (each one consumes a queued socket error, so this only bounds
/// pathological cases).
const MAX_SKIPPED_ERRORS: usize = 64;

#[cfg(windows)]
const WSAEMSGSIZE: i32 = 10040;

/// An ICMP "port unreachable" as the OS reports it on a UDP socket.
fn is_refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

#[cfg(windows)]
fn is_oversized(e: &io::Error) -> bool {
    e.raw_os_error() == Some(WSAEMSGSIZE)
}

#[cfg(not(windows))]
fn is_oversized(_e: &io::Error) -> bool {
    false
}

/// Turn an IPv4-mapped IPv6 address into the plain IPv4 address.
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

impl UdpTransport {
    /// Create a non-blocking UDP socket bound to `addr`, configured by `opts`.
    ///
    /// If the OS refuses a buffer size (or grants less than requested), a
    /// warning is logged and the socket is still created; the sizes obtained
    /// are available from [`recv_buffer_size`](UdpTransport::recv_buffer_size)
    /// and [`send_buffer_size`](UdpTransport::send_buffer_size). If
    /// `dual_mode` cannot be enabled on an IPv6 socket, a warning is logged
    /// and the socket speaks IPv6 only. `SO_REUSEADDR` is not set; `SO_REUSEPORT` only
    /// with [`SocketOptions::reuse_port`].
    ///
    /// # Errors
    ///
    /// Any error creating or binding the socket (e.g. `AddrInUse`); `InvalidInput` for a
    /// `dscp` above 63; `Unsupported` for `reuse_port` (or `dscp` on an IPv6 socket) on a
    /// system without the option; whatever `setsockopt` reports for either.
    pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UdpTransport> {
        let configured = options::bind_socket(addr, opts)?;
        let batch = Batch::setup(&configured.socket, addr, opts);
        let std_socket: std::net::UdpSocket = configured.socket.into();
        let socket = mio::net::UdpSocket::from_std(std_socket);
        let local = socket.local_addr()?;
        Ok(UdpTransport {
            socket,
            local,
            recv_buffer_size: configured.recv_buffer_size,
            send_buffer_size: configured.send_buffer_size,
            status: Status::default(),
            peer: None,
            poller: None,
            events: None,
            batch,
            receive_timeout: None,
            registered: false,
        })
    }

    /// Bind a socket on the wildcard address of the same family as `remote`
    /// (`0.0.0.0:0` or `[::]:0`), with an OS-chosen port: what a client that
    /// talks to `remote` needs.
    ///
    /// # Errors
    ///
    /// As for [`bind`](UdpTransport::bind).
    pub fn bind_any_for(remote: SocketAddr, opts: &SocketOptions) -> io::Result<UdpTransport> {
        let any = match remote {
            SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
        };
        UdpTransport::bind(any, opts)
    }

    /// Connect the socket to `remote` (a client's server): the OS then delivers only that
    /// peer's datagrams, and reports an ICMP "port unreachable" from it (in
    /// [`PollReport::connection_refused`]), which Linux does not do for unconnected
    /// sockets. `send_to` and `recv_from` keep working as before.
    ///
    /// # Errors
    ///
    /// Whatever `connect(2)` reports (e.g. a remote of the other address family).
    pub fn connect(&mut self, remote: SocketAddr) -> io::Result<()> {
        let target = self.target(remote)?;
        self.socket.connect(target)?;
        self.peer = Some(target);
        // Connecting picks the source address: report it instead of the wildcard.
        self.local = normalise(self.socket.local_addr()?);
        Ok(())
    }

    /// The receive buffer size the OS granted, in bytes (as reported by
    /// `getsockopt(SO_RCVBUF)`; Linux reports twice the usable size). `0` if
    /// it could not be read.
    pub fn recv_buffer_size(&self) -> usize {
        self.recv_buffer_size
    }

    /// The send buffer size the OS granted, in bytes (as reported by
    /// `getsockopt(SO_SNDBUF)`; Linux reports twice the usable size). `0` if
    /// it could not be read.
    pub fn send_buffer_size(&self) -> usize {
        self.send_buffer_size
    }

    /// Register the socket with a [`mio::Registry`] for readable events, so an
    /// application can sleep in its own [`mio::Poll::poll`] until datagrams arrive
    /// (most applications use [`Transport::wait`] instead, which needs no registration;
    /// a socket registered here can no longer use `wait`).
    ///
    /// mio's events are edge-triggered: after a wakeup, call
    /// [`recv_from`](Transport::recv_from) until it returns `Ok(None)`.
    ///
    /// # Errors
    ///
    /// Whatever the registry reports (e.g. the socket is already registered).
    pub fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        registry.register(&mut self.socket, token, mio::Interest::READABLE)?;
        self.registered = true;
        self.leave_receive_waits();
        Ok(())
    }

    /// Undo [`register`](UdpTransport::register).
    ///
    /// # Errors
    ///
    /// Whatever the registry reports (e.g. the socket is not registered).
    pub fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.deregister(&mut self.socket)?;
        self.registered = false;
        Ok(())
    }

    /// The underlying mio socket. On Linux with batched I/O, a [`Transport::wait`] of 26 ms
    /// or more leaves it in blocking mode (it sleeps in the receive): code that reads or
    /// writes it directly should pass `MSG_DONTWAIT`, or [`register`](UdpTransport::register)
    /// it, which makes it non-blocking again.
    pub fn socket(&self) -> &mio::net::UdpSocket {
        &self.socket
    }

    /// Map `to` into the address family of this socket.
    fn target(&self, to: SocketAddr) -> io::Result<SocketAddr> {
        match (self.local, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => Ok(SocketAddr::V6(SocketAddrV6::new(
                v4.ip().to_ipv6_mapped(),
                v4.port(),
                0,
                0,
            ))),
            (SocketAddr::V4(_), SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => Ok(SocketAddr::V4(SocketAddrV4::new(v4, v6.port()))),
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "cannot send to the IPv6 address {to} from the IPv4 socket {}",
                        self.local
                    ),
                )),
            },
            _ => Ok(to),
        }
    }

    /// Whether batched I/O is in use: [`SocketOptions::batch`] was set, the system is
    /// Linux, and the kernel has not refused the syscalls (checked at the first receive
    /// and the first batch sent).
    pub fn is_batching(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.is_batching())
    }

    /// Whether sends use UDP GSO: [`SocketOptions::gso`] and
    /// [`batch`](SocketOptions::batch) were set, the system is Linux, the kernel knows
    /// `UDP_SEGMENT`, and it has not refused a GSO message since.
    pub fn is_gso(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.is_gso())
    }

    /// Whether `UDP_GRO` is set on the socket: [`SocketOptions::gro`] and
    /// [`batch`](SocketOptions::batch) were set, the system is Linux and the kernel took the
    /// option.
    pub fn is_gro(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.is_gro())
    }

    /// GSO messages sent and GRO buffers received so far (all zero without offload).
    pub fn offload_stats(&self) -> OffloadStats {
        self.batch
            .as_ref()
            .map_or_else(OffloadStats::default, |b| b.offload_stats())
    }
}

impl Transport for UdpTransport {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        _now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        if self.batch.is_some() {
            return self.recv_batching(buf);
        }
        self.recv_plain(buf)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, _now: Duration) -> io::Result<bool> {
        let target = self.target(to)?;
        if self.batch.is_some() && self.queue_batched(data, target).is_ok() {
            return Ok(true);
        }
        self.send_plain(data, target)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// Sends the pending batch (batched I/O), then reports the batched datagrams the
    /// kernel did not take and any ICMP "port unreachable" seen since the last poll. If the
    /// batch met an error other than a full buffer or a refusal, that error is returned
    /// (after the whole batch was attempted) and the report waits for the next poll.
    fn poll(&mut self, _now: Duration) -> io::Result<PollReport> {
        self.flush_batch()?;
        Ok(PollReport::new(
            std::mem::take(&mut self.status.send_drops),
            std::mem::take(&mut self.status.connection_refused),
        ))
    }

    /// `Some(ZERO)` (due at once) while datagrams wait in the send batch, else `None`.
    fn next_wakeup(&self) -> Option<Duration> {
        self.batch
            .as_ref()
            .is_some_and(|b| b.has_pending())
            .then_some(Duration::ZERO)
    }

    /// Sends the pending batch, then sleeps until a datagram arrives or `timeout` passed:
    /// in the OS poller (epoll, kqueue, IOCP through mio), or on Linux with batched I/O, for
    /// a wait of 26 ms or more, in the receive itself (one syscall instead of two; the
    /// datagrams wait in the receive ring, and the wait may end early with nothing, at
    /// 16–1,024 ms). Returns at once if the last `recv_from` did not find the socket empty,
    /// since datagrams may still be queued (in the socket or in the receive ring).
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.flush_quietly();
        if !self.status.drained || timeout.is_zero() {
            return Ok(());
        }
        if self.wait_in_receive(timeout)? {
            return Ok(());
        }
        if self.poller.is_none() {
            let poller = mio::Poll::new()?;
            poller
                .registry()
                .register(&mut self.socket, SOCKET_TOKEN, mio::Interest::READABLE)?;
            self.poller = Some(poller);
            self.events = Some(mio::Events::with_capacity(4));
        }
        let (Some(poller), Some(events)) = (self.poller.as_mut(), self.events.as_mut()) else {
            return Ok(());
        };
        match poller.poll(events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for UdpTransport {
    /// Sends what is still in the send batch (best effort).
    fn drop(&mut self) {
        self.flush_quietly();
    }
}
