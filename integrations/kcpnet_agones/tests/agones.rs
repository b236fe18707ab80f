//! The integration against a real Agones SDK gRPC server (dummy-agones 0.1.2, tonic) on
//! loopback, with real kcpnet clients over loopback UDP: Ready after bind, health pings
//! that follow the loop and stop when it stalls, players reported, and a shutdown request
//! that drains every client (reason and queued data) before the SDK's `Shutdown()`.

mod common;

use std::time::{Duration, Instant};

use common::{is_reason, until, Dummy, Player};
use kcpnet::{Channel, Config, Server};
use kcpnet_agones::fleet::{LABEL_DRAINING, LABEL_PLAYERS};
use kcpnet_agones::{AgonesConfig, AgonesHandle, DrainCause, DrainSignal, Fleet, FleetConfig};

const HEALTH: Duration = Duration::from_millis(100);
const BURST: u32 = 300;
const BURST_SIZE: usize = 1000;

fn agones(dummy: &Dummy) -> AgonesHandle {
    AgonesHandle::connect(AgonesConfig {
        port: Some(dummy.port),
        connect_timeout: Duration::from_secs(10),
        health_interval: Some(HEALTH),
        player_list: Some("players".to_owned()),
    })
    .expect("the SDK reaches dummy-agones")
}

fn fleet_config() -> FleetConfig {
    FleetConfig {
        linger: Duration::from_secs(10),
        publish_interval: Duration::from_millis(20),
        figures_interval: Duration::from_millis(20),
        ..FleetConfig::default()
    }
}

/// One frame of the test's game loop: tick, events to the fleet, flush, fleet frame.
fn frame(server: &mut Server, fleet: &mut Fleet) -> Option<DrainCause> {
    server.tick_incoming();
    while let Some(event) = server.poll_event() {
        fleet.observe(&event);
    }
    server.tick_outgoing();
    fleet.frame(server, Instant::now())
}

#[test]
fn ready_health_players_and_a_shutdown_request_that_drains_real_clients() {
    let dummy = Dummy::start();
    let handle = agones(&dummy);
    assert_eq!(handle.health_interval(), HEALTH);
    let mut server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let mut fleet = Fleet::new(fleet_config(), Some(handle), DrainSignal::manual());

    // Ready once bound.
    assert_ne!(dummy.state(), "Ready");
    fleet.ready();
    assert!(
        until(Duration::from_secs(5), || {
            assert!(frame(&mut server, &mut fleet).is_none());
            dummy.state() == "Ready"
        }),
        "the GameServer went Ready"
    );
    assert_eq!(dummy.label(LABEL_PLAYERS).as_deref(), Some("0"));
    assert_eq!(dummy.label(LABEL_DRAINING).as_deref(), Some("false"));

    // Health pings while the loop runs: one per 100 ms of frames.
    let start = dummy.health_pings();
    let run = Instant::now();
    while run.elapsed() < Duration::from_millis(800) {
        assert!(frame(&mut server, &mut fleet).is_none());
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = fleet.agones().unwrap().pings_sent() as usize;
    assert!(
        until(Duration::from_secs(2), || dummy.health_pings() >= sent),
        "every ping sent reached the SDK server ({} of {sent})",
        dummy.health_pings()
    );
    let during_run = dummy.health_pings() - start;
    assert!(
        during_run >= 5,
        "pings followed the running loop: {during_run} in 800 ms at a 100 ms interval"
    );

    // The loop stalls (no frame): nothing more arrives, however long we wait.
    std::thread::sleep(HEALTH * 3);
    let after_stall = dummy.health_pings();
    assert_eq!(after_stall, sent, "no ping was sent after the last frame");
    std::thread::sleep(HEALTH * 10);
    assert_eq!(
        dummy.health_pings(),
        after_stall,
        "a stalled loop sends no health ping"
    );
    // … and the first frame after the stall pings again.
    assert!(frame(&mut server, &mut fleet).is_none());
    assert!(until(Duration::from_secs(2), || dummy.health_pings()
        > after_stall));

    // Players: three real kcpnet clients connect; one leaves.
    let mut players: Vec<Player> = (0..3).map(|_| Player::connect(addr)).collect();
    assert!(
        until(Duration::from_secs(5), || {
            players.iter_mut().for_each(Player::tick);
            assert!(frame(&mut server, &mut fleet).is_none());
            fleet.players() == 3 && dummy.label(LABEL_PLAYERS).as_deref() == Some("3")
        }),
        "3 players reported (label {:?})",
        dummy.label(LABEL_PLAYERS)
    );
    let figures = dummy
        .annotation(kcpnet_agones::fleet::ANNOTATION_FIGURES)
        .expect("figures annotation");
    assert!(figures.starts_with("players="), "{figures}");
    players[2].client.disconnect();
    assert!(
        until(Duration::from_secs(5), || {
            players.iter_mut().for_each(Player::tick);
            assert!(frame(&mut server, &mut fleet).is_none());
            fleet.players() == 2
                && dummy.label(LABEL_PLAYERS).as_deref() == Some("2")
                && dummy
                    .annotation(kcpnet_agones::fleet::ANNOTATION_FIGURES)
                    .is_some_and(|f| f.starts_with("players=2 "))
        }),
        "the disconnect was reported (label {:?})",
        dummy.label(LABEL_PLAYERS)
    );
    players.truncate(2);
    let figures = dummy
        .annotation(kcpnet_agones::fleet::ANNOTATION_FIGURES)
        .unwrap();
    assert!(figures.starts_with("players=2 rtt_p50_ms="), "{figures}");

    // Queue a burst of reliable data to each remaining player, then let the clients run on
    // their own thread while this one drains.
    let ids: Vec<_> = server.connections().collect();
    assert_eq!(ids.len(), 2);
    let mut msg = vec![7u8; BURST_SIZE];
    for &id in &ids {
        for i in 0..BURST {
            msg[..4].copy_from_slice(&i.to_le_bytes());
            server.send(id, &msg, Channel::Reliable).unwrap();
        }
    }
    let queued: usize = ids.iter().map(|&id| server.send_backlog(id).unwrap()).sum();
    assert!(queued > 0);
    let clients = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end && players.iter().any(|p| p.reason.is_none()) {
            players.iter_mut().for_each(Player::tick);
            std::thread::sleep(Duration::from_millis(1));
        }
        players
    });

    // The GameServer is marked for shutdown: the loop sees it and drains.
    dummy.request_shutdown();
    let mut cause = None;
    assert!(until(Duration::from_secs(5), || {
        cause = frame(&mut server, &mut fleet);
        cause.is_some()
    }));
    assert_eq!(cause, Some(DrainCause::AgonesShutdown));
    let shutdowns_before = dummy.seen("Got shutdown call").len();
    assert_eq!(shutdowns_before, 0, "nobody called Shutdown() yet");
    let report = fleet.drain(&mut server, |_| {}).unwrap();
    assert!(report.clean, "every connection ended within the linger");
    assert_eq!(report.disconnected, 2);
    assert!(matches!(report.agones_shutdown, Some(Ok(()))));
    assert_eq!(server.connection_count(), 0);
    assert_eq!(fleet.players(), 0);

    let players = clients.join().unwrap();
    let shutdown_calls = dummy.seen("Got shutdown call");
    assert_eq!(shutdown_calls.len(), 1, "Shutdown() called once");
    for (i, p) in players.iter().enumerate() {
        assert!(
            is_reason(&p.reason, 1001, "server draining"),
            "player {i} got the drain's reason, not {:?}",
            p.reason
        );
        assert!(
            p.got_all(BURST),
            "player {i} got every queued message in order ({} of {BURST})",
            p.reliable.len()
        );
        assert!(
            p.ended_at.unwrap() <= shutdown_calls[0],
            "player {i} was drained before Shutdown() was called"
        );
    }
    assert_eq!(dummy.label(LABEL_DRAINING).as_deref(), Some("true"));
    assert_eq!(dummy.label(LABEL_PLAYERS).as_deref(), Some("0"));
}

