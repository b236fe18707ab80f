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
    /// UDP generic segmentation offload for sends (Linux 4.18+; needs
    /// [`batch`](SocketOptions::batch)): a run of queued datagrams to one destination that
    /// all have the same length (the last may be shorter) leaves as one message with a
    /// `UDP_SEGMENT` control message, which the kernel (or the NIC) cuts back into the same
    /// datagrams, so up to 64 datagrams make one trip through the network stack. The send
    /// batch then holds up to 32 messages (at most 256 datagrams and 256 KiB) instead of 32
    /// datagrams. Used only if the kernel knows `UDP_SEGMENT` at bind, and turned off for the
    /// transport by itself if the kernel refuses a GSO message (the run is then resent
    /// datagram by datagram; nothing is lost or sent twice). See [`UdpTransport`]. Ignored
    /// without `batch` and on other systems. Default `true` on Linux, `false` elsewhere.
    pub gso: bool,
    /// UDP generic receive offload (Linux 5.0+; needs [`batch`](SocketOptions::batch)):
    /// sets `UDP_GRO` on the socket, so the kernel may hand over several datagrams of one
    /// sender as one buffer (loopback does so for GSO sends, network cards for bursts of one
    /// flow). `recv_from` splits such a buffer and returns its datagrams one per call, each
    /// with the buffer's source, exactly as if they had arrived one by one. Without `batch`
    /// the option is not set (the unbatched receive path reads plain datagrams). Ignored on
    /// other systems. Default `true` on Linux, `false` elsewhere.
    pub gro: bool,
}

impl SocketOptions {
    /// The default buffer size requested for both directions: 7 MiB.
    pub const DEFAULT_BUFFER_SIZE: usize = 7 * 1024 * 1024;

    /// The largest DSCP codepoint (six bits).
    pub const MAX_DSCP: u8 = 63;

    /// Whether batched I/O is available on this system (Linux), i.e. the default of
    /// [`batch`](SocketOptions::batch).
    pub const BATCH_SUPPORTED: bool = cfg!(target_os = "linux");

    /// Whether UDP segmentation and receive offload can be asked for on this system
    /// (Linux), i.e. the default of [`gso`](SocketOptions::gso) and
    /// [`gro`](SocketOptions::gro). The kernel may still lack them (checked at bind).
    pub const OFFLOAD_SUPPORTED: bool = cfg!(target_os = "linux");
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
            gso: Self::OFFLOAD_SUPPORTED,
            gro: Self::OFFLOAD_SUPPORTED,
        }
    }
}

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
///   twice, and [`Transport::take_send_drops`] still counts every datagram the kernel did
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
    /// GSO is in use: asked for, known to the kernel at bind, never refused since.
    gso: bool,
    /// Largest segment size a run may have (lowered when the kernel answers `EMSGSIZE`
    /// for a run: the route's MTU is smaller).
    gso_max_seg: usize,
    /// `UDP_GRO` is set on the socket.
    gro: bool,
    /// The pending datagrams, back to back.
    bytes: Vec<u8>,
    items: Vec<sys::SendItem>,
    /// The pending messages: runs of consecutive items (one item each without GSO).
    msgs: Vec<sys::SendMsg>,
    /// `RecvRing::truncated` already logged.
    truncated_logged: u64,
    stats: OffloadStats,
    /// Test support: make this many GSO messages fail as if the kernel answered `EIO`.
    #[cfg(test)]
    fail_gso: u32,
}

#[cfg(target_os = "linux")]
impl Batch {
    fn new(gso: bool, gro: bool) -> Batch {
        Batch {
            ring: None,
            recv_enabled: true,
            skip_recv_syscall: false,
            recv_burst: false,
            recv_streak: 0,
            send_enabled: true,
            gso,
            gso_max_seg: sys::GSO_MAX_BYTES,
            gro,
            bytes: Vec::new(),
            items: Vec::new(),
            msgs: Vec::new(),
            truncated_logged: 0,
            stats: OffloadStats::default(),
            #[cfg(test)]
            fail_gso: 0,
        }
    }

    /// Most datagrams and bytes the send batch holds.
    fn limits(&self) -> (usize, usize) {
        if self.gso {
            (GSO_QUEUE_DATAGRAMS, GSO_QUEUE_BYTES)
        } else {
            (sys::MAX_BATCH, SEND_BATCH_BYTES)
        }
    }

