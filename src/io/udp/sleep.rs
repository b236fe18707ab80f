//! Sleeping in the receive (Linux, batched I/O): a [`Transport::wait`] long enough sleeps in
//! a blocking `recvmmsg` instead of the poller, so a wake-up that brings a datagram costs one
//! syscall (the receive that also delivers it) instead of two (`epoll_wait`, then the
//! receive). An idle server wakes for nearly every datagram it gets, so this is most of what
//! separates it from a plain blocking socket loop (`docs/PERFORMANCE.md`).
//!
//! How: at the first such wait the socket leaves non-blocking mode and gets a receive timeout
//! (`SO_RCVTIMEO`) from a short list of lengths ([`SLICES_MS`]): the longest that, with the
//! kernel's rounding to its scheduler tick, still ends within the wait. The timeout is only
//! set again when a wait needs a different length, so a steady loop sets it once. A wait
//! shorter than the shortest length, or a socket an outside poller watches
//! ([`UdpTransport::register`]), uses the poller as before. Every other syscall on the
//! socket passes `MSG_DONTWAIT` (the ring's receives, `recvmsg`, `sendmmsg`, and
//! [`send_nonblocking`](UdpTransport::send_nonblocking) for single datagrams), so nothing
//! else ever blocks; the plain receive path, which cannot pass the flag, puts the socket
//! back in non-blocking mode first.
//!
//! A wait may return before its timeout with nothing received (at the end of its slice); the
//! caller's loop then finds nothing due and waits again, as after any early wake-up.
//!
//! [`Transport::wait`]: crate::io::Transport::wait

use std::{io, net::SocketAddr, os::fd::AsRawFd, time::Duration};

use socket2::{SockAddr, SockRef};

use super::{is_refused, UdpTransport};
use crate::io::sys;

/// The receive timeouts a wait may use, in milliseconds, longest first. Powers of two: the
/// one a wait gets is the longest that fits, so the next one would not.
const SLICES_MS: [u64; 7] = [1024, 512, 256, 128, 64, 32, 16];

/// What the kernel may add to a receive timeout: it counts in scheduler ticks, rounding up,
/// and a tick is 10 ms at the lowest `HZ` in use (100).
const TICK_SLACK: Duration = Duration::from_millis(10);

/// The receive timeout for a wait of `timeout`: the longest slice that ends within it even
/// when the kernel rounds it up by a tick; `None` if the wait is too short for any.
fn slice_for(timeout: Duration) -> Option<Duration> {
    SLICES_MS
        .iter()
        .map(|&ms| Duration::from_millis(ms))
        .find(|&slice| slice + TICK_SLACK <= timeout)
}

