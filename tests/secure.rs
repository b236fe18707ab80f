//! Secure sessions between sans-IO endpoints (virtual time, datagrams moved by hand over a
//! lossy, delayed network): connect tokens accepted and refused, sealed datagrams that
//! cannot be altered or replayed, the three server modes, and a client whose address
//! changes mid-stream.
#![cfg(feature = "secure")]

#[path = "common/net.rs"]
mod net;

use std::time::Duration;

use kcpnet::endpoint::{Endpoint, Outbox};
use kcpnet::secure::{ConnectToken, PrivateKey, SecureConfig, SecurityMode, TokenParams};
use kcpnet::{Channel, Config, DisconnectReason, OwnedEvent, SendFlags};
use net::{Net, SERVER, UNIX0};

const PROTOCOL: u64 = 0x6b63_706e_6574_0001;

fn key() -> PrivateKey {
    PrivateKey::from_bytes([0x42; 32])
}

fn params(client_id: u64) -> TokenParams {
    TokenParams {
        protocol_id: PROTOCOL,
        client_id,
        server_addresses: vec![SERVER.parse().unwrap()],
        user_data: format!("player {client_id}").into_bytes(),
        created_unix_secs: UNIX0,
        valid_secs: 60,
    }
}

fn token(client_id: u64) -> ConnectToken {
    ConnectToken::generate(&key(), &params(client_id)).unwrap()
}

fn secure_config(mode: SecurityMode) -> Config {
    Config {
        security: Some(SecureConfig {
            mode,
            protocol_id: PROTOCOL,
            key: key(),
            public_addresses: vec![SERVER.parse().unwrap()],
            cipher: Default::default(),
        }),
        ..Config::default()
    }
}

#[test]
fn a_token_client_connects_and_every_datagram_after_the_hellos_is_sealed() {
    let mut net = Net::new(secure_config(SecurityMode::Required), 1, 0.0, 10);
    let c = net.add("10.0.0.2:5000", Some(&token(7)));
    assert!(net.run_until(2_000, |n| n.connected(c)));
    let sid = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
    let session = net.server.secure_session(sid).expect("a secure session");
    assert_eq!(session.client_id, 7);
    assert_eq!(session.user_data, b"player 7");
    assert!(net.server.is_secure(sid));
    // Data both ways, reliable and unreliable.
    let (now, id) = (net.now(), net.peers[c].id);
    let mut out = Outbox::new();
    net.peers[c]
        .ep
        .send(now, id, b"hello secure", Channel::Reliable, &mut out)
        .unwrap();
    net.peers[c]
        .ep
        .send(now, id, b"fast", Channel::Unreliable, &mut out)
        .unwrap();
    net.out = out;
    let a = net.peers[c].addr;
    net.ship(a);
    net.server
        .send(now, sid, b"welcome", Channel::Reliable, &mut net.out)
        .unwrap();
    let s = net.server_addr;
    net.ship(s);
    net.run(500);
    let got = net.server_data();
    assert!(got.contains(&b"hello secure".to_vec()) && got.contains(&b"fast".to_vec()));
    assert!(net.peers[c]
        .events
        .iter()
        .any(|e| matches!(e, OwnedEvent::Data { data, .. } if data.as_slice() == b"welcome")));
    // On the wire: only the client's Hello and the server's stateless reply are plain.
    let plain: Vec<_> = net
        .tap
        .iter()
        .filter(|(_, _, d)| d[0] & 0x80 == 0)
        .collect();
    assert_eq!(plain.len(), 2, "plain datagrams: {plain:?}");
    for (_, _, d) in &net.tap {
        // The application's bytes never appear in clear.
        assert!(!d.windows(12).any(|w| w == b"hello secure"));
        assert!(!d.windows(7).any(|w| w == b"welcome"));
    }
    let st = net.server.stats();
    assert_eq!(
        st.sealed_forged + st.sealed_replayed + st.unsealed_dropped,
        0
    );
}

