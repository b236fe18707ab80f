//! A server app and a client app in one process: over kcpnet's in-memory network with a
//! virtual clock (deterministic, bounded in frames), and once over loopback UDP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bevy::app::{AppExit, ScheduleRunnerPlugin};
use bevy::prelude::*;
use bevy_kcpnet::kcpnet::io::{Conditions, LinkConditioner, ManualClock, MemoryNetwork};
use bevy_kcpnet::kcpnet::{
    Channel, CloseMessage, Config, ConnectionId, ConnectionState, DisconnectReason,
};
use bevy_kcpnet::prelude::*;

const FRAME: Duration = Duration::from_millis(10);

/// Every event an app saw, in order.
#[derive(Resource)]
struct Seen<E: Send + Sync + 'static>(Vec<E>);

impl<E: Send + Sync + 'static> Default for Seen<E> {
    fn default() -> Self {
        Seen(Vec::new())
    }
}

fn record<E: Message + Clone>(mut events: MessageReader<E>, mut seen: ResMut<Seen<E>>) {
    seen.0.extend(events.read().cloned());
}

struct Pair {
    net: MemoryNetwork,
    clock: ManualClock,
    server: App,
    client: App,
    server_addr: SocketAddr,
}

impl Pair {
    fn new() -> Pair {
        let net = MemoryNetwork::new();
        let clock = ManualClock::new();
        let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
        let mut server = App::new();
        server
            .add_plugins((MinimalPlugins, KcpServerPlugin))
            .init_resource::<Seen<ServerEvent>>()
            .add_systems(PreUpdate, record::<ServerEvent>.after(KcpSystems::Receive))
            .insert_resource(
                KcpServer::with_conditioned_transport(
                    LinkConditioner::new(net.bind(server_addr).unwrap(), 1),
                    Box::new(clock.clone()),
                    Config::default(),
                )
                .unwrap(),
            );
        let mut client = App::new();
        client
            .add_plugins((MinimalPlugins, KcpClientPlugin))
            .init_resource::<Seen<ClientEvent>>()
            .add_systems(PreUpdate, record::<ClientEvent>.after(KcpSystems::Receive));
        let mut pair = Pair {
            net,
            clock,
            server,
            client,
            server_addr,
        };
        pair.new_client("10.0.0.2:5000");
        pair
    }

    fn new_client(&mut self, addr: &str) {
        let client = self.kcp_client(addr);
        self.client.insert_resource(client);
    }

    /// A client resource at `addr` on the pair's network, connecting to the server.
    fn kcp_client(&self, addr: &str) -> KcpClient {
        let socket = self.net.bind(addr.parse().unwrap()).unwrap();
        KcpClient::with_conditioned_transport(
            LinkConditioner::new(socket, 2),
            Box::new(self.clock.clone()),
            self.server_addr,
            Config::default(),
        )
        .unwrap()
    }

    /// One frame of each app, then 10 ms of virtual time.
    fn step(&mut self) {
        self.client.update();
        self.server.update();
        self.clock.advance(FRAME);
    }

    /// Steps until `done` holds (at most `max` frames); returns the frames taken.
    fn step_until(&mut self, max: usize, mut done: impl FnMut(&mut Pair) -> bool) -> usize {
        for frame in 0..max {
            if done(self) {
                return frame;
            }
            self.step();
        }
        panic!("condition not reached in {max} frames");
    }

    fn connect(&mut self) -> ConnectionId {
        self.step_until(200, |p| {
            p.client_res().is_connected() && p.server_id().is_some()
        });
        self.server_id().unwrap()
    }

    fn server_id(&self) -> Option<ConnectionId> {
        self.server_seen().iter().find_map(|e| match &e.0 {
            OwnedEvent::Connected { id, .. } => Some(*id),
            _ => None,
        })
    }

    fn client_res(&self) -> &KcpClient {
        self.client.world().resource::<KcpClient>()
    }

    fn server_seen(&self) -> &[ServerEvent] {
        &self.server.world().resource::<Seen<ServerEvent>>().0
    }

    fn client_seen(&self) -> &[ClientEvent] {
        &self.client.world().resource::<Seen<ClientEvent>>().0
    }

    fn server_data(&self) -> Vec<(Channel, Vec<u8>)> {
        self.server_seen()
            .iter()
            .filter_map(|e| match &e.0 {
                OwnedEvent::Data { channel, data, .. } => Some((*channel, data.to_vec())),
                _ => None,
            })
            .collect()
    }

