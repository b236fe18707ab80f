//! The client side: the [`KcpClient`] resource, [`ClientEvent`] messages and
//! [`KcpClientPlugin`].

use std::net::SocketAddr;

use bevy::prelude::*;
use bytes::Bytes;
use kcpnet::io::{
    Clock, ConditionerHandle, ConditionerStats, Conditions, Direction, LinkConditioner, Transport,
};
use kcpnet::{
    Channel, Config, ConnectionState, ConnectionStats, DisconnectReason, EndpointStats, ErrorCode,
};

use crate::{glue, KcpLinkConditions, KcpSystems};

/// One kcp2k connection attempt as a bevy resource.
///
/// Insert it to connect; the handshake starts at the next [`KcpSystems::Send`]. Every attempt
/// ends with exactly one [`ClientEvent::Disconnected`]; the resource then stays, in state
/// [`ConnectionState::Disconnected`], so its final statistics can still be read. To reconnect,
/// insert a new one. Removing (or dropping) a live client disconnects it at once (kcp2k
/// Disconnect datagrams) and [`KcpClientPlugin`] reports `Disconnected` with
/// [`DisconnectReason::Local`].
#[derive(Resource)]
pub struct KcpClient {
    client: kcpnet::Client,
    disconnect_reason: Option<DisconnectReason>,
    /// Tells attempts apart (a replaced resource is not "added" again in bevy).
    serial: u64,
}

impl std::fmt::Debug for KcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.client.fmt(f)
    }
}

impl KcpClient {
    /// Resolves `host` and starts connecting to `host:port` over a new UDP socket (wrapped in
    /// a link conditioner with perfect conditions, so [`KcpLinkConditions`] works on it).
    pub fn connect(host: &str, port: u16, config: Config) -> Result<KcpClient, kcpnet::Error> {
        glue::connect_client(host, port, config).map(KcpClient::from_client)
    }

    /// A client over any transport and clock, connecting to `remote`. [`KcpLinkConditions`]
    /// does not reach a conditioner inside `transport`: use
    /// [`with_conditioned_transport`](KcpClient::with_conditioned_transport) for that.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        remote: SocketAddr,
        config: Config,
    ) -> Result<KcpClient, kcpnet::Error> {
        glue::client_over(transport, clock, remote, config).map(KcpClient::from_client)
    }

    /// A client over a link conditioner around any transport, and any clock, connecting to
    /// `remote`. [`KcpLinkConditions`], [`set_conditions`](KcpClient::set_conditions) and
    /// [`conditioner`](KcpClient::conditioner) reach the conditioner.
    pub fn with_conditioned_transport<T: Transport + 'static>(
        conditioner: LinkConditioner<T>,
        clock: Box<dyn Clock>,
        remote: SocketAddr,
        config: Config,
    ) -> Result<KcpClient, kcpnet::Error> {
        glue::client_over_conditioner(conditioner, clock, remote, config)
            .map(KcpClient::from_client)
    }

    /// Wraps a client made with kcpnet directly.
    pub fn from_client(client: kcpnet::Client) -> KcpClient {
        KcpClient {
            client,
            disconnect_reason: None,
            serial: crate::next_serial(),
        }
    }

    /// The kcpnet client, for anything this wrapper does not forward.
    pub fn inner(&self) -> &kcpnet::Client {
        &self.client
    }

    /// The kcpnet client, mutably. Ticking it here as well as in [`KcpSystems`] is allowed but
    /// its events then bypass [`ClientEvent`].
    pub fn inner_mut(&mut self) -> &mut kcpnet::Client {
        &mut self.client
    }

    /// Sends `data` to the server on `channel` (unreliable at once, reliable at the next
    /// [`KcpSystems::Send`]). Fails with [`kcpnet::Error::NotConnected`] before the handshake
    /// completed.
    pub fn send(&mut self, data: &[u8], channel: Channel) -> Result<(), kcpnet::Error> {
        self.client.send(data, channel)
    }

    /// Closes the connection at once; a [`ClientEvent::Disconnected`] with
    /// [`DisconnectReason::Local`] follows.
    pub fn disconnect(&mut self) {
        self.client.disconnect();
    }

    /// Closes the connection once queued reliable messages are acknowledged.
    pub fn disconnect_graceful(&mut self) {
        self.client.disconnect_graceful();
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.client.state()
    }

    /// True from the completed handshake until the connection closes.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// True while the handshake is in progress.
    pub fn is_connecting(&self) -> bool {
        self.client.state() == ConnectionState::Connecting
    }

    /// True once the attempt has ended (see [`KcpClient::disconnect_reason`]).
    pub fn is_disconnected(&self) -> bool {
        glue::client_closed(&self.client)
    }

    /// Why the attempt ended, once [`ClientEvent::Disconnected`] has been reported.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        self.disconnect_reason
    }

    /// Round-trip time from kcp2k pings, in ms (`None` until measured).
    pub fn rtt(&self) -> Option<u32> {
        self.client.rtt()
    }

    /// The connection's statistics.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.client.connection_stats()
    }

    /// Endpoint counters (datagrams, bytes, drops).
    pub fn stats(&self) -> EndpointStats {
        self.client.stats()
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.client.remote_addr()
    }

    /// The local socket address.
    pub fn local_addr(&self) -> Result<SocketAddr, kcpnet::Error> {
        self.client.local_addr()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        self.client.config()
    }

    /// Sets the link conditions in one direction (or both). [`KcpLinkConditions`] does the
    /// same from a resource.
    pub fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), kcpnet::Error> {
        self.client.set_conditions(direction, conditions)
    }

    /// The link conditioner's handle, for reseeding and per-peer conditions; `None` for a
    /// client made by [`with_transport`](KcpClient::with_transport).
    pub fn conditioner(&self) -> Option<&ConditionerHandle> {
        self.client.conditioner()
    }

    /// What the link conditioner did so far (dropped, delayed, duplicated datagrams).
    pub fn conditioner_stats(&self) -> Option<ConditionerStats> {
        glue::client_conditioner_stats(&self.client)
    }
}

