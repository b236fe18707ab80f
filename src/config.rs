//! Connection and socket configuration.
//!
//! [`Config::default()`] equals kcp2k's `KcpConfig` defaults, so a default kcpnet peer talks
//! to a default kcp2k (Mirror) peer. **Both ends must use the same `mtu` and
//! `receive_window_size`**: the largest reliable message is derived from them, and a peer
//! with a smaller receive window cannot reassemble the other's largest messages.

use crate::error::Error;
#[cfg(feature = "secure")]
use crate::secure::SecureConfig;
use crate::wire::datagram::DATAGRAM_HEADER_LEN;
use crate::wire::segment::SEGMENT_HEADER_LEN;

/// The kcp2k ping interval: a reliable Ping goes out every second on a connected peer.
pub const PING_INTERVAL_MS: u32 = 1000;

/// The smallest `mtu` accepted: room for the kcp2k header, one KCP header and some payload.
pub const MIN_MTU: usize = 64;

/// The largest `mtu` accepted (the largest UDP payload over IPv4).
pub const MAX_MTU: usize = 65_507;

/// Settings of a [`crate::Server`] or [`crate::Client`]. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Server only: bind an IPv6 socket that also accepts IPv4 peers (`[::]:port`, with
    /// IPv4-mapped addresses reported as plain IPv4). kcp2k: `DualMode`, default true.
    pub dual_mode: bool,
    /// `SO_RCVBUF` in bytes. kcp2k default 7 MiB. The OS may grant less; it is logged.
    pub recv_buffer_size: usize,
    /// `SO_SNDBUF` in bytes. kcp2k default 7 MiB.
    pub send_buffer_size: usize,
    /// Largest datagram in bytes, kcp2k header included. Default 1200.
    pub mtu: usize,
    /// KCP no-delay mode: 0 off, 1 on (30 ms minimum RTO, ×1.5 backoff), 2 (backoff by half
    /// the smoothed RTO). kcp2k's `NoDelay = true` is 1, the default.
    pub no_delay: u8,
    /// KCP flush interval in ms, clamped by KCP to 10..=5000. Default 10.
    pub interval_ms: u32,
    /// Fast retransmit after this many later ACKs; 0 turns it off (default).
    pub fast_resend: u32,
    /// KCP congestion window; default off, as in kcp2k.
    pub congestion_window: bool,
    /// KCP send window in segments. Default 32.
    pub send_window_size: u32,
    /// KCP receive window in segments. Default 128 (KCP never uses less than 128, but the
    /// configured value still sets the reliable message limit, as in kcp2k).
    pub receive_window_size: u32,
    /// Disconnect with [`crate::ErrorCode::Timeout`] after this long without receiving
    /// anything. Default 10 000 ms.
    pub timeout_ms: u32,
    /// Disconnect (dead link) once a segment has been sent this many times. Default 20.
    pub max_retransmits: u32,
    /// Client: a handshake not completed within this time fails with a `Timeout` error.
    /// (A server stores nothing before the handshake completes: see `docs/PROTOCOL.md`.)
    /// Default 10 000 ms.
    pub handshake_timeout_ms: u32,
    /// Server: most connections. A peer that proves its address while the table is full is
    /// dropped (counted in `EndpointStats::dropped_limit`); it retries. Default 65 536.
    pub max_connections: usize,
    /// Graceful disconnect: how long to keep flushing queued reliable data before sending
    /// Disconnect anyway. Default 3 000 ms.
    pub linger_timeout_ms: u32,
    /// Flush KCP on every `tick_outgoing` when ACKs or data are pending, instead of only on
    /// the interval; the wire format is unchanged. Default true (kcp2k behaves as false).
    pub flush_on_tick: bool,
    /// kcp2k's choke threshold: disconnect with [`crate::ErrorCode::Congestion`] when the
    /// KCP queues of a connection hold this many segments in total. Default 10 000.
    pub queue_disconnect_threshold: usize,
    /// Backpressure: bytes of reliable data (counted as KCP segments × mss) a connection may
    /// hold queued or in flight. A reliable `send` made while this much is queued fails with
    /// [`crate::Error::SendQueueFull`] and the connection stays open, so the send queue never
    /// holds more than this plus one message. Default 4 MiB (the choke threshold is
    /// 10 000 segments, about 11.7 MB); `Config::mirror` uses 8 MiB for its larger windows.
    pub send_queue_limit: usize,
    /// Bytes of received messages held in the event queue before kcpnet stops taking more
    /// from KCP (so KCP's flow control pushes back on the sender instead of memory growing).
    /// Default 64 MiB.
    pub max_pending_event_bytes: usize,
    /// Most datagrams read from the socket in one `tick_incoming` (bounds the time a flood
    /// can take: a spoofed Hello costs a server a few µs, so a flooded tick stays in the
    /// tens of ms). Default 8 192: at 60 ticks per second that still reads about 490,000
    /// datagrams per second; what is not read waits in the socket's receive buffer for the
    /// next tick.
    pub max_datagrams_per_tick: usize,
    /// Linux: move up to 32 datagrams per syscall (`recvmmsg`/`sendmmsg`); sends are queued
    /// and go out at the end of `tick_outgoing`. Ignored on other systems. Default true. See
    /// [`crate::io::SocketOptions::batch`].
    pub batch_socket_io: bool,
    /// Linux, with `batch_socket_io`: UDP segmentation offload both ways — runs of
    /// same-length datagrams to one peer leave as one GSO message (`UDP_SEGMENT`), and the
    /// kernel may hand over several datagrams of one sender as one GRO buffer, split again
    /// before the connection sees them. Falls back by itself where the kernel refuses.
    /// Default true. See [`crate::io::SocketOptions::gso`] and
    /// [`crate::io::SocketOptions::gro`].
    pub udp_offload: bool,
    /// The DSCP codepoint (0..=63) outgoing datagrams are marked with, e.g. 46 (Expedited
    /// Forwarding); `None` (default) keeps the OS default. See
    /// [`crate::io::SocketOptions::dscp`].
    pub dscp: Option<u8>,
    /// Server only: set `SO_REUSEPORT` so several servers (one per core) can bind the same
    /// port and the kernel spreads clients over them (Linux; an error where unsupported).
    /// Default false. See [`crate::io::SocketOptions::reuse_port`] and `docs/SCALING.md`.
    pub reuse_port: bool,
    /// Negotiate kcpnet's extensions (close reasons, half-close, quality reports) in the
    /// Hello: a client offers them, a server accepts a kcpnet client's offer. A kcp2k peer
    /// never sends or answers an offer, so the connection is plain kcp2k either way; turn
    /// this off to make a kcpnet end speak exactly what kcp2k does (a bare Hello, a bare
    /// reply). Default true. See `docs/PROTOCOL.md`, "Extensions".
    pub kcpnet_extensions: bool,
    /// Secure sessions (the `secure` feature): `None` (the default) is the kcp2k-compatible
    /// server of before, which admits every client unauthenticated; a [`SecureConfig`]
    /// admits connect-token clients with sealed datagrams, and, in
    /// [`SecurityMode::Mixed`](crate::secure::SecurityMode::Mixed), kcp2k clients too.
    /// A client ignores it: it is secure when made with `Client::connect_with_token`. Needs
    /// `kcpnet_extensions` and an `mtu` of at least [`SECURE_MIN_MTU`]. See
    /// `docs/SECURITY.md`.
    #[cfg(feature = "secure")]
    pub security: Option<SecureConfig>,
    /// Forward error correction of what this end sends (the `fec` feature; issue 18): with
    /// [`Fec::Fixed`], each group of up to `data` datagrams of an established connection
    /// gets `parity` Reed-Solomon parity datagrams, sent when the group is full or at the
    /// end of the tick that opened it, so a lost datagram is rebuilt by the peer without a
    /// round trip; [`Fec::Adaptive`] shapes the groups from the measured loss. Only between
    /// kcpnet peers that negotiated it (a kcpnet end with the feature always can decode);
    /// kcp2k peers never see it. Default [`Fec::Off`]: costs nothing. See
    /// `docs/CONFIG.md`, "FEC".
    pub fec: Fec,
    /// Between kcpnet peers, the small unreliable messages sent to a peer within one tick
    /// share datagrams up to the MTU (each still arrives as its own message, and is lost
    /// with its datagram): fewer datagrams and headers for a game's many small updates.
    /// They then leave at the end of the tick (`tick_outgoing` / `Endpoint::flush`, or a
    /// `SendFlags::FLUSH` send) rather than at the send call — with a batching socket they
    /// did not leave earlier anyway. kcp2k peers get one datagram per message. Default
    /// `true`. See `docs/PROTOCOL.md`, "Coalesced unreliable messages".
    pub coalesce_unreliable: bool,
    /// A cap on what each connection sends, in bytes per second of whole datagrams (ACKs,
    /// retransmissions and FEC parity included), or `None` (the default) for no cap. Reliable
    /// data is paced to it: a bulk transfer waits in the send queue instead of filling the
    /// peer's downlink ahead of the game's real-time traffic. Unreliable messages go first
    /// within the cap; one that finds the cap reached waits for the next flush (a quarter
    /// second of the cap at most, then it is dropped and counted), or is dropped at once
    /// with `SendFlags::NO_DELAY`. Change it per connection with `Server::set_send_rate` /
    /// `Client::set_send_rate`; `ConnectionQuality::send_queue_ms` tells how long what is
    /// queued takes at the cap. At least `mtu` bytes per second. Works with every peer (it
    /// is local: nothing on the wire). See `docs/CONFIG.md`, "Send-rate cap".
    pub send_rate_limit: Option<u32>,
}