/// A server given the Hello of `token` from `from`: whether it answered, and its stats.
fn hello_answered(server_config: Config, hello: &[u8]) -> (bool, kcpnet::EndpointStats) {
    let mut net = Net::new(server_config, 3, 0.0, 1);
    net.inject("10.0.0.9:4000".parse().unwrap(), hello);
    let answered = net.tap.iter().any(|(from, _, _)| *from == net.server_addr);
    (answered, net.server.stats())
}

/// The client's Hello datagram for `token`.
fn hello_of(token: &ConnectToken) -> Vec<u8> {
    let mut ep = Endpoint::client(Config::default()).unwrap();
    ep.connect_with_token(Duration::ZERO, token).unwrap();
    let mut out = Outbox::new();
    ep.flush(Duration::ZERO, &mut out);
    let (_, d) = out.pop().expect("a Hello");
    d.to_vec()
}

#[test]
fn refused_tokens_get_no_reply_and_are_counted() {
    let config = || secure_config(SecurityMode::Required);
    let (ok, st) = hello_answered(config(), &hello_of(&token(1)));
    assert!(ok && st.hello_replies == 1);

    let expired = ConnectToken::generate(
        &key(),
        &TokenParams {
            created_unix_secs: UNIX0 - 100,
            valid_secs: 30,
            ..params(1)
        },
    )
    .unwrap();
    let (ok, st) = hello_answered(config(), &hello_of(&expired));
    assert!(!ok && st.tokens_expired == 1 && st.hello_replies == 0);

    let other_protocol = ConnectToken::generate(
        &key(),
        &TokenParams {
            protocol_id: PROTOCOL + 1,
            ..params(1)
        },
    )
    .unwrap();
    let (ok, st) = hello_answered(config(), &hello_of(&other_protocol));
    assert!(!ok && st.tokens_invalid == 1);

    let elsewhere = ConnectToken::generate(
        &key(),
        &TokenParams {
            server_addresses: vec!["10.0.0.1:7778".parse().unwrap()],
            ..params(1)
        },
    )
    .unwrap();
    // The client dials the address the token names; the server at SERVER refuses it.
    let (ok, st) = hello_answered(config(), &hello_of(&elsewhere));
    assert!(!ok && st.tokens_wrong_server == 1);

    let other_key = ConnectToken::generate(&PrivateKey::from_bytes([1; 32]), &params(1)).unwrap();
    let (ok, st) = hello_answered(config(), &hello_of(&other_key));
    assert!(!ok && st.tokens_invalid == 1);

    // A plain Hello: Required mode answers nothing.
    let mut plain = Endpoint::client(Config::default()).unwrap();
    plain
        .connect(Duration::ZERO, SERVER.parse().unwrap())
        .unwrap();
    let mut out = Outbox::new();
    plain.flush(Duration::ZERO, &mut out);
    let (ok, st) = hello_answered(config(), out.pop().unwrap().1);
    assert!(!ok && st.refused_unauthenticated == 1);
}

#[test]
fn every_byte_of_the_token_flipped_in_turn_is_refused_without_a_reply() {
    let hello = hello_of(&token(1));
    // The blob is the last 555 bytes of the Hello.
    let start = hello.len() - 555;
    let mut net = Net::new(secure_config(SecurityMode::Required), 4, 0.0, 1);
    for i in start..hello.len() {
        let mut h = hello.clone();
        h[i] ^= 0xFF;
        net.inject("10.0.0.9:4000".parse().unwrap(), &h);
    }
    assert!(net.tap.is_empty(), "a tampered token was answered");
    let st = net.server.stats();
    assert_eq!(st.tokens_invalid + st.tokens_expired, 555);
    assert_eq!(st.connections, 0);
    assert!(net.server.poll_event().is_none());
    // The same server still answers the untouched token.
    net.inject("10.0.0.9:4000".parse().unwrap(), &hello);
    assert_eq!(net.tap.len(), 1);
}

