//! W4c, a game's input stream: a server and a client in this process, each over loopback
//! UDP behind W4's link conditioner (20 ms one way, 5 % loss on what it sends), each sending
//! a 64-byte reliable message every 33.3 ms (30 Hz) to the other for the given time, both
//! ticking about every 0.5 ms. Each message carries its send time on this process's
//! monotonic clock, so the one-way delivery latency (send call to `Data` event) is exact.

use std::time::{Duration, Instant};

use kcpnet::{Channel, Config, Event, Fec};
use serde_json::{json, Value};

use super::{bench_config, kcpnet_client, kcpnet_server, percentile, SocketIo};

/// One W4c run with `fec` on both ends: latency percentiles (ms), messages sent and
/// delivered each way, bytes both ends sent per second, datagrams FEC rebuilt and the
/// shape the client ended with.
pub fn w4c(seconds: f64, fec: Fec, seed: u64) -> Value {
    let config = Config {
        fec,
        ..bench_config()
    };
    let mut server = kcpnet_server(SocketIo::Offload, true, config.clone());
    let port = server.local_addr().expect("bound").port();
    let mut client = kcpnet_client(port, SocketIo::Offload, true, seed, config);
    let epoch = Instant::now();
    let stamp = |at: Instant| (at - epoch).as_nanos() as u64;
    let mut latencies_ms: Vec<f64> = Vec::new();
    let mut server_id = None;
    let mut delivered = [0u64; 2]; // to the server, to the client
    let record = |data: &[u8], to: usize, lat: &mut Vec<f64>, delivered: &mut [u64; 2]| {
        if let Some(sent) = data.get(..8) {
            let sent = u64::from_le_bytes(sent.try_into().unwrap_or_default());
            let now = stamp(Instant::now());
            lat.push(now.saturating_sub(sent) as f64 / 1e6);
            delivered[to] += 1;
        }
    };

    // Connect (bounded).
    let connect_deadline = Instant::now() + Duration::from_secs(10);
    while (server_id.is_none() || !client.is_connected()) && Instant::now() < connect_deadline {
        server.tick_incoming();
        while let Some(ev) = server.poll_event() {
            if let Event::Connected { id, .. } = ev {
                server_id = Some(id);
            }
        }
        server.tick_outgoing();
        client.tick_incoming();
        while client.poll_event().is_some() {}
        client.tick_outgoing();
        std::thread::sleep(Duration::from_micros(500));
    }
    let Some(sid) = server_id.filter(|_| client.is_connected()) else {
        return json!({ "error": "did not connect within 10 s" });
    };
    let bytes0 = server.stats().bytes_sent + client.stats().bytes_sent;

    let period = Duration::from_nanos(1_000_000_000 / 30);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let drain_until = end + Duration::from_secs(5);
    let mut next = start;
    let mut sent = 0u64; // each way
    let mut msg = [0xA5u8; 64];
    loop {
        let now = Instant::now();
        if now >= end && delivered == [sent, sent] || now >= drain_until {
            break;
        }
        server.tick_incoming();
        while let Some(ev) = server.poll_event() {
            if let Event::Data { data, .. } = ev {
                record(data, 0, &mut latencies_ms, &mut delivered);
            }
        }
        client.tick_incoming();
        while let Some(ev) = client.poll_event() {
            if let Event::Data { data, .. } = ev {
                record(data, 1, &mut latencies_ms, &mut delivered);
            }
        }
        if now >= next && now < end {
            msg[..8].copy_from_slice(&stamp(Instant::now()).to_le_bytes());
            let ok = client.send(&msg, Channel::Reliable).is_ok()
                && server.send(sid, &msg, Channel::Reliable).is_ok();
            if !ok {
                return json!({ "error": "send failed" });
            }
            sent += 1;
            next += period;
        }
        server.tick_outgoing();
        client.tick_outgoing();
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bytes = server.stats().bytes_sent + client.stats().bytes_sent - bytes0;
    let c = client.connection_stats();
    let s = server.connection_stats(sid).unwrap_or_default();
    let mut l = latencies_ms;
    json!({
        "fec": format!("{fec:?}"),
        "sent_each_way": sent,
        "delivered_to_server": delivered[0],
        "delivered_to_client": delivered[1],
        "p50_ms": percentile(&mut l, 50.0),
        "p99_ms": percentile(&mut l, 99.0),
        "p999_ms": percentile(&mut l, 99.9),
        "max_ms": percentile(&mut l, 100.0),
        "bytes_per_s": bytes as f64 / elapsed,
        "fec_recovered": c.fec_recovered + s.fec_recovered,
        "parity_bytes": c.fec_parity_bytes + s.fec_parity_bytes,
        "client_shape": format!("{:?}", c.fec_shape),
        "retransmits": c.retransmits + c.fast_retransmits + s.retransmits + s.fast_retransmits,
    })
}
