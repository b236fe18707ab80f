//! The glue between this backend and the kcpnet core, kept in one place.
//!
//! Everything else in the crate goes through bevy_kcpnet's resources and messages; what is
//! read from kcpnet itself (its config limits, connection ids, states, statistics and send
//! errors) is read here, so adapting to a new kcpnet is a change to this file only.

#![cfg_attr(not(all(feature = "client", feature = "server")), allow(dead_code))]

use bevy_replicon::prelude::{ClientState, ClientStats};
use kcpnet::{Config, ConnectionId, ConnectionState, ConnectionStats};

/// The largest replicon message that fits one unreliable kcp2k datagram after the channel
/// byte.
pub(crate) fn max_unreliable_message(config: &Config) -> usize {
    config.unreliable_max_message_size().saturating_sub(1)
}

/// The kcp2k channel a framed message of `framed_len` bytes goes on: unreliable messages too
/// large for one datagram go reliable instead of failing.
pub(crate) fn send_channel(
    wanted: kcpnet::Channel,
    framed_len: usize,
    config: &Config,
) -> kcpnet::Channel {
    if wanted == kcpnet::Channel::Unreliable && framed_len > config.unreliable_max_message_size() {
        kcpnet::Channel::Reliable
    } else {
        wanted
    }
}

/// What a failed send means for the connection.
pub(crate) enum SendFailure {
    /// The connection is closing or gone: the message is simply dropped.
    Closed,
    /// The message can never be sent (too large for kcp2k's reliable channel): replication
    /// to this peer would silently diverge.
    Fatal,
}

pub(crate) fn classify_send_error(error: &kcpnet::Error) -> SendFailure {
    match error {
        // `SendClosed`: this side half-closed the connection (`shutdown_send`); replicon's
        // messages after that are dropped like those of a closing connection.
        kcpnet::Error::NotConnected
        | kcpnet::Error::ConnectionClosed
        | kcpnet::Error::SendClosed
        | kcpnet::Error::UnknownConnection => SendFailure::Closed,
        // Backpressure on a reliable channel: dropping the message would make replication
        // diverge silently, so the peer is treated as unable to keep up.
        _ => SendFailure::Fatal,
    }
}

/// The [`bevy_replicon::shared::backend::connected_client::NetworkId`] value of a
/// connection: unique for the server's lifetime (kcpnet ids never alias), not persistent
/// across reconnects.
pub(crate) fn network_id(id: ConnectionId) -> u64 {
    id.to_u64()
}

/// Replicon's view of a kcp2k client connection: connected from the handshake until the
/// connection has ended (its `Disconnected` event).
pub(crate) fn client_state(state: ConnectionState) -> ClientState {
    match state {
        ConnectionState::Connecting => ClientState::Connecting,
        // Half-closed either way, or flushing a graceful disconnect: messages are still
        // delivered in at least one direction until the connection ends.
        ConnectionState::Connected
        | ConnectionState::SendClosed
        | ConnectionState::PeerSendClosed
        | ConnectionState::Disconnecting => ClientState::Connected,
        ConnectionState::Disconnected => ClientState::Disconnected,
        // A state a later kcpnet adds: it is not the end (that is `Disconnected`).
        _ => ClientState::Connected,
    }
}

/// Turns kcpnet's cumulative counters into replicon's rates over a window of about one
/// second.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StatsWindow {
    start: Option<(f64, ConnectionStats)>,
    bps: (f64, f64),
    loss: f64,
}

impl StatsWindow {
    /// The window length in seconds.
    const LENGTH: f64 = 1.0;

    /// Replicon's statistics at `now` (seconds, any origin). RTT is kcp2k's ping RTT (KCP's
    /// smoothed RTT until the first pong); packet loss is the fraction of datagrams that were
    /// retransmissions in the last window (0..=1); the byte rates are those of the last
    /// window, kcp2k headers included.
    pub(crate) fn sample(&mut self, now: f64, stats: ConnectionStats) -> ClientStats {
        match self.start {
            None => self.start = Some((now, stats)),
            Some((t0, s0)) if now - t0 >= Self::LENGTH => {
                let dt = now - t0;
                self.bps = (
                    stats.bytes_sent.saturating_sub(s0.bytes_sent) as f64 / dt,
                    stats.bytes_received.saturating_sub(s0.bytes_received) as f64 / dt,
                );
                let sent = stats.datagrams_sent.saturating_sub(s0.datagrams_sent);
                let resent = (stats.retransmits + stats.fast_retransmits)
                    .saturating_sub(s0.retransmits + s0.fast_retransmits);
                self.loss = if sent == 0 {
                    0.0
                } else {
                    (resent as f64 / sent as f64).min(1.0)
                };
                self.start = Some((now, stats));
            }
            Some(_) => {}
        }
        let rtt_ms = stats.rtt_ms.unwrap_or(stats.srtt_ms);
        ClientStats {
            rtt: f64::from(rtt_ms) / 1000.0,
            packet_loss: self.loss,
            sent_bps: self.bps.0,
            received_bps: self.bps.1,
        }
    }
}
