//! The raw syscalls behind [`super::UdpTransport`]'s batched I/O on Linux: `recvmmsg(2)`
//! and `sendmmsg(2)` through `libc`.
//!
//! This is the only module of the crate allowed to use `unsafe`; every block says why it is
//! sound. Everything else (which datagrams to batch, fallbacks, accounting) lives in safe
//! code in `udp.rs`.
//!
//! Why `libc` and not `quinn-udp`: quinn-udp keeps its own socket state (`UdpSocketState`),
//! works on its own `Transmit`/`RecvMeta` types with one destination per GSO batch and pulls
//! in more than we need; our transport already owns a mio socket and needs exactly two
//! syscalls with plain per-datagram destinations. Two small wrappers are easier to audit
//! than an adapter.

use std::{
    io, mem,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::RawFd,
    ptr,
};

use socket2::SockAddr;

/// Most datagrams moved by one `recvmmsg` or `sendmmsg` call.
pub(crate) const MAX_BATCH: usize = 32;

/// Bytes reserved for each received datagram: the largest UDP payload (and the size of the
/// drivers' receive buffer), so no datagram is truncated. See [`RecvRing`] for why this
/// costs virtual address space but not resident memory.
pub(crate) const SLOT_LEN: usize = 65_536;

/// The result of one `recvmmsg` call, served one datagram at a time.
///
/// The ring reserves `MAX_BATCH × SLOT_LEN` bytes (2 MiB) of *capacity* once and never
/// initialises it: only the kernel writes there, and only the bytes of the datagrams it
/// delivers, so the resident cost is the pages datagrams actually land in (one 4 KiB page
/// per slot in use for datagrams of up to 4 KiB). Bytes are read back only within the
/// lengths the kernel reported.
pub(crate) struct RecvRing {
    /// `len() == 0`, `capacity() >= MAX_BATCH * SLOT_LEN`. Written by the kernel only.
    mem: Vec<u8>,
    lens: [usize; MAX_BATCH],
    from: [Option<SocketAddr>; MAX_BATCH],
    filled: usize,
    next: usize,
    /// How many datagrams were longer than a slot (cannot happen for UDP; counted anyway).
    truncated: u64,
}

impl std::fmt::Debug for RecvRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvRing")
            .field("filled", &self.filled)
            .field("next", &self.next)
            .finish()
    }
}

impl RecvRing {
    /// An empty ring with its memory reserved (not touched).
    pub(crate) fn new() -> RecvRing {
        RecvRing {
            mem: Vec::with_capacity(MAX_BATCH * SLOT_LEN),
            lens: [0; MAX_BATCH],
            from: [None; MAX_BATCH],
            filled: 0,
            next: 0,
            truncated: 0,
        }
    }

    /// `true` when every received datagram has been handed out.
    pub(crate) fn is_empty(&self) -> bool {
        self.next >= self.filled
    }

    /// Datagrams the kernel reported as longer than [`SLOT_LEN`] (delivered truncated, as
    /// a plain `recv` into a buffer of that size would).
    pub(crate) fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The next received datagram and its source, or `None` when the ring is empty.
    /// Datagrams whose source address could not be decoded are skipped.
    pub(crate) fn pop(&mut self) -> Option<(&[u8], SocketAddr)> {
        while self.next < self.filled {
            let i = self.next;
            self.next += 1;
            let Some(from) = self.from[i] else { continue };
            let len = self.lens[i].min(SLOT_LEN);
            let start = i * SLOT_LEN;
            // SAFETY: `start + len <= MAX_BATCH * SLOT_LEN <= capacity`, so the range lies in
            // the allocation, and `recvmmsg` reported writing `lens[i]` bytes at
            // `start` (its iovec for message `i` starts there and is `SLOT_LEN` long), so
            // these bytes are initialised. Nothing writes to `mem` while the returned
            // borrow of `self` lives.
            let data = unsafe { std::slice::from_raw_parts(self.mem.as_ptr().add(start), len) };
            return Some((data, from));
        }
        None
    }

