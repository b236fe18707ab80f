//! The client backend: [`RepliconKcpClientPlugin`].

use bevy::prelude::*;
use bevy_kcpnet::prelude::*;
use bevy_replicon::prelude::*;

use crate::channels::{self, decode, encode};
use crate::glue::{self, SendFailure, StatsWindow};

/// The client half of the backend. Adds [`KcpClientPlugin`] if the app does not have it yet.
///
/// [`ClientState`] follows the [`KcpClient`] resource: `Connecting` during the handshake,
/// `Connected` once it completed — including while either side has half-closed the
/// connection (`shutdown_send`) or a graceful disconnect flushes — and `Disconnected` once the
/// attempt ended (its `Disconnected` event) or there is no resource. Insert a new `KcpClient` to reconnect; remove it to disconnect. [`ClientStats`]
/// is updated every frame while connected.
#[derive(Debug, Default, Clone, Copy)]
pub struct RepliconKcpClientPlugin;

impl Plugin for RepliconKcpClientPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<KcpClientPlugin>() {
            app.add_plugins(KcpClientPlugin);
        }
        app.configure_sets(
            PreUpdate,
            KcpSystems::Receive.before(ClientSystems::ReceivePackets),
        )
        .configure_sets(
            PostUpdate,
            KcpSystems::Send.after(ClientSystems::SendPackets),
        )
        .add_systems(
            PreUpdate,
            (receive_packets, update_state)
                .chain()
                .in_set(ClientSystems::ReceivePackets),
        )
        .add_systems(
            PostUpdate,
            send_packets
                .run_if(resource_exists::<KcpClient>)
                .in_set(ClientSystems::SendPackets),
        );
    }

    fn finish(&self, app: &mut App) {
        channels::check_channel_count(app.world().resource::<RepliconChannels>());
    }
}

fn receive_packets(
    mut events: MessageReader<ClientEvent>,
    mut messages: ResMut<ClientMessages>,
    channels: Res<RepliconChannels>,
) {
    let server_channels = channels.server_channels().len();
    for event in events.read() {
        match &event.0 {
            OwnedEvent::Data { data, .. } => match decode(data, server_channels) {
                Ok((channel_id, message)) => messages.insert_received(channel_id, message),
                Err(e) => warn!("dropping a message from the server: {e}"),
            },
            OwnedEvent::Connected { addr, .. } => debug!("connected to {addr}"),
            OwnedEvent::PeerSendClosed { .. } => debug!("the server shut down its sending"),
            OwnedEvent::Disconnected { reason, .. } => debug!("disconnected: {reason:?}"),
            OwnedEvent::Error { code, message, .. } => warn!("kcp: {code}: {message}"),
            other => debug!("kcp: {other:?}"),
        }
    }
}

fn update_state(
    client: Option<Res<KcpClient>>,
    state: Res<State<ClientState>>,
    mut next: ResMut<NextState<ClientState>>,
    mut stats: ResMut<ClientStats>,
    mut window: Local<StatsWindow>,
    time: Res<Time<Real>>,
) {
    let wanted = client
        .as_ref()
        .map_or(ClientState::Disconnected, |c| glue::client_state(c.state()));
    if *state.get() != wanted {
        next.set(wanted);
        *window = StatsWindow::default();
    }
    if let Some(client) = client.filter(|c| glue::client_state(c.state()) == ClientState::Connected)
    {
        *stats = window.sample(time.elapsed_secs_f64(), client.connection_stats());
    }
}

fn send_packets(
    mut client: ResMut<KcpClient>,
    mut messages: ResMut<ClientMessages>,
    channels: Res<RepliconChannels>,
    mut frame: Local<Vec<u8>>,
) {
    let client_channels = channels.client_channels();
    if glue::client_state(client.state()) != ClientState::Connected {
        messages.drain_sent().for_each(drop);
        return;
    }
    let config = client.config().clone();
    for (channel_id, message) in messages.drain_sent() {
        encode(channel_id, &message, &mut frame);
        let wanted = channels::kcp_channel(client_channels[channel_id]);
        let channel = glue::send_channel(wanted, frame.len(), &config);
        if let Err(e) = client.send(&frame, channel) {
            match glue::classify_send_error(&e) {
                SendFailure::Closed => {}
                SendFailure::Fatal => {
                    error!("disconnecting: replicon channel {channel_id}: {e}");
                    client.disconnect();
                    return;
                }
            }
        }
    }
}
