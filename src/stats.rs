//! Connection and endpoint statistics.

/// How good a connection's link is right now (like GameNetworkingSockets' connection status
/// or renet's `NetworkInfo`): [`crate::Server::connection_quality`],
/// [`crate::Client::connection_quality`], and [`ConnectionStats::quality`].
///
/// Rates and the loss estimate cover a recent window: the last [`QUALITY_WINDOW_MS`] of
/// whole 100 ms intervals (less while the connection is younger; `window_ms` says how
/// much), so traffic of the last 100 ms is not counted yet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionQuality {
    /// KCP's smoothed round-trip time from the ACKs of its segments, in ms (0 before the
    /// first sample): the link's RTT, what the retransmission timer uses.
    pub kcp_rtt_ms: u32,
    /// KCP's RTT variation (mean deviation), in ms.
    pub kcp_rtt_var_ms: u32,
    /// The round trip of the latest Ping/Pong, in ms (`None` until the first Pong). Pings
    /// travel in the reliable stream, so under load this includes the time spent queued
    /// behind reliable data: it is the application-level latency, not the link's. On a
    /// server whose client pings (the server then sends no Pings of its own, see
    /// `docs/PROTOCOL.md`), it is the round trip of the server's latest acknowledged Pong,
    /// updated once per ping interval.
    pub ping_rtt_ms: Option<u32>,
    /// Loss estimate in 0..=1: KCP segments retransmitted ÷ segments sent (retransmissions
    /// included) in the window; with independent loss `p` of data segments this is `p`.
    /// 0 when nothing was sent (see `loss_samples`). Lost ACKs that cause a retransmission
    /// count as loss too.
    pub loss: f32,
    /// KCP segments sent in the window: the sample behind `loss`.
    pub loss_samples: u32,
    /// Fraction of this side's unreliable messages the peer did not receive, as the peer
    /// reports it about once a second (kcpnet peers: quality-reports extension; `None`
    /// with a kcp2k peer or before a report covered any unreliable traffic).
    pub peer_unreliable_loss: Option<f32>,
    /// Fraction of the peer's unreliable messages this side did not receive, between its
    /// last two reports (kcpnet peers only, as above).
    pub unreliable_loss_in: Option<f32>,
    /// Bytes received per second in the window (whole datagrams, headers included).
    pub bytes_in_per_sec: f32,
    /// Bytes sent per second in the window (whole datagrams: data, ACKs, retransmissions).
    pub bytes_out_per_sec: f32,
    /// Application messages delivered per second in the window (both channels).
    pub messages_in_per_sec: f32,
    /// Application messages sent per second in the window (both channels).
    pub messages_out_per_sec: f32,
    /// The length of the window the rates and the loss cover, in ms.
    pub window_ms: u32,
    /// Time since the last datagram accepted from the peer, in ms.
    pub since_last_receive_ms: u32,
    /// Time since the handshake completed, in ms (0 while connecting).
    pub connected_ms: u32,
    /// Reliable payload bytes queued or in flight, not yet acknowledged (message header
    /// bytes and kcp2k's own Ping/Pong included).
    pub pending_reliable_bytes: usize,
    /// Reliable messages queued or in flight, not yet acknowledged (Pings included).
    pub pending_reliable_messages: usize,
    /// The peer's last advertised free receive window, in segments.
    pub peer_window: u32,
}

/// The window of [`ConnectionQuality`]'s rates and loss estimate, in ms.
pub const QUALITY_WINDOW_MS: u32 = 1000;

/// Counters and gauges of one connection (like ENet's per-peer or GameNetworkingSockets'
/// connection status). Counters start at zero when the connection is created.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionStats {
    /// Round-trip time of the latest kcp2k Ping/Pong, in ms (`None` until the first Pong);
    /// includes queueing behind reliable data (see [`ConnectionQuality::ping_rtt_ms`]).
    pub rtt_ms: Option<u32>,
    /// KCP's smoothed RTT from its ACKs, in ms (0 before the first sample): the link's RTT.
    pub srtt_ms: u32,
    /// KCP's RTT variation, in ms.
    pub rttvar_ms: u32,
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
    /// KCP data segments sent, retransmissions included: the lifetime loss estimate is
    /// `(retransmits + fast_retransmits) / segments_sent`.
    pub segments_sent: u64,
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
    /// The link right now: RTTs named apart, windowed loss and rates, pending bytes.
    pub quality: ConnectionQuality,
    /// FEC: datagrams the peer lost that this end rebuilt from parity (no retransmission
    /// was needed for them).
    pub fec_recovered: u64,
    /// FEC: parity datagrams this end sent (`Config::fec`).
    pub fec_parity_sent: u64,
    /// FEC: bytes of those parity datagrams (the bandwidth FEC costs).
    pub fec_parity_bytes: u64,
    /// FEC: parity datagrams received from the peer.
    pub fec_parity_received: u64,
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
    /// Datagrams of a connection that had just closed (within 2 s, same address and
    /// cookie): the peer's redundant close datagrams (kcp2k repeats its Disconnect five
    /// times) and data that was already in flight. Not strangers, so not `dropped_unknown`.
    pub dropped_after_close: u64,
    /// Valid Hellos from unknown endpoints answered with the stateless reply (nothing stored).
    pub hello_replies: u64,
    /// Handshakes a draining server refused (`Server::begin_drain`): Hellos it did not answer
    /// and proofs of address it answered with the drain's reason instead of a connection.
    pub refused_draining: u64,
    /// Peers that proved their address while `max_connections` was reached (dropped).
    pub dropped_limit: u64,
    /// Datagrams dropped by a connection (bad cookie, malformed, KCP-invalid).
    pub dropped_invalid: u64,
    /// Sends the socket refused (its buffer was full) or that failed.
    pub send_errors: u64,
    /// Connections that completed the handshake.
    pub connections_accepted: u64,
    /// Secure sessions: connect tokens refused because they did not open (forged,
    /// tampered, another key), were not of this protocol id, or were malformed (or a Hello
    /// offered the secure extension without a token). No reply is sent.
    pub tokens_invalid: u64,
    /// Secure sessions: connect tokens refused because they had expired.
    pub tokens_expired: u64,
    /// Secure sessions: connect tokens refused because they name other servers.
    pub tokens_wrong_server: u64,
    /// Secure sessions: connect tokens refused because a client used them from another
    /// address (a stolen or replayed token).
    pub tokens_in_use: u64,
    /// Secure sessions (`SecurityMode::Required`): Hellos without a token, not answered.
    pub refused_unauthenticated: u64,
    /// Secure sessions: sealed datagrams whose tag did not verify (forged or altered).
    pub sealed_forged: u64,
    /// Secure sessions: sealed datagrams replayed (a packet number seen before or too old).
    pub sealed_replayed: u64,
    /// Secure sessions: unsealed datagrams on a secure connection, dropped unread.
    pub unsealed_dropped: u64,
    /// Secure sessions: clients that moved to a new address (validated).
    pub migrations: u64,
    /// Connections currently in the table.
    pub connections: usize,
    /// Heap bytes of the buffers every connection shares, which no per-connection figure
    /// counts: the free KCP payload buffers kept for reuse (at most the windows' worth,
    /// `send_window_size + receive_window_size + 256` buffers of one MSS) and the output
    /// buffer. A gauge, read when the stats are taken.
    pub shared_buffer_bytes: usize,
}
