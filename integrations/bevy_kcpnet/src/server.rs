//! The server side: the [`KcpServer`] resource, [`ServerEvent`] messages and
//! [`KcpServerPlugin`].

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Deref;

use bevy::prelude::*;
use bytes::Bytes;
use kcpnet::io::{
    Clock, ConditionerHandle, ConditionerStats, Conditions, Direction, LinkConditioner, Transport,
};
use kcpnet::{
    Channel, Config, ConnectionId, ConnectionQuality, ConnectionState, ConnectionStats,
    DisconnectReason, EndpointStats, OwnedEvent,
};

use crate::{glue, KcpLinkConditions, KcpSystems};

/// A kcp2k server as a bevy resource.
///
/// Insert it to start serving, remove it to stop: removing it (or dropping it) disconnects
/// every peer at once (kcp2k Disconnect datagrams), and [`KcpServerPlugin`] then reports a
/// `Disconnected` [`ServerEvent`] with [`DisconnectReason::Closed`] for every connection that
/// was still open. The plugin ticks it in [`KcpSystems`]; everything else is a method call
/// from your systems: the methods are [`kcpnet::Server`]'s, with the same signatures.
///
/// ```no_run
/// use bevy::prelude::*;
/// use bevy_kcpnet::prelude::*;
/// use bevy_kcpnet::kcpnet::{Channel, Config};
///
/// // Greets every client that connects, and tells everyone.
/// fn greet(mut events: MessageReader<ServerEvent>, mut server: ResMut<KcpServer>) {
///     for event in events.read() {
///         if let OwnedEvent::Connected { id, addr } = &event.0 {
///             let _ = server.send(*id, b"welcome", Channel::Reliable);
///             let told = server.broadcast(format!("{addr} joined").as_bytes(), Channel::Reliable);
///             info!("{told} clients told");
///         }
///     }
/// }
///
/// App::new()
///     .add_plugins((MinimalPlugins, KcpServerPlugin))
///     .insert_resource(KcpServer::bind("0.0.0.0:7777", Config::default()).unwrap())
///     .add_systems(Update, greet)
///     .run();
/// ```
#[derive(Resource)]
pub struct KcpServer {
    server: kcpnet::Server,
    /// Tells servers apart (a replaced resource is not "added" again in bevy).
    serial: u64,
}

impl std::fmt::Debug for KcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.server.fmt(f)
    }
}

