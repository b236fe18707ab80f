//! Per-send flags (`SendFlags`): `FLUSH` leaves within the call (counted on the memory
//! network, and seen arriving over loopback UDP with the batching socket), `NO_DELAY` drops
//! and counts instead of failing and never queues, and the typed errors. Virtual clock and
//! memory network unless the socket matters.

mod common;

use std::time::{Duration, Instant};

use common::Sim;
use kcpnet::{Channel, Client, Config, Error, Event, Fec, SendFlags, Server};

fn sent(sim: &Sim) -> u64 {
    sim.net.stats().sent
}

#[test]
fn flush_sends_within_the_call_and_plain_send_waits_for_the_tick() {
    let mut sim = Sim::new(Config::default(), 1);
    let c = sim.add_client(Config::default());
    sim.connect_all(1_000);
    let sid = sim.server_id_of(c).unwrap();
    // Let every ACK of the handshake settle.
    sim.run_for(Duration::from_millis(100));

    // Plain reliable send: nothing leaves until tick_outgoing.
    let before = sent(&sim);
    sim.clients[c].send(b"plain", Channel::Reliable).unwrap();
    sim.server.send(sid, b"plain", Channel::Reliable).unwrap();
    assert_eq!(
        sent(&sim),
        before,
        "a plain reliable send left before the tick"
    );
    sim.step();
    assert!(sent(&sim) >= before + 2);

    // FLUSH: the datagram is on the network when the call returns, on both drivers.
    let before = sent(&sim);
    sim.clients[c]
        .send_with(b"now", Channel::Reliable, SendFlags::FLUSH)
        .unwrap();
    assert_eq!(sent(&sim), before + 1, "FLUSH did not send within the call");
    sim.server
        .send_with(sid, b"now too", Channel::Reliable, SendFlags::FLUSH)
        .unwrap();
    assert_eq!(sent(&sim), before + 2);

    // Everything queued before a FLUSH goes with it, in order.
    let before = sent(&sim);
    sim.clients[c].send(b"first", Channel::Reliable).unwrap();
    sim.clients[c].send(b"second", Channel::Reliable).unwrap();
    assert_eq!(sent(&sim), before);
    sim.clients[c]
        .send_with(b"third", Channel::Reliable, SendFlags::FLUSH)
        .unwrap();
    assert!(sent(&sim) > before);
    sim.run_for(Duration::from_millis(200));
    let got: Vec<Vec<u8>> = common::data_of(&sim.server_events, Some(sid))
        .into_iter()
        .map(|(_, d)| d.to_vec())
        .collect();
    let want: Vec<&[u8]> = vec![b"plain", b"now", b"first", b"second", b"third"];
    assert_eq!(got, want);
    let to_client: Vec<Vec<u8>> = common::data_of(&sim.client_events[c], None)
        .into_iter()
        .map(|(_, d)| d.to_vec())
        .collect();
    assert_eq!(to_client, vec![b"plain".to_vec(), b"now too".to_vec()]);
}

#[test]
fn flush_sends_the_open_fec_group_parity_within_the_call() {
    let fec = Config {
        fec: Fec::Fixed { data: 8, parity: 1 },
        ..Config::default()
    };
    let mut sim = Sim::new(Config::default(), 2);
    let c = sim.add_client(fec);
    sim.connect_all(1_000);
    sim.run_for(Duration::from_millis(100));
    let parity = |sim: &Sim| sim.clients[c].connection_stats().fec_parity_sent;
    let before = (sent(&sim), parity(&sim));
    // One unreliable message opens a group; a plain send leaves its parity for the tick.
    sim.clients[c].send(b"u", Channel::Unreliable).unwrap();
    assert_eq!(parity(&sim), before.1);
    sim.clients[c]
        .send_with(b"v", Channel::Unreliable, SendFlags::FLUSH)
        .unwrap();
    assert_eq!(parity(&sim), before.1 + 1, "the group's parity waited");
    // Both messages shared one coalesced datagram (one data shard), then its parity.
    assert_eq!(sent(&sim), before.0 + 2);
    sim.run_for(Duration::from_millis(50));
    let sid = sim.server_id_of(c).unwrap();
    let got: Vec<&[u8]> = common::data_of(&sim.server_events, Some(sid))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(got, vec![&b"u"[..], &b"v"[..]]);
}

