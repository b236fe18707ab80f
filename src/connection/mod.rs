//! The kcp2k peer state machine, sans-IO: one [`Connection`] per remote endpoint.
//!
//! A connection takes datagrams and the time (ms, wrapping `u32`) and produces datagrams
//! (through [`Tx`]) and events (into the driver's event queue). The drivers
//! ([`crate::Server`], [`crate::Client`]) own the socket, the clock and the table of
//! connections; this module holds every protocol rule.
//!
//! Life of a connection:
//! ```text
//!   client: Connecting --server Hello (proof of address sent)--> Connecting
//!           --the server's answer to the proof (a bare Hello: at once)--> Connected
//!           --disconnect / timeout / error--> Disconnected
//!   server: (stateless Hello reply, nothing stored: see `handshake`)
//!           a handshake reply carrying the endpoint's cookie --> Connecting --> Connected
//!           at once --...--> Disconnected
//!   graceful: Connected --disconnect_graceful--> Disconnecting --all data acked or linger--> Disconnected
//!   half-close (kcpnet peers): Connected --shutdown_send--> SendClosed --peer's SendShutdown-->
//!           Disconnecting --our data acked--> Disconnected (Finished); the peer goes
//!           Connected --our SendShutdown--> PeerSendClosed --shutdown_send--> Disconnecting --> ...
//! ```
//!
//! Submodules: `handshake` (the server's stateless handshake), `extensions` (the kcpnet
//! extensions' wire format), `close` (close reasons, graceful close, half-close), `quality`
//! (windowed rates and loss, the Pong limit, quality reports), `receive` (datagrams in,
//! timers, messages out of KCP), `send` (flush, send, deadlines), `link` (the datagram
//! output: `Tx`, `Link`), `pacing` (the send-rate cap), `coalesce`, `fec` and `secure`.
//! This file holds the state, its construction and queries.

use std::net::SocketAddr;

use crate::config::{Config, PING_INTERVAL_MS};
use crate::event::{CloseMessage, ConnectionId, EventQueue};
use crate::kcp::{time_diff, FragmentLimit, Kcp};
use crate::stats::ConnectionStats;
use crate::wire::datagram::{ReliableHeader, DATAGRAM_HEADER_LEN};
use crate::wire::segment::{Command, SegmentHeader, SEGMENT_HEADER_LEN};

mod close;
mod coalesce;
pub(crate) mod extensions;
mod fec;
pub(crate) mod handshake;
mod link;
mod pacing;
mod quality;
mod receive;
mod secure;
mod send;

pub use extensions::Extensions;
pub(crate) use link::Tx;
use link::{Counters, Link};
use quality::{LossWindow, PongLimiter, Reports, Window};
pub(crate) use secure::{SecureDrops, SecureLink};

/// kcp2k sends its unreliable Disconnect this many times (no acknowledgement exists); a
/// kcpnet Close is sent as many times.
const DISCONNECT_REPEAT: usize = 5;
/// Free segment buffers an idle connection keeps: none, the driver lends them per call.
const IDLE_POOL_BUFFERS: usize = 0;
/// An idle connection whose KCP queues and rings hold more storage than this (capacity left
/// by a burst, `Kcp::ring_heap_bytes`) gives the excess back, so it returns under 2 KiB in
/// all (with its 1.1 KB of inline state). Not lower: the ping traffic of an idle connection
/// keeps about 440 bytes of it (one or two entries per queue), and trimming that would
/// reallocate it every second.
const TRIM_ABOVE_BYTES: usize = 768;
/// A server answers a client's Ping with a Pong, which keeps the client's timeout alive
/// (kcp2k counts any complete reliable message), so it sends no Ping of its own until the
/// client's pings stop for this long: one datagram each way per second instead of three.
const PING_ANSWER_WINDOW_MS: u32 = 2 * PING_INTERVAL_MS;
/// The once-per-ping-interval work (trim, quality report, round-trip sample) rides on a
/// client's Ping if at least this long passed since it last ran (a client pings about every
/// second, with its tick's and the network's jitter).
const PING_WORK_MIN_MS: u32 = PING_INTERVAL_MS * 3 / 4;
/// With the slow keepalive, a server answers an idle client's keepalive Pings with the
/// KCP ACK alone, and after this many such answers the next with a Pong again: its round-trip
/// sample (from the client's ACK of that Pong) is then at most four keepalive intervals old.
pub(crate) const ACK_ONLY_ANSWERS: u8 = 3;

