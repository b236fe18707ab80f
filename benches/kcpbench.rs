//! kcpnet's benchmarks: the workloads of `docs/PERFORMANCE.md` (W1–W6), each reported as a
//! ratio to baselines measured in the same run (raw UDP, plain and batched; the `kcp`
//! crate where it fits), with kcpnet's socket batching both off and on, and UDP GSO/GRO
//! off (`kcpnet-nogso`) and on (`kcpnet`, the default) where they can matter.
//!
//! `cargo bench` runs the quick profile (a few minutes on 2 cores); `cargo bench -- --full`
//! runs the full sizes three times and reports medians; `--only W1a,W3` picks workloads
//! (W1a W1b W2a W2b W3 W3s W4a W4b W4c W5 W6; W3s is W3 with `SO_REUSEPORT` shards);
//! `--reps N` overrides the repetitions.
//! W1–W4 run client and server as separate processes: this binary re-executes itself
//! with `--role ...`. Everything uses loopback only. Results also go to
//! `target/bench-results.json`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use serde_json::{json, Value};

use common::{args, median, roles, Proc};

// ------------------------------------------------------------------ counting allocator

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` unchanged; counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: the caller's contract is passed on to `System`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn count_allocs(f: &mut dyn FnMut()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCS.with(Cell::get) - before
}

// ------------------------------------------------------------------ profiles

#[derive(Debug, Clone, Copy)]
struct Profile {
    name: &'static str,
    reps: usize,
    /// Repetitions of the workloads that take about a second (W1a, W1b, W2a).
    reps_short: usize,
    w1a_bytes: u64,
    w1b_bytes: u64,
    w2a_count: u64,
    w2b_count: u64,
    w3_ns: &'static [u64],
    w3_secs: u64,
    /// W3s (W3 with `SO_REUSEPORT` shards): client counts; the run length is `w3_secs`.
    w3s_ns: &'static [u64],
    w4a_count: u64,
    w4b_bytes: u64,
    /// W4c: seconds of the 30 Hz stream per FEC setting.
    w4c_secs: f64,
    w5_msgs: u64,
    w6_clients: usize,
    w6_steps: usize,
}

const QUICK: Profile = Profile {
    name: "quick",
    reps: 1,
    reps_short: 3,
    w1a_bytes: 32 << 20,
    w1b_bytes: 4 << 20,
    w2a_count: 5_000,
    w2b_count: 500,
    w3_ns: &[1_000, 5_000],
    w3_secs: 8,
    w3s_ns: &[10_000, 20_000],
    w4a_count: 200,
    w4b_bytes: 2 << 20,
    w4c_secs: 20.0,
    w5_msgs: 500,
    w6_clients: 10_000,
    w6_steps: 360,
};

const FULL: Profile = Profile {
    name: "full",
    reps: 3,
    reps_short: 3,
    w1a_bytes: 64 << 20,
    w1b_bytes: 16 << 20,
    w2a_count: 20_000,
    w2b_count: 2_000,
    w3_ns: &[1_000, 5_000, 10_000],
    w3_secs: 20,
    w3s_ns: &[10_000, 20_000],
    w4a_count: 2_000,
    w4b_bytes: 8 << 20,
    w4c_secs: 60.0,
    w5_msgs: 2_000,
    w6_clients: 10_000,
    w6_steps: 720,
};

// ------------------------------------------------------------------ running pairs

/// Runs a server role and a client role (separate processes); returns both results.
fn pair(server: &[&str], client: &[&str], timeout: Duration) -> (Value, Value) {
    let mut s = Proc::spawn(&args(server));
    let port = s.port().to_string();
    let mut cargs = args(client);
    cargs.extend(args(&["--port", &port]));
    let mut c = Proc::spawn(&cargs);
    let cr = c.result(timeout);
    std::thread::sleep(Duration::from_millis(300));
    let sr = s.stop(Duration::from_secs(10));
    (sr, cr)
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Runs `run` `reps` times and keeps the run whose `key` is the median.
fn median_run(reps: usize, key: impl Fn(&Value) -> f64, mut run: impl FnMut() -> Value) -> Value {
    let mut runs: Vec<Value> = (0..reps).map(|_| run()).collect();
    runs.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut keys: Vec<f64> = runs.iter().map(&key).collect();
    let m = median(&mut keys);
    let mut v = runs.swap_remove(runs.len() / 2);
    if let Some(o) = v.as_object_mut() {
        o.insert("median_of".into(), json!(reps));
        o.insert("median_key".into(), json!(m));
    }
    v
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

// ------------------------------------------------------------------ workloads

const BULK_IMPLS: &[&str] = &[
    "udp",
    "udp-batch",
    "kcp",
    "kcpnet-plain",
    "kcpnet-nogso",
    "kcpnet",
    "kcpnet-secure",
];

/// Secure sessions measured in the same run: `kcpnet-secure` ÷ `kcpnet` of `key`.
fn secure_ratio(out: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    let plain = f(out.get("kcpnet")?, key);
    let secure = f(out.get("kcpnet-secure")?, key);
    Some(ratio(secure, plain))
}

/// The GSO/GRO switch measured in the same run: `kcpnet` (on) ÷ `kcpnet-nogso` (off) of
/// `key`, or `None` unless both ran.
fn offload_ratio(out: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    let off = f(out.get("kcpnet-nogso")?, key);
    let on = f(out.get("kcpnet")?, key);
    Some(ratio(on, off))
}

fn w1(p: &Profile, id: &str, bytes: u64, msg: u64, impls: &[&str], impair: bool) -> Value {
    let mut out = serde_json::Map::new();
    for imp in impls {
        let b = bytes.to_string();
        let m = msg.to_string();
        let mut s_args = vec!["--role", "w1-server", "--impl", imp, "--bytes", &b];
        let mut c_args = vec![
            "--role",
            "w1-client",
            "--impl",
            imp,
            "--bytes",
            &b,
            "--msg",
            &m,
            "--timeout",
            "120",
        ];
        if impair && *imp != "udp" {
            s_args.push("--impair");
            c_args.push("--impair");
        }
        let v = median_run(
            if impair { p.reps } else { p.reps_short },
            |v| f(v, "mb_per_s"),
            || {
                let (s, c) = pair(&s_args, &c_args, Duration::from_secs(150));
                json!({"server": s, "client": c, "mb_per_s": f(&s, "mb_per_s"),
                       "msgs_per_s": f(&s, "msgs_per_s"), "complete": s.get("complete")})
            },
        );
        out.insert(imp.to_string(), v);
    }
    println!(
        "\n{id}: {} as {msg}-byte messages, throughput at the server",
        human(bytes)
    );
    println!(
        "{:<14} {:>10} {:>12} {:>9} {:>9}",
        "impl", "MB/s", "msgs/s", "÷udp", "÷udp-batch"
    );
    let base = f(&out["udp"], "mb_per_s");
    let batch = out.get("udp-batch").map_or(0.0, |v| f(v, "mb_per_s"));
    for imp in impls {
        let v = &out[*imp];
        println!(
            "{:<14} {:>10.1} {:>12.0} {:>9} {:>9}{}",
            imp,
            f(v, "mb_per_s"),
            f(v, "msgs_per_s"),
            ratio(f(v, "mb_per_s"), base),
            ratio(f(v, "mb_per_s"), batch),
            if v.get("complete") == Some(&json!(true)) {
                ""
            } else {
                "  (incomplete: lossy)"
            }
        );
    }
    if let Some(r) = offload_ratio(&out, "mb_per_s") {
        println!("kcpnet GSO/GRO on ÷ off (MB/s): {r}");
    }
    if let Some(r) = secure_ratio(&out, "mb_per_s") {
        println!("kcpnet secure ÷ plain (MB/s): {r}");
    }
    Value::Object(out)
}

fn w2(p: &Profile, id: &str, count: u64, tick_us: u64, impair: bool, impls: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for imp in impls {
        let c = count.to_string();
        let t = tick_us.to_string();
        let mut s_args = vec!["--role", "w2-server", "--impl", imp, "--tick-us", &t];
        let mut c_args = vec![
            "--role",
            "w2-client",
            "--impl",
            imp,
            "--count",
            &c,
            "--tick-us",
            &t,
            "--timeout",
            "300",
        ];
        if impair {
            s_args.push("--impair");
            c_args.push("--impair");
        }
        let v = median_run(
            if tick_us == 0 { p.reps_short } else { p.reps },
            |v| f(v, "p50_us"),
            || pair(&s_args, &c_args, Duration::from_secs(320)).1,
        );
        out.insert(imp.to_string(), v);
    }
    let base_name = impls[0];
    let (b50, b99) = (f(&out[base_name], "p50_us"), f(&out[base_name], "p99_us"));
    println!(
        "\n{id}: {count} sequential round trips of 32 bytes{}{}",
        if tick_us > 0 {
            format!(", {tick_us} µs ticks")
        } else {
            ", tight loop".into()
        },
        if impair {
            ", 20 ms one way + 5% loss each way (link conditioner)"
        } else {
            ""
        }
    );
    println!(
        "{:<14} {:>10} {:>10} {:>8} {:>12} {:>12}",
        "impl",
        "p50 µs",
        "p99 µs",
        "trips",
        format!("p50÷{base_name}"),
        format!("p99÷{base_name}")
    );
    for imp in impls {
        let v = &out[*imp];
        println!(
            "{:<14} {:>10.1} {:>10.1} {:>8} {:>12} {:>12}",
            imp,
            f(v, "p50_us"),
            f(v, "p99_us"),
            f(v, "round_trips"),
            ratio(f(v, "p50_us"), b50),
            ratio(f(v, "p99_us"), b99)
        );
    }
    if let (Some(a), Some(b)) = (secure_ratio(&out, "p50_us"), secure_ratio(&out, "p99_us")) {
        println!("kcpnet secure ÷ plain: p50 {a}, p99 {b}");
    }
    Value::Object(out)
}

/// W4a's FEC targets: p99 ≤ 1.5 × the 40 ms round trip, p50 unchanged.
fn fec_summary_w4a(out: &Value) {
    let us = |imp: &str, k: &str| out.get(imp).map_or(0.0, |v| f(v, k));
    for imp in ["kcpnet-fec", "kcpnet-fecad"] {
        println!(
            "{imp}: p99 {:.1} ms = {:.2}× the 40 ms round trip (target ≤ 1.5×); p50 ÷ kcpnet {}",
            us(imp, "p99_us") / 1000.0,
            us(imp, "p99_us") / 40_000.0,
            ratio(us(imp, "p50_us"), us("kcpnet", "p50_us"))
        );
    }
}

/// W4c: the 30 Hz input stream each way on W4's link, FEC off, fixed and adaptive, run one
/// after the other (medians of the profile's repetitions by p99).
fn w4c(p: &Profile) -> Value {
    let settings = [
        ("off", kcpnet::Fec::Off),
        ("fixed-8+2", kcpnet::Fec::Fixed { data: 8, parity: 2 }),
        ("adaptive", kcpnet::Fec::ADAPTIVE),
    ];
    let mut out = serde_json::Map::new();
    for (i, (name, fec)) in settings.iter().enumerate() {
        let v = median_run(
            p.reps,
            |v| f(v, "p99_ms"),
            || common::stream::w4c(p.w4c_secs, *fec, 10 + i as u64),
        );
        out.insert(name.to_string(), v);
    }
    println!(
        "\nW4c: 30 Hz 64-byte reliable messages each way for {} s, 20 ms one way + 5% loss each way",
        p.w4c_secs
    );
    println!(
        "{:<10} {:>8} {:>8} {:>9} {:>8} {:>11} {:>9} {:>9} {:>10}",
        "fec", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "delivered", "kB/s", "÷off", "rebuilt"
    );
    let base = f(&out["off"], "bytes_per_s");
    for (name, _) in &settings {
        let v = &out[*name];
        println!(
            "{:<10} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>11} {:>9.1} {:>9} {:>10}",
            name,
            f(v, "p50_ms"),
            f(v, "p99_ms"),
            f(v, "p999_ms"),
            f(v, "max_ms"),
            format!(
                "{}/{}",
                f(v, "delivered_to_server") + f(v, "delivered_to_client"),
                2.0 * f(v, "sent_each_way")
            ),
            f(v, "bytes_per_s") / 1000.0,
            ratio(f(v, "bytes_per_s"), base),
            f(v, "fec_recovered"),
        );
    }
    for (name, _) in &settings[1..] {
        let v = &out[*name];
        println!(
            "{name}: p99 {:.2}× and p99.9 {:.2}× the 20 ms one-way latency (targets ≤ 1.5×, ≤ 2.5×); bandwidth {} of FEC off",
            f(v, "p99_ms") / 20.0,
            f(v, "p999_ms") / 20.0,
            ratio(f(v, "bytes_per_s"), base)
        );
    }
    Value::Object(out)
}

fn w3(p: &Profile) -> Value {
    let impls = [
        "udp",
        "udp-batch",
        "kcpnet-plain",
        "kcpnet-nogso",
        "kcpnet",
        "kcpnet-secure",
    ];
    let mut all = serde_json::Map::new();
    for &n in p.w3_ns {
        let mut out = serde_json::Map::new();
        for imp in impls {
            let ns = n.to_string();
            let secs = p.w3_secs.to_string();
            let v = median_run(
                p.reps,
                |v| f(v, "cpu_us_per_msg"),
                || {
                    let mut s = Proc::spawn(&args(&["--role", "w3-server", "--impl", imp]));
                    let port = s.port().to_string();
                    let mut c = Proc::spawn(&args(&[
                        "--role",
                        "w3-client",
                        "--impl",
                        imp,
                        "--n",
                        &ns,
                        "--secs",
                        &secs,
                        "--port",
                        &port,
                    ]));
                    if c.expect("READY", Duration::from_secs(90)).is_none() {
                        eprintln!("W3 {imp} {n}: clients never got ready");
                    }
                    s.tell("mark");
                    let cr = c.result(Duration::from_secs(p.w3_secs + 60));
                    let sr = s.stop(Duration::from_secs(10));
                    let echoed = f(&sr, "echoed");
                    let cpu_us = f(&sr, "cpu_ns") / 1e3;
                    json!({
                        "server": sr, "client": cr,
                        "cpu_us_per_msg": if echoed > 0.0 { cpu_us / echoed } else { 0.0 },
                        "cpu_pct": 100.0 * cpu_us / 1e6 / f(&sr, "wall_s").max(1e-9),
                        "rss_per_conn": (f(&sr, "rss_mark") - f(&sr, "rss_base")) / n as f64,
                        "pct_echoed": f(&cr, "pct_echoed"),
                        "p99_ms": f(&cr, "p99_ms"),
                    })
                },
            );
            out.insert(imp.to_string(), v);
        }
        println!(
            "\nW3: {n} clients (one process, a socket each) × 20 msg/s, 32-byte reliable echo, {} s, server ticks every 1 ms",
            p.w3_secs
        );
        println!(
            "{:<14} {:>12} {:>8} {:>12} {:>9} {:>9} {:>9}",
            "impl", "CPU µs/msg", "CPU %", "RSS/conn", "echoed %", "p99 ms", "CPU÷udp"
        );
        let base = f(&out["udp"], "cpu_us_per_msg");
        for imp in impls {
            let v = &out[imp];
            println!(
                "{:<14} {:>12.2} {:>8.1} {:>12} {:>9.1} {:>9.2} {:>9}",
                imp,
                f(v, "cpu_us_per_msg"),
                f(v, "cpu_pct"),
                human(f(v, "rss_per_conn").max(0.0) as u64),
                f(v, "pct_echoed"),
                f(v, "p99_ms"),
                ratio(f(v, "cpu_us_per_msg"), base)
            );
        }
        if let Some(r) = offload_ratio(&out, "cpu_us_per_msg") {
            println!("kcpnet GSO/GRO on ÷ off (CPU µs/msg): {r}");
        }
        if let Some(r) = secure_ratio(&out, "cpu_us_per_msg") {
            println!("kcpnet secure ÷ plain (CPU µs/msg): {r}");
        }
        all.insert(n.to_string(), Value::Object(out));
    }
    Value::Object(all)
}

/// W3s: clients per client process. The limit on open files is per process (a client
/// is a socket) and 20,000 on this project's machines (soft = hard), so 20,000 clients
/// run as two processes of 10,000.
const W3S_PER_PROC: u64 = 10_000;

/// W3s rows: (JSON key, label, `--impl`, `--shards`). Raw UDP's stateless echo server
/// (one socket, unsharded) is the CPU baseline, as in W3.
const W3S_ROWS: &[(&str, &str, &str, Option<u32>)] = &[
    ("udp", "udp (1 socket)", "udp", None),
    ("kcpnet-x1", "kcpnet ×1 shard", "kcpnet", Some(1)),
    ("kcpnet-x2", "kcpnet ×2 shards", "kcpnet", Some(2)),
];

/// One W3s run: a server (sharded if `shards`), `n` clients spread over
/// `ceil(n / W3S_PER_PROC)` client processes that start sending together at the mark.
fn w3s_run(imp: &str, shards: Option<u32>, n: u64, secs: u64) -> Value {
    let k = shards.map(|k| k.to_string());
    let mut s_args = vec!["--role", "w3-server", "--impl", imp];
    if let Some(k) = k.as_deref() {
        s_args.extend(["--shards", k]);
    }
    let mut s = Proc::spawn(&args(&s_args));
    let port = s.port().to_string();
    let procs = n.div_ceil(W3S_PER_PROC).max(1);
    let secs_s = secs.to_string();
    let mut clients: Vec<Proc> = (0..procs)
        .map(|i| {
            let share = (n / procs + u64::from(i < n % procs)).to_string();
            Proc::spawn(&args(&[
                "--role",
                "w3-client",
                "--impl",
                imp,
                "--n",
                &share,
                "--secs",
                &secs_s,
                "--port",
                &port,
                "--sync",
                "1",
            ]))
        })
        .collect();
    let ready_by = std::time::Instant::now() + Duration::from_secs(150);
    for (i, c) in clients.iter_mut().enumerate() {
        let left = ready_by.saturating_duration_since(std::time::Instant::now());
        if c.expect("READY", left).is_none() {
            eprintln!("W3s {imp} {n}: client process {i} never got ready");
        }
    }
    s.tell("mark");
    for c in clients.iter_mut() {
        c.tell("mark");
    }
    let crs: Vec<Value> = clients
        .iter_mut()
        .map(|c| c.result(Duration::from_secs(secs + 60)))
        .collect();
    let sr = s.stop(Duration::from_secs(10));
    let sum = |k: &str| crs.iter().map(|c| f(c, k)).sum::<f64>();
    let (sent, echoed_c) = (sum("sent"), sum("echoed"));
    let (connected, connected_end) = (sum("connected"), sum("connected_end"));
    let client_cpu_pct: f64 = crs
        .iter()
        .map(|c| 100.0 * f(c, "cpu_ns") / 1e9 / f(c, "cpu_wall_s").max(1e-9))
        .sum();
    let echoed = f(&sr, "echoed");
    let cpu_us = f(&sr, "cpu_ns") / 1e3;
    json!({
        "server": sr, "clients": crs, "client_processes": procs,
        "n": n, "connected": connected, "connected_end": connected_end, "sent": sent, "echoed_at_clients": echoed_c,
        "offered_pct": 100.0 * sent / (n as f64 * 20.0 * secs as f64),
        "cpu_us_per_msg": if echoed > 0.0 { cpu_us / echoed } else { 0.0 },
        "cpu_pct": 100.0 * cpu_us / 1e6 / f(&sr, "wall_s").max(1e-9),
        "rss_per_conn": (f(&sr, "rss_mark") - f(&sr, "rss_base")) / n as f64,
        "pct_echoed": if sent > 0.0 { 100.0 * echoed_c / sent } else { 0.0 },
        // Every client connected at the start and still at the end, every message echoed.
        "all_served": connected as u64 == n && connected_end as u64 == n
            && sent > 0.0 && echoed_c >= sent,
        // The worst client process's p99 (percentiles of separate processes do not merge).
        "p99_ms": crs.iter().map(|c| f(c, "p99_ms")).fold(0.0, f64::max),
        "client_cpu_pct": client_cpu_pct,
    })
}

/// W3 with `SO_REUSEPORT` shards: kcpnet's W3 echo server as 1 and as 2 single-threaded
/// shards on one port, at `w3s_ns` clients, against raw UDP's echo server.
fn w3s(p: &Profile) -> Value {
    let started = std::time::Instant::now();
    let mut all = serde_json::Map::new();
    if let Some((soft, hard)) = common::open_files_limit() {
        if soft < W3S_PER_PROC + 64 {
            println!(
                "\nW3s skipped: a client process holds {W3S_PER_PROC} sockets, but the soft limit on open files is {soft} (hard {hard}); raise it (`ulimit -n {}`) and run again",
                (W3S_PER_PROC + 64).min(hard)
            );
            return json!({"skipped": format!("open files soft limit {soft}, hard {hard}")});
        }
    }
    for &n in p.w3s_ns {
        let mut out = serde_json::Map::new();
        for &(key, _, imp, shards) in W3S_ROWS {
            let v = median_run(
                p.reps,
                |v| f(v, "cpu_us_per_msg"),
                || w3s_run(imp, shards, n, p.w3_secs),
            );
            out.insert(key.to_string(), v);
        }
        let procs = n.div_ceil(W3S_PER_PROC).max(1);
        println!(
            "\nW3s: {n} clients ({procs} client process{}, a socket each) × 20 msg/s, 32-byte reliable echo, {} s; kcpnet sharded with SO_REUSEPORT (a thread and a socket per shard, each ticking every 1 ms)",
            if procs == 1 { "" } else { "es" },
            p.w3_secs
        );
        println!(
            "{:<17} {:>11} {:>11} {:>9} {:>10} {:>7} {:>9} {:>9} {:>8} {:>11} {:>8} {:>6}",
            "impl",
            "connected",
            "per shard",
            "offered %",
            "CPU µs/msg",
            "CPU %",
            "RSS/conn",
            "echoed %",
            "p99 ms",
            "client CPU%",
            "CPU÷udp",
            "served"
        );
        let base = f(&out["udp"], "cpu_us_per_msg");
        for &(key, label, _, shards) in W3S_ROWS {
            let v = &out[key];
            let per_shard = match (shards, v["server"].get("connections_per_shard")) {
                (Some(_), Some(Value::Array(a))) => a
                    .iter()
                    .map(|c| c.as_u64().unwrap_or(0).to_string())
                    .collect::<Vec<_>>()
                    .join("+"),
                _ => "–".into(),
            };
            let (c0, c1) = (f(v, "connected"), f(v, "connected_end"));
            println!(
                "{:<17} {:>11} {:>11} {:>9.1} {:>10.2} {:>7.1} {:>9} {:>9.2} {:>8.2} {:>11.0} {:>8} {:>6}",
                label,
                if c0 == c1 { c0.to_string() } else { format!("{c0}→{c1}") },
                per_shard,
                f(v, "offered_pct"),
                f(v, "cpu_us_per_msg"),
                f(v, "cpu_pct"),
                human(f(v, "rss_per_conn").max(0.0) as u64),
                f(v, "pct_echoed"),
                f(v, "p99_ms"),
                f(v, "client_cpu_pct"),
                ratio(f(v, "cpu_us_per_msg"), base),
                if v.get("all_served") == Some(&json!(true)) {
                    "all"
                } else {
                    "NO"
                }
            );
        }
        let (one, two) = (&out["kcpnet-x1"], &out["kcpnet-x2"]);
        let rate = |v: &Value| f(&v["server"], "echoed") / f(&v["server"], "wall_s").max(1e-9);
        let r_msg = ratio(f(two, "cpu_us_per_msg"), f(one, "cpu_us_per_msg"));
        let r_pct = ratio(f(two, "cpu_pct"), f(one, "cpu_pct"));
        let r_rate = ratio(rate(two), rate(one));
        println!(
            "2 shards ÷ 1 shard: CPU µs/msg {r_msg}, server CPU % {r_pct}, messages echoed per second {r_rate}"
        );
        out.insert(
            "ratio_2_over_1".into(),
            json!({"cpu_us_per_msg": r_msg, "cpu_pct": r_pct, "echoed_per_s": r_rate}),
        );
        all.insert(n.to_string(), Value::Object(out));
    }
    println!(
        "(connected: clients connected at the start→at the end if fewer; per shard: server connections at the mark; offered %: messages sent ÷ (N × 20/s × run); CPU: the server process, all threads, 100 = one core; client CPU%: all client processes; served: all = every client connected throughout and every message sent was echoed)"
    );
    let secs = started.elapsed().as_secs_f64();
    println!("(W3s took {secs:.0} s)");
    all.insert("elapsed_s".into(), json!(secs));
    Value::Object(all)
}

/// `perf stat -e instructions` works here (it reports `<not supported>` in many VMs).
fn perf_instructions_work() -> bool {
    std::process::Command::new("perf")
        .args(["stat", "-x,", "-e", "instructions", "--", "true"])
        .output()
        .map(|o| {
            let err = String::from_utf8_lossy(&o.stderr);
            o.status.success()
                && err.contains("instructions")
                && !err.contains("not supported")
                && !err.contains("not counted")
        })
        .unwrap_or(false)
}

fn w5(p: &Profile) -> Value {
    let rows = common::inproc::w5(p.w5_msgs, &count_allocs);
    let perf = perf_instructions_work();
    println!(
        "\nW5: steady-state reliable/unreliable messages through an in-memory pair (send, flush, receive, ACK)"
    );
    println!(
        "{:<10} {:<11} {:>9} {:>14} {:>12} {:>14}",
        "size", "channel", "messages", "allocs/msg", "ns/msg", "instr/msg"
    );
    for r in &rows {
        println!(
            "{:<10} {:<11} {:>9} {:>14.3} {:>12.0} {:>14}",
            f(r, "size"),
            r["channel"].as_str().unwrap_or(""),
            f(r, "messages"),
            f(r, "allocs_per_msg"),
            f(r, "ns_per_msg"),
            if perf { "see perf" } else { "n/a" }
        );
    }
    if !perf {
        println!(
            "(instructions: n/a — `perf stat -e instructions` is not supported on this machine)"
        );
    }
    json!({"rows": rows, "instructions": if perf { "perf available, not wired" } else { "n/a" }})
}

fn w6(p: &Profile) -> Value {
    let n = p.w6_clients;
    let mem = median_run(
        p.reps,
        |v| f(v, "mean_us"),
        || common::inproc::w6_memory(n, p.w6_steps),
    );
    // The baseline moves the datagrams the kcpnet rows move: a Ping every 3 s (180 ticks,
    // the slow keepalive) answered by one datagram, and an ACK back for the share of the
    // answers that carried a Pong (in ÷ out − 1 on the memory network, the same traffic
    // as over UDP).
    let acks_back =
        (f(&mem, "datagrams_in_per_tick") / f(&mem, "datagrams_out_per_tick").max(1e-9) - 1.0)
            .clamp(0.0, 1.0);
    let raw = median_run(
        p.reps,
        |v| f(v, "mean_us"),
        || common::inproc::w6_raw_udp(n, p.w6_steps, 180, acks_back),
    );
    let plain = median_run(
        p.reps,
        |v| f(v, "mean_us"),
        || common::inproc::w6_udp(n, p.w6_steps, common::SocketIo::Plain),
    );
    let batch = median_run(
        p.reps,
        |v| f(v, "mean_us"),
        || common::inproc::w6_udp(n, p.w6_steps, common::SocketIo::Batch),
    );
    let offload = median_run(
        p.reps,
        |v| f(v, "mean_us"),
        || common::inproc::w6_udp(n, p.w6_steps, common::SocketIo::Offload),
    );
    println!("\nW6: {n} idle connected clients, server ticked at 60 Hz of virtual time (ManualClock); server tick only");
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "transport", "connected", "mean µs", "p50 µs", "p99 µs", "max µs", "in/tick", "out/tick"
    );
    for (name, v) in [
        ("raw udp (baseline)", &raw),
        ("memory network", &mem),
        ("udp, batching off", &plain),
        ("udp, batching on", &batch),
        ("udp, batch + GSO/GRO", &offload),
    ] {
        println!(
            "{:<22} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.1} {:>9.1}",
            name,
            f(v, "connected"),
            f(v, "mean_us"),
            f(v, "p50_us"),
            f(v, "p99_us"),
            f(v, "max_us"),
            f(v, "datagrams_in_per_tick"),
            f(v, "datagrams_out_per_tick")
        );
    }
    println!(
        "udp ÷ raw udp (mean): batching off {}, on {}, batch + GSO/GRO {}",
        ratio(f(&plain, "mean_us"), f(&raw, "mean_us")),
        ratio(f(&batch, "mean_us"), f(&raw, "mean_us")),
        ratio(f(&offload, "mean_us"), f(&raw, "mean_us"))
    );
    println!(
        "batching on ÷ off (mean): {}",
        ratio(f(&batch, "mean_us"), f(&plain, "mean_us"))
    );
    println!(
        "GSO/GRO on ÷ off, both batched (mean): {}",
        ratio(f(&offload, "mean_us"), f(&batch, "mean_us"))
    );
    let rss = w6_rss(n);
    json!({"raw_udp": raw, "memory": mem, "udp_plain": plain, "udp_batch": batch, "udp_offload": offload, "rss": rss})
}

/// W6's memory rows: a server process (W3's role) with `n` idle clients in another process,
/// 3 s after they all connected: the server's resident-memory growth per connection, and
/// kcpnet's own `connection_memory` (mean). Raw UDP's stateless echo server is the floor.
fn w6_rss(n: usize) -> Value {
    let mut out = serde_json::Map::new();
    for imp in ["udp", "kcpnet"] {
        let mut s = Proc::spawn(&args(&["--role", "w3-server", "--impl", imp]));
        let port = s.port().to_string();
        let ns = n.to_string();
        let mut c = Proc::spawn(&args(&[
            "--role",
            "w3-client",
            "--impl",
            imp,
            "--n",
            &ns,
            "--secs",
            "4",
            "--port",
            &port,
            "--idle",
            "1",
        ]));
        if c.expect("READY", Duration::from_secs(90)).is_none() {
            eprintln!("W6 memory {imp}: clients never got ready");
        }
        std::thread::sleep(Duration::from_secs(3));
        s.tell("mark");
        let cr = c.result(Duration::from_secs(60));
        let sr = s.stop(Duration::from_secs(10));
        let conns = f(&sr, "connections").max(1.0);
        out.insert(
            imp.to_string(),
            json!({
                "server": sr, "client": cr,
                "rss_per_conn": (f(&sr, "rss_mark") - f(&sr, "rss_base")) / n as f64,
                "connection_memory": f(&sr, "connection_memory"),
                "connections": conns,
            }),
        );
    }
    println!("\nW6 memory: {n} idle clients in another process, server process RSS 3 s after all connected");
    println!(
        "{:<10} {:>12} {:>14} {:>20} {:>16}",
        "impl", "connections", "RSS/conn", "connection_memory", "shared buffers"
    );
    for imp in ["udp", "kcpnet"] {
        let v = &out[imp];
        println!(
            "{:<10} {:>12} {:>14} {:>20} {:>16}",
            imp,
            if imp == "udp" {
                "–".to_string()
            } else {
                f(&v["server"], "connections_at_mark").to_string()
            },
            human(f(v, "rss_per_conn").max(0.0) as u64),
            if imp == "udp" {
                "–".to_string()
            } else {
                human(f(v, "connection_memory") as u64)
            },
            if imp == "udp" {
                "–".to_string()
            } else {
                human(f(&v["server"], "shared_buffer_bytes") as u64)
            }
        );
    }
    Value::Object(out)
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = argv.iter().position(|a| a == "--role") {
        let role = argv.get(i + 1).cloned().unwrap_or_default();
        let params = roles::Params::parse(&argv);
        match role.as_str() {
            "w1-server" => roles::w1_server(&params),
            "w1-client" => roles::w1_client(&params),
            "w2-server" => roles::w2_server(&params),
            "w2-client" => roles::w2_client(&params),
            "w3-server" => roles::w3_server(&params),
            "w3-client" => roles::w3_client(&params),
            // W6 over the memory network alone, for profiling: `--n` clients, `--steps` ticks.
            "w6-memory" => println!(
                "{}",
                common::inproc::w6_memory(
                    params.n("n").max(1) as usize,
                    params.n("steps").max(1) as usize
                )
            ),
            other => {
                eprintln!("unknown role {other}");
                std::process::exit(2);
            }
        }
        return;
    }
    let mut profile = if argv.iter().any(|a| a == "--full") {
        FULL
    } else {
        QUICK
    };
    // `--reps N`: repetitions of every workload (the median is reported).
    if let Some(n) = argv
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| argv.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        profile.reps = n;
        profile.reps_short = n;
    }
    let only: Option<Vec<String>> = argv
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| argv.get(i + 1))
        .map(|s| {
            s.split(',')
                .map(|w| w.trim().to_ascii_uppercase())
                .collect()
        });
    let want = |id: &str| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|w| w == &id.to_ascii_uppercase()))
    };
    println!(
        "kcpnet benchmarks, {} profile (medians of {} repetition(s); W1a, W1b, W2a: {}), loopback only",
        profile.name, profile.reps, profile.reps_short
    );
    let started = std::time::Instant::now();
    let mut results = serde_json::Map::new();
    let p = &profile;
    if want("W1a") {
        results.insert(
            "W1a".into(),
            w1(p, "W1a", p.w1a_bytes, 1000, BULK_IMPLS, false),
        );
    }
    if want("W1b") {
        results.insert(
            "W1b".into(),
            w1(
                p,
                "W1b",
                p.w1b_bytes,
                16,
                &["udp", "kcpnet-plain", "kcpnet"],
                false,
            ),
        );
    }
    if want("W2a") {
        results.insert(
            "W2a".into(),
            w2(
                p,
                "W2a",
                p.w2a_count,
                0,
                false,
                &["udp", "kcp", "kcpnet-plain", "kcpnet", "kcpnet-secure"],
            ),
        );
    }
    if want("W2b") {
        results.insert(
            "W2b".into(),
            w2(
                p,
                "W2b",
                p.w2b_count,
                1000,
                false,
                &["udp", "kcp", "kcpnet"],
            ),
        );
    }
    if want("W3") {
        results.insert("W3".into(), w3(p));
    }
    if want("W3s") {
        results.insert("W3s".into(), w3s(p));
    }
    if want("W4a") {
        results.insert(
            "W4a".into(),
            w2(
                p,
                "W4a",
                p.w4a_count,
                500,
                true,
                &["kcp", "kcpnet", "kcpnet-fec", "kcpnet-fecad"],
            ),
        );
        fec_summary_w4a(&results["W4a"]);
    }
    if want("W4b") {
        let v = w1(
            p,
            "W4b",
            p.w4b_bytes,
            1000,
            &["udp", "kcp", "kcpnet", "kcpnet-fec", "kcpnet-fecad"],
            true,
        );
        println!("(W4b: the udp row has no impairment; it is only the ceiling of the machine)");
        for imp in ["kcpnet-fec", "kcpnet-fecad"] {
            let mb = |i: &str| v.get(i).map_or(0.0, |x| f(x, "mb_per_s"));
            println!(
                "{imp}: ÷ kcp {} (target ≥ 2×), ÷ kcpnet {} (target ≥ 1.5×)",
                ratio(mb(imp), mb("kcp")),
                ratio(mb(imp), mb("kcpnet"))
            );
        }
        results.insert("W4b".into(), v);
    }
    if want("W4c") {
        results.insert("W4c".into(), w4c(p));
    }
    if want("W5") {
        results.insert("W5".into(), w5(p));
    }
    if want("W6") {
        results.insert("W6".into(), w6(p));
    }
    let doc = json!({
        "profile": profile.name,
        "repetitions": profile.reps,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "results": results,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.json");
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    ) {
        Ok(()) => println!(
            "\nwrote {} ({:.0} s)",
            path.display(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