    fn client_data(&self) -> Vec<(Channel, Vec<u8>)> {
        self.client_seen()
            .iter()
            .filter_map(|e| match &e.0 {
                OwnedEvent::Data { channel, data, .. } => Some((*channel, data.to_vec())),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn connect_exchange_both_channels_and_read_stats() {
    let mut p = Pair::new();
    let id = p.connect();
    assert!(matches!(
        p.client_seen().first(),
        Some(ClientEvent(OwnedEvent::Connected { addr, .. })) if *addr == p.server_addr
    ));

    // Sending is a method on the resource, from anywhere that can reach it.
    let mut client = p.client.world_mut().resource_mut::<KcpClient>();
    client.send(b"up-reliable", Channel::Reliable).unwrap();
    client.send(b"up-unreliable", Channel::Unreliable).unwrap();
    let mut server = p.server.world_mut().resource_mut::<KcpServer>();
    server
        .send(id, b"down-reliable", Channel::Reliable)
        .unwrap();
    assert_eq!(server.broadcast(b"down-broadcast", Channel::Unreliable), 1);

    p.step_until(50, |p| {
        p.server_data().len() == 2 && p.client_data().len() == 2
    });
    assert_eq!(
        p.server_data(),
        vec![
            (Channel::Unreliable, b"up-unreliable".to_vec()),
            (Channel::Reliable, b"up-reliable".to_vec()),
        ]
    );
    assert_eq!(
        p.client_data(),
        vec![
            (Channel::Unreliable, b"down-broadcast".to_vec()),
            (Channel::Reliable, b"down-reliable".to_vec()),
        ]
    );
    assert!(p.server_seen().iter().all(|e| e.id() == id));

    // Pings run every second: after 1.5 s both sides have an RTT.
    for _ in 0..150 {
        p.step();
    }
    let server = p.server.world().resource::<KcpServer>();
    let stats = server.connection_stats(id).unwrap();
    assert!(stats.rtt_ms.is_some(), "{stats:?}");
    assert_eq!(stats.reliable_received, 1);
    assert_eq!(stats.unreliable_received, 1);
    assert_eq!(stats.reliable_sent, 1);
    assert_eq!(stats.unreliable_sent, 1);
    assert!(stats.bytes_sent > 0 && stats.bytes_received > 0);
    assert_eq!(server.connection_count(), 1);
    assert_eq!(server.connections().collect::<Vec<_>>(), vec![id]);
    assert_eq!(server.stats().connections_accepted, 1);
    let client = p.client_res();
    assert!(client.rtt().is_some());
    assert_eq!(client.connection_stats().reliable_received, 1);
    assert_eq!(client.connection_stats().unreliable_received, 1);
}

#[test]
fn client_disconnect_is_seen_on_both_sides_with_the_reason() {
    let mut p = Pair::new();
    let id = p.connect();
    p.client
        .world_mut()
        .resource_mut::<KcpClient>()
        .disconnect();
    p.step_until(50, |p| {
        p.server_seen()
            .iter()
            .any(|e| matches!(e.0, OwnedEvent::Disconnected { .. }))
    });
    assert_eq!(
        p.server_seen().last(),
        Some(&ServerEvent(OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::Remote
        }))
    );
    let client_id = p.client_res().id();
    assert_eq!(
        p.client_seen().last(),
        Some(&ClientEvent(OwnedEvent::Disconnected {
            id: client_id,
            reason: DisconnectReason::Local
        }))
    );
    let client = p.client_res();
    assert!(client.is_disconnected());
    assert_eq!(client.disconnect_reason(), Some(DisconnectReason::Local));
    assert_eq!(
        p.server.world().resource::<KcpServer>().connection_count(),
        0
    );
    // Exactly one Disconnected on each side, even after more frames.
    for _ in 0..20 {
        p.step();
    }
    let count = |p: &Pair| {
        (
            p.server_seen()
                .iter()
                .filter(|e| matches!(e.0, OwnedEvent::Disconnected { .. }))
                .count(),
            p.client_seen()
                .iter()
                .filter(|e| matches!(e.0, OwnedEvent::Disconnected { .. }))
                .count(),
        )
    };
    assert_eq!(count(&p), (1, 1));
}

#[test]
fn server_kick_reaches_the_client_as_remote() {
    let mut p = Pair::new();
    let id = p.connect();
    p.server
        .world_mut()
        .resource_mut::<KcpServer>()
        .disconnect(id)
        .unwrap();
    p.step_until(50, |p| p.client_res().is_disconnected());
    assert_eq!(
        p.client_res().disconnect_reason(),
        Some(DisconnectReason::Remote)
    );
    assert!(p
        .server_seen()
        .contains(&ServerEvent(OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::Local
        })));
}

#[test]
fn removing_the_resources_ends_every_connection_once() {
    let mut p = Pair::new();
    let id = p.connect();
    // Removing the server: its peers are told at once (a kcpnet peer learns it was a
    // shutdown), and the app still gets one Disconnected per connection.
    p.server.world_mut().remove_resource::<KcpServer>();
    p.step_until(20, |p| p.client_res().is_disconnected());
    assert_eq!(
        p.client_res().disconnect_reason(),
        Some(DisconnectReason::RemoteShutdown)
    );
    assert_eq!(
        p.server_seen().last(),
        Some(&ServerEvent(OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::Closed
        }))
    );

    // Removing a live client reports a local disconnect.
    let mut p = Pair::new();
    p.connect();
    let client_id = p.client_res().id();
    p.client.world_mut().remove_resource::<KcpClient>();
    p.step_until(20, |p| {
        p.server_seen()
            .iter()
            .any(|e| matches!(e.0, OwnedEvent::Disconnected { .. }))
    });
    assert_eq!(
        p.client_seen().last(),
        Some(&ClientEvent(OwnedEvent::Disconnected {
            id: client_id,
            reason: DisconnectReason::Local
        }))
    );
}

#[test]
fn half_close_reaches_the_app_as_peer_send_closed_then_finished() {
    let mut p = Pair::new();
    let id = p.connect();
    let client_id = p.client_res().id();
    let mut server = p.server.world_mut().resource_mut::<KcpServer>();
    server.send(id, b"last words", Channel::Reliable).unwrap();
    server.shutdown_send(id).unwrap();
    assert_eq!(server.state(id), Some(ConnectionState::SendClosed));
    assert!(server.send(id, b"too late", Channel::Reliable).is_err());

    // The client app sees the server's last message, then PeerSendClosed, in that order.
    p.step_until(50, |p| {
        p.client_seen()
            .iter()
            .any(|e| matches!(e.0, OwnedEvent::PeerSendClosed { .. }))
    });
    let tail: Vec<&OwnedEvent<bevy_kcpnet::Bytes>> =
        p.client_seen().iter().skip(1).map(|e| &e.0).collect();
    assert_eq!(
        tail,
        [
            &OwnedEvent::Data {
                id: client_id,
                channel: Channel::Reliable,
                data: bevy_kcpnet::Bytes::from_static(b"last words"),
            },
            &OwnedEvent::PeerSendClosed { id: client_id },
        ]
    );
    assert_eq!(p.client_res().state(), ConnectionState::PeerSendClosed);
    assert!(!p.client_res().is_disconnected());

    // The client can still answer, then half-closes too: both sides end with Finished.
    let mut client = p.client.world_mut().resource_mut::<KcpClient>();
    client.send(b"reply", Channel::Reliable).unwrap();
    client.shutdown_send().unwrap();
    p.step_until(100, |p| {
        p.client_res().is_disconnected()
            && p.server_seen()
                .iter()
                .any(|e| matches!(e.0, OwnedEvent::Disconnected { .. }))
    });
    let server_tail: Vec<&OwnedEvent<bevy_kcpnet::Bytes>> =
        p.server_seen().iter().skip(1).map(|e| &e.0).collect();
    assert_eq!(
        server_tail,
        [
            &OwnedEvent::Data {
                id,
                channel: Channel::Reliable,
                data: bevy_kcpnet::Bytes::from_static(b"reply"),
            },
            &OwnedEvent::PeerSendClosed { id },
            &OwnedEvent::Disconnected {
                id,
                reason: DisconnectReason::Finished,
            },
        ]
    );
    assert_eq!(
        p.client_seen().last(),
        Some(&ClientEvent(OwnedEvent::Disconnected {
            id: client_id,
            reason: DisconnectReason::Finished,
        }))
    );
    assert_eq!(
        p.client_res().disconnect_reason(),
        Some(DisconnectReason::Finished)
    );
}

#[test]
fn close_reasons_reach_the_app_both_ways() {
    // The server kicks with a code and a message.
    let mut p = Pair::new();
    let id = p.connect();
    let client_id = p.client_res().id();
    p.server
        .world_mut()
        .resource_mut::<KcpServer>()
        .disconnect_with(id, 4001, "kicked: speed hack")
        .unwrap();
    p.step_until(50, |p| p.client_res().is_disconnected());
    let kicked = DisconnectReason::App {
        code: 4001,
        message: CloseMessage::new("kicked: speed hack").unwrap(),
    };
    assert_eq!(
        p.client_seen().last(),
        Some(&ClientEvent(OwnedEvent::Disconnected {
            id: client_id,
            reason: kicked,
        }))
    );
    assert_eq!(p.client_res().disconnect_reason(), Some(kicked));
    assert_eq!(
        p.server_seen().last(),
        Some(&ServerEvent(OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::Local,
        }))
    );

