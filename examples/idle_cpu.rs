//! How much CPU an idle server costs when it sleeps in `Server::wait`: N clients (a second
//! process, started by this one) connect over loopback UDP and then only keep the connection
//! alive (kcp2k pings once a second); the server runs the README's loop and this program
//! reads the server thread's CPU time (`/proc/self/schedstat`, Linux) over the measurement.
//!
//! ```sh
//! cargo run --release --example idle_cpu -- --clients 1000 --seconds 10
//! cargo run --release --example idle_cpu -- --clients 1000 --seconds 10 --kcp2k
//! ```
//!
//! `--settle S` (default 15) is how long the server runs before measuring; `--io plain`,
//! `--io batch` or `--io offload` (the default) choose the server socket's I/O
//! (`Config::batch_socket_io`, `Config::udp_offload`).
//!
//! The clients are kcpnet clients, which negotiate the slow keepalive with the server (an
//! idle pair exchanges a datagram a second); with `--kcp2k` they offer no extension, as a
//! kcp2k client, and keep kcp2k's rate (three datagrams a second).
//!
//! Prints the server's CPU use in percent of one core, the same for a loop that sleeps a
//! fixed 1 ms instead (the common alternative), and two floors, plain std UDP sockets that
//! receive and send the same number of datagrams per second: the raw floor (blocking
//! `recv_from`, one syscall per datagram) and the poller floor (a non-blocking socket
//! behind a mio poller, as an event loop has it: `epoll_wait`, then the receive), all
//! measured in the same run. The ratio the issue's target is about is to the raw floor.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kcpnet::{Client, Config, Error, Event, Server};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// CPU time this process's main thread ran, in nanoseconds (`/proc/self/schedstat`, Linux),
/// falling back to user + system time from `/proc/self/stat` (10 ms steps); `None` off Linux.
/// The measured loops all run on the main thread, and over a few seconds at 1 % of a core
/// the 10 ms steps of `/proc/self/stat` would be 10 % of the figure.
fn cpu_time() -> Option<Duration> {
    if let Ok(s) = std::fs::read_to_string("/proc/self/schedstat") {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_second = 100; // USER_HZ, 100 on every Linux configuration in use
    Some(Duration::from_millis(
        (utime + stime) * 1000 / ticks_per_second,
    ))
}

/// The client process: N clients that connect and then stay idle until `seconds` passed.
fn clients(port: u16, n: usize, seconds: u64, kcp2k: bool) {
    let config = Config {
        kcpnet_extensions: !kcp2k,
        ..Config::default()
    };
    let mut clients: Vec<Client> = (0..n)
        .map(|_| Client::connect(("127.0.0.1", port), config.clone()).expect("connect"))
        .collect();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        for c in &mut clients {
            c.tick_incoming();
            while c.poll_event().is_some() {}
            c.tick_outgoing();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One server frame of the README's loop (echo everything), then `pause`.
fn serve(server: &mut Server, connected: &mut usize) {
    server.tick_incoming();
    let mut events = server.drain_events();
    while let Some((event, server)) = events.next() {
        match event {
            Event::Connected { .. } => *connected += 1,
            Event::Disconnected { .. } => *connected -= 1,
            Event::Data { id, channel, data } => match server.send(id, data, channel) {
                Ok(()) | Err(Error::ConnectionClosed) => {}
                Err(e) => eprintln!("{id}: {e}"),
            },
            _ => {}
        }
    }
    drop(events);
    server.tick_outgoing();
}

/// CPU use of the server loop over `secs`, in percent of one core.
fn measure(
    server: &mut Server,
    connected: &mut usize,
    secs: u64,
    mut pause: impl FnMut(&mut Server),
) -> Option<(f64, u64, f64, f64, u64)> {
    let cpu0 = cpu_time()?;
    let s0 = server.stats();
    let t0 = Instant::now();
    let mut frames = 0u64;
    // Frames that received no datagram: woken by a timer (or a sleep) alone.
    let mut empty = 0u64;
    let mut received = s0.datagrams_received;
    while t0.elapsed() < Duration::from_secs(secs) {
        serve(server, connected);
        let now_received = server.stats().datagrams_received;
        if now_received == received {
            empty += 1;
        }
        received = now_received;
        pause(server);
        frames += 1;
    }
    let cpu = cpu_time()? - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let s1 = server.stats();
    let datagrams =
        (s1.datagrams_received - s0.datagrams_received) + (s1.datagrams_sent - s0.datagrams_sent);
    Some((
        100.0 * cpu.as_secs_f64() / wall,
        frames,
        datagrams as f64 / wall,
        cpu.as_secs_f64() * 1e6 / datagrams.max(1) as f64,
        empty,
    ))
}

/// The raw-UDP blaster: `n` sockets sending 16-byte datagrams to `port` at `rate` datagrams
/// per second in all, for `seconds`.
fn blaster(port: u16, n: usize, rate: u64, seconds: u64) {
    let sockets: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    for s in &sockets {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    // Paced on the clock, not per sleep: a 10 ms sleep takes longer than 10 ms, and a fixed
    // count per sleep would fall short of the rate the floor is meant to match.
    let mut sent = 0u64;
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let _ = sockets[(sent % n as u64) as usize].send_to(&[7u8; 16], target);
            sent += 1;
        }
        for s in &sockets {
            while s.recv_from(&mut buf).is_ok() {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CPU of a std UDP echo server that answers every datagram it gets, over `secs`; returns
/// (percent of a core, datagrams per second in + out). With `poller`, the socket is
/// non-blocking and the loop sleeps in a mio poller between datagrams (epoll, then receive
/// until empty), as an event loop does; otherwise it sleeps in a blocking `recv_from`.
fn raw_floor(rate_in: u64, secs: u64, poller: bool) -> Option<(f64, f64)> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .ok()?;
    let mut poll = if poller {
        socket.set_nonblocking(true).ok()?;
        let poll = mio::Poll::new().ok()?;
        // A duplicate of the socket's descriptor (the same socket) for the poller.
        let mut registered = mio::net::UdpSocket::from_std(socket.try_clone().ok()?);
        poll.registry()
            .register(&mut registered, mio::Token(0), mio::Interest::READABLE)
            .ok()?;
        Some((poll, mio::Events::with_capacity(4), registered))
    } else {
        None
    };
    let port = socket.local_addr().ok()?.port();
    let mut child = Command::new(std::env::current_exe().ok()?)
        .args(["--blaster-process", "--port", &port.to_string()])
        .args([
            "--rate",
            &rate_in.to_string(),
            "--seconds",
            &(secs + 3).to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let mut buf = [0u8; 2048];
    // One pass: a blocking receive and its answer, or, with the poller, everything
    // pending and then a sleep in the poller. Returns the datagrams moved (in + out).
    let mut pass = || {
        let mut moved = 0u64;
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
            moved += 2;
            if poll.is_none() {
                break;
            }
        }
        if let Some((poll, events, _)) = poll.as_mut() {
            let _ = poll.poll(events, Some(Duration::from_millis(100)));
        }
        moved
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        pass();
    }
    let cpu0 = cpu_time()?;
    let t0 = Instant::now();
    let mut count = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        count += pass();
    }
    let cpu = cpu_time()? - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    Some((100.0 * cpu.as_secs_f64() / wall, count as f64 / wall))
}

fn main() {
    if std::env::args().any(|a| a == "--blaster-process") {
        blaster(
            arg("--port", 0) as u16,
            1000,
            arg("--rate", 2500),
            arg("--seconds", 10),
        );
        return;
    }
    if std::env::args().any(|a| a == "--client-process") {
        clients(
            arg("--port", 0) as u16,
            arg("--clients", 1000) as usize,
            arg("--seconds", 30),
            std::env::args().any(|a| a == "--kcp2k"),
        );
        return;
    }
    let n = arg("--clients", 1000) as usize;
    let secs = arg("--seconds", 10);
    // `--io plain|batch|offload` (default offload): the server socket's I/O, as
    // `Config::batch_socket_io` and `Config::udp_offload` set it.
    let io = arg_str("--io").unwrap_or_else(|| "offload".into());
    let server_config = Config {
        batch_socket_io: io != "plain",
        udp_offload: io == "offload",
        ..Config::default()
    };
    let mut server = Server::bind("127.0.0.1:0", server_config).expect("bind");
    let port = server.local_addr().expect("local addr").port();
    // Settle: the handshakes, the first pings, and the quality reports, which go on until
    // four identical ones were sent (12 s with the slow keepalive's 3 s).
    let settle_secs = arg("--settle", 15);
    let total = 2 * secs + settle_secs + 20;
    let kcp2k = std::env::args().any(|a| a == "--kcp2k");
    println!(
        "{n} {} clients",
        if kcp2k {
            "kcp2k-style (no extensions: a Ping every second)"
        } else {
            "kcpnet (the slow keepalive negotiated)"
        }
    );
    let mut child: Child = Command::new(std::env::current_exe().expect("own path"))
        .args(["--client-process", "--port", &port.to_string()])
        .args(["--clients", &n.to_string(), "--seconds", &total.to_string()])
        .args(if kcp2k { &["--kcp2k"][..] } else { &[][..] })
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the client process");
    let mut connected = 0usize;
    let start = Instant::now();
    while connected < n && start.elapsed() < Duration::from_secs(15) {
        serve(&mut server, &mut connected);
        let _ = server.wait(Duration::from_millis(5));
    }
    println!(
        "{connected}/{n} clients connected in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(settle_secs) {
        serve(&mut server, &mut connected);
        let _ = server.wait(Duration::from_millis(100));
    }
    let waited = measure(&mut server, &mut connected, secs, |s| {
        let _ = s.wait(Duration::from_millis(100));
    });
    let slept = measure(&mut server, &mut connected, secs, |_| {
        std::thread::sleep(Duration::from_millis(1))
    });
    let _ = child.kill();
    let _ = child.wait();
    match (waited, slept) {
        (Some((w, wf, wd, wu, we)), Some((s, sf, sd, su, _))) => {
            println!("server CPU with {connected} idle clients over {secs} s each:");
            println!(
                "  wait(100 ms) loop : {w:5.2}% of a core ({wf} frames, {we} of them with no \
                 datagram in, {wd:.0} datagrams/s in+out, {wu:.1} us of CPU per datagram)"
            );
            println!(
                "  sleep(1 ms) loop  : {s:5.2}% of a core ({sf} frames, {sd:.0} datagrams/s \
                 in+out, {su:.1} us of CPU per datagram)"
            );
            if s > 0.0 {
                println!("  ratio wait/sleep  : {:.2}", w / s);
            }
            // The floor: the same datagram rate through a plain socket, one syscall each.
            if let Some((r, rd)) = raw_floor((wd / 2.0) as u64, secs, true) {
                println!(
                    "  poller floor      : {r:5.2}% of a core ({rd:.0} datagrams/s in+out, \
                     {:.2} us per datagram; non-blocking socket, mio poller)",
                    r / 100.0 * 1e6 / rd.max(1.0)
                );
            }
            if let Some((r, rd)) = raw_floor((wd / 2.0) as u64, secs, false) {
                println!(
                    "  raw UDP floor     : {r:5.2}% of a core ({rd:.0} datagrams/s in+out, \
                     std socket, blocking recv_from + send_to)"
                );
                if r > 0.0 {
                    println!("  ratio wait/raw    : {:.2}", w / r);
                }
                // The blaster is paced on the clock, but a loaded machine can still make it
                // fall short: per datagram is the comparison that does not depend on it.
                if rd > 0.0 && wd > 0.0 && r > 0.0 {
                    let raw_us = r / 100.0 * 1e6 / rd;
                    println!(
                        "  per datagram      : {wu:.2} us against {raw_us:.2} us raw, ratio {:.2}",
                        wu / raw_us
                    );
                }
            }
        }
        _ => println!("CPU time is only read on Linux (/proc/self/stat)"),
    }
}
