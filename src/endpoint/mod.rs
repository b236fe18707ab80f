//! The sans-IO endpoint: every protocol decision of a server or a client, with no socket
//! and no clock.
//!
//! An [`Endpoint`] owns the connection table (a slab found by remote address, ids that never
//! alias), the timer schedule, the stateless handshake and admission of new peers, the
//! buffers every connection shares, and the event queue. It is driven by calls that take
//! the time (`now`: a [`Duration`] since any fixed origin) and, where datagrams may leave, a
//! [`Transmit`] sink:
//!
//! * [`Endpoint::handle_datagram`] for each datagram received,
//! * [`Endpoint::handle_timeout`] once the datagrams of a batch are in (timers run, complete
//!   messages become events),
//! * [`Endpoint::flush`] to send what is pending (reliable data, ACKs, retransmissions,
//!   pings),
//! * [`Endpoint::poll_timeout`] for when it next needs a call, [`Endpoint::poll_event`] for
//!   its events,
//! * and the application's requests ([`Endpoint::connect`], [`Endpoint::send`],
//!   [`Endpoint::disconnect`], ...), each applied at once: datagrams a request produces (an
//!   unreliable message, the Disconnect datagrams of a kick) go to the sink within the call.
//!
//! [`crate::Server`] and [`crate::Client`] are short loops around one endpoint: a socket,
//! a clock, and these calls. The same endpoint runs over anything that moves datagrams: a
//! test that passes them by hand, a relay, a WebRTC data channel.
//!
//! Datagrams leave through the sink as they are produced, written in place by KCP with no
//! copy; an [`Outbox`] is a sink that keeps them for a pull-style loop.
//!
//! ```
//! use std::time::Duration;
//! use kcpnet::endpoint::{Endpoint, Outbox};
//! use kcpnet::{Channel, Config, Event};
//!
//! let (server_addr, client_addr) = ("10.0.0.1:7777".parse().unwrap(), "10.0.0.2:5000".parse().unwrap());
//! let mut server = Endpoint::server(Config::default()).unwrap();
//! let mut client = Endpoint::client(Config::default()).unwrap();
//! let (mut to_server, mut to_client) = (Outbox::new(), Outbox::new());
//! let id = client.connect(Duration::ZERO, server_addr).unwrap();
//!
//! let mut got = None;
//! for ms in 0..200u64 {
//!     let now = Duration::from_millis(ms);
//!     while let Some((_to, data)) = to_server.pop() {
//!         server.handle_datagram(now, client_addr, data, &mut to_client);
//!     }
//!     server.handle_timeout(now, &mut to_client);
//!     while let Some(event) = server.poll_event() {
//!         if let Event::Data { id, channel, data } = event {
//!             got = Some(data.to_vec());
//!             let reply = data.to_vec();
//!             server.send(now, id, &reply, channel, &mut to_client).unwrap();
//!         }
//!     }
//!     server.flush(now, &mut to_client);
//!
//!     while let Some((_to, data)) = to_client.pop() {
//!         client.handle_datagram(now, server_addr, data, &mut to_server);
//!     }
//!     client.handle_timeout(now, &mut to_server);
//!     while client.poll_event().is_some() {}
//!     if ms == 50 {
//!         assert!(client.is_connected(id));
//!         client.send(now, id, b"hello", Channel::Reliable, &mut to_server).unwrap();
//!     }
//!     client.flush(now, &mut to_server);
//! }
//! assert_eq!(got.as_deref(), Some(&b"hello"[..]));
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::{OsRng, StdRng};
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::connection::handshake::CookieKey;
use crate::connection::{Connection, ConnectionState, Ctx, Extensions, SecureDrops, Tx};
use crate::error::{Error, ErrorCode};
use crate::event::{CloseMessage, ConnectionId, DisconnectReason, Event, EventQueue};
use crate::stats::{ConnectionQuality, ConnectionStats, EndpointStats};

mod admission;
mod output;
mod requests;
#[cfg(feature = "secure")]
mod secure;
mod table;

use output::CountingTx;
pub use output::{Outbox, Transmit};

use admission::RecentlyClosed;
use table::{Table, SLOT_OVERHEAD};

/// The endpoint's clock reading in the forms the layers need: a `Duration`, milliseconds as
/// `u64` for scheduling, and the wrapping `u32` KCP clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Now {
    pub at: Duration,
    pub ms: u64,
}

