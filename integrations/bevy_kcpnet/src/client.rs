//! The client side: the [`KcpClient`] resource, [`ClientEvent`] messages and
//! [`KcpClientPlugin`].

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

/// One kcp2k connection attempt as a bevy resource.
///
/// Insert it to connect; the handshake starts at the next [`KcpSystems::Send`]. Every attempt
/// ends with exactly one `Disconnected` [`ClientEvent`]; the resource then stays, in state
/// [`ConnectionState::Disconnected`], so its final statistics can still be read. To reconnect,
/// insert a new one. Removing (or dropping) a live client disconnects it at once (kcp2k
/// Disconnect datagrams) and [`KcpClientPlugin`] reports `Disconnected` with
/// [`DisconnectReason::Local`]. The methods are [`kcpnet::Client`]'s, with the same
/// signatures.
///
/// ```no_run
/// use bevy::prelude::*;
/// use bevy_kcpnet::prelude::*;
/// use bevy_kcpnet::kcpnet::{Channel, Config};
///
/// fn hello(mut client: ResMut<KcpClient>) {
///     client.send(b"hello", Channel::Reliable).unwrap();
/// }
///
/// // Says goodbye with a reason once the server has said all it will say.
/// fn leave(mut events: MessageReader<ClientEvent>, mut client: ResMut<KcpClient>) {
///     for event in events.read() {
///         match &event.0 {
///             OwnedEvent::PeerSendClosed { .. } => {
///                 let _ = client.disconnect_with(0, "bye");
///             }
///             OwnedEvent::Disconnected { reason, .. } => info!("ended: {reason}"),
///             _ => {}
///         }
///     }
/// }
///
/// App::new()
///     .add_plugins((MinimalPlugins, KcpClientPlugin))
///     .insert_resource(KcpClient::connect("127.0.0.1:7777", Config::default()).unwrap())
///     .add_systems(Update, (hello.run_if(client_just_connected), leave))
///     .run();
/// ```
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
    /// Resolves `addr` and starts connecting to it over a new UDP socket, as
    /// [`kcpnet::Client::connect`]: anything [`ToSocketAddrs`] takes (`"127.0.0.1:7777"`,
    /// `("game.example.com", 7777)`, a [`SocketAddr`], …). The socket is wrapped in a link
    /// conditioner with perfect conditions, so [`KcpLinkConditions`] works on it.
    ///
    /// ```no_run
    /// use bevy_kcpnet::KcpClient;
    /// use bevy_kcpnet::kcpnet::Config;
    ///
    /// let client = KcpClient::connect("127.0.0.1:7777", Config::default())?;
    /// let by_name = KcpClient::connect(("localhost", 7777), Config::default())?;
    /// # Ok::<(), bevy_kcpnet::kcpnet::Error>(())
    /// ```
    pub fn connect(addr: impl ToSocketAddrs, config: Config) -> Result<KcpClient, kcpnet::Error> {
        glue::connect_client(addr, config).map(KcpClient::from_client)
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

    /// Closes the connection at once; a `Disconnected` [`ClientEvent`] with
    /// [`DisconnectReason::Local`] follows.
    pub fn disconnect(&mut self) {
        self.client.disconnect();
    }

    /// Closes the connection once queued reliable messages are acknowledged.
    pub fn disconnect_graceful(&mut self) {
        self.client.disconnect_graceful();
    }

    /// Closes the connection at once telling a kcpnet server why: it sees
    /// `DisconnectReason::App { code, message }` ([`kcpnet::Client::disconnect_with`]; a
    /// kcp2k server sees a plain disconnect).
    pub fn disconnect_with(&mut self, code: u32, message: &str) -> Result<(), kcpnet::Error> {
        self.client.disconnect_with(code, message)
    }

    /// [`KcpClient::disconnect_graceful`] with a reason, as [`KcpClient::disconnect_with`].
    pub fn disconnect_graceful_with(
        &mut self,
        code: u32,
        message: &str,
    ) -> Result<(), kcpnet::Error> {
        self.client.disconnect_graceful_with(code, message)
    }

    /// Half-closes the connection ([`kcpnet::Client::shutdown_send`]): further sends fail,
    /// everything queued is still delivered, the server's messages keep arriving until it
    /// shuts down its sending too; then `Disconnected { reason: Finished }`.
    pub fn shutdown_send(&mut self) -> Result<(), kcpnet::Error> {
        self.client.shutdown_send()
    }

    /// The connection's id (also the `id` of this client's [`ClientEvent`]s).
    pub fn id(&self) -> ConnectionId {
        self.client.id()
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.client.state()
    }

    /// True from the completed handshake until the connection closes or either side
    /// half-closes it ([`kcpnet::Client::is_connected`]; see [`KcpClient::state`]).
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

    /// Why the attempt ended, once its `Disconnected` [`ClientEvent`] has been reported.
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

    /// How good the link is: KCP and ping RTTs, windowed loss and rates, pending reliable
    /// data ([`kcpnet::Client::connection_quality`]).
    pub fn connection_quality(&self) -> ConnectionQuality {
        self.client.connection_quality()
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

/// Something that happened on the client's connection, as a bevy [`Message`]: kcpnet's own
/// [`OwnedEvent`], with the message bytes in a [`Bytes`] (its `id` is [`KcpClient::id`]).
/// Every kcpnet event arrives: `Connected`, `Data`, `PeerSendClosed` (the server
/// half-closed), `Error`, and exactly one `Disconnected` per [`KcpClient`] with its
/// [`DisconnectReason`].
///
/// Read it with `MessageReader<ClientEvent>` in a system ordered after
/// [`KcpSystems::Receive`]; match on `event.0` (or call [`OwnedEvent`]'s methods through
/// `Deref`).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
pub struct ClientEvent(pub OwnedEvent<Bytes>);

impl Deref for ClientEvent {
    type Target = OwnedEvent<Bytes>;
    fn deref(&self) -> &OwnedEvent<Bytes> {
        &self.0
    }
}

impl From<OwnedEvent<Bytes>> for ClientEvent {
    fn from(event: OwnedEvent<Bytes>) -> Self {
        ClientEvent(event)
    }
}

impl From<ClientEvent> for OwnedEvent<Bytes> {
    fn from(event: ClientEvent) -> Self {
        event.0
    }
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

/// `live`: the attempt whose `Disconnected` has not been reported yet, if any (its
/// resource serial and connection id).
fn client_receive(
    client: Option<ResMut<KcpClient>>,
    mut live: Local<Option<(u64, ConnectionId)>>,
    mut events: MessageWriter<ClientEvent>,
) {
    let serial = client.as_ref().map(|c| c.serial);
    if let Some((live_serial, id)) = *live {
        if Some(live_serial) != serial {
            // The resource was removed or replaced before its attempt ended.
            events.write(ClientEvent(OwnedEvent::Disconnected {
                id,
                reason: DisconnectReason::Local,
            }));
            *live = None;
        }
    }
    let Some(mut client) = client else {
        return;
    };
    if client.disconnect_reason.is_none() {
        *live = Some((client.serial, client.client.id()));
    }
    // A closed client is still ticked: its link conditioner may hold delayed datagrams
    // (the Disconnect notices among them).
    let client = &mut *client;
    let reason = &mut client.disconnect_reason;
    glue::client_tick_incoming(&mut client.client, |event| {
        if let OwnedEvent::Disconnected { reason: r, .. } = &event.0 {
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
