//! The server side: the [`KcpServer`] resource, [`ServerEvent`] messages and
//! [`KcpServerPlugin`].

use std::collections::HashSet;
use std::net::SocketAddr;

use bevy::prelude::*;
use bytes::Bytes;
use kcpnet::io::{
    Clock, ConditionerHandle, ConditionerStats, Conditions, Direction, LinkConditioner, Transport,
};
use kcpnet::{
    Channel, Config, ConnectionId, ConnectionState, ConnectionStats, DisconnectReason,
    EndpointStats, ErrorCode,
};

use crate::{glue, KcpLinkConditions, KcpSystems};

/// A kcp2k server as a bevy resource.
///
/// Insert it to start serving, remove it to stop: removing it (or dropping it) disconnects
/// every peer at once (kcp2k Disconnect datagrams), and [`KcpServerPlugin`] then reports a
/// [`ServerEvent::Disconnected`] with [`DisconnectReason::Closed`] for every connection that
/// was still open. The plugin ticks it in [`KcpSystems`]; everything else is a method call
/// from your systems.
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
    /// Binds a UDP server socket at `addr` (e.g. `"0.0.0.0:7777"`). The socket is wrapped in a
    /// link conditioner with perfect conditions, so [`KcpLinkConditions`] works on it.
    pub fn bind(addr: SocketAddr, config: Config) -> Result<KcpServer, kcpnet::Error> {
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

    /// Sends `data` to every connected peer; returns how many accepted it.
    pub fn broadcast(&mut self, data: &[u8], channel: Channel) -> usize {
        let ids: Vec<ConnectionId> = self.server.connections().collect();
        ids.into_iter()
            .filter(|&id| self.server.send(id, data, channel).is_ok())
            .count()
    }

    /// Closes a connection at once; a [`ServerEvent::Disconnected`] with
    /// [`DisconnectReason::Local`] follows.
    pub fn disconnect(&mut self, id: ConnectionId) -> Result<(), kcpnet::Error> {
        self.server.disconnect(id)
    }

    /// Closes a connection once its queued reliable messages are acknowledged (or the
    /// configured linger time passed).
    pub fn disconnect_graceful(&mut self, id: ConnectionId) -> Result<(), kcpnet::Error> {
        self.server.disconnect_graceful(id)
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

/// Something that happened on the server, as a bevy [`Message`]: read it with
/// `MessageReader<ServerEvent>` in a system ordered after [`KcpSystems::Receive`].
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client completed the handshake (and proved it receives at its address).
    Connected {
        /// The connection.
        id: ConnectionId,
        /// The client's address.
        addr: SocketAddr,
    },
    /// A message arrived.
    Data {
        /// The connection.
        id: ConnectionId,
        /// Reliable (ordered, exactly once) or unreliable.
        channel: Channel,
        /// The message.
        data: Bytes,
    },
    /// A connection ended; exactly one per `Connected`. No `Data` follows it.
    Disconnected {
        /// The connection.
        id: ConnectionId,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// A problem on a connection, usually followed by `Disconnected`.
    Error {
        /// The connection.
        id: ConnectionId,
        /// kcp2k's error code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
}

impl ServerEvent {
    /// The connection the event belongs to.
    pub fn id(&self) -> ConnectionId {
        match self {
            ServerEvent::Connected { id, .. }
            | ServerEvent::Data { id, .. }
            | ServerEvent::Disconnected { id, .. }
            | ServerEvent::Error { id, .. } => *id,
        }
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
            events.write(ServerEvent::Disconnected {
                id,
                reason: DisconnectReason::Closed,
            });
        }
        open.server = serial;
    }
    let Some(mut server) = server else {
        return;
    };
    glue::server_tick_incoming(&mut server.server, |event| {
        match &event {
            ServerEvent::Connected { id, .. } => {
                open.ids.insert(*id);
            }
            ServerEvent::Disconnected { id, .. } => {
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