    /// Whether a datagram of `len` bytes to `target` extends the last pending run: GSO
    /// is on, same destination, the run is not full and not ended by a shorter datagram,
    /// and the datagram is not empty and not longer than the run's segments.
    fn joins_last_run(&self, len: usize, target: SocketAddr) -> bool {
        let Some(m) = self.msgs.last().filter(|_| self.gso) else {
            return false;
        };
        let (Some(head), Some(last)) = (self.items.get(m.first), self.items.last()) else {
            return false;
        };
        len > 0
            && len <= m.seg
            && last.len == m.seg
            && m.seg <= self.gso_max_seg
            && m.count < sys::GSO_MAX_SEGMENTS
            && m.bytes + len <= sys::GSO_MAX_BYTES
            && head.target == target
    }

    /// Datagrams in the pending messages from `m` on.
    fn datagrams_from(&self, m: usize) -> usize {
        self.msgs
            .get(m)
            .map_or(0, |msg| self.items.len() - msg.first)
    }

    /// Replace every run from message `m` on that `keep` rejects by one message per
    /// datagram.
    fn split_runs_from(&mut self, m: usize, keep: impl Fn(&sys::SendMsg) -> bool) {
        let rest = self.msgs.split_off(m.min(self.msgs.len()));
        for msg in rest {
            if msg.count == 1 || keep(&msg) {
                self.msgs.push(msg);
            } else {
                for i in msg.first..msg.first + msg.count {
                    let len = self.items.get(i).map_or(0, |it| it.len);
                    self.msgs.push(sys::SendMsg::single(i, len));
                }
            }
        }
    }
}

/// With GSO: most datagrams queued in a send batch.
#[cfg(target_os = "linux")]
const GSO_QUEUE_DATAGRAMS: usize = 256;

