//! The raw syscalls behind [`super::UdpTransport`]'s batched I/O on Linux: `recvmmsg(2)`,
//! `sendmmsg(2)` and `recvmsg(2)` through `libc`, with the control messages of UDP
//! segmentation offload, and the `SOL_UDP` socket options that switch it on.
//!
//! * **GSO (send).** [`send_batch`] sends [`SendMsg`]s: a single datagram, or a run of
//!   datagrams that lie back to back in the batch's buffer, go to one destination and all
//!   have the same length but a shorter (non-empty) last one. A run carries a `UDP_SEGMENT`
//!   control message (`SOL_UDP`, a `u16` segment size) in a buffer of
//!   `CMSG_SPACE(sizeof(u16))` bytes aligned for `cmsghdr`, written through `CMSG_FIRSTHDR`
//!   and `CMSG_DATA` with `cmsg_len = CMSG_LEN(sizeof(u16))` (the kernel accepts exactly
//!   that length), and the kernel cuts it back into those datagrams. `send_batch` checks
//!   that a run is one the kernel cuts into exactly its items (at most
//!   [`GSO_MAX_SEGMENTS`] datagrams and [`GSO_MAX_BYTES`] bytes) before any syscall.
//!   [`gso_supported`] is `getsockopt(SOL_UDP, UDP_SEGMENT)`, which fails on kernels that
//!   would silently ignore the control message.
//! * **GRO (receive).** [`set_gro`] sets `UDP_GRO`; the kernel may then deliver several
//!   datagrams of one sender as one buffer with a `UDP_GRO` control message (an `int`
//!   segment size), which [`RecvRing::recv`] (one control buffer per slot) and [`recv_msg`]
//!   read by walking the control data with `CMSG_FIRSTHDR`/`CMSG_NXTHDR`.
//!   [`RecvRing::pop`] splits a coalesced buffer into its datagrams; [`RecvRing::stash`]
//!   keeps the rest of a buffer [`recv_msg`] received into the caller's memory.
//!
//! This is the only module of the crate allowed to use `unsafe`; every block says why it is
//! sound. Everything else (which datagrams to batch and to run together, fallbacks,
//! accounting) lives in safe code in `udp.rs`.
//!
//! Why `libc` and not `quinn-udp`: quinn-udp keeps its own socket state (`UdpSocketState`),
//! works on its own `Transmit`/`RecvMeta` types with one destination per GSO batch and pulls
//! in more than we need; our transport already owns a mio socket and needs a few syscalls
//! with plain per-datagram destinations, several peers' runs in one `sendmmsg`. Small
//! wrappers are easier to audit than an adapter.

use std::{
    io, mem,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::RawFd,
    ptr,
};

use socket2::SockAddr;

/// Most messages moved by one `recvmmsg` or `sendmmsg` call.
pub(crate) const MAX_BATCH: usize = 32;

/// Most messages moved by one `recvmmsg` outside a burst ([`RecvRing::recv_few`]).
pub(crate) const FEW: usize = 4;

/// Bytes reserved for each received message: the largest UDP payload (and the size of the
/// drivers' receive buffer), so no datagram is truncated, and a buffer the kernel coalesced
/// by GRO (at most 64 KiB) fits whole. See [`RecvRing`] for why this costs virtual address
/// space but not resident memory.
pub(crate) const SLOT_LEN: usize = 65_536;

/// Most datagrams one GSO message may carry: the kernel's `UDP_MAX_SEGMENTS` (64 since
/// Linux 4.18; later kernels accept more, none fewer).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// Most payload bytes one GSO message may carry: the largest IPv4 UDP payload
/// (65,535 − 20 − 8). The kernel builds the message as one IP packet before it splits it,
/// so the IP length limit applies to the whole run (IPv6 would allow 20 bytes more).
pub(crate) const GSO_MAX_BYTES: usize = 65_507;

/// Control bytes for one `UDP_SEGMENT` message (a `u16`), padded as the kernel walks them.
// SAFETY: `CMSG_SPACE` only does arithmetic on its argument (it is `unsafe` in libc because
// it stands for a C macro, not because it touches memory).
const SEGMENT_CMSG_SPACE: usize =
    unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as libc::c_uint) } as usize;
/// The `cmsg_len` of a `UDP_SEGMENT` message: the kernel accepts exactly this.
// SAFETY: as above, for `CMSG_LEN`.
const SEGMENT_CMSG_LEN: usize =
    unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as libc::c_uint) } as usize;
/// The `cmsg_len` of a `UDP_GRO` message (an `int`, as the kernel's `put_cmsg` writes it).
// SAFETY: as above.
const GRO_CMSG_LEN: usize =
    unsafe { libc::CMSG_LEN(mem::size_of::<libc::c_int>() as libc::c_uint) } as usize;