impl Now {
    fn new(at: Duration) -> Now {
        Now {
            at,
            ms: at.as_millis() as u64,
        }
    }

    /// The KCP clock: milliseconds, wrapping at 2^32.
    pub(crate) fn kcp(self) -> u32 {
        self.ms as u32
    }

    /// Converts an absolute KCP time at or after `self` to scheduler milliseconds.
    pub(crate) fn to_ms(self, kcp_time: u32) -> u64 {
        self.ms + crate::kcp::time_diff(kcp_time, self.kcp()).max(0) as u64
    }
}

/// What every connection of an endpoint shares: the config, the clock reading, the event
/// queue, the buffers lent to each call, the counters and the cookie key.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub events: EventQueue,
    /// Event drains currently open (an [`crate::EventDrain`] or a callback dispatch).
    pub dispatching: u32,
    /// Connections the application closed while a drain was open: their data events still
    /// in the drain's queue are discarded.
    pub closed_in_dispatch: Vec<ConnectionId>,
    scratch: Vec<u8>,
    /// Free KCP payload buffers shared by every connection: lent whole to a connection for
    /// each call (its KCP's pool, capped by the KCP pool limit: the windows' worth), so an
    /// idle connection holds none.
    buffers: Vec<Vec<u8>>,
    /// KCP's output buffer, shared: lent to a connection for each call.
    output: Vec<u8>,
    pub stats: EndpointStats,
    pub now: Now,
    /// The secret behind the stateless handshake's cookies.
    pub key: CookieKey,
    pub recently_closed: RecentlyClosed,
    /// Set by `begin_drain`: admit nobody; the reason new peers are told.
    pub draining: Option<(u32, CloseMessage)>,
    /// Where connections open sealed datagrams.
    open_buf: Vec<u8>,
    /// Drops on the secure datagram path (added into `EndpointStats` when read).
    pub secure_drops: SecureDrops,
    /// Unix time in seconds at `now == 0` (connect tokens' times are Unix times).
    pub unix_origin_secs: u64,
    /// Connect tokens that admitted a client: the token id, the address it was used from
    /// and its expiry (a token is refused from another address until it expires).
    #[cfg(feature = "secure")]
    pub tokens_used: secure::TokensUsed,
}

impl Shared {
    /// Runs `f` on `conn` with a context borrowing the event queue and the sink, lending it
    /// the shared output buffer and the shared pool of payload buffers for the call (both
    /// O(1) swaps).
    fn with_conn<R>(
        &mut self,
        out: &mut dyn Transmit,
        conn: &mut Connection,
        id: ConnectionId,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R,
    ) -> R {
        conn.lend_buffers(&mut self.buffers);
        conn.swap_output_buffer(&mut self.output);
        let mut tx = CountingTx {
            out,
            stats: &mut self.stats,
            scratch: &mut self.scratch,
        };
        let mut ctx = Ctx {
            now: self.now.kcp(),
            id,
            events: &mut self.events,
            tx: &mut tx,
            open_buf: &mut self.open_buf,
            secure_drops: &mut self.secure_drops,
        };
        let r = f(conn, &mut ctx);
        conn.swap_output_buffer(&mut self.output);
        conn.reclaim_buffers(&mut self.buffers);
        r
    }

    /// Sends one datagram that belongs to no connection (the stateless replies).
    fn send_datagram(&mut self, out: &mut dyn Transmit, data: &[u8], to: SocketAddr) -> bool {
        CountingTx {
            out,
            stats: &mut self.stats,
            scratch: &mut self.scratch,
        }
        .send(data, &[], to)
    }

    /// The config, the shared pool of free payload buffers and the shared output buffer,
    /// for a connection being created.
    fn parts_for_new_connection(&mut self) -> (&Config, &mut Vec<Vec<u8>>, &mut Vec<u8>) {
        (&self.config, &mut self.buffers, &mut self.output)
    }

    /// Heap bytes of the shared payload-buffer pool and output buffer.
    fn shared_buffer_bytes(&self) -> usize {
        self.buffers.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.buffers.iter().map(Vec::capacity).sum::<usize>()
            + self.output.capacity()
    }

    /// Notes that the application closed `id` (its queued data events are discarded).
    fn closed_by_app(&mut self, id: ConnectionId) {
        self.events.cancel_data(id);
        if self.dispatching > 0 {
            self.closed_in_dispatch.push(id);
        }
    }

