//! [`UdpTransport`]: a non-blocking UDP socket (mio), created through socket2.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

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
}

impl SocketOptions {
    /// The default buffer size requested for both directions: 7 MiB.
    pub const DEFAULT_BUFFER_SIZE: usize = 7 * 1024 * 1024;
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            dual_mode: true,
            recv_buffer_size: Self::DEFAULT_BUFFER_SIZE,
            send_buffer_size: Self::DEFAULT_BUFFER_SIZE,
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
}

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
    /// and the socket speaks IPv6 only. `SO_REUSEADDR` is not set.
    ///
    /// # Errors
    ///
    /// Any error creating or binding the socket (e.g. `AddrInUse`).
    pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UdpTransport> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
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

impl Transport for UdpTransport {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        _now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
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

    fn send_to(&mut self, data: &[u8], to: SocketAddr, _now: Duration) -> io::Result<bool> {
        let target = self.target(to)?;
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
                        "udp {}: ICMP unreachable reported on send to {to}: {e}",
                        self.local
                    );
                    self.connection_refused = true;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// `true` once after the OS reported an ICMP "port unreachable" (connection
    /// refused/reset) on this socket, then `false` until the next such report.
    fn take_connection_refused(&mut self) -> bool {
        std::mem::take(&mut self.connection_refused)
    }

    /// Sleeps in the OS poller (epoll, kqueue, IOCP through mio) until the socket is
    /// readable or `timeout` passed. Returns at once if the last `recv_from` did not
    /// find the socket empty, since datagrams may still be queued.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn small_opts() -> SocketOptions {
        SocketOptions {
            dual_mode: true,
            recv_buffer_size: 256 * 1024,
            send_buffer_size: 256 * 1024,
        }
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
    }

    #[test]
    fn round_trip_v4() {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        assert!(a.recv_buffer_size() > 0);
        assert!(a.send_buffer_size() > 0);
        let b_addr = b.local_addr().unwrap();
        let a_addr = a.local_addr().unwrap();
        assert!(a.send_to(b"ping", b_addr, Duration::ZERO).unwrap());
        let mut buf = [0u8; 64];
        let (len, from) = recv_wait(&mut b, &mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"ping");
        assert_eq!(from, a_addr);
        assert!(b.send_to(b"pong", from, Duration::ZERO).unwrap());
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
        a.send_to(b"0123456789", b.local_addr().unwrap(), Duration::ZERO)
            .unwrap();
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
        assert!(a.send_to(b"six", b_addr, Duration::ZERO).unwrap());
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
        assert!(client.send_to(b"hello", server_v4, Duration::ZERO).unwrap());
        let mut buf = [0u8; 64];
        let (len, from) = recv_wait(&mut server, &mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"hello");
        assert!(from.is_ipv4(), "source {from} should be plain IPv4");
        assert_eq!(from, client_addr);
        assert!(server.send_to(b"reply", from, Duration::ZERO).unwrap());
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
        assert!(a.send_to(b"m", mapped, Duration::ZERO).unwrap());
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
        a.send_to(b"wake", b.local_addr().unwrap(), Duration::ZERO)
            .unwrap();
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
        b.send_to(b"x", a.local_addr().unwrap(), Duration::ZERO)
            .unwrap();
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
}
