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
//!
//! ```sh
//! cargo run --release --example flood -- --secure --duration 10
//! ```
//!
//! `--secure` (the `secure` feature) floods a server in `SecurityMode::Required` with
//! `--hellos` (default 100,000) Hellos carrying forged connect tokens, paced evenly over
//! `--duration` from the same `--sources` spoofed addresses: a mix, in turn, of random
//! bytes, tokens sealed under another key, genuine tokens with one sealed byte flipped,
//! tokens of another protocol id, expired tokens and tokens for another server (the last
//! two sealed under the server's own key, as a captured old token or one for another server
//! of the fleet would be; another key, a flipped byte and another server each cost the
//! server one XChaCha20-Poly1305 open, the others fail its cheaper checks first), a fresh
//! token for every Hello. Each is the 597-byte Hello of `docs/PROTOCOL.md` ("The Hello
//! with a token"); before the flood one Hello built the same way with a valid token, from
//! a control socket, must get the 63-byte reply. The
//! legitimate clients connect with valid tokens (`Client::connect_with_token`). Besides the
//! figures above it prints the forged Hellos by kind, the server's token counters and the
//! datagrams the kernel dropped at the server's socket (`/proc/net/udp`). Exits 0 when every
//! legitimate client connected within 1 s and every reliable message came back, the
//! server's memory grew by less than 1 MiB beyond its connections, no spoofed source got a
//! single byte back, every forged Hello was sent and is accounted for by the counter of its
//! kind (`tokens_invalid`, `tokens_expired`, `tokens_wrong_server`; exactly, unless the
//! kernel dropped datagrams at the server's socket, then within those drops), and the
//! server's `hello_replies` are the legitimate Hellos (one per client, plus its Hello
//! retransmissions, plus the control Hello) and nothing more; 1 otherwise.

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
    /// `--secure`: the forged-token flood against `SecurityMode::Required`.
    secure: bool,
    /// `--secure`: how many forged-token Hellos the spoofer sends.
    hellos: u64,
    /// `--secure`: the server's `PrivateKey` in hex, for the child processes.
    key: Option<String>,
}

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        role: None,
        duration: 10.0,
        sources: 10_000,
        clients: 50,
        port: 0,
        secure: false,
        hellos: 100_000,
        key: None,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("role") => a.role = Some(p.value()?.string()?),
            Long("duration") => a.duration = p.value()?.parse()?,
            Long("sources") => a.sources = p.value()?.parse()?,
            Long("clients") => a.clients = p.value()?.parse()?,
            Long("port") => a.port = p.value()?.parse()?,
            Long("secure") => a.secure = true,
            Long("hellos") => a.hellos = p.value()?.parse()?,
            Long("key") => a.key = Some(p.value()?.string()?),
            Long("help") => {
                println!(
                    "flood [--duration SECONDS (10)] [--sources N (10000)] [--clients N (50)] \
                     [--secure [--hellos N (100000)]]"
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
    if !(1..=10_000_000).contains(&a.hellos) {
        return Err("--hellos must be in 1..=10000000".into());
    }
    if (a.secure || a.key.is_some()) && !cfg!(feature = "secure") {
        return Err("--secure needs the `secure` feature (on by default)".into());
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
        Some("server") => server(&args),
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

/// Datagrams the kernel dropped at the UDP socket bound to `127.0.0.1:port` (its receive
/// buffer was full): the `drops` column of `/proc/net/udp`; 0 off Linux.
fn udp_drops(port: u16) -> u64 {
    let ip = u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets());
    let local = format!("{ip:08X}:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
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
    // `--secure`: one server key for the run, handed to the children.
    let key = if a.secure { new_key_hex() } else { None };
    let with_key = |mut args: Vec<String>| {
        if let Some(k) = &key {
            args.extend(["--key".to_string(), k.clone()]);
        }
        args
    };
    let mut server = spawn(
        "server",
        &with_key(vec!["--clients".to_string(), a.clients.to_string()]),
    );
    let mut server_out = BufReader::new(server.stdout.take().expect("piped"));
    let ready = read_report(&mut server_out, "READY");
    let port = num(&ready, "port") as u16;
    let rss_before = num(&ready, "rss");
    if a.secure {
        println!(
            "server on 127.0.0.1:{port} (SecurityMode::Required); {} forged-token Hellos over \
             {} s from {} sources, {} legitimate token clients",
            a.hellos, a.duration, a.sources, a.clients
        );
    } else {
        println!(
            "server on 127.0.0.1:{port}; flooding for {} s from {} sources, {} legitimate clients",
            a.duration, a.sources, a.clients
        );
    }

    let common = [
        "--port".to_string(),
        port.to_string(),
        "--duration".to_string(),
        a.duration.to_string(),
    ];
    let mut extra = common.to_vec();
    extra.extend(["--sources".to_string(), a.sources.to_string()]);
    if a.secure {
        extra.extend(["--hellos".to_string(), a.hellos.to_string()]);
    }
    let mut spoofer = spawn("spoofer", &with_key(extra));
    let mut spoofer_out = BufReader::new(spoofer.stdout.take().expect("piped"));
    let flooding = read_report(&mut spoofer_out, "FLOODING");
    let bound = num(&flooding, "sources");
    // The clients start one second into the flood.
    std::thread::sleep(Duration::from_secs(1));
    let mut extra = common.to_vec();
    extra.extend(["--clients".to_string(), a.clients.to_string()]);
    let mut clients = spawn("clients", &with_key(extra));
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

    let mut failures: Vec<String> = Vec::new();
    if a.secure {
        failures = secure_report(a, &ready, &srv, &spoof, &legit);
    }
    if num(&legit, "connected") != a.clients as f64 || !at_most(num(&legit, "connect_max"), 1000.0)
    {
        failures.push("not every legitimate client connected within 1 s".into());
    }
    if num(&legit, "reliable_echoed") != num(&legit, "reliable_sent")
        || num(&legit, "echo_max").is_nan()
    {
        failures.push("not every reliable message was echoed".into());
    }
    if !at_most(flood_growth, 1024.0 * 1024.0 - 1.0) {
        failures.push("the server's memory grew by 1 MiB or more beyond its connections".into());
    }
    // Secure mode asks for more (no byte back at all: `secure_report`).
    if !a.secure && !at_most(max_ratio, 3.0) {
        failures.push("a spoofed source got back more than 3× its bytes".into());
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

/// The forged tokens of `--secure`, in the spoofer's turn order: the report key, what they
/// are, and the server counter that must count each of them.
const FORGED_KINDS: [(&str, &str, &str); 6] = [
    ("random", "random bytes", "tokens_invalid"),
    ("other_key", "sealed under another key", "tokens_invalid"),
    (
        "tampered",
        "genuine, one sealed byte flipped",
        "tokens_invalid",
    ),
    ("other_protocol", "another protocol id", "tokens_invalid"),
    ("expired", "expired (the server's key)", "tokens_expired"),
    (
        "other_server",
        "for another server (the server's key)",
        "tokens_wrong_server",
    ),
];

/// The counters that account for the forged Hellos.
const TOKEN_COUNTERS: [&str; 3] = ["tokens_invalid", "tokens_expired", "tokens_wrong_server"];

/// `--secure`: prints the forged Hellos by kind, the server's token counters and its Hello
/// replies; returns what failed.
fn secure_report(
    a: &Args,
    ready: &HashMap<String, String>,
    srv: &HashMap<String, String>,
    spoof: &HashMap<String, String>,
    legit: &HashMap<String, String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let sent = |key: &str| num(spoof, &format!("sent_{key}"));
    let hellos_sent = num(spoof, "hellos_sent");
    // What the kernel dropped at the server's socket (a full receive buffer) never reached
    // kcpnet: forged Hellos (or legitimate datagrams) the counters cannot see.
    let drops = num(srv, "udp_drops") - num(ready, "udp_drops");
    println!();
    println!(
        "forged Hellos ({} bytes each, {:.0}/s):",
        num(spoof, "hello_bytes"),
        hellos_sent / num(spoof, "seconds"),
    );
    println!("  {:<40} {:>8}  counted in", "token", "sent");
    for (key, what, counter) in FORGED_KINDS {
        println!("  {what:<40} {:>8}  {counter}", sent(key));
    }
    println!("  {:<40} {:>8}", "total", hellos_sent);
    let counted: f64 = TOKEN_COUNTERS.iter().map(|c| num(srv, c)).sum();
    println!(
        "server token counters: tokens_invalid {} tokens_expired {} tokens_wrong_server {} (sum \
         {counted}), tokens_in_use {}, refused_unauthenticated {}; datagrams dropped by the \
         kernel at the server's socket {drops}",
        num(srv, "tokens_invalid"),
        num(srv, "tokens_expired"),
        num(srv, "tokens_wrong_server"),
        num(srv, "tokens_in_use"),
        num(srv, "refused_unauthenticated"),
    );
    let control = num(spoof, "control_reply");
    let replies = num(srv, "hello_replies");
    let clients = a.clients as f64;
    // One Hello per client, plus its retransmissions before it connected (at most its KCP
    // retransmissions by then), plus the control Hello.
    let retransmits = num(legit, "retransmits_at_connect");
    println!(
        "Hello replies: {replies}, for {} to {} legitimate Hellos ({} clients, {retransmits} \
         retransmissions before connecting, 1 control Hello: answered with {control} bytes); \
         spoofed sources got {} bytes back in {} datagrams",
        clients + 1.0,
        clients + 1.0 + retransmits,
        a.clients,
        num(spoof, "bytes_received"),
        num(spoof, "replies"),
    );
    println!(
        "server shared buffers (EndpointStats::shared_buffer_bytes, the token table included): \
         {:.0} KiB before, {:.0} KiB after",
        num(ready, "shared") / 1024.0,
        num(srv, "shared") / 1024.0,
    );

    if hellos_sent != a.hellos as f64 {
        failures.push(format!(
            "the spoofer sent {hellos_sent} of {} forged Hellos",
            a.hellos
        ));
    }
    if control != 63.0 {
        failures.push(
            "the control Hello (a valid token, the forged Hellos' format) got no 63-byte reply"
                .into(),
        );
    }
    for counter in TOKEN_COUNTERS {
        let expected: f64 = FORGED_KINDS
            .iter()
            .filter(|k| k.2 == counter)
            .map(|k| sent(k.0))
            .sum();
        let got = num(srv, counter);
        if !(got <= expected && got >= expected - drops) {
            failures.push(format!(
                "{counter} is {got}, not the {expected} forged Hellos of its kinds (less the \
                 {drops} kernel drops)"
            ));
        }
    }
    if num(srv, "tokens_in_use") != 0.0 || num(srv, "refused_unauthenticated") != 0.0 {
        failures.push("tokens_in_use or refused_unauthenticated counted a Hello".into());
    }
    if !(replies >= clients + 1.0 && replies <= clients + 1.0 + retransmits) {
        failures.push(format!(
            "{replies} Hello replies: more (or fewer) than the legitimate Hellos"
        ));
    }
    if num(spoof, "bytes_received") != 0.0 {
        failures.push("a spoofed source got a reply to a forged Hello".into());
    }
    if num(srv, "connections_accepted") != clients {
        failures.push("the server accepted another number of connections than clients".into());
    }
    failures
}

/// A fresh `PrivateKey` for the run, in hex (`--secure`).
#[cfg(feature = "secure")]
fn new_key_hex() -> Option<String> {
    let key = kcpnet::secure::PrivateKey::generate();
    Some(key.as_bytes().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(not(feature = "secure"))]
fn new_key_hex() -> Option<String> {
    None
}

// ------------------------------------------------------------------- server

fn server(a: &Args) {
    let expected_clients = a.clients;
    let config = Config {
        dual_mode: false,
        // `--secure`: only token clients (the bound address, 127.0.0.1:port, is the public
        // address tokens must name: `Server::bind` adds it).
        #[cfg(feature = "secure")]
        security: a.key.as_deref().map(|k| {
            kcpnet::secure::SecureConfig::required(forged::PROTOCOL_ID, forged::key(k), Vec::new())
        }),
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
    println!(
        "port {port}\nrss {}\nshared {}\nudp_drops {}\nREADY",
        status_bytes("VmRSS"),
        server.stats().shared_buffer_bytes,
        udp_drops(port)
    );
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
         connections_accepted {}\nevents {events}\nmax_loop_ms {:.3}\n\
         tokens_invalid {}\ntokens_expired {}\ntokens_wrong_server {}\ntokens_in_use {}\n\
         refused_unauthenticated {}\nshared {}\nudp_drops {}\nEND",
        status_bytes("VmRSS"),
        status_bytes("VmHWM"),
        s.datagrams_received,
        s.hello_replies,
        s.dropped_unknown,
        s.connections_accepted,
        max_loop.as_secs_f64() * 1000.0,
        s.tokens_invalid,
        s.tokens_expired,
        s.tokens_wrong_server,
        s.tokens_in_use,
        s.refused_unauthenticated,
        s.shared_buffer_bytes,
        udp_drops(port),
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
    #[cfg(feature = "secure")]
    if let Some(key) = a.key.as_deref() {
        return forged::flood(a, forged::key(key), server, &sockets);
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
    let drain = drain_replies;
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
    let max_ratio = max_ratio(&sent, &got);
    println!(
        "seconds {seconds}\nhellos_sent {hellos}\nbytes_sent {total_sent}\nbytes_received {total_got}\n\
         replies {replies}\nmax_ratio {max_ratio}\nEND"
    );
}

/// Reads every reply waiting at the spoofed sources: bytes per source into `got`.
fn drain_replies(sockets: &[UdpSocket], got: &mut [u64], replies: &mut u64, buf: &mut [u8]) {
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
}

/// The largest bytes received ÷ bytes sent of any source.
fn max_ratio(sent: &[u64], got: &[u64]) -> f64 {
    sent.iter()
        .zip(got)
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
        .fold(0.0f64, f64::max)
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
    /// KCP retransmissions when it connected (its Hello's among them).
    retransmits_at_connect: u64,
}

fn clients(a: &Args) {
    let config = Config::default();
    // Every client sends until one second before the flood ends, then waits for the rest.
    let send_for = Duration::from_secs_f64((a.duration - 2.0).max(1.0));
    let begin = Instant::now();
    let connect = |_i: usize| {
        // `--secure`: a valid token for this server, made by the "backend" (this process).
        #[cfg(feature = "secure")]
        if let Some(key) = a.key.as_deref() {
            let token = forged::valid_token(&forged::key(key), a.port, _i as u64 + 1);
            return Client::connect_with_token(&token, config.clone()).expect("connect");
        }
        Client::connect(("127.0.0.1", a.port), config.clone()).expect("connect")
    };
    let mut legit: Vec<Legit> = (0..a.clients)
        .map(|i| Legit {
            client: connect(i),
            start: Instant::now(),
            connected: None,
            first_echo: None,
            next_send: Instant::now(),
            seq: 0,
            reliable_sent: 0,
            reliable_echoed: 0,
            unreliable_sent: 0,
            unreliable_echoed: 0,
            retransmits_at_connect: 0,
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
                    Event::Connected { .. } => {
                        l.connected = Some(l.start.elapsed());
                        l.retransmits_at_connect = l.client.connection_stats().retransmits;
                    }
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
         unreliable_echoed {}\nretransmits_at_connect {}\nEND",
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
        sum(|l| l.retransmits_at_connect),
    );
}

// ------------------------------------------------------------------ secure

/// `--secure`: the connect tokens of the run (valid and forged) and the Hello that carries
/// them, built from the bytes of `docs/PROTOCOL.md` ("The Hello with a token").
#[cfg(feature = "secure")]
mod forged {
    use std::io::{ErrorKind, Write};
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
    use std::process::exit;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use kcpnet::secure::{ConnectToken, PrivateKey, TokenParams, CONNECT_TOKEN_BYTES};
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    use super::{drain_replies, max_ratio, Args, FORGED_KINDS};

    /// The protocol id of the run's tokens.
    pub const PROTOCOL_ID: u64 = 0x4b43_504e_464c_4f44;
    /// The token blob a Hello carries: the token's bytes 0..56 and 273..772.
    const BLOB_BYTES: usize = 555;
    const PUBLIC_END: usize = 56;
    const PRIVATE_AT: usize = 273;
    /// The token client's Hello: 29 bytes of headers, then 1 + 9 + 3 + 555.
    pub const HELLO_BYTES: usize = 29 + 1 + 9 + 3 + BLOB_BYTES;

    /// The key from its hex form (`--key`), or exit 2.
    pub fn key(hex: &str) -> PrivateKey {
        let mut bytes = [0u8; 32];
        let ok = hex.len() == 64
            && bytes.iter_mut().enumerate().all(|(i, b)| {
                u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("x"), 16)
                    .map(|v| *b = v)
                    .is_ok()
            });
        if !ok {
            eprintln!("flood: --key must be 64 hex digits");
            exit(2);
        }
        PrivateKey::from_bytes(bytes)
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn server_v4(port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    /// What the backend gives a legitimate client: a token for this server, valid 60 s.
    pub fn valid_token(key: &PrivateKey, port: u16, client_id: u64) -> ConnectToken {
        ConnectToken::generate(
            key,
            &TokenParams {
                protocol_id: PROTOCOL_ID,
                client_id,
                server_addresses: vec![server_v4(port)],
                user_data: format!("legitimate client {client_id}").into_bytes(),
                created_unix_secs: unix_now(),
                valid_secs: 60,
            },
        )
        .expect("a valid token")
    }

    /// The blob of a token (what its Hello carries).
    fn blob(token: &ConnectToken) -> [u8; BLOB_BYTES] {
        let b = token.as_bytes();
        debug_assert_eq!(b.len(), CONNECT_TOKEN_BYTES);
        let mut out = [0u8; BLOB_BYTES];
        out[..PUBLIC_END].copy_from_slice(&b[..PUBLIC_END]);
        out[PUBLIC_END..].copy_from_slice(&b[PRIVATE_AT..]);
        out
    }

    /// A token client's Hello carrying `blob`: `[1][cookie 0]`, PUSH conv 0 sn 0 frg 0
    /// wnd 128 len 568, `[1]`, the extension block offering bits 0–3, option 1 (555 bytes).
    fn hello(ts: u32, blob: &[u8; BLOB_BYTES]) -> [u8; HELLO_BYTES] {
        let mut d = [0u8; HELLO_BYTES];
        d[0] = 1; // reliable channel, cookie 0
        d[9] = 81; // PUSH (conv 0 in bytes 5..9)
        d[11..13].copy_from_slice(&128u16.to_le_bytes()); // wnd
        d[13..17].copy_from_slice(&ts.to_le_bytes());
        d[25..29].copy_from_slice(&((HELLO_BYTES - 29) as u32).to_le_bytes()); // len
        d[29] = 1; // Hello
        d[30..39].copy_from_slice(&[0x4B, 0x4E, 0x45, 0x54, 1, 0x0F, 0, 0, 0]);
        d[39] = 1; // option: the token blob
        d[40..42].copy_from_slice(&(BLOB_BYTES as u16).to_le_bytes());
        d[42..].copy_from_slice(blob);
        d
    }

    /// Makes the forged tokens, a fresh one per Hello.
    struct Forger {
        key: PrivateKey,
        other_key: PrivateKey,
        server: SocketAddr,
        now: u64,
        rng: StdRng,
    }

    impl Forger {
        fn token(
            &mut self,
            other_key: bool,
            protocol_id: u64,
            server: SocketAddr,
            created: u64,
        ) -> ConnectToken {
            let params = TokenParams {
                protocol_id,
                client_id: self.rng.gen(),
                server_addresses: vec![server],
                user_data: Vec::new(),
                created_unix_secs: created,
                valid_secs: 60,
            };
            let key = if other_key {
                &self.other_key
            } else {
                &self.key
            };
            ConnectToken::generate_with_rng(key, &params, &mut self.rng).expect("a token")
        }

        /// The blob of a forged token of kind `kind` (an index of `FORGED_KINDS`).
        fn blob(&mut self, kind: usize) -> [u8; BLOB_BYTES] {
            let (server, now) = (self.server, self.now);
            match kind {
                0 => {
                    let mut b = [0u8; BLOB_BYTES];
                    self.rng.fill_bytes(&mut b);
                    b
                }
                1 => blob(&self.token(true, PROTOCOL_ID, server, now)),
                2 => {
                    let mut b = blob(&self.token(false, PROTOCOL_ID, server, now));
                    let at = self.rng.gen_range(PUBLIC_END..BLOB_BYTES);
                    b[at] ^= self.rng.gen_range(1..=255u8);
                    b
                }
                3 => blob(&self.token(false, PROTOCOL_ID ^ 0xffff, server, now)),
                // Made an hour ago, valid 60 s.
                4 => blob(&self.token(false, PROTOCOL_ID, server, now - 3600)),
                // For another server (TEST-NET-1), same port.
                _ => {
                    let other = SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::new(192, 0, 2, 1),
                        server.port(),
                    ));
                    blob(&self.token(false, PROTOCOL_ID, other, now))
                }
            }
        }
    }

    /// One Hello with a valid token, built as the forged ones, from a socket of its own: the
    /// length of the server's reply (63), 0 if none came within a second.
    fn control(forger: &mut Forger) -> usize {
        let token = forger.token(false, PROTOCOL_ID, forger.server, forger.now);
        let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 2048];
        match s.send_to(&hello(0, &blob(&token)), forger.server) {
            Ok(_) => s.recv_from(&mut buf).map_or(0, |(len, _)| len),
            Err(_) => 0,
        }
    }

    /// The spoofer of `--secure`: `--hellos` forged-token Hellos, the kinds in turn, the
    /// sources in turn, paced evenly over `--duration`.
    pub fn flood(a: &Args, key: PrivateKey, server: SocketAddr, sockets: &[UdpSocket]) {
        let mut forger = Forger {
            key,
            other_key: PrivateKey::generate(),
            server,
            now: unix_now(),
            rng: StdRng::from_entropy(),
        };
        let control_reply = control(&mut forger);
        let n = sockets.len().max(1);
        let mut sent = vec![0u64; n];
        let mut got = vec![0u64; n];
        let mut replies = 0u64;
        let mut per_kind = [0u64; FORGED_KINDS.len()];
        println!("sources {}\nFLOODING", sockets.len());
        let _ = std::io::stdout().flush();
        let mut buf = [0u8; 2048];
        let total = a.hellos;
        let run = a.duration;
        let start = Instant::now();
        let mut last_drain = start;
        let mut next = 0u64; // the index of the next Hello
        let mut hellos = 0u64;
        // Bounded: 5 s beyond the run to catch up with a full send buffer, then give up.
        while !sockets.is_empty() && next < total && start.elapsed().as_secs_f64() < run + 5.0 {
            let due = ((start.elapsed().as_secs_f64() / run) * total as f64).ceil() as u64;
            let due = due.min(total);
            while next < due {
                let kind = (next % FORGED_KINDS.len() as u64) as usize;
                let source = (next % n as u64) as usize;
                let d = hello(next as u32, &forger.blob(kind));
                match sockets[source].send_to(&d, server) {
                    Ok(len) => {
                        sent[source] += len as u64;
                        per_kind[kind] += 1;
                        hellos += 1;
                        next += 1;
                    }
                    // A full send buffer: this Hello again on the next turn.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // Not sent (the count shows it).
                    Err(_) => next += 1,
                }
            }
            if last_drain.elapsed() >= Duration::from_millis(100) {
                drain_replies(sockets, &mut got, &mut replies, &mut buf);
                last_drain = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let seconds = start.elapsed().as_secs_f64();
        // Let any reply arrive.
        std::thread::sleep(Duration::from_millis(500));
        drain_replies(sockets, &mut got, &mut replies, &mut buf);
        let total_sent: u64 = sent.iter().sum();
        let total_got: u64 = got.iter().sum();
        println!(
            "seconds {seconds}\nhellos_sent {hellos}\nbytes_sent {total_sent}\n\
             bytes_received {total_got}\nreplies {replies}\nmax_ratio {}\n\
             hello_bytes {HELLO_BYTES}\ncontrol_reply {control_reply}",
            max_ratio(&sent, &got)
        );
        for ((key, _, _), count) in FORGED_KINDS.iter().zip(per_kind) {
            println!("sent_{key} {count}");
        }
        println!("END");
    }
}