    /// Moves the clock forward to `now` (never back).
    fn advance(&mut self, now: Duration) {
        if now > self.now.at {
            self.now = Now::new(now);
        }
    }
}

/// The sans-IO endpoint of a server or a client: see the [module docs](self).
///
/// A server endpoint ([`Endpoint::server`]) listens: strangers' Hellos get the stateless
/// reply and a peer that echoes the cookie becomes a connection. A client endpoint
/// ([`Endpoint::client`]) only talks to the peers it [`Endpoint::connect`]s to, and keeps
/// their ended connections for queries until it is dropped. Both can connect out.
///
/// Every method that takes `now` first moves the endpoint's clock to it (an earlier `now`
/// than one seen before is taken as the later one). `Endpoint` is `Send + Sync`.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) shared: Shared,
    table: Table,
    listening: bool,
}

impl Endpoint {
    /// A listening endpoint (the heart of [`crate::Server`]), with a cookie key from the
    /// operating system's CSPRNG. Fails with [`Error::InvalidConfig`] for an invalid
    /// config.
    pub fn server(config: Config) -> Result<Endpoint, Error> {
        Endpoint::new(config, true)
    }

    /// An endpoint that admits nobody and talks only to the peers it connects to (the heart
    /// of [`crate::Client`]).
    pub fn client(config: Config) -> Result<Endpoint, Error> {
        Endpoint::new(config, false)
    }

    fn new(config: Config, listening: bool) -> Result<Endpoint, Error> {
        config.validate()?;
        #[cfg(feature = "secure")]
        if listening
            && config
                .security
                .as_ref()
                .is_some_and(|s| s.public_addresses.is_empty())
        {
            return Err(Error::InvalidConfig(
                "security.public_addresses is empty: name the addresses clients reach this \
                 server at (connect tokens name them)"
                    .into(),
            ));
        }
        Ok(Endpoint {
            shared: Shared {
                config,
                events: EventQueue::default(),
                dispatching: 0,
                closed_in_dispatch: Vec::new(),
                scratch: Vec::new(),
                buffers: Vec::new(),
                output: Vec::new(),
                stats: EndpointStats::default(),
                now: Now::default(),
                key: CookieKey::new(OsRng.gen(), OsRng.gen()),
                recently_closed: RecentlyClosed::default(),
                draining: None,
                open_buf: Vec::new(),
                secure_drops: SecureDrops::default(),
                unix_origin_secs: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                #[cfg(feature = "secure")]
                tokens_used: secure::TokensUsed::default(),
            },
            table: Table::new(),
            listening,
        })
    }

    /// Makes cookies deterministic, for reproducible tests and replays only: cookies then no
    /// longer protect against spoofing. By default the cookie key comes from the OS's
    /// cryptographically secure generator (see `docs/PROTOCOL.md`, stateless handshake).
    pub fn seed_cookies_for_testing(&mut self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        self.shared.key = CookieKey::new(rng.gen(), rng.gen());
    }

    /// The cookie this endpoint hands `addr` now (for the fuzz harness's forgeries).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn current_cookie(&self, addr: SocketAddr) -> u32 {
        self.shared
            .key
            .current_with(&addr, self.shared.now.ms, Extensions::NONE)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Whether this endpoint admits new peers ([`Endpoint::server`]).
    pub fn is_listening(&self) -> bool {
        self.listening
    }

    /// The time of the latest call, as given.
    pub fn now(&self) -> Duration {
        self.shared.now.at
    }

    // ---------------------------------------------------------------- input

    /// Starts a connection to `remote`: its Hello leaves at the next [`Endpoint::flush`].
    /// Fails with [`Error::InvalidArgument`] if this endpoint already has a connection to
    /// `remote`.
    pub fn connect(&mut self, now: Duration, remote: SocketAddr) -> Result<ConnectionId, Error> {
        self.shared.advance(now);
        if self.table.by_addr.contains_key(&crate::io::AddrKey(remote)) {
            return Err(Error::InvalidArgument(format!(
                "already connected to {remote}"
            )));
        }
        let conn = Connection::new_client(remote, &self.shared.config, self.shared.now.kcp());
        let idx = self.table.insert(conn);
        self.table.mark_dirty(idx);
        Ok(self.table.id_of(idx).expect("just inserted"))
    }