impl UdpTransport {
    /// Sleep for at most `timeout` in a blocking receive into the ring (see the module
    /// documentation). `Ok(false)`: not done here (no batching, `recvmmsg` unavailable, an
    /// outside poller registered, or a wait too short), use the poller. Call only once the
    /// socket was found drained.
    pub(super) fn wait_in_receive(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.registered {
            return Ok(false);
        }
        let Some(slice) = slice_for(timeout) else {
            return Ok(false);
        };
        if !self.batch.as_ref().is_some_and(|b| b.recv_enabled) {
            return Ok(false);
        }
        if let Err(e) = self.use_slice(slice) {
            log::debug!("udp {}: cannot sleep in the receive ({e})", self.local);
            self.leave_receive_waits();
            return Ok(false);
        }
        let fd = self.socket.as_raw_fd();
        let local = self.local;
        let Some(b) = self.batch.as_mut() else {
            return Ok(false);
        };
        let ring = b.ring.get_or_insert_with(|| Box::new(sys::RecvRing::new()));
        if !ring.is_empty() {
            // Not drained after all (a receive refills the ring): nothing to wait for.
            self.status.drained = false;
            return Ok(true);
        }
        match ring.recv_wait(fd, b.gro) {
            Ok(n) => {
                b.note_recv(n, sys::FEW, local);
                self.status.drained = false;
                Ok(true)
            }
            // The slice passed with nothing, or a signal came: the caller looks again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(e) if is_refused(&e) => {
                log::debug!("udp {local}: ICMP unreachable reported while waiting: {e}");
                self.status.connection_refused = true;
                Ok(true)
            }
            Err(e) => {
                // Whatever it was (`ENOSYS` included), the poller path still works.
                log::debug!("udp {local}: cannot sleep in the receive ({e})");
                self.leave_receive_waits();
                Ok(false)
            }
        }
    }

    /// Gives the socket the receive timeout `slice` (a syscall only when it changes), and
    /// takes it out of non-blocking mode the first time.
    fn use_slice(&mut self, slice: Duration) -> io::Result<()> {
        if self.receive_timeout == Some(slice) {
            return Ok(());
        }
        let socket = SockRef::from(&self.socket);
        socket.set_read_timeout(Some(slice))?;
        if self.receive_timeout.is_none() {
            socket.set_nonblocking(false)?;
        }
        self.receive_timeout = Some(slice);
        Ok(())
    }

    /// Put the socket back in non-blocking mode if a wait took it out (for the plain receive
    /// path, which cannot pass `MSG_DONTWAIT`, and for an outside poller).
    pub(super) fn leave_receive_waits(&mut self) {
        if self.receive_timeout.take().is_some() {
            if let Err(e) = SockRef::from(&self.socket).set_nonblocking(true) {
                log::error!(
                    "udp {}: cannot make the socket non-blocking again: {e}",
                    self.local
                );
            }
        }
    }

    /// `send`/`send_to` with `MSG_DONTWAIT`: one datagram without blocking whatever the
    /// socket's mode.
    pub(super) fn send_nonblocking(&self, data: &[u8], target: SocketAddr) -> io::Result<usize> {
        let socket = SockRef::from(&self.socket);
        if self.peer == Some(target) {
            socket.send_with_flags(data, libc::MSG_DONTWAIT)
        } else {
            socket.send_to_with_flags(data, &SockAddr::from(target), libc::MSG_DONTWAIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{udp::SocketOptions, Transport};
    use std::time::Instant;

    fn bind() -> UdpTransport {
        UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap()
    }

    fn recv(t: &mut UdpTransport) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        t.recv_from(&mut buf, Duration::ZERO)
            .unwrap()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    }

    /// Drain `t` and let a wait put it in blocking mode, then give it a receive timeout of a
    /// minute: a receive or send that blocked would now take a minute instead of returning.
    fn in_blocking_mode(t: &mut UdpTransport, sender: &mut UdpTransport) {
        assert_eq!(recv(t), None);
        sender
            .send_to(b"wake", t.local_addr().unwrap(), Duration::ZERO)
            .unwrap();
        sender.poll(Duration::ZERO).unwrap();
        t.wait(Duration::from_secs(3600)).unwrap();
        assert_eq!(t.receive_timeout, Some(Duration::from_millis(1024)));
        assert!(!SockRef::from(t.socket()).nonblocking().unwrap());
        assert_eq!(recv(t).map(|(d, _)| d), Some(b"wake".to_vec()));
        SockRef::from(t.socket())
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
    }

    #[test]
    fn a_long_wait_sleeps_in_the_receive_and_delivers_everything_in_order() {
        let mut a = bind();
        let mut b = bind();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        in_blocking_mode(&mut a, &mut b);
        // More than one receive's worth (`FEW`) queued before the wait: the wait takes the
        // first few, the receives after it the rest, each once, in order.
        let sent: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 20 + i as usize]).collect();
        for d in &sent {
            b.send_to(d, a_addr, Duration::ZERO).unwrap();
        }
        b.poll(Duration::ZERO).unwrap();
        a.wait(Duration::from_secs(3600)).unwrap();
        let mut got = Vec::new();
        for _ in 0..20 {
            match recv(&mut a) {
                Some((d, from)) => {
                    assert_eq!(from, b_addr);
                    got.push(d);
                }
                None if got.len() < sent.len() => a.wait(Duration::from_secs(3600)).unwrap(),
                None => break,
            }
        }
        assert_eq!(got, sent);
        // Nothing more: the receive answers at once (the socket's own timeout is a minute).
        let t = Instant::now();
        assert_eq!(recv(&mut a), None);
        assert!(t.elapsed() < Duration::from_secs(30));
        // Sends still leave, one at a time (plain send) and batched (`sendmmsg`).
        assert!(a.send_to(b"one", b_addr, Duration::ZERO).unwrap());
        a.poll(Duration::ZERO).unwrap();
        for i in 0..3u8 {
            assert!(a.send_to(&[i; 5], b_addr, Duration::ZERO).unwrap());
        }
        a.poll(Duration::ZERO).unwrap();
        let mut back = Vec::new();
        for _ in 0..8 {
            while let Some((d, _)) = recv(&mut b) {
                back.push(d);
            }
            if back.len() == 4 {
                break;
            }
            b.wait(Duration::from_secs(2)).unwrap();
        }
        assert_eq!(
            back,
            vec![b"one".to_vec(), vec![0; 5], vec![1; 5], vec![2; 5]]
        );
    }

    #[test]
    fn a_short_wait_uses_the_poller() {
        let mut a = bind();
        assert_eq!(recv(&mut a), None);
        a.wait(Duration::from_millis(20)).unwrap();
        assert_eq!(a.receive_timeout, None);
        assert!(SockRef::from(a.socket()).nonblocking().unwrap());
    }

    #[test]
    fn an_outside_poller_gets_a_non_blocking_socket_again() {
        let mut a = bind();
        let mut b = bind();
        in_blocking_mode(&mut a, &mut b);
        let poll = mio::Poll::new().unwrap();
        a.register(poll.registry(), mio::Token(7)).unwrap();
        assert_eq!(a.receive_timeout, None);
        assert!(SockRef::from(a.socket()).nonblocking().unwrap());
        // The outside poller's owner receives until nothing is left, without blocking.
        let t = Instant::now();
        assert_eq!(recv(&mut a), None);
        assert!(t.elapsed() < Duration::from_secs(30));
        a.deregister(poll.registry()).unwrap();
        assert_eq!(recv(&mut a), None);
        a.wait(Duration::from_millis(40)).unwrap();
        assert_eq!(a.receive_timeout, Some(Duration::from_millis(16)));
    }

    #[test]
    fn an_icmp_refusal_ends_the_wait_and_is_reported() {
        let closed = bind().local_addr().unwrap();
        let mut a = UdpTransport::bind_any_for(closed, &SocketOptions::default()).unwrap();
        a.connect(closed).unwrap();
        let mut refused = false;
        for _ in 0..50 {
            assert_eq!(recv(&mut a), None);
            a.send_to(b"hello?", closed, Duration::ZERO).unwrap();
            let sent = a.poll(Duration::ZERO).unwrap();
            a.wait(Duration::from_secs(3600)).unwrap();
            if sent.connection_refused || a.poll(Duration::ZERO).unwrap().connection_refused {
                refused = true;
                break;
            }
        }
        assert!(refused, "ICMP port unreachable was not reported");
    }

    #[test]
    fn slices_end_within_the_wait() {
        assert_eq!(slice_for(Duration::from_millis(25)), None);
        assert_eq!(
            slice_for(Duration::from_millis(26)),
            Some(Duration::from_millis(16))
        );
        assert_eq!(
            slice_for(Duration::from_millis(100)),
            Some(Duration::from_millis(64))
        );
        assert_eq!(
            slice_for(Duration::from_secs(3600)),
            Some(Duration::from_millis(1024))
        );
        for ms in 26..3000 {
            let wait = Duration::from_millis(ms);
            let slice = slice_for(wait).unwrap();
            assert!(slice + TICK_SLACK <= wait, "{ms} ms");
            assert!(
                slice * 2 + TICK_SLACK > wait || slice.as_millis() == 1024,
                "{ms} ms"
            );
        }
    }
}
