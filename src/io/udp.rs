//! [`UdpTransport`]: a non-blocking UDP socket (mio), created through socket2.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[cfg(target_os = "linux")]
use super::sys;
use super::Transport;

/// Socket settings for [`UdpTransport::bind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// For an IPv6 address (e.g. `[::]:7777`): also accept IPv4 peers by
    /// clearing `IPV6_V6ONLY`. When `false`, IPv6 sockets set
    /// `IPV6_V6ONLY` and only speak IPv6. Ignored for IPv4 addresses.
    /// Default `true`.
    pub dual_mode: bool,
    /// The requested `SO_RCVBUF` size in bytes; `0` keeps the OS default.
    /// Default 7 MiB (7 340 032), like kcp2k.
    pub recv_buffer_size: usize,
    /// The requested `SO_SNDBUF` size in bytes; `0` keeps the OS default.
    /// Default 7 MiB (7 340 032), like kcp2k.
    pub send_buffer_size: usize,
    /// Batched socket I/O (Linux only): receive up to 32 datagrams per `recvmmsg(2)` and
    /// send the datagrams queued by `send_to` with one `sendmmsg(2)` when 32 are queued,
    /// at [`Transport::poll`], before [`Transport::wait`] sleeps, and when the transport is
    /// dropped. See [`UdpTransport`] for how drops are reported. Ignored on other systems,
    /// and turned off by itself if the kernel lacks the syscalls (`ENOSYS`). Default `true`
    /// on Linux, `false` elsewhere.
    pub batch: bool,
    /// The DSCP codepoint (0..=63) to mark outgoing datagrams with, e.g. 46 (Expedited
    /// Forwarding) for game traffic on networks that honour it: sets `IP_TOS` on IPv4
    /// sockets and `IPV6_TCLASS` on IPv6 sockets (plus `IP_TOS`, best effort, for the IPv4
    /// peers of a dual-mode socket) to `dscp << 2`, leaving the ECN bits zero. `None` (the
    /// default) keeps the OS default (0).
    pub dscp: Option<u8>,
    /// Set `SO_REUSEPORT` before binding, so several sockets (one per thread or process)
    /// can bind the same address. On Linux the kernel then spreads peers over them by a
    /// hash of the source and destination addresses, which is how a server is sharded
    /// over cores (see `docs/SCALING.md`); on macOS and the BSDs the option exists but
    /// does not balance. Binding fails with `Unsupported` on systems without it. Default
    /// `false`.
    pub reuse_port: bool,
}

impl SocketOptions {
    /// The default buffer size requested for both directions: 7 MiB.
    pub const DEFAULT_BUFFER_SIZE: usize = 7 * 1024 * 1024;

    /// The largest DSCP codepoint (six bits).
    pub const MAX_DSCP: u8 = 63;

    /// Whether batched I/O is available on this system (Linux), i.e. the default of
    /// [`batch`](SocketOptions::batch).
    pub const BATCH_SUPPORTED: bool = cfg!(target_os = "linux");
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            dual_mode: true,
            recv_buffer_size: Self::DEFAULT_BUFFER_SIZE,
            send_buffer_size: Self::DEFAULT_BUFFER_SIZE,
            batch: Self::BATCH_SUPPORTED,
            dscp: None,
            reuse_port: false,
        }
    }
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
///   skips it and sets a flag that
///   [`take_connection_refused`](Transport::take_connection_refused)
///   reads and clears (the client uses it to notice a server that is not there); `send_to` reports the
///   datagram as dropped (`Ok(false)`) and sets the same flag.
/// * On Windows a datagram too large for the receive buffer (`WSAEMSGSIZE`)
///   is skipped rather than truncated.
///
/// # Batched I/O (Linux, [`SocketOptions::batch`])
///
/// * **Receive.** Datagrams that come one at a time are read with one `recvfrom` each,
///   straight into the caller's buffer. After 4 in a row (a burst), `recv_from` asks the
///   kernel for up to 32 datagrams with one `recvmmsg` whenever its ring is empty and
///   hands them out one per call, until a `recvmmsg` finds at most one datagram. Each slot of the
///   ring can hold 65,536 bytes (the drivers' buffer size), so no datagram is truncated
///   that a plain `recv_from` into the drivers' buffer would have kept whole; the ring's
///   2 MiB are reserved address space that only the kernel writes, so it costs resident
///   memory only for the pages datagrams land in. When a call returned fewer datagrams
///   than asked for (the kernel found the socket empty), the first `recv_from` after the
///   ring runs out returns `Ok(None)` without a syscall; the next one asks again.
/// * **Send.** `send_to` copies the datagram into a batch (a buffer reused from call to
///   call: no allocation once it has grown to its high-water mark) and returns `Ok(true)`;
///   the batch goes out with `sendmmsg` (a batch of one with a plain `send`) when it holds
///   32 datagrams or 64 KiB, at
///   [`Transport::poll`] (the drivers call it at the end of every `tick_outgoing`), before
///   [`Transport::wait`] sleeps, and on drop. Datagrams the kernel did not take then
///   (socket buffer full, ICMP refusal, a per-datagram error) are dropped and **counted**:
///   [`Transport::take_send_drops`] returns and resets the count, since `send_to` already
///   reported them as handed over. A full socket buffer drops the rest of the batch, as
///   `Ok(false)` would have for each. An ICMP refusal sets the
///   [`take_connection_refused`](Transport::take_connection_refused) flag as before.
///   Datagrams to the peer of [`connect`](UdpTransport::connect) go without an address.
/// * If the kernel answers `ENOSYS` the transport falls back to one syscall per datagram
///   for good (resending the pending batch that way) and logs it once.
///
/// The `now` arguments are ignored.
#[derive(Debug)]
pub struct UdpTransport {
    socket: mio::net::UdpSocket,
    local: SocketAddr,
    recv_buffer_size: usize,
    send_buffer_size: usize,
    connection_refused: bool,
    /// The peer set by [`UdpTransport::connect`]: datagrams to it use `send`, since BSD
    /// kernels refuse `sendto` with an address on a connected socket (EISCONN).
    peer: Option<SocketAddr>,
    /// The poller behind [`Transport::wait`], created (and the socket registered) at the
    /// first wait.
    poller: Option<mio::Poll>,
    events: Option<mio::Events>,
    /// The last `recv_from` found the socket empty (`WouldBlock`). mio's readiness is
    /// edge-triggered, so `wait` may only sleep once the socket has been drained.
    drained: bool,
    /// Batched datagrams the kernel did not take, since the last `take_send_drops`.
    send_drops: u64,
    /// The batching state; `None` when batching is off.
    #[cfg(target_os = "linux")]
    batch: Option<Box<Batch>>,
}