    /// Handles one datagram received from `from`. A datagram of a connection is fed to it
    /// (its messages become events at [`Endpoint::handle_timeout`]); a stranger's is
    /// answered by the stateless handshake (listening endpoints only) or dropped and
    /// counted. Replies of the handshake go to `out`.
    pub fn handle_datagram(
        &mut self,
        now: Duration,
        from: SocketAddr,
        data: &[u8],
        out: &mut dyn Transmit,
    ) {
        self.shared.advance(now);
        self.shared.stats.datagrams_received += 1;
        self.shared.stats.bytes_received += data.len() as u64;
        if let Some(&idx) = self.table.by_addr.get(&crate::io::AddrKey(from)) {
            let dropped_before = self.table.slots[idx].conn.datagrams_dropped();
            self.table.with_conn(&mut self.shared, out, idx, |c, ctx| {
                c.handle_datagram(ctx, data)
            });
            if self.table.slots[idx].conn.datagrams_dropped() != dropped_before {
                self.shared.stats.dropped_invalid += 1;
            }
            if self.table.slots[idx].conn.is_quiet() {
                // Nothing for `process` or `flush` to do (an ACK of everything in flight,
                // say): only its deadline may have moved.
                self.table.settle(&mut self.shared, idx, !self.listening);
            } else {
                // `handle_timeout` processes it and `flush` reschedules it (it stays dirty
                // until then); only a close must take effect before the next datagram.
                self.table.mark_dirty(idx);
                self.table
                    .remove_if_closed(&mut self.shared, idx, !self.listening);
            }
            return;
        }
        admission::on_stranger(
            &mut self.table,
            &mut self.shared,
            out,
            self.listening,
            data,
            from,
        );
    }

    /// The network reported `remote` unreachable (an ICMP port unreachable): its
    /// connection, if any, ends at once with an error event.
    pub fn handle_unreachable(
        &mut self,
        now: Duration,
        remote: SocketAddr,
        out: &mut dyn Transmit,
    ) {
        self.shared.advance(now);
        let Some(&idx) = self.table.by_addr.get(&crate::io::AddrKey(remote)) else {
            return;
        };
        self.table.with_conn(&mut self.shared, out, idx, |c, ctx| {
            c.close(
                ctx,
                DisconnectReason::Closed,
                Some((
                    ErrorCode::ConnectionClosed,
                    format!("{remote} is unreachable (ICMP port unreachable)").into(),
                )),
                false,
            )
        });
        self.table.settle(&mut self.shared, idx, !self.listening);
    }

    /// Runs the connections that received datagrams or whose timers are due: timeouts,
    /// pings, dead-link and choke checks, and their complete messages out of KCP into the
    /// event queue. Call it after the datagrams of a batch are in; events are then ready.
    pub fn handle_timeout(&mut self, now: Duration, out: &mut dyn Transmit) {
        self.shared.advance(now);
        self.table
            .process_dirty(&mut self.shared, out, !self.listening);
    }

    /// Sends what the connections have pending (new reliable data, ACKs, due
    /// retransmissions, pings) and completes graceful disconnects.
    pub fn flush(&mut self, now: Duration, out: &mut dyn Transmit) {
        self.shared.advance(now);
        self.table.flush(&mut self.shared, out, !self.listening);
    }

