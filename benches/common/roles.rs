//! The child-process roles of W1–W4: a server and a client per implementation.
//!
//! Implementations (`--impl`): `kcpnet` (batched socket I/O with UDP GSO/GRO, the
//! defaults), `kcpnet-secure` (the same with secure sessions: every datagram sealed),
//! `kcpnet-fec` (the same with FEC both ways, groups of up to 8 with 2 parity),
//! `kcpnet-fecad` (the same with adaptive FEC both ways, `Fec::ADAPTIVE`),
//! `kcpnet-nogso` (batched, GSO/GRO off), `kcpnet-plain` (batching off), `udp`
//! (raw UDP, std sockets, one syscall per datagram), `udp-batch` (raw UDP through kcpnet's
//! batching `UdpTransport`, GSO/GRO off as in earlier runs), `kcp` (the `kcp` crate driven
//! by a UDP loop that flushes every iteration).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcpnet::io::{Clock, SystemClock, Transport};
use kcpnet::{Channel, Event};
use serde_json::json;

use super::*;

/// `--key value` parameters of a role.
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub fn parse(args: &[String]) -> Params {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            if let Some(key) = args[i].strip_prefix("--") {
                let value = match args.get(i + 1) {
                    Some(v) if !v.starts_with("--") => {
                        i += 1;
                        v.clone()
                    }
                    _ => "1".to_string(),
                };
                map.insert(key.to_string(), value);
            }
            i += 1;
        }
        Params(map)
    }
    pub fn s(&self, k: &str) -> &str {
        self.0.get(k).map(String::as_str).unwrap_or("")
    }
    pub fn n(&self, k: &str) -> u64 {
        self.0.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    pub fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

fn io_of(imp: &str) -> SocketIo {
    if imp.ends_with("-plain") {
        SocketIo::Plain
    } else if imp.ends_with("-nogso") {
        SocketIo::Batch
    } else {
        SocketIo::Offload
    }
}

fn server_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sleeps `tick_us` microseconds if positive (a game-loop tick), else returns at once.
fn tick_sleep(tick_us: u64) {
    if tick_us > 0 {
        std::thread::sleep(Duration::from_micros(tick_us));
    }
}

fn secs(d: Option<Duration>) -> f64 {
    d.map_or(0.0, |d| d.as_secs_f64())
}

// ------------------------------------------------------------------ the kcp crate

/// Output of a `kcp::Kcp`: every datagram straight to the transport.
struct KcpOut {
    t: Rc<RefCell<Box<dyn Transport>>>,
    to: SocketAddr,
    clock: SystemClock,
}

impl io::Write for KcpOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.t.borrow_mut().send_to(buf, self.to, self.clock.now());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type KcpCrate = kcp::Kcp<KcpOut>;

fn kcp_crate(t: &Rc<RefCell<Box<dyn Transport>>>, to: SocketAddr, clock: SystemClock) -> KcpCrate {
    let mut k = kcp::Kcp::new(
        1,
        KcpOut {
            t: t.clone(),
            to,
            clock,
        },
    );
    k.set_nodelay(true, 10, 2, true);
    k.set_wndsize(1024, 1024);
    let _ = k.set_mtu(1200);
    k
}

/// One iteration of a kcp-crate endpoint: read every datagram into `k` (created for the
/// first sender if `None`), update, flush.
fn kcp_pump(
    t: &Rc<RefCell<Box<dyn Transport>>>,
    k: &mut Option<KcpCrate>,
    clock: SystemClock,
    buf: &mut [u8],
) {
    let now = clock.now();
    for _ in 0..65_536 {
        let got = t.borrow_mut().recv_from(buf, now);
        let Ok(Some((n, from))) = got else { break };
        let k = k.get_or_insert_with(|| kcp_crate(t, from, clock));
        let _ = k.input(&buf[..n]);
    }
    if let Some(k) = k.as_mut() {
        let _ = k.update(now.as_millis() as u32);
        let _ = k.flush();
    }
    let _ = t.borrow_mut().poll(now);
}

fn kcp_transport(addr: SocketAddr, impair: bool, connect: bool) -> Rc<RefCell<Box<dyn Transport>>> {
    Rc::new(RefCell::new(boxed(conditioned_udp(
        addr,
        SocketIo::Plain,
        impair,
        7,
        connect,
    ))))
}

// ------------------------------------------------------------------ W1 / W4b: bulk

/// Receives `--bytes` of messages; reports bytes, messages and the time from the first
/// to the last byte.
pub fn w1_server(p: &Params) {
    child_control();
    let imp = p.s("impl");
    let impair = p.flag("impair");
    let total = p.n("bytes");
    let mut got = 0u64;
    let mut msgs = 0u64;
    let mut first: Option<Instant> = None;
    let mut done: Option<Instant> = None;
    let note = |got: u64, first: &mut Option<Instant>, done: &mut Option<Instant>| {
        if got > 0 && done.is_none() {
            let now = Instant::now();
            first.get_or_insert(now);
            if got >= total {
                *done = Some(now);
            }
        }
    };
    let mut last = Instant::now();
    match imp {
        "kcpnet" | "kcpnet-nogso" | "kcpnet-plain" | "kcpnet-secure" | "kcpnet-fec"
        | "kcpnet-fecad" => {
            let mut s = kcpnet_server(io_of(imp), impair, secured(imp, bench_config()));
            say(&format!("PORT {}", s.local_addr().unwrap().port()));
            while !stopped() {
                let before = got;
                s.tick_incoming_with(|_, ev| {
                    if let Event::Data { data, .. } = ev {
                        got += data.len() as u64;
                        msgs += 1;
                    }
                });
                s.tick_outgoing();
                if got != before {
                    note(got, &mut first, &mut done);
                    last = Instant::now();
                }
                if impair {
                    tick_sleep(200);
                }
            }
        }
        "udp" => {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(7 << 20);
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            say(&format!("PORT {}", sock.local_addr().unwrap().port()));
            let mut buf = vec![0u8; 65_536];
            while !stopped() {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    got += n as u64;
                    msgs += 1;
                    if first.is_none() || got >= total || msgs.is_multiple_of(64) {
                        note(got, &mut first, &mut done);
                        last = Instant::now();
                    }
                }
            }
        }
        "udp-batch" => {
            let mut t = conditioned_udp(
                "127.0.0.1:0".parse().unwrap(),
                SocketIo::Batch,
                false,
                1,
                false,
            );
            say(&format!("PORT {}", t.local_addr().unwrap().port()));
            let mut buf = vec![0u8; 65_536];
            while !stopped() {
                let mut any = false;
                while let Ok(Some((n, _))) = t.recv_from(&mut buf, Duration::ZERO) {
                    got += n as u64;
                    msgs += 1;
                    any = true;
                }
                if any {
                    note(got, &mut first, &mut done);
                    last = Instant::now();
                }
            }
        }
        "kcp" => {
            let clock = SystemClock::new();
            let t = kcp_transport("127.0.0.1:0".parse().unwrap(), impair, false);
            say(&format!("PORT {}", t.borrow().local_addr().unwrap().port()));
            let mut k: Option<KcpCrate> = None;
            let mut buf = vec![0u8; 65_536];
            let mut msg = vec![0u8; 1 << 20];
            while !stopped() {
                kcp_pump(&t, &mut k, clock, &mut buf);
                let before = got;
                if let Some(k) = k.as_mut() {
                    while let Ok(n) = k.recv(&mut msg) {
                        got += n as u64;
                        msgs += 1;
                    }
                }
                if got != before {
                    note(got, &mut first, &mut done);
                    last = Instant::now();
                }
                if impair {
                    tick_sleep(200);
                }
            }
        }
        other => panic!("unknown impl {other}"),
    }
    let end = done.unwrap_or(last);
    let span = first.map(|f| end.saturating_duration_since(f));
    let s = secs(span).max(1e-9);
    result(json!({
        "bytes": got, "msgs": msgs, "secs": s,
        "mb_per_s": got as f64 / s / 1e6, "msgs_per_s": msgs as f64 / s,
        "complete": got >= total,
    }));
}

