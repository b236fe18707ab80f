//! A server app and a client app in one process over kcpnet's in-memory network with a
//! virtual clock: every test is deterministic and bounded in frames. They follow
//! bevy_replicon's own backend tests (connect/disconnect, disconnect request, server stop,
//! replication, server and client messages) and add what is specific to kcp2k (reasons,
//! statistics, framing, loss).

use std::time::Duration;

use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use bevy::time::TimeUpdateStrategy;
use bevy_replicon::prelude::*;
use bevy_replicon_kcpnet::kcpnet::io::{Conditions, LinkConditioner, ManualClock, MemoryNetwork};
use bevy_replicon_kcpnet::kcpnet::{
    Channel as KcpChannel, Config, ConnectionState, DisconnectReason,
};
use bevy_replicon_kcpnet::prelude::*;
use serde::{Deserialize, Serialize};

const FRAME: Duration = Duration::from_millis(10);

#[derive(Component, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct Position(f32, f32);

#[derive(Message, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Test(u32);

#[derive(Message, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Big(Vec<u8>);

#[derive(Resource, Default)]
struct Disconnects(Vec<ClientDisconnected>);

struct Setup {
    net: MemoryNetwork,
    clock: ManualClock,
    server: App,
    client: App,
}

fn app(register: &impl Fn(&mut App)) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        StatesPlugin,
        RepliconPlugins.set(ServerPlugin::new(PostUpdate)),
        RepliconKcpPlugins,
    ))
    .insert_resource(TimeUpdateStrategy::ManualDuration(FRAME))
    .replicate::<Position>()
    .init_resource::<Disconnects>()
    .add_systems(
        PreUpdate,
        (|mut r: MessageReader<ClientDisconnected>, mut d: ResMut<Disconnects>| {
            d.0.extend(r.read().copied())
        })
        .after(ServerSystems::ReceivePackets),
    );
    register(&mut app);
    app.finish();
    app.cleanup();
    app
}

const SERVER: &str = "10.0.0.1:7777";

impl Setup {
    /// Two apps, not connected yet.
    fn new(register: impl Fn(&mut App)) -> Setup {
        let net = MemoryNetwork::new();
        let clock = ManualClock::new();
        let mut server = app(&register);
        let socket = net.bind(SERVER.parse().unwrap()).unwrap();
        server.insert_resource(
            KcpServer::with_conditioned_transport(
                LinkConditioner::new(socket, 1),
                Box::new(clock.clone()),
                Config::default(),
            )
            .unwrap(),
        );
        let client = app(&register);
        let mut s = Setup {
            net,
            clock,
            server,
            client,
        };
        s.new_client("10.0.0.2:5000");
        s
    }

    fn new_client(&mut self, addr: &str) {
        let socket = self.net.bind(addr.parse().unwrap()).unwrap();
        self.client.insert_resource(
            KcpClient::with_conditioned_transport(
                LinkConditioner::new(socket, 2),
                Box::new(self.clock.clone()),
                SERVER.parse().unwrap(),
                Config::default(),
            )
            .unwrap(),
        );
    }

    /// Connected and authorized (replicon's protocol check passed).
    fn connected(register: impl Fn(&mut App)) -> Setup {
        let mut s = Setup::new(register);
        s.step_until(200, |s| {
            s.client_state() == ClientState::Connected && s.authorized_clients() == 1
        });
        s
    }

    fn step(&mut self) {
        self.server.update();
        self.client.update();
        self.clock.advance(FRAME);
    }

    fn steps(&mut self, n: usize) {
        for _ in 0..n {
            self.step();
        }
    }

    fn step_until(&mut self, max: usize, mut done: impl FnMut(&mut Setup) -> bool) {
        for _ in 0..max {
            if done(self) {
                return;
            }
            self.step();
        }
        assert!(done(self), "condition not reached in {max} frames");
    }

    fn server_state(&self) -> ServerState {
        *self.server.world().resource::<State<ServerState>>().get()
    }

    fn client_state(&self) -> ClientState {
        *self.client.world().resource::<State<ClientState>>().get()
    }

    fn connected_clients(&mut self) -> Vec<Entity> {
        let world = self.server.world_mut();
        let mut q = world.query_filtered::<Entity, With<ConnectedClient>>();
        q.iter(world).collect()
    }