#[test]
fn a_token_in_use_is_refused_from_a_second_address() {
    let mut net = Net::new(secure_config(SecurityMode::Required), 5, 0.0, 5);
    let t = token(9);
    let a = net.add("10.0.0.2:5000", Some(&t));
    assert!(net.run_until(2_000, |n| n.connected(a)));
    let b = net.add("10.0.0.3:5000", Some(&t));
    net.run(3_000);
    assert!(!net.connected(b));
    let st = net.server.stats();
    assert!(st.tokens_in_use >= 1, "{st:?}");
    assert_eq!(st.connections, 1);
    let connected = net
        .server_events
        .iter()
        .filter(|e| matches!(e, OwnedEvent::Connected { .. }))
        .count();
    assert_eq!(connected, 1);
}

#[test]
fn altered_and_replayed_sealed_datagrams_are_dropped() {
    let mut net = Net::new(secure_config(SecurityMode::Required), 6, 0.0, 5);
    let c = net.add("10.0.0.2:5000", Some(&token(2)));
    assert!(net.run_until(2_000, |n| n.connected(c)));
    net.run(100);
    // The client sends one unreliable message; capture its datagram.
    let (now, id) = (net.now(), net.peers[c].id);
    let mut out = Outbox::new();
    net.peers[c]
        .ep
        .send_with(
            now,
            id,
            b"once",
            Channel::Unreliable,
            SendFlags::FLUSH,
            &mut out,
        )
        .unwrap();
    let (_, sealed) = out.pop().unwrap();
    let sealed = sealed.to_vec();
    let from = net.peers[c].addr;
    // Every bit flipped in turn: dropped unread.
    for bit in 0..sealed.len() * 8 {
        let mut d = sealed.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        net.inject(from, &d);
    }
    net.run(50);
    assert!(net.server_data().is_empty());
    let st = net.server.stats();
    // A flipped cookie makes a stranger's datagram; the rest fail on the connection.
    assert!(
        st.sealed_forged + st.unsealed_dropped + st.dropped_unknown
            >= (sealed.len() * 8) as u64 - 40
    );
    // The original once, then replayed twice: one message.
    let replayed_before = net.server.stats().sealed_replayed;
    net.inject(from, &sealed);
    net.inject(from, &sealed);
    net.inject(from, &sealed);
    net.run(50);
    assert_eq!(net.server_data(), vec![b"once".to_vec()]);
    assert_eq!(net.server.stats().sealed_replayed - replayed_before, 2);
    assert!(net.connected(c), "the attacks must not break the session");
}

#[test]
fn mixed_mode_serves_a_kcp2k_client_and_a_token_client_side_by_side() {
    let mut net = Net::new(secure_config(SecurityMode::Mixed), 7, 0.0, 5);
    let plain = net.add("10.0.0.2:5000", None);
    let secure = net.add("10.0.0.3:5000", Some(&token(3)));
    assert!(net.run_until(3_000, |n| n.connected(plain) && n.connected(secure)));
    let p = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
    let s = net.server_id_of("10.0.0.3:5000".parse().unwrap()).unwrap();
    assert!(net.server.secure_session(p).is_none() && !net.server.is_secure(p));
    assert_eq!(net.server.secure_session(s).unwrap().client_id, 3);
    // The plain client's traffic stays kcp2k on the wire.
    let plain_addr = net.peers[plain].addr;
    assert!(net
        .tap
        .iter()
        .filter(|(f, t, _)| *f == plain_addr || *t == plain_addr)
        .all(|(_, _, d)| d[0] == 1 || d[0] == 2));
}

#[test]
fn a_token_client_refuses_a_server_without_secure_sessions() {
    let mut net = Net::new(Config::default(), 8, 0.0, 5);
    let c = net.add("10.0.0.2:5000", Some(&token(4)));
    net.run(500);
    assert!(!net.connected(c));
    assert!(net.peers[c].events.iter().any(|e| matches!(
        e,
        OwnedEvent::Disconnected {
            reason: DisconnectReason::ProtocolError,
            ..
        }
    )));
    // It never sent anything but its Hello in the clear, and the server kept nothing.
    assert_eq!(net.server.stats().connections, 0);
}

