//! # bevy_kcpnet
//!
//! [Bevy](https://bevy.org) plugins for [kcpnet], reliable UDP speaking the
//! [kcp2k](https://github.com/MirrorNetworking/kcp2k) wire protocol (Mirror / Unity's KCP
//! transport): a Bevy server can host kcp2k clients, and a Bevy client can join a kcp2k
//! server.
//!
//! * [`KcpServerPlugin`] / [`KcpClientPlugin`] tick a [`KcpServer`] / [`KcpClient`]
//!   **resource**: `tick_incoming` in [`KcpSystems::Receive`] (`PreUpdate`), `tick_outgoing`
//!   in [`KcpSystems::Send`] (`PostUpdate`). Order your systems against those sets.
//! * Events arrive as bevy messages: [`ServerEvent`] and [`ClientEvent`], each wrapping
//!   kcpnet's own [`OwnedEvent`](kcpnet::OwnedEvent) with a [`Bytes`] payload, so every event
//!   kcpnet reports reaches the app: connected, data with its channel, the peer's half-close
//!   (`PeerSendClosed`), errors, and disconnected with the reason (a kick's code and message
//!   included).
//! * The resources' methods are kcpnet's `Server` / `Client` methods with the same
//!   signatures: [`KcpServer::bind`] and [`KcpClient::connect`] take any `ToSocketAddrs`;
//!   sending ([`KcpServer::send`], [`KcpServer::broadcast`], [`KcpClient::send`]), closing
//!   with a reason or half-closing ([`KcpServer::disconnect_with`],
//!   [`KcpServer::shutdown_send`], and the same on [`KcpClient`]), statistics and link quality
//!   ([`KcpServer::connection_stats`], [`KcpServer::connection_quality`]).
//! * Run conditions: [`server_running`], [`server_has_clients`], [`client_connected`],
//!   [`client_connecting`], [`client_disconnected`], [`client_just_connected`],
//!   [`client_just_disconnected`].
//! * The kcpnet link conditioner is one resource away: insert [`KcpLinkConditions`] (or
//!   change it at run time) to test under loss, latency and jitter from inside the app.
//!
//! The plugins never open a socket themselves: insert a resource made by [`KcpServer::bind`]
//! / [`KcpClient::connect`] (UDP) or by `with_conditioned_transport` / `with_transport`
//! (kcpnet's in-memory network and virtual clock, for deterministic tests).
//!
//! ## A server and a client in one process
//! ```
//! use std::time::Duration;
//! use bevy::prelude::*;
//! use bevy_kcpnet::prelude::*;
//! use bevy_kcpnet::kcpnet::io::{LinkConditioner, ManualClock, MemoryNetwork};
//! use bevy_kcpnet::kcpnet::{Channel, Config};
//!
//! // Echo every message back on its channel.
//! fn echo(mut events: MessageReader<ServerEvent>, mut server: ResMut<KcpServer>) {
//!     for event in events.read() {
//!         if let OwnedEvent::Data { id, channel, data } = &event.0 {
//!             server.send(*id, data, *channel).unwrap();
//!         }
//!     }
//! }
//!
//! #[derive(Resource, Default)]
//! struct Echoes(Vec<Vec<u8>>);
//!
//! fn hello(mut client: ResMut<KcpClient>, mut sent: Local<bool>) {
//!     if client.is_connected() && !*sent {
//!         client.send(b"hello", Channel::Reliable).unwrap();
//!         *sent = true;
//!     }
//! }
//!
//! fn collect(mut events: MessageReader<ClientEvent>, mut echoes: ResMut<Echoes>) {
//!     for event in events.read() {
//!         if let OwnedEvent::Data { data, .. } = &event.0 {
//!             echoes.0.push(data.to_vec());
//!         }
//!     }
//! }
//!
//! // kcpnet's in-memory network and a virtual clock: deterministic, no sockets.
//! let net = MemoryNetwork::new();
//! let clock = ManualClock::new();
//! let server_addr = "10.0.0.1:7777".parse().unwrap();
//!
//! let mut server_app = App::new();
//! server_app
//!     .add_plugins((MinimalPlugins, KcpServerPlugin))
//!     .insert_resource(KcpServer::with_conditioned_transport(
//!         LinkConditioner::new(net.bind(server_addr).unwrap(), 1),
//!         Box::new(clock.clone()),
//!         Config::default(),
//!     ).unwrap())
//!     .add_systems(Update, echo.run_if(server_running));
//!
//! let mut client_app = App::new();
//! client_app
//!     .add_plugins((MinimalPlugins, KcpClientPlugin))
//!     .init_resource::<Echoes>()
//!     .insert_resource(KcpClient::with_conditioned_transport(
//!         LinkConditioner::new(net.bind("10.0.0.2:5000".parse().unwrap()).unwrap(), 2),
//!         Box::new(clock.clone()),
//!         server_addr,
//!         Config::default(),
//!     ).unwrap())
//!     .add_systems(Update, (hello.run_if(client_connected), collect));
//!
//! for _frame in 0..100 {
//!     client_app.update();
//!     server_app.update();
//!     clock.advance(Duration::from_millis(10));
//! }
//! assert_eq!(client_app.world().resource::<Echoes>().0, vec![b"hello".to_vec()]);
//! ```
//!
//! ## Versions
//! | bevy_kcpnet | bevy | kcpnet |
//! |---|---|---|
//! | 0.1 | 0.19 | 0.1 |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use bevy::prelude::*;
use kcpnet::io::Conditions;