    fn authorized_clients(&mut self) -> usize {
        let world = self.server.world_mut();
        let mut q = world.query::<(&ConnectedClient, &AuthorizedClient)>();
        q.iter(world).count()
    }

    fn remote_positions(&mut self) -> Vec<Position> {
        let world = self.client.world_mut();
        let mut q = world.query_filtered::<&Position, With<Remote>>();
        q.iter(world).copied().collect()
    }

    fn disconnects(&self) -> &[ClientDisconnected] {
        &self.server.world().resource::<Disconnects>().0
    }
}

#[test]
fn connect_disconnect() {
    let mut s = Setup::connected(|_| {});
    assert_eq!(s.server_state(), ServerState::Running);
    let clients = s.connected_clients();
    assert_eq!(clients.len(), 1);
    let world = s.server.world();
    let connection = world.get::<KcpConnection>(clients[0]).unwrap();
    let network_id = world
        .get::<bevy_replicon::shared::backend::connected_client::NetworkId>(clients[0])
        .unwrap();
    let id = connection.id();
    assert_eq!(network_id.get(), id.to_u64());
    let max_size = world.get::<ConnectedClient>(clients[0]).unwrap().max_size;
    assert_eq!(
        max_size,
        Config::default().unreliable_max_message_size() - 1
    );

    s.client.world_mut().remove_resource::<KcpClient>();
    s.step_until(20, |s| s.connected_clients().is_empty());
    assert_eq!(s.client_state(), ClientState::Disconnected);
    assert_eq!(
        s.disconnects(),
        &[ClientDisconnected {
            client: clients[0],
            id,
            reason: DisconnectReason::Remote
        }]
    );
}

#[test]
fn reconnect_with_a_new_resource() {
    let mut s = Setup::connected(|_| {});
    s.client
        .world_mut()
        .resource_mut::<KcpClient>()
        .disconnect();
    s.step_until(20, |s| s.connected_clients().is_empty());
    assert_eq!(s.client_state(), ClientState::Disconnected);
    s.new_client("10.0.0.2:5001");
    s.step_until(200, |s| {
        s.client_state() == ClientState::Connected && s.authorized_clients() == 1
    });
}

#[test]
fn disconnect_request_delivers_what_was_sent_before() {
    let mut s = Setup::connected(|app| {
        app.add_server_message::<Test>(Channel::Ordered);
    });
    s.server.world_mut().spawn((Replicated, Position(1.0, 2.0)));
    s.server.world_mut().write_message(ToClients {
        targets: SendTargets::All,
        message: Test(7),
    });
    let client = s.connected_clients()[0];
    s.server
        .world_mut()
        .write_message(DisconnectRequest { client });
    s.step();
    assert!(s.connected_clients().is_empty(), "despawned at once");
    // Taken every frame: bevy drops a message two updates after it was written (or more,
    // with the fixed-timestep phase), and the server may report the disconnect later than
    // that.
    let mut received: Vec<Test> = Vec::new();
    s.step_until(100, |s| {
        received.extend(
            s.client
                .world_mut()
                .resource_mut::<Messages<Test>>()
                .drain(),
        );
        s.client_state() == ClientState::Disconnected && !s.disconnects().is_empty()
    });
    assert_eq!(received, vec![Test(7)], "the last message was delivered");
    assert_eq!(
        s.remote_positions(),
        [Position(1.0, 2.0)],
        "the last replication was delivered"
    );
    assert_eq!(s.disconnects().len(), 1);
    assert_eq!(s.disconnects()[0].client, client);
    assert_eq!(s.disconnects()[0].reason, DisconnectReason::Local);
    assert_eq!(
        s.client.world().resource::<KcpClient>().disconnect_reason(),
        Some(DisconnectReason::Remote)
    );
}