/// Sends `--bytes` as `--msg`-byte reliable messages as fast as flow control allows.
pub fn w1_client(p: &Params) {
    child_control();
    let imp = p.s("impl");
    let impair = p.flag("impair");
    let total = p.n("bytes");
    let size = p.n("msg").max(1) as usize;
    let port = p.n("port") as u16;
    let count = total.div_ceil(size as u64);
    let msg = vec![0x5au8; size];
    let deadline = Instant::now() + Duration::from_secs(p.n("timeout").max(10));
    let start = Instant::now();
    let mut sent = 0u64;
    match imp {
        "kcpnet" | "kcpnet-nogso" | "kcpnet-plain" | "kcpnet-secure" | "kcpnet-fec"
        | "kcpnet-fecad" => {
            let mut c = with_token(
                imp,
                port,
                kcpnet_client(port, io_of(imp), impair, 2, secured(imp, bench_config())),
            );
            while !c.is_connected() && Instant::now() < deadline {
                c.tick_incoming();
                while c.poll_event().is_some() {}
                c.tick_outgoing();
                std::thread::sleep(Duration::from_micros(200));
            }
            while Instant::now() < deadline && !stopped() {
                c.tick_incoming();
                while c.poll_event().is_some() {}
                while sent < count && c.send_backlog() < 2048 {
                    if c.send(&msg, Channel::Reliable).is_err() {
                        break;
                    }
                    sent += 1;
                }
                c.tick_outgoing();
                if sent >= count && c.send_backlog() == 0 {
                    break;
                }
                if impair {
                    tick_sleep(200);
                }
            }
        }
        "udp" => {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let _ = socket2::SockRef::from(&sock).set_send_buffer_size(7 << 20);
            sock.connect(server_addr(port)).unwrap();
            while sent < count && Instant::now() < deadline {
                if sock.send(&msg).is_ok() {
                    sent += 1;
                }
            }
        }
        "udp-batch" => {
            let mut t = conditioned_udp(server_addr(port), SocketIo::Batch, false, 2, true);
            while sent < count && Instant::now() < deadline {
                let _ = t.send_to(&msg, server_addr(port), Duration::ZERO);
                sent += 1;
            }
            let _ = t.poll(Duration::ZERO);
        }
        "kcp" => {
            let clock = SystemClock::new();
            let t = kcp_transport(server_addr(port), impair, true);
            let mut k = Some(kcp_crate(&t, server_addr(port), clock));
            let mut buf = vec![0u8; 65_536];
            let _ = k.as_mut().unwrap().update(0);
            while Instant::now() < deadline && !stopped() {
                kcp_pump(&t, &mut k, clock, &mut buf);
                let kk = k.as_mut().unwrap();
                let mut queued = false;
                while sent < count && kk.wait_snd() < 2048 {
                    if kk.send(&msg).is_err() {
                        break;
                    }
                    sent += 1;
                    queued = true;
                }
                if queued {
                    let _ = kk.flush();
                }
                if sent >= count && kk.wait_snd() == 0 {
                    break;
                }
                if impair {
                    tick_sleep(200);
                }
            }
        }
        other => panic!("unknown impl {other}"),
    }
    result(json!({"sent": sent, "secs": start.elapsed().as_secs_f64()}));
}

