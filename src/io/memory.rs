//! An in-memory datagram network for tests and simulations: no OS sockets.

use std::{
    collections::{HashMap, VecDeque},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use super::{AddrKey, PollReport, Transport};

/// The default per-socket queue capacity: 4 MiB.
const DEFAULT_QUEUE_CAPACITY: usize = 4 * 1024 * 1024;
/// The most datagrams one socket's queue holds, whatever their size (bounds
/// memory for floods of empty datagrams).
const MAX_QUEUE_DATAGRAMS: usize = 65_536;
/// The largest datagram accepted, as for UDP over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// The first port handed out for port-0 binds (the IANA ephemeral range).
const FIRST_EPHEMERAL_PORT: u16 = 49_152;
/// How many spare buffers the network keeps for reuse.
const MAX_FREE_BUFFERS: usize = 1024;
/// Spare buffers larger than this are freed rather than kept.
const MAX_KEPT_BUFFER: usize = 65_536;

/// Counters of a [`MemoryNetwork`], summed over all its sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Datagrams passed to `send_to` on any socket of the network.
    pub sent: u64,
    /// Datagrams placed in the destination socket's queue.
    pub delivered: u64,
    /// Datagrams taken out of a queue by `recv_from`.
    pub received: u64,
    /// Datagrams dropped, for either reason below
    /// (`dropped == unroutable + queue_full`).
    pub dropped: u64,
    /// Datagrams sent to an address no socket is bound to.
    pub unroutable: u64,
    /// Datagrams dropped because the destination's queue was full.
    pub queue_full: u64,
}

struct Datagram {
    from: SocketAddr,
    data: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    datagrams: VecDeque<Datagram>,
    bytes: usize,
}

struct Inner {
    sockets: HashMap<AddrKey, Queue>,
    /// How many sockets use each port (for port-0 allocation).
    ports: HashMap<u16, u32>,
    queue_capacity: usize,
    next_port: u16,
    free: Vec<Vec<u8>>,
    stats: MemoryStats,
}

impl Inner {
    fn port_in_use(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
    }

    /// The bound address a datagram to `to` is delivered to: an exact match,
    /// else a socket bound to the unspecified address of the same family on
    /// that port, else (for IPv4 destinations) one bound to `[::]` on that port.
    fn route(&self, to: SocketAddr) -> Option<SocketAddr> {
        if self.sockets.contains_key(&AddrKey(to)) {
            return Some(to);
        }
        let port = to.port();
        let wildcard_v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        let wildcard_v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let candidates: &[SocketAddr] = match to {
            SocketAddr::V4(_) => &[wildcard_v4, wildcard_v6],
            SocketAddr::V6(_) => &[wildcard_v6],
        };
        candidates
            .iter()
            .copied()
            .find(|a| self.sockets.contains_key(&AddrKey(*a)))
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < MAX_FREE_BUFFERS && buf.capacity() <= MAX_KEPT_BUFFER {
            buf.clear();
            self.free.push(buf);
        }
    }
}

/// An in-process datagram network: sockets bound on it exchange datagrams
/// through per-socket FIFO queues, with no OS sockets involved.
///
/// It behaves like an ideal UDP network: delivery is immediate (wrap a socket
/// in a [`LinkConditioner`](super::LinkConditioner) for loss and latency), a
/// datagram to an address nobody bound is silently dropped, and a datagram
/// that does not fit in the destination's queue (capacity in bytes, default
/// 4 MiB, at most 65 536 datagrams) is dropped. Both kinds of drop are
/// counted in [`stats`](MemoryNetwork::stats).
///
/// Routing: a datagram goes to the socket bound to exactly its destination
/// address; failing that, to a socket bound to the unspecified address
/// (`0.0.0.0` or `[::]`) on the destination port (`[::]` also receives IPv4
/// destinations, like a dual-mode socket). The source address a receiver sees
/// is the sender's bound address.
///
/// The network is a cheap handle (`Arc<Mutex<..>>` inside): clones refer to
/// the same network and it can be shared between threads.
#[derive(Clone)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Inner>>,
}

impl Default for MemoryNetwork {
    fn default() -> Self {
        MemoryNetwork::with_queue_capacity(DEFAULT_QUEUE_CAPACITY)
    }
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryNetwork")
            .field("sockets", &inner.sockets.len())
            .field("queue_capacity", &inner.queue_capacity)
            .field("stats", &inner.stats)
            .finish()
    }
}

