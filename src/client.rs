//! The client driver: one connection to one server, driven from the game loop.
//!
//! What is particular to a client lives here: the one connection and the filter that keeps
//! datagrams from anyone but its server out. The receive loop, event dispatch and transport
//! access are the shared [`Core`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use log::trace;

use crate::config::Config;
use crate::connection::{Connection, ConnectionState, Ctx, Extensions};
use crate::driver::{socket_options, Core, EventDrain, Peers};
use crate::error::{Error, ErrorCode};
use crate::event::{ConnectionId, DisconnectReason, Event};
use crate::io::{
    Clock, ConditionerHandle, Conditions, Direction, LinkConditioner, SystemClock, Transport,
    UdpTransport,
};
use crate::server::first_addr;
use crate::stats::{ConnectionQuality, ConnectionStats, EndpointStats};
use crate::wire::datagram::Channel;

/// The client's one connection.
struct Peer {
    conn: Connection,
    id: ConnectionId,
}

impl Peer {
    fn run<R>(&mut self, core: &mut Core, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R) -> R {
        core.with_conn(&mut self.conn, self.id, f)
    }
}

impl Peers for Peer {
    fn on_datagram(&mut self, core: &mut Core, data: &[u8], from: SocketAddr) {
        if from != self.conn.remote() {
            trace!("dropping {} bytes from {from}: not our server", data.len());
            core.stats.dropped_unknown += 1;
            return;
        }
        core.with_conn(&mut self.conn, self.id, |c, ctx| {
            c.handle_datagram(ctx, data)
        });
    }

    fn on_connection_refused(&mut self, core: &mut Core) {
        let remote = self.conn.remote();
        self.run(core, |c, ctx| {
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
    }

    fn after_receive(&mut self, core: &mut Core) {
        self.run(core, |c, ctx| c.process(ctx));
    }

    fn flush(&mut self, core: &mut Core) {
        self.run(core, |c, ctx| {
            c.process(ctx);
            c.flush(ctx);
        });
    }
}

/// A kcp2k-compatible client: one connection attempt to one server.
///
/// The handshake starts at the first [`Client::tick_outgoing`]. Every attempt ends with
/// exactly one [`Event::Disconnected`], preceded by [`Event::Connected`] if the handshake
/// completed. To reconnect, create a new `Client`. Dropping a client that is still
/// connected sends the kcp2k Disconnect, so the server forgets it at once.
/// `Client` is `Send + Sync`.
pub struct Client {
    core: Core,
    peer: Peer,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.peer.conn.remote())
            .field("state", &self.peer.conn.state())
            .finish()
    }
}