// ------------------------------------------------------------------ W2 / W4a: ping-pong

/// Echoes every message back on the same channel.
pub fn w2_server(p: &Params) {
    child_control();
    let imp = p.s("impl");
    let impair = p.flag("impair");
    let tick_us = p.n("tick-us");
    match imp {
        "kcpnet" | "kcpnet-nogso" | "kcpnet-plain" | "kcpnet-secure" | "kcpnet-fec"
        | "kcpnet-fecad" => {
            let mut s = kcpnet_server(io_of(imp), impair, secured(imp, bench_config()));
            say(&format!("PORT {}", s.local_addr().unwrap().port()));
            while !stopped() {
                s.tick_incoming_with(|ctx, ev| {
                    if let Event::Data { id, channel, data } = ev {
                        let _ = ctx.send(id, data, channel);
                    }
                });
                s.tick_outgoing();
                tick_sleep(tick_us);
            }
        }
        "udp" => {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_nonblocking(true).unwrap();
            say(&format!("PORT {}", sock.local_addr().unwrap().port()));
            let mut buf = vec![0u8; 65_536];
            while !stopped() {
                while let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
                tick_sleep(tick_us);
            }
        }
        "kcp" => {
            let clock = SystemClock::new();
            let t = kcp_transport("127.0.0.1:0".parse().unwrap(), impair, false);
            say(&format!("PORT {}", t.borrow().local_addr().unwrap().port()));
            let mut k: Option<KcpCrate> = None;
            let mut buf = vec![0u8; 65_536];
            let mut msg = vec![0u8; 65_536];
            while !stopped() {
                kcp_pump(&t, &mut k, clock, &mut buf);
                if let Some(k) = k.as_mut() {
                    let mut echoed = false;
                    while let Ok(n) = k.recv(&mut msg) {
                        let _ = k.send(&msg[..n]);
                        echoed = true;
                    }
                    if echoed {
                        let _ = k.flush();
                    }
                }
                tick_sleep(tick_us);
            }
        }
        other => panic!("unknown impl {other}"),
    }
    result(json!({}));
}

