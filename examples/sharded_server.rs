//! An echo server sharded over cores with `SO_REUSEPORT` (Linux).
//!
//! ```text
//! cargo run --release --example sharded_server -- [--bind ADDR] [--port PORT]
//!     [--threads N] [--duration SECS] [--seed S] [config flags]
//! ```
//!
//! Starts `N` server threads (default: one per core), each with its own socket bound to
//! the same `ADDR:PORT` with [`SocketOptions::reuse_port`], its own
//! [`LinkConditioner`] (seeded `S + shard`, perfect conditions) and its own [`Server`].
//! The kernel hashes each client's address pair to one socket, so a client always talks
//! to the same shard; a client whose address changes (NAT rebinding) lands on another
//! shard that does not know it and has to reconnect (see `docs/SCALING.md`). Every shard
//! echoes each message on the channel it came in on. Once per second one line sums the
//! shards: connections (and per shard), messages and bytes echoed in that second, send
//! drops. After `--duration` seconds (default 30) every shard shuts down gracefully
//! ([`Server::shutdown`]: connected clients are told) and the process exits.
//!
//! Try it with several `echo_client`s (each gets its own source port, so they spread):
//! `cargo run --release --example echo_client -- --host 127.0.0.1 --port 7777`.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcpnet::io::{LinkConditioner, SocketOptions, SystemClock, Transport, UdpTransport};
use kcpnet::{Config, Event, Server};

const PROG: &str = "sharded_server";

const USAGE: &str = "\
sharded_server: an echo server sharded over cores with SO_REUSEPORT (kcpnet example)

Usage: sharded_server [--bind ADDR] [--port PORT] [--threads N] [--duration SECS] [--seed S]
                      [config flags]

  --bind ADDR          address to bind [default: 127.0.0.1]
  --port PORT          UDP port shared by every shard [default: 7777; 0 = any free port]
  --threads N          server threads, one socket each [default: number of cores]
  --duration SECS      run this long, then shut every shard down [default: 30, max 86400]
  --seed S             link conditioner seed of shard i is S + i [default: 1]

Prints one line per second with the totals over all shards.";

/// Counters one shard publishes for the statistics line.
#[derive(Default)]
struct ShardStats {
    connections: AtomicU64,
    echoed: AtomicU64,
    bytes: AtomicU64,
    send_errors: AtomicU64,
}

struct Args {
    bind: IpAddr,
    port: u16,
    threads: usize,
    duration: u64,
    seed: u64,
    config: Config,
}

fn parse_args() -> Args {
    let mut bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut port = 7777;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut duration = 30;
    let mut seed = 1;
    let config = common::parse_args(PROG, USAGE, |name, parser| {
        match name {
            "bind" => {
                let text: String = common::value(parser, name)?;
                let bare = text.trim_start_matches('[').trim_end_matches(']');
                bind = bare
                    .parse()
                    .map_err(|e| format!("--bind: invalid address {text:?}: {e}"))?;
            }
            "port" => port = common::value(parser, name)?,
            "threads" => threads = common::value(parser, name)?,
            "duration" => duration = common::value(parser, name)?,
            "seed" => seed = common::value(parser, name)?,
            _ => return Ok(false),
        }
        Ok(true)
    });
    if threads == 0 || threads > 1024 {
        common::usage_error(PROG, "--threads must be in 1..=1024");
    }
    if duration == 0 || duration > 86_400 {
        common::usage_error(PROG, "--duration must be in 1..=86400");
    }
    Args {
        bind,
        port,
        threads,
        duration,
        seed,
        config,
    }
}

/// One shard: echo until `stop`, then shut down gracefully.
fn run_shard(mut server: Server, stats: Arc<ShardStats>, stop: Arc<AtomicBool>) {
    let mut echoed = 0u64;
    let mut bytes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        server.tick_incoming_with(|ctx, event| {
            if let Event::Data { id, channel, data } = event {
                if ctx.send(id, data, channel).is_ok() {
                    echoed += 1;
                    bytes += data.len() as u64;
                }
            }
        });
        server.tick_outgoing();
        stats
            .connections
            .store(server.connection_count() as u64, Ordering::Relaxed);
        stats.echoed.store(echoed, Ordering::Relaxed);
        stats.bytes.store(bytes, Ordering::Relaxed);
        stats
            .send_errors
            .store(server.stats().send_errors, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
    server.shutdown();
    stats.connections.store(0, Ordering::Relaxed);
}

fn main() {
    common::init_logging();
    let args = parse_args();
    let opts = SocketOptions {
        reuse_port: true,
        dual_mode: args.config.dual_mode,
        recv_buffer_size: args.config.recv_buffer_size,
        send_buffer_size: args.config.send_buffer_size,
        batch: args.config.batch_socket_io,
        dscp: args.config.dscp,
        ..SocketOptions::default()
    };
    let mut addr = SocketAddr::new(args.bind, args.port);
    let stop = Arc::new(AtomicBool::new(false));
    let mut shards = Vec::new();
    for i in 0..args.threads {
        let udp = match UdpTransport::bind(addr, &opts) {
            Ok(udp) => udp,
            Err(e) => {
                eprintln!("{PROG}: shard {i}: cannot bind {addr} with SO_REUSEPORT: {e}");
                std::process::exit(1);
            }
        };
        // With port 0 the first shard picks the port; the others join it.
        addr = udp.local_addr().unwrap_or(addr);
        let transport = LinkConditioner::new(udp, args.seed.wrapping_add(i as u64));
        let server = match Server::with_conditioned_transport(
            transport,
            Box::new(SystemClock::new()),
            args.config.clone(),
        ) {
            Ok(server) => server,
            Err(e) => {
                eprintln!("{PROG}: shard {i}: {e}");
                std::process::exit(1);
            }
        };
        let stats = Arc::new(ShardStats::default());
        let handle = {
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || run_shard(server, stats, stop))
                .expect("spawn shard thread")
        };
        shards.push((stats, handle));
    }
    println!(
        "{PROG}: {} shard(s) on {addr} for {} s",
        shards.len(),
        args.duration
    );

    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let (mut last_echoed, mut last_bytes) = (0u64, 0u64);
    let mut next = start + Duration::from_secs(1);
    while Instant::now() < end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += Duration::from_secs(1);
        let per_shard: Vec<u64> = shards
            .iter()
            .map(|(s, _)| s.connections.load(Ordering::Relaxed))
            .collect();
        let echoed: u64 = shards
            .iter()
            .map(|(s, _)| s.echoed.load(Ordering::Relaxed))
            .sum();
        let bytes: u64 = shards
            .iter()
            .map(|(s, _)| s.bytes.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = shards
            .iter()
            .map(|(s, _)| s.send_errors.load(Ordering::Relaxed))
            .sum();
        println!(
            "t={:>4}s connections={} {:?} echoed/s={} bytes/s={} send_errors={}",
            start.elapsed().as_secs(),
            per_shard.iter().sum::<u64>(),
            per_shard,
            echoed - last_echoed,
            bytes - last_bytes,
            errors
        );
        (last_echoed, last_bytes) = (echoed, bytes);
    }
    stop.store(true, Ordering::Relaxed);
    for (i, (_, handle)) in shards.into_iter().enumerate() {
        if handle.join().is_err() {
            eprintln!("{PROG}: shard {i} panicked");
        }
    }
    println!("{PROG}: stopped after {} s", start.elapsed().as_secs());
}