impl MemoryNetwork {
    /// A new, empty network with the default per-socket queue capacity (4 MiB).
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    /// A new, empty network whose sockets each queue at most `bytes` bytes of
    /// undelivered datagrams (and at most 65 536 datagrams).
    pub fn with_queue_capacity(bytes: usize) -> MemoryNetwork {
        MemoryNetwork {
            inner: Arc::new(Mutex::new(Inner {
                sockets: HashMap::new(),
                ports: HashMap::new(),
                queue_capacity: bytes,
                next_port: FIRST_EPHEMERAL_PORT,
                free: Vec::new(),
                stats: MemoryStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock, but never propagate poison.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bind a socket to `addr`.
    ///
    /// Port 0 allocates a port no socket of this network uses, searching
    /// upward from 49152 (and wrapping around to 49152 after 65535).
    ///
    /// # Errors
    ///
    /// `AddrInUse` if a socket is already bound to exactly `addr`, or (for
    /// port 0) if every port from 49152 to 65535 is in use.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemorySocket> {
        let mut inner = self.lock();
        let addr = if addr.port() == 0 {
            let span = u32::from(u16::MAX - FIRST_EPHEMERAL_PORT) + 1;
            let mut chosen = None;
            let mut port = inner.next_port;
            for _ in 0..span {
                let candidate = port;
                port = if port == u16::MAX {
                    FIRST_EPHEMERAL_PORT
                } else {
                    port + 1
                };
                if !inner.port_in_use(candidate) {
                    chosen = Some(candidate);
                    break;
                }
            }
            inner.next_port = port;
            match chosen {
                Some(p) => SocketAddr::new(addr.ip(), p),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "no free port left in the memory network's ephemeral range",
                    ))
                }
            }
        } else {
            addr
        };
        if inner.sockets.contains_key(&AddrKey(addr)) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound on this memory network"),
            ));
        }
        inner.sockets.insert(AddrKey(addr), Queue::default());
        *inner.ports.entry(addr.port()).or_insert(0) += 1;
        Ok(MemorySocket {
            net: self.clone(),
            addr,
        })
    }

    /// Whether a socket is bound to exactly `addr`.
    pub fn is_bound(&self, addr: SocketAddr) -> bool {
        self.lock().sockets.contains_key(&AddrKey(addr))
    }

    /// How many datagrams are queued for the socket bound to `addr` (0 if
    /// none is).
    pub fn queued(&self, addr: SocketAddr) -> usize {
        self.lock()
            .sockets
            .get(&AddrKey(addr))
            .map_or(0, |q| q.datagrams.len())
    }

    /// The per-socket queue capacity in bytes.
    pub fn queue_capacity(&self) -> usize {
        self.lock().queue_capacity
    }

    /// The network's counters.
    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }
}

/// A socket bound on a [`MemoryNetwork`]; implements [`Transport`].
///
/// `send_to` never fails for routing reasons: like UDP, datagrams to unbound
/// addresses or full queues are silently dropped (and `Ok(true)` returned).
/// It rejects datagrams larger than 65 507 bytes with `InvalidInput`, as the
/// OS does for UDP. The `now` arguments are ignored. Dropping the socket
/// unbinds its address and discards its queue.
pub struct MemorySocket {
    net: MemoryNetwork,
    addr: SocketAddr,
}

impl std::fmt::Debug for MemorySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySocket")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MemorySocket {
    /// The network this socket is bound on.
    pub fn network(&self) -> &MemoryNetwork {
        &self.net
    }

    /// How many datagrams are waiting in this socket's queue.
    pub fn pending(&self) -> usize {
        self.net.queued(self.addr)
    }
}