    // The client leaves gracefully with a reason, after its last message.
    let mut p = Pair::new();
    let id = p.connect();
    let mut client = p.client.world_mut().resource_mut::<KcpClient>();
    client.send(b"gg", Channel::Reliable).unwrap();
    client.disconnect_graceful_with(7, "rage quit").unwrap();
    p.step_until(100, |p| {
        p.server_seen()
            .iter()
            .any(|e| matches!(e.0, OwnedEvent::Disconnected { .. }))
    });
    assert_eq!(p.server_data(), vec![(Channel::Reliable, b"gg".to_vec())]);
    assert_eq!(
        p.server_seen().last(),
        Some(&ServerEvent(OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::App {
                code: 7,
                message: CloseMessage::new("rage quit").unwrap(),
            },
        }))
    );

    // A message too long for a close reason is a typed error, and nothing happens.
    let mut p = Pair::new();
    let id = p.connect();
    let long = "x".repeat(CloseMessage::MAX_LEN + 1);
    let mut server = p.server.world_mut().resource_mut::<KcpServer>();
    assert!(matches!(
        server.disconnect_with(id, 1, &long),
        Err(bevy_kcpnet::kcpnet::Error::ReasonTooLong { .. })
    ));
    assert!(server.is_connected(id));
    let mut client = p.client.world_mut().resource_mut::<KcpClient>();
    assert!(client.disconnect_with(1, &long).is_err());
    assert!(client.is_connected());
}

