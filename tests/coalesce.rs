//! Coalesced unreliable messages between sans-IO endpoints (virtual time, every datagram
//! tapped): small messages of one tick share datagrams and still arrive as separate events
//! in order, a kcp2k peer still gets one datagram per message, a lost datagram loses its
//! messages together, the 60 Hz state-update workload's datagram count, and hostile
//! coalesced datagrams dropped and counted.

#[path = "common/net.rs"]
mod net;

use std::net::SocketAddr;

use kcpnet::{Channel, Config, Extensions, OwnedEvent};
use net::Net;

const CLIENT: &str = "10.0.0.2:5000";

/// A server with `server` config and one connected client with `client` config.
fn pair(server: Config, client: Config, loss: f64) -> (Net, usize) {
    let mut net = Net::new(server, 5, loss, 10);
    let c = net.add_plain(CLIENT, client);
    assert!(net.run_until(5_000, |n| n.connected(c)));
    net.run(200);
    (net, c)
}

/// Sends `msgs` unreliable messages from the server to the client within one tick, then
/// ends the tick (flush) and ships what left.
fn server_tick(net: &mut Net, msgs: &[Vec<u8>]) {
    let sid = net.server_id_of(CLIENT.parse().unwrap()).unwrap();
    let now = net.now();
    let mut out = std::mem::take(&mut net.out);
    for m in msgs {
        net.server
            .send(now, sid, m, Channel::Unreliable, &mut out)
            .unwrap();
    }
    net.server.flush(now, &mut out);
    net.out = out;
    let s = net.server_addr;
    net.ship(s);
}

/// Unreliable data datagrams the server sent to the client (channel 2, header Data or
/// Batch: not the quality reports), from tap entry `from` on.
fn unreliable_to_client(net: &Net, from: usize) -> Vec<Vec<u8>> {
    let to: SocketAddr = CLIENT.parse().unwrap();
    net.tap[from..]
        .iter()
        .filter(|(f, t, d)| {
            *f == net.server_addr && *t == to && d[0] == 2 && matches!(d.get(5), Some(4 | 0x14))
        })
        .map(|(_, _, d)| d.clone())
        .collect()
}

/// The unreliable messages the client received, in order.
fn client_got(net: &Net, c: usize) -> Vec<Vec<u8>> {
    net.peers[c]
        .events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data {
                channel: Channel::Unreliable,
                data,
                ..
            } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn msgs(n: usize, len: usize, tag: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut m = vec![tag; len];
            m[0] = i as u8;
            m
        })
        .collect()
}

#[test]
fn small_messages_of_a_tick_share_datagrams_and_arrive_one_by_one_in_order() {
    let (mut net, c) = pair(Config::default(), Config::default(), 0.0);
    let sid = net.server_id_of(CLIENT.parse().unwrap()).unwrap();
    assert!(net
        .server
        .extensions(sid)
        .unwrap()
        .contains(Extensions::COALESCE));
    let tap0 = net.tap.len();
    // 10 messages of 40 bytes: one datagram.
    let sent = msgs(10, 40, 0xA1);
    server_tick(&mut net, &sent);
    let datagrams = unreliable_to_client(&net, tap0);
    assert_eq!(datagrams.len(), 1);
    assert_eq!(datagrams[0][5], 0x14, "a coalesced datagram");
    net.run(50);
    assert_eq!(client_got(&net, c), sent);

    // 100 messages of 100 bytes: as few datagrams as the MTU allows, none over it.
    let mtu = Config::default().mtu;
    let room = Config::default().unreliable_max_message_size();
    let tap1 = net.tap.len();
    let sent2 = msgs(100, 100, 0xB2);
    server_tick(&mut net, &sent2);
    let datagrams = unreliable_to_client(&net, tap1);
    let per = room / 102;
    assert_eq!(datagrams.len(), 100usize.div_ceil(per));
    assert!(datagrams.iter().all(|d| d.len() <= mtu));
    net.run(50);
    let got = client_got(&net, c);
    assert_eq!(&got[10..], &sent2[..]);

    // A message too large to share goes alone, after what was batched before it.
    let tap2 = net.tap.len();
    let big = vec![vec![7u8; room - 1]];
    let mut mixed = msgs(3, 10, 0xC3);
    mixed.extend(big);
    mixed.extend(msgs(2, 10, 0xD4));
    server_tick(&mut net, &mixed);
    assert_eq!(unreliable_to_client(&net, tap2).len(), 3);
    net.run(50);
    assert_eq!(&client_got(&net, c)[110..], &mixed[..]);
    // A lone message is a plain kcp2k datagram (header 4), not a batch of one.
    let tap3 = net.tap.len();
    server_tick(&mut net, &msgs(1, 20, 0xE5));
    let lone = unreliable_to_client(&net, tap3);
    assert_eq!((lone.len(), lone[0][5]), (1, 4));
}

