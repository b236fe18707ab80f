//! Connection and endpoint statistics.

/// Counters and gauges of one connection (like ENet's per-peer or GameNetworkingSockets'
/// connection status). Counters start at zero when the connection is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Round-trip time measured by kcp2k Ping/Pong, in ms (`None` until the first Pong).
    pub rtt_ms: Option<u32>,
    /// KCP's smoothed RTT from its ACKs, in ms (0 before the first sample).
    pub srtt_ms: u32,
    /// KCP's current retransmission timeout, in ms.
    pub rto_ms: u32,
    /// Datagrams sent (all channels).
    pub datagrams_sent: u64,
    /// Datagrams received and accepted.
    pub datagrams_received: u64,
    /// Bytes sent, kcp2k header included.
    pub bytes_sent: u64,
    /// Bytes received in accepted datagrams.
    pub bytes_received: u64,
    /// Reliable messages queued by the application.
    pub reliable_sent: u64,
    /// Reliable messages delivered to the application.
    pub reliable_received: u64,
    /// Unreliable messages sent.
    pub unreliable_sent: u64,
    /// Unreliable messages delivered to the application.
    pub unreliable_received: u64,
    /// KCP segments retransmitted after a timeout.
    pub retransmits: u64,
    /// KCP segments retransmitted early (fast resend).
    pub fast_retransmits: u64,
    /// Datagrams dropped on receive: wrong cookie, malformed, or rejected by KCP.
    pub datagrams_dropped: u64,
    /// Datagrams not sent: the anti-amplification budget of a half-open peer, or a full
    /// socket send buffer.
    pub sends_dropped: u64,
    /// Segments waiting to enter the send window (backlog).
    pub send_queue: u32,
    /// Segments sent and not yet acknowledged.
    pub in_flight: u32,
    /// Segments received and waiting to be taken by the application.
    pub recv_queue: u32,
    /// Segments received out of order, waiting for the gap to fill.
    pub recv_buffer: u32,
    /// The peer's last advertised receive window, in segments.
    pub remote_window: u32,
    /// KCP segments refused on input, by reason (beyond the window, duplicates, oversized,
    /// ACKs or `una` for data never sent, bad fragment counts): see `docs/PROTOCOL.md`.
    pub input_drops: crate::kcp::InputDrops,
}

impl ConnectionStats {
    /// Fraction of sent KCP segments that had to be retransmitted: a loss estimate in 0..=1
    /// (0 when nothing was sent).
    pub fn retransmit_ratio(&self) -> f64 {
        let sent = self.datagrams_sent as f64;
        if sent == 0.0 {
            0.0
        } else {
            ((self.retransmits + self.fast_retransmits) as f64 / sent).min(1.0)
        }
    }
}

/// Counters of a whole server (or client) endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams read from the socket.
    pub datagrams_received: u64,
    /// Datagrams written to the socket.
    pub datagrams_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Datagrams from unknown endpoints that were neither a valid Hello nor carried a cookie
    /// that verifies (dropped, no state, no reply).
    pub dropped_unknown: u64,
    /// Valid Hellos from unknown endpoints answered with the stateless reply (nothing stored).
    pub hello_replies: u64,
    /// Peers that proved their address while `max_connections` was reached (dropped).
    pub dropped_limit: u64,
    /// Datagrams dropped by a connection (bad cookie, malformed, KCP-invalid).
    pub dropped_invalid: u64,
    /// Sends the socket refused (its buffer was full) or that failed.
    pub send_errors: u64,
    /// Connections that completed the handshake.
    pub connections_accepted: u64,
    /// Connections currently in the table.
    pub connections: usize,
}