#[test]
fn broadcast_reaches_every_connected_client() {
    let mut p = Pair::new();
    // Two more client apps on the same network: three clients in all.
    let mut others: Vec<App> = (3..5)
        .map(|i| {
            let mut app = App::new();
            app.add_plugins((MinimalPlugins, KcpClientPlugin))
                .init_resource::<Seen<ClientEvent>>()
                .add_systems(PreUpdate, record::<ClientEvent>.after(KcpSystems::Receive))
                .insert_resource(p.kcp_client(&format!("10.0.0.{i}:5000")));
            app
        })
        .collect();
    let step = |p: &mut Pair, others: &mut [App]| {
        for app in others.iter_mut() {
            app.update();
        }
        p.step();
    };
    for _ in 0..200 {
        if p.server.world().resource::<KcpServer>().connection_count() == 3 {
            break;
        }
        step(&mut p, &mut others);
    }
    let mut server = p.server.world_mut().resource_mut::<KcpServer>();
    assert_eq!(server.connection_count(), 3);
    let ids: Vec<ConnectionId> = server.connections().collect();
    assert_eq!(server.broadcast(b"to everyone", Channel::Reliable), 3);
    assert_eq!(
        server.send_each(&ids[..2], b"to two", Channel::Unreliable),
        2
    );
    for _ in 0..20 {
        step(&mut p, &mut others);
    }
    let data = |seen: &[ClientEvent]| -> Vec<Vec<u8>> {
        seen.iter()
            .filter_map(|e| match &e.0 {
                OwnedEvent::Data { data, .. } => Some(data.to_vec()),
                _ => None,
            })
            .collect()
    };
    let mut got: Vec<Vec<Vec<u8>>> = vec![data(p.client_seen())];
    for app in &others {
        got.push(data(&app.world().resource::<Seen<ClientEvent>>().0));
    }
    // Every client got the broadcast once; exactly two got the targeted message.
    assert!(got
        .iter()
        .all(|d| d.iter().filter(|m| m.as_slice() == b"to everyone").count() == 1));
    assert_eq!(
        got.iter()
            .filter(|d| d.iter().any(|m| m.as_slice() == b"to two"))
            .count(),
        2
    );
    // Link quality is there for every connection.
    let server = p.server.world().resource::<KcpServer>();
    for &id in &ids {
        let q = server.connection_quality(id).unwrap();
        assert!(q.connected_ms > 0, "{q:?}");
    }
    assert!(p.client_res().connection_quality().connected_ms > 0);

    // A client that left is no longer counted.
    others[0]
        .world_mut()
        .resource_mut::<KcpClient>()
        .disconnect();
    for _ in 0..20 {
        step(&mut p, &mut others);
    }
    let mut server = p.server.world_mut().resource_mut::<KcpServer>();
    assert_eq!(server.broadcast(b"fewer", Channel::Reliable), 2);
    assert_eq!(server.send_each(&ids, b"fewer", Channel::Reliable), 2);
}

