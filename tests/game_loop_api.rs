//! The surface a game loop touches every frame: waiting for work, replying while draining,
//! nothing lost at close, the Mirror preset and the mismatch reports, `Drop` for a client.
//! Virtual clock and memory network unless the OS matters (then loopback UDP).

mod common;

use std::time::{Duration, Instant};

use common::{payload, Sim};
use kcpnet::{
    Channel, Client, Config, ConnectionState, DisconnectReason, Error, ErrorCode, Event,
    OwnedEvent, Server,
};

/// How a test takes the server's events.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Form {
    Queue,
    Drain,
    Callback,
}

/// Ticks the server once, takes its events in `form`, echoing every message back (replies
/// to a connection that closed in this tick must fail with `ConnectionClosed`), and returns
/// the events with the results of the replies.
fn server_step(sim: &mut Sim, form: Form) -> (Vec<OwnedEvent>, Vec<Result<(), String>>) {
    let mut events = Vec::new();
    let mut replies = Vec::new();
    let mut reply = |r: Result<(), Error>| {
        replies.push(match r {
            Ok(()) => Ok(()),
            Err(Error::ConnectionClosed) => Err("closed".to_string()),
            Err(e) => Err(format!("{e:?}")),
        })
    };
    match form {
        Form::Queue => {
            sim.server.tick_incoming();
            let mut copies = Vec::new();
            while let Some(ev) = sim.server.poll_event() {
                events.push(ev.to_owned_event());
                if let Event::Data { id, channel, data } = ev {
                    copies.push((id, channel, data.to_vec()));
                }
            }
            for (id, ch, data) in copies {
                reply(sim.server.send(id, &data, ch));
            }
        }
        Form::Drain => {
            sim.server.tick_incoming();
            let mut drain = sim.server.drain_events();
            while let Some((ev, server)) = drain.next() {
                events.push(ev.to_owned_event());
                if let Event::Data { id, channel, data } = ev {
                    reply(server.send(id, data, channel));
                }
            }
        }
        Form::Callback => {
            sim.server.tick_incoming_with(|server, ev| {
                events.push(ev.to_owned_event());
                if let Event::Data { id, channel, data } = ev {
                    reply(server.send(id, data, channel));
                }
            });
        }
    }
    sim.server.tick_outgoing();
    (events, replies)
}

#[test]
fn reliable_data_sent_just_before_a_disconnect_is_delivered_first() {
    for form in [Form::Queue, Form::Drain, Form::Callback] {
        let mut sim = Sim::new(Config::default(), 11);
        sim.add_client(Config::default());
        sim.connect_all(1_000);
        let id = sim.server_id_of(0).unwrap();
        // Drain whatever the handshake left.
        server_step(&mut sim, form);
        let msgs: Vec<Vec<u8>> = (0..20)
            .map(|i| payload(0, i, 50 + 97 * i as usize))
            .collect();
        for m in &msgs {
            sim.clients[0].send(m, Channel::Reliable).unwrap();
        }
        // The data goes out, then the Disconnect, all before the server's next tick: they
        // arrive in one batch.
        sim.clients[0].tick_outgoing();
        sim.clients[0].disconnect();
        let (events, replies) = server_step(&mut sim, form);
        let data: Vec<&[u8]> = events
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Data { id: i, data, .. } if *i == id => Some(&data[..]),
                _ => None,
            })
            .collect();
        assert_eq!(data.len(), msgs.len(), "{form:?}: messages lost at close");
        for (got, want) in data.iter().zip(&msgs) {
            assert_eq!(got, &&want[..], "{form:?}");
        }
        assert!(
            matches!(
                events.last(),
                Some(OwnedEvent::Disconnected { id: i, reason: DisconnectReason::Remote }) if *i == id
            ),
            "{form:?}: Disconnected must come last: {events:?}"
        );
        // Replying to a connection that closed in this very tick is the distinct,
        // non-fatal ConnectionClosed.
        assert_eq!(replies.len(), msgs.len());
        assert!(
            replies.iter().all(|r| matches!(r, Err(e) if e == "closed")),
            "{form:?}: {replies:?}"
        );
        assert_eq!(sim.server.connection_count(), 0);
    }
}

