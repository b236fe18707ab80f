//! The server driver: a UDP socket and the system clock around a listening sans-IO
//! [`Endpoint`], driven from the game loop.
//!
//! Everything the protocol decides (the connection table, admission, timers, events) lives
//! in the endpoint; this file is the public API of a server and the loop of
//! [`crate::driver::Io`] it runs on.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::Config;
use crate::connection::{ConnectionState, Extensions};
use crate::driver::{first_addr, socket_options, EventDrain, Io};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::event::{ConnectionId, Event};
use crate::flags::SendFlags;
use crate::io::{
    Clock, ConditionerHandle, Conditions, Direction, LinkConditioner, SystemClock, Transport,
    UdpTransport,
};
use crate::stats::{ConnectionQuality, ConnectionStats, EndpointStats};
use crate::wire::datagram::Channel;

/// A kcp2k-compatible server. See the crate docs for a complete loop.
///
/// Each frame the application calls [`Server::tick_incoming`] (read every pending datagram,
/// run the timers of the connections that are due), handles events
/// ([`Server::drain_events`], [`Server::poll_event`] or [`Server::tick_incoming_with`]),
/// sends, then calls [`Server::tick_outgoing`] (flush), and waits for the next frame or for
/// work with [`Server::wait`]. Nothing else blocks and no thread is started.
///
/// Connections are kept in a slab and found by remote address; only those with traffic or
/// a due timer are touched in a tick, so thousands of idle connections cost almost nothing.
/// `Server` is `Send + Sync`: an engine can keep it as an ordinary resource.
pub struct Server {
    io: Io,
    endpoint: Endpoint,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.io.transport.local_addr().ok())
            .field("connections", &self.endpoint.connection_count())
            .finish()
    }
}

impl Server {
    crate::driver::api::driver_api!(
        Server,
        ServerCtx,
        server,
        "server",
        "Server::bind(\"[::]:7777\", Config::default())",
        "shutdown()"
    );

    /// Binds a UDP server socket at `addr`: anything [`ToSocketAddrs`] takes, such as
    /// `"[::]:7777"`, `"0.0.0.0:7777"`, `("::", 7777)` or a [`SocketAddr`] (the first
    /// address it resolves to is used).
    ///
    /// With `config.dual_mode` an IPv6 wildcard address also accepts IPv4 peers. The socket is
    /// wrapped in a [`LinkConditioner`] with perfect conditions, so
    /// [`Server::set_conditions`] works at run time.
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<Server, Error> {
        config.validate()?;
        let addr = first_addr(addr)?;
        let udp = UdpTransport::bind(addr, &socket_options(&config, true))?;
        let conditioner = LinkConditioner::new(udp, rand::random());
        Server::with_conditioned_transport(conditioner, Box::new(SystemClock::new()), config)
    }