/// Control bytes reserved per received message. The kernel writes `UDP_GRO` first (before
/// any IP-level message an application might enable on the socket); 64 bytes leave room for
/// a couple of others, which are skipped.
const RECV_CMSG_SPACE: usize = 64;

/// Control data for a sent message, aligned for `cmsghdr` as `CMSG_FIRSTHDR` requires.
#[repr(C)]
#[derive(Clone, Copy)]
union SendCmsg {
    _align: libc::cmsghdr,
    _bytes: [u8; SEGMENT_CMSG_SPACE],
}

/// Control data for a received message, aligned for `cmsghdr`.
#[repr(C)]
#[derive(Clone, Copy)]
union RecvCmsg {
    _align: libc::cmsghdr,
    _bytes: [u8; RECV_CMSG_SPACE],
}

/// Whether the kernel knows `UDP_SEGMENT` (Linux 4.18+): `getsockopt(SOL_UDP, UDP_SEGMENT)`
/// succeeds. A kernel without it would ignore the control message and send a whole run as
/// one large datagram, so GSO is only used when this holds.
pub(crate) fn gso_supported(fd: RawFd) -> bool {
    getsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok()
}

/// `setsockopt(SOL_UDP, UDP_GRO, on)` (Linux 5.0+).
pub(crate) fn set_gro(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, libc::c_int::from(on))
}

/// `getsockopt(SOL_UDP, UDP_GRO)`: whether GRO is on for the socket.
#[cfg(test)]
pub(crate) fn gro_enabled(fd: RawFd) -> io::Result<bool> {
    getsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO).map(|v| v != 0)
}

/// Test support: `SO_NO_CHECK` (send without UDP checksums), which makes the kernel refuse
/// GSO messages with `EINVAL`: a real refusal to exercise the fallback with.
#[cfg(test)]
pub(crate) fn set_no_check(fd: RawFd) -> io::Result<()> {
    // `SO_NO_CHECK` is 11 on every Linux architecture; libc only exports it for a few.
    setsockopt_int(fd, libc::SOL_SOCKET, 11, 1)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live `c_int` and its true size is passed; `fd` is a
    // socket owned by the caller. The kernel only reads the value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::addr_of!(value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the buffer's true size and the
    // kernel writes at most that many bytes into `value`. `fd` is owned by the caller.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            ptr::addr_of_mut!(value).cast(),
            ptr::addr_of_mut!(len),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Point `hdr` at `cmsg` as its control buffer (for a receive: the kernel fills it).
fn attach_recv_cmsg(hdr: &mut libc::msghdr, cmsg: &mut RecvCmsg) {
    hdr.msg_control = ptr::addr_of_mut!(*cmsg).cast();
    hdr.msg_controllen = RECV_CMSG_SPACE as _;
}

/// The segment size of the `UDP_GRO` control message the kernel wrote for `hdr`, or 0 when
/// there is none (a datagram that was not coalesced).
///
/// # Safety
///
/// `hdr` must be a header the kernel has just filled by `recvmsg`/`recvmmsg`: its
/// `msg_control` is null or points at a buffer aligned for `cmsghdr` of at least the
/// `msg_controllen` bytes the kernel reported, all written by the kernel.
// SAFETY: callers must uphold the contract above, since the control-message walk trusts
// `hdr`; each block inside states what it relies on, and both callers pass a header
// the kernel has just filled.
unsafe fn gro_segment(hdr: &libc::msghdr) -> usize {
    if hdr.msg_control.is_null() {
        return 0;
    }
    // SAFETY: per the contract, the control buffer holds `msg_controllen` initialised,
    // aligned bytes; `CMSG_FIRSTHDR` returns null unless a whole `cmsghdr` fits.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    // Each step moves forward by at least one aligned header (`CMSG_NXTHDR` returns null
    // at the end of the buffer or for a length shorter than a header), so this ends; the
    // bound is a second guard.
    for _ in 0..RECV_CMSG_SPACE {
        if cmsg.is_null() {
            break;
        }
        // SAFETY: non-null results of `CMSG_FIRSTHDR`/`CMSG_NXTHDR` point at a whole
        // `cmsghdr` inside the control buffer.
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_UDP
            && c.cmsg_type == libc::UDP_GRO
            && c.cmsg_len as usize >= GRO_CMSG_LEN
        {
            // SAFETY: `cmsg_len` covers the header and an `int` of data, inside the buffer
            // (the kernel never reports a message longer than the control buffer it
            // filled); the data may be unaligned for `c_int`, hence `read_unaligned`.
            let seg = unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
            return usize::try_from(seg).unwrap_or(0);
        }
        // SAFETY: `hdr` describes the buffer `cmsg` lies in (see above).
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    0
}

/// The result of one `recvmmsg` call, served one datagram at a time.
///
/// Each of the [`MAX_BATCH`] slots holds one received message: a datagram, or a buffer of
/// datagrams the kernel coalesced (GRO, reported by a `UDP_GRO` control message giving the
/// segment size: every datagram of the buffer has that size but the last, which may be
/// shorter). [`pop`](RecvRing::pop) splits such a buffer back into its datagrams, all with
/// the buffer's source address.
///
/// The ring reserves `MAX_BATCH × SLOT_LEN` bytes (2 MiB) of *capacity* once and never
/// initialises it: only the kernel writes there (and [`stash`](RecvRing::stash), which
/// copies bytes in), and only the bytes of the messages it delivers, so the resident cost
/// is the pages datagrams actually land in (one 4 KiB page per slot in use for datagrams of
/// up to 4 KiB). Bytes are read back only within the lengths the kernel reported.
pub(crate) struct RecvRing {
    /// `len() == 0`, `capacity() >= MAX_BATCH * SLOT_LEN`. Written by the kernel (and
    /// `stash`) only.
    mem: Vec<u8>,
    lens: [usize; MAX_BATCH],
    /// The GRO segment size of each slot; 0 when the slot holds one datagram.
    segs: [usize; MAX_BATCH],
    from: [Option<SocketAddr>; MAX_BATCH],
    /// Control buffers, one per slot (used when GRO is on).
    cmsgs: [RecvCmsg; MAX_BATCH],
    /// Source addresses, one per slot, written by the kernel (read back within the length
    /// it reported; initialised once, so reading them never sees uninitialised bytes).
    names: [libc::sockaddr_storage; MAX_BATCH],
    filled: usize,
    next: usize,
    /// Offset of the next datagram inside slot `next` (a coalesced buffer).
    off: usize,
    /// How many datagrams were longer than a slot (cannot happen for UDP; counted anyway).
    truncated: u64,
    /// Coalesced buffers received and the datagrams they held, since the last
    /// [`take_coalesced`](RecvRing::take_coalesced).
    coalesced: (u64, u64),
}

impl std::fmt::Debug for RecvRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvRing")
            .field("filled", &self.filled)
            .field("next", &self.next)
            .field("off", &self.off)
            .finish()
    }
}