impl KcpServer {
    /// Binds a UDP server socket at `addr`, as [`kcpnet::Server::bind`]: anything
    /// [`ToSocketAddrs`] takes (`"0.0.0.0:7777"`, `"[::]:7777"`, a [`SocketAddr`], …). The
    /// socket is wrapped in a link conditioner with perfect conditions, so
    /// [`KcpLinkConditions`] works on it.
    ///
    /// ```no_run
    /// use bevy_kcpnet::KcpServer;
    /// use bevy_kcpnet::kcpnet::Config;
    ///
    /// let server = KcpServer::bind("0.0.0.0:7777", Config::default())?;
    /// let any_port = KcpServer::bind(("127.0.0.1", 0), Config::default())?;
    /// # Ok::<(), bevy_kcpnet::kcpnet::Error>(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<KcpServer, kcpnet::Error> {
        glue::bind_server(addr, config).map(KcpServer::from_server)
    }

    /// A server over any transport and clock. [`KcpLinkConditions`] does not reach a
    /// conditioner inside `transport`: use
    /// [`with_conditioned_transport`](KcpServer::with_conditioned_transport) for that.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        config: Config,
    ) -> Result<KcpServer, kcpnet::Error> {
        glue::server_over(transport, clock, config).map(KcpServer::from_server)
    }

    /// A server over a link conditioner around any transport, and any clock: a
    /// [`kcpnet::io::MemoryNetwork`] socket in a [`LinkConditioner`] and a
    /// [`kcpnet::io::ManualClock`] make a deterministic test. [`KcpLinkConditions`],
    /// [`set_conditions`](KcpServer::set_conditions) and
    /// [`conditioner`](KcpServer::conditioner) reach the conditioner.
    pub fn with_conditioned_transport<T: Transport + 'static>(
        conditioner: LinkConditioner<T>,
        clock: Box<dyn Clock>,
        config: Config,
    ) -> Result<KcpServer, kcpnet::Error> {
        glue::server_over_conditioner(conditioner, clock, config).map(KcpServer::from_server)
    }

    /// Wraps a server made with kcpnet directly.
    pub fn from_server(server: kcpnet::Server) -> KcpServer {
        KcpServer {
            server,
            serial: crate::next_serial(),
        }
    }

    /// The kcpnet server, for anything this wrapper does not forward.
    pub fn inner(&self) -> &kcpnet::Server {
        &self.server
    }

    /// The kcpnet server, mutably. Ticking it here as well as in [`KcpSystems`] is allowed
    /// but its events then bypass [`ServerEvent`].
    pub fn inner_mut(&mut self) -> &mut kcpnet::Server {
        &mut self.server
    }

    /// Sends `data` to a connected peer on `channel`. Unreliable messages leave at once,
    /// reliable ones at the next [`KcpSystems::Send`]. See [`kcpnet::Server::send`] for the
    /// errors (none of them closes the connection).
    pub fn send(
        &mut self,
        id: ConnectionId,
        data: &[u8],
        channel: Channel,
    ) -> Result<(), kcpnet::Error> {
        self.server.send(id, data, channel)
    }

    /// Sends `data` to every connected peer; returns how many accepted it
    /// ([`kcpnet::Server::broadcast`]).
    pub fn broadcast(&mut self, data: &[u8], channel: Channel) -> usize {
        self.server.broadcast(data, channel)
    }

    /// Sends `data` to each connection in `ids`; returns how many accepted it
    /// ([`kcpnet::Server::send_each`]).
    pub fn send_each(&mut self, ids: &[ConnectionId], data: &[u8], channel: Channel) -> usize {
        self.server.send_each(ids, data, channel)
    }

    /// Closes a connection at once; a `Disconnected` [`ServerEvent`] with
    /// [`DisconnectReason::Local`] follows.
    pub fn disconnect(&mut self, id: ConnectionId) -> Result<(), kcpnet::Error> {
        self.server.disconnect(id)
    }

    /// Closes a connection once its queued reliable messages are acknowledged (or the
    /// configured linger time passed).
    pub fn disconnect_graceful(&mut self, id: ConnectionId) -> Result<(), kcpnet::Error> {
        self.server.disconnect_graceful(id)
    }

    /// Closes a connection at once telling a kcpnet peer why: it sees
    /// `Disconnected { reason: DisconnectReason::App { code, message } }` (a kcp2k peer sees
    /// a plain disconnect). See [`kcpnet::Server::disconnect_with`] for the message limit.
    ///
    /// ```
    /// # use bevy::prelude::*;
    /// # use bevy_kcpnet::prelude::*;
    /// // Kicks every client that sends an empty-looking message.
    /// fn kick(mut events: MessageReader<ServerEvent>, mut server: ResMut<KcpServer>) {
    ///     for event in events.read() {
    ///         if let OwnedEvent::Data { id, data, .. } = &event.0 {
    ///             if data.iter().all(|&b| b == 0) {
    ///                 let _ = server.disconnect_with(*id, 4001, "zeros are not a message");
    ///             }
    ///         }
    ///     }
    /// }
    /// # App::new().add_plugins(KcpServerPlugin).add_systems(Update, kick);
    /// ```
    pub fn disconnect_with(
        &mut self,
        id: ConnectionId,
        code: u32,
        message: &str,
    ) -> Result<(), kcpnet::Error> {
        self.server.disconnect_with(id, code, message)
    }

    /// [`KcpServer::disconnect_graceful`] with a reason, as [`KcpServer::disconnect_with`]:
    /// the peer receives everything queued, then the reason.
    pub fn disconnect_graceful_with(
        &mut self,
        id: ConnectionId,
        code: u32,
        message: &str,
    ) -> Result<(), kcpnet::Error> {
        self.server.disconnect_graceful_with(id, code, message)
    }

    /// Half-closes a connection ([`kcpnet::Server::shutdown_send`]): this side sends nothing
    /// more, the peer gets a `PeerSendClosed` event after the last message, and the
    /// peer's messages keep arriving until it shuts down its sending too; both sides then
    /// see `Disconnected { reason: Finished }`.
    pub fn shutdown_send(&mut self, id: ConnectionId) -> Result<(), kcpnet::Error> {
        self.server.shutdown_send(id)
    }

    /// Connected peers (half-open handshakes not included).
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.server.connections()
    }

    /// How many peers are connected.
    pub fn connection_count(&self) -> usize {
        self.server.connection_count()
    }

    /// A connection's state, `None` once it is gone.
    pub fn state(&self, id: ConnectionId) -> Option<ConnectionState> {
        self.server.state(id)
    }

    /// True while a connection is connected: handshake done, not closing, neither side
    /// half-closed ([`kcpnet::Server::is_connected`]).
    pub fn is_connected(&self, id: ConnectionId) -> bool {
        self.server.is_connected(id)
    }

    /// A peer's address.
    pub fn remote_addr(&self, id: ConnectionId) -> Option<SocketAddr> {
        self.server.remote_addr(id)
    }

    /// A connection's round-trip time from kcp2k pings, in ms (`None` until measured).
    pub fn rtt(&self, id: ConnectionId) -> Option<u32> {
        self.server.rtt(id)
    }

    /// A connection's statistics: RTT, datagrams and bytes each way, messages per channel,
    /// retransmissions, queue depths.
    pub fn connection_stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        self.server.connection_stats(id)
    }

    /// How good a connection's link is: KCP and ping RTTs, windowed loss and rates, pending
    /// reliable data ([`kcpnet::Server::connection_quality`]).
    ///
    /// ```
    /// # use bevy::prelude::*;
    /// # use bevy_kcpnet::prelude::*;
    /// fn show_quality(server: Res<KcpServer>) {
    ///     for id in server.connections() {
    ///         if let Some(q) = server.connection_quality(id) {
    ///             let loss = q.loss_estimate().value;
    ///             info!("{id}: rtt {} ms, loss {:.1}%", q.kcp_rtt_ms, loss * 100.0);
    ///         }
    ///     }
    /// }
    /// # App::new().add_systems(Update, show_quality.run_if(server_running));
    /// ```
    pub fn connection_quality(&self, id: ConnectionId) -> Option<ConnectionQuality> {
        self.server.connection_quality(id)
    }

    /// Counters of the whole endpoint.
    pub fn stats(&self) -> EndpointStats {
        self.server.stats()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, kcpnet::Error> {
        self.server.local_addr()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        self.server.config()
    }

    /// Sets the link conditions in one direction (or both) for every peer. [`KcpLinkConditions`]
    /// does the same from a resource.
    pub fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), kcpnet::Error> {
        self.server.set_conditions(direction, conditions)
    }

    /// The link conditioner's handle, for per-peer conditions and reseeding; `None` for a
    /// server made by [`with_transport`](KcpServer::with_transport).
    pub fn conditioner(&self) -> Option<&ConditionerHandle> {
        self.server.conditioner()
    }

    /// What the link conditioner did so far (dropped, delayed, duplicated datagrams).
    pub fn conditioner_stats(&self) -> Option<ConditionerStats> {
        glue::server_conditioner_stats(&self.server)
    }
}

