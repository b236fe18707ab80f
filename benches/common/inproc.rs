//! The in-process workloads: W5 (allocations and time per message through an in-memory
//! pair) and W6 (a server with many idle clients ticked at 60 Hz, over the memory network
//! or over loopback UDP, with a virtual clock).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kcpnet::io::{ManualClock, MemoryNetwork, SocketOptions, Transport, UdpTransport};
use kcpnet::{Channel, Client, Config, Event, Server};
use serde_json::{json, Value};

use super::{bench_config, percentile};

/// A server and one client over a fresh memory network, connected, on a virtual clock.
fn memory_pair() -> (ManualClock, Server, Client) {
    let net = MemoryNetwork::new();
    let clock = ManualClock::starting_at(Duration::from_secs(1));
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let mut server = Server::with_transport(
        Box::new(net.bind(server_addr).unwrap()),
        Box::new(clock.clone()),
        bench_config(),
    )
    .unwrap();
    let mut client = Client::with_transport(
        Box::new(net.bind("10.0.0.2:5000".parse().unwrap()).unwrap()),
        Box::new(clock.clone()),
        server_addr,
        bench_config(),
    )
    .unwrap();
    for _ in 0..1000 {
        step_pair(&clock, &mut server, &mut client);
        if client.is_connected() && server.connection_count() == 1 {
            break;
        }
    }
    (clock, server, client)
}

/// One millisecond of the pair: client out, server in/out, client in. Returns the
/// messages the server received.
fn step_pair(clock: &ManualClock, server: &mut Server, client: &mut Client) -> u64 {
    client.tick_outgoing();
    let mut got = 0;
    server.tick_incoming();
    while let Some(ev) = server.poll_event() {
        if let Event::Data { .. } = ev {
            got += 1;
        }
    }
    server.tick_outgoing();
    client.tick_incoming();
    while client.poll_event().is_some() {}
    clock.advance(Duration::from_millis(1));
    got
}

/// W5: for each message size, `msgs` steady-state messages client → server (send, flush,
/// receive, ACK), after a warm-up; allocations per message from the counting allocator
/// (`count` runs a closure and returns its allocations on this thread) and ns per message.
pub fn w5(msgs: u64, count: &dyn Fn(&mut dyn FnMut()) -> u64) -> Vec<Value> {
    let max = bench_config().reliable_max_message_size();
    let cases: Vec<(usize, Channel)> = vec![
        (16, Channel::Reliable),
        (1000, Channel::Reliable),
        (1000, Channel::Unreliable),
        (1194, Channel::Unreliable),
        (10_000, Channel::Reliable),
        (100_000, Channel::Reliable),
        (max, Channel::Reliable),
    ];
    let mut out = Vec::new();
    for (size, channel) in cases {
        let (clock, mut server, mut client) = memory_pair();
        let msg = vec![0xa5u8; size];
        let n = if size > 10_000 { msgs / 10 } else { msgs }.max(10);
        // Warm-up: pools, arenas and queues reach their steady size.
        for _ in 0..n.min(200) {
            let _ = client.send(&msg, channel);
            step_pair(&clock, &mut server, &mut client);
        }
        for _ in 0..50 {
            step_pair(&clock, &mut server, &mut client);
        }
        let mut received = 0u64;
        let t = Instant::now();
        let allocs = count(&mut || {
            for _ in 0..n {
                let _ = client.send(&msg, channel);
                received += step_pair(&clock, &mut server, &mut client);
            }
        });
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        out.push(json!({
            "size": size,
            "channel": format!("{channel:?}"),
            "messages": n,
            "received": received,
            "allocs_per_msg": allocs as f64 / n as f64,
            "ns_per_msg": ns,
        }));
    }
    out
}

