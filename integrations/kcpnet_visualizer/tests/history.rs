//! The sample history: bounded memory, correct windows, rates and connection churn, and
//! samples taken from a real server and client over the in-memory network.

use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::io::{ManualClock, MemoryNetwork};
use kcpnet::{
    Channel, Client, Config, ConnectionQuality, ConnectionStats, EndpointStats, LossEstimate,
    Server,
};
use kcpnet_visualizer::{
    ConnectionKey, EndpointSample, HistoryConfig, NetworkHistory, Ring, SortBy, Timed,
};

fn config(capacity: usize, max_connections: usize, max_closed: usize) -> HistoryConfig {
    HistoryConfig {
        capacity,
        max_connections,
        max_closed,
        interval: Duration::ZERO,
    }
}

fn quality(kcp_rtt_ms: u32, loss: f32) -> ConnectionQuality {
    ConnectionQuality {
        kcp_rtt_ms,
        loss_out: LossEstimate::new(loss, 1000),
        bytes_in_per_sec: 1000.0,
        ..ConnectionQuality::default()
    }
}

fn endpoint_at(t: f64) -> EndpointSample {
    EndpointSample {
        t,
        connections: 0,
        bytes_in_per_sec: 0.0,
        bytes_out_per_sec: 0.0,
        datagrams_in_per_sec: 0.0,
        datagrams_out_per_sec: 0.0,
        dropped_per_sec: 0.0,
        security_refused_per_sec: 0.0,
        migrations: 0,
    }
}

#[test]
fn ring_keeps_the_newest_capacity_samples() {
    let mut ring = Ring::new(5);
    for i in 0..1000 {
        ring.push(endpoint_at(i as f64));
        assert!(ring.len() <= 5);
    }
    assert_eq!(ring.len(), 5);
    let times: Vec<f64> = ring.iter().map(|s| s.time()).collect();
    assert_eq!(times, vec![995.0, 996.0, 997.0, 998.0, 999.0]);
    assert_eq!(ring.latest().map(|s| s.t), Some(999.0));
}

#[test]
fn window_returns_exactly_the_span() {
    let mut ring = Ring::new(1000);
    for i in 0..=100 {
        ring.push(endpoint_at(i as f64 * 0.5)); // 0.0, 0.5, ..., 50.0
    }
    let w: Vec<f64> = ring.window(30.0, 2.0).map(|s| s.t).collect();
    assert_eq!(w, vec![28.0, 28.5, 29.0, 29.5, 30.0]);
    // A window reaching before the oldest sample starts at the oldest.
    let w: Vec<f64> = ring.window(1.0, 10.0).map(|s| s.t).collect();
    assert_eq!(w, vec![0.0, 0.5, 1.0]);
    // A window after the newest sample is empty; one ending at it holds the newest.
    assert_eq!(ring.window(100.0, 10.0).count(), 0);
    assert_eq!(
        ring.window(50.0, 0.0).map(|s| s.t).collect::<Vec<_>>(),
        vec![50.0]
    );
}

#[test]
fn endpoint_rates_come_from_counter_differences() {
    let mut h = NetworkHistory::new(config(10, 4, 4));
    let mut s = EndpointStats::default();
    h.record_endpoint(1.0, &s);
    assert!(
        h.endpoint().is_empty(),
        "one counter reading gives no rate yet"
    );
    s.bytes_received = 3000;
    s.bytes_sent = 500;
    s.datagrams_received = 30;
    s.dropped_invalid = 2;
    s.connections = 3;
    h.record_endpoint(1.5, &s);
    let e = *h.endpoint().latest().unwrap();
    assert_eq!(e.t, 1.5);
    assert_eq!(e.bytes_in_per_sec, 6000.0);
    assert_eq!(e.bytes_out_per_sec, 1000.0);
    assert_eq!(e.datagrams_in_per_sec, 60.0);
    assert_eq!(e.dropped_per_sec, 4.0);
    assert_eq!(e.connections, 3);
    assert_eq!(e.security_refused_per_sec, 0.0);
}

#[test]
fn security_refusals_and_migrations_from_endpoint_stats() {
    let mut h = NetworkHistory::new(config(10, 4, 4));
    let mut st = EndpointStats::default();
    h.record_endpoint(1.0, &st);
    st.tokens_invalid = 30;
    st.tokens_expired = 5;
    st.sealed_forged = 4;
    st.unsealed_dropped = 1;
    st.migrations = 2;
    h.record_endpoint(1.5, &st);
    let e = *h.endpoint().latest().unwrap();
    assert_eq!(e.security_refused_per_sec, 80.0); // 40 / 0.5 s
    assert_eq!(e.migrations, 2);
}