impl Drop for KcpServer {
    fn drop(&mut self) {
        // Peers learn at once instead of at their timeout.
        self.server.shutdown();
    }
}

/// Something that happened on the server, as a bevy [`Message`]: kcpnet's own
/// [`OwnedEvent`], with the message bytes in a [`Bytes`]. Every kcpnet event arrives, in
/// kcpnet's order: `Connected`, `Data`, `PeerSendClosed` (the client half-closed),
/// `Error`, and one `Disconnected` per `Connected` with its [`DisconnectReason`].
///
/// Read it with `MessageReader<ServerEvent>` in a system ordered after
/// [`KcpSystems::Receive`]; match on `event.0` (or call [`OwnedEvent`]'s methods through
/// `Deref`, e.g. `event.id()`).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent(pub OwnedEvent<Bytes>);

impl Deref for ServerEvent {
    type Target = OwnedEvent<Bytes>;
    fn deref(&self) -> &OwnedEvent<Bytes> {
        &self.0
    }
}

impl From<OwnedEvent<Bytes>> for ServerEvent {
    fn from(event: OwnedEvent<Bytes>) -> Self {
        ServerEvent(event)
    }
}

impl From<ServerEvent> for OwnedEvent<Bytes> {
    fn from(event: ServerEvent) -> Self {
        event.0
    }
}

