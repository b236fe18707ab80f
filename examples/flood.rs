//! A Hello flood from thousands of spoofed-looking endpoints against a kcpnet server, while
//! legitimate clients connect and exchange echo messages. Loopback only, bounded in time.
//!
//! ```sh
//! cargo run --release --example flood -- --duration 10
//! ```
//!
//! Three processes, started by this one (the same binary with `--role`):
//! * **server**: a kcpnet `Server` on `127.0.0.1`, echoing every message, in its own process
//!   so that its memory (VmRSS from `/proc/self/status`) is its own;
//! * **spoofer**: `--sources` UDP sockets bound to distinct `127.20.x.y` addresses, sending
//!   valid kcp2k Hellos (the 30-byte datagram `01 00000000` + PUSH conv 0 sn 0 frg 0 wnd 128
//!   len 1 + `01`) round-robin as fast as one core can, and counting what each gets back;
//! * **clients**: `--clients` kcpnet `Client`s that start connecting one second into the
//!   flood, then send a reliable and an unreliable message every 100 ms and wait for echoes.
//!
//! Prints the Hellos per second the server received and answered (`EndpointStats`), the
//! server's memory before and after, the bytes each spoofed source got back per byte it
//! sent (largest and total), and the legitimate clients' connect and first-echo times
//! (p50 / p99 / max). Exits 0 when every legitimate client connected within 1 s and every
//! reliable message came back, the server's memory grew by less than 1 MiB beyond what its
//! legitimate connections held at most (`Server::connection_memory`, summed; 50 echoing
//! connections alone take more than 1 MiB of RSS), and no spoofed source got back more than
//! 3× the bytes it sent; 1 otherwise.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{exit, Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcpnet::{Channel, Client, Config, Error, Event, Server};

struct Args {
    role: Option<String>,
    duration: f64,
    sources: usize,
    clients: usize,
    port: u16,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        role: None,
        duration: 10.0,
        sources: 10_000,
        clients: 50,
        port: 0,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("role") => a.role = Some(p.value()?.string()?),
            Long("duration") => a.duration = p.value()?.parse()?,
            Long("sources") => a.sources = p.value()?.parse()?,
            Long("clients") => a.clients = p.value()?.parse()?,
            Long("port") => a.port = p.value()?.parse()?,
            Long("help") => {
                println!(
                    "flood [--duration SECONDS (10)] [--sources N (10000)] [--clients N (50)]"
                );
                exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if !(1.0..=120.0).contains(&a.duration) {
        return Err("--duration must be within 1..=120 seconds".into());
    }
    if a.sources == 0 || a.sources > 60_000 || a.clients == 0 || a.clients > 1000 {
        return Err("--sources must be in 1..=60000 and --clients in 1..=1000".into());
    }
    Ok(a)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("flood: {e}");
        exit(2)
    });
    match args.role.as_deref() {
        None => orchestrate(&args),
        Some("server") => server(args.clients),
        Some("spoofer") => spoofer(&args),
        Some("clients") => clients(&args),
        Some(other) => {
            eprintln!("flood: unknown role {other}");
            exit(2)
        }
    }
}