    /// Receive up to [`MAX_BATCH`] datagrams from `fd` without blocking, replacing the
    /// ring's contents (call it once [`pop`](RecvRing::pop) returned `None`). Returns how many
    /// arrived; errors are the syscall's (`WouldBlock` when none is pending).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.filled = 0;
        self.next = 0;
        let base = self.mem.as_mut_ptr();
        // SAFETY: all-zero is a valid value for these plain C structs (null pointers,
        // zero lengths), and every field we rely on is set below.
        let mut names: [libc::sockaddr_storage; MAX_BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
        for i in 0..MAX_BATCH {
            // SAFETY: `i * SLOT_LEN < MAX_BATCH * SLOT_LEN <= capacity`: in bounds of the
            // allocation (the pointer is only computed here, written by the kernel).
            iovs[i].iov_base = unsafe { base.add(i * SLOT_LEN) }.cast();
            iovs[i].iov_len = SLOT_LEN;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = ptr::addr_of_mut!(names[i]).cast();
            msgs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
        }
        // SAFETY: `msgs` holds MAX_BATCH valid headers whose iovecs point at disjoint
        // `SLOT_LEN`-byte regions of `mem`'s capacity and whose names point at
        // `sockaddr_storage`s with their true size; all outlive the call. The timeout is
        // null (none), and `fd` is a socket owned by the caller for the call's duration.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                MAX_BATCH as _,
                libc::MSG_DONTWAIT as _,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(MAX_BATCH);
        for i in 0..n {
            let hdr = &msgs[i];
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
            }
            self.lens[i] = (hdr.msg_len as usize).min(SLOT_LEN);
            self.from[i] = decode_addr(&names[i], hdr.msg_hdr.msg_namelen);
        }
        self.filled = n;
        Ok(n)
    }
}

/// One datagram of a send batch: `len` bytes at `start` in the batch's byte buffer, to
/// `to` (`None`: the connected peer); `target` is the same destination for the paths that
/// send without `sendmmsg`.
#[derive(Debug, Clone)]
pub(crate) struct SendItem {
    pub start: usize,
    pub len: usize,
    pub to: Option<SockAddr>,
    pub target: SocketAddr,
}

/// Send `items` (at most [`MAX_BATCH`] are looked at) with one `sendmmsg` call. Returns
/// how many the kernel took, from the first: `Ok(k)` with `k < items.len()` means item
/// `k` failed and the next call starting there reports why. An item whose range is not
/// inside `bytes` is refused with `InvalidInput` before any syscall.
pub(crate) fn send_batch(fd: RawFd, bytes: &[u8], items: &[SendItem]) -> io::Result<usize> {
    let items = &items[..items.len().min(MAX_BATCH)];
    if items.is_empty() {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    for (i, item) in items.iter().enumerate() {
        let Some(data) = item
            .start
            .checked_add(item.len)
            .and_then(|end| bytes.get(item.start..end))
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "send batch item outside its buffer",
            ));
        };
        // The kernel only reads through this pointer (sendmmsg's iovecs are input).
        iovs[i].iov_base = data.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = data.len();
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if let Some(to) = &item.to {
            msgs[i].msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = to.len();
        }
    }
    // SAFETY: the first `items.len()` headers are valid: each iovec points into `bytes`
    // (checked above) and each name at a `SockAddr` of the stated length, all borrowed for
    // the duration of the call; `fd` is a socket owned by the caller.
    let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), items.len() as _, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize).min(items.len()))
}

/// A socket address written by the kernel, or `None` for a family other than IPv4/IPv6 or
/// a length too short for it.
fn decode_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel stored a `sockaddr_in`, and
            // `sockaddr_storage` is large and aligned enough for any socket address.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn decode_round_trips_through_socket2() {
        for addr in ["127.0.0.1:4242", "[::1]:7", "[fe80::1%3]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let sa = SockAddr::from(addr);
            let len = sa.len();
            let storage = sa.as_storage();
            assert_eq!(decode_addr(&storage, len), Some(addr));
            assert_eq!(decode_addr(&storage, 2), None, "too short for {addr}");
        }
    }

    #[test]
    fn send_batch_rejects_out_of_range_items() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let item = SendItem {
            start: 2,
            len: usize::MAX,
            to: Some(SockAddr::from(s.local_addr().unwrap())),
            target: s.local_addr().unwrap(),
        };
        let err = send_batch(s.as_raw_fd(), b"abc", &[item]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(send_batch(s.as_raw_fd(), b"", &[]).unwrap(), 0);
    }

    #[test]
    fn batch_round_trip_on_raw_sockets() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = SockAddr::from(rx.local_addr().unwrap());
        let bytes: Vec<u8> = (0..10u8).collect();
        let items: Vec<SendItem> = (0..10)
            .map(|i| SendItem {
                start: i,
                len: 1,
                to: Some(to.clone()),
                target: rx.local_addr().unwrap(),
            })
            .collect();
        assert_eq!(send_batch(tx.as_raw_fd(), &bytes, &items).unwrap(), 10);
        let mut ring = RecvRing::new();
        let mut got = Vec::new();
        for _ in 0..1000 {
            match ring.recv(rx.as_raw_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            while let Some((data, from)) = ring.pop() {
                assert_eq!(from, tx.local_addr().unwrap());
                got.extend_from_slice(data);
            }
            if got.len() == 10 {
                break;
            }
        }
        assert_eq!(got, bytes);
        assert_eq!(ring.truncated(), 0);
    }
}