    /// When the endpoint next needs [`Endpoint::handle_timeout`] and [`Endpoint::flush`]
    /// (the earliest timer of a connection, as a time on the `now` timeline); the latest
    /// `now` when work is due at once (events wait, sends wait to be flushed); `None` when
    /// nothing is scheduled (no live connection).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !self.shared.events.is_empty() {
            return Some(self.shared.now.at);
        }
        self.table
            .next_due_ms()
            .map(|ms| Duration::from_millis(ms).max(self.shared.now.at))
    }

    /// The earliest connection timer, whether or not events wait (see
    /// [`Endpoint::poll_timeout`]).
    pub(crate) fn next_timer(&self) -> Option<Duration> {
        self.table
            .next_due_ms()
            .map(|ms| Duration::from_millis(ms).max(self.shared.now.at))
    }

    /// The next event, if any. Message data borrows the endpoint until the next call.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.shared.events.pop()
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.shared.events.len()
    }

    /// Adds datagrams the sink had accepted but the network dropped later (a batching
    /// socket whose buffer was full when it flushed its batch) to the send-error count.
    pub fn record_send_drops(&mut self, dropped: u64) {
        if dropped > 0 {
            self.shared.stats.send_errors += dropped;
            self.shared.stats.datagrams_sent =
                self.shared.stats.datagrams_sent.saturating_sub(dropped);
        }
    }

    // --------------------------------------------------------------- queries

    /// Connections not yet closed: on a listening endpoint every one completed the
    /// handshake (nothing is stored for a peer before it proves its address), including
    /// those closing gracefully.
    pub fn connection_count(&self) -> usize {
        self.table.live()
    }

    /// Ids of the connected peers (handshake done, not yet closed).
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.table
            .slots
            .iter()
            .filter_map(|(i, _)| self.connected_at(i))
    }

    /// Puts the ids of the connected peers in `ids` (cleared first): a snapshot to iterate
    /// while sending, without holding a borrow of the endpoint.
    pub fn connections_into(&self, ids: &mut Vec<ConnectionId>) {
        ids.clear();
        ids.extend(self.connections());
    }

    pub(crate) fn conn(&self, id: ConnectionId) -> Option<&Connection> {
        self.table.slot(id).map(|s| &s.conn)
    }

    /// The peer's address (IPv4-mapped IPv6 addresses are reported as IPv4).
    pub fn remote_addr(&self, id: ConnectionId) -> Option<SocketAddr> {
        self.conn(id).map(Connection::remote)
    }

    /// The connection's state (`None` for an id this endpoint no longer holds).
    pub fn state(&self, id: ConnectionId) -> Option<ConnectionState> {
        self.conn(id).map(Connection::state)
    }

    /// True while the connection is connected (handshake done, not closing, neither side
    /// half-closed).
    pub fn is_connected(&self, id: ConnectionId) -> bool {
        self.state(id) == Some(ConnectionState::Connected)
    }

    /// Ping/Pong round-trip time in ms (`None` until measured); see
    /// [`crate::Server::rtt`].
    pub fn rtt(&self, id: ConnectionId) -> Option<u32> {
        self.conn(id).and_then(Connection::rtt)
    }

    /// Statistics of one connection, its [`ConnectionQuality`] included (as of the latest
    /// call).
    pub fn connection_stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        let now = self.shared.now.kcp();
        self.conn(id).map(|c| c.stats_at(now))
    }

    /// How good a connection's link is (as of the latest call).
    pub fn connection_quality(&self, id: ConnectionId) -> Option<ConnectionQuality> {
        let now = self.shared.now.kcp();
        self.conn(id).map(|c| c.quality(now))
    }

    /// The kcpnet extensions a connection negotiated.
    pub fn extensions(&self, id: ConnectionId) -> Option<Extensions> {
        self.conn(id).map(Connection::extensions)
    }

    /// KCP segments queued or in flight on a connection.
    pub fn send_backlog(&self, id: ConnectionId) -> Option<usize> {
        self.conn(id).map(Connection::wait_snd)
    }

    /// A connection's send-rate cap in bytes per second (`None`: no cap, or an unknown id).
    pub fn send_rate(&self, id: ConnectionId) -> Option<u32> {
        self.conn(id).and_then(Connection::send_rate)
    }

    /// Bytes of reliable data the application can still queue on a connection; see
    /// [`crate::Server::send_capacity`].
    pub fn send_capacity(&self, id: ConnectionId) -> Option<usize> {
        self.conn(id).map(Connection::send_capacity)
    }

    /// Bytes of memory one connection holds (its state, its slot and its buffers).
    pub fn connection_memory(&self, id: ConnectionId) -> Option<usize> {
        // The slot holds the connection inline; add what it points to.
        self.conn(id).map(|c| c.heap_bytes() + SLOT_OVERHEAD)
    }

    /// The most memory one connection can hold with this config, whatever its peer sends
    /// (the bound of `docs/PROTOCOL.md`, "Memory per connection").
    pub fn connection_memory_bound(&self) -> usize {
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        let probe = Connection::new_server_verified(nowhere, 1, &self.shared.config, 0);
        probe.memory_bound() - std::mem::size_of::<Connection>() + SLOT_OVERHEAD
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        #[cfg(feature = "secure")]
        let tokens = self.shared.tokens_used.heap_bytes();
        #[cfg(not(feature = "secure"))]
        let tokens = 0;
        let drops = self.shared.secure_drops;
        EndpointStats {
            connections: self.table.live(),
            shared_buffer_bytes: self.shared.shared_buffer_bytes()
                + self.shared.recently_closed.heap_bytes()
                + tokens,
            sealed_forged: self.shared.stats.sealed_forged + drops.forged,
            sealed_replayed: self.shared.stats.sealed_replayed + drops.replayed,
            unsealed_dropped: self.shared.stats.unsealed_dropped + drops.unsealed,
            ..self.shared.stats
        }
    }

    /// Tells the endpoint the Unix time (seconds) at `now`, for the expiry of connect
    /// tokens. By default it takes the system's time at its creation as the Unix time of
    /// `now == 0`; the drivers set it from their clock. Only a sans-IO loop whose `now` does
    /// not start near 0 needs it.
    pub fn set_unix_time(&mut self, now: Duration, unix_secs: u64) {
        self.shared.unix_origin_secs = unix_secs.saturating_sub(now.as_secs());
    }

    /// Drops a connection that has not sent anything yet, without events (a client
    /// replacing its attempt by a secure one before its first tick).
    #[cfg(feature = "secure")]
    pub(crate) fn forget(&mut self, id: ConnectionId) {
        if let Ok(idx) = self.table.index_of(id) {
            self.table.discard(idx);
        }
    }

    /// Connects to the first server a connect token names, with a secure session (the
    /// `secure` feature; see [`crate::secure`]): the Hello carries the token, and every
    /// datagram after the server's Hello is sealed with the token's keys. Fails with
    /// [`Error::InvalidArgument`] if the config's `mtu` is below
    /// [`crate::config::SECURE_MIN_MTU`] or `kcpnet_extensions` is off.
    #[cfg(feature = "secure")]
    pub fn connect_with_token(
        &mut self,
        now: Duration,
        token: &crate::secure::ConnectToken,
    ) -> Result<ConnectionId, Error> {
        let remote = *token
            .server_addresses()
            .first()
            .ok_or_else(|| Error::InvalidArgument("the token names no server".into()))?;
        self.connect_with_token_to(now, token, remote)
    }

    /// [`Endpoint::connect_with_token`] to `remote`, one of the token's servers as this
    /// client reaches it (or another address of the same server, behind a NAT for example:
    /// the server checks the token against its own public addresses).
    #[cfg(feature = "secure")]
    pub fn connect_with_token_to(
        &mut self,
        now: Duration,
        token: &crate::secure::ConnectToken,
        remote: SocketAddr,
    ) -> Result<ConnectionId, Error> {
        self.shared.advance(now);
        let config = &self.shared.config;
        if config.mtu < crate::config::SECURE_MIN_MTU || !config.kcpnet_extensions {
            return Err(Error::InvalidArgument(format!(
                "a secure session needs kcpnet_extensions and an mtu of at least {} (mtu is {})",
                crate::config::SECURE_MIN_MTU,
                config.mtu
            )));
        }
        if self.table.by_addr.contains_key(&crate::io::AddrKey(remote)) {
            return Err(Error::InvalidArgument(format!(
                "already connected to {remote}"
            )));
        }
        let (c2s, s2c) = token.session_keys();
        // A new salt for every attempt: the session's keys are never those of another.
        let salt: [u8; crate::secure::SALT_BYTES] = OsRng.gen();
        let session = crate::secure::Session::unsettled(
            &crate::secure::session_key(&c2s, &salt),
            &crate::secure::session_key(&s2c, &salt),
        );
        let mut attachment = Vec::with_capacity(crate::secure::ATTACHMENT_BYTES);
        attachment.extend_from_slice(&token.blob());
        attachment.extend_from_slice(&salt);
        let conn = Connection::new_client_secure(
            remote,
            config,
            self.shared.now.kcp(),
            session,
            &attachment,
        );
        let idx = self.table.insert(conn);
        self.table.mark_dirty(idx);
        Ok(self.table.id_of(idx).expect("just inserted"))
    }

    /// What the connect token of a secure session told of its client: `None` for a
    /// connection without a token (a kcp2k client in
    /// [`SecurityMode::Mixed`](crate::secure::SecurityMode::Mixed), any connection of a
    /// server without `security`), or an id this endpoint no longer holds.
    pub fn secure_session(&self, id: ConnectionId) -> Option<crate::secure::SecureSession<'_>> {
        self.conn(id)
            .and_then(Connection::secure_session)
            .map(|(client_id, user_data)| crate::secure::SecureSession {
                client_id,
                user_data,
            })
    }

    /// Whether the connection is a secure session (sealed datagrams).
    pub fn is_secure(&self, id: ConnectionId) -> bool {
        self.conn(id).is_some_and(Connection::is_secure)
    }
}