/// The state of batched I/O: the receive ring and the pending send batch.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Batch {
    /// Created at the first batched receive.
    ring: Option<Box<sys::RecvRing>>,
    /// `recvmmsg` works (cleared on `ENOSYS`).
    recv_enabled: bool,
    /// The last `recvmmsg` returned fewer datagrams than asked: the socket was found empty.
    skip_recv_syscall: bool,
    /// Receive with `recvmmsg` (a burst is under way) rather than `recvfrom`.
    recv_burst: bool,
    /// Consecutive datagrams received by `recvfrom` outside a burst.
    recv_streak: u8,
    /// `sendmmsg` works (cleared on `ENOSYS`).
    send_enabled: bool,
    /// The pending datagrams, back to back.
    bytes: Vec<u8>,
    items: Vec<sys::SendItem>,
    /// `RecvRing::truncated` already logged.
    truncated_logged: u64,
}

/// Consecutive datagrams received one by one after which `recv_from` switches to
/// `recvmmsg` (a burst); a `recvmmsg` that finds at most one datagram switches back.
#[cfg(target_os = "linux")]
const BURST_STREAK: u8 = 4;

/// Largest number of bytes queued in a send batch; a larger datagram is sent on its own.
#[cfg(target_os = "linux")]
const SEND_BATCH_BYTES: usize = 65_536;

/// The token of the socket in the transport's own poller.
const SOCKET_TOKEN: mio::Token = mio::Token(0);

/// How many consecutive skippable errors `recv_from` swallows in one call
/// before reporting "nothing pending" (each one consumes a queued socket error,
/// so this only bounds pathological cases).
const MAX_SKIPPED_ERRORS: usize = 64;

#[cfg(windows)]
const WSAEMSGSIZE: i32 = 10040;

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

/// `SO_REUSEPORT`, where the system has it.
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    #[cfg(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    ))]
    {
        socket.set_reuse_port(true)
    }
    #[cfg(not(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    )))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not available on this system",
        ))
    }
}

/// Mark outgoing datagrams with `dscp` (already checked to be at most 63).
fn set_dscp(socket: &Socket, ipv6: bool, dual_mode: bool, dscp: u8) -> io::Result<()> {
    let tos = u32::from(dscp) << 2;
    if !ipv6 {
        return set_tos_v4(socket, tos);
    }
    set_tclass(socket, tos)?;
    if dual_mode {
        // IPv4 peers of a dual-mode socket are reached through IPv4, marked by IP_TOS,
        // which Linux accepts on IPv6 sockets; other systems may not.
        if let Err(e) = set_tos_v4(socket, tos) {
            log::debug!("IP_TOS on a dual-mode IPv6 socket was refused: {e}");
        }
    }
    Ok(())
}

fn set_tos_v4(socket: &Socket, tos: u32) -> io::Result<()> {
    #[cfg(not(any(
        target_os = "fuchsia",
        target_os = "redox",
        target_os = "solaris",
        target_os = "illumos",
        target_os = "haiku",
    )))]
    {
        socket.set_tos(tos)
    }
    #[cfg(any(
        target_os = "fuchsia",
        target_os = "redox",
        target_os = "solaris",
        target_os = "illumos",
        target_os = "haiku",
    ))]
    {
        let _ = (socket, tos);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IP_TOS is not available on this system",
        ))
    }
}

fn set_tclass(socket: &Socket, tclass: u32) -> io::Result<()> {
    #[cfg(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "fuchsia",
        target_os = "linux",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
    ))]
    {
        socket.set_tclass_v6(tclass)
    }
    #[cfg(not(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "fuchsia",
        target_os = "linux",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
    )))]
    {
        let _ = (socket, tclass);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IPV6_TCLASS is not available on this system",
        ))
    }
}