/// W6: `n` idle clients connected to one server; then `steps` ticks at 60 Hz of virtual
/// time, timing only the server's tick (`tick_incoming`, draining events,
/// `tick_outgoing`).
fn w6_run(
    n: usize,
    steps: usize,
    server_t: Box<dyn Transport>,
    server_addr: SocketAddr,
    mut client_t: impl FnMut(usize) -> Box<dyn Transport>,
    clock: ManualClock,
) -> Value {
    let config = Config {
        max_connections: 100_000,
        ..bench_config()
    };
    let mut server =
        Server::with_transport(server_t, Box::new(clock.clone()), config.clone()).expect("server");
    let mut clients: Vec<Client> = Vec::with_capacity(n);
    let tick_all = |server: &mut Server, clients: &mut Vec<Client>| {
        for c in clients.iter_mut() {
            c.tick_incoming();
            while c.poll_event().is_some() {}
            c.tick_outgoing();
        }
        server.tick_incoming();
        while server.poll_event().is_some() {}
        server.tick_outgoing();
    };
    // Connect in groups of 500, one virtual millisecond per step.
    for _ in 0..20_000 {
        if clients.len() < n {
            for _ in 0..500.min(n - clients.len()) {
                let i = clients.len();
                clients.push(
                    Client::with_transport(
                        client_t(i),
                        Box::new(clock.clone()),
                        server_addr,
                        config.clone(),
                    )
                    .expect("client"),
                );
            }
        }
        tick_all(&mut server, &mut clients);
        clock.advance(Duration::from_millis(1));
        if clients.len() == n && clients.iter().all(Client::is_connected) {
            break;
        }
    }
    let connected = server.connection_count();
    // Let the handshake traffic settle for fifteen virtual seconds: idle traffic reaches its
    // steady state (quality reports stop once four identical ones went out: 12 s at the
    // slow keepalive's 3 s).
    let tick = Duration::from_micros(16_667);
    for _ in 0..900 {
        tick_all(&mut server, &mut clients);
        clock.advance(tick);
    }
    let mut us = Vec::with_capacity(steps);
    let datagrams0 = server.stats().datagrams_received;
    let sent0 = server.stats().datagrams_sent;
    for _ in 0..steps {
        for c in clients.iter_mut() {
            c.tick_incoming();
            while c.poll_event().is_some() {}
            c.tick_outgoing();
        }
        us.push(timed_server_tick(&mut server));
        clock.advance(tick);
    }
    let datagrams = server.stats().datagrams_received - datagrams0;
    let sent = server.stats().datagrams_sent - sent0;
    w6_summary(n, connected, &mut us, datagrams, sent)
}

/// W6's JSON row: tick times (µs, one per measured tick) as mean and percentiles, and the
/// server's datagrams in and out per tick.
fn w6_summary(n: usize, connected: usize, us: &mut [f64], received: u64, sent: u64) -> Value {
    let steps = us.len().max(1) as f64;
    let mean = us.iter().sum::<f64>() / steps;
    let p50 = percentile(us, 50.0);
    let p99 = percentile(us, 99.0);
    let max = us.last().copied().unwrap_or(0.0);
    json!({
        "clients": n, "connected": connected, "ticks": us.len(),
        "mean_us": mean, "p50_us": p50, "p99_us": p99, "max_us": max,
        "datagrams_in_per_tick": received as f64 / steps,
        "datagrams_out_per_tick": sent as f64 / steps,
    })
}

/// One measured server tick of W6, in µs (a function of its own, so that a profiler can
/// count only it: `valgrind --tool=callgrind --collect-atstart=no
/// --toggle-collect='*timed_server_tick*'` on the `w6-memory` role).
#[inline(never)]
fn timed_server_tick(server: &mut Server) -> f64 {
    let t = Instant::now();
    server.tick_incoming();
    while server.poll_event().is_some() {}
    server.tick_outgoing();
    t.elapsed().as_secs_f64() * 1e6
}

/// W6 over the memory network.
pub fn w6_memory(n: usize, steps: usize) -> Value {
    let net = MemoryNetwork::with_queue_capacity(64 * 1024 * 1024);
    let clock = ManualClock::starting_at(Duration::from_secs(1));
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let server_t = Box::new(net.bind(server_addr).unwrap());
    let base = u32::from(std::net::Ipv4Addr::new(10, 1, 0, 0));
    w6_run(
        n,
        steps,
        server_t,
        server_addr,
        |i| {
            let ip = std::net::Ipv4Addr::from(base + (i / 50_000) as u32);
            let port = 10_000 + (i % 50_000) as u16;
            Box::new(net.bind(SocketAddr::from((ip, port))).unwrap())
        },
        clock,
    )
}

