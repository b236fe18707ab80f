//! [`SocketOptions`] and the socket set-up behind [`UdpTransport::bind`]: socket2
//! creation, `SO_REUSEPORT`, DSCP marking, dual mode, buffer sizes, binding. (The offload
//! options, `UDP_SEGMENT` and `UDP_GRO`, belong to the batched path: `batch.rs`.)

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[cfg(doc)]
use super::UdpTransport;
#[cfg(doc)]
use crate::io::Transport;

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

/// A bound, non-blocking socket2 socket configured by [`SocketOptions`] (all but the
/// offload options, which the batched path sets up), with the buffer sizes the OS granted.
pub(super) struct Configured {
    pub(super) socket: Socket,
    pub(super) recv_buffer_size: usize,
    pub(super) send_buffer_size: usize,
}

/// Create a non-blocking UDP socket for `addr`, apply `opts` and bind it (see
/// [`UdpTransport::bind`] for what is logged and what fails).
pub(super) fn bind_socket(addr: SocketAddr, opts: &SocketOptions) -> io::Result<Configured> {
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
    let recv_buffer_size = apply_buffer_size(
        &socket,
        "receive",
        opts.recv_buffer_size,
        Socket::set_recv_buffer_size,
        Socket::recv_buffer_size,
    );
    let send_buffer_size = apply_buffer_size(
        &socket,
        "send",
        opts.send_buffer_size,
        Socket::set_send_buffer_size,
        Socket::send_buffer_size,
    );
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    Ok(Configured {
        socket,
        recv_buffer_size,
        send_buffer_size,
    })
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

/// Request a buffer size (`0`: keep the OS default) and read back what the OS granted,
/// warning if it is less; `0` if it cannot be read.
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