#[derive(Resource, Default)]
struct Transitions {
    connected: u32,
    disconnected: u32,
    frames_connected: u32,
}

#[test]
fn run_conditions_follow_the_connection() {
    let mut p = Pair::new();
    p.client.init_resource::<Transitions>().add_systems(
        Update,
        (
            (|mut t: ResMut<Transitions>| t.connected += 1).run_if(client_just_connected),
            (|mut t: ResMut<Transitions>| t.disconnected += 1).run_if(client_just_disconnected),
            (|mut t: ResMut<Transitions>| t.frames_connected += 1).run_if(client_connected),
        ),
    );
    let world = p.client.world_mut();
    assert!(world.run_system_cached(client_connecting).unwrap());
    p.connect();
    for _ in 0..10 {
        p.step();
    }
    let world = p.server.world_mut();
    assert!(world.run_system_cached(server_running).unwrap());
    assert!(world.run_system_cached(server_has_clients).unwrap());
    p.client
        .world_mut()
        .resource_mut::<KcpClient>()
        .disconnect();
    for _ in 0..10 {
        p.step();
    }
    let t = p.client.world().resource::<Transitions>();
    assert_eq!((t.connected, t.disconnected), (1, 1));
    assert!(t.frames_connected >= 10, "{}", t.frames_connected);
    let world = p.client.world_mut();
    assert!(world.run_system_cached(client_disconnected).unwrap());
    assert!(!world.run_system_cached(client_connected).unwrap());
    let world = p.server.world_mut();
    assert!(!world.run_system_cached(server_has_clients).unwrap());
    world.remove_resource::<KcpServer>();
    assert!(!world.run_system_cached(server_running).unwrap());
}

#[test]
fn link_conditions_from_a_resource_lose_datagrams_but_no_reliable_message() {
    let mut p = Pair::new();
    let bad = Conditions::lossy(0.2)
        .with_latency(Duration::from_millis(30))
        .with_jitter(Duration::from_millis(10));
    p.server
        .insert_resource(KcpLinkConditions::symmetric(bad.clone()));
    p.client.insert_resource(KcpLinkConditions::send_only(bad));
    let id = p.connect();
    const N: usize = 200;
    for i in 0..N {
        let msg = format!("message {i}");
        p.client
            .world_mut()
            .resource_mut::<KcpClient>()
            .send(msg.as_bytes(), Channel::Reliable)
            .unwrap();
        p.step();
    }
    p.step_until(2_000, |p| p.server_data().len() == N);
    let expected: Vec<_> = (0..N)
        .map(|i| (Channel::Reliable, format!("message {i}").into_bytes()))
        .collect();
    assert_eq!(p.server_data(), expected, "in order, exactly once");
    let server = p.server.world_mut().resource_mut::<KcpServer>();
    let c = server.conditioner_stats().unwrap();
    let ratio = c.dropped as f64 / (c.sent + c.received) as f64;
    assert!((0.1..0.3).contains(&ratio), "the conditioner dropped {c:?}");
    let stats = server.connection_stats(id).unwrap();
    assert!(stats.rtt_ms.unwrap() >= 60, "{stats:?}"); // 30 ms each way at least
    let client = p.client.world_mut().resource_mut::<KcpClient>();
    let c = client.conditioner_stats().unwrap();
    let ratio = c.dropped as f64 / c.sent as f64;
    assert!((0.1..0.3).contains(&ratio), "the conditioner dropped {c:?}");
    assert!(client.connection_stats().retransmits > 0);

    // Back to a perfect link at run time.
    p.server.insert_resource(KcpLinkConditions::default());
    p.client.insert_resource(KcpLinkConditions::default());
    p.step();
    let before = p
        .server
        .world_mut()
        .resource_mut::<KcpServer>()
        .conditioner_stats()
        .unwrap()
        .dropped;
    for _ in 0..100 {
        p.step();
    }
    let after = p
        .server
        .world_mut()
        .resource_mut::<KcpServer>()
        .conditioner_stats()
        .unwrap()
        .dropped;
    assert_eq!(before, after, "nothing lost on a perfect link");
}

