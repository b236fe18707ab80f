//! Shared plumbing of the `kcpbench` bench binary: configuration, endpoint construction,
//! the parent/child process protocol, measurements (CPU, RSS, percentiles) and tables.

#![allow(dead_code)]

pub mod inproc;
pub mod roles;
pub mod stream;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use kcpnet::io::{
    Conditions, Direction, LinkConditioner, SocketOptions, SystemClock, Transport, UdpTransport,
};
use kcpnet::secure::{ConnectToken, PrivateKey, SecureConfig, TokenParams};
use kcpnet::{Client, Config, Server};

/// The comparison configuration of `docs/PERFORMANCE.md`: MTU 1200, no-delay, 10 ms interval,
/// fast resend 2, no congestion window, windows 1024/1024.
pub fn bench_config() -> Config {
    Config {
        mtu: 1200,
        no_delay: 1,
        interval_ms: 10,
        fast_resend: 2,
        congestion_window: false,
        send_window_size: 1024,
        receive_window_size: 1024,
        ..Config::default()
    }
}

/// The key shared by the secure benchmark servers and the tokens of their clients.
const BENCH_KEY: [u8; 32] = [0x5a; 32];

/// `config` for implementation `imp`: `kcpnet-secure` is kcpnet (batched, GSO/GRO) with
/// secure sessions required (every datagram sealed); `kcpnet-fec` is kcpnet with FEC both
/// ways (`Fec::Fixed { data: 8, parity: 2 }`), `kcpnet-fecad` with adaptive FEC both ways
/// (`Fec::ADAPTIVE`); the others are unchanged.
pub fn secured(imp: &str, mut config: Config) -> Config {
    match imp {
        "kcpnet-fec" => config.fec = kcpnet::Fec::Fixed { data: 8, parity: 2 },
        "kcpnet-fecad" => config.fec = kcpnet::Fec::ADAPTIVE,
        _ => {}
    }
    if imp == "kcpnet-secure" {
        config.security = Some(SecureConfig::required(
            1,
            PrivateKey::from_bytes(BENCH_KEY),
            Vec::new(), // the bound 127.0.0.1 address is added by the server
        ));
    }
    config
}

/// `client` for implementation `imp`: a `kcpnet-secure` client gets a fresh connect token
/// for `127.0.0.1:port` (one per client: a token is refused from a second address).
pub fn with_token(imp: &str, port: u16, mut client: Client) -> Client {
    if imp == "kcpnet-secure" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = ConnectToken::generate(
            &PrivateKey::from_bytes(BENCH_KEY),
            &TokenParams {
                protocol_id: 1,
                client_id: rand::random(),
                server_addresses: vec![SocketAddr::from(([127, 0, 0, 1], port))],
                user_data: Vec::new(),
                created_unix_secs: now,
                valid_secs: 600,
            },
        )
        .expect("token");
        client.use_token(&token).expect("use the token");
    }
    client
}

/// How a kcpnet `UdpTransport` moves datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketIo {
    /// One syscall per datagram (`batch: false`).
    Plain,
    /// `recvmmsg`/`sendmmsg`, without GSO/GRO (`gso: false, gro: false`).
    Batch,
    /// Batched with UDP GSO and GRO: the transport's default on Linux.
    Offload,
}

/// Socket options for `io` (everything else default).
pub fn udp_opts(io: SocketIo) -> SocketOptions {
    SocketOptions {
        batch: io != SocketIo::Plain,
        gso: io == SocketIo::Offload,
        gro: io == SocketIo::Offload,
        ..SocketOptions::default()
    }
}

/// W4's link: 20 ms one way and 5% loss, applied to what each endpoint sends.
pub fn w4_conditions() -> Conditions {
    Conditions::lossy(0.05).with_latency(Duration::from_millis(20))
}

/// A UDP transport on `127.0.0.1:port` behind a link conditioner (perfect unless
/// `impair`).
pub fn conditioned_udp(
    addr: SocketAddr,
    io: SocketIo,
    impair: bool,
    seed: u64,
    connect: bool,
) -> LinkConditioner<UdpTransport> {
    let mut udp = if connect {
        UdpTransport::bind_any_for(addr, &udp_opts(io)).expect("bind")
    } else {
        UdpTransport::bind(addr, &udp_opts(io)).expect("bind")
    };
    if connect {
        udp.connect(addr).expect("connect");
    }
    let c = LinkConditioner::new(udp, seed);
    if impair {
        use kcpnet::io::ConditionerControl;
        c.set_conditions(Direction::Send, w4_conditions())
            .expect("conditions");
    }
    c
}

/// A kcpnet server on `127.0.0.1:0` whose socket moves datagrams as `io` says.
pub fn kcpnet_server(io: SocketIo, impair: bool, config: Config) -> Server {
    let t = conditioned_udp("127.0.0.1:0".parse().unwrap(), io, impair, 1, false);
    Server::with_conditioned_transport(t, Box::new(SystemClock::new()), config).expect("server")
}

