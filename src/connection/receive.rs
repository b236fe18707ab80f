//! The receiving side of a connection: datagrams in (framing, cookie rules, KCP input,
//! unreliable messages), the timers (timeout, dead link, ping, choke, handshake), and
//! complete reliable messages out of KCP into the event queue (application data, kcp2k's
//! control messages, and the kcpnet-only ones once negotiated).

use log::{debug, info, trace, warn};

use super::extensions::{
    parse_hello_block, Extensions, RELIABLE_SEND_SHUTDOWN, UNRELIABLE_CLOSE,
    UNRELIABLE_PATH_CHALLENGE, UNRELIABLE_PATH_RESPONSE, UNRELIABLE_QUALITY_REPORT,
};
use super::{
    handshake, Connection, ConnectionState, Ctx, Role, ACK_ONLY_ANSWERS, IDLE_POOL_BUFFERS,
    PING_WORK_MIN_MS, TRIM_ABOVE_BYTES,
};
use crate::config::PING_INTERVAL_MS;
use crate::error::ErrorCode;
use crate::event::DisconnectReason;
use crate::kcp::{time_diff, KcpError};
use crate::secure::is_sealed;
use crate::wire::batch::BATCH_HEADER;
use crate::wire::datagram::{
    parse_u32_payload, parse_unreliable, Channel, Datagram, ReliableHeader, UnreliableHeader,
};
use crate::wire::WireError;

/// A reliable control message, read out of the event arena before its slot is given back.
enum Control {
    /// A Hello, the extensions its payload announces, and whether it carries the kcpnet
    /// extension block at all.
    Hello(Extensions, bool),
    /// A Ping and its 4-byte timestamp, if it has one.
    Ping(Option<u32>),
    /// A Pong and the timestamp it echoes, if it is 4 bytes.
    Pong(Option<u32>),
    /// kcpnet half-close: the peer sends nothing more.
    SendShutdown,
    /// An undefined header.
    Invalid(WireError),
}

/// The verdict on a datagram's cookie.
enum CookieCheck {
    Reject,
    Accept,
    /// A client learning the server's cookie: keep it if the datagram proves valid.
    Adopt,
}

impl Connection {
    // ------------------------------------------------------------------ input