/// How many datagrams a message of `len` bytes with GRO segment size `seg` holds.
fn datagrams_in(len: usize, seg: usize) -> usize {
    if seg == 0 || seg >= len {
        1
    } else {
        len.div_ceil(seg)
    }
}

impl RecvRing {
    /// An empty ring with its memory reserved (not touched).
    pub(crate) fn new() -> RecvRing {
        RecvRing {
            mem: Vec::with_capacity(MAX_BATCH * SLOT_LEN),
            lens: [0; MAX_BATCH],
            segs: [0; MAX_BATCH],
            from: [None; MAX_BATCH],
            // SAFETY: all-zero bytes are a valid value of this plain C union.
            cmsgs: unsafe { mem::zeroed() },
            // SAFETY: as above.
            names: unsafe { mem::zeroed() },
            filled: 0,
            next: 0,
            off: 0,
            truncated: 0,
            coalesced: (0, 0),
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

    /// The coalesced (GRO) buffers received and the datagrams they held since the last
    /// call, and reset both.
    pub(crate) fn take_coalesced(&mut self) -> (u64, u64) {
        mem::take(&mut self.coalesced)
    }

    /// The next received datagram and its source, or `None` when the ring is empty.
    /// Datagrams whose source address could not be decoded are skipped. A coalesced buffer
    /// is handed out one datagram (one segment) per call.
    pub(crate) fn pop(&mut self) -> Option<(&[u8], SocketAddr)> {
        while self.next < self.filled {
            let i = self.next;
            let Some(from) = self.from[i] else {
                self.next += 1;
                self.off = 0;
                continue;
            };
            let len = self.lens[i].min(SLOT_LEN);
            let seg = self.segs[i];
            let (at, n) = if seg == 0 || seg >= len {
                // One datagram (possibly empty).
                self.next += 1;
                self.off = 0;
                (0, len)
            } else {
                let at = self.off.min(len);
                let n = seg.min(len - at);
                self.off = at + n;
                if self.off >= len {
                    self.next += 1;
                    self.off = 0;
                }
                (at, n)
            };
            let start = i * SLOT_LEN + at;
            // SAFETY: `at + n <= len <= SLOT_LEN`, so `start + n <= MAX_BATCH * SLOT_LEN
            // <= capacity`: the range lies in the allocation. The kernel reported writing
            // `lens[i]` bytes at `i * SLOT_LEN` (its iovec for message `i` starts there and
            // is `SLOT_LEN` long), or `stash` copied them there, so these bytes are
            // initialised. Nothing writes to `mem` while the returned borrow of `self` lives.
            let data = unsafe { std::slice::from_raw_parts(self.mem.as_ptr().add(start), n) };
            return Some((data, from));
        }
        None
    }

    /// Put the rest of a coalesced buffer (its datagrams after the first, `seg` bytes each
    /// but the last), received by [`recv_msg`] into the caller's buffer, in the ring so that
    /// [`pop`](RecvRing::pop) hands them out next. Replaces the ring's contents: call it
    /// only when the ring is empty. Bytes beyond [`SLOT_LEN`] are dropped (cannot happen:
    /// the whole buffer came from a 64 KiB receive).
    pub(crate) fn stash(&mut self, rest: &[u8], seg: usize, from: SocketAddr) {
        debug_assert!(
            self.is_empty(),
            "stash into a ring that still holds datagrams"
        );
        let len = rest.len().min(SLOT_LEN);
        // SAFETY: `len <= SLOT_LEN <= capacity`, so the destination lies in the allocation;
        // `rest` is borrowed from another buffer (it cannot alias `mem`, which only this
        // ring accesses and which `&mut self` borrows exclusively). The bytes written are
        // then initialised, which `pop` relies on.
        unsafe { ptr::copy_nonoverlapping(rest.as_ptr(), self.mem.as_mut_ptr(), len) };
        self.lens[0] = len;
        self.segs[0] = seg;
        self.from[0] = Some(from);
        self.filled = 1;
        self.next = 0;
        self.off = 0;
        // The first datagram of the buffer went to the caller directly.
        self.coalesced.0 += 1;
        self.coalesced.1 += 1 + datagrams_in(len, seg) as u64;
    }

    /// Receive up to [`MAX_BATCH`] messages from `fd` without blocking, replacing the
    /// ring's contents (call it once [`pop`](RecvRing::pop) returned `None`). With `gro`,
    /// each message gets a control buffer and a coalesced buffer's segment size is read from
    /// its `UDP_GRO` control message. Returns how many messages arrived (a coalesced buffer
    /// counts once); errors are the syscall's (`WouldBlock` when none is pending).
    pub(crate) fn recv(&mut self, fd: RawFd, gro: bool) -> io::Result<usize> {
        self.recv_up_to::<MAX_BATCH>(fd, gro, false)
    }

    /// [`recv`](RecvRing::recv) of at most [`FEW`] messages: the receive outside a burst.
    /// Its headers are a few hundred bytes to clear instead of the full batch's 6.6 KiB,
    /// and a result below `FEW` still tells that the socket was found empty.
    pub(crate) fn recv_few(&mut self, fd: RawFd, gro: bool) -> io::Result<usize> {
        self.recv_up_to::<FEW>(fd, gro, false)
    }

    /// [`recv_few`](RecvRing::recv_few) that first *sleeps* until a message arrives, for at
    /// most the socket's receive timeout (`SO_RCVTIMEO`; `WouldBlock` when it passed with
    /// nothing): `MSG_WAITFORONE`, so once one message is in the call takes what else is
    /// queued without waiting. Only for a socket in blocking mode (on a non-blocking one it
    /// is `recv_few`).
    pub(crate) fn recv_wait(&mut self, fd: RawFd, gro: bool) -> io::Result<usize> {
        self.recv_up_to::<FEW>(fd, gro, true)
    }

    /// `recvmmsg` of up to `N` (at most [`MAX_BATCH`]) messages into the first `N` slots;
    /// with `wait`, blocking for the first one (see [`recv_wait`](RecvRing::recv_wait)).
    fn recv_up_to<const N: usize>(
        &mut self,
        fd: RawFd,
        gro: bool,
        wait: bool,
    ) -> io::Result<usize> {
        const { assert!(N > 0 && N <= MAX_BATCH) };
        self.filled = 0;
        self.next = 0;
        self.off = 0;
        let base = self.mem.as_mut_ptr();
        // SAFETY: all-zero is a valid value for these plain C structs (null pointers,
        // zero lengths), and every field we rely on is set below. (The source addresses go
        // to the ring's own `names`, initialised once: 4 KiB less to clear per call.)
        let mut iovs: [libc::iovec; N] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; N] = unsafe { mem::zeroed() };
        let names = &mut self.names;
        for i in 0..N {
            // SAFETY: `i < N <= MAX_BATCH`, so `i * SLOT_LEN < MAX_BATCH * SLOT_LEN <=
            // capacity`: in bounds of the allocation (the pointer is only computed here,
            // written by the kernel).
            iovs[i].iov_base = unsafe { base.add(i * SLOT_LEN) }.cast();
            iovs[i].iov_len = SLOT_LEN;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = ptr::addr_of_mut!(names[i]).cast();
            msgs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            if gro {
                attach_recv_cmsg(&mut msgs[i].msg_hdr, &mut self.cmsgs[i]);
            }
        }
        // Never blocking, or (a socket in blocking mode) blocking for the first message only.
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: `msgs` holds `N` valid headers whose iovecs point at disjoint
        // `SLOT_LEN`-byte regions of `mem`'s capacity, whose names point at
        // `sockaddr_storage`s with their true size and whose control buffers (if any) are
        // the ring's `RECV_CMSG_SPACE`-byte, `cmsghdr`-aligned `cmsgs`; all outlive the
        // call. The timeout is null (none), and `fd` is a socket owned by the caller for
        // the call's duration.
        let n =
            unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), N as _, flags as _, ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(N);
        for (i, hdr) in msgs.iter().enumerate().take(n) {
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
            }
            let len = (hdr.msg_len as usize).min(SLOT_LEN);
            self.lens[i] = len;
            self.from[i] = decode_addr(&self.names[i], hdr.msg_hdr.msg_namelen);
            // SAFETY: the kernel just filled this header; its control buffer is null or
            // the slot's `cmsgs[i]`, of which it reported `msg_controllen` bytes.
            let seg = unsafe { gro_segment(&hdr.msg_hdr) };
            self.segs[i] = seg;
            if seg > 0 && seg < len {
                self.coalesced.0 += 1;
                self.coalesced.1 += datagrams_in(len, seg) as u64;
            }
        }
        self.filled = n;
        Ok(n)
    }
}

