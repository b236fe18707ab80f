//! The glue between bevy_kcpnet and the kcpnet core, kept in one place.
//!
//! Every call into kcpnet that is likely to move when the core API changes (constructors,
//! ticking and event draining, matching kcpnet's enums, link-conditioner access) lives here,
//! so adapting to a new kcpnet is a change to this file only. The resources in
//! [`crate::server`] and [`crate::client`] otherwise call only kcpnet's plain queries and
//! `send` / `disconnect`.

use std::net::{SocketAddr, ToSocketAddrs};

use kcpnet::io::{Clock, ConditionerStats, Conditions, Direction, LinkConditioner, Transport};
use kcpnet::{Client, Config, ConnectionState, OwnedEvent, Server};

use crate::client::ClientEvent;
use crate::server::ServerEvent;

/// `Server::bind` over UDP (its socket is wrapped in a link conditioner).
pub(crate) fn bind_server(
    addr: impl ToSocketAddrs,
    config: Config,
) -> Result<Server, kcpnet::Error> {
    Server::bind(addr, config)
}

/// `Server::with_transport` (memory network, virtual clock, custom socket).
pub(crate) fn server_over(
    transport: Box<dyn Transport>,
    clock: Box<dyn Clock>,
    config: Config,
) -> Result<Server, kcpnet::Error> {
    Server::with_transport(transport, clock, config)
}

/// `Server::with_conditioned_transport` (the server keeps the conditioner's handle).
pub(crate) fn server_over_conditioner<T: Transport + 'static>(
    conditioner: LinkConditioner<T>,
    clock: Box<dyn Clock>,
    config: Config,
) -> Result<Server, kcpnet::Error> {
    Server::with_conditioned_transport(conditioner, clock, config)
}

/// `Client::connect` over UDP (its socket is wrapped in a link conditioner).
pub(crate) fn connect_client(
    addr: impl ToSocketAddrs,
    config: Config,
) -> Result<Client, kcpnet::Error> {
    Client::connect(addr, config)
}

/// `Client::with_transport`.
pub(crate) fn client_over(
    transport: Box<dyn Transport>,
    clock: Box<dyn Clock>,
    remote: SocketAddr,
    config: Config,
) -> Result<Client, kcpnet::Error> {
    Client::with_transport(transport, clock, remote, config)
}

/// `Client::with_conditioned_transport` (the client keeps the conditioner's handle).
pub(crate) fn client_over_conditioner<T: Transport + 'static>(
    conditioner: LinkConditioner<T>,
    clock: Box<dyn Clock>,
    remote: SocketAddr,
    config: Config,
) -> Result<Client, kcpnet::Error> {
    Client::with_conditioned_transport(conditioner, clock, remote, config)
}

/// Runs `tick_incoming` and hands every event, as an owned bevy message, to `emit`. Every
/// kcpnet event is forwarded: the conversion is kcpnet's own `OwnedEvent::from`.
pub(crate) fn server_tick_incoming(server: &mut Server, mut emit: impl FnMut(ServerEvent)) {
    server.tick_incoming();
    while let Some(event) = server.poll_event() {
        emit(ServerEvent(OwnedEvent::from(event)));
    }
}

/// Runs `tick_outgoing`.
pub(crate) fn server_tick_outgoing(server: &mut Server) {
    server.tick_outgoing();
}

/// Runs `tick_incoming` and hands every event, as an owned bevy message, to `emit`.
pub(crate) fn client_tick_incoming(client: &mut Client, mut emit: impl FnMut(ClientEvent)) {
    client.tick_incoming();
    while let Some(event) = client.poll_event() {
        emit(ClientEvent(OwnedEvent::from(event)));
    }
}

/// Runs `tick_outgoing`.
pub(crate) fn client_tick_outgoing(client: &mut Client) {
    client.tick_outgoing();
}

/// Whether a client's connection attempt has ended (nothing more will happen on it).
pub(crate) fn client_closed(client: &Client) -> bool {
    matches!(client.state(), ConnectionState::Disconnected)
}

/// Sets both directions of a server's link conditioner.
pub(crate) fn set_server_conditions(
    server: &mut Server,
    send: Conditions,
    receive: Conditions,
) -> Result<(), kcpnet::Error> {
    server.set_conditions(Direction::Send, send)?;
    server.set_conditions(Direction::Receive, receive)
}

/// Sets both directions of a client's link conditioner.
pub(crate) fn set_client_conditions(
    client: &mut Client,
    send: Conditions,
    receive: Conditions,
) -> Result<(), kcpnet::Error> {
    client.set_conditions(Direction::Send, send)?;
    client.set_conditions(Direction::Receive, receive)
}

/// What a server's link conditioner did (both directions), if it has one.
pub(crate) fn server_conditioner_stats(server: &Server) -> Option<ConditionerStats> {
    server.conditioner().map(|c| c.conditioner_stats())
}

/// What a client's link conditioner did (both directions), if it has one.
pub(crate) fn client_conditioner_stats(client: &Client) -> Option<ConditionerStats> {
    client.conditioner().map(|c| c.conditioner_stats())
}
