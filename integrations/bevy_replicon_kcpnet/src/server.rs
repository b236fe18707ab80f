//! The server backend: [`RepliconKcpServerPlugin`].

use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy_kcpnet::prelude::*;
use bevy_replicon::prelude::*;
use bevy_replicon::shared::backend::connected_client::NetworkId;
use kcpnet::{ConnectionId, DisconnectReason, OwnedEvent};

use crate::channels::{self, decode, encode};
use crate::glue::{self, SendFailure, StatsWindow};

/// The server half of the backend. Adds [`KcpServerPlugin`] if the app does not have it yet.
///
/// While a [`KcpServer`] resource exists the server is [`ServerState::Running`]; removing it
/// stops the server ([`ServerState::Stopped`]) and despawns every client entity. Each kcp2k
/// connection is an entity with [`ConnectedClient`], a [`NetworkId`] (the connection id as a
/// `u64`), [`ConnectedClientStats`] (updated every frame) and [`KcpConnection`].
/// [`DisconnectRequest`]s disconnect gracefully once the messages already queued for the
/// client are acknowledged; despawning a client entity disconnects it at once. Every ended
/// connection is also reported with its reason as a [`ClientDisconnected`] message.
#[derive(Debug, Default, Clone, Copy)]
pub struct RepliconKcpServerPlugin;

impl Plugin for RepliconKcpServerPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<KcpServerPlugin>() {
            app.add_plugins(KcpServerPlugin);
        }
        app.init_resource::<ClientEntities>()
            .add_message::<ClientDisconnected>()
            .configure_sets(
                PreUpdate,
                KcpSystems::Receive.before(ServerSystems::ReceivePackets),
            )
            .configure_sets(
                PostUpdate,
                KcpSystems::Send.after(ServerSystems::SendPackets),
            )
            .add_systems(
                PreUpdate,
                (update_state, receive_packets)
                    .chain()
                    .in_set(ServerSystems::ReceivePackets),
            )
            .add_systems(
                PostUpdate,
                (send_packets, update_stats)
                    .chain()
                    .run_if(resource_exists::<KcpServer>)
                    .in_set(ServerSystems::SendPackets),
            )
            .add_observer(disconnect_despawned);
    }

    fn finish(&self, app: &mut App) {
        channels::check_channel_count(app.world().resource::<RepliconChannels>());
    }
}

/// The kcp2k connection of a connected-client entity.
#[derive(Component, Debug)]
pub struct KcpConnection {
    id: ConnectionId,
    stats: StatsWindow,
}

impl KcpConnection {
    /// The connection id, as used by [`KcpServer`] and [`ServerEvent`].
    pub fn id(&self) -> ConnectionId {
        self.id
    }
}

/// A client connection ended: the entity that represented it (already despawned, or being
/// despawned) and why.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientDisconnected {
    /// The connected-client entity.
    pub client: Entity,
    /// The kcp2k connection.
    pub id: ConnectionId,
    /// Why it ended: `Remote` when the client left, `Local` after a [`DisconnectRequest`] or a
    /// despawn, `Timeout`, `Closed` when the server was removed, …
    pub reason: DisconnectReason,
}

/// Which entity stands for which connection.
#[derive(Resource, Default)]
struct ClientEntities {
    live: HashMap<ConnectionId, Entity>,
    /// Entities already despawned whose connection is still closing.
    detached: HashMap<ConnectionId, Entity>,
}

fn update_state(
    server: Option<Res<KcpServer>>,
    state: Res<State<ServerState>>,
    mut next: ResMut<NextState<ServerState>>,
) {
    let wanted = if server.is_some() {
        ServerState::Running
    } else {
        ServerState::Stopped
    };
    if *state.get() != wanted {
        next.set(wanted);
    }
}