#[test]
fn kcp2k_peers_and_coalescing_off_get_one_datagram_per_message() {
    for (server, client) in [
        // A kcp2k client (no extensions): the server must not coalesce to it.
        (
            Config::default(),
            Config {
                kcpnet_extensions: false,
                ..Config::default()
            },
        ),
        // Both kcpnet, the server's coalescing off.
        (
            Config {
                coalesce_unreliable: false,
                ..Config::default()
            },
            Config::default(),
        ),
    ] {
        let (mut net, c) = pair(server, client, 0.0);
        let tap0 = net.tap.len();
        let sent = msgs(10, 40, 0x11);
        server_tick(&mut net, &sent);
        let datagrams = unreliable_to_client(&net, tap0);
        assert_eq!(datagrams.len(), 10);
        assert!(datagrams.iter().all(|d| d[5] == 4));
        net.run(50);
        assert_eq!(client_got(&net, c), sent);
    }
}

#[test]
fn a_lost_datagram_loses_its_messages_together() {
    let (mut net, c) = pair(Config::default(), Config::default(), 0.0);
    // Each tick: 5 messages in one datagram, on a link that loses 30%.
    net.loss = 0.3;
    let mut sent_ticks = Vec::new();
    for tick in 0..200u32 {
        let batch: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                let mut m = tick.to_le_bytes().to_vec();
                m.push(i);
                m
            })
            .collect();
        server_tick(&mut net, &batch);
        sent_ticks.push(batch);
        net.run(16);
    }
    net.loss = 0.0;
    net.run(100);
    let got = client_got(&net, c);
    // Every tick arrived whole or not at all.
    let mut whole = 0;
    for batch in &sent_ticks {
        let n = got.iter().filter(|m| batch.contains(m)).count();
        assert!(n == 0 || n == 5, "a tick's batch arrived in part: {n} of 5");
        whole += usize::from(n == 5);
    }
    assert!(whole > 100 && whole < 180, "{whole} of 200 ticks arrived");
}

/// The 60 Hz state-update workload: each tick the server sends 12 entity updates of 32
/// bytes to the client for 1 s of virtual time. Datagrams per second with and without
/// coalescing (deterministic on the memory network).
#[test]
fn sixty_hz_state_updates_take_one_datagram_per_tick() {
    let mut per_second = Vec::new();
    for coalesce in [false, true] {
        let config = Config {
            coalesce_unreliable: coalesce,
            ..Config::default()
        };
        let (mut net, c) = pair(config, Config::default(), 0.0);
        let tap0 = net.tap.len();
        for tick in 0..60u8 {
            server_tick(&mut net, &msgs(12, 32, tick));
            net.run(16);
        }
        per_second.push(unreliable_to_client(&net, tap0).len());
        net.run(50);
        assert_eq!(client_got(&net, c).len(), 60 * 12);
    }
    assert_eq!(per_second, vec![720, 60]);
}

#[test]
fn malformed_coalesced_datagrams_are_dropped_and_counted() {
    let (mut net, c) = pair(Config::default(), Config::default(), 0.0);
    let from: SocketAddr = CLIENT.parse().unwrap();
    // The connection's cookie, from a datagram the client sent.
    let cookie: [u8; 4] = net
        .tap
        .iter()
        .rev()
        .find(|(f, _, d)| *f == from && d.len() > 5)
        .map(|(_, _, d)| d[1..5].try_into().unwrap())
        .unwrap();
    let sid = net.server_id_of(from).unwrap();
    let dropped0 = net.server.connection_stats(sid).unwrap().datagrams_dropped;
    let bad: [&[u8]; 5] = [
        &[],                 // no entry
        &[0, 0],             // a length of 0
        &[9, 0, 1, 2],       // past the end
        &[1, 0, 7, 3],       // a dangling byte
        &[2, 0, 1, 1, 0xFF], // a complete entry, then a dangling byte
    ];
    for body in bad {
        let mut d = vec![2];
        d.extend_from_slice(&cookie);
        d.push(0x14);
        d.extend_from_slice(body);
        net.inject(from, &d);
    }
    net.run(20);
    assert!(net.server_data().is_empty(), "a malformed batch delivered");
    let st = net.server.connection_stats(sid).unwrap();
    assert_eq!(st.datagrams_dropped - dropped0, 5);
    // The connection lives on and a good batch still works.
    assert!(net.server.is_connected(sid) && net.connected(c));
    let mut good = vec![2];
    good.extend_from_slice(&cookie);
    good.extend_from_slice(&[0x14, 1, 0, b'a', 2, 0, b'b', b'c']);
    net.inject(from, &good);
    net.run(5);
    assert_eq!(net.server_data(), vec![b"a".to_vec(), b"bc".to_vec()]);
}