impl Client {
    /// Starts connecting to `addr` over a new UDP socket: anything [`ToSocketAddrs`] takes,
    /// such as `"127.0.0.1:7777"`, `("game.example.com", 7777)` or a [`SocketAddr`] (the
    /// first address it resolves to is used). A name that does not resolve gives
    /// [`Error::DnsResolve`], whose [`Error::code`] is [`ErrorCode::DnsResolve`].
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
        let handle = conditioner.handle();
        let mut client = Client::with_transport(Box::new(conditioner), clock, remote, config)?;
        client.core.conditioner = Some(handle);
        Ok(client)
    }

    /// A client over any [`Transport`] and [`Clock`] (an in-memory network and a virtual
    /// clock in tests), connecting to `remote`.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        remote: SocketAddr,
        config: Config,
    ) -> Result<Client, Error> {
        let core = Core::new(transport, clock, config)?;
        let conn = Connection::new_client(remote, &core.config, core.now.kcp());
        Ok(Client {
            core,
            peer: Peer {
                conn,
                id: ConnectionId::new(0, 1),
            },
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The id used in this client's events.
    pub fn id(&self) -> ConnectionId {
        self.peer.id
    }

    /// The local socket address (for a client made by [`Client::connect`], the source
    /// address the OS chose for the server, not the wildcard).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.core.transport.local_addr()?)
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.peer.conn.remote()
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.peer.conn.state()
    }

    /// True once the handshake completed and until the connection closes or either side
    /// half-closes it (see [`Client::state`]).
    pub fn is_connected(&self) -> bool {
        self.peer.conn.state() == ConnectionState::Connected
    }

    /// Round-trip time from kcp2k Ping/Pong, in ms (`None` until measured).
    pub fn rtt(&self) -> Option<u32> {
        self.peer.conn.rtt()
    }

    /// Statistics of the connection, its [`ConnectionQuality`] included (as of the last
    /// tick).
    pub fn connection_stats(&self) -> ConnectionStats {
        self.peer.conn.stats_at(self.core.now.kcp())
    }

    /// How good the link is (as of the last tick): see [`crate::Server::connection_quality`].
    pub fn connection_quality(&self) -> ConnectionQuality {
        self.peer.conn.quality(self.core.now.kcp())
    }

    /// The kcpnet extensions the connection negotiated ([`Extensions::NONE`] with a kcp2k
    /// server, and until connected).
    pub fn extensions(&self) -> Extensions {
        self.peer.conn.extensions()
    }

    /// Endpoint counters (datagrams, bytes, drops).
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            shared_buffer_bytes: self.core.shared_buffer_bytes(),
            ..self.core.stats
        }
    }

    /// KCP segments queued or in flight: a measure of send backlog.
    pub fn send_backlog(&self) -> usize {
        self.peer.conn.wait_snd()
    }

    /// Bytes of reliable data the application can still queue before [`Client::send`] fails
    /// with [`Error::SendQueueFull`] (see [`crate::Server::send_capacity`]); 0 while not
    /// connected.
    pub fn send_capacity(&self) -> usize {
        self.peer.conn.send_capacity()
    }

    /// Bytes of memory the connection holds (its state plus its buffers).
    pub fn connection_memory(&self) -> usize {
        self.peer.conn.memory_bytes()
    }

    /// Sets link conditions on this client's transport (see [`Client::connect`]). Fails with
    /// [`Error::InvalidArgument`] if the client has no conditioner (one made by
    /// [`Client::with_transport`]).
    pub fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        self.core.set_conditions(direction, conditions)
    }

    /// Sets link conditions for one peer address on this client's transport.
    pub fn set_peer_conditions(
        &mut self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        self.core.set_peer_conditions(peer, direction, conditions)
    }

    /// The handle of this client's link conditioner, for everything beyond
    /// `set_conditions`: per-peer conditions, statistics, reseeding (clone it to keep it).
    /// `None` for a client made by [`Client::with_transport`].
    pub fn conditioner(&self) -> Option<&ConditionerHandle> {
        self.core.conditioner.as_ref()
    }

    // ------------------------------------------------------------------ ticks

    /// Reads every pending datagram, runs the connection's timers and takes its complete
    /// messages out of KCP. Events are then ready in [`Client::drain_events`] /
    /// [`Client::poll_event`].
    pub fn tick_incoming(&mut self) {
        self.core.tick_incoming(&mut self.peer);
    }

    /// Flushes KCP (handshake, messages, ACKs, retransmissions, pings).
    pub fn tick_outgoing(&mut self) {
        self.core.tick_outgoing(&mut self.peer);
    }

    /// Blocks until a datagram may have arrived, the connection's next timer is due, or
    /// `max` passed, whichever is first (see [`crate::Server::wait`]). Returns at once when
    /// events are waiting; after the connection ended it waits only for `max`.
    pub fn wait(&mut self, max: Duration) -> Result<(), Error> {
        let delay = self.poll_delay();
        self.core.wait(delay, max)
    }

    /// How long until the client needs a tick; `Some(ZERO)` if work is due now, `None`
    /// once the connection has ended and nothing else is scheduled. Never in the past.
    pub fn poll_delay(&self) -> Option<Duration> {
        let conn = &self.peer.conn;
        let due = (conn.state() != ConnectionState::Disconnected).then(|| {
            let now = self.core.now;
            now.to_ms(conn.next_deadline(now.kcp()))
        });
        self.core.poll_delay(due)
    }

    /// [`Client::tick_incoming`], then hands every event to `handler` with a [`ClientCtx`]
    /// through which it can send, disconnect and query at once.
    pub fn tick_incoming_with<F>(&mut self, handler: F)
    where
        F: FnMut(&mut ClientCtx<'_>, Event<'_>),
    {
        self.tick_incoming();
        Core::dispatch(ClientCtx { client: self }, handler);
    }

    /// The queued events, each handed out with a [`ClientCtx`] so the application can reply
    /// while it holds the event (see [`EventDrain`]).
    pub fn drain_events(&mut self) -> EventDrain<ClientCtx<'_>> {
        EventDrain::new(ClientCtx { client: self })
    }

    /// The next event, if any. Message data borrows the client until the next call; to
    /// reply while holding an event use [`Client::drain_events`].
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.core.events.pop()
    }

    // ---------------------------------------------------------- app requests

    /// Sends a message. Reliable messages go out at the next [`Client::tick_outgoing`];
    /// unreliable ones at once. See [`crate::Server::send`] for the errors
    /// ([`Error::NotConnected`] while connecting, [`Error::ConnectionClosed`] once ended).
    pub fn send(&mut self, data: &[u8], channel: Channel) -> Result<(), Error> {
        self.core
            .with_conn(&mut self.peer.conn, self.peer.id, |c, ctx| {
                c.send(ctx, data, channel)
            })
    }

    /// Closes the connection at once (five unreliable Disconnect datagrams). A
    /// `Disconnected { reason: Local }` event follows; undelivered data events are dropped.
    pub fn disconnect(&mut self) {
        self.core.refresh_now();
        self.peer.run(&mut self.core, |c, ctx| {
            c.close(ctx, DisconnectReason::Local, None, true)
        });
        self.core.closed_by_app(self.peer.id);
        self.core.poll_transport();
    }

    /// Closes the connection once queued reliable data is acknowledged (or
    /// `linger_timeout_ms` passed). Keep ticking until `Disconnected` arrives.
    pub fn disconnect_graceful(&mut self) {
        self.peer
            .run(&mut self.core, |c, ctx| c.disconnect_graceful(ctx));
    }

    /// Closes the connection at once, telling a kcpnet server why: it receives
    /// `DisconnectReason::App { code, message }` (see [`crate::Server::disconnect_with`] for
    /// the limits; a kcp2k server sees a plain Disconnect).
    pub fn disconnect_with(&mut self, code: u32, message: &str) -> Result<(), Error> {
        self.core.refresh_now();
        self.peer.run(&mut self.core, |c, ctx| {
            c.disconnect_with(ctx, code, message, false)
        })?;
        self.core.closed_by_app(self.peer.id);
        self.core.poll_transport();
        Ok(())
    }

    /// [`Client::disconnect_graceful`] with a reason, as [`Client::disconnect_with`].
    pub fn disconnect_graceful_with(&mut self, code: u32, message: &str) -> Result<(), Error> {
        self.peer.run(&mut self.core, |c, ctx| {
            c.disconnect_with(ctx, code, message, true)
        })
    }

    /// Half-closes the connection: see [`crate::Server::shutdown_send`]. Further sends fail
    /// with [`Error::SendClosed`]; keep ticking: the server's messages still arrive until it
    /// shuts down too, then `Disconnected { reason: Finished }`. With a kcp2k server this is
    /// [`Client::disconnect_graceful`].
    pub fn shutdown_send(&mut self) -> Result<(), Error> {
        self.peer.run(&mut self.core, |c, ctx| c.shutdown_send(ctx))
    }
}

impl Drop for Client {
    /// Tells the server (kcp2k Disconnect) if the connection is still open, so it does not
    /// hold the connection until its timeout.
    fn drop(&mut self) {
        if matches!(
            self.peer.conn.state(),
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
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::DnsResolve(format!("{host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::DnsResolve(format!("{host}: no addresses")))
}