#[test]
fn server_stop() {
    let mut s = Setup::connected(|app| {
        app.add_server_message::<Test>(Channel::Ordered);
    });
    let client = s.connected_clients()[0];
    s.server.world_mut().remove_resource::<KcpServer>();
    s.server.world_mut().spawn((Replicated, Position(0.0, 0.0)));
    s.server.world_mut().write_message(ToClients {
        targets: SendTargets::All,
        message: Test(1),
    });
    s.steps(3);
    assert!(s.connected_clients().is_empty());
    assert_eq!(s.server_state(), ServerState::Stopped);
    assert_eq!(s.client_state(), ClientState::Disconnected);
    assert!(s.client.world().resource::<Messages<Test>>().is_empty());
    assert!(s.remote_positions().is_empty());
    assert_eq!(
        s.disconnects(),
        &[ClientDisconnected {
            client,
            id: s.disconnects()[0].id,
            reason: DisconnectReason::Closed
        }]
    );
    // The client learns that the server shut down (kcpnet's close reasons).
    assert_eq!(
        s.client.world().resource::<KcpClient>().disconnect_reason(),
        Some(DisconnectReason::RemoteShutdown)
    );
}

#[test]
fn despawning_the_client_entity_disconnects_it() {
    let mut s = Setup::connected(|_| {});
    let client = s.connected_clients()[0];
    s.server.world_mut().despawn(client);
    s.step_until(20, |s| {
        s.client_state() == ClientState::Disconnected && !s.disconnects().is_empty()
    });
    assert_eq!(s.disconnects()[0].client, client);
    assert_eq!(s.disconnects()[0].reason, DisconnectReason::Local);
}

#[test]
fn replication_spawns_and_mutates() {
    let mut s = Setup::connected(|_| {});
    let entity = s
        .server
        .world_mut()
        .spawn((Replicated, Position(1.0, 2.0)))
        .id();
    s.step_until(10, |s| s.remote_positions() == [Position(1.0, 2.0)]);
    // A mutation travels on replicon's unreliable channel.
    s.server.world_mut().get_mut::<Position>(entity).unwrap().0 = 5.0;
    s.step_until(10, |s| s.remote_positions() == [Position(5.0, 2.0)]);
    let stats = s.client.world().resource::<KcpClient>().connection_stats();
    assert!(stats.unreliable_received > 0, "{stats:?}");
    assert!(stats.reliable_received > 0, "{stats:?}");
    s.server.world_mut().despawn(entity);
    s.step_until(10, |s| s.remote_positions().is_empty());
}

#[test]
fn server_message() {
    let mut s = Setup::connected(|app| {
        app.add_server_message::<Test>(Channel::Ordered);
    });
    s.server.world_mut().write_message(ToClients {
        targets: SendTargets::All,
        message: Test(42),
    });
    s.step_until(10, |s| {
        !s.client.world().resource::<Messages<Test>>().is_empty()
    });
    let received: Vec<Test> = s
        .client
        .world_mut()
        .resource_mut::<Messages<Test>>()
        .drain()
        .collect();
    assert_eq!(received, vec![Test(42)]);
}

#[test]
fn client_messages_on_every_channel_kind_reach_the_server() {
    let mut s = Setup::connected(|app| {
        app.add_client_message::<Test>(Channel::Ordered)
            .add_client_message::<Big>(Channel::Unreliable);
    });
    s.client.world_mut().write_message(Test(3));
    // Larger than one unreliable datagram: the backend sends it reliably instead.
    let big = Big((0..5_000u32).map(|i| i as u8).collect());
    s.client.world_mut().write_message(big.clone());
    s.step_until(10, |s| {
        let w = s.server.world();
        !w.resource::<Messages<FromClient<Test>>>().is_empty()
            && !w.resource::<Messages<FromClient<Big>>>().is_empty()
    });
    let client = s.connected_clients()[0];
    let world = s.server.world_mut();
    let tests: Vec<_> = world
        .resource_mut::<Messages<FromClient<Test>>>()
        .drain()
        .collect();
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].message, Test(3));
    assert_eq!(tests[0].client_id, ClientId::Client(client));
    let bigs: Vec<_> = world
        .resource_mut::<Messages<FromClient<Big>>>()
        .drain()
        .collect();
    assert_eq!(bigs.len(), 1);
    assert_eq!(bigs[0].message, big);
}

