//! [`PacketCounter`]: a [`Transport`] that wraps a [`UdpTransport`] and counts the datagrams
//! and bytes going each way. Used by `examples/packet_counter.rs` and by
//! `tests/transport_wrapper.rs`.
//!
//! It shows what every wrapper of a transport must do: besides `recv_from`, `send_to` and
//! `local_addr`, forward [`Transport::poll`] (which sends the datagrams a batching
//! `UdpTransport` queued, and reports the ones dropped since), [`Transport::next_wakeup`] and
//! [`Transport::wait`]. The trait has no default methods, so forgetting one does not compile.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kcpnet::io::{PollReport, Transport, UdpTransport};

/// What a [`PacketCounter`] counted, shared with the application (the counter itself ends
/// up boxed inside a `Server` or `Client`).
#[derive(Debug, Default)]
pub struct Counts {
    /// Datagrams the socket accepted (`send_to` returned `Ok(true)`), less those the poll
    /// reported dropped afterwards.
    pub datagrams_sent: AtomicU64,
    /// Bytes of the datagrams `send_to` accepted.
    pub bytes_sent: AtomicU64,
    /// Datagrams received.
    pub datagrams_received: AtomicU64,
    /// Bytes received.
    pub bytes_received: AtomicU64,
    /// Datagrams `send_to` accepted that the socket dropped later (reported by `poll`).
    pub send_drops: AtomicU64,
    /// GSO messages the socket sent (several datagrams in one trip through the kernel), as
    /// of the last poll.
    pub gso_messages: AtomicU64,
    /// Coalesced GRO buffers the socket received, as of the last poll.
    pub gro_buffers: AtomicU64,
}

impl Counts {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A [`UdpTransport`] that counts what it carries into a shared [`Counts`].
#[derive(Debug)]
pub struct PacketCounter {
    inner: UdpTransport,
    counts: Arc<Counts>,
}

impl PacketCounter {
    /// Wraps `inner`; the counts start at zero.
    pub fn new(inner: UdpTransport) -> PacketCounter {
        PacketCounter {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counts, to keep once the counter is handed to a driver.
    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }
}

impl Transport for PacketCounter {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let got = self.inner.recv_from(buf, now)?;
        if let Some((len, _)) = got {
            add(&self.counts.datagrams_received, 1);
            add(&self.counts.bytes_received, len as u64);
        }
        Ok(got)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> io::Result<bool> {
        let sent = self.inner.send_to(data, to, now)?;
        if sent {
            add(&self.counts.datagrams_sent, 1);
            add(&self.counts.bytes_sent, data.len() as u64);
        }
        Ok(sent)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Forwarded: this is where a batching socket sends what `send_to` queued. The report
    /// goes back to the driver unchanged; the counter only takes note of the drops.
    fn poll(&mut self, now: Duration) -> io::Result<PollReport> {
        let report = self.inner.poll(now)?;
        let c = &self.counts;
        c.datagrams_sent.fetch_sub(
            report.send_drops.min(Counts::get(&c.datagrams_sent)),
            Ordering::Relaxed,
        );
        add(&c.send_drops, report.send_drops);
        let offload = self.inner.offload_stats();
        c.gso_messages
            .store(offload.gso_messages, Ordering::Relaxed);
        c.gro_buffers.store(offload.gro_buffers, Ordering::Relaxed);
        Ok(report)
    }

    /// Forwarded: the socket is due at once while its send batch holds datagrams.
    fn next_wakeup(&self) -> Option<Duration> {
        self.inner.next_wakeup()
    }

    /// Forwarded: the socket sends its batch, then sleeps in the OS poller.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.wait(timeout)
    }
}
