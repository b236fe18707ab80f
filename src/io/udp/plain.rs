//! One syscall per datagram: the path on every system, and the fallback of the batched one.

use std::{io, net::SocketAddr};

use super::{is_refused, normalise, RecvFailure, UdpTransport, MAX_SKIPPED_ERRORS};

impl UdpTransport {
    /// One `recv_from` syscall per datagram (the path without batching).
    pub(super) fn recv_plain(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        // `recv_from` cannot pass `MSG_DONTWAIT`: the socket must not block.
        self.leave_receive_waits();
        for _ in 0..MAX_SKIPPED_ERRORS {
            match self.socket.recv_from(buf) {
                Ok((len, from)) => {
                    self.status.drained = false;
                    return Ok(Some((len, normalise(from))));
                }
                Err(e) => match self.status.recv_failed(self.local, e) {
                    RecvFailure::Empty => return Ok(None),
                    RecvFailure::Retry => {}
                    RecvFailure::Fatal(e) => return Err(e),
                },
            }
        }
        Ok(None)
    }

    /// One `send`/`send_to` syscall for one datagram (the path without batching).
    pub(super) fn send_plain(&mut self, data: &[u8], target: SocketAddr) -> io::Result<bool> {
        // Retry a bounded number of times on EINTR.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = if self.receive_timeout.is_some() {
                self.send_nonblocking(data, target)
            } else if self.peer == Some(target) {
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
                    self.status.connection_refused = true;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