/// W6 over loopback UDP (clients one plain socket each; the server's socket moves
/// datagrams as `io` says), still on a virtual clock.
pub fn w6_udp(n: usize, steps: usize, io: super::SocketIo) -> Value {
    let clock = ManualClock::starting_at(Duration::from_secs(1));
    let opts = super::udp_opts(io);
    let server_t = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts).expect("bind");
    let server_addr = server_t.local_addr().unwrap();
    let client_opts = SocketOptions {
        batch: false,
        recv_buffer_size: 64 * 1024,
        send_buffer_size: 64 * 1024,
        ..SocketOptions::default()
    };
    w6_run(
        n,
        steps,
        Box::new(server_t),
        server_addr,
        |_| {
            let mut t = UdpTransport::bind_any_for(server_addr, &client_opts).expect("bind");
            t.connect(server_addr).expect("connect");
            Box::new(t)
        },
        clock,
    )
}

/// W6's baseline: the same datagrams with no protocol, over loopback with std sockets. `n`
/// client sockets; each client sends what an idle kcpnet client sends in steady state
/// (a 34-byte "Ping" every `period` ticks at its own phase — 60 for kcp2k's second, 180 for
/// the slow keepalive's 3 s) and the server answers each Ping with one datagram (kcpnet's
/// ACK, 29 bytes, or ACK + Pong, 58); the clients whose answers carry a Pong — the share
/// `acks_back` of them — send a 29-byte "ACK" one tick later. The server thus sees the kcpnet
/// row's datagrams in and out per tick. Only the server's work is timed: reading every
/// queued datagram (one `recv_from` each) and sending its answers (one `send_to` each). The
/// floor W6 over UDP cannot go below on this machine.
pub fn w6_raw_udp(n: usize, steps: usize, period: usize, acks_back: f64) -> Value {
    use std::net::UdpSocket;
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    server.set_nonblocking(true).unwrap();
    // The receive buffer a kcpnet server asks for (the default holds ~250 small datagrams).
    let _ = socket2::SockRef::from(&server).set_recv_buffer_size(4 << 20);
    let server_addr = server.local_addr().unwrap();
    let clients: Vec<UdpSocket> = (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).unwrap();
            s.connect(server_addr).unwrap();
            s
        })
        .collect();
    // A Ping whose answer carries a Pong starts with 4, the others with 1.
    let ping = [1u8; 34];
    let ping_pong = [4u8; 34];
    let ack = [2u8; 29];
    let answer = [3u8; 29];
    let answer_pong = [3u8; 58];
    // Clients `0..pongs` get Pongs (and ACK them).
    let pongs = (acks_back * n as f64).round() as usize;
    let mut buf = [0u8; 2048];
    let mut us = Vec::with_capacity(steps);
    let (mut received, mut sent) = (0u64, 0u64);
    let ticks_per_second = period.max(2);
    let client_tick = |clients: &[UdpSocket], tick: usize, buf: &mut [u8]| {
        for (i, c) in clients.iter().enumerate() {
            while c.recv(buf).is_ok() {}
            let phase = (tick + i) % ticks_per_second;
            if phase == 0 {
                let _ = c.send(if i < pongs { &ping_pong } else { &ping });
            } else if phase == 1 && i < pongs {
                let _ = c.send(&ack);
            }
        }
    };
    // One period to warm up (every client sends once), then the measured ticks.
    for tick in 0..ticks_per_second + steps {
        client_tick(&clients, tick, &mut buf);
        let t = Instant::now();
        let (mut rx, mut tx) = (0u64, 0u64);
        while let Ok((len, from)) = server.recv_from(&mut buf) {
            rx += 1;
            if len == ping.len() {
                let reply = if buf[0] == ping_pong[0] {
                    &answer_pong[..]
                } else {
                    &answer[..]
                };
                if server.send_to(reply, from).is_ok() {
                    tx += 1;
                }
            }
        }
        let elapsed = t.elapsed().as_secs_f64() * 1e6;
        if tick >= ticks_per_second {
            us.push(elapsed);
            received += rx;
            sent += tx;
        }
    }
    w6_summary(n, n, &mut us, received, sent)
}