#[test]
fn retransmission_rate_from_stats() {
    let mut h = NetworkHistory::new(config(10, 4, 4));
    let k = ConnectionKey(7);
    let mut st = ConnectionStats {
        retransmits: 4,
        fast_retransmits: 1,
        ..ConnectionStats::default()
    };
    assert!(h.record_stats(2.0, k, &st));
    assert_eq!(
        h.connection(k)
            .unwrap()
            .samples
            .latest()
            .unwrap()
            .retransmits_per_sec,
        None
    );
    st.retransmits = 10;
    st.fast_retransmits = 5;
    st.fec_recovered = 3;
    assert!(h.record_stats(2.5, k, &st));
    let latest = *h.connection(k).unwrap().samples.latest().unwrap();
    assert_eq!(latest.retransmits_per_sec, Some(20.0)); // (15 - 5) / 0.5 s
    assert_eq!(latest.fec_recovered_per_sec, Some(6.0)); // (3 - 0) / 0.5 s
                                                         // A quality alone has no retransmission figure.
    assert!(h.record_quality(3.0, k, &quality(10, 0.0)));
    assert_eq!(
        h.connection(k)
            .unwrap()
            .samples
            .latest()
            .unwrap()
            .retransmits_per_sec,
        None
    );
}

#[test]
fn churn_keeps_memory_bounded_and_drops_the_oldest_closed() {
    let (capacity, max_live, max_closed) = (16, 4, 3);
    let mut h = NetworkHistory::new(config(capacity, max_live, max_closed));
    let bound = h.sample_bound();
    assert_eq!(bound, 16 * (1 + 4 + 3));
    let mut next_key = 0u64;
    let mut live: Vec<ConnectionKey> = Vec::new();
    for round in 0..500 {
        let t = round as f64 * 0.25;
        // Every round one connection leaves and one or two arrive (more than the bound).
        if round % 3 == 0 && !live.is_empty() {
            live.remove(0);
        }
        for _ in 0..(1 + round % 2) {
            live.push(ConnectionKey(next_key));
            next_key += 1;
        }
        let mut present = Vec::new();
        let mut untracked = 0;
        for k in &live {
            if h.record_quality(t, *k, &quality(20, 0.0)) {
                present.push(*k);
            } else {
                untracked += 1;
            }
        }
        h.retain_present(t, &present, untracked);
        h.record_endpoint(t, &EndpointStats::default());

        let all: Vec<_> = h.connections().collect();
        let closed = all.iter().filter(|(_, c)| c.is_closed()).count();
        assert!(all.len() - closed <= max_live, "round {round}: live bound");
        assert!(closed <= max_closed, "round {round}: closed bound");
        assert!(h.sample_count() <= bound, "round {round}: sample bound");
        assert_eq!(untracked, h.untracked());
    }
    // Live connections beyond the bound were refused, not silently dropped.
    assert!(h.untracked() > 0);
    // The closed histories kept are the most recently closed ones.
    let closed_at: Vec<f64> = h.connections().filter_map(|(_, c)| c.closed_at).collect();
    assert_eq!(closed_at.len(), max_closed);
    assert!(
        closed_at.iter().all(|&t| t >= 124.0 - 3.0 * 0.75),
        "{closed_at:?}"
    );
}

#[test]
fn a_closed_connection_seen_again_is_live() {
    let mut h = NetworkHistory::new(config(8, 2, 2));
    let (a, b) = (ConnectionKey(1), ConnectionKey(2));
    h.record_quality(0.0, a, &quality(10, 0.0));
    h.record_quality(0.0, b, &quality(10, 0.0));
    h.retain_present(0.0, &[b, a], 0); // any order
    h.retain_present(1.0, &[b], 0);
    assert_eq!(h.connection(a).unwrap().closed_at, Some(1.0));
    assert!(!h.connection(b).unwrap().is_closed());
    h.record_quality(2.0, a, &quality(10, 0.0));
    assert!(!h.connection(a).unwrap().is_closed());
}