/// One message received by [`recv_msg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The source, `None` if its address family is not IPv4/IPv6.
    pub from: Option<SocketAddr>,
    /// The GRO segment size when the kernel coalesced several datagrams into the buffer,
    /// else 0.
    pub seg: usize,
    /// The message was longer than the buffer.
    pub truncated: bool,
}

/// One `recvmsg(2)` into `buf` without blocking, with a control buffer for the `UDP_GRO`
/// message of a GRO socket: the single-datagram receive path of a GRO socket (a plain
/// `recvfrom` cannot tell a coalesced buffer from one large datagram).
pub(crate) fn recv_msg(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero is a valid value for these plain C types.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut cmsg: RecvCmsg = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_name = ptr::addr_of_mut!(name).cast();
    hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
    attach_recv_cmsg(&mut hdr, &mut cmsg);
    // SAFETY: the iovec covers exactly `buf` (exclusively borrowed), the name points at a
    // `sockaddr_storage` of its true size and the control buffer at a `cmsghdr`-aligned
    // `RECV_CMSG_SPACE`-byte local; all outlive the call. `fd` is owned by the caller.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (n as usize).min(buf.len());
    // SAFETY: the kernel just filled `hdr`; its control buffer is `cmsg`, of which it
    // reported `msg_controllen` bytes.
    let seg = unsafe { gro_segment(&hdr) };
    Ok(Received {
        len,
        from: decode_addr(&name, hdr.msg_namelen),
        seg,
        truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
    })
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

/// One message of a send batch: the `count` items from `first`, to the destination of
/// the first. With `count > 1` the items must lie back to back in the byte buffer, go to the
/// same destination and all be `seg` bytes long except the last, which may be shorter
/// (but not empty); they then go out as one message with a `UDP_SEGMENT` control message
/// of `seg`, which the kernel (or the NIC) splits into those datagrams (GSO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendMsg {
    pub first: usize,
    pub count: usize,
    /// The segment size: the length of the first item.
    pub seg: usize,
    /// Total bytes of the items.
    pub bytes: usize,
}