/// The longest keepalive interval of the slow keepalive (`Extensions::SLOW_KEEPALIVE`).
const SLOW_KEEPALIVE_MAX_MS: u32 = 3 * PING_INTERVAL_MS;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Handshake in progress (a client waiting for the server's Hello, then — against a
    /// kcpnet server — for its answer to the client's proof of address; on a server only
    /// for the moment the peer's admitting datagram is processed).
    Connecting,
    /// Handshake complete; both channels open.
    Connected,
    /// Half-closed by this side (`shutdown_send`, kcpnet peers): sends fail with
    /// [`Error::SendClosed`](crate::Error::SendClosed), queued messages are still delivered, and the peer's messages
    /// still arrive until it shuts down too.
    SendClosed,
    /// Half-closed by the peer (it called `shutdown_send`; [`crate::Event::PeerSendClosed`]
    /// was reported): nothing more arrives, this side can still send.
    PeerSendClosed,
    /// Closing: a graceful disconnect, or both sides shut down their sending; queued
    /// reliable data is flushed until acknowledged.
    Disconnecting,
    /// Closed; nothing more is sent or delivered.
    Disconnected,
}

/// Which end of the handshake this connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// What a connection needs from its driver for one call.
pub(crate) struct Ctx<'a> {
    pub now: u32,
    pub id: ConnectionId,
    pub events: &'a mut EventQueue,
    pub tx: &'a mut dyn Tx,
    /// Where a sealed datagram is opened (shared by every connection).
    pub open_buf: &'a mut Vec<u8>,
    /// Drops on the secure datagram path, for the endpoint's counters.
    pub secure_drops: &'a mut SecureDrops,
}

/// The per-connection constants derived from [`Config`].
#[derive(Debug, Clone)]
struct Limits {
    // Sizes as u32 (saturated: no datagram, message or queue limit of kcp2k comes near
    // 4 GiB) to keep the per-connection state small; read through `as usize`.
    mtu: u32,
    receive_window: u32,
    reliable_max: u32,
    unreliable_max: u32,
    timeout: u32,
    handshake_timeout: u32,
    linger_timeout: u32,
    choke: u32,
    send_queue_limit: u32,
    mss: u32,
    max_pending_event_bytes: u32,
    flush_on_tick: bool,
    /// What this end sends as FEC once negotiated (`Config::fec`).
    fec: crate::config::Fec,
    /// Unreliable messages share datagrams once negotiated (`Config::coalesce_unreliable`).
    coalesce: bool,
}

/// The most a connection's FEC state holds, whatever the peer sends: the decoder's groups
/// (4 × 20 shards of at most an MTU of 1500 bytes and their bookkeeping), the encoder's open
/// group (16 shards), its parity (4 shards and a datagram), two datagram buffers, and the
/// encoder's kept Reed-Solomon codecs.
#[cfg(feature = "fec")]
const FEC_MEMORY_BOUND: usize = (4 * 20 + 16 + 5 + 2) * (1500 + 32)
    + crate::fec::CODECS_KEPT * crate::fec::CODEC_HEAP_BOUND
    + 4096;
#[cfg(not(feature = "fec"))]
const FEC_MEMORY_BOUND: usize = 0;

