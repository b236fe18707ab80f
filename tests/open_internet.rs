//! Fit for the open internet: send backpressure, the client's handshake against forged
//! datagrams, and the per-connection memory bound against a lying peer. Virtual clock,
//! memory network.

mod common;

use std::time::Duration;

use common::{payload, Sim, SERVER_ADDR};
use kcpnet::io::{ManualClock, MemoryNetwork, Transport};
use kcpnet::{Channel, Client, Config, ConnectionState, Error, ErrorCode, Event, OwnedEvent};

/// The server answers a trigger message with a burst of up to `burst` 1000-byte reliable
/// messages, sent while it holds the event in a drain, until the first send fails. Returns
/// how many were accepted and the error.
fn burst_from_drain(sim: &mut Sim, burst: u64) -> (u64, Option<Error>) {
    let mut accepted = 0u64;
    let mut error = None;
    sim.server.tick_incoming();
    let mut drain = sim.server.drain_events();
    while let Some((ev, server)) = drain.next() {
        if let Event::Data { id, .. } = ev {
            for seq in 0..burst {
                match server.send(id, &payload(1, seq, 1000), Channel::Reliable) {
                    Ok(()) => accepted += 1,
                    Err(e) => {
                        assert_eq!(server.send_capacity(id), Some(0));
                        assert!(server.is_connected(id), "backpressure must not disconnect");
                        error = Some(e);
                        break;
                    }
                }
            }
        }
    }
    drop(drain);
    sim.server.tick_outgoing();
    (accepted, error)
}

fn connected_pair(config: Config, seed: u64) -> Sim {
    let mut sim = Sim::new(config.clone(), seed);
    sim.add_client(config);
    sim.connect_all(1_000);
    sim
}

/// Ticks until the client received `n` reliable messages (or `max_steps` pass) and returns
/// them in arrival order.
fn client_receives(sim: &mut Sim, n: usize, max_steps: u64) -> Vec<Vec<u8>> {
    sim.run_until(max_steps, |s| {
        s.client_events[0]
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    OwnedEvent::Data {
                        channel: Channel::Reliable,
                        ..
                    }
                )
            })
            .count()
            >= n
    });
    sim.client_events[0]
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data {
                channel: Channel::Reliable,
                data,
                ..
            } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn backpressure_in_the_drain_form() {
    let config = Config {
        send_queue_limit: 200 * 1024,
        ..Config::default()
    };
    let mut sim = connected_pair(config.clone(), 31);
    sim.clients[0].send(b"go", Channel::Reliable).unwrap();
    sim.clients[0].tick_outgoing();
    let (accepted, error) = burst_from_drain(&mut sim, 50_000);
    let Some(Error::SendQueueFull { queued, limit }) = error else {
        panic!("expected SendQueueFull, got {error:?} after {accepted} sends");
    };
    assert_eq!(limit, config.send_queue_limit);
    assert!(queued >= limit, "{queued} < {limit}");
    // Never more than the limit plus one message (each 1000-byte message is one segment).
    assert!(queued <= limit + config.kcp_mss(), "{queued}");
    assert_eq!(
        Error::SendQueueFull { queued, limit }.code(),
        ErrorCode::SendQueueFull
    );
    // Everything accepted arrives, in order; nothing was lost or disconnected.
    let got = client_receives(&mut sim, accepted as usize, 60_000);
    assert_eq!(got.len(), accepted as usize);
    for (seq, m) in got.iter().enumerate() {
        assert_eq!(m, &payload(1, seq as u64, 1000));
    }
    let id = sim.server_id_of(0).unwrap();
    assert_eq!(sim.server.state(id), Some(ConnectionState::Connected));
    sim.run_for(Duration::from_millis(100)); // the last ACKs
    assert_eq!(sim.server.send_capacity(id), Some(config.send_queue_limit));
    assert!(!sim.server_events.iter().any(|e| matches!(
        e,
        OwnedEvent::Disconnected { .. } | OwnedEvent::Error { .. }
    )));
}