/// What this end sends as forward error correction ([`Config::fec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fec {
    /// No parity (the default). The connection still decodes a peer's parity.
    #[default]
    Off,
    /// Groups of up to `data` datagrams (1..=16) with `parity` parity datagrams (1..=4).
    Fixed {
        /// Data datagrams per group at most.
        data: u8,
        /// Parity datagrams per group.
        parity: u8,
    },
    /// Groups shaped by the measured loss of this end's datagrams
    /// ([`ConnectionQuality::loss_out`](crate::stats::ConnectionQuality::loss_out) plus
    /// half its margin; 5 % until the peer's first report): each group gets the fewest
    /// parity datagrams, up to `parity`, that leave at most 0.1 % of its datagrams to
    /// retransmission, and a full group is the size, up to `data`, that needs the least
    /// parity for that. While the loss is surely (99 %) under 1 %, no parity is sent and
    /// datagrams go out plain. The shape in use shows in
    /// [`ConnectionStats::fec_shape`](crate::stats::ConnectionStats::fec_shape).
    /// [`Fec::ADAPTIVE`] is the usual choice.
    Adaptive {
        /// Data datagrams per group at most (1..=16).
        data: u8,
        /// Parity datagrams per group at most (1..=4).
        parity: u8,
    },
}

impl Fec {
    /// Adaptive FEC within the widest bounds: groups of up to 16 datagrams, up to 4 parity.
    pub const ADAPTIVE: Fec = Fec::Adaptive {
        data: 16,
        parity: 4,
    };