pub mod client;
pub mod diagnostics;
mod glue;
pub mod server;

pub use bytes::Bytes;
pub use client::{
    client_connected, client_connecting, client_disconnected, client_just_connected,
    client_just_disconnected, ClientEvent, KcpClient, KcpClientPlugin,
};
pub use diagnostics::KcpDiagnosticsPlugin;
/// The kcpnet core, re-exported so that its types (`Config`, `Channel`, `ConnectionId`,
/// `io::Conditions`, …) need no separate dependency.
pub use kcpnet;
pub use server::{server_has_clients, server_running, KcpServer, KcpServerPlugin, ServerEvent};

/// Everything a bevy app usually needs from this crate, and kcpnet's [`OwnedEvent`]
/// (what [`ServerEvent`] and [`ClientEvent`] carry).
///
/// [`OwnedEvent`]: kcpnet::OwnedEvent
pub mod prelude {
    pub use kcpnet::OwnedEvent;

    pub use crate::client::{
        client_connected, client_connecting, client_disconnected, client_just_connected,
        client_just_disconnected, ClientEvent, KcpClient, KcpClientPlugin,
    };
    pub use crate::diagnostics::KcpDiagnosticsPlugin;
    pub use crate::server::{
        server_has_clients, server_running, KcpServer, KcpServerPlugin, ServerEvent,
    };
    pub use crate::{KcpLinkConditions, KcpSystems};
}

/// The system sets the plugins tick the endpoints in.
///
/// [`KcpSystems::Receive`] runs in `PreUpdate`: after it, this frame's [`ServerEvent`] /
/// [`ClientEvent`] messages are readable. [`KcpSystems::Send`] runs in `PostUpdate`: reliable
/// messages sent before it leave in the same frame. Systems that read events in `PreUpdate`
/// go `.after(KcpSystems::Receive)`; systems that send in `PostUpdate` go
/// `.before(KcpSystems::Send)` (systems in `Update` need nothing).
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KcpSystems {
    /// `tick_incoming`: datagrams read, timers run, events written as messages.
    Receive,
    /// `tick_outgoing`: reliable data, ACKs, retransmissions and pings flushed.
    Send,
}

/// A process-wide number for each endpoint resource made (never 0).
pub(crate) fn next_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn configure_sets(app: &mut App) {
    app.configure_sets(PreUpdate, KcpSystems::Receive)
        .configure_sets(PostUpdate, KcpSystems::Send);
}

/// Link conditions for the app's kcpnet endpoints, applied by the plugins to every
/// [`KcpServer`] / [`KcpClient`] resource when it is inserted and whenever this resource
/// changes: test under loss, latency and jitter from inside the app.
///
/// Works on endpoints made by `bind` / `connect` (their UDP socket is wrapped in kcpnet's
/// link conditioner) and by `with_conditioned_transport` (over a
/// [`kcpnet::io::LinkConditioner`]). Removing the resource leaves the last conditions in
/// place; insert `KcpLinkConditions::default()` for a perfect link again.
///
/// ```
/// use std::time::Duration;
/// use bevy_kcpnet::KcpLinkConditions;
/// use bevy_kcpnet::kcpnet::io::Conditions;
///
/// // 10 % loss and 40 ms ± 10 ms each way.
/// let bad = Conditions::lossy(0.10)
///     .with_latency(Duration::from_millis(40))
///     .with_jitter(Duration::from_millis(10));
/// let conditions = KcpLinkConditions::symmetric(bad);
/// assert_eq!(conditions.send, conditions.receive);
/// ```
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct KcpLinkConditions {
    /// Applied to the datagrams the endpoint sends.
    pub send: Conditions,
    /// Applied to the datagrams the endpoint receives.
    pub receive: Conditions,
}

impl KcpLinkConditions {
    /// The same conditions in both directions.
    pub fn symmetric(conditions: Conditions) -> KcpLinkConditions {
        KcpLinkConditions {
            send: conditions.clone(),
            receive: conditions,
        }
    }

    /// Conditions on sent datagrams only.
    pub fn send_only(conditions: Conditions) -> KcpLinkConditions {
        KcpLinkConditions {
            send: conditions,
            receive: Conditions::default(),
        }
    }
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