/// Ticks a [`KcpServer`] resource when there is one: `tick_incoming` in
/// [`KcpSystems::Receive`] (`PreUpdate`), `tick_outgoing` in [`KcpSystems::Send`]
/// (`PostUpdate`); events become [`ServerEvent`] messages, and [`KcpLinkConditions`] is
/// applied whenever it changes or a server is inserted.
#[derive(Debug, Default, Clone, Copy)]
pub struct KcpServerPlugin;

impl Plugin for KcpServerPlugin {
    fn build(&self, app: &mut App) {
        crate::configure_sets(app);
        app.add_message::<ServerEvent>()
            .init_resource::<OpenConnections>()
            .add_systems(
                PreUpdate,
                (apply_server_conditions, server_receive)
                    .chain()
                    .in_set(KcpSystems::Receive),
            )
            .add_systems(
                PostUpdate,
                server_send
                    .run_if(resource_exists::<KcpServer>)
                    .in_set(KcpSystems::Send),
            );
    }
}

/// Connections reported `Connected` and not yet `Disconnected`, and the server they belong
/// to, so that removing or replacing the server still ends each of them with exactly one
/// event.
#[derive(Resource, Default)]
struct OpenConnections {
    server: u64,
    ids: HashSet<ConnectionId>,
}

fn apply_server_conditions(
    server: Option<ResMut<KcpServer>>,
    conditions: Option<Res<KcpLinkConditions>>,
    mut applied_to: Local<u64>,
) {
    let (Some(mut server), Some(conditions)) = (server, conditions) else {
        return;
    };
    if *applied_to == server.serial && !conditions.is_changed() {
        return;
    }
    *applied_to = server.serial;
    let KcpLinkConditions { send, receive } = conditions.clone();
    if let Err(e) = glue::set_server_conditions(&mut server.server, send, receive) {
        warn!("kcp server: link conditions not applied: {e}");
    }
}

fn server_receive(
    server: Option<ResMut<KcpServer>>,
    mut open: ResMut<OpenConnections>,
    mut events: MessageWriter<ServerEvent>,
) {
    let serial = server.as_ref().map_or(0, |s| s.serial);
    if open.server != serial {
        // The server was removed or replaced: it closed these connections when dropped.
        for id in open.ids.drain() {
            events.write(ServerEvent(OwnedEvent::Disconnected {
                id,
                reason: DisconnectReason::Closed,
            }));
        }
        open.server = serial;
    }
    let Some(mut server) = server else {
        return;
    };
    glue::server_tick_incoming(&mut server.server, |event| {
        match &event.0 {
            OwnedEvent::Connected { id, .. } => {
                open.ids.insert(*id);
            }
            OwnedEvent::Disconnected { id, .. } => {
                open.ids.remove(id);
            }
            _ => {}
        }
        events.write(event);
    });
}

fn server_send(mut server: ResMut<KcpServer>) {
    glue::server_tick_outgoing(&mut server.server);
}

/// Run condition: a [`KcpServer`] resource exists.
pub fn server_running(server: Option<Res<KcpServer>>) -> bool {
    server.is_some()
}

/// Run condition: a [`KcpServer`] exists and has at least one connected client.
pub fn server_has_clients(server: Option<Res<KcpServer>>) -> bool {
    server.is_some_and(|s| s.connection_count() > 0)
}
