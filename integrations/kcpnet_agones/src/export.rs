//! A kcpnet server's figures through the [`metrics`] facade, and a tiny `/metrics` endpoint.
//!
//! [`ServerMetrics::record`] reads [`kcpnet::Server::stats`] and every connection's
//! [`kcpnet::ConnectionQuality`] and publishes them through whatever recorder the process
//! installed (Prometheus, StatsD, …); without one it costs a few atomic no-ops. Call it a
//! few times per second from the game loop (not every frame for thousands of connections:
//! it visits every connection). [`MetricsServer`] serves a Prometheus recorder's text on
//! `GET /metrics` from its own thread.
//!
//! | metric | kind | from |
//! |---|---|---|
//! | `kcpnet_datagrams_received_total`, `kcpnet_datagrams_sent_total` | counter | `EndpointStats::datagrams_received` / `datagrams_sent` |
//! | `kcpnet_bytes_received_total`, `kcpnet_bytes_sent_total` | counter | `bytes_received` / `bytes_sent` |
//! | `kcpnet_dropped_datagrams_total{cause}` | counter | `cause` = `unknown`, `after_close`, `limit`, `invalid`: `dropped_*` |
//! | `kcpnet_send_errors_total` | counter | `send_errors` |
//! | `kcpnet_hello_replies_total` | counter | `hello_replies` (stateless handshake replies) |
//! | `kcpnet_refused_draining_total` | counter | `refused_draining` |
//! | `kcpnet_connections_accepted_total` | counter | `connections_accepted` |
//! | `kcpnet_connections` | gauge | `connections` |
//! | `kcpnet_shared_buffer_bytes` | gauge | `shared_buffer_bytes` |
//! | `kcpnet_send_queue_bytes{stat}` | gauge | `stat` = `sum`, `max`: `ConnectionQuality::pending_reliable_bytes` over connections |
//! | `kcpnet_rtt_ms{quantile}` | gauge | `ConnectionQuality::kcp_rtt_ms` (KCP's smoothed RTT) across connections |
//! | `kcpnet_loss_ratio{quantile}` | gauge | `ConnectionQuality::loss_estimate()` (outgoing datagram loss, or the retransmission ratio with a kcp2k peer) across connections |
//! | `kcpnet_draining` | gauge | 1 once `Server::begin_drain` was called |
//!
//! The quantiles are `0` (minimum), `0.5`, `0.9`, `0.99` and `1` (maximum), nearest-rank,
//! over the connections of the last `record`; with no connection they are not updated.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kcpnet::{ConnectionId, EndpointStats, Server};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusHandle;

/// The quantiles published for RTT and loss.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.0, "0"),
    (0.5, "0.5"),
    (0.9, "0.9"),
    (0.99, "0.99"),
    (1.0, "1"),
];

/// A summary of what [`ServerMetrics::record`] published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// The endpoint's counters at the time of the recording.
    pub stats: EndpointStats,
    /// RTT quantiles in ms, in the order of [`QUANTILES`] (empty with no connection).
    pub rtt_ms: Vec<u32>,
    /// Loss quantiles (0..=1), in the order of [`QUANTILES`] (empty with no connection).
    pub loss: Vec<f32>,
    /// Reliable bytes queued over all connections.
    pub send_queue_bytes: usize,
    /// The most reliable bytes queued on one connection.
    pub send_queue_bytes_max: usize,
    /// Whether the server is draining.
    pub draining: bool,
}

/// Publishes a server's figures through the `metrics` facade (see the module docs for the
/// names). Holds scratch buffers so that recording allocates nothing in steady state.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    ids: Vec<ConnectionId>,
    rtts: Vec<u32>,
    losses: Vec<f32>,
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    let last = sorted.len() - 1;
    let rank = (q * last as f64).round() as usize;
    sorted[rank.min(last)]
}

impl ServerMetrics {
    /// A recorder with empty scratch buffers.
    pub fn new() -> ServerMetrics {
        ServerMetrics::default()
    }