/// Clamp a requested buffer size to what `setsockopt` takes (a C `int`).
fn clamp_buffer_size(size: usize) -> usize {
    size.min(i32::MAX as usize)
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
        if let Some(dscp) = opts.dscp {
            if dscp > SocketOptions::MAX_DSCP {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("dscp {dscp} is outside 0..=63"),
                ));
            }
        }
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if opts.reuse_port {
            set_reuse_port(&socket)?;
        }
        if let Some(dscp) = opts.dscp {
            set_dscp(&socket, addr.is_ipv6(), opts.dual_mode, dscp)?;
        }
        if addr.is_ipv6() {
            if let Err(e) = socket.set_only_v6(!opts.dual_mode) {
                log::warn!(
                    "could not set IPV6_V6ONLY={} on the socket for {addr}: {e}",
                    !opts.dual_mode
                );
            }
        }
        let recv_buffer_size = Self::apply_buffer_size(
            &socket,
            "receive",
            opts.recv_buffer_size,
            Socket::set_recv_buffer_size,
            Socket::recv_buffer_size,
        );
        let send_buffer_size = Self::apply_buffer_size(
            &socket,
            "send",
            opts.send_buffer_size,
            Socket::set_send_buffer_size,
            Socket::send_buffer_size,
        );
        socket.set_nonblocking(true)?;
        socket.bind(&SockAddr::from(addr))?;
        let std_socket: std::net::UdpSocket = socket.into();
        let socket = mio::net::UdpSocket::from_std(std_socket);
        let local = socket.local_addr()?;
        Ok(UdpTransport {
            socket,
            local,
            recv_buffer_size,
            send_buffer_size,
            connection_refused: false,
            peer: None,
            poller: None,
            events: None,
            drained: false,
            send_drops: 0,
            #[cfg(target_os = "linux")]
            batch: opts.batch.then(|| {
                Box::new(Batch {
                    ring: None,
                    recv_enabled: true,
                    skip_recv_syscall: false,
                    recv_burst: false,
                    recv_streak: 0,
                    send_enabled: true,
                    bytes: Vec::new(),
                    items: Vec::new(),
                    truncated_logged: 0,
                })
            }),
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
    /// peer's datagrams, and reports an ICMP "port unreachable" from it as
    /// [`take_connection_refused`](Transport::take_connection_refused), which Linux does not
    /// do for unconnected sockets. `send_to` and `recv_from` keep working as before.
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

    fn apply_buffer_size(
        socket: &Socket,
        which: &str,
        requested: usize,
        set: fn(&Socket, usize) -> io::Result<()>,
        get: fn(&Socket) -> io::Result<usize>,
    ) -> usize {
        if requested > 0 {
            if let Err(e) = set(socket, clamp_buffer_size(requested)) {
                log::warn!("could not set the socket {which} buffer to {requested} bytes: {e}");
            }
        }
        match get(socket) {
            Ok(obtained) => {
                if obtained < requested {
                    log::warn!(
                        "socket {which} buffer is {obtained} bytes, less than the {requested} requested \
                         (raise the OS limit, e.g. net.core.{}mem_max on Linux)",
                        if which == "send" { "w" } else { "r" }
                    );
                }
                obtained
            }
            Err(e) => {
                log::warn!("could not read the socket {which} buffer size: {e}");
                0
            }
        }
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
        registry.register(&mut self.socket, token, mio::Interest::READABLE)
    }

    /// Undo [`register`](UdpTransport::register).
    ///
    /// # Errors
    ///
    /// Whatever the registry reports (e.g. the socket is not registered).
    pub fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.deregister(&mut self.socket)
    }

    /// The underlying mio socket.
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
}