/// `--count` sequential round trips of a 32-byte reliable message; RTT percentiles.
pub fn w2_client(p: &Params) {
    child_control();
    let imp = p.s("impl");
    let impair = p.flag("impair");
    let tick_us = p.n("tick-us");
    let count = p.n("count") as usize;
    let port = p.n("port") as u16;
    let msg = [7u8; 32];
    let deadline = Instant::now() + Duration::from_secs(p.n("timeout").max(10));
    let mut rtts: Vec<f64> = Vec::with_capacity(count);
    let mut lost = 0u64;
    match imp {
        "kcpnet" | "kcpnet-nogso" | "kcpnet-plain" | "kcpnet-secure" | "kcpnet-fec"
        | "kcpnet-fecad" => {
            let mut c = with_token(
                imp,
                port,
                kcpnet_client(port, io_of(imp), impair, 2, secured(imp, bench_config())),
            );
            while !c.is_connected() && Instant::now() < deadline {
                c.tick_incoming();
                while c.poll_event().is_some() {}
                c.tick_outgoing();
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut sent_at: Option<Instant> = None;
            while rtts.len() < count && Instant::now() < deadline && !stopped() {
                if sent_at.is_none() {
                    let _ = c.send(&msg, Channel::Reliable);
                    sent_at = Some(Instant::now());
                }
                c.tick_outgoing();
                tick_sleep(tick_us);
                c.tick_incoming();
                while let Some(ev) = c.poll_event() {
                    if let Event::Data { .. } = ev {
                        if let Some(t) = sent_at.take() {
                            rtts.push(t.elapsed().as_secs_f64() * 1e6);
                        }
                    }
                }
            }
        }
        "udp" => {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_nonblocking(true).unwrap();
            sock.connect(server_addr(port)).unwrap();
            let mut buf = [0u8; 64];
            while rtts.len() < count && Instant::now() < deadline {
                let t = Instant::now();
                let _ = sock.send(&msg);
                loop {
                    if sock.recv(&mut buf).is_ok() {
                        rtts.push(t.elapsed().as_secs_f64() * 1e6);
                        break;
                    }
                    if t.elapsed() > Duration::from_secs(1) || Instant::now() > deadline {
                        lost += 1;
                        break;
                    }
                    tick_sleep(tick_us);
                }
            }
        }
        "kcp" => {
            let clock = SystemClock::new();
            let t = kcp_transport(server_addr(port), impair, true);
            let mut k = Some(kcp_crate(&t, server_addr(port), clock));
            let _ = k.as_mut().unwrap().update(0);
            let mut buf = vec![0u8; 65_536];
            let mut rbuf = vec![0u8; 65_536];
            while rtts.len() < count && Instant::now() < deadline {
                let start = Instant::now();
                let _ = k.as_mut().unwrap().send(&msg);
                let _ = k.as_mut().unwrap().flush();
                loop {
                    kcp_pump(&t, &mut k, clock, &mut buf);
                    if k.as_mut().unwrap().recv(&mut rbuf).is_ok() {
                        rtts.push(start.elapsed().as_secs_f64() * 1e6);
                        break;
                    }
                    if Instant::now() > deadline {
                        break;
                    }
                    tick_sleep(tick_us);
                }
            }
        }
        other => panic!("unknown impl {other}"),
    }
    let n = rtts.len();
    let p50 = percentile(&mut rtts, 50.0);
    let p99 = percentile(&mut rtts, 99.0);
    result(json!({"round_trips": n, "lost": lost, "p50_us": p50, "p99_us": p99}));
}

// ------------------------------------------------------------------ W3: many clients

/// Echo server ticked every millisecond; measures CPU and echoes between `mark` and
/// `stop`. With `--shards K` (kcpnet only): [`w3_server_sharded`].
pub fn w3_server(p: &Params) {
    if p.0.contains_key("shards") {
        w3_server_sharded(p);
        return;
    }
    child_control();
    let imp = p.s("impl");
    let rss_base = rss_bytes();
    let mut echoed = 0u64;
    let mut marked: Option<(u64, u64, u64, Instant)> = None;
    let mut conns = 0usize;
    // kcpnet only, at the mark: connections, their mean `Server::connection_memory`, and
    // the endpoint's shared buffers.
    let (mut conns_at_mark, mut conn_mem, mut shared_bytes) = (0usize, 0.0f64, 0usize);
    let maybe_mark = |echoed: u64, conns: usize, marked: &mut Option<(u64, u64, u64, Instant)>| {
        if marked.is_none() && MARKS.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            *marked = Some((cpu_ns(), echoed, rss_bytes(), Instant::now()));
        }
        let _ = conns;
    };
    match imp {
        "kcpnet" | "kcpnet-nogso" | "kcpnet-plain" | "kcpnet-secure" | "kcpnet-fec"
        | "kcpnet-fecad" => {
            let config = Config {
                max_connections: 100_000,
                ..bench_config()
            };
            let mut s = kcpnet_server(io_of(imp), false, secured(imp, config));
            say(&format!("PORT {}", s.local_addr().unwrap().port()));
            while !stopped() {
                s.tick_incoming_with(|ctx, ev| {
                    if let Event::Data { id, channel, data } = ev {
                        if ctx.send(id, data, channel).is_ok() {
                            echoed += 1;
                        }
                    }
                });
                s.tick_outgoing();
                conns = s.connection_count();
                let was_marked = marked.is_some();
                maybe_mark(echoed, conns, &mut marked);
                if !was_marked && marked.is_some() && conns > 0 {
                    let ids: Vec<_> = s.connections().collect();
                    let sum: usize = ids.iter().filter_map(|&id| s.connection_memory(id)).sum();
                    conn_mem = sum as f64 / conns as f64;
                    conns_at_mark = conns;
                    shared_bytes = s.stats().shared_buffer_bytes;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "udp" => {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(7 << 20);
            let _ = socket2::SockRef::from(&sock).set_send_buffer_size(7 << 20);
            sock.set_nonblocking(true).unwrap();
            say(&format!("PORT {}", sock.local_addr().unwrap().port()));
            let mut buf = vec![0u8; 65_536];
            while !stopped() {
                while let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if sock.send_to(&buf[..n], from).is_ok() {
                        echoed += 1;
                    }
                }
                maybe_mark(echoed, conns, &mut marked);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "udp-batch" => {
            let mut t = conditioned_udp(
                "127.0.0.1:0".parse().unwrap(),
                SocketIo::Batch,
                false,
                1,
                false,
            );
            say(&format!("PORT {}", t.local_addr().unwrap().port()));
            let mut buf = vec![0u8; 65_536];
            while !stopped() {
                while let Ok(Some((n, from))) = t.recv_from(&mut buf, Duration::ZERO) {
                    if let Ok(true) = t.send_to(&buf[..n], from, Duration::ZERO) {
                        echoed += 1;
                    }
                }
                if let Ok(report) = t.poll(Duration::ZERO) {
                    echoed -= report.send_drops.min(echoed);
                }
                maybe_mark(echoed, conns, &mut marked);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        other => panic!("unknown impl {other}"),
    }
    let (cpu0, echoed0, rss_mark, t0) =
        marked.unwrap_or((cpu_ns(), echoed, rss_bytes(), Instant::now()));
    result(json!({
        "cpu_ns": cpu_ns().saturating_sub(cpu0),
        "wall_s": t0.elapsed().as_secs_f64(),
        "echoed": echoed - echoed0,
        "rss_base": rss_base, "rss_mark": rss_mark, "rss_end": rss_bytes(),
        "connections": conns, "connections_at_mark": conns_at_mark,
        "connection_memory": conn_mem, "shared_buffer_bytes": shared_bytes,
    }));
}

/// What one shard of [`w3_server_sharded`] publishes after every tick.
struct ShardCounters {
    echoed: AtomicU64,
    connections: AtomicU64,
    /// Connections at the end of the shard's first tick after `mark` (`u64::MAX` before).
    connections_at_mark: AtomicU64,
}

/// W3's echo server sharded with `SO_REUSEPORT`: `--shards K` threads, each a
/// single-threaded kcpnet `Server` (ticked every millisecond, as in [`w3_server`]) on its
/// own socket bound to the same port; the kernel hashes each client's address pair to one
/// of them. `K = 1` takes the same path (one socket with `SO_REUSEPORT`). The main thread
/// only waits: at `mark` and at `stop` it reads the CPU time of the whole process
/// ([`process_cpu_ns`]: every thread's schedstat summed, the shards alive), the echoes
/// summed over shards and the RSS. Reports the same fields as [`w3_server`] plus
/// per-shard connections, echoes and endpoint counters. Runs at most `--max-secs`
/// (default 1800) seconds.
pub fn w3_server_sharded(p: &Params) {
    child_control();
    let imp = p.s("impl");
    if !imp.starts_with("kcpnet") {
        panic!("--shards: kcpnet implementations only, not {imp}");
    }
    let k = p.n("shards").clamp(1, 64) as usize;
    let max = Duration::from_secs(match p.n("max-secs") {
        0 => 1800,
        s => s,
    });
    let started = Instant::now();
    let rss_base = rss_bytes();
    let config = Config {
        max_connections: 100_000,
        ..bench_config()
    };
    let quit = Arc::new(AtomicBool::new(false));
    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut shards = Vec::with_capacity(k);
    for i in 0..k {
        let mut s = kcpnet_shard(addr, io_of(imp), 1 + i as u64, config.clone());
        // The first shard picks the port; the others join it.
        addr = s.local_addr().expect("local_addr");
        let counters = Arc::new(ShardCounters {
            echoed: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_at_mark: AtomicU64::new(u64::MAX),
        });
        let handle = {
            let (counters, quit) = (counters.clone(), quit.clone());
            std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    let mut echoed = 0u64;
                    while !quit.load(Ordering::Relaxed) && started.elapsed() < max {
                        s.tick_incoming_with(|ctx, ev| {
                            if let Event::Data { id, channel, data } = ev {
                                if ctx.send(id, data, channel).is_ok() {
                                    echoed += 1;
                                }
                            }
                        });
                        s.tick_outgoing();
                        counters.echoed.store(echoed, Ordering::Relaxed);
                        let conns = s.connection_count() as u64;
                        counters.connections.store(conns, Ordering::Relaxed);
                        if MARKS.load(Ordering::Relaxed) > 0
                            && counters.connections_at_mark.load(Ordering::Relaxed) == u64::MAX
                        {
                            counters.connections_at_mark.store(conns, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    s.stats()
                })
                .expect("spawn shard thread")
        };
        shards.push((counters, handle));
    }
    say(&format!("PORT {}", addr.port()));
    let echoed = || -> u64 {
        shards
            .iter()
            .map(|(c, _)| c.echoed.load(Ordering::Relaxed))
            .sum()
    };
    let per_shard = |f: fn(&ShardCounters) -> &AtomicU64| -> Vec<u64> {
        shards
            .iter()
            .map(|(c, _)| f(c).load(Ordering::Relaxed))
            .collect()
    };
    while MARKS.load(Ordering::Relaxed) == 0 && !stopped() && started.elapsed() < max {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (cpu0, echoed0, rss_mark, t0) = (process_cpu_ns(), echoed(), rss_bytes(), Instant::now());
    let echoed_at_mark = per_shard(|c| &c.echoed);
    while !stopped() && started.elapsed() < max {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Read while every shard thread is still alive (their time leaves /proc when they exit).
    let (cpu1, echoed1, wall) = (process_cpu_ns(), echoed(), t0.elapsed().as_secs_f64());
    let conns_at_end = per_shard(|c| &c.connections);
    let conns_at_mark: Vec<u64> = per_shard(|c| &c.connections_at_mark)
        .into_iter()
        .map(|c| if c == u64::MAX { 0 } else { c })
        .collect();
    let echoed_per_shard: Vec<u64> = per_shard(|c| &c.echoed)
        .iter()
        .zip(&echoed_at_mark)
        .map(|(e, m)| e - m)
        .collect();
    quit.store(true, Ordering::Relaxed);
    let stats: Vec<serde_json::Value> = shards
        .into_iter()
        .map(|(_, h)| match h.join() {
            Ok(st) => json!({
                "datagrams_received": st.datagrams_received, "datagrams_sent": st.datagrams_sent,
                "dropped_unknown": st.dropped_unknown, "dropped_limit": st.dropped_limit,
                "dropped_invalid": st.dropped_invalid, "send_errors": st.send_errors,
                "connections_accepted": st.connections_accepted,
            }),
            Err(_) => json!("panicked"),
        })
        .collect();
    result(json!({
        "shards": k,
        "cpu_ns": cpu1.saturating_sub(cpu0),
        "wall_s": wall,
        "echoed": echoed1 - echoed0,
        "rss_base": rss_base, "rss_mark": rss_mark, "rss_end": rss_bytes(),
        "connections": conns_at_end.iter().sum::<u64>(),
        "connections_at_mark": conns_at_mark.iter().sum::<u64>(),
        "connections_per_shard": conns_at_mark,
        "echoed_per_shard": echoed_per_shard,
        "shard_stats": stats,
    }));
}

/// `--sync 1`: after `READY`, waits (at most 120 s) for the parent's `mark` before
/// sending, so that several client processes start together; `keep` runs every
/// millisecond meanwhile (it ticks the clients, so that they stay connected).
fn wait_for_go(sync: bool, mut keep: impl FnMut()) {
    if !sync {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while MARKS.load(Ordering::Relaxed) == 0 && !stopped() && Instant::now() < deadline {
        keep();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `--n` clients in this process, a socket each, each sending a 32-byte reliable message
/// every 50 ms for `--secs` seconds; echo latency percentiles. `--sync 1`: start sending
/// at the parent's `mark` ([`wait_for_go`]). Also reports this process's own CPU time
/// over the sending phase (`cpu_ns`, `cpu_wall_s`), to tell a saturated client.
pub fn w3_client(p: &Params) {
    child_control();
    let imp = p.s("impl");
    let n = p.n("n") as usize;
    let run = Duration::from_secs(p.n("secs").max(1));
    let port = p.n("port") as u16;
    // `--idle 1`: connect, then send nothing (W6's memory rows).
    let idle = p.n("idle") == 1;
    let sync = p.n("sync") == 1;
    let period = Duration::from_millis(50);
    let cpu0: (u64, Instant);
    let epoch = Instant::now();
    let mut rtts: Vec<f64> = Vec::new();
    let (mut sent, mut echoed) = (0u64, 0u64);
    let mut connected = 0usize;
    // Clients still connected when sending stopped (kcpnet; raw UDP has no connections).
    let connected_end: usize;
    let stamp = |i: usize| {
        let mut m = [0u8; 32];
        m[..8].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_le_bytes());
        m[8..12].copy_from_slice(&(i as u32).to_le_bytes());
        m
    };
    let rtt_of = |data: &[u8]| -> Option<f64> {
        let t = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
        Some((epoch.elapsed().as_micros() as u64).saturating_sub(t) as f64 / 1000.0)
    };
    match imp {
        "kcpnet" | "kcpnet-nogso" | "kcpnet-plain" | "kcpnet-secure" | "kcpnet-fec"
        | "kcpnet-fecad" => {
            // The clients' sockets never batch: the switch under test is the server's.
            let mut clients: Vec<kcpnet::Client> = (0..n)
                .map(|i| {
                    with_token(
                        imp,
                        port,
                        kcpnet_client(port, SocketIo::Plain, false, i as u64, bench_config()),
                    )
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                connected = 0;
                for c in clients.iter_mut() {
                    c.tick_incoming();
                    while c.poll_event().is_some() {}
                    c.tick_outgoing();
                    connected += usize::from(c.is_connected());
                }
                if connected == n {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            say("READY");
            wait_for_go(sync, || {
                for c in clients.iter_mut() {
                    c.tick_incoming();
                    while c.poll_event().is_some() {}
                    c.tick_outgoing();
                }
            });
            cpu0 = (process_cpu_ns(), Instant::now());
            let start = Instant::now();
            let mut next: Vec<Instant> = (0..n)
                .map(|i| start + period.mul_f64(i as f64 / n as f64))
                .collect();
            let end = start + run;
            let linger = end + Duration::from_millis(500);
            loop {
                let now = Instant::now();
                if now >= linger || stopped() {
                    break;
                }
                for (i, c) in clients.iter_mut().enumerate() {
                    c.tick_incoming();
                    while let Some(ev) = c.poll_event() {
                        if let Event::Data { data, .. } = ev {
                            echoed += 1;
                            if let Some(r) = rtt_of(data) {
                                rtts.push(r);
                            }
                        }
                    }
                    if !idle && now < end && now >= next[i] && c.is_connected() {
                        if c.send(&stamp(i), Channel::Reliable).is_ok() {
                            sent += 1;
                        }
                        next[i] += period;
                    }
                    c.tick_outgoing();
                }
                if Instant::now() - now < Duration::from_millis(1) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            connected_end = clients.iter().filter(|c| c.is_connected()).count();
        }
        "udp" | "udp-batch" => {
            let socks: Vec<UdpSocket> = (0..n)
                .map(|_| {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.set_nonblocking(true).unwrap();
                    s.connect(server_addr(port)).unwrap();
                    s
                })
                .collect();
            connected = n;
            connected_end = n;
            say("READY");
            wait_for_go(sync, || {});
            cpu0 = (process_cpu_ns(), Instant::now());
            let start = Instant::now();
            let mut next: Vec<Instant> = (0..n)
                .map(|i| start + period.mul_f64(i as f64 / n as f64))
                .collect();
            let end = start + run;
            let linger = end + Duration::from_millis(500);
            let mut buf = [0u8; 64];
            loop {
                let now = Instant::now();
                if now >= linger || stopped() {
                    break;
                }
                for (i, s) in socks.iter().enumerate() {
                    while let Ok(len) = s.recv(&mut buf) {
                        echoed += 1;
                        if let Some(r) = rtt_of(&buf[..len]) {
                            rtts.push(r);
                        }
                    }
                    if !idle && now < end && now >= next[i] {
                        if s.send(&stamp(i)).is_ok() {
                            sent += 1;
                        }
                        next[i] += period;
                    }
                }
                if Instant::now() - now < Duration::from_millis(1) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        other => panic!("unknown impl {other}"),
    }
    let p50 = percentile(&mut rtts, 50.0);
    let p99 = percentile(&mut rtts, 99.0);
    let (cpu_ns, cpu_wall_s) = (
        process_cpu_ns().saturating_sub(cpu0.0),
        cpu0.1.elapsed().as_secs_f64(),
    );
    result(json!({
        "n": n, "connected": connected, "connected_end": connected_end,
        "sent": sent, "echoed": echoed,
        "cpu_ns": cpu_ns, "cpu_wall_s": cpu_wall_s,
        "pct_echoed": if sent > 0 { 100.0 * echoed as f64 / sent as f64 } else { 0.0 },
        "p50_ms": p50, "p99_ms": p99,
    }));
}