#[test]
fn rows_sort_by_rtt_and_loss_worst_first() {
    let mut h = NetworkHistory::new(config(8, 8, 1));
    h.record_quality(1.0, ConnectionKey(1), &quality(50, 0.01));
    h.record_quality(1.0, ConnectionKey(2), &quality(200, 0.00));
    h.record_quality(1.0, ConnectionKey(3), &quality(10, 0.30));
    let ids =
        |h: &NetworkHistory, sort| -> Vec<u64> { h.rows(sort).iter().map(|r| r.id.0).collect() };
    assert_eq!(ids(&h, SortBy::Rtt), vec![2, 1, 3]);
    assert_eq!(ids(&h, SortBy::Loss), vec![3, 1, 2]);
    assert_eq!(ids(&h, SortBy::Id), vec![1, 2, 3]);
    // A closed connection goes after the live ones, whatever its figures.
    h.retain_present(2.0, &[ConnectionKey(1), ConnectionKey(3)], 0);
    assert_eq!(ids(&h, SortBy::Rtt), vec![1, 3, 2]);
    assert_eq!(ids(&h, SortBy::Id), vec![1, 3, 2]);
}

#[test]
fn interval_limits_full_samples() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let server = Server::with_transport(
        Box::new(net.bind(server_addr).unwrap()),
        Box::new(clock.clone()),
        Config::default(),
    )
    .unwrap();
    let mut h = NetworkHistory::new(HistoryConfig {
        interval: Duration::from_millis(250),
        ..HistoryConfig::default()
    });
    assert!(h.sample_server(0.0, &server));
    assert!(!h.sample_server(0.1, &server));
    assert!(!h.sample_server(0.2, &server));
    assert!(h.sample_server(0.25, &server));
    assert_eq!(h.endpoint().len(), 1);
}

#[test]
fn samples_a_real_server_and_client() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let mut server = Server::with_transport(
        Box::new(net.bind(server_addr).unwrap()),
        Box::new(clock.clone()),
        Config::default(),
    )
    .unwrap();
    let client_addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let mut client = Client::with_transport(
        Box::new(net.bind(client_addr).unwrap()),
        Box::new(clock.clone()),
        server_addr,
        // A send-rate cap well above what the client sends: it shows in the samples.
        Config {
            send_rate_limit: Some(64_000),
            ..Config::default()
        },
    )
    .unwrap();
    let mut server_h = NetworkHistory::new(config(64, 8, 2));
    let mut client_h = NetworkHistory::new(config(64, 8, 2));
    let frame = Duration::from_millis(10);
    let mut t = 0.0;
    for i in 0..300 {
        client.tick_incoming();
        while client.poll_event().is_some() {}
        if client.is_connected() && i % 2 == 0 {
            client.send(&[7u8; 300], Channel::Reliable).unwrap();
        }
        client.tick_outgoing();
        server.tick_incoming_with(|ctx, ev| {
            if let kcpnet::Event::Data { id, data, channel } = ev {
                let _ = ctx.send(id, data, channel);
            }
        });
        server.tick_outgoing();
        clock.advance(frame);
        t += 0.01;
        if i % 10 == 0 {
            server_h.sample_server(t, &server);
            client_h.sample_client(t, &client);
        }
    }
    let rows = server_h.rows(SortBy::Id);
    assert_eq!(rows.len(), 1);
    let id = server.connections().next().unwrap();
    assert_eq!(rows[0].id, ConnectionKey::from(id));
    let s = rows[0].latest;
    assert!(s.bytes_in_per_sec > 10_000.0, "{s:?}"); // 50 messages of 300 B a second
    assert!(s.messages_in_per_sec > 20.0, "{s:?}");
    assert_eq!(s.retransmits_per_sec, Some(0.0));
    let e = server_h.endpoint().latest().unwrap();
    assert_eq!(e.connections, 1);
    assert!(e.bytes_in_per_sec > 10_000.0, "{e:?}");

    let c = client_h
        .connection(ConnectionKey::from(client.id()))
        .expect("the client's connection has a history");
    let cs = c.samples.latest().unwrap();
    assert!(cs.kcp_rtt_ms > 0.0, "{cs:?}");
    assert!(cs.messages_out_per_sec > 20.0, "{cs:?}");
    assert_eq!(cs.send_rate_limit, Some(64_000.0));
    assert!(cs.send_queue_ms.is_some_and(|ms| ms < 100.0), "{cs:?}");
    assert_eq!(s.send_rate_limit, None, "the server has no cap");
    assert_eq!(s.send_queue_ms, None);

    // The server's connection closes: its history is kept, marked closed.
    client.disconnect();
    for _ in 0..100 {
        client.tick_outgoing();
        server.tick_incoming_with(|_, _| {});
        server.tick_outgoing();
        clock.advance(frame);
        t += 0.01;
    }
    assert_eq!(server.connection_count(), 0);
    server_h.sample_server(t, &server);
    assert!(server_h
        .connection(ConnectionKey::from(id))
        .unwrap()
        .is_closed());
}
