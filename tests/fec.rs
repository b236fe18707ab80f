//! Forward error correction between sans-IO endpoints over a lossy, delayed network
//! (virtual time): lost datagrams rebuilt from parity without a round trip, losses beyond
//! the parity left to ARQ, nothing lost or duplicated, FEC never used with a peer that did
//! not negotiate it, and FEC inside secure sessions.
#![cfg(feature = "fec")]

#[path = "common/net.rs"]
mod net;

use kcpnet::{Channel, Config, Extensions, Fec, OwnedEvent};
use net::Net;

fn fec(data: u8, parity: u8) -> Config {
    Config {
        fec: Fec::Fixed { data, parity },
        ..Config::default()
    }
}

/// Sends from client `c` every 33 ms (30 Hz) for `secs`: a reliable numbered message and an
/// unreliable one each time; returns how many of each.
fn stream(net: &mut Net, c: usize, secs: u64) -> u32 {
    let mut n = 0u32;
    for ms in 0..secs * 1000 {
        if ms % 33 == 0 {
            let (now, id) = (net.now(), net.peers[c].id);
            let mut out = std::mem::take(&mut net.out);
            let mut msg = n.to_le_bytes().to_vec();
            msg.resize(64, 0xAB);
            net.peers[c]
                .ep
                .send(now, id, &msg, Channel::Reliable, &mut out)
                .unwrap();
            net.peers[c]
                .ep
                .send(now, id, &msg, Channel::Unreliable, &mut out)
                .unwrap();
            // The tick that sent them ends: the FEC group's parity leaves now.
            net.peers[c].ep.flush(now, &mut out);
            net.out = out;
            let a = net.peers[c].addr;
            net.ship(a);
            n += 1;
        }
        net.step();
    }
    n
}