// ------------------------------------------------------------------ helpers

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`); 0 off Linux.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reads `key value` lines from a child until `end` (or EOF) into a map.
fn read_report(out: &mut BufReader<ChildStdout>, end: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        match out.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let l = line.trim();
        if l == end {
            break;
        }
        if let Some((k, v)) = l.split_once(' ') {
            map.insert(k.to_string(), v.to_string());
        }
    }
    map
}

fn num(map: &HashMap<String, String>, key: &str) -> f64 {
    map.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn spawn(role: &str, extra: &[String]) -> Child {
    let exe = std::env::current_exe().expect("the path of this program");
    Command::new(exe)
        .arg("--role")
        .arg(role)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {role} process: {e}"))
}

/// `v <= max`, false for NaN (a figure that was never measured fails).
fn at_most(v: f64, max: f64) -> bool {
    v <= max
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ------------------------------------------------------------- orchestrator

fn orchestrate(a: &Args) {
    let mut server = spawn("server", &["--clients".to_string(), a.clients.to_string()]);
    let mut server_out = BufReader::new(server.stdout.take().expect("piped"));
    let ready = read_report(&mut server_out, "READY");
    let port = num(&ready, "port") as u16;
    let rss_before = num(&ready, "rss");
    println!(
        "server on 127.0.0.1:{port}; flooding for {} s from {} sources, {} legitimate clients",
        a.duration, a.sources, a.clients
    );

    let common = [
        "--port".to_string(),
        port.to_string(),
        "--duration".to_string(),
        a.duration.to_string(),
    ];
    let mut extra = common.to_vec();
    extra.extend(["--sources".to_string(), a.sources.to_string()]);
    let mut spoofer = spawn("spoofer", &extra);
    let mut spoofer_out = BufReader::new(spoofer.stdout.take().expect("piped"));
    let flooding = read_report(&mut spoofer_out, "FLOODING");
    let bound = num(&flooding, "sources");
    // The clients start one second into the flood.
    std::thread::sleep(Duration::from_secs(1));
    let mut extra = common.to_vec();
    extra.extend(["--clients".to_string(), a.clients.to_string()]);
    let mut clients = spawn("clients", &extra);
    let mut clients_out = BufReader::new(clients.stdout.take().expect("piped"));

    let spoof = read_report(&mut spoofer_out, "END");
    let legit = read_report(&mut clients_out, "END");
    let _ = spoofer.wait();
    let _ = clients.wait();
    // Stop the server and take its report.
    if let Some(mut stdin) = server.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let srv = read_report(&mut server_out, "END");
    let _ = server.wait();

    let flood_s = num(&spoof, "seconds");
    let hellos_sent = num(&spoof, "hellos_sent");
    println!();
    println!(
        "spoofer: {bound} sources bound, {hellos_sent} Hellos sent in {flood_s:.2} s ({:.0}/s)",
        hellos_sent / flood_s
    );
    println!(
        "server:  {} datagrams received ({:.0}/s over the flood), {} Hello replies ({:.0}/s), \
         {} dropped unknown, {} connections accepted",
        num(&srv, "datagrams_received"),
        num(&srv, "datagrams_received") / flood_s,
        num(&srv, "hello_replies"),
        num(&srv, "hello_replies") / flood_s,
        num(&srv, "dropped_unknown"),
        num(&srv, "connections_accepted"),
    );
    let rss_after = num(&srv, "rss");
    let growth = rss_after - rss_before;
    let conn_memory = num(&srv, "conn_memory");
    // What the flood costs: the growth beyond what the legitimate connections hold.
    let flood_growth = growth - conn_memory;
    println!(
        "server memory: VmRSS {:.0} KiB before, {:.0} KiB once all clients connected, {:.0} KiB \
         after (growth {:.0} KiB), peak VmHWM {:.0} KiB; the {} connections held up to {:.0} KiB \
         (Server::connection_memory), growth beyond them {:.0} KiB",
        rss_before / 1024.0,
        num(&srv, "rss_connected") / 1024.0,
        rss_after / 1024.0,
        growth / 1024.0,
        num(&srv, "hwm") / 1024.0,
        num(&srv, "connections_accepted"),
        conn_memory / 1024.0,
        flood_growth / 1024.0,
    );
    println!(
        "server loop: {:.0} events handled, longest frame {:.1} ms",
        num(&srv, "events"),
        num(&srv, "max_loop_ms"),
    );
    let max_ratio = num(&spoof, "max_ratio");
    println!(
        "spoofed sources: {} bytes sent, {} bytes received back (total {:.2}×), largest per \
         source {:.2}× ({} replies for {} Hellos)",
        num(&spoof, "bytes_sent"),
        num(&spoof, "bytes_received"),
        num(&spoof, "bytes_received") / num(&spoof, "bytes_sent"),
        max_ratio,
        num(&spoof, "replies"),
        hellos_sent,
    );
    println!(
        "legitimate clients: {}/{} connected, connect p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         first echo p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        num(&legit, "connected"),
        a.clients,
        num(&legit, "connect_p50"),
        num(&legit, "connect_p99"),
        num(&legit, "connect_max"),
        num(&legit, "echo_p50"),
        num(&legit, "echo_p99"),
        num(&legit, "echo_max"),
    );
    println!(
        "echoes: reliable {}/{} back, unreliable {}/{} back",
        num(&legit, "reliable_echoed"),
        num(&legit, "reliable_sent"),
        num(&legit, "unreliable_echoed"),
        num(&legit, "unreliable_sent"),
    );

    let mut failures = Vec::new();
    if num(&legit, "connected") != a.clients as f64 || !at_most(num(&legit, "connect_max"), 1000.0)
    {
        failures.push("not every legitimate client connected within 1 s");
    }
    if num(&legit, "reliable_echoed") != num(&legit, "reliable_sent")
        || num(&legit, "echo_max").is_nan()
    {
        failures.push("not every reliable message was echoed");
    }
    if !at_most(flood_growth, 1024.0 * 1024.0 - 1.0) {
        failures.push("the server's memory grew by 1 MiB or more beyond its connections");
    }
    if !at_most(max_ratio, 3.0) {
        failures.push("a spoofed source got back more than 3× its bytes");
    }
    if failures.is_empty() {
        println!("PASS");
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        exit(1);
    }
}

// ------------------------------------------------------------------- server

fn server(expected_clients: usize) {
    let config = Config {
        dual_mode: false,
        ..Config::default()
    };
    let mut server = Server::bind("127.0.0.1:0", config).expect("bind the server");
    let port = server.local_addr().expect("local address").port();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            // "stop" or EOF (the orchestrator went away) ends the server.
            let _ = std::io::stdin().read(&mut buf);
            stop.store(true, Ordering::SeqCst);
        });
    }
    // Warm up (the receive buffer, the event queue), then report the baseline.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        serve(&mut server);
        let _ = server.wait(Duration::from_millis(5));
    }
    println!("port {port}\nrss {}\nREADY", status_bytes("VmRSS"));
    let _ = std::io::stdout().flush();
    let mut events = 0u64;
    let mut max_loop = Duration::ZERO;
    let mut rss_connected = 0;
    let mut frames = 0u64;
    // The most the connections held at once (Server::connection_memory, summed).
    let mut conn_memory = 0usize;
    // Bounded: the orchestrator stops it, and it gives up after 10 minutes regardless.
    let deadline = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let t = Instant::now();
        events += serve(&mut server);
        max_loop = max_loop.max(t.elapsed());
        if rss_connected == 0 && server.connection_count() >= expected_clients {
            rss_connected = status_bytes("VmRSS");
        }
        frames += 1;
        if frames.is_multiple_of(16) {
            let held: usize = server
                .connections()
                .filter_map(|id| server.connection_memory(id))
                .sum();
            conn_memory = conn_memory.max(held);
        }
        if let Err(e) = server.wait(Duration::from_millis(5)) {
            eprintln!("server: wait failed: {e}");
        }
    }
    let s = server.stats();
    println!(
        "rss_connected {rss_connected}\nconn_memory {conn_memory}\nrss {}\nhwm {}\ndatagrams_received {}\nhello_replies {}\ndropped_unknown {}\n\
         connections_accepted {}\nevents {events}\nmax_loop_ms {:.3}\nEND",
        status_bytes("VmRSS"),
        status_bytes("VmHWM"),
        s.datagrams_received,
        s.hello_replies,
        s.dropped_unknown,
        s.connections_accepted,
        max_loop.as_secs_f64() * 1000.0
    );
    let _ = std::io::stdout().flush();
    server.shutdown();
}

/// One frame: receive, echo every message, flush. Returns the events handled.
fn serve(server: &mut Server) -> u64 {
    server.tick_incoming();
    let mut n = 0;
    let mut drain = server.drain_events();
    while let Some((event, server)) = drain.next() {
        n += 1;
        if let Event::Data { id, channel, data } = event {
            match server.send(id, data, channel) {
                Ok(()) | Err(Error::ConnectionClosed) => {}
                Err(e) => eprintln!("server: echo failed: {e}"),
            }
        }
    }
    drop(drain);
    server.tick_outgoing();
    n
}

// ------------------------------------------------------------------ spoofer

/// The client Hello of kcp2k: `[1][cookie 0]`, PUSH conv 0 sn 0 frg 0 wnd 128 len 1, `[1]`.
fn hello(ts: u32) -> [u8; 30] {
    let mut d = [0u8; 30];
    d[0] = 1; // reliable channel, cookie 0
    d[9] = 81; // PUSH (conv 0 in bytes 5..9)
    d[11..13].copy_from_slice(&128u16.to_le_bytes()); // wnd
    d[13..17].copy_from_slice(&ts.to_le_bytes());
    d[25..29].copy_from_slice(&1u32.to_le_bytes()); // len
    d[29] = 1; // Hello
    d
}

fn spoofer(a: &Args) {
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, a.port));
    let mut sockets = Vec::with_capacity(a.sources);
    for i in 0..a.sources {
        // 127.20.x.y with y in 1..=250: distinct loopback addresses, one port each.
        let ip = Ipv4Addr::new(
            127,
            20 + (i / 62_500) as u8,
            ((i / 250) % 250) as u8,
            (i % 250 + 1) as u8,
        );
        match UdpSocket::bind((ip, 0)) {
            Ok(s) => {
                s.set_nonblocking(true).expect("non-blocking");
                sockets.push(s);
            }
            Err(e) => {
                eprintln!("spoofer: bound {} sources, then {ip}: {e}", sockets.len());
                break;
            }
        }
    }
    let n = sockets.len().max(1);
    let mut sent = vec![0u64; n];
    let mut got = vec![0u64; n];
    let mut replies = 0u64;
    println!("sources {}\nFLOODING", sockets.len());
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let run = Duration::from_secs_f64(a.duration);
    let mut buf = [0u8; 2048];
    let mut round = 0u32;
    let mut hellos = 0u64;
    let drain = |sockets: &[UdpSocket], got: &mut [u64], replies: &mut u64, buf: &mut [u8]| {
        for (i, s) in sockets.iter().enumerate() {
            // Bounded: a socket's buffer holds a few hundred replies at most.
            for _ in 0..10_000 {
                match s.recv_from(buf) {
                    Ok((len, _)) => {
                        got[i] += len as u64;
                        *replies += 1;
                    }
                    Err(_) => break,
                }
            }
        }
    };
    while start.elapsed() < run {
        let d = hello(round);
        for (i, s) in sockets.iter().enumerate() {
            match s.send_to(&d, server) {
                Ok(len) => {
                    sent[i] += len as u64;
                    hellos += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {} // ICMP errors reported on this socket: ignore
            }
        }
        round += 1;
        // Read the replies every few rounds, before a socket's buffer could overflow.
        if round.is_multiple_of(4) {
            drain(&sockets, &mut got, &mut replies, &mut buf);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // Let the server's last replies arrive.
    std::thread::sleep(Duration::from_millis(500));
    drain(&sockets, &mut got, &mut replies, &mut buf);
    let total_sent: u64 = sent.iter().sum();
    let total_got: u64 = got.iter().sum();
    let max_ratio = sent
        .iter()
        .zip(&got)
        .map(|(&s, &g)| {
            if s == 0 {
                if g == 0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                g as f64 / s as f64
            }
        })
        .fold(0.0f64, f64::max);
    println!(
        "seconds {seconds}\nhellos_sent {hellos}\nbytes_sent {total_sent}\nbytes_received {total_got}\n\
         replies {replies}\nmax_ratio {max_ratio}\nEND"
    );
}

// ------------------------------------------------------------------ clients

struct Legit {
    client: Client,
    start: Instant,
    connected: Option<Duration>,
    first_echo: Option<Duration>,
    next_send: Instant,
    seq: u64,
    reliable_sent: u64,
    reliable_echoed: u64,
    unreliable_sent: u64,
    unreliable_echoed: u64,
}

fn clients(a: &Args) {
    let config = Config::default();
    // Every client sends until one second before the flood ends, then waits for the rest.
    let send_for = Duration::from_secs_f64((a.duration - 2.0).max(1.0));
    let begin = Instant::now();
    let mut legit: Vec<Legit> = (0..a.clients)
        .map(|_| Legit {
            client: Client::connect(("127.0.0.1", a.port), config.clone()).expect("connect"),
            start: Instant::now(),
            connected: None,
            first_echo: None,
            next_send: Instant::now(),
            seq: 0,
            reliable_sent: 0,
            reliable_echoed: 0,
            unreliable_sent: 0,
            unreliable_echoed: 0,
        })
        .collect();
    // After sending stops, up to 10 s for the last echoes: retransmission timers back off
    // while the flood fills the server's socket buffer.
    let deadline = begin + send_for + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = Instant::now();
        let sending = now < begin + send_for;
        let mut outstanding = false;
        for l in &mut legit {
            l.client.tick_incoming();
            while let Some(e) = l.client.poll_event() {
                match e {
                    Event::Connected { .. } => l.connected = Some(l.start.elapsed()),
                    Event::Data { channel, .. } => {
                        if l.first_echo.is_none() {
                            l.first_echo = Some(l.start.elapsed());
                        }
                        match channel {
                            Channel::Reliable => l.reliable_echoed += 1,
                            _ => l.unreliable_echoed += 1,
                        }
                    }
                    Event::Disconnected { reason, .. } => {
                        eprintln!("clients: a client was disconnected: {reason:?}")
                    }
                    _ => {}
                }
            }
            if sending && l.client.is_connected() && now >= l.next_send {
                l.next_send = now + Duration::from_millis(100);
                l.seq += 1;
                let m = format!("echo {} from a legitimate client", l.seq);
                if l.client.send(m.as_bytes(), Channel::Reliable).is_ok() {
                    l.reliable_sent += 1;
                }
                if l.client.send(m.as_bytes(), Channel::Unreliable).is_ok() {
                    l.unreliable_sent += 1;
                }
            }
            outstanding |= l.connected.is_none() || l.reliable_echoed < l.reliable_sent;
            l.client.tick_outgoing();
        }
        if !sending && !outstanding {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let mut connect: Vec<f64> = legit.iter().filter_map(|l| ms(l.connected)).collect();
    let mut echo: Vec<f64> = legit.iter().filter_map(|l| ms(l.first_echo)).collect();
    connect.sort_by(f64::total_cmp);
    echo.sort_by(f64::total_cmp);
    let echo_max = if echo.len() == legit.len() {
        echo.last().copied().unwrap_or(f64::NAN)
    } else {
        f64::NAN // some client never got an echo
    };
    let sum = |f: fn(&Legit) -> u64| legit.iter().map(f).sum::<u64>();
    println!(
        "connected {}\nconnect_p50 {}\nconnect_p99 {}\nconnect_max {}\necho_p50 {}\necho_p99 {}\n\
         echo_max {echo_max}\nreliable_sent {}\nreliable_echoed {}\nunreliable_sent {}\n\
         unreliable_echoed {}\nEND",
        connect.len(),
        percentile(&connect, 50.0),
        percentile(&connect, 99.0),
        connect.last().copied().unwrap_or(f64::NAN),
        percentile(&echo, 50.0),
        percentile(&echo, 99.0),
        sum(|l| l.reliable_sent),
        sum(|l| l.reliable_echoed),
        sum(|l| l.unreliable_sent),
        sum(|l| l.unreliable_echoed),
    );
}