#[test]
fn backpressure_in_the_callback_form() {
    let config = Config {
        send_queue_limit: 100 * 1024,
        ..Config::default()
    };
    let mut sim = connected_pair(config.clone(), 32);
    sim.clients[0].send(b"go", Channel::Reliable).unwrap();
    sim.clients[0].tick_outgoing();
    let mut accepted = 0u64;
    let mut error = None;
    sim.server.tick_incoming_with(|server, ev| {
        if let Event::Data { id, .. } = ev {
            for seq in 0..50_000 {
                match server.send(id, &payload(2, seq, 1000), Channel::Reliable) {
                    Ok(()) => accepted += 1,
                    Err(e) => {
                        assert!(server.is_connected(id));
                        error = Some(e);
                        break;
                    }
                }
            }
        }
    });
    sim.server.tick_outgoing();
    assert!(
        matches!(error, Some(Error::SendQueueFull { .. })),
        "{error:?}"
    );
    let expected = (config.send_queue_limit / config.kcp_mss()) as u64;
    assert!(
        (expected..=expected + 1).contains(&accepted),
        "{accepted} accepted for a limit of {expected} segments"
    );
    let got = client_receives(&mut sim, accepted as usize, 60_000);
    assert_eq!(got.len(), accepted as usize);
    assert!(got
        .iter()
        .enumerate()
        .all(|(seq, m)| m == &payload(2, seq as u64, 1000)));
}

#[test]
fn client_backpressure_and_capacity() {
    let config = Config {
        send_queue_limit: 64 * 1024,
        ..Config::default()
    };
    let mut sim = connected_pair(config.clone(), 33);
    assert_eq!(sim.clients[0].send_capacity(), config.send_queue_limit);
    let mut accepted = 0;
    let err = loop {
        match sim.clients[0].send(&payload(3, accepted, 5000), Channel::Reliable) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "no backpressure");
    };
    assert!(matches!(err, Error::SendQueueFull { .. }), "{err:?}");
    assert_eq!(sim.clients[0].send_capacity(), 0);
    assert!(sim.clients[0].is_connected());
    // Unreliable sends are not queued, so they still go out.
    sim.clients[0]
        .send(b"position", Channel::Unreliable)
        .unwrap();
    sim.run_until(20_000, |s| {
        s.server_events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    OwnedEvent::Data {
                        channel: Channel::Reliable,
                        ..
                    }
                )
            })
            .count()
            >= accepted as usize
    });
    assert_eq!(sim.clients[0].send_capacity(), config.send_queue_limit);
}

/// A raw socket at the server's address plays a server that forges datagrams to a client.
#[test]
fn a_connecting_client_ignores_a_disconnect_before_it_has_the_cookie() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr = SERVER_ADDR.parse().unwrap();
    let mut fake_server = net.bind(server_addr).unwrap();
    let mut client = Client::with_transport(
        Box::new(net.bind("10.0.9.9:5000".parse().unwrap()).unwrap()),
        Box::new(clock.clone()),
        server_addr,
        Config::default(),
    )
    .unwrap();
    client.tick_outgoing(); // the Hello goes out
    let mut buf = [0u8; 1500];
    let (_, client_addr) = fake_server
        .recv_from(&mut buf, clock.now())
        .unwrap()
        .expect("the client's Hello");
    // Forged unreliable Disconnects with a made-up cookie (and with cookie 0).
    for d in [[2u8, 0x44, 0x33, 0x22, 0x11, 5], [2, 0, 0, 0, 0, 5]] {
        fake_server.send_to(&d, client_addr, clock.now()).unwrap();
    }
    client.tick_incoming();
    assert!(
        client.poll_event().is_none(),
        "a forged Disconnect was taken"
    );
    assert_eq!(client.state(), ConnectionState::Connecting);
    clock.advance(Duration::from_millis(10));
    client.tick_outgoing();
    assert_eq!(client.state(), ConnectionState::Connecting);
}