#[test]
fn statistics_are_filled_on_both_sides() {
    let mut s = Setup::connected(|_| {});
    let entity = s
        .server
        .world_mut()
        .spawn((Replicated, Position(0.0, 0.0)))
        .id();
    // 2.5 s of movement: pings every second, one-second rate windows.
    for i in 0..250 {
        s.server.world_mut().get_mut::<Position>(entity).unwrap().0 = i as f32;
        s.step();
    }
    let client = s.connected_clients()[0];
    let stats = *s
        .server
        .world()
        .get::<ConnectedClientStats>(client)
        .unwrap();
    assert!(stats.sent_bps > 0.0, "{stats:?}");
    assert!(stats.received_bps > 0.0, "{stats:?}");
    assert!((0.0..=1.0).contains(&stats.packet_loss), "{stats:?}");
    let stats = *s.client.world().resource::<ClientStats>();
    assert!(stats.sent_bps > 0.0, "{stats:?}");
    assert!(stats.received_bps > stats.sent_bps, "{stats:?}");

    // With latency on the link, the RTT shows it once Pings went both ways: an idle kcpnet
    // pair pings every 3 s (the slow keepalive), the server answers three Pings in four with
    // its ACK alone and the fourth with a Pong, and reads its RTT from the client's ACK of
    // that Pong at the next interval: up to five intervals, 16 s.
    let slow = Conditions::default().with_latency(Duration::from_millis(25));
    s.client.insert_resource(KcpLinkConditions::symmetric(slow));
    s.steps(1600);
    let stats = *s
        .server
        .world()
        .get::<ConnectedClientStats>(client)
        .unwrap();
    assert!((0.045..0.2).contains(&stats.rtt), "{stats:?}");
    let stats = *s.client.world().resource::<ClientStats>();
    assert!((0.045..0.2).contains(&stats.rtt), "{stats:?}");
}

#[test]
fn a_message_on_an_unknown_channel_disconnects_the_client() {
    let mut s = Setup::connected(|_| {});
    let client = s.connected_clients()[0];
    // Bypass replicon: a raw kcp2k message whose channel id names no client channel.
    s.client
        .world_mut()
        .resource_mut::<KcpClient>()
        .send(&[200, 1, 2, 3], KcpChannel::Reliable)
        .unwrap();
    s.step_until(20, |s| {
        s.client_state() == ClientState::Disconnected && !s.disconnects().is_empty()
    });
    assert!(s.connected_clients().is_empty());
    assert_eq!(s.disconnects()[0].client, client);
    assert_eq!(s.disconnects()[0].reason, DisconnectReason::Local);
}

/// Twenty entities moving for 3 s over a link with 20 % loss, 40 ms ± 10 ms and duplicates
/// both ways: once they stop, the client's replicated state equals the server's.
#[test]
fn replicated_state_converges_under_loss() {
    let mut s = Setup::new(|_| {});
    let bad = Conditions::lossy(0.2)
        .with_latency(Duration::from_millis(40))
        .with_jitter(Duration::from_millis(10))
        .with_duplicate(0.02);
    s.server
        .insert_resource(KcpLinkConditions::symmetric(bad.clone()));
    s.client.insert_resource(KcpLinkConditions::symmetric(bad));
    s.step_until(1_000, |s| {
        s.client_state() == ClientState::Connected && s.authorized_clients() == 1
    });
    let entities: Vec<Entity> = (0..20)
        .map(|i| {
            s.server
                .world_mut()
                .spawn((Replicated, Position(i as f32, 0.0)))
                .id()
        })
        .collect();
    for frame in 0..300 {
        for (i, &e) in entities.iter().enumerate() {
            let mut p = s.server.world_mut().get_mut::<Position>(e).unwrap();
            p.1 = (frame * (i + 1)) as f32 * 0.01;
        }
        s.step();
    }
    let mut expected: Vec<(u32, u32)> = entities
        .iter()
        .map(|&e| {
            let p = s.server.world().get::<Position>(e).unwrap();
            (p.0.to_bits(), p.1.to_bits())
        })
        .collect();
    expected.sort();
    s.step_until(500, |s| {
        let mut got: Vec<(u32, u32)> = s
            .remote_positions()
            .iter()
            .map(|p| (p.0.to_bits(), p.1.to_bits()))
            .collect();
        got.sort();
        got == expected
    });
    let server = s.server.world_mut().resource_mut::<KcpServer>();
    assert!(server.conditioner_stats().unwrap().dropped > 50);
    let client = s.client.world().resource::<KcpClient>();
    assert!(client.connection_stats().retransmits > 0);
}