/// `n` as u32, saturated.
fn sat32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One kcp2k peer. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Connection {
    role: Role,
    state: ConnectionState,
    /// `Connected` was reported (so `Disconnected` must be).
    established: bool,
    /// Server: our Hello is queued.
    hello_sent: bool,
    /// Client: a kcpnet server's Hello arrived and our proof of address (a reliable Ping,
    /// with the ACK of that Hello) is on its way; `Connected` waits for a datagram that only
    /// an admitted connection sends (see [`handshake::proves_admission`]).
    awaiting_admission: bool,
    kcp: Kcp,
    link: Link,
    limits: Limits,
    /// Unreliable messages waiting to share a datagram (coalescing).
    batch: coalesce::Batch,
    last_receive: u32,
    /// When the once-per-ping-interval work last ran (with or without our Ping).
    last_ping: u32,
    /// Server: when we last answered the client's Ping (with a Pong, or with the ACK alone).
    last_pong: u32,
    /// Server, slow keepalive: the client's idle keepalive Pings answered with the ACK
    /// alone since our last Pong (every [`ACK_ONLY_ANSWERS`]-th gets a Pong again).
    acks_only: u8,
    /// When we last sent a Ping of our own.
    last_ping_sent: u32,
    /// Our first Ping since the connection was established went out.
    first_ping_done: bool,
    pongs: PongLimiter,
    rtt: Option<u32>,
    /// Handshake deadline while connecting, linger deadline while disconnecting.
    deadline: u32,
    /// [`Connection::app_messages`] at the last Ping.
    activity_at_ping: u64,
    /// Complete messages wait in KCP because the event queue is over its byte budget.
    throttled: bool,
    /// The receive window the peer advertised with its Hello (segments), for mismatch
    /// reports.
    peer_window: u32,
    /// The kcpnet extensions both ends agreed on ([`Extensions::NONE`] with a kcp2k peer).
    ext: Extensions,
    /// Client: what its Hello offered.
    offered: Extensions,
    /// Half-close: our SendShutdown is queued.
    fin_sent: bool,
    /// Half-close: the peer's SendShutdown arrived.
    fin_received: bool,
    /// The code and message of `disconnect_with`, sent when the connection closes.
    close_note: Option<Box<(u32, CloseMessage)>>,
    /// When the handshake completed.
    connected_at: u32,
    /// Counters at the last interval boundaries, for windowed rates and loss.
    window: Window,
    /// The quality-reports extension's state.
    reports: Reports,
    /// KCP's retransmission ratio over recent segments (`ConnectionQuality::retransmit_ratio`).
    retransmits: LossWindow,
}

impl Connection {
    fn new(role: Role, remote: SocketAddr, cookie: u32, config: &Config, now: u32) -> Self {
        let mut kcp = Kcp::new(0);
        kcp.set_reserved(DATAGRAM_HEADER_LEN);
        // Config::validate guarantees the MTU is large enough.
        let _ = kcp.set_mtu(config.kcp_mtu() as u32);
        kcp.set_wndsize(config.send_window_size, config.receive_window_size);
        kcp.set_nodelay(
            config.no_delay as i32,
            config.interval_ms.min(i32::MAX as u32) as i32,
            config.fast_resend.min(i32::MAX as u32) as i32,
            if config.congestion_window { 0 } else { 1 },
        );
        kcp.set_dead_link(config.max_retransmits);
        kcp.set_fragment_limit(FragmentLimit::Kcp2k);
        // kcp2k is built on ikcp 1.7: no fast-ack conservation.
        kcp.set_fastack_conserve(false);
        kcp.set_ack_limit(4 * config.receive_window_size.max(128) as usize);
        Connection {
            role,
            state: ConnectionState::Connecting,
            established: false,
            hello_sent: false,
            awaiting_admission: false,
            kcp,
            link: Link {
                remote,
                cookie,
                budgeted: role == Role::Server,
                mtu: sat32(config.mtu),
                stats: Counters::default(),
                secure: None,
                fec: None,
                fec_encoding: false,
                pacer: config
                    .send_rate_limit
                    .map(|rate| Box::new(pacing::Pacer::new(rate, sat32(config.mtu), now))),
            },
            limits: Limits {
                mtu: sat32(config.mtu),
                receive_window: config.receive_window_size,
                reliable_max: sat32(config.reliable_max_message_size()),
                unreliable_max: sat32(config.unreliable_max_message_size()),
                timeout: config.timeout_ms,
                handshake_timeout: config.handshake_timeout_ms,
                linger_timeout: config.linger_timeout_ms,
                choke: sat32(config.queue_disconnect_threshold),
                send_queue_limit: sat32(config.send_queue_limit),
                mss: sat32(config.kcp_mss()),
                max_pending_event_bytes: sat32(config.max_pending_event_bytes),
                flush_on_tick: config.flush_on_tick,
                fec: config.fec,
                coalesce: config.coalesce_unreliable,
            },
            batch: coalesce::Batch::default(),
            last_receive: now,
            last_ping: now,
            last_ping_sent: now,
            first_ping_done: false,
            last_pong: now.wrapping_sub(PING_ANSWER_WINDOW_MS),
            acks_only: 0,
            pongs: PongLimiter::default(),
            rtt: None,
            deadline: now.wrapping_add(config.handshake_timeout_ms),
            activity_at_ping: 0,
            throttled: false,
            peer_window: 0,
            ext: Extensions::NONE,
            offered: Extensions::NONE,
            fin_sent: false,
            fin_received: false,
            close_note: None,
            connected_at: now,
            window: Window::new(now),
            reports: Reports::default(),
            retransmits: LossWindow::default(),
        }
    }

