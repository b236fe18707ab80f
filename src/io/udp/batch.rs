//! Batched I/O (Linux only): the `recvmmsg` ring, the `sendmmsg` batch, UDP GSO and GRO,
//! and their fallbacks, on top of the syscall wrappers in `io::sys`. See [`UdpTransport`] for
//! what each does and when.

use std::{io, net::SocketAddr, os::fd::AsRawFd};

use socket2::{SockAddr, Socket};

use super::{
    is_refused, normalise, OffloadStats, RecvFailure, SocketOptions, UdpTransport,
    MAX_SKIPPED_ERRORS,
};
use crate::io::sys;

/// The state of batched I/O: the receive ring and the pending send batch.
#[derive(Debug)]
pub(super) struct Batch {
    /// Created at the first batched receive.
    pub(super) ring: Option<Box<sys::RecvRing>>,
    /// `recvmmsg` works (cleared on `ENOSYS`).
    pub(super) recv_enabled: bool,
    /// The last `recvmmsg` returned fewer datagrams than asked: the socket was found empty.
    pub(super) skip_recv_syscall: bool,
    /// A burst is under way: `recvmmsg` asks for a full batch ([`sys::MAX_BATCH`]) rather
    /// than a few ([`sys::FEW`]). Set by a call that got more than one message.
    pub(super) recv_burst: bool,
    /// `sendmmsg` works (cleared on `ENOSYS`).
    pub(super) send_enabled: bool,
    /// GSO is in use: asked for, known to the kernel at bind, never refused since.
    pub(super) gso: bool,
    /// Largest segment size a run may have (lowered when the kernel answers `EMSGSIZE`
    /// for a run: the route's MTU is smaller).
    pub(super) gso_max_seg: usize,
    /// `UDP_GRO` is set on the socket.
    pub(super) gro: bool,
    /// The pending datagrams, back to back.
    pub(super) bytes: Vec<u8>,
    pub(super) items: Vec<sys::SendItem>,
    /// The pending messages: runs of consecutive items (one item each without GSO).
    pub(super) msgs: Vec<sys::SendMsg>,
    /// `RecvRing::truncated` already logged.
    pub(super) truncated_logged: u64,
    pub(super) stats: OffloadStats,
    /// Test support: make this many GSO messages fail as if the kernel answered `EIO`.
    #[cfg(test)]
    pub(super) fail_gso: u32,
}

impl Batch {
    /// Bookkeeping after a `recvmmsg` into the ring returned `n` of the `asked` messages:
    /// the GRO counters, whether the socket was found empty (the next receive skips its
    /// syscall), whether a burst goes on, and a warning for newly truncated datagrams.
    pub(super) fn note_recv(&mut self, n: usize, asked: usize, local: SocketAddr) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let (buffers, datagrams) = ring.take_coalesced();
        self.stats.gro_buffers += buffers;
        self.stats.gro_datagrams += datagrams;
        self.skip_recv_syscall = n < asked;
        // A call that found at most one datagram ends the burst.
        self.recv_burst = n > 1;
        if ring.truncated() != self.truncated_logged {
            self.truncated_logged = ring.truncated();
            log::warn!(
                "udp {local}: {} datagram(s) longer than {} bytes were truncated",
                self.truncated_logged,
                sys::SLOT_LEN
            );
        }
    }

    /// The batching state of a new socket (`None` without [`SocketOptions::batch`]), with
    /// GSO if asked for and known to the kernel and GRO if asked for and accepted by it.
    pub(super) fn setup(
        socket: &Socket,
        addr: SocketAddr,
        opts: &SocketOptions,
    ) -> Option<Box<Batch>> {
        if !opts.batch {
            return None;
        }
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
        Some(Box::new(Batch::new(gso, gro)))
    }

    /// Both `recvmmsg` and `sendmmsg` work (neither was refused with `ENOSYS`).
    pub(super) fn is_batching(&self) -> bool {
        self.recv_enabled && self.send_enabled
    }

    /// GSO is in use.
    pub(super) fn is_gso(&self) -> bool {
        self.gso && self.send_enabled
    }

    /// `UDP_GRO` is set on the socket.
    pub(super) fn is_gro(&self) -> bool {
        self.gro
    }

    /// The offload counters.
    pub(super) fn offload_stats(&self) -> OffloadStats {
        self.stats
    }

    /// Datagrams wait in the send batch.
    pub(super) fn has_pending(&self) -> bool {
        !self.items.is_empty()
    }

    fn new(gso: bool, gro: bool) -> Batch {
        Batch {
            ring: None,
            recv_enabled: true,
            skip_recv_syscall: false,
            recv_burst: false,
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
pub(super) const GSO_QUEUE_DATAGRAMS: usize = 256;

/// With GSO: most bytes queued in a send batch (four full runs).
const GSO_QUEUE_BYTES: usize = 262_144;

/// Largest number of bytes queued in a send batch; a larger datagram is sent on its own.
const SEND_BATCH_BYTES: usize = 65_536;

/// The kernel lacks the syscall (`recvmmsg` or `sendmmsg`).
fn is_enosys(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSYS)
}

/// The errors with which a kernel refuses GSO itself rather than one message: no checksum
/// offload on the route (`EIO`), a socket or kernel that cannot segment (`EINVAL`,
/// `ENOPROTOOPT`).
fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT)
    )
}