    /// Handles one datagram from this connection's remote address. Reliable payloads go into
    /// KCP (messages are taken out by [`Connection::process`]); unreliable ones are handled
    /// at once.
    pub(crate) fn handle_datagram(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8]) {
        if self.state == ConnectionState::Disconnected {
            return;
        }
        let sealed = match self.link.secure.as_deref() {
            Some(s) => s.active || bytes.first().is_some_and(|&b| is_sealed(b)),
            None => false,
        };
        if !sealed {
            if self.link.secure.is_some() && !self.plain_before_activation(ctx, bytes) {
                return;
            }
            self.handle_plain(ctx, bytes, bytes.len());
            return;
        }
        // A secure session: only what opens under the peer's key reaches the kcp2k framing.
        let mut buf = std::mem::take(ctx.open_buf);
        if self.open_sealed(ctx, bytes, &mut buf).is_some() {
            if self.awaiting_admission {
                // Only an admitted connection holds the session keys: the server admitted
                // us (and proved it holds the key the token was sealed with).
                self.secure_admitted();
                self.on_admitted(ctx);
            }
            self.handle_plain(ctx, &buf, bytes.len());
        }
        *ctx.open_buf = buf;
    }

    /// Handles one plain kcp2k datagram (`bytes`; `wire_len` bytes arrived, sealed or not).
    pub(super) fn handle_plain(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8], wire_len: usize) {
        if self.state == ConnectionState::Disconnected {
            return;
        }
        self.roll_window(ctx.now);
        if wire_len > (self.limits.mtu as usize) {
            self.note_received(ctx, wire_len);
            let msg = format!(
                "received a datagram of {} bytes, larger than our mtu of {} bytes: the peer's \
                 mtu is at least {}; both ends must use the same mtu",
                wire_len, self.limits.mtu as usize, wire_len
            );
            self.protocol_error(ctx, msg);
            return;
        }
        if matches!(bytes.first(), Some(&3 | &4)) && self.ext.contains(Extensions::FEC) {
            // A FEC data or parity shard: what it carries (or rebuilds) comes back here.
            self.on_fec_shard(ctx, bytes, wire_len);
            return;
        }
        let dgram = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(e) => {
                trace!("{}: dropping malformed datagram: {e}", self.link.remote);
                self.link.stats.datagrams_dropped += 1;
                return;
            }
        };
        let handshaking = !self.established;
        let adopt = match self.accept_cookie(ctx, dgram.cookie, dgram.channel) {
            CookieCheck::Reject => {
                self.link.stats.datagrams_dropped += 1;
                return;
            }
            CookieCheck::Accept => false,
            CookieCheck::Adopt => true,
        };
        match dgram.channel {
            Channel::Reliable => {
                self.kcp.set_current(ctx.now);
                if let Err(e) = self.kcp.input(dgram.payload) {
                    debug!("{}: KCP rejected a datagram: {e}", self.link.remote);
                    self.link.stats.datagrams_dropped += 1;
                    return;
                }
                if adopt {
                    // Adopted only from a datagram KCP accepted, so junk carrying a random
                    // cookie cannot lock the client out of its server.
                    self.link.cookie = dgram.cookie;
                }
                if self.awaiting_admission && handshake::proves_admission(dgram.payload) {
                    self.on_admitted(ctx);
                }
                if handshaking {
                    // The handshake's segments carry the peer's whole receive window: kept
                    // for mismatch reports.
                    self.peer_window = self.peer_window.max(self.kcp.snapshot().rmt_wnd);
                }
            }
            Channel::Unreliable
                if dgram.payload.first() == Some(&UNRELIABLE_CLOSE)
                    && self.speaks(Extensions::CLOSE_REASONS) =>
            {
                self.note_received(ctx, wire_len);
                self.on_close_datagram(ctx, &dgram.payload[1..]);
                return;
            }
            Channel::Unreliable
                if dgram.payload.first() == Some(&UNRELIABLE_QUALITY_REPORT)
                    && self.ext.contains(Extensions::QUALITY_REPORTS) =>
            {
                if self.awaiting_admission {
                    // Only a connection sends reports: the server admitted us.
                    self.on_admitted(ctx);
                }
                self.on_quality_report(ctx, &dgram.payload[1..]);
            }
            Channel::Unreliable
                if dgram.payload.first() == Some(&UNRELIABLE_PATH_CHALLENGE)
                    && self.ext.contains(Extensions::SECURE) =>
            {
                self.note_received(ctx, wire_len);
                self.answer_path_challenge(ctx, &dgram.payload[1..]);
                return;
            }
            Channel::Unreliable
                if dgram.payload.first() == Some(&UNRELIABLE_PATH_RESPONSE)
                    && self.ext.contains(Extensions::SECURE) =>
            {
                // An answer that came by the connection's own address: nothing to move.
                self.note_received(ctx, wire_len);
                return;
            }
            Channel::Unreliable
                if dgram.payload.first() == Some(&BATCH_HEADER)
                    && self.ext.contains(Extensions::COALESCE) =>
            {
                if self.awaiting_admission {
                    // Data with the server's cookie: as for a single message below.
                    self.on_admitted(ctx);
                }
                self.on_batch(ctx, &dgram.payload[1..]);
            }
            Channel::Unreliable => match parse_unreliable(dgram.payload) {
                Ok((UnreliableHeader::Data, payload)) => {
                    if self.awaiting_admission {
                        // Data with the server's cookie: the stateless handshake never
                        // sends any, so a connection exists there (its reliable answer to
                        // our proof may be late or lost). `Connected` comes first.
                        self.on_admitted(ctx);
                    }
                    self.deliver_unreliable(ctx, payload);
                }
                Ok((UnreliableHeader::Disconnect, _)) => {
                    self.note_received(ctx, wire_len);
                    info!("{}: peer disconnected", self.link.remote);
                    // Reliable messages that arrived before the Disconnect (possibly in the
                    // same batch of datagrams) are delivered before `Disconnected`.
                    self.drain_messages(ctx, true);
                    let reason = if self.fin_sent && self.fin_received {
                        DisconnectReason::Finished
                    } else {
                        DisconnectReason::Remote
                    };
                    self.close(ctx, reason, None, false);
                    return;
                }
                Err(e) => {
                    self.note_received(ctx, wire_len);
                    self.protocol_error(ctx, format!("invalid unreliable datagram: {e}"));
                    return;
                }
            },
        }
        self.note_received(ctx, wire_len);
    }

    /// An unreliable message from the peer, alone or out of a coalesced datagram.
    pub(super) fn deliver_unreliable(&mut self, ctx: &mut Ctx<'_>, payload: &[u8]) {
        // After the peer's SendShutdown, unreliable data it sent before (and that was
        // reordered behind it) is dropped: nothing follows the event.
        if !self.receives_data() {
            return;
        }
        if ctx.events.pending_bytes() + payload.len()
            > (self.limits.max_pending_event_bytes as usize)
        {
            // The application is not draining events: unreliable data may be lost, so
            // drop it rather than grow without bound.
            self.link.stats.datagrams_dropped += 1;
        } else {
            self.link.stats.unreliable_received += 1;
            ctx.events.push_data(ctx.id, Channel::Unreliable, payload);
        }
    }

    pub(super) fn note_received(&mut self, ctx: &Ctx<'_>, len: usize) {
        self.last_receive = ctx.now;
        self.link.stats.datagrams_received += 1;
        self.link.stats.bytes_received += len as u64;
    }

    /// The cookie rules of PROTOCOL.md §4 with kcpnet's return-routability check.
    fn accept_cookie(&mut self, ctx: &mut Ctx<'_>, cookie: u32, channel: Channel) -> CookieCheck {
        let check = |ok: bool| {
            if ok {
                CookieCheck::Accept
            } else {
                CookieCheck::Reject
            }
        };
        match (self.role, self.state) {
            (Role::Server, ConnectionState::Connecting) => {
                if cookie == self.link.cookie {
                    // The client received our Hello at its address: the handshake is done.
                    self.state = ConnectionState::Connected;
                    self.established = true;
                    self.link.budgeted = false;
                    self.link.fec_encoding = true;
                    self.start_ping_clock(ctx.now);
                    info!("{} connected as {}", self.link.remote, ctx.id);
                    ctx.events.push_connected(ctx.id, self.link.remote);
                    CookieCheck::Accept
                } else {
                    // Hello retransmissions sent before the client learned our cookie.
                    check(cookie == 0)
                }
            }
            (Role::Client, _) if self.link.cookie == 0 => {
                // Adopt the server's cookie from its first valid reliable datagram (kcp2k
                // adopts it from any). An unreliable datagram before that — a Disconnect
                // in particular — cannot be told from a spoofed one: ignored.
                if cookie == 0 || channel != Channel::Reliable {
                    CookieCheck::Reject
                } else {
                    CookieCheck::Adopt
                }
            }
            _ => {
                if cookie != self.link.cookie {
                    debug!(
                        "{}: dropping datagram with wrong cookie {cookie:#x}",
                        self.link.remote
                    );
                }
                check(cookie == self.link.cookie)
            }
        }
    }

    // ---------------------------------------------------------------- process

    /// Runs the timers (timeout, dead link, ping, choke, handshake) and takes every complete
    /// reliable message out of KCP.
    pub(crate) fn process(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == ConnectionState::Disconnected {
            return;
        }
        self.roll_window(ctx.now);
        self.check_timers(ctx);
        self.drain_messages(ctx, false);
        self.finish_if_done(ctx);
    }

    fn check_timers(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        match self.state {
            ConnectionState::Disconnected => {}
            ConnectionState::Connecting => {
                if self.role == Role::Client
                    && self.link.cookie != 0
                    && time_diff(now, self.last_ping) >= PING_INTERVAL_MS as i32
                {
                    // As kcp2k's client does, but only once the client knows the cookie:
                    // before, a kcpnet server drops anything but a Hello from a stranger
                    // (the Hello's retransmissions are what reaches it). After, it adds to
                    // the proof of address KCP is already retransmitting.
                    self.last_ping = now;
                    self.last_ping_sent = now;
                    let _ = self
                        .kcp
                        .send_with_header(&[ReliableHeader::Ping.as_u8()], &now.to_le_bytes());
                }
                if time_diff(now, self.deadline) >= 0 {
                    let msg = format!(
                        "handshake with {} not completed within {} ms",
                        self.link.remote, self.limits.handshake_timeout
                    );
                    debug!("{msg}");
                    self.close(
                        ctx,
                        DisconnectReason::Timeout,
                        Some((ErrorCode::Timeout, msg.into())),
                        false,
                    );
                }
            }
            ConnectionState::Connected
            | ConnectionState::SendClosed
            | ConnectionState::PeerSendClosed
            | ConnectionState::Disconnecting => {
                if time_diff(now, self.last_receive) >= self.limits.timeout as i32 {
                    let msg = format!(
                        "nothing received from {} for {} ms",
                        self.link.remote, self.limits.timeout
                    );
                    info!("{} timed out: {msg}", ctx.id);
                    self.fail(ctx, DisconnectReason::Timeout, ErrorCode::Timeout, msg);
                    return;
                }
                if self.kcp.is_dead() {
                    let msg = format!(
                        "dead link to {}: a segment was sent {} times without acknowledgement",
                        self.link.remote,
                        self.kcp_dead_link()
                    );
                    info!("{}: {msg}", ctx.id);
                    self.fail(ctx, DisconnectReason::Timeout, ErrorCode::Timeout, msg);
                    return;
                }
                if self.is_open() && time_diff(now, self.ping_due()) >= 0 {
                    self.ping_interval(ctx, true);
                }
                let queued = self.kcp.total_queued();
                if queued >= (self.limits.choke as usize) {
                    let msg = format!(
                        "{queued} segments queued (threshold {}): the peer or the application \
                         is not keeping up",
                        self.limits.choke as usize
                    );
                    warn!("{} choked: {msg}", ctx.id);
                    self.fail(
                        ctx,
                        DisconnectReason::Congestion,
                        ErrorCode::Congestion,
                        msg,
                    );
                }
            }
        }
    }

    /// Once per ping interval: give back what a burst left behind, Ping the peer (with
    /// `ping`), take a round-trip sample, count the retransmission ratio and send a quality
    /// report.
    ///
    /// Trims once a whole ping interval passed without reliable messages. Not
    /// `Kcp::is_idle`: it also wants no pending ACKs, but the peer's Ping arrives in the very
    /// tick our own work is due, so a server never trimmed. Only trims above the idle working
    /// set: trimming that would make the next pings allocate again every second.
    fn ping_interval(&mut self, ctx: &mut Ctx<'_>, ping: bool) {
        let now = ctx.now;
        self.last_ping = now;
        let activity = self.app_messages();
        if self.kcp.wait_snd() == 0
            && activity == self.activity_at_ping
            && self.kcp.ring_heap_bytes() > TRIM_ABOVE_BYTES
        {
            self.kcp.trim_memory(IDLE_POOL_BUFFERS);
        }
        let active = activity != self.activity_at_ping;
        self.activity_at_ping = activity;
        if self.role == Role::Client
            && self.ext.contains(Extensions::SLOW_KEEPALIVE)
            && !active
            && self.kcp.wait_snd() == 0
        {
            // The server answers an idle client's Pings mostly with the ACK alone: the ACK
            // of our last Ping measured the round trip.
            if let Some(rtt) = self.kcp.last_rtt_sample() {
                self.rtt = Some(rtt);
            }
        }
        if ping && self.ping_wanted(now) {
            self.first_ping_done = true;
            self.last_ping_sent = now;
            let _ = self
                .kcp
                .send_with_header(&[ReliableHeader::Ping.as_u8()], &now.to_le_bytes());
        } else if let Some(rtt) = self.kcp.last_rtt_sample() {
            // No Ping of ours, so no Pong: the ACK of our last Pong measured the round trip.
            self.rtt = Some(rtt);
        }
        self.update_retransmit_ratio();
        self.send_quality_report(ctx, active);
    }

    fn kcp_dead_link(&self) -> u32 {
        self.kcp.dead_link()
    }

    /// Takes complete reliable messages out of KCP into the event queue. With `closing`, the
    /// event queue's byte budget is ignored: the connection is about to end, and what KCP
    /// holds (at most a receive window) must not be lost.
    pub(super) fn drain_messages(&mut self, ctx: &mut Ctx<'_>, closing: bool) {
        self.throttled = false;
        while self.state != ConnectionState::Disconnected {
            let size = match self.kcp.peek_size() {
                Ok(n) => n,
                Err(KcpError::BadFragments) => {
                    self.protocol_error(
                        ctx,
                        "the fragments of a reliable message do not count down to 0 \
                         (a corrupt or hostile peer)"
                            .into(),
                    );
                    break;
                }
                Err(_) => {
                    if self.kcp.is_recv_stalled() {
                        let msg = format!(
                            "the peer sent a message of more fragments than our receive \
                             window of {} segments can hold: {}",
                            self.kcp.rcv_wnd(),
                            self.window_mismatch()
                        );
                        self.protocol_error(ctx, msg);
                    }
                    break;
                }
            };
            if size > 1 + (self.limits.reliable_max as usize) {
                let msg = format!(
                    "reliable message of {size} bytes exceeds our maximum of {} \
                     (mtu {} and receive_window_size {}): {}",
                    1 + (self.limits.reliable_max as usize),
                    self.limits.mtu as usize,
                    self.limits.receive_window,
                    self.window_mismatch()
                );
                self.protocol_error(ctx, msg);
                break;
            }
            if size == 0 {
                self.protocol_error(ctx, "empty reliable message (no header byte)".into());
                break;
            }
            let pending = ctx.events.pending_bytes();
            if !closing
                && pending > 0
                && pending + size > (self.limits.max_pending_event_bytes as usize)
            {
                // Leave it in KCP: its window closes and the sender slows down. The driver
                // must process us again once the application took events (see
                // `is_throttled`): no datagram may come to do it, the sender waits for
                // our window update.
                self.throttled = true;
                break;
            }
            let start = ctx.events.reserve(size);
            if self.kcp.recv(ctx.events.slot_mut(start)).is_err() {
                ctx.events.unreserve(start);
                break;
            }
            let slot = ctx.events.slot_mut(start);
            let first = slot[0];
            if first == ReliableHeader::Data.as_u8() {
                if slot.len() == 1 {
                    ctx.events.unreserve(start);
                    self.protocol_error(ctx, "empty reliable Data message".into());
                    break;
                }
                if !self.receives_data() {
                    ctx.events.unreserve(start);
                    let msg = if self.fin_received {
                        "Data after the peer shut down its sending"
                    } else {
                        "Data before the handshake completed"
                    };
                    self.protocol_error(ctx, msg.into());
                    break;
                }
                self.link.stats.reliable_received += 1;
                ctx.events
                    .commit_reserved(ctx.id, Channel::Reliable, start, 1);
                continue;
            }
            // A control message: read what it carries, then give the slot back.
            let control = self.control(first, &slot[1..]);
            ctx.events.unreserve(start);
            match control {
                Control::Hello(offer, block) => self.on_hello(ctx, offer, block),
                Control::Ping(ts) => {
                    if let (Some(ts), true) = (ts, self.is_open()) {
                        // With the slow keepalive a server answers an idle client's
                        // keepalive Ping with its ACK alone (three times in four): that
                        // datagram refreshes the client's timeout and gives the client its
                        // round-trip sample, and with no Pong no ACK of it comes back. A
                        // busy connection's Pings get Pongs: their round trip then shows
                        // the queueing (`ping_rtt_ms`).
                        let keepalive = self.role == Role::Server && ctx.now != self.connected_at;
                        let ack_only = keepalive
                            && self.ext.contains(Extensions::SLOW_KEEPALIVE)
                            && self.kcp.wait_snd() == 0
                            && self.app_messages() == self.activity_at_ping
                            && self.acks_only < ACK_ONLY_ANSWERS;
                        if keepalive {
                            self.acks_only = if ack_only { self.acks_only + 1 } else { 0 };
                        }
                        if ack_only {
                            self.last_pong = ctx.now;
                            if time_diff(ctx.now, self.last_ping) >= PING_WORK_MIN_MS as i32 {
                                self.ping_interval(ctx, false);
                            }
                        } else if self.pongs.allow(ctx.now) {
                            if keepalive {
                                // The Pong keeps the client alive: our own Ping waits (see
                                // `Connection::ping_due`), its other work rides on this
                                // Ping (before the Pong is queued, so an idle send side
                                // can be trimmed). Not the client's proof of address,
                                // which arrives with the datagram that admitted it: it is
                                // no keepalive (the client's start 0.5–1 s after its
                                // `Connected`), so our first Ping keeps its time, as
                                // before the proof existed, and with it the first
                                // round-trip sample (an ACK of our Pong to the proof may
                                // well never come: the client's `una` acknowledges it).
                                self.last_pong = ctx.now;
                                if time_diff(ctx.now, self.last_ping) >= PING_WORK_MIN_MS as i32 {
                                    self.ping_interval(ctx, false);
                                }
                            }
                            let _ = self.kcp.send_with_header(
                                &[ReliableHeader::Pong.as_u8()],
                                &ts.to_le_bytes(),
                            );
                        }
                    }
                }
                Control::Pong(ts) => {
                    if let (Some(ts), true) = (ts, self.established) {
                        let rtt = time_diff(ctx.now, ts);
                        if rtt >= 0 {
                            self.rtt = Some(rtt as u32);
                        }
                    }
                }
                Control::SendShutdown => self.on_send_shutdown(ctx),
                Control::Invalid(e) => {
                    self.protocol_error(ctx, format!("invalid reliable message: {e}"));
                    break;
                }
            }
        }
    }

    /// What a reliable control message (header byte `first`, then `payload`) says. The
    /// kcpnet-only headers are read only once their extension was negotiated; before, they
    /// are undefined headers, as for kcp2k.
    fn control(&self, first: u8, payload: &[u8]) -> Control {
        match first {
            RELIABLE_SEND_SHUTDOWN if self.ext.contains(Extensions::HALF_CLOSE) => {
                Control::SendShutdown
            }
            _ => match ReliableHeader::try_from(first) {
                Ok(ReliableHeader::Hello) => Control::Hello(
                    parse_hello_block(payload),
                    handshake::announces_block(payload),
                ),
                Ok(ReliableHeader::Ping) => Control::Ping(parse_u32_payload(payload)),
                Ok(ReliableHeader::Pong) => Control::Pong(parse_u32_payload(payload)),
                // Handled by the caller.
                Ok(ReliableHeader::Data) => Control::Invalid(WireError::TooShort),
                Err(e) => Control::Invalid(e),
            },
        }
    }

    /// The window part of a mismatch report: both ends' receive windows.
    fn window_mismatch(&self) -> String {
        let ours = self.limits.receive_window;
        match self.peer_window {
            0 => format!(
                "our receive_window_size is {ours}; both ends must use the same \
                 receive_window_size and mtu"
            ),
            theirs => format!(
                "the peer's receive window is {theirs} segments, ours is {ours} \
                 (receive_window_size); both ends must use the same receive_window_size \
                 and mtu"
            ),
        }
    }

    /// A Hello whose payload announced `announced` extensions (`block`: it carried the
    /// kcpnet extension block).
    fn on_hello(&mut self, ctx: &mut Ctx<'_>, announced: Extensions, block: bool) {
        match (self.role, self.state) {
            (Role::Server, ConnectionState::Connecting) => {
                if !self.hello_sent {
                    self.hello_sent = true;
                    let (hello, len) = handshake::server_hello(self.ext);
                    let _ = self.kcp.send(&hello[..len]);
                }
            }
            (Role::Client, ConnectionState::Connecting) if !self.awaiting_admission => {
                // The server's answer: what it accepted of our offer (a kcp2k server's bare
                // Hello announces nothing).
                self.ext = announced & self.offered;
                if !self.activate_secure(ctx, self.ext) {
                    return;
                }
                if self.ext.contains(Extensions::FEC) {
                    self.install_fec(self.limits.fec);
                }
                // Our proof of address: a reliable Ping, flushed now together with our ACK
                // of the server's Hello. A kcpnet server creates our connection only when
                // a datagram carrying its cookie and `una <= 1` arrives (stateless
                // handshake); as a reliable segment the Ping is retransmitted by KCP until
                // the server acknowledges it, so a lost proof costs one RTO, not the wait
                // for our first keepalive Ping. A kcp2k server answers it with a Pong.
                self.last_ping = ctx.now;
                self.last_ping_sent = ctx.now;
                let _ = self
                    .kcp
                    .send_with_header(&[ReliableHeader::Ping.as_u8()], &ctx.now.to_le_bytes());
                let link = &mut self.link;
                let tx = &mut *ctx.tx;
                self.kcp
                    .flush_at(ctx.now, |buf| link.transmit_reliable(tx, buf));
                if block && !self.offered.is_empty() {
                    // A kcpnet server: until it shows that it admitted us, it would drop
                    // our unreliable messages as coming from a stranger. `Connected` waits
                    // for its answer to the proof (`handshake::proves_admission`).
                    self.awaiting_admission = true;
                    debug!(
                        "{}: Hello received, waiting for the server to admit us",
                        self.link.remote
                    );
                } else {
                    // A bare Hello: a kcp2k server, which admitted us on our Hello, or a
                    // kcpnet server with extensions off, which cannot be told from it (the
                    // proof above is retransmitted until it arrives there).
                    self.on_admitted(ctx);
                }
            }
            _ => self.protocol_error(ctx, "unexpected second Hello".into()),
        }
    }

    /// Client: the server has admitted us (a bare Hello, or a datagram only an admitted
    /// connection sends): `Connected`.
    fn on_admitted(&mut self, ctx: &mut Ctx<'_>) {
        self.awaiting_admission = false;
        self.link.fec_encoding = true;
        self.state = ConnectionState::Connected;
        self.established = true;
        self.start_ping_clock(ctx.now);
        info!(
            "connected to {} (kcpnet extensions {:#x})",
            self.link.remote,
            self.ext.bits()
        );
        ctx.events.push_connected(ctx.id, self.link.remote);
    }

    /// The peer broke the protocol: report `InvalidReceive` and disconnect. A server's
    /// connection that never reached `Connected` is dropped silently instead.
    pub(super) fn protocol_error(&mut self, ctx: &mut Ctx<'_>, message: String) {
        warn!("{} ({}): {message}", ctx.id, self.link.remote);
        self.fail(
            ctx,
            DisconnectReason::ProtocolError,
            ErrorCode::InvalidReceive,
            message,
        );
    }

    /// Reports an error, notifies the peer and closes.
    fn fail(
        &mut self,
        ctx: &mut Ctx<'_>,
        reason: DisconnectReason,
        code: ErrorCode,
        message: String,
    ) {
        self.close(ctx, reason, Some((code, message.into())), true);
    }
}