impl Transport for MemorySocket {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        _now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let mut inner = self.net.lock();
        let Some(queue) = inner.sockets.get_mut(&AddrKey(self.addr)) else {
            return Ok(None);
        };
        let Some(datagram) = queue.datagrams.pop_front() else {
            return Ok(None);
        };
        queue.bytes = queue.bytes.saturating_sub(datagram.data.len());
        let len = datagram.data.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram.data[..len]);
        inner.stats.received += 1;
        inner.recycle(datagram.data);
        Ok(Some((len, datagram.from)))
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, _now: Duration) -> io::Result<bool> {
        if data.len() > MAX_DATAGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "datagram of {} bytes exceeds the {MAX_DATAGRAM}-byte maximum",
                    data.len()
                ),
            ));
        }
        let mut inner = self.net.lock();
        inner.stats.sent += 1;
        let Some(dest) = inner.route(to) else {
            inner.stats.unroutable += 1;
            inner.stats.dropped += 1;
            return Ok(true);
        };
        let capacity = inner.queue_capacity;
        let mut buf = inner.take_buffer();
        let net = &mut *inner;
        let queue = net.sockets.get_mut(&AddrKey(dest)).filter(|q| {
            q.datagrams.len() < MAX_QUEUE_DATAGRAMS
                && q.bytes
                    .checked_add(data.len())
                    .is_some_and(|b| b <= capacity)
        });
        let Some(queue) = queue else {
            net.stats.queue_full += 1;
            net.stats.dropped += 1;
            net.recycle(buf);
            return Ok(true);
        };
        buf.extend_from_slice(data);
        queue.bytes += data.len();
        queue.datagrams.push_back(Datagram {
            from: self.addr,
            data: buf,
        });
        net.stats.delivered += 1;
        Ok(true)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    /// Nothing to send later and nothing to report: delivery happens in `send_to`.
    fn poll(&mut self, _now: Duration) -> io::Result<PollReport> {
        Ok(PollReport::default())
    }

    /// `None`: nothing is ever held back.
    fn next_wakeup(&self) -> Option<Duration> {
        None
    }

    /// Returns at once: the network is driven by a virtual clock, and a datagram is either
    /// queued already or will only come from a `send_to` on this thread.
    fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        let mut inner = self.net.lock();
        if let Some(queue) = inner.sockets.remove(&AddrKey(self.addr)) {
            for datagram in queue.datagrams {
                inner.recycle(datagram.data);
            }
            let port = self.addr.port();
            if let Some(count) = inner.ports.get_mut(&port) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    inner.ports.remove(&port);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const T: Duration = Duration::ZERO;

    #[test]
    fn round_trip() {
        let net = MemoryNetwork::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
        assert!(a.send_to(b"one", addr("127.0.0.1:2000"), T).unwrap());
        assert!(a.send_to(b"two", addr("127.0.0.1:2000"), T).unwrap());
        assert_eq!(b.pending(), 2);
        let mut buf = [0u8; 16];
        let (n, from) = b.recv_from(&mut buf, T).unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&b"one"[..], addr("127.0.0.1:1000")));
        let (n, _) = b.recv_from(&mut buf, T).unwrap().unwrap();
        assert_eq!(&buf[..n], b"two");
        assert!(b.recv_from(&mut buf, T).unwrap().is_none());
        b.send_to(b"back", from, T).unwrap();
        let (n, from) = a.recv_from(&mut buf, T).unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], addr("127.0.0.1:2000")));
        let s = net.stats();
        assert_eq!((s.sent, s.delivered, s.received, s.dropped), (3, 3, 3, 0));
    }

    #[test]
    fn truncates_and_empty_datagrams() {
        let net = MemoryNetwork::new();
        let mut a = net.bind(addr("127.0.0.1:1")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2")).unwrap();
        a.send_to(b"0123456789", addr("127.0.0.1:2"), T).unwrap();
        a.send_to(b"", addr("127.0.0.1:2"), T).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(b.recv_from(&mut buf, T).unwrap().unwrap().0, 4);
        assert_eq!(&buf, b"0123");
        assert_eq!(b.recv_from(&mut buf, T).unwrap().unwrap().0, 0);
        let big = vec![0u8; 70_000];
        let err = a.send_to(&big, addr("127.0.0.1:2"), T).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn unknown_destination_is_dropped() {
        let net = MemoryNetwork::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        assert!(a.send_to(b"lost", addr("127.0.0.1:9999"), T).unwrap());
        let s = net.stats();
        assert_eq!((s.sent, s.delivered, s.dropped, s.unroutable), (1, 0, 1, 1));
    }

    #[test]
    fn addr_in_use_and_unbind_on_drop() {
        let net = MemoryNetwork::new();
        let a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let err = net.bind(addr("127.0.0.1:1000")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(net.is_bound(addr("127.0.0.1:1000")));
        drop(a);
        assert!(!net.is_bound(addr("127.0.0.1:1000")));
        let _again = net.bind(addr("127.0.0.1:1000")).unwrap();
    }

    #[test]
    fn port_zero_allocates_free_ports() {
        let net = MemoryNetwork::new();
        let taken = net.bind(addr("10.0.0.1:49152")).unwrap();
        let a = net.bind(addr("127.0.0.1:0")).unwrap();
        let b = net.bind(addr("127.0.0.1:0")).unwrap();
        let pa = a.local_addr().unwrap().port();
        let pb = b.local_addr().unwrap().port();
        assert!(pa >= 49152 && pb >= 49152);
        assert_ne!(pa, pb);
        assert_ne!(pa, taken.local_addr().unwrap().port());
        assert_eq!(a.local_addr().unwrap().ip(), addr("127.0.0.1:0").ip());
    }

    #[test]
    fn port_zero_exhaustion_is_an_error() {
        let net = MemoryNetwork::new();
        let mut sockets = Vec::new();
        for _ in 0..(65536 - 49152) {
            sockets.push(net.bind(addr("127.0.0.1:0")).unwrap());
        }
        let err = net.bind(addr("127.0.0.1:0")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        sockets.truncate(10);
        assert!(net.bind(addr("127.0.0.1:0")).is_ok());
    }

    #[test]
    fn queue_capacity_drops() {
        let net = MemoryNetwork::with_queue_capacity(1000);
        assert_eq!(net.queue_capacity(), 1000);
        let mut a = net.bind(addr("127.0.0.1:1")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2")).unwrap();
        let data = [7u8; 300];
        for _ in 0..5 {
            assert!(a.send_to(&data, addr("127.0.0.1:2"), T).unwrap());
        }
        let s = net.stats();
        assert_eq!((s.delivered, s.dropped, s.queue_full), (3, 2, 2));
        let mut buf = [0u8; 512];
        assert!(b.recv_from(&mut buf, T).unwrap().is_some());
        // Room for one more now.
        a.send_to(&data, addr("127.0.0.1:2"), T).unwrap();
        assert_eq!(net.stats().delivered, 4);
        let mut n = 0;
        while b.recv_from(&mut buf, T).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn wildcard_binding_receives() {
        let net = MemoryNetwork::new();
        let mut server = net.bind(addr("0.0.0.0:7777")).unwrap();
        let mut v6server = net.bind(addr("[::]:8888")).unwrap();
        let mut client = net.bind(addr("127.0.0.1:0")).unwrap();
        client.send_to(b"hi", addr("127.0.0.1:7777"), T).unwrap();
        client.send_to(b"v6", addr("127.0.0.1:8888"), T).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = server.recv_from(&mut buf, T).unwrap().unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(from, client.local_addr().unwrap());
        let (n, _) = v6server.recv_from(&mut buf, T).unwrap().unwrap();
        assert_eq!(&buf[..n], b"v6");
        server.send_to(b"ok", from, T).unwrap();
        let (n, from) = client.recv_from(&mut buf, T).unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&b"ok"[..], addr("0.0.0.0:7777")));
    }

    #[test]
    fn buffers_are_reused() {
        let net = MemoryNetwork::new();
        let mut a = net.bind(addr("127.0.0.1:1")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2")).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            a.send_to(&[1u8; 40], addr("127.0.0.1:2"), T).unwrap();
            b.recv_from(&mut buf, T).unwrap().unwrap();
        }
        assert_eq!(net.lock().free.len(), 1);
    }

    #[test]
    fn works_across_threads() {
        let net = MemoryNetwork::new();
        let mut a = net.bind(addr("127.0.0.1:1")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2")).unwrap();
        let handle = std::thread::spawn(move || {
            for i in 0..100u8 {
                a.send_to(&[i], addr("127.0.0.1:2"), T).unwrap();
            }
        });
        handle.join().unwrap();
        let mut buf = [0u8; 4];
        for i in 0..100u8 {
            let (n, _) = b.recv_from(&mut buf, T).unwrap().unwrap();
            assert_eq!(&buf[..n], &[i]);
        }
    }
}
