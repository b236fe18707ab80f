//! # bevy_replicon_kcpnet
//!
//! A [bevy_replicon](https://docs.rs/bevy_replicon) messaging backend over
//! [kcpnet](https://docs.rs/kcpnet): server-authoritative replication for Bevy over reliable
//! UDP speaking the kcp2k wire protocol. It builds on [`bevy_kcpnet`]: the endpoints are its
//! [`KcpServer`](bevy_kcpnet::KcpServer) / [`KcpClient`](bevy_kcpnet::KcpClient) resources,
//! ticked in its [`KcpSystems`](bevy_kcpnet::KcpSystems) sets, which this backend orders
//! around replicon's `ReceivePackets` / `SendPackets` sets.
//!
//! What the backend does, following [`bevy_replicon::shared::backend`]'s contract:
//!
//! * **Channels**: every channel in `RepliconChannels` is mapped onto kcp2k's reliable or
//!   unreliable channel, with a one-byte channel-id prefix; see [`channels`] for the framing.
//! * **States**: `ServerState::Running` while a `KcpServer` resource exists;
//!   `ClientState::{Connecting, Connected, Disconnected}` from the `KcpClient`'s connection.
//! * **Messages**: received kcp2k messages go into `ServerMessages` / `ClientMessages` in
//!   `ReceivePackets`; replicon's outgoing messages are sent in `SendPackets`.
//! * **Client entities**: one entity with `ConnectedClient`, `NetworkId` and
//!   `KcpConnection` per kcp2k connection, spawned on connect and
//!   despawned on disconnect; despawning one disconnects it.
//! * **Disconnect requests**: `DisconnectRequest` disconnects gracefully after the messages
//!   already sent to that client.
//! * **Statistics**: `ConnectedClientStats` on each client entity and the client's
//!   `ClientStats` (RTT, retransmission ratio as packet loss, bytes per second).
//!
//! Features `server` and `client` (both on by default) select the halves, as bevy_replicon
//! recommends, so a dedicated server can build without the client half and vice versa.
//!
//! ## Quick start
//! ```
//! use std::time::{Duration, Instant};
//! use bevy::{prelude::*, state::app::StatesPlugin};
//! use bevy_replicon::prelude::*;
//! use bevy_replicon_kcpnet::prelude::*;
//! use bevy_replicon_kcpnet::kcpnet::Config;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Component, Serialize, Deserialize, Debug, PartialEq)]
//! struct Health(u32);
//!
//! fn app() -> App {
//!     let mut app = App::new();
//!     app.add_plugins((MinimalPlugins, StatesPlugin, RepliconPlugins, RepliconKcpPlugins))
//!         .replicate::<Health>();
//!     app.finish(); // `App::run` would do this; a hand-stepped app does it itself
//!     app.cleanup();
//!     app
//! }
//!
//! let mut server = app();
//! let kcp_server = KcpServer::bind("127.0.0.1:0", Config::default()).unwrap();
//! let server_addr = kcp_server.local_addr().unwrap();
//! server.insert_resource(kcp_server);
//! server.world_mut().spawn((Replicated, Health(100)));
//!
//! let mut client = app();
//! client.insert_resource(KcpClient::connect(server_addr, Config::default()).unwrap());
//!
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let replicated = loop {
//!     server.update();
//!     client.update();
//!     let mut query = client.world_mut().query_filtered::<&Health, With<Remote>>();
//!     if let Ok(health) = query.single(client.world()) {
//!         break health.0;
//!     }
//!     assert!(Instant::now() < deadline, "not replicated");
//!     std::thread::sleep(Duration::from_millis(5));
//! };
//! assert_eq!(replicated, 100);
//! ```
//!
//! ## Versions
//! | bevy_replicon_kcpnet | bevy_replicon | bevy | kcpnet |
//! |---|---|---|---|
//! | 0.1 | 0.44 | 0.19 | 0.1 |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use bevy::app::PluginGroupBuilder;
use bevy::prelude::*;

pub mod channels;
#[cfg(feature = "client")]
pub mod client;
mod glue;
#[cfg(feature = "server")]
pub mod server;

pub use bevy_kcpnet;
/// The kcpnet core (`Config`, `Channel`, `io::Conditions`, …).
pub use bevy_kcpnet::kcpnet;
#[cfg(feature = "client")]
pub use client::RepliconKcpClientPlugin;
#[cfg(feature = "server")]
pub use server::{ClientDisconnected, KcpConnection, RepliconKcpServerPlugin};

/// The backend's plugins and bevy_kcpnet's resources, messages and run conditions.
pub mod prelude {
    pub use bevy_kcpnet::prelude::*;

    #[cfg(feature = "client")]
    pub use crate::client::RepliconKcpClientPlugin;
    #[cfg(feature = "server")]
    pub use crate::server::{ClientDisconnected, KcpConnection, RepliconKcpServerPlugin};
    pub use crate::RepliconKcpPlugins;
}

/// The server and client backend plugins (each with its feature). Add it next to
/// `RepliconPlugins`; an app becomes a server or a client by the resource it is given
/// ([`KcpServer`](bevy_kcpnet::KcpServer) or [`KcpClient`](bevy_kcpnet::KcpClient)).
#[derive(Debug, Default, Clone, Copy)]
pub struct RepliconKcpPlugins;

impl PluginGroup for RepliconKcpPlugins {
    fn build(self) -> PluginGroupBuilder {
        let group = PluginGroupBuilder::start::<Self>();
        #[cfg(feature = "server")]
        let group = group.add(RepliconKcpServerPlugin);
        #[cfg(feature = "client")]
        let group = group.add(RepliconKcpClientPlugin);
        group
    }
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