#[test]
fn the_sdk_handle_reports_state_changes_and_a_shutdown_request_once() {
    let dummy = Dummy::start();
    let handle = agones(&dummy);
    handle.ready();
    let mut events = Vec::new();
    let poll = |events: &mut Vec<_>| {
        while let Some(e) = handle.poll_event() {
            events.push(e);
        }
    };
    assert!(until(Duration::from_secs(5), || {
        poll(&mut events);
        events.contains(&kcpnet_agones::AgonesEvent::StateChanged {
            state: "Ready".into(),
        })
    }));
    dummy.request_shutdown();
    assert!(until(Duration::from_secs(5), || {
        poll(&mut events);
        events.contains(&kcpnet_agones::AgonesEvent::ShutdownRequested)
    }));
    // The players list lives in Agones' Counters and Lists (beta) service, which dummy-agones
    // 0.1.2 does not serve: the call fails, and the failure is reported, not fatal.
    handle.player_connected("#0.0");
    assert!(until(Duration::from_secs(5), || {
        poll(&mut events);
        events.iter().any(|e| {
            matches!(
                e,
                kcpnet_agones::AgonesEvent::CallFailed {
                    call: "append_list_value",
                    ..
                }
            )
        })
    }));
    handle.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(dummy.seen("Got shutdown call").len(), 1);
    poll(&mut events);
    let shutdowns = events
        .iter()
        .filter(|e| **e == kcpnet_agones::AgonesEvent::ShutdownRequested)
        .count();
    assert_eq!(shutdowns, 1, "reported once: {events:?}");
}

#[test]
fn connect_fails_with_a_typed_error_when_no_sdk_server_answers() {
    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = AgonesHandle::connect(AgonesConfig {
        port: Some(port),
        connect_timeout: Duration::from_millis(500),
        ..AgonesConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(err, kcpnet_agones::AgonesError::Connect(_)),
        "{err:?}"
    );
}
