//! The client driver: a UDP socket and the system clock around a sans-IO [`Endpoint`]
//! that does not listen and holds one connection, driven from the game loop.
//!
//! Everything the protocol decides lives in the endpoint (the same code as a server's);
//! this file is the public API of a client, which names its one connection implicitly.

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

/// A kcp2k-compatible client: one connection attempt to one server.
///
/// The handshake starts at the first [`Client::tick_outgoing`]. Every attempt ends with
/// exactly one [`Event::Disconnected`], preceded by [`Event::Connected`] if the handshake
/// completed. To reconnect, create a new `Client`. Dropping a client that is still
/// connected sends the kcp2k Disconnect, so the server forgets it at once.
/// `Client` is `Send + Sync`.
pub struct Client {
    io: Io,
    endpoint: Endpoint,
    /// The one connection.
    id: ConnectionId,
    /// The server's address.
    remote: SocketAddr,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.remote)
            .field("state", &self.state())
            .finish()
    }
}

impl Client {
    crate::driver::api::driver_api!(
        Client,
        ClientCtx,
        client,
        "client",
        "Client::connect(\"127.0.0.1:7777\", Config::default())",
        "disconnect()"
    );

    /// Starts connecting to `addr` over a new UDP socket: anything [`ToSocketAddrs`] takes,
    /// such as `"127.0.0.1:7777"`, `("game.example.com", 7777)` or a [`SocketAddr`] (the
    /// first address it resolves to is used). A name that does not resolve gives
    /// [`Error::DnsResolve`], whose [`Error::code`] is [`crate::ErrorCode::DnsResolve`].
    pub fn connect(addr: impl ToSocketAddrs, config: Config) -> Result<Client, Error> {
        config.validate()?;
        let remote = first_addr(addr)?;
        let mut udp = UdpTransport::bind_any_for(remote, &socket_options(&config, false))?;
        // The OS reports the server's ICMP "port unreachable" only on a connected socket
        // (Linux, BSD), so connect: an attempt at a closed port then ends at once instead
        // of at the handshake timeout. It also filters datagrams from other sources.
        udp.connect(remote)?;
        let conditioner = LinkConditioner::new(udp, rand::random());
        Client::with_conditioned_transport(
            conditioner,
            Box::new(SystemClock::new()),
            remote,
            config,
        )
    }