impl UdpTransport {
    /// `recv_from` while batching is set up: what the ring holds first, then `recvmmsg`
    /// (of a few messages outside a burst, of a full batch in one); after an `ENOSYS` the
    /// plain path.
    ///
    /// A `recvmmsg` that returns fewer messages than it asked for found the socket empty, so
    /// the next call returns `Ok(None)` without a syscall and marks the socket drained: a
    /// receive loop ends after the datagrams it got, without the extra syscall that would
    /// only answer `EAGAIN` (at low rates, where one datagram arrives at a time, that
    /// halves the receive syscalls). An ICMP error met after the first message of such a
    /// call waits in the socket for the next one (the kernel keeps it).
    pub(super) fn recv_batching(
        &mut self,
        buf: &mut [u8],
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        if let Some(b) = self.batch.as_mut() {
            // What the ring still holds comes first: the rest of a `recvmmsg` batch, or of
            // a coalesced buffer whose first datagram was returned directly.
            if let Some((data, from)) = b.ring.as_mut().and_then(|r| r.pop()) {
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                self.status.drained = false;
                return Ok(Some((len, normalise(from))));
            }
            if b.recv_enabled {
                if std::mem::take(&mut b.skip_recv_syscall) {
                    // The kernel just reported the socket empty; ask again next time.
                    self.status.drained = true;
                    return Ok(None);
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
        let fd = self.socket.as_raw_fd();
        for _ in 0..MAX_SKIPPED_ERRORS {
            match sys::recv_msg(fd, buf) {
                Ok(got) => {
                    self.status.drained = false;
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
                Err(e) => match self.status.recv_failed(self.local, e) {
                    RecvFailure::Empty => return Ok(None),
                    RecvFailure::Retry => {}
                    RecvFailure::Fatal(e) => return Err(e),
                },
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
        let fd = self.socket.as_raw_fd();
        let Some(b) = self.batch.as_mut() else {
            return Err(None);
        };
        for _ in 0..MAX_SKIPPED_ERRORS {
            let ring = b.ring.get_or_insert_with(|| Box::new(sys::RecvRing::new()));
            if let Some((data, from)) = ring.pop() {
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                self.status.drained = false;
                return Ok(Some((len, normalise(from))));
            }
            if std::mem::take(&mut b.skip_recv_syscall) {
                self.status.drained = true;
                return Ok(None);
            }
            let (got, asked) = if b.recv_burst {
                (ring.recv(fd, b.gro), sys::MAX_BATCH)
            } else {
                (ring.recv_few(fd, b.gro), sys::FEW)
            };
            match got {
                Ok(n) => b.note_recv(n, asked, self.local),
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
                Err(e) => match self.status.recv_failed(self.local, e) {
                    RecvFailure::Empty => {
                        b.recv_burst = false;
                        return Ok(None);
                    }
                    RecvFailure::Retry => {}
                    RecvFailure::Fatal(e) => return Err(Some(e)),
                },
            }
        }
        Ok(None)
    }

    /// Queue a datagram in the send batch. `Err(())`: not batched (batching off, or the
    /// datagram is larger than a batch), send it plainly.
    pub(super) fn queue_batched(&mut self, data: &[u8], target: SocketAddr) -> Result<(), ()> {
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

    pub(super) fn flush_quietly(&mut self) {
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
    pub(super) fn flush_batch(&mut self) -> io::Result<()> {
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
                    self.status.send_drops += msg.count as u64;
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
                    self.status.send_drops += b.datagrams_from(m) as u64;
                    m = b.msgs.len();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupts < 8 => {
                    interrupts += 1;
                }
                Err(e) if is_refused(&e) => {
                    log::debug!("udp {local}: ICMP unreachable reported on send: {e}");
                    self.status.connection_refused = true;
                    self.status.send_drops += msg.count as u64;
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
                    self.status.send_drops += msg.count as u64;
                    m += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        self.status.send_drops += b.datagrams_from(m) as u64;
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
                    Ok(false) => self.status.send_drops += 1,
                    Err(e) => {
                        self.status.send_drops += 1;
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
                    self.status.connection_refused = true;
                } else {
                    log::debug!("udp {local}: cleared a pending socket error: {e}");
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