#[test]
fn drain_replies_without_copying_and_sees_events_raised_while_draining() {
    let mut sim = Sim::new(Config::default(), 12);
    for _ in 0..3 {
        sim.add_client(Config::default());
    }
    sim.connect_all(1_000);
    server_step(&mut sim, Form::Drain);
    for (i, c) in sim.clients.iter_mut().enumerate() {
        c.send(format!("hello {i}").as_bytes(), Channel::Reliable)
            .unwrap();
        c.send(b"KICK", Channel::Reliable).unwrap();
        c.send(b"after kick", Channel::Reliable).unwrap();
        c.tick_outgoing();
    }
    sim.server.tick_incoming();
    let mut seen = Vec::new();
    let mut drain = sim.server.drain_events();
    while let Some((ev, server)) = drain.next() {
        match ev {
            Event::Data { id, data, .. } if data == b"KICK" => {
                server.disconnect(id).unwrap();
                assert_eq!(server.state(id), None);
                seen.push(format!("kick {}", id.index()));
            }
            Event::Data { id, channel, data } => {
                server.send(id, data, channel).unwrap();
                seen.push(format!("data {}", String::from_utf8_lossy(data)));
            }
            Event::Disconnected { reason, .. } => seen.push(format!("left {reason:?}")),
            other => seen.push(format!("{other:?}")),
        }
    }
    drop(drain);
    // Each client: its hello is echoed, the kick disconnects it, "after kick" is discarded,
    // and the Disconnected raised by the handler's own call is handed out by the same drain.
    assert_eq!(
        seen.iter().filter(|s| s.starts_with("data hello")).count(),
        3
    );
    assert_eq!(seen.iter().filter(|s| s.starts_with("kick")).count(), 3);
    assert_eq!(seen.iter().filter(|s| *s == "left Local").count(), 3);
    assert!(!seen.iter().any(|s| s.contains("after kick")), "{seen:?}");
    assert_eq!(sim.server.pending_events(), 0);
}

#[test]
fn a_drain_dropped_early_keeps_the_rest_for_later() {
    let mut sim = Sim::new(Config::default(), 13);
    sim.add_client(Config::default());
    sim.connect_all(1_000);
    server_step(&mut sim, Form::Queue);
    for i in 0..10 {
        sim.clients[0]
            .send(&payload(0, i, 100), Channel::Reliable)
            .unwrap();
    }
    sim.clients[0].tick_outgoing();
    sim.server.tick_incoming();
    let mut got = Vec::new();
    {
        let mut drain = sim.server.drain_events();
        for _ in 0..4 {
            let (ev, _) = drain.next().unwrap();
            if let Event::Data { data, .. } = ev {
                got.push(data.to_vec());
            }
        }
    }
    assert_eq!(sim.server.pending_events(), 6);
    while let Some(ev) = sim.server.poll_event() {
        if let Event::Data { data, .. } = ev {
            got.push(data.to_vec());
        }
    }
    let want: Vec<Vec<u8>> = (0..10).map(|i| payload(0, i, 100)).collect();
    assert_eq!(got, want);
}