impl SendMsg {
    /// A message of the one item `index`, `len` bytes long.
    pub(crate) fn single(index: usize, len: usize) -> SendMsg {
        SendMsg {
            first: index,
            count: 1,
            seg: len,
            bytes: len,
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// Send `msgs` (at most [`MAX_BATCH`] are looked at) with one `sendmmsg` call; the
/// messages' items are `items`, their bytes in `bytes`. Returns how many messages the
/// kernel took, from the first: `Ok(k)` with `k < msgs.len()` means message `k` failed and
/// the next call starting there reports why. A message whose items are not in `items`,
/// whose bytes are not inside `bytes`, or whose segmentation is not one the kernel splits
/// back into exactly its items (see [`SendMsg`]; at most [`GSO_MAX_SEGMENTS`] items and
/// [`GSO_MAX_BYTES`] bytes) is refused with `InvalidInput` before any syscall.
pub(crate) fn send_batch(
    fd: RawFd,
    bytes: &[u8],
    items: &[SendItem],
    msgs: &[SendMsg],
) -> io::Result<usize> {
    let msgs = &msgs[..msgs.len().min(MAX_BATCH)];
    if msgs.is_empty() {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value for these plain C structs and unions.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut cmsgs: [SendCmsg; MAX_BATCH] = unsafe { mem::zeroed() };
    for (i, msg) in msgs.iter().enumerate() {
        let run = msg
            .first
            .checked_add(msg.count)
            .and_then(|end| items.get(msg.first..end))
            .filter(|run| !run.is_empty())
            .ok_or_else(|| invalid("send batch message outside its items"))?;
        let (head, last) = (&run[0], &run[run.len() - 1]);
        let data = last
            .start
            .checked_add(last.len)
            .and_then(|end| bytes.get(head.start..end))
            .ok_or_else(|| invalid("send batch item outside its buffer"))?;
        if run.len() > 1 {
            // The kernel cuts `data` into `seg`-byte datagrams: only a run that is exactly
            // that (back to back, all `seg` long but a non-empty shorter last) comes out as
            // the items, so check it rather than trust the caller.
            let seg = head.len;
            let exact = seg > 0
                && run.len() <= GSO_MAX_SEGMENTS
                && data.len() <= GSO_MAX_BYTES
                && msg.seg == seg
                && run
                    .windows(2)
                    .all(|w| w[0].start + w[0].len == w[1].start && w[0].target == w[1].target)
                && run[..run.len() - 1].iter().all(|it| it.len == seg)
                && (1..=seg).contains(&last.len);
            let seg = u16::try_from(seg).ok().filter(|_| exact);
            let Some(seg) = seg else {
                return Err(invalid("send batch message is not a valid GSO run"));
            };
            let hdr = &mut hdrs[i].msg_hdr;
            hdr.msg_control = ptr::addr_of_mut!(cmsgs[i]).cast();
            hdr.msg_controllen = SEGMENT_CMSG_SPACE as _;
            // SAFETY: `msg_control` points at `cmsgs[i]`, `SEGMENT_CMSG_SPACE` bytes aligned
            // for `cmsghdr`, which is at least a header long, so `CMSG_FIRSTHDR` returns
            // that pointer (non-null).
            let c = unsafe { libc::CMSG_FIRSTHDR(hdr) };
            debug_assert!(!c.is_null());
            // SAFETY: `c` points at the start of `cmsgs[i]`; the header and its `u16` of
            // data (`CMSG_LEN(2) <= CMSG_SPACE(2)` bytes) lie inside it. The data offset
            // may not be aligned for `u16` on every target, hence `write_unaligned`.
            unsafe {
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = SEGMENT_CMSG_LEN as _;
                ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
            }
        }
        // The kernel only reads through this pointer (sendmmsg's iovecs are input).
        iovs[i].iov_base = data.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = data.len();
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        if let Some(to) = &head.to {
            hdrs[i].msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
            hdrs[i].msg_hdr.msg_namelen = to.len();
        }
    }
    // SAFETY: the first `msgs.len()` headers are valid: each iovec points into `bytes`
    // (checked above), each name at a `SockAddr` of the stated length, each control buffer
    // (GSO messages only) at a filled `SendCmsg` of the stated length, all borrowed or
    // owned for the duration of the call; `fd` is a socket owned by the caller.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr(),
            msgs.len() as _,
            libc::MSG_DONTWAIT as _,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize).min(msgs.len()))
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

    /// One message per item.
    fn singles(items: &[SendItem]) -> Vec<SendMsg> {
        items
            .iter()
            .enumerate()
            .map(|(i, it)| SendMsg::single(i, it.len))
            .collect()
    }

    /// Items of the given lengths, back to back from 0, all to `to`.
    fn items_of(lens: &[usize], to: SocketAddr) -> Vec<SendItem> {
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                let it = SendItem {
                    start,
                    len,
                    to: Some(SockAddr::from(to)),
                    target: to,
                };
                start += len;
                it
            })
            .collect()
    }