fn receive_packets(
    mut commands: Commands,
    mut server: Option<ResMut<KcpServer>>,
    mut events: MessageReader<ServerEvent>,
    mut messages: ResMut<ServerMessages>,
    mut entities: ResMut<ClientEntities>,
    mut disconnected: MessageWriter<ClientDisconnected>,
    channels: Res<RepliconChannels>,
) {
    let client_channels = channels.client_channels().len();
    for event in events.read() {
        match &event.0 {
            OwnedEvent::Connected { id, addr } => {
                let max_size = server
                    .as_ref()
                    .map_or(0, |s| glue::max_unreliable_message(s.config()));
                let client = commands
                    .spawn((
                        ConnectedClient { max_size },
                        NetworkId::new(glue::network_id(*id)),
                        KcpConnection {
                            id: *id,
                            stats: StatsWindow::default(),
                        },
                    ))
                    .id();
                debug!("kcp client {id} from {addr} is `{client}`");
                entities.live.insert(*id, client);
            }
            OwnedEvent::Data { id, data, .. } => {
                let Some(&client) = entities.live.get(id) else {
                    continue; // detached: its entity is gone
                };
                match decode(data, client_channels) {
                    Ok((channel_id, message)) => {
                        messages.insert_received(client, channel_id, message)
                    }
                    Err(e) => {
                        warn!("disconnecting `{client}` ({id}): {e}");
                        entities.live.remove(id);
                        entities.detached.insert(*id, client);
                        if let Some(server) = server.as_mut() {
                            let _ = server.disconnect(*id);
                        }
                        commands.entity(client).despawn();
                    }
                }
            }
            OwnedEvent::Disconnected { id, reason } => {
                let client = if let Some(client) = entities.live.remove(id) {
                    commands.entity(client).despawn();
                    client
                } else if let Some(client) = entities.detached.remove(id) {
                    client
                } else {
                    continue;
                };
                debug!("`{client}` ({id}) disconnected: {reason:?}");
                disconnected.write(ClientDisconnected {
                    client,
                    id: *id,
                    reason: *reason,
                });
            }
            OwnedEvent::Error { id, code, message } => {
                warn!("kcp client {id}: {code}: {message}");
            }
            // The client half-closed: its entity stays (replicon's messages to it are still
            // delivered) until the connection ends with `Disconnected`.
            OwnedEvent::PeerSendClosed { id } => debug!("kcp client {id} shut down its sending"),
            other => debug!("kcp: {other:?}"),
        }
    }
}

#[allow(clippy::too_many_arguments)] // a system: its parameters are what it touches
fn send_packets(
    mut commands: Commands,
    mut server: ResMut<KcpServer>,
    mut messages: ResMut<ServerMessages>,
    mut requests: MessageReader<DisconnectRequest>,
    mut entities: ResMut<ClientEntities>,
    clients: Query<&KcpConnection>,
    channels: Res<RepliconChannels>,
    mut frame: Local<Vec<u8>>,
) {
    let server_channels = channels.server_channels();
    let config = server.config().clone();
    for (client, channel_id, message) in messages.drain_sent() {
        let Ok(connection) = clients.get(client) else {
            continue;
        };
        let id = connection.id;
        if !entities.live.contains_key(&id) {
            continue;
        }
        encode(channel_id, &message, &mut frame);
        let wanted = channels::kcp_channel(server_channels[channel_id]);
        let channel = glue::send_channel(wanted, frame.len(), &config);
        if let Err(e) = server.send(id, &frame, channel) {
            match glue::classify_send_error(&e) {
                SendFailure::Closed => {}
                SendFailure::Fatal => {
                    error!("disconnecting `{client}` ({id}): replicon channel {channel_id}: {e}");
                    entities.live.remove(&id);
                    entities.detached.insert(id, client);
                    let _ = server.disconnect(id);
                    commands.entity(client).despawn();
                }
            }
        }
    }
    // After the sends above, so that they are delivered before the disconnect.
    for request in requests.read() {
        let Ok(connection) = clients.get(request.client) else {
            continue;
        };
        let id = connection.id;
        if entities.live.remove(&id).is_some() {
            debug!("disconnecting `{}` ({id}) by request", request.client);
            entities.detached.insert(id, request.client);
            let _ = server.disconnect_graceful(id);
            commands.entity(request.client).despawn();
        }
    }
}

fn update_stats(
    server: Res<KcpServer>,
    time: Res<Time<Real>>,
    mut clients: Query<(&mut KcpConnection, &mut ConnectedClientStats)>,
) {
    let now = time.elapsed_secs_f64();
    for (mut connection, mut stats) in &mut clients {
        if let Some(kcp) = server.connection_stats(connection.id) {
            **stats = connection.stats.sample(now, kcp);
        }
    }
}

/// A client entity despawned by the application (or replicon) disconnects its connection.
fn disconnect_despawned(
    remove: On<Remove, KcpConnection>,
    connections: Query<&KcpConnection>,
    mut entities: ResMut<ClientEntities>,
    server: Option<ResMut<KcpServer>>,
) {
    let Ok(connection) = connections.get(remove.entity) else {
        return;
    };
    let id = connection.id;
    if entities.live.remove(&id).is_some() {
        entities.detached.insert(id, remove.entity);
        if let Some(mut server) = server {
            let _ = server.disconnect(id);
        }
    }
}