#[test]
fn a_half_closed_client_stays_connected_until_it_disconnects() {
    let mut s = Setup::connected(|app| {
        app.add_server_message::<Test>(Channel::Ordered);
    });
    let client = s.connected_clients()[0];
    let id = s.server.world().get::<KcpConnection>(client).unwrap().id();

    // The client half-closes: it sends nothing more, but it still receives.
    s.client
        .world_mut()
        .resource_mut::<KcpClient>()
        .shutdown_send()
        .unwrap();
    s.steps(20);
    assert_eq!(
        s.client.world().resource::<KcpClient>().state(),
        ConnectionState::SendClosed
    );
    assert_eq!(
        s.server.world().resource::<KcpServer>().state(id),
        Some(ConnectionState::PeerSendClosed)
    );
    assert_eq!(s.client_state(), ClientState::Connected);
    assert_eq!(s.connected_clients(), [client]);
    assert!(s.disconnects().is_empty());

    // Replication and server messages still reach it (its own sends, replicon's acks, are
    // dropped without closing anything).
    let entity = s
        .server
        .world_mut()
        .spawn((Replicated, Position(1.0, 2.0)))
        .id();
    s.server.world_mut().write_message(ToClients {
        targets: SendTargets::All,
        message: Test(9),
    });
    s.step_until(20, |s| s.remote_positions() == [Position(1.0, 2.0)]);
    s.server.world_mut().get_mut::<Position>(entity).unwrap().0 = 3.0;
    s.step_until(20, |s| s.remote_positions() == [Position(3.0, 2.0)]);
    let received: Vec<Test> = s
        .client
        .world_mut()
        .resource_mut::<Messages<Test>>()
        .drain()
        .collect();
    assert_eq!(received, vec![Test(9)]);
    assert_eq!(s.client_state(), ClientState::Connected);
    assert_eq!(s.connected_clients(), [client]);

    // The server half-closes too: the connection finishes on both sides.
    s.server
        .world_mut()
        .resource_mut::<KcpServer>()
        .shutdown_send(id)
        .unwrap();
    s.step_until(100, |s| {
        s.client_state() == ClientState::Disconnected && !s.disconnects().is_empty()
    });
    assert!(s.connected_clients().is_empty());
    assert_eq!(
        s.disconnects(),
        &[ClientDisconnected {
            client,
            id,
            reason: DisconnectReason::Finished
        }]
    );
    assert_eq!(
        s.client.world().resource::<KcpClient>().disconnect_reason(),
        Some(DisconnectReason::Finished)
    );
}

#[test]
fn a_client_whose_server_half_closed_still_sends_until_it_disconnects() {
    let mut s = Setup::connected(|app| {
        app.add_client_message::<Test>(Channel::Ordered);
    });
    let client = s.connected_clients()[0];
    let id = s.server.world().get::<KcpConnection>(client).unwrap().id();
    s.server
        .world_mut()
        .resource_mut::<KcpServer>()
        .shutdown_send(id)
        .unwrap();
    s.steps(20);
    assert_eq!(
        s.client.world().resource::<KcpClient>().state(),
        ConnectionState::PeerSendClosed
    );
    assert_eq!(s.client_state(), ClientState::Connected);
    assert_eq!(s.connected_clients(), [client]);

    s.client.world_mut().write_message(Test(5));
    s.step_until(20, |s| {
        !s.server
            .world()
            .resource::<Messages<FromClient<Test>>>()
            .is_empty()
    });
    let got: Vec<_> = s
        .server
        .world_mut()
        .resource_mut::<Messages<FromClient<Test>>>()
        .drain()
        .map(|m| (m.client_id, m.message))
        .collect();
    assert_eq!(got, vec![(ClientId::Client(client), Test(5))]);

    // The client leaves with a reason: the server reports it.
    s.client
        .world_mut()
        .resource_mut::<KcpClient>()
        .disconnect_with(3, "done")
        .unwrap();
    s.step_until(20, |s| !s.disconnects().is_empty());
    assert_eq!(s.client_state(), ClientState::Disconnected);
    assert!(s.connected_clients().is_empty());
    assert!(matches!(
        s.disconnects()[0].reason,
        DisconnectReason::App { code: 3, message } if &*message == "done"
    ));
}