#[test]
fn a_new_client_resource_is_a_new_attempt() {
    let mut p = Pair::new();
    p.connect();
    p.client
        .world_mut()
        .resource_mut::<KcpClient>()
        .disconnect();
    p.step_until(50, |p| p.client_res().is_disconnected());
    p.new_client("10.0.0.2:5001");
    p.step_until(200, |p| p.client_res().is_connected());
    let connected = p
        .client_seen()
        .iter()
        .filter(|e| matches!(e.0, OwnedEvent::Connected { .. }))
        .count();
    let disconnected = p
        .client_seen()
        .iter()
        .filter(|e| matches!(e.0, OwnedEvent::Disconnected { .. }))
        .count();
    assert_eq!((connected, disconnected), (2, 1));
    p.step_until(50, |p| {
        p.server_seen()
            .iter()
            .filter(|e| matches!(e.0, OwnedEvent::Connected { .. }))
            .count()
            == 2
    });
}

/// A headless server under `ScheduleRunnerPlugin` at a fixed rate in its own thread, a client
/// app stepped by hand, over loopback UDP. Bounded: the server exits after 10 s at most.
#[test]
fn headless_server_under_schedule_runner_over_loopback_udp() {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut app = App::new();
        let server = KcpServer::bind("127.0.0.1:0", Config::default()).unwrap();
        addr_tx.send(server.local_addr().unwrap()).unwrap();
        let started = Instant::now();
        app.add_plugins((
            MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(5))),
            KcpServerPlugin,
        ))
        .insert_resource(server)
        .add_systems(
            Update,
            move |mut events: MessageReader<ServerEvent>,
                  mut server: ResMut<KcpServer>,
                  mut exit: MessageWriter<AppExit>| {
                for event in events.read() {
                    match &event.0 {
                        OwnedEvent::Data { id, channel, data } => {
                            let mut reply = b"echo:".to_vec();
                            reply.extend_from_slice(data);
                            server.send(*id, &reply, *channel).unwrap();
                        }
                        OwnedEvent::Disconnected { reason, .. } => {
                            assert_eq!(*reason, DisconnectReason::Remote);
                            exit.write(AppExit::Success);
                        }
                        _ => {}
                    }
                }
                if started.elapsed() > Duration::from_secs(10) {
                    exit.write(AppExit::error());
                }
            },
        );
        app.run()
    });
    let addr = addr_rx.recv().unwrap();

    let mut app = App::new();
    app.add_plugins((MinimalPlugins, KcpClientPlugin))
        .init_resource::<Seen<ClientEvent>>()
        .add_systems(PreUpdate, record::<ClientEvent>.after(KcpSystems::Receive))
        .insert_resource(KcpClient::connect(addr, Config::default()).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = false;
    loop {
        app.update();
        let seen = &app.world().resource::<Seen<ClientEvent>>().0;
        if seen.iter().any(|e| matches!(e.0, OwnedEvent::Data { .. })) {
            break;
        }
        let mut client = app.world_mut().resource_mut::<KcpClient>();
        if client.is_connected() && !sent {
            client.send(b"ping", Channel::Reliable).unwrap();
            sent = true;
        }
        assert!(Instant::now() < deadline, "no echo over loopback UDP");
        std::thread::sleep(Duration::from_millis(2));
    }
    let seen = &app.world().resource::<Seen<ClientEvent>>().0;
    let id = app.world().resource::<KcpClient>().id();
    assert!(seen.contains(&ClientEvent(OwnedEvent::Data {
        id,
        channel: Channel::Reliable,
        data: bevy_kcpnet::Bytes::from_static(b"echo:ping"),
    })));
    app.world_mut().remove_resource::<KcpClient>();
    assert_eq!(server.join().unwrap(), AppExit::Success);
}