#[test]
fn poll_delay_is_never_in_the_past_and_none_when_nothing_is_scheduled() {
    let mut sim = Sim::new(Config::default(), 14);
    assert_eq!(
        sim.server.poll_delay(),
        None,
        "a fresh server has no timers"
    );
    sim.add_client(Config::default());
    // A client that has not started yet must tick at once (its Hello).
    assert!(sim.clients[0].poll_delay().is_some());
    sim.connect_all(1_000);
    for _ in 0..3_000 {
        sim.step();
        let s = sim
            .server
            .poll_delay()
            .expect("a connected peer has timers");
        let c = sim.clients[0]
            .poll_delay()
            .expect("a connected client has timers");
        // Between steps the client's next deadline is at most a keepalive interval away
        // (3 s between kcpnet ends); the server's at most two (its own Ping waits while the
        // client's Pings arrive).
        assert!(s <= Duration::from_millis(6_000), "{s:?}");
        assert!(c <= Duration::from_millis(3_000), "{c:?}");
    }
    // Let the clock run past every deadline without ticking: never negative, just zero.
    sim.clock.advance(Duration::from_secs(30));
    assert_eq!(sim.server.poll_delay(), Some(Duration::ZERO));
    // Events waiting count as work due now.
    sim.clients[0].send(b"x", Channel::Reliable).unwrap();
    sim.clients[0].tick_outgoing();
    sim.server.tick_incoming();
    assert!(sim.server.pending_events() > 0);
    assert_eq!(sim.server.poll_delay(), Some(Duration::ZERO));
    while sim.server.poll_event().is_some() {}
    // After the client disconnects, its poll_delay is None (the bug was a time in the past
    // forever, which made a sleep-until loop spin), and the server's timers go away too.
    sim.clients[0].disconnect();
    while sim.clients[0].poll_event().is_some() {}
    assert_eq!(sim.clients[0].poll_delay(), None);
    for _ in 0..10 {
        sim.step();
    }
    assert_eq!(sim.server.connection_count(), 0);
    sim.server.tick_outgoing();
    sim.clock.advance(Duration::from_secs(120));
    sim.server.tick_incoming();
    assert_eq!(
        sim.server.poll_delay(),
        None,
        "no connections, nothing scheduled"
    );
    // Over the memory network `wait` returns at once whatever `max` is.
    sim.server.wait(Duration::from_secs(3600)).unwrap();
    sim.clients[0].wait(Duration::from_secs(3600)).unwrap();
}

#[test]
fn wait_returns_on_a_datagram_and_on_a_timer_over_udp() {
    let mut server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
    let port = server.local_addr().unwrap().port();
    let mut client = Client::connect(("127.0.0.1", port), Config::default()).unwrap();
    let started = Instant::now();
    let mut connected = false;
    for _ in 0..2_000 {
        client.tick_incoming();
        while client.poll_event().is_some() {}
        client.tick_outgoing();
        server.tick_incoming();
        while server.poll_event().is_some() {}
        server.tick_outgoing();
        if client.is_connected() && server.connection_count() == 1 {
            connected = true;
            break;
        }
        server.wait(Duration::from_millis(5)).unwrap();
    }
    assert!(connected, "no connection after {:?}", started.elapsed());
    // A datagram wakes the server although its max is an hour.
    client.send(b"wake up", Channel::Reliable).unwrap();
    client.tick_outgoing();
    server.tick_outgoing();
    let mut got = false;
    for _ in 0..50 {
        server.wait(Duration::from_secs(3600)).unwrap();
        server.tick_incoming();
        while let Some(ev) = server.poll_event() {
            got |= matches!(
                ev,
                Event::Data {
                    data: b"wake up",
                    ..
                }
            );
        }
        server.tick_outgoing();
        if got {
            break;
        }
    }
    assert!(got, "the datagram never arrived");
    // With nothing arriving, the next timer (a ping, at most a second away) ends the wait
    // long before `max`: the wait returns with work due.
    let delay = server.poll_delay().expect("a connected peer has timers");
    assert!(delay <= Duration::from_millis(1_000), "{delay:?}");
    let before = Instant::now();
    server.wait(Duration::from_secs(3600)).unwrap();
    let waited = before.elapsed();
    assert!(
        waited < Duration::from_secs(600),
        "wait ignored the timer: {waited:?}"
    );
}

#[test]
fn dropping_a_connected_client_tells_the_server_at_once() {
    let mut sim = Sim::new(Config::default(), 15);
    sim.add_client(Config::default());
    sim.add_client(Config::default());
    sim.connect_all(1_000);
    let gone = sim.server_id_of(0).unwrap();
    let client = sim.clients.remove(0);
    drop(client);
    sim.client_events.remove(0);
    let mut left = None;
    for step in 0..20 {
        sim.step();
        if let Some(OwnedEvent::Disconnected { reason, .. }) = sim
            .server_events
            .iter()
            .find(|e| matches!(e, OwnedEvent::Disconnected { id, .. } if *id == gone))
        {
            left = Some((step, *reason));
            break;
        }
    }
    assert_eq!(
        left.map(|(_, r)| r),
        Some(DisconnectReason::Remote),
        "the server did not hear of the drop within 20 ms (it would wait for its timeout)"
    );
    assert_eq!(sim.server.connection_count(), 1);
}