    /// One message holding every item (a GSO run when there are several).
    fn run_of(items: &[SendItem]) -> SendMsg {
        SendMsg {
            first: 0,
            count: items.len(),
            seg: items[0].len,
            bytes: items.iter().map(|it| it.len).sum(),
        }
    }

    /// Bytes `0, 1, 2, ...` (mod 251, so datagram boundaries do not line up with a cycle).
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// Receive with a std socket until `count` datagrams arrived or a second passed.
    fn std_recv_n(rx: &std::net::UdpSocket, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        rx.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while got.len() < count && std::time::Instant::now() < deadline {
            if let Ok((n, from)) = rx.recv_from(&mut buf) {
                got.push((buf[..n].to_vec(), from));
            }
        }
        got
    }

    /// Receive with a ring until `count` datagrams were popped or a second passed.
    fn ring_recv_n(
        ring: &mut RecvRing,
        fd: RawFd,
        gro: bool,
        count: usize,
    ) -> (Vec<(Vec<u8>, SocketAddr)>, usize) {
        let mut got = Vec::new();
        let mut messages = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while got.len() < count && std::time::Instant::now() < deadline {
            match ring.recv(fd, gro) {
                Ok(n) => messages += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            while let Some((data, from)) = ring.pop() {
                got.push((data.to_vec(), from));
            }
        }
        (got, messages)
    }

    #[test]
    fn cmsg_sizes_match_the_kernel_abi() {
        let hdr = mem::size_of::<libc::cmsghdr>();
        let align = mem::size_of::<usize>();
        let aligned_hdr = hdr.div_ceil(align) * align;
        assert_eq!(SEGMENT_CMSG_LEN, aligned_hdr + 2);
        assert_eq!(SEGMENT_CMSG_SPACE, aligned_hdr + align);
        assert_eq!(GRO_CMSG_LEN, aligned_hdr + 4);
        assert!(RECV_CMSG_SPACE >= aligned_hdr + 4_usize.div_ceil(align) * align);
        assert_eq!(mem::size_of::<SendCmsg>(), SEGMENT_CMSG_SPACE);
        assert!(mem::align_of::<SendCmsg>() >= mem::align_of::<libc::cmsghdr>());
        assert!(mem::align_of::<RecvCmsg>() >= mem::align_of::<libc::cmsghdr>());
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
        let items = [item];
        let err = send_batch(s.as_raw_fd(), b"abc", &items, &singles(&items)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let beyond = SendMsg::single(1, 1);
        let err = send_batch(s.as_raw_fd(), b"abc", &items, &[beyond]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(send_batch(s.as_raw_fd(), b"", &[], &[]).unwrap(), 0);
    }

    #[test]
    fn send_batch_rejects_runs_the_kernel_would_cut_differently() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = s.local_addr().unwrap();
        let fd = s.as_raw_fd();
        let bytes = pattern(70_000);
        let refused = |lens: &[usize]| {
            let items = items_of(lens, to);
            let err = send_batch(fd, &bytes, &items, &[run_of(&items)]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{lens:?}");
        };
        refused(&[10, 20]); // longer after shorter
        refused(&[10, 5, 5]); // a short datagram before the last
        refused(&[10, 0]); // an empty last one would vanish
        refused(&[0, 0]); // segment size 0 means no segmentation
        refused(&[1; 65]); // more than UDP_MAX_SEGMENTS
        refused(&[33_000, 33_000]); // more than one IPv4 packet
                                    // A run whose items are not back to back, or go to different peers.
        let mut items = items_of(&[10, 10], to);
        items[1].start += 1;
        let err = send_batch(fd, &bytes, &items, &[run_of(&items)]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut items = items_of(&[10, 10], to);
        items[1].target = "127.0.0.1:9".parse().unwrap();
        let err = send_batch(fd, &bytes, &items, &[run_of(&items)]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // A run whose stated segment size is not its first item's length.
        let items = items_of(&[10, 10], to);
        let mut msg = run_of(&items);
        msg.seg = 5;
        let err = send_batch(fd, &bytes, &items, &[msg]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
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
        assert_eq!(
            send_batch(tx.as_raw_fd(), &bytes, &items, &singles(&items)).unwrap(),
            10
        );
        let mut ring = RecvRing::new();
        let (got, _) = ring_recv_n(&mut ring, rx.as_raw_fd(), false, 10);
        assert!(got
            .iter()
            .all(|(_, from)| *from == tx.local_addr().unwrap()));
        let got: Vec<u8> = got.into_iter().flat_map(|(d, _)| d).collect();
        assert_eq!(got, bytes);
        assert_eq!(ring.truncated(), 0);
    }

    #[test]
    fn gso_run_arrives_as_separate_datagrams() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if !gso_supported(tx.as_raw_fd()) {
            eprintln!("no UDP_SEGMENT; skipping");
            return;
        }
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        // 20 datagrams of 1000 bytes and a short last one, as one GSO message, then a
        // plain datagram in the same sendmmsg.
        let mut lens = vec![1000; 20];
        lens.push(77);
        lens.push(5);
        let items = items_of(&lens, to);
        let msgs = [run_of(&items[..21]), SendMsg::single(21, 5)];
        let bytes = pattern(lens.iter().sum());
        assert_eq!(
            send_batch(tx.as_raw_fd(), &bytes, &items, &msgs).unwrap(),
            2
        );
        let got = std_recv_n(&rx, lens.len());
        assert_eq!(got.len(), lens.len());
        let mut at = 0;
        for ((data, from), len) in got.iter().zip(&lens) {
            assert_eq!(*from, tx.local_addr().unwrap());
            assert_eq!(data[..], bytes[at..at + len]);
            at += len;
        }
    }

    #[test]
    fn gro_socket_gets_a_coalesced_buffer_and_the_ring_splits_it() {
        for (a, b) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let Ok(tx) = std::net::UdpSocket::bind(a) else {
                eprintln!("{a} unavailable; skipping");
                continue;
            };
            if !gso_supported(tx.as_raw_fd()) {
                eprintln!("no UDP_SEGMENT; skipping");
                return;
            }
            let rx = std::net::UdpSocket::bind(b).unwrap();
            rx.set_nonblocking(true).unwrap();
            if set_gro(rx.as_raw_fd(), true).is_err() {
                eprintln!("no UDP_GRO; skipping");
                return;
            }
            assert!(gro_enabled(rx.as_raw_fd()).unwrap());
            let to = rx.local_addr().unwrap();
            let lens = [1200, 1200, 1200, 1200, 300];
            let items = items_of(&lens, to);
            let bytes = pattern(lens.iter().sum());
            // Twice: the ring path (recvmmsg), then the single path (recvmsg).
            send_batch(tx.as_raw_fd(), &bytes, &items, &[run_of(&items)]).unwrap();
            let mut ring = RecvRing::new();
            let (got, messages) = ring_recv_n(&mut ring, rx.as_raw_fd(), true, lens.len());
            assert_eq!(
                messages, 1,
                "loopback hands a GSO send to a GRO socket whole"
            );
            assert_eq!(ring.take_coalesced(), (1, lens.len() as u64));
            let mut at = 0;
            assert_eq!(got.len(), lens.len());
            for ((data, from), len) in got.iter().zip(&lens) {
                assert_eq!(*from, tx.local_addr().unwrap());
                assert_eq!(data[..], bytes[at..at + len]);
                at += len;
            }
            send_batch(tx.as_raw_fd(), &bytes, &items, &[run_of(&items)]).unwrap();
            let mut buf = vec![0u8; SLOT_LEN];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            let got = loop {
                match recv_msg(rx.as_raw_fd(), &mut buf) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(std::time::Instant::now() < deadline, "nothing arrived");
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(
                got,
                Received {
                    len: bytes.len(),
                    from: Some(tx.local_addr().unwrap()),
                    seg: 1200,
                    truncated: false
                }
            );
            assert_eq!(buf[..got.len], bytes[..]);
            // The rest of the buffer, stashed, comes out as its datagrams.
            ring.stash(&buf[1200..got.len], 1200, tx.local_addr().unwrap());
            let rest: Vec<Vec<u8>> =
                std::iter::from_fn(|| ring.pop().map(|(d, _)| d.to_vec())).collect();
            assert_eq!(rest.len(), lens.len() - 1);
            assert_eq!(rest.concat(), bytes[1200..]);
            assert_eq!(ring.take_coalesced(), (1, lens.len() as u64));
            assert!(ring.pop().is_none());
        }
    }

    #[test]
    fn plain_datagrams_on_a_gro_socket_have_no_segment() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if set_gro(rx.as_raw_fd(), true).is_err() {
            eprintln!("no UDP_GRO; skipping");
            return;
        }
        let to = rx.local_addr().unwrap();
        for d in [&b""[..], b"one", b"two"] {
            tx.send_to(d, to).unwrap();
        }
        let mut ring = RecvRing::new();
        let (got, _) = ring_recv_n(&mut ring, rx.as_raw_fd(), true, 3);
        let data: Vec<&[u8]> = got.iter().map(|(d, _)| &d[..]).collect();
        assert_eq!(data, [&b""[..], b"one", b"two"]);
        assert_eq!(ring.take_coalesced(), (0, 0));
    }

    #[test]
    fn no_check_sockets_refuse_gso_with_einval() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if !gso_supported(tx.as_raw_fd()) {
            eprintln!("no UDP_SEGMENT; skipping");
            return;
        }
        set_no_check(tx.as_raw_fd()).unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let items = items_of(&[100, 100], rx.local_addr().unwrap());
        let err = send_batch(tx.as_raw_fd(), &pattern(200), &items, &[run_of(&items)]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        // The same datagrams one by one go through.
        assert_eq!(
            send_batch(tx.as_raw_fd(), &pattern(200), &items, &singles(&items)).unwrap(),
            2
        );
        assert_eq!(std_recv_n(&rx, 2).len(), 2);
    }
}