/// With GSO: most bytes queued in a send batch (four full runs).
#[cfg(target_os = "linux")]
const GSO_QUEUE_BYTES: usize = 262_144;

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
        #[cfg(target_os = "linux")]
        let batch = opts
            .batch
            .then(|| Box::new(Self::offload_setup(&socket, addr, opts)));
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
            batch,
        })
    }

    /// The batching state of a new socket, with GSO if asked for and known to the kernel
    /// and GRO if asked for and accepted by it.
    #[cfg(target_os = "linux")]
    fn offload_setup(socket: &Socket, addr: SocketAddr, opts: &SocketOptions) -> Batch {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let gso = opts.gso && sys::gso_supported(fd);
        if opts.gso && !gso {
            log::info!("udp {addr}: the kernel has no UDP_SEGMENT; sending without GSO");
        }
        let gro = opts.gro
            && match sys::set_gro(fd, true) {
                Ok(()) => true,
                Err(e) => {
                    log::info!("udp {addr}: could not set UDP_GRO ({e}); receiving without GRO");
                    false
                }
            };
        Batch::new(gso, gro)
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

    /// Whether sends use UDP GSO: [`SocketOptions::gso`] and
    /// [`batch`](SocketOptions::batch) were set, the system is Linux, the kernel knows
    /// `UDP_SEGMENT`, and it has not refused a GSO message since.
    pub fn is_gso(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.batch.as_ref().is_some_and(|b| b.gso && b.send_enabled)
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Whether `UDP_GRO` is set on the socket: [`SocketOptions::gro`] and
    /// [`batch`](SocketOptions::batch) were set, the system is Linux and the kernel took the
    /// option.
    pub fn is_gro(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.batch.as_ref().is_some_and(|b| b.gro)
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// GSO messages sent and GRO buffers received so far (all zero without offload).
    pub fn offload_stats(&self) -> OffloadStats {
        #[cfg(target_os = "linux")]
        if let Some(b) = self.batch.as_ref() {
            return b.stats;
        }
        OffloadStats::default()
    }

    /// One datagram without `recvmmsg` (no GRO off Linux).
    #[cfg(not(target_os = "linux"))]
    fn recv_single(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        self.recv_plain(buf)
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

/// The errors with which a kernel refuses GSO itself rather than one message: no checksum
/// offload on the route (`EIO`), a socket or kernel that cannot segment (`EINVAL`,
/// `ENOPROTOOPT`).
#[cfg(target_os = "linux")]
fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT)
    )
}

#[cfg(target_os = "linux")]
impl UdpTransport {
    /// One datagram without `recvmmsg`: `recvfrom`, or on a GRO socket `recvmsg` (which
    /// reads the `UDP_GRO` control message) into a caller's buffer of at least 64 KiB, or the
    /// ring for a shorter one (a coalesced buffer could not be split once cut short).
    fn recv_single(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        if let Some(b) = self.batch.as_ref().filter(|b| b.gro) {
            if buf.len() >= sys::SLOT_LEN {
                return self.recv_gro_msg(buf);
            }
            if b.recv_enabled {
                match self.recv_batched(buf) {
                    Ok(got) => return Ok(got),
                    Err(Some(e)) => return Err(e),
                    Err(None) => {}
                }
            }
        }
        self.recv_plain(buf)
    }

    /// One `recvmsg` on a GRO socket into `buf` (at least [`sys::SLOT_LEN`] bytes). A
    /// coalesced buffer's first datagram is returned; the others go to the ring, which
    /// `recv_from` serves next.
    fn recv_gro_msg(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        use std::os::fd::AsRawFd;
        let fd = self.socket.as_raw_fd();
        for _ in 0..MAX_SKIPPED_ERRORS {
            match sys::recv_msg(fd, buf) {
                Ok(got) => {
                    self.drained = false;
                    // A source that is neither IPv4 nor IPv6 cannot be answered: skip it.
                    let Some(from) = got.from else { continue };
                    if got.seg > 0 && got.seg < got.len {
                        if let Some(b) = self.batch.as_mut() {
                            let ring = b.ring.get_or_insert_with(|| Box::new(sys::RecvRing::new()));
                            ring.stash(&buf[got.seg..got.len], got.seg, from);
                            let (buffers, datagrams) = ring.take_coalesced();
                            b.stats.gro_buffers += buffers;
                            b.stats.gro_datagrams += datagrams;
                        }
                        return Ok(Some((got.seg, normalise(from))));
                    }
                    return Ok(Some((got.len, normalise(from))));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_refused(&e) => {
                    log::debug!("udp {}: ignoring ICMP unreachable on recv: {e}", self.local);
                    self.connection_refused = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

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
            match ring.recv(fd, b.gro) {
                Ok(n) => {
                    let (buffers, datagrams) = ring.take_coalesced();
                    b.stats.gro_buffers += buffers;
                    b.stats.gro_datagrams += datagrams;
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
                    if b.gro {
                        // The plain path cannot split coalesced buffers: stop asking for them.
                        match sys::set_gro(fd, false) {
                            Ok(()) => b.gro = false,
                            Err(e) => {
                                log::warn!("udp {}: could not clear UDP_GRO: {e}", self.local)
                            }
                        }
                    }
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
        let (max_items, max_bytes) = b.limits();
        let new_msg = !b.joins_last_run(data.len(), target);
        if b.items.len() >= max_items
            || b.bytes.len() + data.len() > max_bytes
            || (new_msg && b.msgs.len() >= sys::MAX_BATCH)
        {
            self.flush_quietly();
        }
        let peer = self.peer;
        let Some(b) = self.batch.as_mut().filter(|b| b.send_enabled) else {
            return Err(()); // the flush found no sendmmsg
        };
        if b.bytes.capacity() == 0 {
            b.bytes.reserve_exact(SEND_BATCH_BYTES);
            b.items.reserve_exact(sys::MAX_BATCH);
            b.msgs.reserve_exact(sys::MAX_BATCH);
        }
        // After a flush the run is gone (and GSO may have been turned off): ask again.
        let joins = b.joins_last_run(data.len(), target);
        let to = (peer != Some(target)).then(|| SockAddr::from(target));
        b.items.push(sys::SendItem {
            start: b.bytes.len(),
            len: data.len(),
            to,
            target,
        });
        b.bytes.extend_from_slice(data);
        match b.msgs.last_mut().filter(|_| joins) {
            Some(run) => {
                run.count += 1;
                run.bytes += data.len();
            }
            None => b
                .msgs
                .push(sys::SendMsg::single(b.items.len() - 1, data.len())),
        }
        if b.items.len() >= b.limits().0 {
            self.flush_quietly();
        }
        Ok(())
    }

    fn flush_quietly(&mut self) {
        if let Err(e) = self.flush_batch() {
            log::debug!("udp {}: batched send: {e}", self.local);
        }
    }

    /// One `sendmmsg` of the pending messages from `m` on.
    fn send_msgs(fd: std::os::fd::RawFd, b: &mut Batch, m: usize) -> io::Result<usize> {
        let msgs = &b.msgs[m..];
        #[cfg(test)]
        if b.fail_gso > 0 {
            // Behave like a kernel that refuses GSO: the messages before the first run go
            // out, the run fails with EIO.
            if let Some(g) = msgs
                .iter()
                .take(sys::MAX_BATCH)
                .position(|msg| msg.count > 1)
            {
                if g == 0 {
                    b.fail_gso -= 1;
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                return sys::send_batch(fd, &b.bytes, &b.items, &msgs[..g]);
            }
        }
        sys::send_batch(fd, &b.bytes, &b.items, msgs)
    }

    /// Send the pending batch. Datagrams the kernel does not take are counted in
    /// `send_drops` (every datagram of a dropped run); the first error other than a full
    /// buffer or an ICMP refusal is returned after the whole batch was attempted. A run
    /// the kernel refuses as GSO is resent datagram by datagram.
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
        let mut m = 0;
        let mut interrupts = 0;
        // A refused GSO message may have left its error pending on the socket.
        let mut clear_socket_error = false;
        // A batch of one goes out with a plain send, which costs the kernel less.
        let mut plain_from = (total == 1).then_some(0);
        if plain_from.is_some() {
            m = b.msgs.len();
        }
        // Each pass sends at least one message, drops at least one, splits at least one
        // run into single datagrams (there are fewer runs than datagrams), or is one of at
        // most 8 EINTR retries.
        for _ in 0..(2 * total + 8) {
            let Some(&msg) = b.msgs.get(m) else { break };
            match Self::send_msgs(fd, b, m) {
                Ok(0) => {
                    self.send_drops += msg.count as u64;
                    m += 1;
                }
                Ok(k) => {
                    for sent in &b.msgs[m..m + k] {
                        if sent.count > 1 {
                            b.stats.gso_messages += 1;
                            b.stats.gso_datagrams += sent.count as u64;
                        }
                    }
                    m += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.send_drops += b.datagrams_from(m) as u64;
                    m = b.msgs.len();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupts < 8 => {
                    interrupts += 1;
                }
                Err(e) if is_refused(&e) => {
                    log::debug!("udp {local}: ICMP unreachable reported on send: {e}");
                    self.connection_refused = true;
                    self.send_drops += msg.count as u64;
                    m += 1;
                }
                Err(e) if is_enosys(&e) => {
                    log::warn!("udp {local}: sendmmsg unavailable ({e}); one syscall per datagram");
                    b.send_enabled = false;
                    plain_from = Some(msg.first);
                    m = b.msgs.len();
                }
                Err(e) if msg.count > 1 && is_gso_refusal(&e) => {
                    log::warn!(
                        "udp {local}: the kernel refused a GSO message ({e}); sending without GSO"
                    );
                    b.gso = false;
                    b.stats.gso_fallbacks += 1;
                    b.split_runs_from(m, |_| false);
                    clear_socket_error = true;
                }
                Err(e) if msg.count > 1 && e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    log::debug!(
                        "udp {local}: {}-byte GSO segments exceed the route's MTU ({e}); \
                         sending them one by one",
                        msg.seg
                    );
                    b.gso_max_seg = b.gso_max_seg.min(msg.seg - 1);
                    b.stats.gso_fallbacks += 1;
                    let limit = b.gso_max_seg;
                    b.split_runs_from(m, |run| run.seg <= limit);
                    clear_socket_error = true;
                }
                Err(e) => {
                    log::debug!("udp {local}: a batched datagram was refused: {e}");
                    self.send_drops += msg.count as u64;
                    m += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        self.send_drops += b.datagrams_from(m) as u64;
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
            b.msgs.clear();
        }
        if clear_socket_error {
            // `sendmmsg` records the error of a message that failed after others were sent
            // on the socket (`SO_ERROR`), where the next receive would report it: take it
            // here. An ICMP refusal is kept as the flag, as a receive would have.
            if let Ok(Some(e)) = self.socket.take_error() {
                if is_refused(&e) {
                    self.connection_refused = true;
                } else {
                    log::debug!("udp {local}: cleared a pending socket error: {e}");
                }
            }
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
        if let Some(b) = self.batch.as_mut() {
            // What the ring still holds comes first: the rest of a `recvmmsg` batch, or of
            // a coalesced buffer whose first datagram was returned directly.
            if let Some((data, from)) = b.ring.as_mut().and_then(|r| r.pop()) {
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                self.drained = false;
                return Ok(Some((len, normalise(from))));
            }
            if b.recv_enabled {
                if std::mem::take(&mut b.skip_recv_syscall) {
                    // The kernel just reported the socket empty; ask again next time.
                    return Ok(None);
                }
                if !b.recv_burst {
                    // Outside a burst one `recvfrom` per datagram is cheaper (no copy, a
                    // shorter syscall); a run of datagrams starts a burst.
                    let got = self.recv_single(buf);
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
        }
        self.recv_single(buf)
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
        assert_eq!(o.gso, cfg!(target_os = "linux"));
        assert_eq!(o.gro, cfg!(target_os = "linux"));
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

    /// Batched, with GSO and GRO as given.
    fn gso_opts(gso: bool, gro: bool) -> SocketOptions {
        SocketOptions {
            gso,
            gro,
            ..opts(true)
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
        // Without GSO the 32nd datagram fills the batch, which is sent then.
        let mut a =
            UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &gso_opts(false, false)).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let to = b.local_addr().unwrap();
        for i in 0..32 {
            a.send_to(&payload(6, i), to, Duration::ZERO).unwrap();
        }
        // No poll: the 32nd datagram filled the batch, which was sent then.
        let got = recv_n(&mut b, 32);
        assert_eq!(got.len(), 32);
        assert_eq!(a.next_wakeup(), None);
        // With GSO a run is one entry: 32 entries go out when a 33rd does not fit, and a
        // batch of one run when it holds 256 datagrams.
        #[cfg(target_os = "linux")]
        {
            let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
            if !a.is_gso() {
                eprintln!("no GSO; skipping the GSO half");
                return;
            }
            for i in 0..33 {
                // Ever longer: no datagram joins the one before.
                a.send_to(&payload(6, i), to, Duration::ZERO).unwrap();
            }
            assert_eq!(recv_n(&mut b, 32).len(), 32);
            assert_eq!(a.next_wakeup(), Some(Duration::ZERO), "the 33rd waits");
            a.poll(Duration::ZERO).unwrap();
            assert_eq!(recv_n(&mut b, 1)[0].0, payload(6, 32));
            for i in 0..GSO_QUEUE_DATAGRAMS {
                a.send_to(&[i as u8; 100], to, Duration::ZERO).unwrap();
            }
            assert_eq!(a.next_wakeup(), None);
            let got = recv_n(&mut b, GSO_QUEUE_DATAGRAMS);
            assert_eq!(got.len(), GSO_QUEUE_DATAGRAMS);
            for (i, (d, _)) in got.iter().enumerate() {
                assert_eq!(d, &[i as u8; 100]);
            }
            assert_eq!(a.take_send_drops(), 0);
        }
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

    /// The datagram counts of the pending send messages (a run of several is one GSO
    /// message).
    #[cfg(target_os = "linux")]
    fn pending_runs(t: &UdpTransport) -> Vec<usize> {
        t.batch
            .as_ref()
            .map(|b| b.msgs.iter().map(|m| m.count).collect())
            .unwrap_or_default()
    }

    /// `n` bytes, distinct per `(tag, i)`.
    #[cfg(target_os = "linux")]
    fn filled(tag: u8, i: usize, n: usize) -> Vec<u8> {
        (0..n)
            .map(|j| (j as u8).wrapping_mul(31) ^ tag ^ (i as u8).wrapping_mul(7))
            .collect()
    }

    /// Receive with a std socket until `count` datagrams arrived or two seconds passed.
    #[cfg(target_os = "linux")]
    fn std_recv_n(rx: &std::net::UdpSocket, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < count && Instant::now() < deadline {
            if let Ok((n, from)) = rx.recv_from(&mut buf) {
                got.push((buf[..n].to_vec(), from));
            }
        }
        got
    }

    /// Nothing more arrives at `t` within 50 ms (no duplicate).
    #[cfg(target_os = "linux")]
    fn nothing_more(t: &mut UdpTransport) {
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_millis(50);
        while Instant::now() < deadline {
            if let Some((len, from)) = t.recv_from(&mut buf, Duration::ZERO).unwrap() {
                panic!("an extra {len}-byte datagram from {from}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn gso_run_to_one_peer_arrives_intact_and_in_order() {
        for (a_addr, b_addr) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let Ok(mut a) = UdpTransport::bind(a_addr.parse().unwrap(), &opts(true)) else {
                eprintln!("{a_addr} unavailable; skipping");
                continue;
            };
            if !a.is_gso() {
                eprintln!("no GSO; skipping");
                return;
            }
            // 40 datagrams of 1000 bytes and a short last one: one run.
            let want: Vec<Vec<u8>> = (0..41)
                .map(|i| filled(1, i, if i == 40 { 300 } else { 1000 }))
                .collect();
            // To a plain std socket.
            let plain = std::net::UdpSocket::bind(b_addr).unwrap();
            let to = plain.local_addr().unwrap();
            for d in &want {
                assert!(a.send_to(d, to, Duration::ZERO).unwrap());
            }
            assert_eq!(pending_runs(&a), [41]);
            a.poll(Duration::ZERO).unwrap();
            let got = std_recv_n(&plain, want.len());
            assert_eq!(got.len(), want.len());
            for (i, (d, from)) in got.iter().enumerate() {
                assert_eq!(d, &want[i], "datagram {i}");
                assert_eq!(*from, a.local_addr().unwrap());
            }
            // To a GRO transport: the same datagrams, one per recv_from.
            let mut b = UdpTransport::bind(b_addr.parse().unwrap(), &opts(true)).unwrap();
            assert!(b.is_gro());
            let to = b.local_addr().unwrap();
            for d in &want {
                assert!(a.send_to(d, to, Duration::ZERO).unwrap());
            }
            a.poll(Duration::ZERO).unwrap();
            let got = recv_n(&mut b, want.len());
            assert_eq!(got.len(), want.len());
            for (i, (d, from)) in got.iter().enumerate() {
                assert_eq!(d, &want[i], "datagram {i}");
                assert_eq!(*from, a.local_addr().unwrap());
            }
            nothing_more(&mut b);
            let sent = a.offload_stats();
            assert_eq!((sent.gso_messages, sent.gso_datagrams), (2, 82));
            assert_eq!(sent.gso_fallbacks, 0);
            let rcvd = b.offload_stats();
            assert!(rcvd.gro_buffers >= 1, "loopback coalesces for a GRO socket");
            assert!(rcvd.gro_datagrams <= 41);
            assert_eq!(a.take_send_drops(), 0);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn gso_mixed_destinations_and_lengths_in_one_flush() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !a.is_gso() {
            eprintln!("no GSO; skipping");
            return;
        }
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut gro = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let mut no_gro =
            UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &gso_opts(true, false)).unwrap();
        let p: [SocketAddr; 3] = [
            plain.local_addr().unwrap(),
            gro.local_addr().unwrap(),
            no_gro.local_addr().unwrap(),
        ];
        // (peer, length) in send order, and the runs they form.
        let mut plan: Vec<(usize, usize)> = Vec::new();
        plan.extend([(0, 500); 5]); // run of 5
        plan.extend([(1, 800), (1, 800), (1, 800), (1, 100)]); // run of 4, short last
        plan.push((0, 500)); // same peer as before, but not consecutive: alone
        plan.extend([(2, 700); 2]); // run of 2
        plan.extend([(1, 10), (1, 20), (1, 30)]); // ever longer: three alone
        plan.extend([(1, 600), (1, 600), (1, 600), (1, 600), (1, 700)]); // 4, then 1
        plan.extend([(0, 0), (0, 0)]); // empty datagrams: alone
        plan.extend([(2, 50), (2, 50), (2, 20), (2, 20)]); // 3 (short last), then 1
        let mut want: [Vec<Vec<u8>>; 3] = Default::default();
        for (i, &(peer, len)) in plan.iter().enumerate() {
            let d = filled(2, i, len);
            assert!(a.send_to(&d, p[peer], Duration::ZERO).unwrap());
            want[peer].push(d);
        }
        let runs = pending_runs(&a);
        assert_eq!(runs, [5, 4, 1, 2, 1, 1, 1, 4, 1, 1, 1, 3, 1]);
        // Fewer entries than a sendmmsg takes: the whole flush is one syscall.
        assert!(runs.len() <= sys::MAX_BATCH);
        a.poll(Duration::ZERO).unwrap();
        let at_plain: Vec<Vec<u8>> = std_recv_n(&plain, want[0].len())
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(at_plain, want[0]);
        for (k, t) in [(1, &mut gro), (2, &mut no_gro)] {
            let got = recv_n(t, want[k].len());
            assert!(got.iter().all(|(_, from)| *from == a.local_addr().unwrap()));
            let data: Vec<Vec<u8>> = got.into_iter().map(|(d, _)| d).collect();
            assert_eq!(data, want[k], "peer {k}");
            nothing_more(t);
        }
        let stats = a.offload_stats();
        assert_eq!(stats.gso_messages, 5);
        assert_eq!(stats.gso_datagrams, 5 + 4 + 2 + 4 + 3);
        assert_eq!(a.take_send_drops(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn gso_runs_longer_than_64_datagrams_are_cut() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !a.is_gso() {
            eprintln!("no GSO; skipping");
            return;
        }
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let to = b.local_addr().unwrap();
        // 200 datagrams of 500 bytes: cut at 64 segments. Then 100 of 1200 bytes: cut at
        // 54 (55 would exceed 65,507 bytes).
        for (count, len, runs) in [(200, 500, &[64, 64, 64, 8][..]), (100, 1200, &[54, 46])] {
            let want: Vec<Vec<u8>> = (0..count).map(|i| filled(3, i, len)).collect();
            for d in &want {
                assert!(a.send_to(d, to, Duration::ZERO).unwrap());
            }
            assert_eq!(pending_runs(&a), runs);
            a.poll(Duration::ZERO).unwrap();
            let got = recv_n(&mut b, count);
            assert_eq!(got.len(), count, "{count} × {len}");
            for (i, (d, _)) in got.iter().enumerate() {
                assert_eq!(d, &want[i], "datagram {i} of {count} × {len}");
            }
        }
        nothing_more(&mut b);
        assert_eq!(a.offload_stats().gso_messages, 6);
        assert_eq!(a.offload_stats().gso_datagrams, 300);
        assert_eq!(a.take_send_drops(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn forced_gso_failure_falls_back_without_loss_or_duplicates() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !a.is_gso() {
            eprintln!("no GSO; skipping");
            return;
        }
        let mut p = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let mut q = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let (pa, qa) = (p.local_addr().unwrap(), q.local_addr().unwrap());
        // Singles first (sent before the run fails), then runs to both peers, then more.
        let plan = [
            (pa, 10, 1),
            (qa, 20, 1),
            (pa, 30, 1),
            (pa, 700, 10),
            (qa, 300, 5),
        ];
        let mut want: [Vec<Vec<u8>>; 2] = Default::default();
        let mut i = 0;
        for &(to, len, n) in &plan {
            for _ in 0..n {
                let d = filled(4, i, len);
                i += 1;
                a.send_to(&d, to, Duration::ZERO).unwrap();
                want[usize::from(to == qa)].push(d);
            }
        }
        a.send_to(b"last", pa, Duration::ZERO).unwrap();
        want[0].push(b"last".to_vec());
        assert_eq!(pending_runs(&a), [1, 1, 1, 10, 5, 1]);
        a.batch.as_mut().unwrap().fail_gso = 1;
        a.poll(Duration::ZERO).unwrap();
        assert!(!a.is_gso(), "the refusal turns GSO off");
        assert!(a.is_batching(), "batching stays on");
        let stats = a.offload_stats();
        assert_eq!((stats.gso_messages, stats.gso_fallbacks), (0, 1));
        assert_eq!(a.take_send_drops(), 0);
        for (k, t) in [(0, &mut p), (1, &mut q)] {
            let data: Vec<Vec<u8>> = recv_n(t, want[k].len())
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            assert_eq!(data, want[k], "peer {k}");
            nothing_more(t);
        }
        // From now on no runs form.
        for _ in 0..3 {
            a.send_to(&[9; 100], pa, Duration::ZERO).unwrap();
        }
        assert_eq!(pending_runs(&a), [1, 1, 1]);
        a.poll(Duration::ZERO).unwrap();
        assert_eq!(recv_n(&mut p, 3).len(), 3);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_gso_refusal_falls_back_and_leaves_no_socket_error() {
        use std::os::fd::AsRawFd;
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !a.is_gso() {
            eprintln!("no GSO; skipping");
            return;
        }
        // Without UDP checksums the kernel refuses GSO with EINVAL.
        sys::set_no_check(a.socket.as_raw_fd()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        let to = b.local_addr().unwrap();
        // A single datagram first: sendmmsg sends it, fails on the run and records the
        // error on the socket, where a receive would find it.
        let mut want = vec![filled(5, 0, 40)];
        want.extend((1..9).map(|i| filled(5, i, 900)));
        for d in &want {
            a.send_to(d, to, Duration::ZERO).unwrap();
        }
        assert_eq!(pending_runs(&a), [1, 8]);
        a.poll(Duration::ZERO).unwrap();
        assert!(!a.is_gso());
        assert_eq!(a.offload_stats().gso_fallbacks, 1);
        assert_eq!(a.take_send_drops(), 0);
        let data: Vec<Vec<u8>> = recv_n(&mut b, want.len())
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(data, want);
        nothing_more(&mut b);
        // No EINVAL left for the next receive.
        let mut buf = [0u8; 64];
        assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        assert!(a.socket.take_error().unwrap().is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn refused_gso_run_counts_every_datagram() {
        let closed = {
            let s = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
            s.local_addr().unwrap()
        };
        let mut a = UdpTransport::bind_any_for(closed, &opts(true)).unwrap();
        if !a.is_gso() {
            eprintln!("no GSO; skipping");
            return;
        }
        a.connect(closed).unwrap();
        let (mut refused, mut dropped) = (false, 0);
        for _ in 0..200 {
            for _ in 0..3 {
                a.send_to(b"anyone?", closed, Duration::ZERO).unwrap();
            }
            assert_eq!(pending_runs(&a), [3]);
            a.poll(Duration::ZERO).unwrap();
            dropped += a.take_send_drops();
            refused |= a.take_connection_refused();
            if refused && dropped > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(refused, "ICMP port unreachable was not reported on send");
        assert!(dropped > 0);
        assert_eq!(
            dropped % 3,
            0,
            "a refused run drops each of its 3 datagrams"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn gro_splits_coalesced_buffers_on_every_receive_path() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !a.is_gso() {
            eprintln!("no GSO; skipping");
            return;
        }
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !b.is_gro() {
            eprintln!("no GRO; skipping");
            return;
        }
        let (to, from) = (b.local_addr().unwrap(), a.local_addr().unwrap());
        let run = |a: &mut UdpTransport, tag: u8, n: usize, len: usize| -> Vec<Vec<u8>> {
            let want: Vec<Vec<u8>> = (0..n).map(|i| filled(tag, i, len)).collect();
            for d in &want {
                a.send_to(d, to, Duration::ZERO).unwrap();
            }
            a.poll(Duration::ZERO).unwrap();
            want
        };
        // 1. Outside a burst: recvmsg into the caller's buffer, the rest from the ring.
        let want = run(&mut a, 6, 30, 1000);
        let mut buf = vec![0u8; 65_536];
        let (len, src) = recv_wait(&mut b, &mut buf).unwrap();
        assert_eq!((&buf[..len], src), (&want[0][..], from));
        assert!(
            !b.batch.as_ref().unwrap().recv_burst,
            "the single path took it"
        );
        let rest = recv_n(&mut b, 29);
        assert_eq!(rest.len(), 29);
        for (i, (d, src)) in rest.iter().enumerate() {
            assert_eq!((d, *src), (&want[i + 1], from));
        }
        let stats = b.offload_stats();
        assert_eq!((stats.gro_buffers, stats.gro_datagrams), (1, 30));
        // 2. In a burst: through recvmmsg.
        b.batch.as_mut().unwrap().recv_burst = true;
        let want = run(&mut a, 7, 20, 1100);
        let got = recv_n(&mut b, 20);
        assert_eq!(got.len(), 20);
        for (i, (d, src)) in got.iter().enumerate() {
            assert_eq!((d, *src), (&want[i], from));
        }
        assert_eq!(b.offload_stats().gro_buffers, 2);
        // 3. A caller's buffer shorter than 64 KiB: served through the ring, nothing cut.
        b.batch.as_mut().unwrap().recv_burst = false;
        let want = run(&mut a, 8, 10, 1500);
        let mut small = [0u8; 2000];
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 10 && Instant::now() < deadline {
            match b.recv_from(&mut small, Duration::ZERO).unwrap() {
                Some((len, src)) => got.push((small[..len].to_vec(), src)),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(got.len(), 10);
        for (i, (d, src)) in got.iter().enumerate() {
            assert_eq!((d, *src), (&want[i], from));
        }
        nothing_more(&mut b);
        assert_eq!(b.offload_stats().gro_buffers, 3);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn gso_and_gro_through_a_dual_mode_socket() {
        let Ok(mut server) = UdpTransport::bind("[::]:0".parse().unwrap(), &opts(true)) else {
            eprintln!("IPv6 unavailable; skipping");
            return;
        };
        let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !client.is_gso() || !server.is_gso() || !server.is_gro() {
            eprintln!("no GSO/GRO; skipping");
            return;
        }
        let port = server.local_addr().unwrap().port();
        let server_v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let want: Vec<Vec<u8>> = (0..25).map(|i| filled(9, i, 1200)).collect();
        for d in &want {
            client.send_to(d, server_v4, Duration::ZERO).unwrap();
        }
        client.poll(Duration::ZERO).unwrap();
        let got = recv_n(&mut server, want.len());
        let from = client.local_addr().unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (d, src)) in got.iter().enumerate() {
            assert_eq!((d, *src), (&want[i], from), "datagram {i}");
        }
        assert!(server.offload_stats().gro_buffers >= 1);
        // Back through the IPv6 socket to the IPv4 peer (an IPv4-mapped destination).
        for d in &want {
            server.send_to(d, from, Duration::ZERO).unwrap();
        }
        assert_eq!(pending_runs(&server), [25]);
        server.poll(Duration::ZERO).unwrap();
        assert_eq!(server.offload_stats().gso_messages, 1);
        let back = recv_n(&mut client, want.len());
        assert_eq!(back.len(), want.len());
        for (i, (d, src)) in back.iter().enumerate() {
            assert_eq!((d, *src), (&want[i], server_v4), "datagram {i} back");
        }
    }

    #[test]
    fn offload_needs_batching() {
        let opts = SocketOptions {
            batch: false,
            ..gso_opts(true, true)
        };
        let a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        assert!(!a.is_gso());
        assert!(!a.is_gro());
        assert_eq!(a.offload_stats(), OffloadStats::default());
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            assert!(!sys::gro_enabled(a.socket.as_raw_fd()).unwrap());
            let b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &gso_opts(false, false))
                .unwrap();
            assert!(!b.is_gso());
            assert!(!b.is_gro());
            assert!(!sys::gro_enabled(b.socket.as_raw_fd()).unwrap());
        }
    }
}