    /// Reads the server's statistics and connection qualities and publishes them to the
    /// installed recorder; returns what it published.
    pub fn record(&mut self, server: &Server) -> MetricsSnapshot {
        let stats = server.stats();
        counter!("kcpnet_datagrams_received_total").absolute(stats.datagrams_received);
        counter!("kcpnet_datagrams_sent_total").absolute(stats.datagrams_sent);
        counter!("kcpnet_bytes_received_total").absolute(stats.bytes_received);
        counter!("kcpnet_bytes_sent_total").absolute(stats.bytes_sent);
        counter!("kcpnet_dropped_datagrams_total", "cause" => "unknown")
            .absolute(stats.dropped_unknown);
        counter!("kcpnet_dropped_datagrams_total", "cause" => "after_close")
            .absolute(stats.dropped_after_close);
        counter!("kcpnet_dropped_datagrams_total", "cause" => "limit")
            .absolute(stats.dropped_limit);
        counter!("kcpnet_dropped_datagrams_total", "cause" => "invalid")
            .absolute(stats.dropped_invalid);
        counter!("kcpnet_send_errors_total").absolute(stats.send_errors);
        counter!("kcpnet_hello_replies_total").absolute(stats.hello_replies);
        counter!("kcpnet_refused_draining_total").absolute(stats.refused_draining);
        counter!("kcpnet_connections_accepted_total").absolute(stats.connections_accepted);
        gauge!("kcpnet_connections").set(stats.connections as f64);
        gauge!("kcpnet_shared_buffer_bytes").set(stats.shared_buffer_bytes as f64);
        let draining = server.is_draining();
        gauge!("kcpnet_draining").set(if draining { 1.0 } else { 0.0 });

        server.connections_into(&mut self.ids);
        self.rtts.clear();
        self.losses.clear();
        let mut queued = 0usize;
        let mut queued_max = 0usize;
        for &id in &self.ids {
            if let Some(q) = server.connection_quality(id) {
                self.rtts.push(q.kcp_rtt_ms);
                let loss = q.loss_estimate().value;
                self.losses.push(if loss.is_finite() { loss } else { 0.0 });
                queued += q.pending_reliable_bytes;
                queued_max = queued_max.max(q.pending_reliable_bytes);
            }
        }
        gauge!("kcpnet_send_queue_bytes", "stat" => "sum").set(queued as f64);
        gauge!("kcpnet_send_queue_bytes", "stat" => "max").set(queued_max as f64);
        self.rtts.sort_unstable();
        self.losses.sort_unstable_by(f32::total_cmp);
        let mut snapshot = MetricsSnapshot {
            stats,
            send_queue_bytes: queued,
            send_queue_bytes_max: queued_max,
            draining,
            ..MetricsSnapshot::default()
        };
        if !self.rtts.is_empty() {
            for (q, label) in QUANTILES {
                let rtt = quantile(&self.rtts, q);
                let loss = quantile(&self.losses, q);
                gauge!("kcpnet_rtt_ms", "quantile" => label).set(rtt as f64);
                gauge!("kcpnet_loss_ratio", "quantile" => label).set(loss as f64);
                snapshot.rtt_ms.push(rtt);
                snapshot.loss.push(loss);
            }
        }
        snapshot
    }
}

/// Serves a Prometheus recorder's text on `GET /metrics` (any other path: 404) from its own
/// thread, one short connection at a time. Meant for loopback or a pod's metrics port:
/// there is no TLS and no authentication. Dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (for example `"127.0.0.1:9100"`, or port 0 for any free port) and starts
    /// serving `handle`'s rendering.
    pub fn bind(addr: impl ToSocketAddrs, handle: PrometheusHandle) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kcpnet-metrics-http".to_owned())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve_one(stream, &handle);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    // At most 8 KiB of request head is read.
    let mut head = 0usize;
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        head += n;
        if n == 0 || line == "\r\n" || line == "\n" || head > 8192 {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut stream = stream;
    if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = handle.render();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body.as_bytes())?;
    } else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1u32, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&v, 0.5), 6);
        assert_eq!(quantile(&v, 0.9), 10);
        assert_eq!(quantile(&v, 1.0), 11);
        assert_eq!(quantile(&[7u32], 0.99), 7);
    }
}