    /// The bounds of a shape, `None` for [`Fec::Off`].
    pub(crate) fn bounds(self) -> Option<(u8, u8)> {
        match self {
            Fec::Off => None,
            Fec::Fixed { data, parity } | Fec::Adaptive { data, parity } => Some((data, parity)),
        }
    }
}

/// The smallest `mtu` of a secure session: the token client's Hello (597 bytes) and its
/// sealed proof of address with the token and the session's salt (653 bytes) must each fit
/// one datagram.
pub const SECURE_MIN_MTU: usize = 660;

impl Default for Config {
    fn default() -> Self {
        Config {
            dual_mode: true,
            recv_buffer_size: 7 * 1024 * 1024,
            send_buffer_size: 7 * 1024 * 1024,
            mtu: 1200,
            no_delay: 1,
            interval_ms: 10,
            fast_resend: 0,
            congestion_window: false,
            send_window_size: 32,
            receive_window_size: 128,
            timeout_ms: 10_000,
            max_retransmits: 20,
            handshake_timeout_ms: 10_000,
            max_connections: 65_536,
            linger_timeout_ms: 3_000,
            flush_on_tick: true,
            queue_disconnect_threshold: 10_000,
            send_queue_limit: 4 * 1024 * 1024,
            max_pending_event_bytes: 64 * 1024 * 1024,
            max_datagrams_per_tick: 8_192,
            batch_socket_io: true,
            udp_offload: true,
            dscp: None,
            reuse_port: false,
            kcpnet_extensions: true,
            #[cfg(feature = "secure")]
            security: None,
            fec: Fec::Off,
            coalesce_unreliable: true,
            send_rate_limit: None,
        }
    }
}

