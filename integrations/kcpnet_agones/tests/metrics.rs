//! `/metrics` scraped over HTTP on loopback while real kcpnet clients exchange messages with
//! a real server: the exported figures are the server's `EndpointStats`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::{until, Player};
use kcpnet::{Channel, Config, EndpointStats, Server};
use kcpnet_agones::metrics_exporter_prometheus::PrometheusBuilder;
use kcpnet_agones::{MetricsServer, ServerMetrics};

fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// `name{labels}` → value, from the Prometheus text format.
fn parse(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn check(m: &BTreeMap<String, f64>, stats: &EndpointStats) {
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} exported: {m:?}"));
    assert_eq!(get("kcpnet_connections"), stats.connections as f64);
    assert_eq!(
        get("kcpnet_datagrams_received_total"),
        stats.datagrams_received as f64
    );
    assert_eq!(
        get("kcpnet_datagrams_sent_total"),
        stats.datagrams_sent as f64
    );
    assert_eq!(
        get("kcpnet_bytes_received_total"),
        stats.bytes_received as f64
    );
    assert_eq!(get("kcpnet_bytes_sent_total"), stats.bytes_sent as f64);
    assert_eq!(
        get("kcpnet_dropped_datagrams_total{cause=\"unknown\"}"),
        stats.dropped_unknown as f64
    );
    assert_eq!(
        get("kcpnet_dropped_datagrams_total{cause=\"invalid\"}"),
        stats.dropped_invalid as f64
    );
    assert_eq!(
        get("kcpnet_hello_replies_total"),
        stats.hello_replies as f64
    );
    assert_eq!(
        get("kcpnet_connections_accepted_total"),
        stats.connections_accepted as f64
    );
    assert_eq!(get("kcpnet_send_errors_total"), stats.send_errors as f64);
}

#[test]
fn scraped_metrics_match_the_endpoint_stats_while_clients_play() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // This thread records; the HTTP thread renders from the shared handle.
    let _guard = kcpnet_agones::metrics::set_default_local_recorder(&recorder);
    let http = MetricsServer::bind("127.0.0.1:0", handle).unwrap();

    let mut server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let mut players: Vec<Player> = (0..4).map(|_| Player::connect(addr)).collect();
    let echo = |server: &mut Server| {
        server.tick_incoming();
        let mut events = server.drain_events();
        while let Some((event, server)) = events.next() {
            if let kcpnet::Event::Data { id, channel, data } = event {
                server.send(id, data, channel).unwrap();
            }
        }
        drop(events);
        server.tick_outgoing();
    };
    assert!(until(Duration::from_secs(5), || {
        echo(&mut server);
        players.iter_mut().for_each(Player::tick);
        server.connection_count() == 4 && players.iter().all(|p| p.connected)
    }));

    // Each player sends 20 reliable and 20 unreliable messages; the server echoes them.
    for round in 0..20u32 {
        for p in players.iter_mut() {
            p.client
                .send(&round.to_le_bytes(), Channel::Reliable)
                .unwrap();
            p.client.send(b"u", Channel::Unreliable).unwrap();
        }
    }
    assert!(until(Duration::from_secs(10), || {
        players.iter_mut().for_each(Player::tick);
        echo(&mut server);
        players.iter().all(|p| p.reliable.len() == 20)
    }));
    // A stranger's datagram: dropped as unknown.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&[9u8; 40], addr).unwrap();
    assert!(until(Duration::from_secs(5), || {
        echo(&mut server);
        server.stats().dropped_unknown >= 1
    }));

    let mut metrics = ServerMetrics::new();
    let snapshot = metrics.record(&server);
    let stats = server.stats();
    assert_eq!(snapshot.stats, stats);
    // 4 players × 20 reliable and 20 unreliable messages: the unreliable ones of a tick
    // share a datagram (coalescing) and KCP packs the reliable ones, so a few datagrams
    // each, plus the handshakes.
    assert!(
        stats.datagrams_received > 8 && stats.bytes_sent > 0,
        "{stats:?}"
    );
    let (status, body) = scrape(http.local_addr(), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let m = parse(&body);
    check(&m, &stats);
    assert_eq!(m["kcpnet_draining"], 0.0);
    // RTT and loss across the 4 connections, and the send queues.
    assert_eq!(snapshot.rtt_ms.len(), 5);
    assert_eq!(
        m["kcpnet_rtt_ms{quantile=\"1\"}"],
        snapshot.rtt_ms[4] as f64
    );
    assert_eq!(
        m["kcpnet_rtt_ms{quantile=\"0\"}"],
        snapshot.rtt_ms[0] as f64
    );
    assert!(snapshot.rtt_ms[0] <= snapshot.rtt_ms[2] && snapshot.rtt_ms[2] <= snapshot.rtt_ms[4]);
    assert_eq!(
        m["kcpnet_loss_ratio{quantile=\"0.5\"}"],
        snapshot.loss[1] as f64
    );
    assert_eq!(
        m["kcpnet_send_queue_bytes{stat=\"sum\"}"],
        snapshot.send_queue_bytes as f64
    );

    // More traffic, then a second scrape follows the counters.
    for p in players.iter_mut() {
        p.client
            .send(&99u32.to_le_bytes(), Channel::Reliable)
            .unwrap();
    }
    assert!(until(Duration::from_secs(10), || {
        players.iter_mut().for_each(Player::tick);
        echo(&mut server);
        players.iter().all(|p| p.reliable.len() == 21)
    }));
    // One player leaves.
    players[0].client.disconnect();
    assert!(until(Duration::from_secs(5), || {
        players.iter_mut().for_each(Player::tick);
        echo(&mut server);
        server.connection_count() == 3
    }));
    metrics.record(&server);
    let later = server.stats();
    assert!(later.bytes_received > stats.bytes_received);
    let m = parse(&scrape(http.local_addr(), "/metrics").1);
    check(&m, &later);
    assert_eq!(m["kcpnet_connections"], 3.0);

    // Anything but /metrics is not found.
    assert_eq!(scrape(http.local_addr(), "/").0, "HTTP/1.1 404 Not Found");
}