/// The numbers of the server's received messages on `channel`.
fn received(net: &Net, channel: Channel) -> Vec<u32> {
    net.server_events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data {
                channel: ch, data, ..
            } if *ch == channel => Some(u32::from_le_bytes(data[..4].try_into().unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn lost_datagrams_are_rebuilt_from_parity_and_nothing_is_lost_or_duplicated() {
    for seed in 0..3 {
        let mut net = Net::new(fec(4, 1), 200 + seed, 0.05, 20);
        let c = net.add_plain("10.0.0.2:5000", fec(4, 2));
        assert!(net.run_until(5_000, |n| n.connected(c)));
        let sid = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
        assert!(net
            .server
            .extensions(sid)
            .unwrap()
            .contains(Extensions::FEC));
        let sent = stream(&mut net, c, 20);
        net.run(3_000);
        assert_eq!(
            received(&net, Channel::Reliable),
            (0..sent).collect::<Vec<_>>()
        );
        let mut unreliable = received(&net, Channel::Unreliable);
        let before = unreliable.len();
        unreliable.dedup();
        assert_eq!(
            unreliable.len(),
            before,
            "an unreliable message arrived twice"
        );
        // With one parity per group of up to 4, most single losses come back without ARQ,
        // unreliable ones included: far fewer than 5% of them are missing.
        assert!(
            unreliable.len() as f64 > 0.985 * f64::from(sent),
            "seed {seed}: {} of {sent} unreliable messages",
            unreliable.len()
        );
        let server = net.server.connection_stats(sid).unwrap();
        let client = net.peers[c].ep.connection_stats(net.peers[c].id).unwrap();
        assert!(server.fec_recovered > 10, "{server:?}");
        assert!(client.fec_parity_sent > 0 && server.fec_parity_received > 0);
        assert!(server.fec_parity_sent > 0 && client.fec_parity_received > 0);
        // Parity shards and data shards both travel.
        assert!(net.tap.iter().any(|(_, _, d)| d[0] == 4));
        assert!(net.tap.iter().any(|(_, _, d)| d[0] == 3));
    }
}

#[test]
fn the_largest_messages_still_fit_the_mtu_with_their_parity() {
    let mut net = Net::new(fec(4, 2), 11, 0.05, 10);
    let c = net.add_plain("10.0.0.2:5000", fec(4, 2));
    assert!(net.run_until(5_000, |n| n.connected(c)));
    let sid = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
    let (now, id) = (net.now(), net.peers[c].id);
    let mut out = std::mem::take(&mut net.out);
    // The largest unreliable message FEC leaves room for, and a large reliable one (full
    // segments); a byte more than the unreliable limit is refused, not sent oversized.
    let max = Config::default().unreliable_max_message_size() - 8;
    let ep = &mut net.peers[c].ep;
    assert!(ep
        .send(now, id, &vec![1; max + 1], Channel::Unreliable, &mut out)
        .is_err());
    for _ in 0..20 {
        ep.send(now, id, &vec![1; max], Channel::Unreliable, &mut out)
            .unwrap();
        ep.send(now, id, &vec![2; 20_000], Channel::Reliable, &mut out)
            .unwrap();
    }
    ep.flush(now, &mut out);
    net.out = out;
    let a = net.peers[c].addr;
    net.ship(a);
    net.run(5_000);
    let mtu = Config::default().mtu;
    assert!(net.tap.iter().all(|(_, _, d)| d.len() <= mtu));
    assert_eq!(received(&net, Channel::Reliable).len(), 20);
    assert!(net.server.is_connected(sid) && net.connected(c));
}

#[test]
fn losses_beyond_the_parity_fall_back_to_retransmission() {
    let mut net = Net::new(Config::default(), 7, 0.25, 15);
    let c = net.add_plain("10.0.0.2:5000", fec(8, 1));
    assert!(net.run_until(10_000, |n| n.connected(c)));
    let sent = stream(&mut net, c, 10);
    net.run(10_000);
    assert_eq!(
        received(&net, Channel::Reliable),
        (0..sent).collect::<Vec<_>>()
    );
    let mut unreliable = received(&net, Channel::Unreliable);
    let n = unreliable.len();
    unreliable.dedup();
    assert_eq!(unreliable.len(), n);
}

#[test]
fn no_fec_with_a_peer_that_did_not_negotiate_it_and_none_when_off() {
    // A client speaking plain kcp2k: the server's FEC config does not apply.
    let mut net = Net::new(fec(4, 2), 8, 0.02, 10);
    let c = net.add_plain(
        "10.0.0.2:5000",
        Config {
            kcpnet_extensions: false,
            ..Config::default()
        },
    );
    assert!(net.run_until(5_000, |n| n.connected(c)));
    stream(&mut net, c, 2);
    net.run(500);
    assert!(net.tap.iter().all(|(_, _, d)| d[0] == 1 || d[0] == 2));
    // Both ends kcpnet with FEC off: negotiated (either could decode), never used, and the
    // message limits are the plain ones.
    let mut net = Net::new(Config::default(), 9, 0.02, 10);
    let c = net.add_plain("10.0.0.2:5000", Config::default());
    assert!(net.run_until(5_000, |n| n.connected(c)));
    stream(&mut net, c, 2);
    let (now, id) = (net.now(), net.peers[c].id);
    let max = Config::default().unreliable_max_message_size();
    let mut out = std::mem::take(&mut net.out);
    net.peers[c]
        .ep
        .send(now, id, &vec![7; max], Channel::Unreliable, &mut out)
        .unwrap();
    net.out = out;
    net.run(500);
    assert!(net.tap.iter().all(|(_, _, d)| d[0] == 1 || d[0] == 2));
}

#[cfg(feature = "secure")]
#[test]
fn fec_inside_a_secure_session() {
    use kcpnet::secure::{ConnectToken, PrivateKey, SecureConfig, SecurityMode, TokenParams};
    let key = PrivateKey::from_bytes([3; 32]);
    let server = Config {
        security: Some(SecureConfig {
            mode: SecurityMode::Required,
            protocol_id: 5,
            key: key.clone(),
            public_addresses: vec![net::SERVER.parse().unwrap()],
            cipher: Default::default(),
        }),
        ..fec(4, 1)
    };
    let token = ConnectToken::generate(
        &key,
        &TokenParams {
            protocol_id: 5,
            client_id: 1,
            server_addresses: vec![net::SERVER.parse().unwrap()],
            user_data: Vec::new(),
            created_unix_secs: net::UNIX0,
            valid_secs: 60,
        },
    )
    .unwrap();
    let mut net = Net::new(server, 10, 0.05, 15);
    let mut ep = kcpnet::endpoint::Endpoint::client(fec(4, 1)).unwrap();
    let id = ep.connect_with_token(net.now(), &token).unwrap();
    let c = net.add_endpoint("10.0.0.2:5000", ep, id);
    assert!(net.run_until(5_000, |n| n.connected(c)));
    let sent = stream(&mut net, c, 10);
    net.run(3_000);
    assert_eq!(
        received(&net, Channel::Reliable),
        (0..sent).collect::<Vec<_>>()
    );
    let sid = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
    assert!(net.server.connection_stats(sid).unwrap().fec_recovered > 0);
    // Sealed data (0x83) and parity (0x84) shards, nothing in clear after the Hellos.
    assert!(net.tap.iter().any(|(_, _, d)| d[0] == 0x84));
    assert!(net.tap.iter().any(|(_, _, d)| d[0] == 0x83));
    assert_eq!(
        net.tap.iter().filter(|(_, _, d)| d[0] & 0x80 == 0).count(),
        2
    );
}

#[test]
fn adaptive_fec_follows_the_measured_loss() {
    let adaptive = Config {
        fec: Fec::ADAPTIVE,
        ..Config::default()
    };
    let mut net = Net::new(Config::default(), 31, 0.10, 20);
    let c = net.add_plain("10.0.0.2:5000", adaptive);
    assert!(net.run_until(10_000, |n| n.connected(c)));
    let sid = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
    let stats = |net: &Net| net.peers[c].ep.connection_stats(net.peers[c].id).unwrap();

    // A 10 % link: the peer's reports bring an estimate near 10 %, and groups get parity
    // for it.
    let mut runs = vec![stream(&mut net, c, 20)];
    let lossy = stats(&net);
    let est = lossy.quality.loss_out;
    assert!(
        est.samples > 200 && (est.value - 0.10).abs() < 0.05,
        "{est:?}"
    );
    let (k, m) = lossy.fec_shape.expect("an encoding end has a shape");
    assert!((1..=16).contains(&k) && m >= 1, "{k}+{m}");
    assert!(lossy.fec_parity_sent > 0);
    let rebuilt = net.server.connection_stats(sid).unwrap().fec_recovered;
    assert!(rebuilt > 20, "{rebuilt}");

    // The link turns clean: once the estimate is sure of it, no more parity, and the
    // datagrams go out plain (no shard header).
    net.loss = 0.0;
    runs.push(stream(&mut net, c, 60));
    let clean = stats(&net);
    assert_eq!(
        clean.fec_shape.map(|s| s.1),
        Some(0),
        "{:?}",
        clean.quality.loss_out
    );
    let parity_before = clean.fec_parity_sent;
    net.tap.clear();
    runs.push(stream(&mut net, c, 5));
    assert_eq!(stats(&net).fec_parity_sent, parity_before);
    let client_addr = net.peers[c].addr;
    let from_client: Vec<u8> = net
        .tap
        .iter()
        .filter(|(from, _, _)| *from == client_addr)
        .map(|(_, _, d)| d[0])
        .collect();
    assert!(!from_client.is_empty() && from_client.iter().all(|&ch| ch == 1 || ch == 2));

    // Loss again: parity comes back.
    net.loss = 0.15;
    runs.push(stream(&mut net, c, 20));
    let again = stats(&net);
    assert!(again.fec_parity_sent > parity_before, "{again:?}");
    assert!(again.fec_shape.unwrap().1 >= 1);

    // Through all of it, every reliable message arrived once and in order (each run
    // numbers its messages from 0).
    net.loss = 0.0;
    net.run(5_000);
    let want: Vec<u32> = runs.iter().flat_map(|&n| 0..n).collect();
    let got = received(&net, Channel::Reliable);
    assert!(
        got == want,
        "{} of {} reliable messages, in another order or lost",
        got.len(),
        want.len()
    );
}