#[test]
fn a_client_whose_port_changes_mid_stream_keeps_its_connection_and_loses_nothing() {
    for seed in 0..4 {
        let mut net = Net::new(secure_config(SecurityMode::Required), 100 + seed, 0.05, 15);
        let c = net.add("10.0.0.2:5000", Some(&token(5)));
        assert!(net.run_until(5_000, |n| n.connected(c)), "seed {seed}");
        let sid = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
        let mut sent = 0u32;
        for ms in 0..6_000u32 {
            if ms % 20 == 0 && sent < 200 {
                let (now, id) = (net.now(), net.peers[c].id);
                let mut out = std::mem::take(&mut net.out);
                net.peers[c]
                    .ep
                    .send(now, id, &sent.to_le_bytes(), Channel::Reliable, &mut out)
                    .unwrap();
                net.out = out;
                let a = net.peers[c].addr;
                net.ship(a);
                sent += 1;
            }
            if ms == 1_500 {
                // A NAT rebinding: a new source port, the old mapping dead.
                let p = &mut net.peers[c];
                p.old.push(p.addr);
                p.old_dead = true;
                p.addr = "10.0.0.2:6001".parse().unwrap();
            }
            net.step();
        }
        net.run(3_000);
        let got: Vec<u32> = net
            .server_data()
            .iter()
            .map(|d| u32::from_le_bytes(d[..4].try_into().unwrap()))
            .collect();
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "seed {seed}");
        assert!(net.connected(c), "seed {seed}");
        assert_eq!(
            net.server.remote_addr(sid),
            Some("10.0.0.2:6001".parse().unwrap()),
            "seed {seed}"
        );
        assert!(net.server_events.iter().any(|e| matches!(e,
            OwnedEvent::AddressChanged { id, addr } if *id == sid && addr.port() == 6001)));
        assert_eq!(net.server.stats().migrations, 1, "seed {seed}");
    }
}

#[test]
fn the_cipher_suite_is_negotiated_aes_gcm_by_default_chacha_on_request() {
    use kcpnet::secure::CipherSuite;
    use kcpnet::Extensions;
    for (suite, aes) in [
        (CipherSuite::Aes256Gcm, true),
        (CipherSuite::ChaCha20Poly1305, false),
    ] {
        let mut config = secure_config(SecurityMode::Required);
        config.security.as_mut().unwrap().cipher = suite;
        let mut net = Net::new(config, 9, 0.02, 10);
        let c = net.add("10.0.0.2:5000", Some(&token(11)));
        assert!(net.run_until(3_000, |n| n.connected(c)), "{suite:?}");
        let sid = net.server_id_of("10.0.0.2:5000".parse().unwrap()).unwrap();
        let ext = net.server.extensions(sid).unwrap();
        assert!(ext.contains(Extensions::SECURE));
        assert_eq!(ext.contains(Extensions::AES_GCM), aes, "{suite:?}");
        let client_ext = net.peers[c].ep.extensions(net.peers[c].id).unwrap();
        assert_eq!(client_ext, ext, "both ends agree");
        for i in 0..20u8 {
            let (now, id) = (net.now(), net.peers[c].id);
            let mut out = std::mem::take(&mut net.out);
            net.peers[c]
                .ep
                .send(now, id, &[i; 100], Channel::Reliable, &mut out)
                .unwrap();
            net.out = out;
            let a = net.peers[c].addr;
            net.ship(a);
            net.run(10);
        }
        net.run(2_000);
        assert_eq!(net.server_data().len(), 20, "{suite:?}");
        let st = net.server.stats();
        assert_eq!(st.sealed_forged + st.unsealed_dropped, 0, "{suite:?}");
    }
}