    /// [`Client::with_transport`] over a [`LinkConditioner`], whose handle the client keeps:
    /// [`Client::set_conditions`], [`Client::set_peer_conditions`] and
    /// [`Client::conditioner`] then reach it.
    pub fn with_conditioned_transport<T: Transport + 'static>(
        conditioner: LinkConditioner<T>,
        clock: Box<dyn Clock>,
        remote: SocketAddr,
        config: Config,
    ) -> Result<Client, Error> {
        Client::over(Io::conditioned(conditioner, clock), remote, config)
    }

    /// A client over any [`Transport`] and [`Clock`] (an in-memory network and a virtual
    /// clock in tests), connecting to `remote`.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        remote: SocketAddr,
        config: Config,
    ) -> Result<Client, Error> {
        Client::over(Io::new(transport, clock), remote, config)
    }

    /// Connects to the first server a [`ConnectToken`](crate::secure::ConnectToken) names,
    /// with a secure session: every datagram after the server's Hello is sealed with the
    /// token's keys, and the server admits the client only if the token is valid for it.
    /// The `secure` feature; see [`crate::secure`] and `docs/SECURITY.md`.
    ///
    /// A server that does not accept the token does not answer: the attempt ends with
    /// `Error { Timeout }` after `handshake_timeout_ms`. One without secure sessions (a
    /// kcp2k server) answers a bare Hello: the attempt ends at once with a protocol error,
    /// never in plaintext.
    #[cfg(feature = "secure")]
    pub fn connect_with_token(
        token: &crate::secure::ConnectToken,
        config: Config,
    ) -> Result<Client, Error> {
        let remote = *token
            .server_addresses()
            .first()
            .ok_or_else(|| Error::InvalidArgument("the token names no server".into()))?;
        let mut client = Client::connect(remote, config)?;
        client.use_token(token)?;
        Ok(client)
    }

    /// Makes this client's connection attempt (not yet started: call it before the first
    /// tick) a secure session with `token`, to the same server address. For clients made
    /// with [`Client::with_transport`] (an in-memory network in tests).
    #[cfg(feature = "secure")]
    pub fn use_token(&mut self, token: &crate::secure::ConnectToken) -> Result<(), Error> {
        let now = self.io.clock.now();
        self.endpoint.forget(self.id);
        self.id = self
            .endpoint
            .connect_with_token_to(now, token, self.remote)?;
        Ok(())
    }

    fn over(io: Io, remote: SocketAddr, config: Config) -> Result<Client, Error> {
        let mut endpoint = Endpoint::client(config)?;
        let id = endpoint.connect(io.clock.now(), remote)?;
        Ok(Client {
            io,
            endpoint,
            id,
            remote,
        })
    }

    /// The id used in this client's events.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        // An endpoint that does not listen keeps its ended connection for queries.
        self.endpoint
            .state(self.id)
            .unwrap_or(ConnectionState::Disconnected)
    }

    /// True once the handshake completed and until the connection closes or either side
    /// half-closes it (see [`Client::state`]).
    pub fn is_connected(&self) -> bool {
        self.state() == ConnectionState::Connected
    }

    /// Round-trip time from kcp2k Ping/Pong, in ms (`None` until measured); while idle
    /// with a kcpnet server, from the ACK of the latest Ping
    /// ([`ConnectionQuality::ping_rtt_ms`]).
    pub fn rtt(&self) -> Option<u32> {
        self.endpoint.rtt(self.id)
    }

    /// Statistics of the connection, its [`ConnectionQuality`] included (as of the last
    /// tick).
    pub fn connection_stats(&self) -> ConnectionStats {
        self.endpoint.connection_stats(self.id).unwrap_or_default()
    }

    /// How good the link is (as of the last tick): see [`crate::Server::connection_quality`].
    pub fn connection_quality(&self) -> ConnectionQuality {
        self.endpoint
            .connection_quality(self.id)
            .unwrap_or_default()
    }

    /// The kcpnet extensions the connection negotiated ([`Extensions::NONE`] with a kcp2k
    /// server, and until connected).
    pub fn extensions(&self) -> Extensions {
        self.endpoint
            .extensions(self.id)
            .unwrap_or(Extensions::NONE)
    }

    /// KCP segments queued or in flight: a measure of send backlog.
    pub fn send_backlog(&self) -> usize {
        self.endpoint.send_backlog(self.id).unwrap_or(0)
    }

    /// Bytes of reliable data the application can still queue before [`Client::send`] fails
    /// with [`Error::SendQueueFull`] (see [`crate::Server::send_capacity`]); 0 while not
    /// connected.
    pub fn send_capacity(&self) -> usize {
        self.endpoint.send_capacity(self.id).unwrap_or(0)
    }

    /// Caps what the client sends at `rate` bytes per second, or lifts the cap with `None`
    /// (see [`crate::Server::set_send_rate`]). The default comes from
    /// [`Config::send_rate_limit`](crate::Config::send_rate_limit); this works from the
    /// first call on, connected or not.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a cap below one datagram (`mtu` bytes) per second;
    /// [`Error::ConnectionClosed`] once the connection is gone.
    pub fn set_send_rate(&mut self, rate: Option<u32>) -> Result<(), Error> {
        let id = self.id;
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.set_send_rate(now, id, rate, out)
        })
    }

    /// The send-rate cap in bytes per second (`None`: no cap).
    pub fn send_rate(&self) -> Option<u32> {
        self.endpoint.send_rate(self.id)
    }

    /// Bytes of memory the connection holds (its state plus its buffers).
    pub fn connection_memory(&self) -> usize {
        self.endpoint.conn(self.id).map_or(0, |c| c.memory_bytes())
    }

    // ------------------------------------------------------------------ ticks

    /// Reads every pending datagram, runs the connection's timers and takes its complete
    /// messages out of KCP. Events are then ready in [`Client::drain_events`] /
    /// [`Client::poll_event`].
    pub fn tick_incoming(&mut self) {
        self.io.tick_incoming(&mut self.endpoint, Some(self.remote));
    }

    // ---------------------------------------------------------- app requests

    /// Sends a message. Reliable messages go out at the next [`Client::tick_outgoing`];
    /// unreliable ones at once. See [`crate::Server::send`] for the errors
    /// ([`Error::NotConnected`] while connecting, [`Error::ConnectionClosed`] once ended).
    pub fn send(&mut self, data: &[u8], channel: Channel) -> Result<(), Error> {
        let id = self.id;
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.send(now, id, data, channel, out)
        })
    }

    /// [`Client::send`] with [`SendFlags`] (see [`crate::Server::send_with`]): `FLUSH`
    /// sends the message and what was queued before it within the call; `NO_DELAY` drops
    /// and counts an unreliable message while the handshake is not complete instead of
    /// returning [`Error::NotConnected`].
    ///
    /// ```no_run
    /// # use kcpnet::{Channel, Client, Config, SendFlags};
    /// # let mut client = Client::connect("127.0.0.1:7777", Config::default())?;
    /// // The player's input of this frame: now, and never queued behind the handshake.
    /// client.send_with(b"input", Channel::Unreliable, SendFlags::FLUSH | SendFlags::NO_DELAY)?;
    /// # Ok::<(), kcpnet::Error>(())
    /// ```
    pub fn send_with(
        &mut self,
        data: &[u8],
        channel: Channel,
        flags: SendFlags,
    ) -> Result<(), Error> {
        let id = self.id;
        let release = flags.contains(SendFlags::FLUSH);
        self.io.request(&mut self.endpoint, release, |e, now, out| {
            e.send_with(now, id, data, channel, flags, out)
        })
    }

    /// Closes the connection at once (five unreliable Disconnect datagrams). A
    /// `Disconnected { reason: Local }` event follows; undelivered data events are dropped.
    pub fn disconnect(&mut self) {
        let id = self.id;
        let _ = self.io.request(&mut self.endpoint, true, |e, now, out| {
            e.disconnect(now, id, out)
        });
    }

    /// Closes the connection once queued reliable data is acknowledged (or
    /// `linger_timeout_ms` passed). Keep ticking until `Disconnected` arrives.
    pub fn disconnect_graceful(&mut self) {
        let id = self.id;
        let _ = self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.disconnect_graceful(now, id, out)
        });
    }

    /// Closes the connection at once, telling a kcpnet server why: it receives
    /// `DisconnectReason::App { code, message }` (see [`crate::Server::disconnect_with`] for
    /// the limits; a kcp2k server sees a plain Disconnect).
    pub fn disconnect_with(&mut self, code: u32, message: &str) -> Result<(), Error> {
        let id = self.id;
        self.io.request(&mut self.endpoint, true, |e, now, out| {
            e.disconnect_with(now, id, code, message, out)
        })
    }

    /// [`Client::disconnect_graceful`] with a reason, as [`Client::disconnect_with`].
    pub fn disconnect_graceful_with(&mut self, code: u32, message: &str) -> Result<(), Error> {
        let id = self.id;
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.disconnect_graceful_with(now, id, code, message, out)
        })
    }

    /// Half-closes the connection: see [`crate::Server::shutdown_send`]. Further sends fail
    /// with [`Error::SendClosed`]; keep ticking: the server's messages still arrive until it
    /// shuts down too, then `Disconnected { reason: Finished }`. With a kcp2k server this is
    /// [`Client::disconnect_graceful`].
    pub fn shutdown_send(&mut self) -> Result<(), Error> {
        let id = self.id;
        self.io.request(&mut self.endpoint, false, |e, now, out| {
            e.shutdown_send(now, id, out)
        })
    }
}

impl Drop for Client {
    /// Tells the server (kcp2k Disconnect) if the connection is still open, so it does not
    /// hold the connection until its timeout.
    fn drop(&mut self) {
        if matches!(
            self.state(),
            ConnectionState::Connected
                | ConnectionState::SendClosed
                | ConnectionState::PeerSendClosed
                | ConnectionState::Disconnecting
        ) {
            self.disconnect();
        }
    }
}

/// The client as seen while handling an event ([`Client::tick_incoming_with`],
/// [`Client::drain_events`]): it dereferences to the [`Client`], so everything a client
/// offers (send, disconnect, `is_connected`, `send_backlog`, statistics) is available.
pub struct ClientCtx<'a> {
    client: &'a mut Client,
}

crate::driver::drain::endpoint_context!(ClientCtx, Client, client);

/// Resolves `host:port` to one socket address (the first the resolver returns).
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    first_addr((host, port)).map_err(|e| match e {
        Error::DnsResolve(m) => Error::DnsResolve(format!("{host}: {m}")),
        other => other,
    })
}