impl UdpTransport {
    /// Whether batched I/O is in use: [`SocketOptions::batch`] was set, the system is
    /// Linux, and the kernel has not refused the syscalls (checked at the first receive
    /// and the first batch sent).
    pub fn is_batching(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.batch
                .as_ref()
                .is_some_and(|b| b.recv_enabled && b.send_enabled)
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// One `recv_from` syscall per datagram (the path without batching).
    fn recv_plain(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        for _ in 0..MAX_SKIPPED_ERRORS {
            match self.socket.recv_from(buf) {
                Ok((len, from)) => {
                    self.drained = false;
                    return Ok(Some((len, normalise(from))));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_refused(&e) => {
                    log::debug!("udp {}: ignoring ICMP unreachable on recv: {e}", self.local);
                    self.connection_refused = true;
                }
                Err(e) if is_oversized(&e) => {
                    log::debug!("udp {}: dropped an oversized datagram: {e}", self.local);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// One `send`/`send_to` syscall for one datagram (the path without batching).
    fn send_plain(&mut self, data: &[u8], target: SocketAddr) -> io::Result<bool> {
        // Retry a bounded number of times on EINTR.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = if self.peer == Some(target) {
                self.socket.send(data)
            } else {
                self.socket.send_to(data, target)
            };
            match sent {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted && attempts < 8 => continue,
                Err(e) if is_refused(&e) => {
                    log::debug!(
                        "udp {}: ICMP unreachable reported on send to {target}: {e}",
                        self.local
                    );
                    self.connection_refused = true;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn is_enosys(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSYS)
}

#[cfg(target_os = "linux")]
impl UdpTransport {
    /// `recv_from` through the ring. `Err(None)`: batching was just turned off, use the
    /// plain path.
    fn recv_batched(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddr)>, Option<io::Error>> {
        use std::os::fd::AsRawFd;
        let fd = self.socket.as_raw_fd();
        let Some(b) = self.batch.as_mut() else {
            return Err(None);
        };
        let ring = b.ring.get_or_insert_with(|| Box::new(sys::RecvRing::new()));
        for _ in 0..MAX_SKIPPED_ERRORS {
            if let Some((data, from)) = ring.pop() {
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                self.drained = false;
                return Ok(Some((len, normalise(from))));
            }
            if std::mem::take(&mut b.skip_recv_syscall) {
                return Ok(None);
            }
            match ring.recv(fd) {
                Ok(n) => {
                    b.skip_recv_syscall = n < sys::MAX_BATCH;
                    // A call that found at most one datagram ends the burst.
                    b.recv_burst = n > 1;
                    if ring.truncated() != b.truncated_logged {
                        b.truncated_logged = ring.truncated();
                        log::warn!(
                            "udp {}: {} datagram(s) longer than {} bytes were truncated",
                            self.local,
                            b.truncated_logged,
                            sys::SLOT_LEN
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    b.recv_burst = false;
                    self.drained = true;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_refused(&e) => {
                    log::debug!("udp {}: ignoring ICMP unreachable on recv: {e}", self.local);
                    self.connection_refused = true;
                }
                Err(e) if is_enosys(&e) => {
                    log::warn!(
                        "udp {}: recvmmsg unavailable ({e}); one syscall per datagram",
                        self.local
                    );
                    b.recv_enabled = false;
                    b.ring = None;
                    return Err(None);
                }
                Err(e) => return Err(Some(e)),
            }
        }
        Ok(None)
    }

    /// Queue a datagram in the send batch. `Err(())`: not batched (batching off, or the
    /// datagram is larger than a batch), send it plainly.
    fn queue_batched(&mut self, data: &[u8], target: SocketAddr) -> Result<(), ()> {
        let Some(b) = self.batch.as_mut().filter(|b| b.send_enabled) else {
            return Err(());
        };
        if data.len() > SEND_BATCH_BYTES {
            if !b.items.is_empty() {
                self.flush_quietly(); // keep the order
            }
            return Err(());
        }
        if b.items.len() >= sys::MAX_BATCH || b.bytes.len() + data.len() > SEND_BATCH_BYTES {
            self.flush_quietly();
        }
        let peer = self.peer;
        let Some(b) = self.batch.as_mut().filter(|b| b.send_enabled) else {
            return Err(()); // the flush found no sendmmsg
        };
        if b.bytes.capacity() == 0 {
            b.bytes.reserve_exact(SEND_BATCH_BYTES);
            b.items.reserve_exact(sys::MAX_BATCH);
        }
        let to = (peer != Some(target)).then(|| SockAddr::from(target));
        b.items.push(sys::SendItem {
            start: b.bytes.len(),
            len: data.len(),
            to,
            target,
        });
        b.bytes.extend_from_slice(data);
        if b.items.len() >= sys::MAX_BATCH {
            self.flush_quietly();
        }
        Ok(())
    }

    fn flush_quietly(&mut self) {
        if let Err(e) = self.flush_batch() {
            log::debug!("udp {}: batched send: {e}", self.local);
        }
    }

    /// Send the pending batch. Datagrams the kernel does not take are counted in
    /// `send_drops`; the first error other than a full buffer or an ICMP refusal is
    /// returned after the whole batch was attempted.
    fn flush_batch(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.socket.as_raw_fd();
        let local = self.local;
        let Some(b) = self.batch.as_mut() else {
            return Ok(());
        };
        let total = b.items.len();
        if total == 0 {
            return Ok(());
        }
        let mut first_err = None;
        let mut at = 0;
        let mut interrupts = 0;
        // A batch of one goes out with a plain send, which costs the kernel less.
        let mut plain_from = (total == 1).then_some(0);
        if plain_from.is_some() {
            at = total;
        }
        // Each pass sends at least one datagram, drops at least one, or is one of at most
        // 8 EINTR retries.
        for _ in 0..(2 * sys::MAX_BATCH + 8) {
            if at >= total {
                break;
            }
            match sys::send_batch(fd, &b.bytes, &b.items[at..]) {
                Ok(0) => {
                    self.send_drops += 1;
                    at += 1;
                }
                Ok(k) => at += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.send_drops += (total - at) as u64;
                    at = total;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupts < 8 => {
                    interrupts += 1;
                }
                Err(e) if is_refused(&e) => {
                    log::debug!("udp {local}: ICMP unreachable reported on send: {e}");
                    self.connection_refused = true;
                    self.send_drops += 1;
                    at += 1;
                }
                Err(e) if is_enosys(&e) => {
                    log::warn!("udp {local}: sendmmsg unavailable ({e}); one syscall per datagram");
                    b.send_enabled = false;
                    plain_from = Some(at);
                    at = total;
                }
                Err(e) => {
                    log::debug!("udp {local}: a batched datagram was refused: {e}");
                    self.send_drops += 1;
                    at += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        self.send_drops += (total - at.min(total)) as u64;
        if let Some(from) = plain_from {
            let bytes = std::mem::take(&mut b.bytes);
            let items = std::mem::take(&mut b.items);
            for item in &items[from..] {
                let sent = match bytes.get(item.start..item.start + item.len) {
                    Some(data) => self.send_plain(data, item.target),
                    None => Ok(false),
                };
                match sent {
                    Ok(true) => {}
                    Ok(false) => self.send_drops += 1,
                    Err(e) => {
                        self.send_drops += 1;
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(b) = self.batch.as_mut() {
                b.bytes = bytes;
                b.items = items;
            }
        }
        if let Some(b) = self.batch.as_mut() {
            b.bytes.clear();
            b.items.clear();
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Transport for UdpTransport {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        _now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        #[cfg(target_os = "linux")]
        if let Some(b) = self.batch.as_mut().filter(|b| b.recv_enabled) {
            let ring_empty = b.ring.as_ref().is_none_or(|r| r.is_empty());
            if ring_empty && std::mem::take(&mut b.skip_recv_syscall) {
                // The kernel just reported the socket empty; ask again next time.
                return Ok(None);
            }
            if !b.recv_burst && ring_empty {
                // Outside a burst one `recvfrom` per datagram is cheaper (no copy, a
                // shorter syscall); a run of datagrams starts a burst.
                let got = self.recv_plain(buf);
                if let Some(b) = self.batch.as_mut() {
                    match got {
                        Ok(Some(_)) => {
                            b.recv_streak = b.recv_streak.saturating_add(1);
                            if b.recv_streak >= BURST_STREAK {
                                b.recv_burst = true;
                                b.recv_streak = 0;
                            }
                        }
                        _ => b.recv_streak = 0,
                    }
                }
                return got;
            }
            match self.recv_batched(buf) {
                Ok(got) => return Ok(got),
                Err(Some(e)) => return Err(e),
                Err(None) => {}
            }
        }
        self.recv_plain(buf)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, _now: Duration) -> io::Result<bool> {
        let target = self.target(to)?;
        #[cfg(target_os = "linux")]
        if self.queue_batched(data, target).is_ok() {
            return Ok(true);
        }
        self.send_plain(data, target)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// Sends the pending batch (batched I/O); otherwise nothing to do.
    fn poll(&mut self, _now: Duration) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            self.flush_batch()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(())
        }
    }

    /// `Some(ZERO)` (due at once) while datagrams wait in the send batch, else `None`.
    fn next_wakeup(&self) -> Option<Duration> {
        #[cfg(target_os = "linux")]
        if self.batch.as_ref().is_some_and(|b| !b.items.is_empty()) {
            return Some(Duration::ZERO);
        }
        None
    }

    /// `true` once after the OS reported an ICMP "port unreachable" (connection
    /// refused/reset) on this socket, then `false` until the next such report.
    fn take_connection_refused(&mut self) -> bool {
        std::mem::take(&mut self.connection_refused)
    }

    /// Batched datagrams that `send_to` accepted but the kernel then did not take.
    fn take_send_drops(&mut self) -> u64 {
        std::mem::take(&mut self.send_drops)
    }

    /// Sends the pending batch, then sleeps in the OS poller (epoll, kqueue, IOCP through
    /// mio) until the socket is readable or `timeout` passed. Returns at once if the last
    /// `recv_from` did not find the socket empty, since datagrams may still be queued (in
    /// the socket or in the receive ring).
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        self.flush_quietly();
        if !self.drained || timeout.is_zero() {
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
        #[cfg(target_os = "linux")]
        self.flush_quietly();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn small_opts() -> SocketOptions {
        SocketOptions {
            dual_mode: true,
            recv_buffer_size: 256 * 1024,
            send_buffer_size: 256 * 1024,
            ..SocketOptions::default()
        }
    }

    /// `send_to` and `poll` (which sends a pending batch), as the drivers do per tick.
    fn send(t: &mut UdpTransport, data: &[u8], to: SocketAddr) -> bool {
        let queued = t.send_to(data, to, Duration::ZERO).unwrap();
        t.poll(Duration::ZERO).unwrap();
        queued
    }

    /// Poll `t` for up to two seconds until a datagram arrives.
    fn recv_wait(t: &mut UdpTransport, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(r) = t.recv_from(buf, Duration::ZERO).unwrap() {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    #[test]
    fn default_options() {
        let o = SocketOptions::default();
        assert!(o.dual_mode);
        assert_eq!(o.recv_buffer_size, 7_340_032);
        assert_eq!(o.send_buffer_size, 7_340_032);
        assert_eq!(o.batch, cfg!(target_os = "linux"));
        assert_eq!(o.dscp, None);
        assert!(!o.reuse_port);
    }

    #[test]
    fn round_trip_v4() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        assert!(a.recv_buffer_size() > 0);
        assert!(a.send_buffer_size() > 0);
        let b_addr = b.local_addr().unwrap();
        let a_addr = a.local_addr().unwrap();
        assert!(send(&mut a, b"ping", b_addr));
        let mut buf = [0u8; 64];
        let (len, from) = recv_wait(&mut b, &mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"ping");
        assert_eq!(from, a_addr);
        assert!(send(&mut b, b"pong", from));
        let (len, from) = recv_wait(&mut a, &mut buf).expect("reply");
        assert_eq!(&buf[..len], b"pong");
        assert_eq!(from, b_addr);
        assert!(!a.take_connection_refused());
    }

    #[test]
    fn connected_socket_reports_port_unreachable() {
        // A port nobody listens on: bind one, note its address, close it.
        let closed = {
            let s = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default())
                .unwrap();
            s.local_addr().unwrap()
        };
        let mut a = UdpTransport::bind_any_for(closed, &SocketOptions::default()).unwrap();
        a.connect(closed).unwrap();
        let mut buf = [0u8; 64];
        let mut refused = false;
        for _ in 0..200 {
            let _ = a.send_to(b"hello?", closed, Duration::ZERO);
            let _ = a.poll(Duration::ZERO);
            let _ = a.recv_from(&mut buf, Duration::ZERO);
            if a.take_connection_refused() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(refused, "ICMP port unreachable was not reported");
    }

    #[test]
    fn truncates_to_buffer() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        send(&mut a, b"0123456789", b.local_addr().unwrap());
        let mut buf = [0u8; 4];
        let (len, _) = recv_wait(&mut b, &mut buf).expect("datagram");
        #[cfg(not(windows))]
        {
            assert_eq!(len, 4);
            assert_eq!(&buf, b"0123");
        }
        let _ = len;
    }

    #[test]
    fn round_trip_v6_loopback() {
        let Ok(mut a) = UdpTransport::bind("[::1]:0".parse().unwrap(), &small_opts()) else {
            eprintln!("IPv6 unavailable; skipping");
            return;
        };
        let mut b = UdpTransport::bind("[::1]:0".parse().unwrap(), &small_opts()).unwrap();
        let b_addr = b.local_addr().unwrap();
        assert!(send(&mut a, b"six", b_addr));
        let mut buf = [0u8; 64];
        let (len, from) = recv_wait(&mut b, &mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"six");
        assert_eq!(from, a.local_addr().unwrap());
        assert!(from.is_ipv6());
    }

    #[test]
    fn dual_mode_reports_v4_source_and_replies() {
        let Ok(mut server) = UdpTransport::bind("[::]:0".parse().unwrap(), &small_opts()) else {
            eprintln!("IPv6 unavailable; skipping");
            return;
        };
        let port = server.local_addr().unwrap().port();
        let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let client_addr = client.local_addr().unwrap();
        let server_v4: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        assert!(send(&mut client, b"hello", server_v4));
        let mut buf = [0u8; 64];
        let (len, from) = recv_wait(&mut server, &mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"hello");
        assert!(from.is_ipv4(), "source {from} should be plain IPv4");
        assert_eq!(from, client_addr);
        assert!(send(&mut server, b"reply", from));
        let (len, from) = recv_wait(&mut client, &mut buf).expect("reply");
        assert_eq!(&buf[..len], b"reply");
        assert_eq!(from, server_v4);
    }

    #[test]
    fn nothing_pending_is_none() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        }
    }

    #[test]
    fn v4_socket_rejects_pure_v6_target() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let err = a
            .send_to(b"x", "[::1]:9".parse().unwrap(), Duration::ZERO)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn mapped_target_from_v4_socket_is_unmapped() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let port = b.local_addr().unwrap().port();
        let mapped = SocketAddr::V6(SocketAddrV6::new(
            Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
            port,
            0,
            0,
        ));
        assert!(send(&mut a, b"m", mapped));
        let mut buf = [0u8; 8];
        let (len, _) = recv_wait(&mut b, &mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"m");
    }

    #[test]
    fn normalise_mapped_addresses() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:99".parse().unwrap();
        assert_eq!(
            normalise(mapped),
            "10.1.2.3:99".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[::1]:99".parse().unwrap();
        assert_eq!(normalise(v6), v6);
        let v4: SocketAddr = "1.2.3.4:5".parse().unwrap();
        assert_eq!(normalise(v4), v4);
    }

    #[test]
    fn bind_any_for_matches_family() {
        let t = UdpTransport::bind_any_for("127.0.0.1:9".parse().unwrap(), &small_opts()).unwrap();
        assert!(t.local_addr().unwrap().is_ipv4());
        assert_ne!(t.local_addr().unwrap().port(), 0);
        if let Ok(t) = UdpTransport::bind_any_for("[::1]:9".parse().unwrap(), &small_opts()) {
            assert!(t.local_addr().unwrap().is_ipv6());
        }
    }

    #[test]
    fn addr_in_use_is_an_error() {
        let a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let err = UdpTransport::bind(a.local_addr().unwrap(), &small_opts()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn register_with_mio_poll() {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(8);
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        b.register(poll.registry(), mio::Token(7)).unwrap();
        send(&mut a, b"wake", b.local_addr().unwrap());
        let mut woke = false;
        for _ in 0..20 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if events
                .iter()
                .any(|e| e.token() == mio::Token(7) && e.is_readable())
            {
                woke = true;
                break;
            }
        }
        assert!(woke);
        let mut buf = [0u8; 8];
        let (len, _) = b.recv_from(&mut buf, Duration::ZERO).unwrap().unwrap();
        assert_eq!(&buf[..len], b"wake");
        b.deregister(poll.registry()).unwrap();
    }

    #[test]
    fn wait_returns_on_a_datagram_and_on_timeout() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut buf = [0u8; 64];
        // Not drained yet: returns at once even with a long timeout.
        let t = Instant::now();
        a.wait(Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(4));
        assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        // Drained, nothing coming: returns after the timeout with nothing to read.
        a.wait(Duration::from_millis(30)).unwrap();
        assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        // A datagram wakes it long before the timeout.
        send(&mut b, b"x", a.local_addr().unwrap());
        let t = Instant::now();
        a.wait(Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(4));
        assert_eq!(recv_wait(&mut a, &mut buf).map(|(n, _)| n), Some(1));
    }

    #[test]
    fn connected_socket_reports_its_source_address() {
        let server = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let remote = server.local_addr().unwrap();
        let mut c = UdpTransport::bind_any_for(remote, &small_opts()).unwrap();
        assert!(c.local_addr().unwrap().ip().is_unspecified());
        c.connect(remote).unwrap();
        let local = c.local_addr().unwrap();
        assert_eq!(
            local.ip(),
            remote.ip(),
            "the loopback source address, not 0.0.0.0"
        );
        assert_ne!(local.port(), 0);
    }

    fn opts(batch: bool) -> SocketOptions {
        SocketOptions {
            batch,
            ..small_opts()
        }
    }

    /// Receive until `count` datagrams arrived (or two seconds passed).
    fn recv_n(t: &mut UdpTransport, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < count && Instant::now() < deadline {
            match t.recv_from(&mut buf, Duration::ZERO).unwrap() {
                Some((len, from)) => got.push((buf[..len].to_vec(), from)),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        got
    }

    /// Datagram `i` of a test stream: its index and a length that varies.
    fn payload(tag: u8, i: usize) -> Vec<u8> {
        let mut d = vec![tag; 1 + (i * 37) % 1200];
        d[0] = i as u8;
        d
    }

    /// 100 datagrams each way between two sockets, every tick's sends followed by a poll.
    fn hundred_both_ways(a_addr: &str, b_addr: &str, batch: bool) -> Option<Vec<Vec<u8>>> {
        let mut a = UdpTransport::bind(a_addr.parse().unwrap(), &opts(batch)).ok()?;
        let mut b = UdpTransport::bind(b_addr.parse().unwrap(), &opts(batch)).unwrap();
        if batch {
            assert_eq!(a.is_batching(), cfg!(target_os = "linux"));
        } else {
            assert!(!a.is_batching());
        }
        let (a_at, b_at) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        for i in 0..100 {
            assert!(a.send_to(&payload(1, i), b_at, Duration::ZERO).unwrap());
        }
        a.poll(Duration::ZERO).unwrap();
        let at_b = recv_n(&mut b, 100);
        for i in 0..100 {
            assert!(b.send_to(&payload(2, i), a_at, Duration::ZERO).unwrap());
        }
        b.poll(Duration::ZERO).unwrap();
        let at_a = recv_n(&mut a, 100);
        let mut log = Vec::new();
        for (side, got, tag, from) in [("b", at_b, 1, a_at), ("a", at_a, 2, b_at)] {
            assert_eq!(got.len(), 100, "{side} received {} of 100", got.len());
            for (i, (data, src)) in got.into_iter().enumerate() {
                assert_eq!(data, payload(tag, i), "datagram {i} at {side}");
                assert_eq!(src, from);
                log.push(data);
            }
        }
        assert_eq!(a.take_send_drops(), 0);
        assert_eq!(b.take_send_drops(), 0);
        #[cfg(target_os = "linux")]
        if batch {
            // The runs of datagrams went through the recvmmsg ring.
            assert!(a.batch.as_ref().is_some_and(|b| b.ring.is_some()));
            assert!(b.batch.as_ref().is_some_and(|b| b.ring.is_some()));
        }
        Some(log)
    }

    #[test]
    fn hundred_datagrams_both_ways_intact_and_in_order_v4() {
        let batched = hundred_both_ways("127.0.0.1:0", "127.0.0.1:0", true).unwrap();
        let plain = hundred_both_ways("127.0.0.1:0", "127.0.0.1:0", false).unwrap();
        assert_eq!(
            batched, plain,
            "the fallback path delivers the same datagrams"
        );
    }

    #[test]
    fn hundred_datagrams_both_ways_v6_and_dual_mode() {
        let Some(v6) = hundred_both_ways("[::1]:0", "[::1]:0", true) else {
            eprintln!("IPv6 unavailable; skipping");
            return;
        };
        assert_eq!(v6, hundred_both_ways("[::1]:0", "[::1]:0", false).unwrap());
        // A dual-mode socket talking to an IPv4 one: mapped on the wire, plain IPv4 here.
        let mut server = UdpTransport::bind("[::]:0".parse().unwrap(), &opts(true)).unwrap();
        let port = server.local_addr().unwrap().port();
        let server_v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        for i in 0..100 {
            client
                .send_to(&payload(3, i), server_v4, Duration::ZERO)
                .unwrap();
        }
        client.poll(Duration::ZERO).unwrap();
        let got = recv_n(&mut server, 100);
        assert_eq!(got.len(), 100);
        let from = got[0].1;
        assert_eq!(from, client.local_addr().unwrap());
        for (i, (data, src)) in got.iter().enumerate() {
            assert_eq!((data, *src), (&payload(3, i), from));
        }
        for i in 0..100 {
            server
                .send_to(&payload(4, i), from, Duration::ZERO)
                .unwrap();
        }
        server.poll(Duration::ZERO).unwrap();
        let back = recv_n(&mut client, 100);
        assert_eq!(back.len(), 100);
        for (i, (data, src)) in back.iter().enumerate() {
            assert_eq!((data, *src), (&payload(4, i), server_v4));
        }
    }

    #[test]
    fn mixed_destinations_in_one_batch() {
        for batch in [true, false] {
            let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap();
            let mut peers: Vec<UdpTransport> = (0..3)
                .map(|_| UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap())
                .collect();
            let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
            // 90 datagrams round-robin over three peers: three sendmmsg calls of 32, 32, 26.
            for i in 0..90 {
                a.send_to(&payload(5, i), addrs[i % 3], Duration::ZERO)
                    .unwrap();
            }
            a.poll(Duration::ZERO).unwrap();
            for (k, peer) in peers.iter_mut().enumerate() {
                let got = recv_n(peer, 30);
                let want: Vec<Vec<u8>> = (0..90)
                    .filter(|i| i % 3 == k)
                    .map(|i| payload(5, i))
                    .collect();
                let data: Vec<Vec<u8>> = got.iter().map(|(d, _)| d.clone()).collect();
                assert_eq!(data, want, "peer {k}, batch {batch}");
                assert!(got.iter().all(|(_, from)| *from == a.local_addr().unwrap()));
            }
        }
    }

    #[test]
    fn large_datagrams_are_not_truncated() {
        for batch in [true, false] {
            let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap();
            let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap();
            let to = b.local_addr().unwrap();
            // Four small ones (the receiver then switches to recvmmsg), then large ones
            // around small ones, up to the largest IPv4 UDP payload (which is sent on its
            // own: it does not fit in a send batch with others).
            let sizes = [10, 20, 30, 40, 40_000, 1200, 65_507, 3, 60_000];
            let datagrams: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| (0..n).map(|j| (j * 7 + k) as u8).collect())
                .collect();
            for d in &datagrams {
                assert!(a.send_to(d, to, Duration::ZERO).unwrap());
            }
            a.poll(Duration::ZERO).unwrap();
            let got = recv_n(&mut b, sizes.len());
            #[cfg(target_os = "linux")]
            assert_eq!(b.batch.as_ref().is_some_and(|b| b.ring.is_some()), batch);
            let data: Vec<Vec<u8>> = got.into_iter().map(|(d, _)| d).collect();
            assert_eq!(data.len(), sizes.len(), "batch {batch}");
            for (got, want) in data.iter().zip(&datagrams) {
                assert_eq!(got.len(), want.len(), "batch {batch}");
                assert!(got == want, "batch {batch}: {} bytes differ", want.len());
            }
        }
    }

    #[test]
    fn batch_waits_for_poll_wait_or_drop() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let to = b.local_addr().unwrap();
        let mut buf = [0u8; 16];
        assert!(a.send_to(b"one", to, Duration::ZERO).unwrap());
        if a.is_batching() {
            // Queued, not sent: nothing can arrive, and the transport says poll is due.
            assert_eq!(a.next_wakeup(), Some(Duration::ZERO));
            assert!(b.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        }
        a.poll(Duration::ZERO).unwrap();
        assert_eq!(a.next_wakeup(), None);
        assert_eq!(recv_n(&mut b, 1)[0].0, b"one");
        // wait() sends the batch before it would sleep (a zero timeout does not sleep).
        assert!(a.send_to(b"two", to, Duration::ZERO).unwrap());
        a.wait(Duration::ZERO).unwrap();
        assert_eq!(recv_n(&mut b, 1)[0].0, b"two");
        // Dropping the transport sends what is left.
        assert!(a.send_to(b"three", to, Duration::ZERO).unwrap());
        drop(a);
        assert_eq!(recv_n(&mut b, 1)[0].0, b"three");
    }

    #[test]
    fn a_full_batch_goes_out_without_poll() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let to = b.local_addr().unwrap();
        for i in 0..32 {
            a.send_to(&payload(6, i), to, Duration::ZERO).unwrap();
        }
        // No poll: the 32nd datagram filled the batch, which was sent then.
        let got = recv_n(&mut b, 32);
        assert_eq!(got.len(), 32);
        assert_eq!(a.next_wakeup(), None);
    }

    #[test]
    fn refused_batch_is_counted_and_flagged() {
        let closed = {
            let s = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
            s.local_addr().unwrap()
        };
        let mut a = UdpTransport::bind_any_for(closed, &opts(true)).unwrap();
        a.connect(closed).unwrap();
        let mut refused = false;
        let mut dropped = 0;
        for _ in 0..200 {
            a.send_to(b"anyone?", closed, Duration::ZERO).unwrap();
            a.send_to(b"anyone?", closed, Duration::ZERO).unwrap();
            a.poll(Duration::ZERO).unwrap();
            dropped += a.take_send_drops();
            refused |= a.take_connection_refused();
            if refused && dropped > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(refused, "ICMP port unreachable was not reported on send");
        if a.is_batching() {
            assert!(dropped > 0, "the refused datagram was not counted");
        } else {
            assert_eq!(dropped, 0, "the plain path reports drops through send_to");
        }
    }

    #[test]
    fn dscp_is_set_and_read_back() {
        use socket2::SockRef;
        let opts = SocketOptions {
            dscp: Some(46),
            ..small_opts()
        };
        let v4 = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        assert_eq!(SockRef::from(v4.socket()).tos().unwrap(), 46 << 2);
        #[cfg(target_os = "linux")]
        if let Ok(v6) = UdpTransport::bind("[::1]:0".parse().unwrap(), &opts) {
            assert_eq!(SockRef::from(v6.socket()).tclass_v6().unwrap(), 46 << 2);
            assert_eq!(
                SockRef::from(v6.socket()).tos().unwrap(),
                46 << 2,
                "dual mode: IP_TOS too"
            );
        }
        let plain = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        assert_eq!(SockRef::from(plain.socket()).tos().unwrap(), 0);
        let bad = SocketOptions {
            dscp: Some(64),
            ..small_opts()
        };
        let err = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reuse_port_shards_by_client() {
        let reuse = SocketOptions {
            reuse_port: true,
            ..small_opts()
        };
        let mut shards = vec![UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &reuse).unwrap()];
        let addr = shards[0].local_addr().unwrap();
        shards.push(UdpTransport::bind(addr, &reuse).unwrap());
        // Without the option the port is taken.
        let err = UdpTransport::bind(addr, &small_opts()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        let mut clients: Vec<UdpTransport> = (0..8)
            .map(|_| UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap())
            .collect();
        for round in 0..20 {
            for c in clients.iter_mut() {
                c.send_to(&[round], addr, Duration::ZERO).unwrap();
                c.poll(Duration::ZERO).unwrap();
            }
        }
        // Who received what: (shard, client address) -> count.
        let mut seen = std::collections::HashMap::new();
        let mut buf = [0u8; 8];
        let deadline = Instant::now() + Duration::from_secs(2);
        while seen.values().sum::<usize>() < 160 && Instant::now() < deadline {
            let mut idle = true;
            for (k, s) in shards.iter_mut().enumerate() {
                while let Some((_, from)) = s.recv_from(&mut buf, Duration::ZERO).unwrap() {
                    *seen.entry((k, from)).or_insert(0usize) += 1;
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(seen.values().sum::<usize>(), 160);
        for c in &clients {
            let from = c.local_addr().unwrap();
            let counts: Vec<usize> = (0..2)
                .map(|k| seen.get(&(k, from)).copied().unwrap_or(0))
                .collect();
            assert!(
                counts == [20, 0] || counts == [0, 20],
                "client {from} was split over the shards: {counts:?}"
            );
        }
    }
}