impl Config {
    /// kcp2k's `KcpConfig` defaults: the same as [`Config::default`]. Matches a plain kcp2k
    /// peer (kcp2k's own examples and tests), not Mirror's `KcpTransport` component, whose
    /// defaults differ: see [`Config::mirror`].
    pub fn kcp2k() -> Config {
        Config::default()
    }

    /// The defaults of Mirror's `KcpTransport` component (what a stock Mirror / Unity game
    /// uses): send and receive windows 4096, fast resend 2, max retransmits 40, no
    /// congestion window, dual mode, no-delay 1, interval 10 ms, timeout 10 000 ms, mtu
    /// 1200, 7 MiB socket buffers.
    ///
    /// With it the largest reliable message is 297 433 bytes (the fragment count is capped
    /// at 255) and one connection can move far more than with kcp2k's 32/128 windows. The
    /// receive window and the mtu must match the peer's: a kcpnet server on
    /// `Config::default()` cannot reassemble the largest messages of a Mirror client.
    ///
    /// ```
    /// let config = kcpnet::Config::mirror();
    /// assert_eq!((config.send_window_size, config.receive_window_size), (4096, 4096));
    /// assert_eq!(config.reliable_max_message_size(), 297_433);
    /// ```
    pub fn mirror() -> Config {
        Config {
            send_window_size: 4096,
            receive_window_size: 4096,
            fast_resend: 2,
            max_retransmits: 40,
            congestion_window: false,
            send_queue_limit: 8 * 1024 * 1024,
            ..Config::default()
        }
    }