    /// [`Server::with_transport`] over a [`LinkConditioner`], whose handle the server keeps:
    /// [`Server::set_conditions`], [`Server::set_peer_conditions`] and
    /// [`Server::conditioner`] then reach it.
    pub fn with_conditioned_transport<T: Transport + 'static>(
        conditioner: LinkConditioner<T>,
        clock: Box<dyn Clock>,
        config: Config,
    ) -> Result<Server, Error> {
        Server::over(Io::conditioned(conditioner, clock), config)
    }

    /// A server over any [`Transport`] and [`Clock`]: an in-memory network and a virtual
    /// clock for tests and simulations, or a custom socket.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        config: Config,
    ) -> Result<Server, Error> {
        Server::over(Io::new(transport, clock), config)
    }

    fn over(io: Io, config: Config) -> Result<Server, Error> {
        #[cfg(feature = "secure")]
        let config = {
            let mut config = config;
            // Tokens name the server's public address: the bound one counts, unless it is
            // the unspecified address (then `public_addresses` must name it).
            if let (Some(sec), Ok(local)) = (config.security.as_mut(), io.transport.local_addr()) {
                if !local.ip().is_unspecified() && !sec.public_addresses.contains(&local) {
                    sec.public_addresses.push(local);
                }
            }
            config
        };
        let mut endpoint = Endpoint::server(config)?;
        endpoint.set_unix_time(io.clock.now(), unix_time_secs());
        Ok(Server { io, endpoint })
    }

    /// What the connect token of a secure session told of its client (client id and user
    /// data); `None` for a connection without a token (a kcp2k client in
    /// [`SecurityMode::Mixed`](crate::secure::SecurityMode::Mixed)) or an id this server no
    /// longer holds. See [`crate::secure`].
    pub fn secure_session(&self, id: ConnectionId) -> Option<crate::secure::SecureSession<'_>> {
        self.endpoint.secure_session(id)
    }

    /// Whether the connection is a secure session (every datagram sealed).
    pub fn is_secure(&self, id: ConnectionId) -> bool {
        self.endpoint.is_secure(id)
    }

    /// Makes cookies deterministic, for reproducible tests and replays only: cookies then no
    /// longer protect against spoofing. By default the cookie key comes from the OS's
    /// cryptographically secure generator (see `docs/PROTOCOL.md`, stateless handshake).
    pub fn seed_cookies_for_testing(&mut self, seed: u64) {
        self.endpoint.seed_cookies_for_testing(seed);
    }

    // ------------------------------------------------------------------ ticks

    /// Reads every pending datagram (up to `max_datagrams_per_tick`), runs the timers of the
    /// connections that are due and takes their complete messages out of KCP. Events are
    /// then ready in [`Server::drain_events`] / [`Server::poll_event`].
    pub fn tick_incoming(&mut self) {
        self.io.tick_incoming(&mut self.endpoint, None);
    }

    // ---------------------------------------------------------- app requests

    /// Sends a message to a connected peer. Reliable messages go out at the next
    /// [`Server::tick_outgoing`]; unreliable ones at once.
    ///
    /// Errors, none of which closes the connection: [`Error::SendQueueFull`] when the
    /// connection already holds `send_queue_limit` bytes of reliable data (backpressure: see
    /// [`Server::send_capacity`]), [`Error::ConnectionClosed`] when the
    /// connection has ended (possibly in this very tick: its `Disconnected` event is queued;
    /// not a mistake of the application), [`Error::UnknownConnection`], [`Error::NotConnected`]
    /// (handshake not complete or disconnecting), [`Error::EmptyMessage`],
    /// [`Error::MessageTooLarge`].
    pub fn send(&mut self, id: ConnectionId, data: &[u8], channel: Channel) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.send(now, id, data, channel, out)
        })
    }

    /// [`Server::send`] with [`SendFlags`]:
    /// - [`SendFlags::FLUSH`]: the message, and all the connection has queued before it,
    ///   leaves the socket within the call (KCP flushes as far as its window allows, an open
    ///   FEC group's parity goes too, and a batching socket sends what it holds) instead of
    ///   at the next [`Server::tick_outgoing`];
    /// - [`SendFlags::NO_DELAY`] (unreliable only): if the peer's handshake is not
    ///   complete, the message is dropped and counted
    ///   ([`ConnectionStats::unreliable_dropped_no_delay`](crate::ConnectionStats)) and the
    ///   call returns `Ok`, where [`Server::send`] returns [`Error::NotConnected`].
    ///
    /// The errors of [`Server::send`], and [`Error::InvalidArgument`] for `NO_DELAY` on the
    /// reliable channel.
    ///
    /// ```no_run
    /// # use kcpnet::{Channel, Config, SendFlags, Server};
    /// # let mut server = Server::bind("[::]:7777", Config::default())?;
    /// # let id = server.connections().next().unwrap();
    /// // A hit confirmation: out now, not at the end of the frame.
    /// server.send_with(id, b"hit", Channel::Reliable, SendFlags::FLUSH)?;
    /// # Ok::<(), kcpnet::Error>(())
    /// ```
    pub fn send_with(
        &mut self,
        id: ConnectionId,
        data: &[u8],
        channel: Channel,
        flags: SendFlags,
    ) -> Result<(), Error> {
        let release = flags.contains(SendFlags::FLUSH);
        self.io.request(&mut self.endpoint, release, |e, now, out| {
            e.send_with(now, id, data, channel, flags, out)
        })
    }

    /// Sends a message to every connected peer, as [`Server::send`] to each; how many
    /// accepted it (a peer whose send fails, with [`Error::SendQueueFull`] for instance, is
    /// skipped: compare with [`Server::connection_count`] or use [`Server::send_each`] with
    /// your own checks).
    ///
    /// ```no_run
    /// # use kcpnet::{Channel, Config, Server};
    /// # let mut server = Server::bind("[::]:7777", Config::default())?;
    /// let reached = server.broadcast(b"round starts", Channel::Reliable);
    /// # Ok::<(), kcpnet::Error>(())
    /// ```
    pub fn broadcast(&mut self, data: &[u8], channel: Channel) -> usize {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.broadcast(now, data, channel, out)
        })
    }

    /// Sends a message to each connection of `ids`; how many accepted it. With
    /// [`Server::connections_into`] this sends to a chosen set without holding a borrow of
    /// the server:
    ///
    /// ```no_run
    /// # use kcpnet::{Channel, Config, ConnectionId, Server};
    /// # let mut server = Server::bind("[::]:7777", Config::default())?;
    /// # let shooter = server.connections().next().unwrap();
    /// let mut ids: Vec<ConnectionId> = Vec::new(); // keep it across frames: no allocation
    /// server.connections_into(&mut ids);
    /// ids.retain(|&id| id != shooter);
    /// server.send_each(&ids, b"shot fired", Channel::Unreliable);
    /// # Ok::<(), kcpnet::Error>(())
    /// ```
    pub fn send_each(&mut self, ids: &[ConnectionId], data: &[u8], channel: Channel) -> usize {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            ids.iter()
                .filter(|&&id| e.send(now, id, data, channel, out).is_ok())
                .count()
        })
    }

    /// Closes a connection at once (kcp2k's `Disconnect`: five unreliable Disconnect
    /// datagrams; queued reliable data is dropped). A `Disconnected { reason: Local }` event
    /// follows, and undelivered data events of this connection are discarded.
    pub fn disconnect(&mut self, id: ConnectionId) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, true, |e, now, out| {
            e.disconnect(now, id, out)
        })
    }

    /// Closes a connection after its queued reliable data has been acknowledged (or
    /// `linger_timeout_ms` passed). Sending stops at once; received messages are still
    /// delivered until the `Disconnected` event.
    pub fn disconnect_graceful(&mut self, id: ConnectionId) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.disconnect_graceful(now, id, out)
        })
    }

    /// Closes a connection at once, as [`Server::disconnect`], telling a kcpnet peer why:
    /// it receives `Disconnected { reason: DisconnectReason::App { code, message } }` (the
    /// reason travels in each of the five close datagrams, so it survives loss as well as a
    /// plain Disconnect). A kcp2k peer gets the plain Disconnect. `message` may have at most
    /// [`crate::CloseMessage::MAX_LEN`] (128) bytes — fewer with an `mtu` below 140:
    /// `mtu - 12` — or the call fails with [`Error::ReasonTooLong`] and nothing happens.
    /// See the crate docs for a complete example.
    pub fn disconnect_with(
        &mut self,
        id: ConnectionId,
        code: u32,
        message: &str,
    ) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, true, |e, now, out| {
            e.disconnect_with(now, id, code, message, out)
        })
    }

    /// [`Server::disconnect_graceful`] with a reason, as [`Server::disconnect_with`]: the
    /// peer receives everything queued, then `DisconnectReason::App { code, message }`.
    pub fn disconnect_graceful_with(
        &mut self,
        id: ConnectionId,
        code: u32,
        message: &str,
    ) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.disconnect_graceful_with(now, id, code, message, out)
        })
    }

    /// Half-closes a connection: this side sends nothing more ([`Server::send`] fails with
    /// [`Error::SendClosed`]) but everything already queued is delivered, the peer is told
    /// after the last message and reports [`Event::PeerSendClosed`], and its messages keep
    /// arriving until it shuts down its sending too. Then the connection ends with one
    /// `Disconnected { reason: Finished }` on each side. The state is
    /// [`ConnectionState::SendClosed`] meanwhile ([`ConnectionState::PeerSendClosed`] on the
    /// peer). Needs a kcpnet peer (the half-close extension); with a kcp2k peer it is
    /// [`Server::disconnect_graceful`]. Calling it again is a no-op.
    pub fn shutdown_send(&mut self, id: ConnectionId) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.shutdown_send(now, id, out)
        })
    }

    /// Starts a graceful drain, as a fleet manager's SIGTERM asks: the server admits nobody
    /// from now on (a kcpnet client that tries ends with `Disconnected { reason: App { code,
    /// message } }`; a kcp2k client gets no answer), and every connection is closed
    /// gracefully with this reason, its queued reliable messages delivered first. Then
    /// [`Server::linger`] runs the network until every connection has ended:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use kcpnet::{Config, Server};
    /// # let mut server = Server::bind("[::]:7777", Config::default())?;
    /// server.begin_drain(1001, "server draining")?;
    /// let clean = server.linger(Duration::from_secs(10));
    /// # Ok::<(), kcpnet::Error>(())
    /// ```
    ///
    /// Fails with [`Error::ReasonTooLong`] (nothing changes) for a message the close
    /// datagram cannot carry: see [`Server::disconnect_with`].
    pub fn begin_drain(&mut self, code: u32, message: &str) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.begin_drain(now, code, message, out)
        })
    }

    /// Whether [`Server::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.endpoint.is_draining()
    }

    /// Closes every connection (hard disconnect, Disconnect datagrams sent), reporting
    /// `Disconnected` for each connected one.
    pub fn shutdown(&mut self) {
        self.io.request(&mut self.endpoint, true, |e, now, out| {
            e.close_all(now, out)
        });
    }

    // --------------------------------------------------------------- queries

    /// Connections in the table: every one completed the handshake (nothing is stored for
    /// a peer before it proves its address), including those closing gracefully.
    pub fn connection_count(&self) -> usize {
        self.endpoint.connection_count()
    }

    /// Ids of the connected peers.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.endpoint.connections()
    }

    /// Puts the ids of the connected peers in `ids` (cleared first): a snapshot to iterate
    /// while sending or kicking (see [`Server::send_each`]).
    pub fn connections_into(&self, ids: &mut Vec<ConnectionId>) {
        self.endpoint.connections_into(ids);
    }

    /// The peer's address (IPv4-mapped IPv6 addresses are reported as IPv4).
    pub fn remote_addr(&self, id: ConnectionId) -> Option<SocketAddr> {
        self.endpoint.remote_addr(id)
    }

    /// The connection's state.
    pub fn state(&self, id: ConnectionId) -> Option<ConnectionState> {
        self.endpoint.state(id)
    }

    /// True while the connection is connected (handshake done, not closing, neither side
    /// half-closed: see [`Server::state`] for [`ConnectionState::SendClosed`] and
    /// [`ConnectionState::PeerSendClosed`]).
    pub fn is_connected(&self, id: ConnectionId) -> bool {
        self.state(id) == Some(ConnectionState::Connected)
    }

    /// Round-trip time in ms (`None` until measured): from the server's Ping/Pong, or, while
    /// the client pings (the server then sends no Ping of its own), from the client's ACK
    /// of the server's latest Pong ([`ConnectionQuality::ping_rtt_ms`]).
    pub fn rtt(&self, id: ConnectionId) -> Option<u32> {
        self.endpoint.rtt(id)
    }

    /// Statistics of one connection, its [`ConnectionQuality`] included (as of the last
    /// tick).
    pub fn connection_stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        self.endpoint.connection_stats(id)
    }

    /// How good a connection's link is (as of the last tick): KCP and Ping RTTs, loss
    /// estimates with their margins, windowed rates, pending reliable data.
    ///
    /// ```
    /// # fn show(server: &kcpnet::Server, id: kcpnet::ConnectionId) {
    /// if let Some(q) = server.connection_quality(id) {
    ///     let loss = q.loss_estimate();
    ///     println!(
    ///         "rtt {} ms, loss {:.1}% ±{:.1}, {:.0} B/s out, {} B pending",
    ///         q.kcp_rtt_ms,
    ///         loss.value * 100.0,
    ///         loss.margin * 100.0,
    ///         q.bytes_out_per_sec,
    ///         q.pending_reliable_bytes
    ///     );
    /// }
    /// # }
    /// ```
    pub fn connection_quality(&self, id: ConnectionId) -> Option<ConnectionQuality> {
        self.endpoint.connection_quality(id)
    }

    /// The kcpnet extensions a connection negotiated: [`Extensions::ALL`] with a kcpnet
    /// peer of this version, [`Extensions::NONE`] with a kcp2k peer.
    pub fn extensions(&self, id: ConnectionId) -> Option<Extensions> {
        self.endpoint.extensions(id)
    }

    /// KCP segments queued or in flight on a connection: a measure of send backlog.
    pub fn send_backlog(&self, id: ConnectionId) -> Option<usize> {
        self.endpoint.send_backlog(id)
    }

    /// Bytes of reliable data the application can still queue on a connection before
    /// [`Server::send`] fails with [`Error::SendQueueFull`] (backpressure): a send is
    /// accepted while this is positive. `None` for an unknown or closed id; 0 while not
    /// connected.
    pub fn send_capacity(&self, id: ConnectionId) -> Option<usize> {
        self.endpoint.send_capacity(id)
    }

    /// Caps what a connection sends at `rate` bytes per second of whole datagrams, or lifts
    /// its cap with `None` (the default comes from [`Config::send_rate_limit`]): reliable
    /// data is paced to the cap, unreliable messages go first within it (see the config
    /// field for what waits and what is dropped). [`ConnectionQuality::send_rate_limit`]
    /// and [`ConnectionQuality::send_queue_ms`] show the cap and how long the backlog takes
    /// under it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a cap below one datagram (`mtu` bytes) per second;
    /// [`Error::UnknownConnection`] / [`Error::ConnectionClosed`] for an id that is not
    /// open.
    ///
    /// ```no_run
    /// # fn f(server: &mut kcpnet::Server, id: kcpnet::ConnectionId) -> Result<(), kcpnet::Error> {
    /// server.set_send_rate(id, Some(64 * 1024))?; // 64 KiB/s for this player
    /// let q = server.connection_quality(id).expect("open");
    /// assert_eq!(q.send_rate_limit, Some(64 * 1024));
    /// if q.send_queue_ms.unwrap_or(0) > 500 {
    ///     // more than half a second of data waits: hold back the map download
    /// }
    /// # Ok(()) }
    /// ```
    pub fn set_send_rate(&mut self, id: ConnectionId, rate: Option<u32>) -> Result<(), Error> {
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.set_send_rate(now, id, rate, out)
        })
    }

    /// A connection's send-rate cap in bytes per second (`None`: none, or an unknown id).
    pub fn send_rate(&self, id: ConnectionId) -> Option<u32> {
        self.endpoint.send_rate(id)
    }

    /// Bytes of memory one connection holds (its state plus its buffers).
    pub fn connection_memory(&self, id: ConnectionId) -> Option<usize> {
        self.endpoint.connection_memory(id)
    }

    /// The most memory one connection can hold with this server's config, whatever its peer
    /// sends (the bound of `docs/PROTOCOL.md`, "Memory per connection"):
    /// [`Server::connection_memory`] never exceeds it.
    pub fn connection_memory_bound(&self) -> usize {
        self.endpoint.connection_memory_bound()
    }
}

/// The server as seen while handling an event ([`Server::tick_incoming_with`],
/// [`Server::drain_events`]): everything a [`Server`] offers is available through it
/// (it dereferences to the server) — send, disconnect, queries — and data events of a
/// connection the handler disconnects are discarded from the rest of the dispatch.
pub struct ServerCtx<'a> {
    server: &'a mut Server,
}

crate::driver::drain::endpoint_context!(ServerCtx, Server, server);

/// The system's Unix time in seconds (0 before 1970).
pub(crate) fn unix_time_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