/// One shard of a sharded kcpnet server: a socket bound to `addr` with `SO_REUSEPORT`
/// (moving datagrams as `io` says, behind a perfect link conditioner, as in
/// [`kcpnet_server`]), so that several shards can share one port. Bind the first to port 0
/// and the others to the port it got.
pub fn kcpnet_shard(addr: SocketAddr, io: SocketIo, seed: u64, config: Config) -> Server {
    let opts = SocketOptions {
        reuse_port: true,
        ..udp_opts(io)
    };
    let udp = UdpTransport::bind(addr, &opts).expect("bind with SO_REUSEPORT");
    let t = LinkConditioner::new(udp, seed);
    Server::with_conditioned_transport(t, Box::new(SystemClock::new()), config).expect("server")
}

/// A kcpnet client of `127.0.0.1:port` whose socket moves datagrams as `io` says.
pub fn kcpnet_client(port: u16, io: SocketIo, impair: bool, seed: u64, config: Config) -> Client {
    let remote: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = conditioned_udp(remote, io, impair, seed, true);
    Client::with_conditioned_transport(t, Box::new(SystemClock::new()), remote, config)
        .expect("client")
}

/// A boxed transport for the baselines that drive their own protocol over it.
pub fn boxed(t: LinkConditioner<UdpTransport>) -> Box<dyn Transport> {
    Box::new(t)
}

// ------------------------------------------------------------------ measurements

/// CPU time of this process (all threads) in nanoseconds: `/proc/self/schedstat`, else
/// utime + stime from `/proc/self/stat` (10 ms resolution), else 0.
pub fn cpu_ns() -> u64 {
    if let Ok(s) = std::fs::read_to_string("/proc/self/schedstat") {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            // schedstat covers the main thread only; the roles are single-threaded
            // apart from a stdin reader that sleeps.
            return ns;
        }
    }
    stat_cpu_ns()
}

/// utime + stime of `/proc/self/stat` (every thread, 10 ms resolution) in nanoseconds, or 0.
fn stat_cpu_ns() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let fields: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10_000_000
}

/// CPU time of this process summed over all its live threads, in nanoseconds: the first
/// field of every `/proc/self/task/*/schedstat`; else utime + stime of `/proc/self/stat`
/// (all threads, 10 ms resolution), else 0. For roles with several busy threads; threads
/// must still be alive when it is read (an exited thread's time leaves `task/`).
pub fn process_cpu_ns() -> u64 {
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        let mut sum = 0u64;
        let mut any = false;
        for entry in dir.flatten() {
            let path = entry.path().join("schedstat");
            if let Some(ns) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                sum += ns;
                any = true;
            }
        }
        if any {
            return sum;
        }
    }
    stat_cpu_ns()
}

/// The soft and hard limits on open files of this process (`Max open files` of
/// `/proc/self/limits`; `u64::MAX` for unlimited), or `None` if unreadable.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let mut v = line["Max open files".len()..]
        .split_whitespace()
        .map(|w| w.parse::<u64>().unwrap_or(u64::MAX));
    Some((v.next()?, v.next()?))
}

/// Resident set size in bytes (`VmRSS`), or 0.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The `p`-th percentile (0..=100) of `v`, sorting it; 0 if empty.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

/// Median of `v` (sorting it); 0 if empty.
pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

// ------------------------------------------------------------------ child side

/// Set by the stdin reader of a child when the parent writes `stop`.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// Incremented by the stdin reader of a child for each `mark` line.
pub static MARKS: AtomicU32 = AtomicU32::new(0);

/// Starts the child's stdin reader (commands `mark` and `stop`; EOF means stop).
pub fn child_control() {
    std::thread::spawn(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line.as_deref().map(str::trim) {
                Ok("mark") => {
                    MARKS.fetch_add(1, Ordering::SeqCst);
                }
                Ok("stop") | Err(_) => break,
                Ok(_) => {}
            }
        }
        STOP.store(true, Ordering::SeqCst);
    });
}

/// `true` once the parent asked this child to stop.
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Prints a protocol line to the parent.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints the child's result.
pub fn result(v: serde_json::Value) {
    say(&format!("RESULT {v}"));
}

// ------------------------------------------------------------------ parent side

/// A child process running one role.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    name: String,
}

impl Proc {
    /// Re-executes this binary with `args` (a role and its parameters).
    pub fn spawn(args: &[String]) -> Proc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines: rx,
            name: args.join(" "),
        }
    }

    /// Waits up to `timeout` for a line starting with `prefix`; returns the rest.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Some(rest.trim().to_string());
                    }
                    eprintln!("[{}] {line}", self.name);
                }
                Err(_) => return None,
            }
        }
    }

    /// The `PORT` line of a server.
    pub fn port(&mut self) -> u16 {
        self.expect("PORT", Duration::from_secs(20))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{}: no PORT line", self.name))
    }

    /// The `RESULT` line, parsed; `Null` if none came within `timeout`.
    pub fn result(&mut self, timeout: Duration) -> serde_json::Value {
        match self.expect("RESULT", timeout) {
            Some(json) => serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
            None => {
                eprintln!("{}: no result within {timeout:?}", self.name);
                serde_json::Value::Null
            }
        }
    }

    /// Writes a command line (`mark`, `stop`) to the child.
    pub fn tell(&mut self, cmd: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{cmd}");
            let _ = stdin.flush();
        }
    }

    /// Asks the child to stop and returns its result.
    pub fn stop(&mut self, timeout: Duration) -> serde_json::Value {
        self.tell("stop");
        self.result(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None; // EOF: the child stops by itself
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A string argument list.
pub fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