    /// Reliable application messages sent and received so far (the traffic that uses KCP's
    /// buffers).
    fn app_messages(&self) -> u64 {
        self.link.stats.reliable_sent + self.link.stats.reliable_received
    }

    /// A client connection; its Hello is queued and goes out at the first flush. With
    /// `config.kcpnet_extensions` the Hello offers every extension (a kcp2k server ignores
    /// the offer and answers a bare Hello: plain kcp2k).
    pub(crate) fn new_client(remote: SocketAddr, config: &Config, now: u32) -> Self {
        let mut c = Connection::new(Role::Client, remote, 0, config, now);
        if config.kcpnet_extensions {
            c.offered = Extensions::ALL;
            let _ = c.kcp.send_with_header(
                &[ReliableHeader::Hello.as_u8()],
                &extensions::hello_block(c.offered),
            );
        } else {
            let _ = c.kcp.send(&[ReliableHeader::Hello.as_u8()]);
        }
        c
    }

    /// A server-side connection for a peer that has just proved it receives at `remote`: a
    /// datagram from it carried the `cookie` of our stateless Hello reply
    /// ([`handshake::hello_reply`]). The KCP state is built as if the exchange had happened
    /// here: the client's Hello (sn 0) received and consumed, our ACK of it and our Hello
    /// (sn 0) sent now. Our Hello is unacknowledged until the peer's datagram, fed next with
    /// [`Connection::handle_datagram`], acknowledges it (ACK or `una`); if it does not, KCP
    /// retransmits it. The connection is still `Connecting`: the cookie check of that
    /// datagram makes it `Connected`.
    pub(crate) fn new_server_verified(
        remote: SocketAddr,
        cookie: u32,
        config: &Config,
        now: u32,
    ) -> Self {
        Connection::new_server_verified_ext(remote, cookie, Extensions::NONE, config, now)
    }

    /// [`Connection::new_server_verified`] for a client whose Hello offer gave `accepted`
    /// (recovered from the cookie: [`handshake::CookieKey::verify_ext`]): our Hello, which
    /// KCP may retransmit, is the one of the stateless reply, extension block included.
    pub(crate) fn new_server_verified_ext(
        remote: SocketAddr,
        cookie: u32,
        accepted: Extensions,
        config: &Config,
        now: u32,
    ) -> Self {
        Connection::new_server_verified_with(
            remote,
            cookie,
            accepted,
            config,
            now,
            &mut Vec::new(),
            &mut Vec::new(),
            None,
        )
    }