    /// Checks that the values can work, with a message naming the field otherwise.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.mtu < MIN_MTU || self.mtu > MAX_MTU {
            return bad(format!("mtu {} is outside {MIN_MTU}..={MAX_MTU}", self.mtu));
        }
        if self.no_delay > 2 {
            return bad(format!("no_delay {} must be 0, 1 or 2", self.no_delay));
        }
        if self.send_window_size == 0 || self.send_window_size > 65_535 {
            return bad(format!(
                "send_window_size {} must be in 1..=65535",
                self.send_window_size
            ));
        }
        if self.receive_window_size < 2 || self.receive_window_size > 65_535 {
            return bad(format!(
                "receive_window_size {} must be in 2..=65535 (the wnd field is 16 bits)",
                self.receive_window_size
            ));
        }
        if self.interval_ms == 0 {
            return bad("interval_ms must be at least 1 (KCP raises it to 10)".into());
        }
        if let Some(rate) = self.send_rate_limit {
            if rate < self.mtu as u32 {
                return bad(format!(
                    "send_rate_limit {rate} bytes/s is below one datagram (mtu {}) per second; \
                     None means no cap",
                    self.mtu
                ));
            }
        }
        if self.timeout_ms == 0 {
            return bad("timeout_ms must be positive".into());
        }
        if self.timeout_ms > i32::MAX as u32 / 2 {
            return bad(format!("timeout_ms {} is too large", self.timeout_ms));
        }
        if self.handshake_timeout_ms == 0 || self.handshake_timeout_ms > i32::MAX as u32 / 2 {
            return bad(format!(
                "handshake_timeout_ms {} must be in 1..=1073741823",
                self.handshake_timeout_ms
            ));
        }
        if self.linger_timeout_ms > i32::MAX as u32 / 2 {
            return bad(format!(
                "linger_timeout_ms {} is too large",
                self.linger_timeout_ms
            ));
        }
        if self.max_retransmits == 0 {
            return bad("max_retransmits must be positive".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be positive".into());
        }
        if self.queue_disconnect_threshold == 0 {
            return bad("queue_disconnect_threshold must be positive".into());
        }
        if self.send_queue_limit == 0 {
            return bad(
                "send_queue_limit must be positive (no reliable message could be sent)".into(),
            );
        }
        if self.max_datagrams_per_tick == 0 {
            return bad("max_datagrams_per_tick must be positive".into());
        }
        if let Some(dscp) = self.dscp {
            if dscp > 63 {
                return bad(format!("dscp {dscp} is outside 0..=63"));
            }
        }
        if self.reuse_port && !cfg!(unix) {
            return bad("reuse_port (SO_REUSEPORT) is not available on this system".into());
        }
        if self.max_pending_event_bytes < self.reliable_max_message_size() + 1 {
            return bad(format!(
                "max_pending_event_bytes {} cannot hold one largest reliable message ({} bytes)",
                self.max_pending_event_bytes,
                self.reliable_max_message_size() + 1
            ));
        }
        if let Some((data, parity)) = self.fec.bounds() {
            if !cfg!(feature = "fec") {
                return bad("fec needs the `fec` cargo feature".into());
            }
            if !(1..=16).contains(&data) || !(1..=4).contains(&parity) {
                return bad(format!(
                    "fec: data {data} must be in 1..=16 and parity {parity} in 1..=4"
                ));
            }
            if !self.kcpnet_extensions {
                return bad("fec needs kcpnet_extensions (FEC is one)".into());
            }
        }
        if self.secure_enabled() {
            if !self.kcpnet_extensions {
                return bad("security needs kcpnet_extensions (secure sessions are one)".into());
            }
            if self.mtu < SECURE_MIN_MTU {
                return bad(format!(
                    "mtu {} is below {SECURE_MIN_MTU}, the smallest for secure sessions",
                    self.mtu
                ));
            }
        }
        Ok(())
    }

    /// Whether `security` is set (always false without the `secure` feature).
    pub(crate) fn secure_enabled(&self) -> bool {
        #[cfg(feature = "secure")]
        return self.security.is_some();
        #[cfg(not(feature = "secure"))]
        false
    }

    /// Whether a listening endpoint admits clients without a token (no `security`, or
    /// [`SecurityMode::Mixed`](crate::secure::SecurityMode::Mixed)).
    pub(crate) fn admits_unauthenticated(&self) -> bool {
        #[cfg(feature = "secure")]
        return self
            .security
            .as_ref()
            .is_none_or(|s| s.mode == crate::secure::SecurityMode::Mixed);
        #[cfg(not(feature = "secure"))]
        true
    }

    /// The MTU KCP works with: `mtu` minus the 5-byte kcp2k header.
    pub fn kcp_mtu(&self) -> usize {
        self.mtu.saturating_sub(DATAGRAM_HEADER_LEN)
    }

    /// The KCP segment payload size, `mtu - 5 - 24` (1171 by default).
    pub fn kcp_mss(&self) -> usize {
        self.kcp_mtu().saturating_sub(SEGMENT_HEADER_LEN)
    }

    /// The largest reliable message payload, by kcp2k's formula
    /// `(mtu - 24 - 5) * (min(receive_window_size, 255) - 1) - 1`: 148 716 by default.
    pub fn reliable_max_message_size(&self) -> usize {
        let frags = (self.receive_window_size.min(255) as usize).saturating_sub(1);
        (self.kcp_mss() * frags).saturating_sub(1)
    }

    /// The largest unreliable message payload, `mtu - 5 - 1`: 1194 by default.
    pub fn unreliable_max_message_size(&self) -> usize {
        self.mtu.saturating_sub(DATAGRAM_HEADER_LEN + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kcp2k() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.kcp_mss(), 1171);
        assert_eq!(c.reliable_max_message_size(), 148_716);
        assert_eq!(c.unreliable_max_message_size(), 1194);
        assert!(c.batch_socket_io && c.udp_offload && !c.reuse_port && c.dscp.is_none());
        assert!(Config {
            dscp: Some(63),
            ..Config::default()
        }
        .validate()
        .is_ok());
        let big = Config {
            receive_window_size: 4096,
            ..Config::default()
        };
        assert_eq!(big.reliable_max_message_size(), 297_433);
        let small = Config {
            receive_window_size: 32,
            ..Config::default()
        };
        assert_eq!(small.reliable_max_message_size(), 36_300);
    }

    #[test]
    fn mirror_preset_matches_kcp_transport() {
        let m = Config::mirror();
        assert!(m.validate().is_ok());
        assert_eq!(m.send_window_size, 4096);
        assert_eq!(m.receive_window_size, 4096);
        assert_eq!(m.fast_resend, 2);
        assert_eq!(m.max_retransmits, 40);
        assert!(!m.congestion_window);
        assert!(m.dual_mode);
        assert_eq!(
            (m.no_delay, m.interval_ms, m.timeout_ms, m.mtu),
            (1, 10, 10_000, 1200)
        );
        assert_eq!(m.recv_buffer_size, 7 * 1024 * 1024);
        assert_eq!(m.send_buffer_size, 7 * 1024 * 1024);
        assert_eq!(Config::kcp2k(), Config::default());
    }

    #[test]
    fn validate_rejects_impossible_values() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    mtu: 10,
                    ..Config::default()
                },
                "mtu",
            ),
            (
                Config {
                    mtu: 70_000,
                    ..Config::default()
                },
                "mtu",
            ),
            (
                Config {
                    send_window_size: 0,
                    ..Config::default()
                },
                "send_window_size",
            ),
            (
                Config {
                    receive_window_size: 0,
                    ..Config::default()
                },
                "receive_window_size",
            ),
            (
                Config {
                    receive_window_size: 70_000,
                    ..Config::default()
                },
                "receive_window_size",
            ),
            (
                Config {
                    no_delay: 3,
                    ..Config::default()
                },
                "no_delay",
            ),
            (
                Config {
                    interval_ms: 0,
                    ..Config::default()
                },
                "interval_ms",
            ),
            (
                Config {
                    timeout_ms: 0,
                    ..Config::default()
                },
                "timeout_ms",
            ),
            (
                Config {
                    max_retransmits: 0,
                    ..Config::default()
                },
                "max_retransmits",
            ),
            (
                Config {
                    max_connections: 0,
                    ..Config::default()
                },
                "max_connections",
            ),
            (
                Config {
                    max_pending_event_bytes: 1000,
                    ..Config::default()
                },
                "max_pending_event_bytes",
            ),
            (
                Config {
                    dscp: Some(64),
                    ..Config::default()
                },
                "dscp",
            ),
        ];
        for (c, field) in cases {
            match c.validate() {
                Err(Error::InvalidConfig(m)) => {
                    assert!(m.contains(field), "{m} should name {field}")
                }
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
}
