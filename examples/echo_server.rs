//! A kcp2k-compatible echo server.
//!
//! ```text
//! cargo run --release --example echo_server -- --port PORT [--bind ADDR] [--max-seconds N]
//!     [--mtu N] [--window SND RCV] [--interval MS] [--timeout MS] [--nodelay 0|1|2]
//! ```
//!
//! Binds `ADDR:PORT` (by default `[::]`, dual-mode: IPv6 and IPv4 peers; falls back to
//! `0.0.0.0` with a warning when IPv6 is unavailable) and echoes every message back to its
//! sender on the channel it came in on. The reliable message `KICK` is not echoed: the
//! server disconnects that client instead, with a reason (code 4000 and a message) that a
//! kcpnet client receives and a kcp2k client sees as a plain Disconnect. One line per event goes to stdout (connected
//! with the peer address, data with channel and size, disconnected with the reason, error
//! with code and message). Any kcp2k peer can connect (the defaults are kcp2k's); try the
//! `echo_client` example. Ctrl-C stops the server; `--max-seconds N` makes it exit by
//! itself after N seconds. `--help` lists every flag with its default.
//!
//! The loop uses the callback form ([`Server::tick_incoming_with`]), which replies to a
//! message straight from the receive buffer, without copying it.

mod common;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::exit;
use std::time::{Duration, Instant};

use kcpnet::{Channel, Config, Error, Event, Server};

const PROG: &str = "echo_server";

const USAGE: &str = "\
echo_server: a kcp2k-compatible echo server (kcpnet example)

Usage: echo_server --port PORT [--bind ADDR] [--max-seconds N] [config flags]

  --port PORT          UDP port to listen on (required; 0 = any free port)
  --bind ADDR          address to bind [default: [::], dual-mode IPv6+IPv4, falling
                       back to 0.0.0.0 if IPv6 is unavailable]
  --max-seconds N      exit after N seconds [default: run until killed]

Echoes every message on the channel it came in on; the reliable message KICK makes the
server disconnect that client (with close code 4000). Prints one line per event to stdout.";

struct Args {
    port: u16,
    bind: Option<IpAddr>,
    max_seconds: Option<u64>,
    config: Config,
}

fn parse_args() -> Args {
    let mut port = None;
    let mut bind = None;
    let mut max_seconds = None;
    let config = common::parse_args(PROG, USAGE, |name, parser| {
        match name {
            "port" => port = Some(common::value::<u16>(parser, name)?),
            "bind" => {
                let text: String = common::value(parser, name)?;
                let bare = text.trim_start_matches('[').trim_end_matches(']');
                let ip = bare
                    .parse::<IpAddr>()
                    .map_err(|e| format!("--bind: invalid address {text:?}: {e}"))?;
                bind = Some(ip);
            }
            "max-seconds" => max_seconds = Some(common::value::<u64>(parser, name)?),
            _ => return Ok(false),
        }
        Ok(true)
    });
    let Some(port) = port else {
        common::usage_error(PROG, "--port is required");
    };
    Args {
        port,
        bind,
        max_seconds,
        config,
    }
}

/// Binds the server: `--bind` as given, or `[::]` with a fallback to `0.0.0.0`.
fn bind(args: &Args) -> Result<Server, String> {
    if let Some(ip) = args.bind {
        let addr = SocketAddr::new(ip, args.port);
        return Server::bind(addr, args.config.clone())
            .map_err(|e| format!("cannot bind {addr}: {e}"));
    }
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), args.port);
    match Server::bind(v6, args.config.clone()) {
        Ok(server) => Ok(server),
        Err(Error::Io(e))
            if !matches!(e.kind(), ErrorKind::AddrInUse | ErrorKind::PermissionDenied) =>
        {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), args.port);
            log::warn!(
                "cannot bind {v6} ({e}): IPv6 looks unavailable, falling back to {v4} (IPv4 only)"
            );
            Server::bind(v4, args.config.clone()).map_err(|e| format!("cannot bind {v4}: {e}"))
        }
        Err(e) => Err(format!("cannot bind {v6}: {e}")),
    }
}

/// The close code of a kick (an application-defined value).
const KICK_CODE: u32 = 4000;

fn print_event(event: &Event<'_>) {
    match *event {
        Event::Connected { id, addr } => println!("{id} connected from {addr}"),
        Event::Data { id, channel, data } => println!("{id} data {channel} {} bytes", data.len()),
        Event::Disconnected { id, reason } => println!("{id} disconnected: {reason} ({reason:?})"),
        Event::PeerSendClosed { id } => println!("{id} shut down its sending"),
        Event::Error { id, code, message } => {
            println!("{id} error {} ({code}): {message}", code as u8)
        }
        ref other => println!("{other:?}"),
    }
}

fn main() {
    common::init_logging();
    let args = parse_args();
    let mut server = match bind(&args) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{PROG}: {e}");
            exit(1);
        }
    };
    let local = server
        .local_addr()
        .map_or_else(|e| format!("? ({e})"), |a| a.to_string());
    let c = server.config();
    println!(
        "listening on {local} (mtu {}, windows {} {}, interval {} ms, timeout {} ms, nodelay {}, \
         fast resend {}, max retransmits {}; \
         max reliable {} bytes, max unreliable {} bytes)",
        c.mtu,
        c.send_window_size,
        c.receive_window_size,
        c.interval_ms,
        c.timeout_ms,
        c.no_delay,
        c.fast_resend,
        c.max_retransmits,
        c.reliable_max_message_size(),
        c.unreliable_max_message_size()
    );

    let start = Instant::now();
    let deadline = args.max_seconds.map(|s| start + Duration::from_secs(s));
    loop {
        server.tick_incoming_with(|ctx, event| {
            print_event(&event);
            if let Event::Data { id, channel, data } = event {
                if channel == Channel::Reliable && data == b"KICK" {
                    // A kcpnet client receives the reason; a kcp2k one a plain Disconnect.
                    println!("{id} kick requested: disconnecting with code {KICK_CODE}");
                    if let Err(e) = ctx.disconnect_with(id, KICK_CODE, "kicked: you sent KICK") {
                        println!("{id} disconnect failed: {e}");
                    }
                } else if let Err(e) = ctx.send(id, data, channel) {
                    println!("{id} echo of {} bytes ({channel}) failed: {e}", data.len());
                }
            }
        });
        server.tick_outgoing();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Sleep in the OS poller until a datagram arrives or a timer is due.
        if let Err(e) = server.wait(Duration::from_millis(100)) {
            eprintln!("{PROG}: wait failed: {e}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    server.shutdown();
    while let Some(event) = server.poll_event() {
        print_event(&event);
    }
    let stats = server.stats();
    println!(
        "exiting after {:.1} s: {} connections accepted, {} datagrams / {} bytes received, \
         {} datagrams / {} bytes sent",
        start.elapsed().as_secs_f64(),
        stats.connections_accepted,
        stats.datagrams_received,
        stats.bytes_received,
        stats.datagrams_sent,
        stats.bytes_sent
    );
}