#[test]
fn no_delay_drops_and_counts_while_connecting_and_never_blocks() {
    let mut sim = Sim::new(Config::default(), 3);
    let c = sim.add_client(Config::default());
    // Before the handshake completes: plain send refuses, NO_DELAY drops and counts.
    assert!(matches!(
        sim.clients[c].send(b"pos", Channel::Unreliable),
        Err(Error::NotConnected)
    ));
    let before = sent(&sim);
    for _ in 0..10 {
        sim.clients[c]
            .send_with(b"pos", Channel::Unreliable, SendFlags::NO_DELAY)
            .unwrap();
    }
    assert_eq!(sent(&sim), before, "a NO_DELAY message was sent or queued");
    assert_eq!(
        sim.clients[c]
            .connection_stats()
            .unreliable_dropped_no_delay,
        10
    );
    // Nothing of them arrives once connected.
    sim.connect_all(1_000);
    sim.run_for(Duration::from_millis(100));
    assert!(common::data_of(&sim.server_events, None).is_empty());
    // Connected: NO_DELAY messages go out like any other.
    sim.clients[c]
        .send_with(
            b"pos",
            Channel::Unreliable,
            SendFlags::NO_DELAY | SendFlags::FLUSH,
        )
        .unwrap();
    sim.run_for(Duration::from_millis(20));
    assert_eq!(common::data_of(&sim.server_events, None).len(), 1);
    assert_eq!(
        sim.clients[c]
            .connection_stats()
            .unreliable_dropped_no_delay,
        10
    );
}

#[test]
fn flag_misuse_and_bad_messages_are_typed_errors() {
    let mut sim = Sim::new(Config::default(), 4);
    let c = sim.add_client(Config::default());
    // Bad arguments are errors even where NO_DELAY would drop.
    assert!(matches!(
        sim.clients[c].send_with(b"", Channel::Unreliable, SendFlags::NO_DELAY),
        Err(Error::EmptyMessage)
    ));
    let big = vec![0u8; 100_000];
    assert!(matches!(
        sim.clients[c].send_with(&big, Channel::Unreliable, SendFlags::NO_DELAY),
        Err(Error::MessageTooLarge { .. })
    ));
    sim.connect_all(1_000);
    assert!(matches!(
        sim.clients[c].send_with(b"x", Channel::Reliable, SendFlags::NO_DELAY),
        Err(Error::InvalidArgument(_))
    ));
    // A closed connection stays an error with any flag.
    sim.clients[c].disconnect();
    assert!(matches!(
        sim.clients[c].send_with(b"x", Channel::Unreliable, SendFlags::NO_DELAY),
        Err(Error::ConnectionClosed)
    ));
}

/// Over loopback UDP with the default batching socket: a FLUSH message reaches the server
/// although the client never ticks again.
#[test]
fn flush_leaves_a_batching_udp_socket_within_the_call() {
    let mut server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = Client::connect(addr, Config::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(client.is_connected() && server.connection_count() == 1) {
        assert!(Instant::now() < deadline, "no connection within 10 s");
        server.tick_incoming();
        while server.poll_event().is_some() {}
        server.tick_outgoing();
        client.tick_incoming();
        while client.poll_event().is_some() {}
        client.tick_outgoing();
        std::thread::sleep(Duration::from_millis(1));
    }
    client
        .send_with(b"urgent", Channel::Reliable, SendFlags::FLUSH)
        .unwrap();
    // From here on only the server runs.
    let mut got = None;
    while got.is_none() {
        assert!(Instant::now() < deadline, "the FLUSH message never arrived");
        let _ = server.wait(Duration::from_millis(50));
        server.tick_incoming();
        while let Some(ev) = server.poll_event() {
            if let Event::Data { data, .. } = ev {
                got = Some(data.to_vec());
            }
        }
    }
    assert_eq!(got.as_deref(), Some(&b"urgent"[..]));
}