impl Drop for KcpClient {
    fn drop(&mut self) {
        if !glue::client_closed(&self.client) {
            // The server learns at once instead of at its timeout.
            self.client.disconnect();
        }
    }
}

/// Something that happened on the client's connection, as a bevy [`Message`]: read it with
/// `MessageReader<ClientEvent>` in a system ordered after [`KcpSystems::Receive`].
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The handshake completed.
    Connected {
        /// The server's address.
        addr: SocketAddr,
    },
    /// A message arrived.
    Data {
        /// Reliable (ordered, exactly once) or unreliable.
        channel: Channel,
        /// The message.
        data: Bytes,
    },
    /// The attempt ended (connected or not); exactly one per [`KcpClient`].
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// A problem on the connection, usually followed by `Disconnected`.
    Error {
        /// kcp2k's error code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
}

/// Ticks a [`KcpClient`] resource when there is one: `tick_incoming` in
/// [`KcpSystems::Receive`] (`PreUpdate`), `tick_outgoing` in [`KcpSystems::Send`]
/// (`PostUpdate`); events become [`ClientEvent`] messages, and [`KcpLinkConditions`] is applied
/// whenever it changes or a client is inserted.
#[derive(Debug, Default, Clone, Copy)]
pub struct KcpClientPlugin;

impl Plugin for KcpClientPlugin {
    fn build(&self, app: &mut App) {
        crate::configure_sets(app);
        app.add_message::<ClientEvent>()
            .add_systems(
                PreUpdate,
                (apply_client_conditions, client_receive)
                    .chain()
                    .in_set(KcpSystems::Receive),
            )
            .add_systems(
                PostUpdate,
                client_send
                    .run_if(resource_exists::<KcpClient>)
                    .in_set(KcpSystems::Send),
            );
    }
}

fn apply_client_conditions(
    client: Option<ResMut<KcpClient>>,
    conditions: Option<Res<KcpLinkConditions>>,
    mut applied_to: Local<u64>,
) {
    let (Some(mut client), Some(conditions)) = (client, conditions) else {
        return;
    };
    if *applied_to == client.serial && !conditions.is_changed() {
        return;
    }
    *applied_to = client.serial;
    let KcpLinkConditions { send, receive } = conditions.clone();
    if let Err(e) = glue::set_client_conditions(&mut client.client, send, receive) {
        warn!("kcp client: link conditions not applied: {e}");
    }
}

/// `live`: the attempt whose `Disconnected` has not been reported yet, if any.
fn client_receive(
    client: Option<ResMut<KcpClient>>,
    mut live: Local<Option<u64>>,
    mut events: MessageWriter<ClientEvent>,
) {
    let serial = client.as_ref().map(|c| c.serial);
    if live.is_some() && *live != serial {
        // The resource was removed or replaced before its attempt ended.
        events.write(ClientEvent::Disconnected {
            reason: DisconnectReason::Local,
        });
        *live = None;
    }
    let Some(mut client) = client else {
        return;
    };
    if client.disconnect_reason.is_none() {
        *live = Some(client.serial);
    }
    // A closed client is still ticked: its link conditioner may hold delayed datagrams
    // (the Disconnect notices among them).
    let client = &mut *client;
    let reason = &mut client.disconnect_reason;
    glue::client_tick_incoming(&mut client.client, |event| {
        if let ClientEvent::Disconnected { reason: r } = &event {
            if reason.is_some() {
                return; // already reported
            }
            *reason = Some(*r);
        }
        events.write(event);
    });
    if client.disconnect_reason.is_some() {
        *live = None;
    }
}

fn client_send(mut client: ResMut<KcpClient>) {
    glue::client_tick_outgoing(&mut client.client);
}

/// Run condition: a [`KcpClient`] exists and is connected.
pub fn client_connected(client: Option<Res<KcpClient>>) -> bool {
    client.is_some_and(|c| c.is_connected())
}

/// Run condition: a [`KcpClient`] exists and its handshake is in progress.
pub fn client_connecting(client: Option<Res<KcpClient>>) -> bool {
    client.is_some_and(|c| c.is_connecting())
}

/// Run condition: there is no [`KcpClient`], or its attempt has ended.
pub fn client_disconnected(client: Option<Res<KcpClient>>) -> bool {
    client.is_none_or(|c| c.is_disconnected())
}

/// Run condition: true in the first frame a [`KcpClient`] is seen connected.
pub fn client_just_connected(client: Option<Res<KcpClient>>, mut was: Local<bool>) -> bool {
    let now = client.is_some_and(|c| c.is_connected());
    let just = now && !*was;
    *was = now;
    just
}

/// Run condition: true in the first frame a connected [`KcpClient`] is seen no longer
/// connected (its connection closed or the resource was removed).
pub fn client_just_disconnected(client: Option<Res<KcpClient>>, mut was: Local<bool>) -> bool {
    let now = client.is_some_and(|c| c.is_connected());
    let just = !now && *was;
    *was = now;
    just
}