    /// [`Connection::new_server_verified_ext`] working on a driver's shared pool of payload
    /// buffers and output buffer (as [`Connection::lend_buffers`] and
    /// [`Connection::swap_output_buffer`] lend them), so that creating a connection takes
    /// its Hello's buffer from the pool instead of allocating one, and a connect storm
    /// does not fill the pool beyond what is in use at once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_server_verified_with(
        remote: SocketAddr,
        cookie: u32,
        accepted: Extensions,
        config: &Config,
        now: u32,
        buffers: &mut Vec<Vec<u8>>,
        output: &mut Vec<u8>,
        secure: Option<SecureLink>,
    ) -> Self {
        let mut c = Connection::new(Role::Server, remote, cookie, config, now);
        if let Some(link) = secure {
            c.install_secure(link);
        }
        c.lend_buffers(buffers);
        c.swap_output_buffer(output);
        c.ext = accepted;
        if accepted.contains(Extensions::FEC) {
            c.install_fec(c.limits.fec);
        }
        let mut hello = [0u8; SEGMENT_HEADER_LEN + 1];
        let header = SegmentHeader {
            conv: 0,
            cmd: Command::Push,
            frg: 0,
            // Replaced by the window of the peer's next segment.
            wnd: config.receive_window_size.min(u16::MAX as u32) as u16,
            ts: now,
            sn: 0,
            una: 0,
            len: 1,
        };
        let _ = header.emit(&mut hello);
        hello[SEGMENT_HEADER_LEN] = ReliableHeader::Hello.as_u8();
        c.kcp.set_current(now);
        let _ = c.kcp.input(&hello);
        let mut message = [0u8; 8];
        let _ = c.kcp.recv(&mut message);
        c.hello_sent = true;
        let (hello, len) = handshake::server_hello(accepted);
        let _ = c.kcp.send(&hello[..len]);
        // Both went out in the stateless reply: "send" them into nowhere, so that KCP holds
        // our Hello in flight with its retransmission timer running.
        c.kcp.update(now, |_| {});
        c.swap_output_buffer(output);
        c.reclaim_buffers(buffers);
        c
    }

    /// Takes `overhead` bytes from every datagram's room, for a layer that wraps datagrams
    /// (sealing, FEC): KCP's MTU and MSS and the message limits shrink so that the wrapped
    /// datagram still fits `mtu`.
    fn shrink_room(&mut self, overhead: usize) {
        let _ = self
            .kcp
            .set_mtu(self.kcp.mtu().saturating_sub(overhead as u32));
        let overhead = overhead as u32;
        let fragments = self.limits.receive_window.clamp(2, 255) - 1;
        self.limits.mss -= overhead;
        self.limits.reliable_max = self
            .limits
            .reliable_max
            .saturating_sub(overhead * fragments);
        self.limits.unreliable_max = self.limits.unreliable_max.saturating_sub(overhead);
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.state
    }

    pub(crate) fn remote(&self) -> SocketAddr {
        self.link.remote
    }

    /// The cookie every datagram of this connection carries (0 while a client has not
    /// learned it yet).
    pub(crate) fn cookie(&self) -> u32 {
        self.link.cookie
    }

    pub(crate) fn is_established(&self) -> bool {
        self.established
    }

    /// Whether the connection has nothing for [`Connection::process`] and
    /// [`Connection::flush`] to do before its next deadline: connected, KCP idle (nothing
    /// queued, in flight, to acknowledge or to probe) with nothing received to take out,
    /// no unreliable message or FEC parity waiting, not held back. What a reliable
    /// datagram holding only the ACK of everything in flight leaves: the endpoint then only
    /// reschedules the connection.
    pub(crate) fn is_quiet(&self) -> bool {
        self.state == ConnectionState::Connected
            && self.kcp.is_idle()
            && !self.kcp.has_received()
            && self.batch_bytes() == 0
            && !self.link.fec_group_open()
            && !self.throttled
    }

    /// Messages wait in KCP for room in the event queue: process again once the
    /// application has taken events.
    pub(crate) fn is_throttled(&self) -> bool {
        self.throttled && self.state != ConnectionState::Disconnected
    }

    /// Ping/Pong round-trip time in ms.
    pub(crate) fn rtt(&self) -> Option<u32> {
        self.rtt
    }

    /// The kcpnet extensions this connection negotiated.
    pub(crate) fn extensions(&self) -> Extensions {
        self.ext
    }

    /// Counters, gauges and the quality at `now`.
    pub(crate) fn stats_at(&self, now: u32) -> ConnectionStats {
        let s = self.kcp.snapshot();
        let retransmits = s.xmit as u64 + self.kcp.fast_retransmits();
        let c = self.link.stats;
        let fec = self.fec_counters();
        ConnectionStats {
            datagrams_sent: c.datagrams_sent,
            datagrams_received: c.datagrams_received,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            reliable_sent: c.reliable_sent,
            reliable_received: c.reliable_received,
            unreliable_sent: c.unreliable_sent,
            unreliable_dropped_no_delay: c.unreliable_dropped_no_delay,
            unreliable_dropped_rate: c.unreliable_dropped_rate,
            unreliable_received: c.unreliable_received,
            datagrams_dropped: c.datagrams_dropped,
            sends_dropped: c.sends_dropped,
            rtt_ms: self.rtt,
            srtt_ms: s.rx_srtt.max(0) as u32,
            rttvar_ms: s.rx_rttval.max(0) as u32,
            rto_ms: s.rx_rto.max(0) as u32,
            retransmits: s.xmit as u64,
            fast_retransmits: self.kcp.fast_retransmits(),
            segments_sent: s.snd_nxt as u64 + retransmits,
            quality: self.quality(now),
            send_queue: s.nsnd_que,
            in_flight: s.nsnd_buf,
            recv_queue: s.nrcv_que,
            recv_buffer: s.nrcv_buf,
            remote_window: s.rmt_wnd,
            input_drops: self.kcp.input_drops(),
            fec_recovered: fec.recovered,
            fec_parity_sent: fec.parity_sent,
            fec_parity_bytes: fec.parity_bytes,
            fec_parity_received: fec.parity_received,
            fec_shape: fec.shape,
        }
    }

    /// Starts the ping schedule of a newly connected peer at a phase drawn from its random
    /// cookie, so that peers which connected together (a server restart, a match start) do
    /// not all ping, and flush, in the same tick every second. The first Ping goes out
    /// between half an interval and an interval after the handshake (kcp2k: one interval),
    /// never in the handshake's first moments, whatever the cookie.
    fn start_ping_clock(&mut self, now: u32) {
        self.last_ping = now.wrapping_sub(self.link.cookie % (PING_INTERVAL_MS / 2));
        self.last_ping_sent = self.last_ping;
        self.first_ping_done = false;
        self.connected_at = now;
    }

    /// When the ping interval's work is due: a second after it last ran, or, on a server
    /// whose client pings (and gets Pongs), only once the client's pings stopped for
    /// [`PING_ANSWER_WINDOW_MS`] (until then that work rides on the client's Pings).
    ///
    /// With the slow keepalive an idle connection's work waits [`Connection::keepalive`]
    /// (its Ping goes with it), and a server whose client pings waits twice that; an active
    /// one still works every second (quality reports), without an extra Ping.
    fn ping_due(&self) -> u32 {
        let slow = self.ext.contains(Extensions::SLOW_KEEPALIVE);
        // Busy: messages moved since the work last ran, or data still unacknowledged.
        let active = self.app_messages() != self.activity_at_ping || self.kcp.wait_snd() > 0;
        let interval = if slow && !active && !self.first_ping_pending() {
            self.keepalive()
        } else {
            PING_INTERVAL_MS
        };
        let own = self.last_ping.wrapping_add(interval);
        if self.role == Role::Server && !(slow && active) {
            let answered = self.last_pong.wrapping_add(self.ping_answer_window());
            if time_diff(answered, own) > 0 {
                return answered;
            }
        }
        own
    }

    /// No Ping of ours since the connection was established (its first goes out half a
    /// second to a second after it, with or without the slow keepalive).
    pub(super) fn first_ping_pending(&self) -> bool {
        !self.first_ping_done
    }

    /// How often this connection pings: kcp2k's second, or with the slow keepalive
    /// `timeout / 3` within 1–3 s.
    pub(crate) fn keepalive(&self) -> u32 {
        if self.ext.contains(Extensions::SLOW_KEEPALIVE) {
            (self.limits.timeout / 3).clamp(PING_INTERVAL_MS, SLOW_KEEPALIVE_MAX_MS)
        } else {
            PING_INTERVAL_MS
        }
    }

    /// A server sends no Ping of its own while its client's Pings came within this.
    fn ping_answer_window(&self) -> u32 {
        if self.ext.contains(Extensions::SLOW_KEEPALIVE) {
            2 * self.keepalive()
        } else {
            PING_ANSWER_WINDOW_MS
        }
    }

    /// Whether the interval work at `now` sends our Ping: a keepalive interval (less a
    /// quarter, for the ticks' jitter) since our last one, and, on a server, not while the
    /// client's Pings (answered with Pongs) keep the connection alive.
    fn ping_wanted(&self, now: u32) -> bool {
        if self.first_ping_pending() {
            // The first Ping keeps kcp2k's time (and brings the first round-trip sample).
            return true;
        }
        let keepalive = self.keepalive();
        if time_diff(now, self.last_ping_sent) < (keepalive - keepalive / 4) as i32 {
            return false;
        }
        !(self.role == Role::Server
            && self.ext.contains(Extensions::SLOW_KEEPALIVE)
            && time_diff(now, self.last_pong) < self.ping_answer_window() as i32)
    }

    /// Connected and at least one direction open: pings, pongs and reports flow.
    fn is_open(&self) -> bool {
        matches!(
            self.state,
            ConnectionState::Connected
                | ConnectionState::SendClosed
                | ConnectionState::PeerSendClosed
        )
    }

    /// The peer's application messages are still delivered.
    fn receives_data(&self) -> bool {
        matches!(
            self.state,
            ConnectionState::Connected
                | ConnectionState::SendClosed
                | ConnectionState::Disconnecting
        ) && !self.fin_received
    }

    /// Whether kcpnet-only messages of `ext` may be read: negotiated, or — a client whose
    /// Hello offered it, before it processed the server's answer — a Close that arrived
    /// with the server's Hello (a kcp2k server never sends one).
    fn speaks(&self, ext: Extensions) -> bool {
        self.ext.contains(ext)
            || (self.role == Role::Client
                && self.state == ConnectionState::Connecting
                && self.offered.contains(ext))
    }

    /// Datagrams this connection dropped so far (a plain counter read, for the hot path).
    pub(crate) fn datagrams_dropped(&self) -> u64 {
        self.link.stats.datagrams_dropped
    }

    /// Heap and inline bytes this connection holds.
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.heap_bytes()
    }

    /// Heap bytes this connection holds (its KCP's buffers and queues, and a secure
    /// session's state).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.kcp.heap_bytes()
            + self
                .link
                .secure
                .as_deref()
                .map_or(0, SecureLink::heap_bytes)
            + self.link.fec.as_deref().map_or(0, fec::FecLink::heap_bytes)
            + self.batch.heap_bytes()
            + self
                .link
                .pacer
                .as_deref()
                .map_or(0, pacing::Pacer::heap_bytes)
    }

    /// The most [`Connection::memory_bytes`] can reach, whatever the peer sends: the KCP
    /// bound (its buffers, capped by the windows: [`Kcp::memory_bound`]) plus the send queue,
    /// which the application fills up to `send_queue_limit` plus one largest message.
    pub(crate) fn memory_bound(&self) -> usize {
        let mss = (self.limits.mss as usize).max(1);
        let queued_segments = (self.limits.send_queue_limit as usize).div_ceil(mss) + 256;
        std::mem::size_of::<Self>()
            + self.kcp.memory_bound()
            + self.kcp.snd_queue_bound(queued_segments)
            + self
                .link
                .secure
                .as_deref()
                .map_or(0, SecureLink::heap_bytes)
            + if self.ext.contains(Extensions::FEC) {
                FEC_MEMORY_BOUND
            } else {
                0
            }
            // The unreliable batch: at most one datagram.
            + self.limits.mtu as usize
            + self.link.pacer.as_deref().map_or(0, pacing::Pacer::memory_bound)
    }

    /// KCP segments queued or in flight (for backpressure decisions by the app).
    pub(crate) fn wait_snd(&self) -> usize {
        self.kcp.wait_snd()
    }

    /// Lends the driver's shared pool of free payload buffers to this connection's KCP for
    /// a call (see [`Kcp::lend_buffers`]); [`Connection::reclaim_buffers`] takes it back.
    pub(crate) fn lend_buffers(&mut self, shared: &mut Vec<Vec<u8>>) {
        self.kcp.lend_buffers(shared);
    }

    /// Gives the pool lent by [`Connection::lend_buffers`] back to the driver.
    pub(crate) fn reclaim_buffers(&mut self, shared: &mut Vec<Vec<u8>>) {
        self.kcp.reclaim_buffers(shared);
    }

    /// Exchanges KCP's output buffer with the driver's shared one (lent for a call).
    pub(crate) fn swap_output_buffer(&mut self, shared: &mut Vec<u8>) {
        self.kcp.swap_output_buffer(shared);
    }

    /// Bytes of reliable data queued or in flight, as the send queue limit counts them.
    fn send_queued_bytes(&self) -> usize {
        self.kcp.wait_snd().saturating_mul(self.limits.mss as usize)
    }

    /// Bytes the application can still queue: a reliable send is accepted while this is
    /// positive (the message itself may be larger). 0 unless connected.
    pub(crate) fn send_capacity(&self) -> usize {
        if !matches!(
            self.state,
            ConnectionState::Connected | ConnectionState::PeerSendClosed
        ) {
            return 0;
        }
        (self.limits.send_queue_limit as usize).saturating_sub(self.send_queued_bytes())
    }
}