#[test]
fn mirror_preset_moves_the_largest_mirror_message() {
    let mut sim = Sim::new(Config::mirror(), 16);
    sim.add_client(Config::mirror());
    sim.connect_all(1_000);
    let max = Config::mirror().reliable_max_message_size();
    assert_eq!(max, 297_433);
    let big = payload(7, 1, max);
    sim.clients[0].send(&big, Channel::Reliable).unwrap();
    let ok = sim.run_until(5_000, |s| {
        s.server_events
            .iter()
            .any(|e| matches!(e, OwnedEvent::Data { data, .. } if data.len() == max))
    });
    assert!(ok, "the largest message did not arrive");
    let got = sim
        .server_events
        .iter()
        .find_map(|e| match e {
            OwnedEvent::Data { data, .. } if data.len() == max => Some(data.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(got, big);
    assert!(sim.clients[0].is_connected());
}

fn server_error(sim: &Sim) -> Option<(ErrorCode, String)> {
    sim.server_events.iter().find_map(|e| match e {
        OwnedEvent::Error { code, message, .. } => Some((*code, message.clone())),
        _ => None,
    })
}

#[test]
fn a_receive_window_mismatch_names_both_windows() {
    // A stock Mirror client (windows 4096) against a server on kcp2k's defaults (128).
    let mut sim = Sim::new(Config::default(), 17);
    sim.add_client(Config::mirror());
    sim.connect_all(1_000);
    let big = payload(1, 1, 200_000);
    sim.clients[0].send(&big, Channel::Reliable).unwrap();
    let failed = sim.run_until(5_000, |s| server_error(s).is_some());
    assert!(failed, "no error on the server");
    let (code, message) = server_error(&sim).unwrap();
    assert_eq!(code, ErrorCode::InvalidReceive);
    assert!(
        message.contains("4096") && message.contains("128"),
        "the message should name both windows: {message}"
    );
    assert!(message.contains("receive_window_size"), "{message}");
}

#[test]
fn an_mtu_mismatch_names_both_mtus() {
    let mut sim = Sim::new(Config::default(), 18);
    sim.add_client(Config {
        mtu: 1400,
        ..Config::default()
    });
    sim.connect_all(1_000);
    sim.clients[0]
        .send(&payload(2, 1, 5_000), Channel::Reliable)
        .unwrap();
    let failed = sim.run_until(2_000, |s| server_error(s).is_some());
    assert!(failed, "no error on the server");
    let (code, message) = server_error(&sim).unwrap();
    assert_eq!(code, ErrorCode::InvalidReceive);
    assert!(
        message.contains("1400") && message.contains("1200"),
        "the message should name both mtus: {message}"
    );
    assert_eq!(sim.clients[0].state(), ConnectionState::Disconnected);
}

#[test]
fn callback_contexts_offer_the_whole_endpoint() {
    let mut sim = Sim::new(Config::default(), 19);
    sim.add_client(Config::default());
    sim.connect_all(1_000);
    sim.clients[0].send(b"ping", Channel::Reliable).unwrap();
    sim.clients[0].tick_outgoing();
    let mut backlog = None;
    sim.server.tick_incoming_with(|server, ev| {
        if let Event::Data { id, .. } = ev {
            assert!(server.is_connected(id));
            backlog = server.send_backlog(id);
        }
    });
    assert!(backlog.is_some());
    sim.server
        .send(sim.server_id_of(0).unwrap(), b"pong", Channel::Reliable)
        .unwrap();
    sim.server.tick_outgoing();
    let mut client_saw = None;
    sim.clients[0].tick_incoming_with(|client, ev| {
        if let Event::Data { .. } = ev {
            client_saw = Some((client.is_connected(), client.send_backlog()));
        }
    });
    assert_eq!(client_saw.map(|(c, _)| c), Some(true));
}
