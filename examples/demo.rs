//! # kcpnet demo: one server, many bots, a bad network, live statistics
//!
//! ```text
//! cargo run --release --example demo                      # 100 bots, 5% loss, 30 ms, 10 s
//! cargo run --release --example demo -- --duration 3      # short run (CI)
//! cargo run --release --example demo -- --bots 200 --loss 20 --latency 50
//! cargo run --release --example demo -- --help
//! cargo run --release --example demo -- --report report.html  # the run as charts
//! cargo run --release --example demo -- --secure          # the same link, encrypted
//! cargo run --release --example demo -- --fec             # with adaptive forward error correction
//! ```
//!
//! One process starts a [`Server`] on `127.0.0.1` (port 0, real loopback UDP) and `--bots`
//! bot [`Client`]s, each with its own UDP socket (`Client::connect`). Everything is ticked
//! from one thread in one game loop of 1 ms frames: server `tick_incoming` + echo +
//! `tick_outgoing`, then every bot's `tick_incoming` / events / actions / `tick_outgoing`,
//! then sleep until the next frame.
//!
//! **Network conditions.** Each bot's socket is wrapped in the library's link conditioner
//! (`Client::set_conditions`) in *both* directions with the configured loss, latency and
//! jitter; the server's socket is left perfect. So each one-way path (bot → server and
//! server → bot) goes through the conditioner exactly once and experiences exactly the
//! configured numbers: a round trip costs `2 × latency` (+ up to `2 × jitter`) and an
//! unreliable echo survives with probability `(1 - loss)²`.
//!
//! **Traffic.** Every bot acts at `--rate` Hz (30 by default) on a staggered phase: each
//! tick it sends an unreliable "position" message (40–100 bytes) and every 10th tick a
//! reliable "event" message (20–2000 bytes; about a quarter are larger than one KCP
//! segment, so they travel as two fragments). Sizes and content are derived from
//! `--seed`, the bot number and a per-bot sequence number. The server echoes every message
//! back on the channel it came on. Each bot checks that its reliable echoes arrive
//! complete, byte-identical, exactly once and in order, and that unreliable echoes are
//! intact.
//!
//! **Timeline.** Bots send during the first part of `--duration`, then stop for a drain
//! phase *inside* the duration (1–2 s: a quarter of the duration, clamped) so in-flight
//! reliable messages complete. If some are still missing at the end (or a bot is still
//! connecting), the loop keeps ticking, up to 30 s of grace, before judging: KCP's ×1.5
//! retransmission backoff gives heavy-loss runs a long tail (see the summary's reliable
//! round-trip max). Then every bot disconnects gracefully and the server shuts down.
//!
//! **Output.** A statistics row per second (`--quiet` hides it), a summary, and
//! `VERDICT: PASS — ...` (exit code 0) or `VERDICT: FAIL — <reason>` (exit code 1). A bot
//! that does not connect within 5 s, disconnects unexpectedly, or sees a reliable echo
//! missing, duplicated, reordered or altered fails the run. Invalid flags exit with 2.
//!
//! **Sockets.** Bots ask for 256 KiB socket buffers (each moves only ~5 KB/s) to keep
//! memory modest with hundreds of sockets; the server keeps kcp2k's default 7 MiB.
//!
//! **Report.** `--report FILE.html` also writes the run's time series (RTT p50/p99, loss,
//! throughput, messages, connections) and the summary as one self-contained HTML file with
//! inline SVG charts: no script and no external asset, so any browser opens it offline.
//!
//! **Secure.** `--secure` runs the same scenario with secure sessions (`docs/SECURITY.md`):
//! the server in `SecurityMode::Required`, and each bot connecting with its own connect
//! token (`Client::connect_with_token`; client id = the bot's number), issued at start under
//! a fresh key, so every datagram after the handshake is sealed (ChaCha20-Poly1305,
//! `SEAL_OVERHEAD` bytes more each). The banner says so, and the summary gains a `secure` line: how many of the
//! server's connections were secure sessions, and the token and sealed-datagram counters of
//! `EndpointStats` (refusals, forged, replayed: all 0 on a clean run). The run fails if a
//! connection was not a secure session or a sealed datagram failed to open.
//!
//! Set `RUST_LOG=debug` to see the library's logs on stderr (default: warnings only).

#[path = "demo/report.rs"]
mod report;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kcpnet::io::{Conditions, Direction};
use kcpnet::secure::{ConnectToken, PrivateKey, SecureConfig, TokenParams, SEAL_OVERHEAD};
use kcpnet::Fec;
use kcpnet::{Channel, Client, Config, DisconnectReason, Event, Server};

/// Frame length of the game loop.
const FRAME: Duration = Duration::from_millis(1);
/// A bot must be connected this long after the start (or by the end of the sending phase).
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// Extra ticking after `--duration` while reliable echoes are still missing. KCP backs
/// off ×1.5 per retransmission, so under heavy loss a segment lost many times in a row
/// takes seconds to get through (at 20% loss about one segment in 80 000 is lost 7 times
/// in a row and arrives only ~8 s after it was first sent).
const GRACE: Duration = Duration::from_secs(30);
/// A reliable "event" every this many bot ticks.
const EVENT_EVERY: u32 = 10;
/// Header of a reliable event: b'E', bot u32, seq u32, total length u32.
const EVENT_HEADER: usize = 13;
/// Header of an unreliable position: b'P', bot u32, tick u32.
const POSITION_HEADER: usize = 9;
/// Table header repeated every this many rows.
const HEADER_EVERY: usize = 10;
/// Socket buffers of each bot.
const BOT_SOCKET_BUFFER: usize = 256 * 1024;
/// The protocol id of the demo's connect tokens (`--secure`).
const SECURE_PROTOCOL_ID: u64 = 0x6b63_706e_6574_de01;

/// Seconds since the Unix epoch (a token's creation time).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ------------------------------------------------------------------------ options

#[derive(Debug, Clone)]
struct Options {
    bots: usize,
    loss_pct: f64,
    latency_ms: u64,
    jitter_ms: u64,
    duration_s: f64,
    rate_hz: u32,
    seed: u64,
    quiet: bool,
    report: Option<PathBuf>,
    secure: bool,
    fec: Fec,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bots: 100,
            loss_pct: 5.0,
            latency_ms: 30,
            jitter_ms: 0,
            duration_s: 10.0,
            rate_hz: 30,
            seed: 1,
            quiet: false,
            report: None,
            secure: false,
            fec: Fec::Off,
        }
    }
}

fn help() -> String {
    let d = Options::default();
    format!(
        "\
kcpnet demo: a server and many bot clients over real loopback UDP, in one game loop.

USAGE:
    cargo run --release --example demo -- [OPTIONS]

One thread runs a 1 ms game loop that ticks a Server on 127.0.0.1 and N bot Clients
(each with its own UDP socket). Every bot sends an unreliable ~40-100 byte 'position'
message each tick and every 10th tick a reliable 20-2000 byte 'event' (some span two
KCP fragments); the server echoes everything back. Bots check that reliable echoes come
back complete, byte-identical, exactly once and in order. A statistics row is printed
every second, then a summary and 'VERDICT: PASS' (exit 0) or 'VERDICT: FAIL' (exit 1).

Loss, latency and jitter are applied by the link conditioner on each bot's socket in
both directions (the server's socket is perfect), so each one-way path, bot->server and
server->bot, sees the configured values once: RTT ~ 2 x latency.

OPTIONS:
    --bots N           number of bot clients, 1..=10000              [default: {bots}]
    --loss PERCENT     one-way datagram loss, 0..=100 (decimals ok)  [default: {loss}]
    --latency MS       one-way added latency in ms, 0..=10000        [default: {lat}]
    --jitter MS        extra one-way delay, uniform 0..=MS, 0..=10000 [default: {jit}]
                       (jitter reorders datagrams)
    --duration SECS    run length in seconds, 2..=3600 (decimals ok) [default: {dur}]
                       Bots stop sending 1-2 s before the end (a quarter of the run,
                       clamped to 1..=2 s) so in-flight reliable messages drain; if some
                       are still missing the loop waits up to 30 s more before judging
                       (under heavy loss KCP's retransmission backoff makes a long tail).
    --rate HZ          bot send rate, 1..=500 ticks per second       [default: {rate}]
    --seed S           seed of message sizes, content and each bot's link conditioner
                       (u64) [default: {seed}]; over real sockets the loss pattern still
                       varies with timing between runs
    --quiet            print only the final summary and verdict
    --report FILE      also write the run as charts (RTT, loss, throughput, messages,
                       connections) and the summary to FILE, one self-contained HTML
                       file with inline SVG (no script, opens offline in any browser)
    --secure           secure sessions: the server admits only connect-token clients
                       (SecurityMode::Required), each bot connects with its own token and
                       every datagram is sealed; the summary adds the token and sealed-
                       datagram counters
    --fec              adaptive forward error correction both ways (Fec::ADAPTIVE:
                       parity per group from the measured loss, groups closed at the
                       latest at the end of each tick); the summary adds the
                       datagrams rebuilt from parity, the bandwidth parity cost and
                       the shapes the bots ended with
    --fec-fixed        the same with one fixed shape (Fec::Fixed {{ data: 8, parity: 1 }})
    -h, --help         print this help

SOCKETS:
    Bots ask for 256 KiB socket buffers (each moves ~5 KB/s), the server for kcp2k's
    default 7 MiB.

TABLE COLUMNS (one row per second; rates are over that second):
    t          seconds since start
    conn       connections established on the server
    rel/s      reliable messages the server received per second
    unrel/s    unreliable messages the server received per second
    inKB/s     bytes per second into the server socket (1 KB = 1000 B)
    outKB/s    bytes per second out of the server socket
    rtt50/99   p50 / p99 over bots of the kcp2k Ping/Pong RTT (Client::rtt) in ms;
               a ping delayed by loss or head-of-line blocking counts in full
    krtt50     p50 over bots of KCP's smoothed RTT (ConnectionQuality::kcp_rtt_ms)
               in ms: the link's round trip, without the queueing pings see
    rexmit/s   KCP retransmissions (retransmits + fast_retransmits, both ends)
    dloss%     datagram loss, both ends: each side's datagrams the other did not get,
               as the other counts them (ConnectionQuality::loss_estimate, pooled
               over connections by samples; recent seconds, older ones fading)
    loss%      bot->server unreliable loss over the second: 1 - received/sent
    pendKB     reliable bytes queued or in flight, not yet acknowledged, both ends
               (ConnectionQuality::pending_reliable_bytes)
    busy%      share of the second the loop spent working (100 = cannot keep up)
    maxms      the longest frame's work in ms
    note       drain = bots stopped sending; grace = waiting for late echoes;
               late N = N bot ticks skipped because the loop fell behind",
        bots = d.bots,
        loss = d.loss_pct,
        lat = d.latency_ms,
        jit = d.jitter_ms,
        dur = d.duration_s,
        rate = d.rate_hz,
        seed = d.seed,
    )
}

enum Command {
    Run(Options),
    Help,
}

/// The value of option `name`, parsed, with an error naming the option.
fn value<T>(parser: &mut lexopt::Parser, name: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = parser.value().map_err(|e| e.to_string())?;
    let text = raw.to_string_lossy();
    text.parse()
        .map_err(|e| format!("invalid value '{text}' for {name}: {e}"))
}

fn parse_args() -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut o = Options::default();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("bots") => o.bots = value(&mut parser, "--bots")?,
            Long("loss") => o.loss_pct = value(&mut parser, "--loss")?,
            Long("latency") => o.latency_ms = value(&mut parser, "--latency")?,
            Long("jitter") => o.jitter_ms = value(&mut parser, "--jitter")?,
            Long("duration") => o.duration_s = value(&mut parser, "--duration")?,
            Long("rate") => o.rate_hz = value(&mut parser, "--rate")?,
            Long("seed") => o.seed = value(&mut parser, "--seed")?,
            Long("quiet") | Short('q') => o.quiet = true,
            Long("report") => o.report = Some(parser.value().map_err(|e| e.to_string())?.into()),
            Long("secure") => o.secure = true,
            Long("fec") => o.fec = Fec::ADAPTIVE,
            Long("fec-fixed") => o.fec = Fec::Fixed { data: 8, parity: 1 },
            Long("help") | Short('h') => return Ok(Command::Help),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if !(1..=10_000).contains(&o.bots) {
        return Err(format!("--bots must be in 1..=10000, got {}", o.bots));
    }
    if !(o.loss_pct.is_finite() && (0.0..=100.0).contains(&o.loss_pct)) {
        return Err(format!(
            "--loss is a percentage in 0..=100, got {}",
            o.loss_pct
        ));
    }
    if o.latency_ms > 10_000 {
        return Err(format!(
            "--latency must be at most 10000 ms, got {}",
            o.latency_ms
        ));
    }
    if o.jitter_ms > 10_000 {
        return Err(format!(
            "--jitter must be at most 10000 ms, got {}",
            o.jitter_ms
        ));
    }
    if !(o.duration_s.is_finite() && (2.0..=3600.0).contains(&o.duration_s)) {
        return Err(format!(
            "--duration must be in 2..=3600 seconds (1-2 s of it drain), got {}",
            o.duration_s
        ));
    }
    if !(1..=500).contains(&o.rate_hz) {
        return Err(format!(
            "--rate must be in 1..=500 Hz (the loop runs 1 ms frames), got {}",
            o.rate_hz
        ));
    }
    Ok(Command::Run(o))
}

// ------------------------------------------------------------- message content

/// SplitMix64: deterministic sizes and content from the seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A key unique to (seed, kind, bot, n).
fn key(seed: u64, kind: u8, bot: u32, n: u32) -> u64 {
    let mut r = SplitMix(seed);
    r.0 ^= r.next() ^ u64::from(kind);
    r.0 ^= r.next() ^ u64::from(bot);
    r.0 ^= r.next() ^ u64::from(n);
    r.next()
}

/// Appends pseudo-random bytes from `k` until `out` is `len` long.
fn fill(out: &mut Vec<u8>, k: u64, len: usize) {
    let mut r = SplitMix(k);
    while out.len() < len {
        let word = r.next().to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word[..take]);
    }
}

/// Reliable event `seq` of `bot`: 20..=400 bytes (70%) or 1000..=2000 bytes (30%; those
/// over 1171 bytes are two KCP fragments).
fn event_message(seed: u64, bot: u32, seq: u32, out: &mut Vec<u8>) {
    let k = key(seed, b'E', bot, seq);
    let len = if k % 100 < 30 {
        1000 + (k >> 8) % 1001
    } else {
        20 + (k >> 8) % 381
    } as usize;
    out.clear();
    out.push(b'E');
    out.extend_from_slice(&bot.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    fill(out, k, len);
}

/// Unreliable position of `bot` at its tick `tick`: 40..=100 bytes.
fn position_message(seed: u64, bot: u32, tick: u32, out: &mut Vec<u8>) {
    let k = key(seed, b'P', bot, tick);
    let len = 40 + (k >> 8) as usize % 61;
    out.clear();
    out.push(b'P');
    out.extend_from_slice(&bot.to_le_bytes());
    out.extend_from_slice(&tick.to_le_bytes());
    fill(out, k, len);
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

// -------------------------------------------------------------------------- bots

/// Everything a bot tracks besides its client (split so events borrowing the client can
/// update it).
#[derive(Debug)]
struct BotState {
    index: u32,
    connected_at: Option<Duration>,
    /// The connection ended (Disconnected event seen).
    closed: bool,
    /// We asked for the disconnect.
    leaving: bool,
    close_reason: Option<DisconnectReason>,
    failure: Option<String>,
    next_act: Instant,
    tick: u32,
    rel_sent: u32,
    rel_bytes: u64,
    rel_echoed: u32,
    unrel_sent: u64,
    unrel_echoed: u64,
    unrel_corrupt: u64,
    /// Send times of the reliable messages not echoed yet, oldest first.
    in_flight: VecDeque<Instant>,
    /// Round-trip times of the reliable echoes, in ms.
    echo_ms: Vec<u32>,
}

struct Bot {
    client: Client,
    st: BotState,
}

/// Run-wide constants the bots need.
struct Plan {
    seed: u64,
    start: Instant,
    period: Duration,
    bots: usize,
}

impl Plan {
    /// The bot's first action time at or after `now`, on its staggered phase.
    fn first_act(&self, index: u32, now: Instant) -> Instant {
        let phase = self.period.mul_f64(f64::from(index) / self.bots as f64);
        let mut t = self.start + phase;
        if t < now {
            let behind = (now - t).as_nanos() / self.period.as_nanos();
            t += self.period * (behind as u32 + 1);
        }
        t
    }
}

impl BotState {
    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    fn on_event(&mut self, ev: Event<'_>, plan: &Plan, now: Instant, scratch: &mut Vec<u8>) {
        match ev {
            Event::Connected { .. } => {
                self.connected_at = Some(now - plan.start);
                self.next_act = plan.first_act(self.index, now);
            }
            Event::Data { channel, data, .. } => match channel {
                Channel::Reliable => self.check_reliable(data, plan.seed, now, scratch),
                Channel::Unreliable => self.check_unreliable(data, plan.seed, scratch),
            },
            Event::Error { code, message, .. } => {
                if !self.leaving {
                    self.fail(format!("error {code}: {message}"));
                }
            }
            Event::Disconnected { reason, .. } => {
                self.closed = true;
                self.close_reason = Some(reason);
                if !self.leaving {
                    self.fail(format!("disconnected unexpectedly ({reason:?})"));
                }
            }
            other => self.fail(format!("unexpected event {other:?}")),
        }
    }

    fn check_reliable(&mut self, data: &[u8], seed: u64, now: Instant, scratch: &mut Vec<u8>) {
        let expected = self.rel_echoed;
        if data.len() < EVENT_HEADER || data[0] != b'E' {
            self.fail(format!(
                "reliable echo #{expected} is malformed ({} bytes)",
                data.len()
            ));
            return;
        }
        let (bot, seq) = (read_u32(data, 1), read_u32(data, 5));
        if bot != self.index {
            self.fail(format!("reliable echo #{expected} belongs to bot {bot}"));
            return;
        }
        if seq != expected {
            let what = if seq < expected {
                "duplicated or replayed"
            } else {
                "out of order, or earlier ones missing"
            };
            self.fail(format!(
                "reliable echo {what}: got seq {seq}, expected {expected}"
            ));
            return;
        }
        event_message(seed, bot, seq, scratch);
        if data != &scratch[..] {
            let at = data
                .iter()
                .zip(scratch.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(data.len().min(scratch.len()));
            self.fail(format!(
                "reliable echo seq {seq} differs: {} bytes received, {} sent, first difference at byte {at}",
                data.len(),
                scratch.len()
            ));
            return;
        }
        self.rel_echoed += 1;
        if let Some(sent) = self.in_flight.pop_front() {
            let ms = now.saturating_duration_since(sent).as_millis();
            self.echo_ms.push(u32::try_from(ms).unwrap_or(u32::MAX));
        }
    }

    fn check_unreliable(&mut self, data: &[u8], seed: u64, scratch: &mut Vec<u8>) {
        let ok = data.len() >= POSITION_HEADER && data[0] == b'P' && {
            let (bot, tick) = (read_u32(data, 1), read_u32(data, 5));
            position_message(seed, bot, tick, scratch);
            bot == self.index && tick < self.tick && data == &scratch[..]
        };
        if ok {
            self.unrel_echoed += 1;
        } else {
            self.unrel_corrupt += 1;
            self.fail(format!(
                "unreliable echo corrupted or foreign ({} bytes)",
                data.len()
            ));
        }
    }
}

// ------------------------------------------------------------------- statistics

/// Counters kept by the server's event handler.
#[derive(Debug, Default, Clone, Copy)]
struct ServerCounters {
    connected: u64,
    /// Connections that were secure sessions (`Server::is_secure`) when they connected.
    secure_connected: u64,
    disconnected: u64,
    rel_received: u64,
    rel_bytes: u64,
    unrel_received: u64,
    send_errors: u64,
    errors: u64,
}

/// Cumulative values sampled once per second; rows show differences.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    at: Duration,
    rel: u64,
    unrel: u64,
    bytes_in: u64,
    bytes_out: u64,
    rexmit: u64,
    unrel_sent: u64,
}

/// Seconds with up to two decimals and no trailing zeros ("8", "3.75").
fn secs(d: Duration) -> String {
    format!("{}", (d.as_secs_f64() * 100.0).round() / 100.0)
}

/// Nearest-rank percentile of a sorted slice.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn fmt_opt(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// FEC summed over both ends: datagrams rebuilt from parity, parity datagrams sent and
/// their bytes.
fn fec_totals(server: &Server, bots: &[Bot]) -> (u64, u64, u64) {
    server
        .connections()
        .filter_map(|id| server.connection_stats(id))
        .chain(bots.iter().map(|b| b.client.connection_stats()))
        .fold((0, 0, 0), |(r, n, b), s| {
            (
                r + s.fec_recovered,
                n + s.fec_parity_sent,
                b + s.fec_parity_bytes,
            )
        })
}

/// The FEC shapes (data, parity) the bots encode with now, most common first, as
/// "16+4 ×80, 8+2 ×20" (`ConnectionStats::fec_shape`).
fn fec_shapes(bots: &[Bot]) -> String {
    let mut counts: Vec<((u8, u8), usize)> = Vec::new();
    for shape in bots
        .iter()
        .filter_map(|b| b.client.connection_stats().fec_shape)
    {
        match counts.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, n)) => *n += 1,
            None => counts.push((shape, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let parts: Vec<String> = counts
        .iter()
        .map(|((k, m), n)| format!("{k}+{m} ×{n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Retransmissions summed over both ends (server connections and bots).
fn retransmits(server: &Server, bots: &[Bot]) -> u64 {
    let server_side: u64 = server
        .connections()
        .filter_map(|id| server.connection_stats(id))
        .map(|s| s.retransmits + s.fast_retransmits)
        .sum();
    let bot_side: u64 = bots
        .iter()
        .map(|b| {
            let s = b.client.connection_stats();
            s.retransmits + s.fast_retransmits
        })
        .sum();
    server_side + bot_side
}

fn header() -> String {
    format!(
        "{:>5} {:>5} {:>6} {:>7} {:>8} {:>8} {:>5} {:>5} {:>6} {:>8} {:>6} {:>5} {:>6} {:>5} {:>5}  {}",
        "t",
        "conn",
        "rel/s",
        "unrel/s",
        "inKB/s",
        "outKB/s",
        "rtt50",
        "rtt99",
        "krtt50",
        "rexmit/s",
        "dloss%",
        "loss%",
        "pendKB",
        "busy%",
        "maxms",
        "note"
    )
}

/// Quality over both ends: KCP RTT p50 over bots, the pooled datagram loss estimate
/// (percent) and the pending reliable bytes.
fn quality(server: &Server, bots: &[Bot]) -> (Option<u32>, Option<f64>, usize) {
    let server_side = server
        .connections()
        .filter_map(|id| server.connection_quality(id));
    let bot_side: Vec<_> = bots
        .iter()
        .filter(|b| b.client.is_connected())
        .map(|b| b.client.connection_quality())
        .collect();
    let mut krtt: Vec<u32> = bot_side.iter().map(|q| q.kcp_rtt_ms).collect();
    krtt.sort_unstable();
    let (mut lost, mut sent, mut pending) = (0.0, 0u64, 0usize);
    for q in server_side.chain(bot_side.iter().copied()) {
        let l = q.loss_estimate();
        lost += l.value as f64 * l.samples as f64;
        sent += l.samples as u64;
        pending += q.pending_reliable_bytes;
    }
    let loss = (sent > 0).then(|| 100.0 * lost / sent as f64);
    (percentile(&krtt, 0.50), loss, pending)
}

// ------------------------------------------------------------------------- main

/// The server's part of a frame: take every datagram, echo every message on its channel
/// (replying from inside the callback, no copy), flush.
fn serve(server: &mut Server, srv: &mut ServerCounters) {
    server.tick_incoming_with(|ctx, ev| match ev {
        Event::Data { id, channel, data } => {
            match channel {
                Channel::Reliable => {
                    srv.rel_received += 1;
                    srv.rel_bytes += data.len() as u64;
                }
                Channel::Unreliable => srv.unrel_received += 1,
            }
            if ctx.send(id, data, channel).is_err() {
                srv.send_errors += 1;
            }
        }
        Event::Connected { id, .. } => {
            srv.connected += 1;
            if ctx.is_secure(id) {
                srv.secure_connected += 1;
            }
        }
        Event::Disconnected { .. } => srv.disconnected += 1,
        Event::Error { .. } => srv.errors += 1,
        _ => {}
    });
    server.tick_outgoing();
}

/// Sleeps in the server's poller until the next frame is due; a datagram for the server
/// that arrives earlier is served at once (a lower echo latency than waiting for the frame).
/// Bounded: at most 64 early wake-ups per frame.
fn wait_for_frame(server: &mut Server, srv: &mut ServerCounters, next_frame: Instant) {
    for _ in 0..64 {
        let now = Instant::now();
        if now >= next_frame {
            return;
        }
        if server.wait(next_frame - now).is_err() {
            std::thread::sleep(next_frame.saturating_duration_since(Instant::now()));
            return;
        }
        if Instant::now() < next_frame {
            serve(server, srv);
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let opts = match parse_args() {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => {
            println!("{}", help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\nRun with --help for the options.");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            println!("VERDICT: FAIL — {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the demo; `Ok(true)` on PASS.
fn run(o: &Options) -> Result<bool, String> {
    let loss = o.loss_pct / 100.0;
    let latency = Duration::from_millis(o.latency_ms);
    let jitter = Duration::from_millis(o.jitter_ms);
    let duration = Duration::from_secs_f64(o.duration_s);
    let drain = Duration::from_secs_f64((o.duration_s / 4.0).clamp(1.0, 2.0));
    let send_phase = duration - drain;
    let period = Duration::from_secs_f64(1.0 / f64::from(o.rate_hz));

    // --secure: the key the token issuer (a matchmaker) shares with the server.
    let secure_key = o.secure.then(PrivateKey::generate);
    let fec = o.fec;
    let server_config = Config {
        fec,
        // The bound address (127.0.0.1:port) is added to the public addresses by `bind`.
        security: secure_key
            .clone()
            .map(|key| SecureConfig::required(SECURE_PROTOCOL_ID, key, Vec::new())),
        ..Config::default()
    };
    let mut server = Server::bind("127.0.0.1:0", server_config)
        .map_err(|e| format!("cannot bind the server: {e}"))?;
    let server_addr = server
        .local_addr()
        .map_err(|e| format!("server address: {e}"))?;
    let port = server_addr.port();
    let bot_config = Config {
        recv_buffer_size: BOT_SOCKET_BUFFER,
        send_buffer_size: BOT_SOCKET_BUFFER,
        fec,
        ..Config::default()
    };
    let conditions = Conditions::default()
        .with_loss(loss)
        .with_latency(latency)
        .with_jitter(jitter);

    if !o.quiet {
        println!(
            "kcpnet demo: server 127.0.0.1:{port}, {} bots at {} Hz for {} s ({} s sending + {} s drain)",
            o.bots,
            o.rate_hz,
            secs(duration),
            secs(send_phase),
            secs(drain)
        );
        println!(
            "link: loss {}%, latency {} ms, jitter 0..={} ms on each one-way path (bot sockets); seed {}",
            o.loss_pct, o.latency_ms, o.jitter_ms, o.seed
        );
        match o.fec {
            Fec::Off => {}
            Fec::Fixed { data, parity } => println!(
                "fec: both ways, {parity} parity datagram(s) per group of up to {data} (closed at the end of each tick)"
            ),
            _ => println!(
                "fec: both ways, adaptive: parity per group from the measured loss (closed at the end of each tick)"
            ),
        }
        if o.secure {
            println!(
                "secure: server in SecurityMode::Required, {} connect tokens issued (one per bot), \
                 every datagram sealed (AES-256-GCM, +{SEAL_OVERHEAD} bytes)",
                o.bots
            );
        }
    }

    let start = Instant::now();
    let plan = Plan {
        seed: o.seed,
        start,
        period,
        bots: o.bots,
    };
    let mut bots = Vec::with_capacity(o.bots);
    for i in 0..o.bots {
        let client = match &secure_key {
            // The matchmaker's part: a token for bot i, valid at this server.
            Some(key) => ConnectToken::generate(
                key,
                &TokenParams {
                    protocol_id: SECURE_PROTOCOL_ID,
                    client_id: i as u64,
                    server_addresses: vec![server_addr],
                    user_data: format!("bot {i}").into_bytes(),
                    created_unix_secs: unix_now(),
                    valid_secs: 60,
                },
            )
            .map_err(|e| format!("cannot issue bot {i}'s token: {e}"))
            .and_then(|token| {
                Client::connect_with_token(&token, bot_config.clone())
                    .map_err(|e| format!("cannot create bot {i}'s socket: {e}"))
            }),
            None => Client::connect(("127.0.0.1", port), bot_config.clone())
                .map_err(|e| format!("cannot create bot {i}'s socket: {e}")),
        };
        let mut client = client?;
        client
            .set_conditions(Direction::Both, conditions.clone())
            .map_err(|e| format!("cannot set link conditions: {e}"))?;
        if let Some(conditioner) = client.conditioner() {
            conditioner.reseed(key(o.seed, b'L', i as u32, 0));
        }
        bots.push(Bot {
            client,
            st: BotState {
                index: i as u32,
                connected_at: None,
                closed: false,
                leaving: false,
                close_reason: None,
                failure: None,
                next_act: start,
                tick: 0,
                rel_sent: 0,
                rel_bytes: 0,
                rel_echoed: 0,
                unrel_sent: 0,
                unrel_echoed: 0,
                unrel_corrupt: 0,
                in_flight: VecDeque::new(),
                echo_ms: Vec::new(),
            },
        });
    }

    let mut srv = ServerCounters::default();
    let mut scratch = Vec::with_capacity(4096);
    let mut msg = Vec::with_capacity(4096);
    let mut prev = Sample::default();
    let mut rows = 0usize;
    let mut report_rows: Vec<report::Row> = Vec::new();
    let mut next_report = start + Duration::from_secs(1);
    let mut next_frame = start;
    // Loop health, per report window and overall.
    let (mut win_busy, mut win_max, mut win_late) = (Duration::ZERO, Duration::ZERO, 0u64);
    let (mut all_busy, mut all_max, mut all_late) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut frames = 0u64;
    let mut send_errors = 0u64;
    let mut connect_checked = false;
    let end = start + duration;

    // ------------------------------------------------------------ the game loop
    loop {
        let frame_start = Instant::now();
        let elapsed = frame_start - start;
        let sending = elapsed < send_phase;

        serve(&mut server, &mut srv);

        for bot in bots.iter_mut() {
            bot.client.tick_incoming();
            while let Some(ev) = bot.client.poll_event() {
                bot.st.on_event(ev, &plan, frame_start, &mut scratch);
            }
            let st = &mut bot.st;
            if sending && bot.client.is_connected() && frame_start >= st.next_act {
                position_message(o.seed, st.index, st.tick, &mut msg);
                match bot.client.send(&msg, Channel::Unreliable) {
                    Ok(()) => st.unrel_sent += 1,
                    Err(e) => {
                        send_errors += 1;
                        st.fail(format!("unreliable send failed: {e}"));
                    }
                }
                if (st.tick + st.index) % EVENT_EVERY == 0 {
                    event_message(o.seed, st.index, st.rel_sent, &mut msg);
                    match bot.client.send(&msg, Channel::Reliable) {
                        Ok(()) => {
                            st.rel_sent += 1;
                            st.in_flight.push_back(frame_start);
                            st.rel_bytes += msg.len() as u64;
                        }
                        Err(e) => {
                            send_errors += 1;
                            st.fail(format!("reliable send failed: {e}"));
                        }
                    }
                }
                st.tick += 1;
                st.next_act += period;
                if frame_start > st.next_act {
                    // More than a whole period behind: skip ticks rather than burst.
                    let behind =
                        ((frame_start - st.next_act).as_nanos() / period.as_nanos()) as u32 + 1;
                    st.next_act += period * behind;
                    win_late += u64::from(behind);
                }
            }
            bot.client.tick_outgoing();
        }

        if !connect_checked && elapsed >= CONNECT_DEADLINE {
            connect_checked = true;
            for b in bots.iter_mut().filter(|b| b.st.connected_at.is_none()) {
                let (c, e) = (b.client.connection_stats(), b.client.stats());
                let detail = if e.datagrams_received > 0 && c.in_flight == 0 && c.send_queue == 0 {
                    // Its Hello was acknowledged, so it sends nothing more while the
                    // server's Hello reply is missing.
                    ", handshake stalled: its Hello was acknowledged but the server's Hello never came"
                } else {
                    ""
                };
                b.st.fail(format!(
                    "did not connect within {} s (sent {} datagrams, received {}{detail})",
                    secs(CONNECT_DEADLINE),
                    e.datagrams_sent,
                    e.datagrams_received
                ));
            }
        }

        let now = Instant::now();
        let work = now - frame_start;
        win_busy += work;
        win_max = win_max.max(work);
        frames += 1;
        let complete = bots
            .iter()
            .all(|b| b.st.failure.is_some() || b.st.rel_echoed == b.st.rel_sent);
        // Judge once the duration is over, every reliable echo is back and every bot
        // connected or missed its deadline; or at the end of the grace period.
        let settled = connect_checked || bots.iter().all(|b| b.st.connected_at.is_some());
        let done = now >= end && ((complete && settled) || now >= end + GRACE);

        if now >= next_report || done {
            let s = Sample {
                at: now - start,
                rel: srv.rel_received,
                unrel: srv.unrel_received,
                bytes_in: server.stats().bytes_received,
                bytes_out: server.stats().bytes_sent,
                rexmit: retransmits(&server, &bots),
                unrel_sent: bots.iter().map(|b| b.st.unrel_sent).sum(),
            };
            let dt = (s.at - prev.at).as_secs_f64().max(1e-3);
            let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            if !o.quiet || o.report.is_some() {
                let mut rtts: Vec<u32> = bots.iter().filter_map(|b| b.client.rtt()).collect();
                rtts.sort_unstable();
                let sent = s.unrel_sent - prev.unrel_sent;
                // Only for windows inside the sending phase that follow one where bots
                // already sent: at the edges, messages in flight distort the ratio.
                let loss_pct = (sent >= 50
                    && prev.unrel_sent > 0
                    && s.at <= send_phase + FRAME * 50)
                    .then(|| {
                        let got = s.unrel.saturating_sub(prev.unrel) as f64;
                        (100.0 * (1.0 - got / sent as f64)).max(0.0)
                    });
                let loss_s = loss_pct.map_or_else(|| "-".to_string(), |l| format!("{l:.1}"));
                // The phase of the middle of the window the row covers.
                let mid = (prev.at + s.at) / 2;
                let mut note = String::new();
                if mid >= duration {
                    let missing: u64 = bots
                        .iter()
                        .filter(|b| b.st.failure.is_none())
                        .map(|b| u64::from(b.st.rel_sent - b.st.rel_echoed))
                        .sum();
                    let _ = write!(note, "grace: {missing} echoes missing");
                } else if mid >= send_phase {
                    note.push_str("drain");
                }
                if win_late > 0 {
                    let _ = write!(
                        note,
                        "{}late {win_late}",
                        if note.is_empty() { "" } else { " " }
                    );
                }
                let (krtt, dloss, pending) = quality(&server, &bots);
                if o.report.is_some() {
                    let ms = |v: Option<u32>| v.map(f64::from);
                    report_rows.push(report::Row {
                        t: s.at.as_secs_f64(),
                        connections: server.connection_count(),
                        rtt_p50: ms(percentile(&rtts, 0.50)),
                        rtt_p99: ms(percentile(&rtts, 0.99)),
                        kcp_rtt_p50: ms(krtt),
                        datagram_loss_pct: dloss,
                        unreliable_loss_pct: loss_pct,
                        in_kbps: per_s(s.bytes_in, prev.bytes_in) / 1000.0,
                        out_kbps: per_s(s.bytes_out, prev.bytes_out) / 1000.0,
                        reliable_per_sec: per_s(s.rel, prev.rel),
                        unreliable_per_sec: per_s(s.unrel, prev.unrel),
                    });
                }
                if !o.quiet && rows.is_multiple_of(HEADER_EVERY) {
                    println!("{}", header());
                }
                rows += 1;
                let row = format!(
                    "{:>5.1} {:>5} {:>6.0} {:>7.0} {:>8.1} {:>8.1} {:>5} {:>5} {:>6} {:>8.0} {:>6} {:>5} {:>6.1} {:>5.0} {:>5.1}  {}",
                    s.at.as_secs_f64(),
                    server.connection_count(),
                    per_s(s.rel, prev.rel),
                    per_s(s.unrel, prev.unrel),
                    per_s(s.bytes_in, prev.bytes_in) / 1000.0,
                    per_s(s.bytes_out, prev.bytes_out) / 1000.0,
                    fmt_opt(percentile(&rtts, 0.50)),
                    fmt_opt(percentile(&rtts, 0.99)),
                    fmt_opt(krtt),
                    per_s(s.rexmit, prev.rexmit),
                    dloss.map_or_else(|| "-".to_string(), |l| format!("{l:.1}")),
                    loss_s,
                    pending as f64 / 1000.0,
                    100.0 * win_busy.as_secs_f64() / dt,
                    win_max.as_secs_f64() * 1000.0,
                    note
                );
                if !o.quiet {
                    println!("{}", row.trim_end());
                }
            }
            prev = s;
            all_busy += win_busy;
            all_max = all_max.max(win_max);
            all_late += win_late;
            (win_busy, win_max, win_late) = (Duration::ZERO, Duration::ZERO, 0);
            while next_report <= now {
                next_report += Duration::from_secs(1);
            }
        }
        if done {
            break;
        }

        next_frame += FRAME;
        let now = Instant::now();
        if next_frame > now {
            wait_for_frame(&mut server, &mut srv, next_frame);
        } else if now - next_frame > 10 * FRAME {
            next_frame = now; // fell behind: do not try to catch up with a burst
        }
    }
    let run_time = start.elapsed();
    let grace_used = (start + run_time).saturating_duration_since(end);

    // --------------------------------------------- snapshot before shutting down
    let rexmit_total = retransmits(&server, &bots);
    let fec_total = fec_totals(&server, &bots);
    let shapes = fec_shapes(&bots);
    let mut rtts: Vec<u32> = bots.iter().filter_map(|b| b.client.rtt()).collect();
    rtts.sort_unstable();
    let mut srtts: Vec<u32> = bots
        .iter()
        .filter(|b| b.client.is_connected())
        .map(|b| b.client.connection_stats().srtt_ms)
        .collect();
    srtts.sort_unstable();
    let srv_before_shutdown = srv;
    let server_stats = server.stats();
    for b in bots.iter_mut() {
        if b.st.failure.is_none() && b.st.rel_echoed != b.st.rel_sent {
            let missing = b.st.rel_sent - b.st.rel_echoed;
            b.st.fail(format!(
                "{missing} of {} reliable echoes never arrived",
                b.st.rel_sent
            ));
        }
    }

    // ------------------------------------------------------ graceful shutdown
    for b in bots.iter_mut() {
        b.st.leaving = true;
        if !b.st.closed {
            b.client.disconnect_graceful();
        }
    }
    let shutdown_start = Instant::now();
    let linger = Duration::from_millis(u64::from(bot_config.linger_timeout_ms));
    let shutdown_deadline = shutdown_start + linger + Duration::from_secs(2);
    let server_connections = server.connection_count();
    // Once the bots are closed, their last datagrams (Disconnect) may still wait in
    // their conditioners or be in flight: give them this long to reach the server.
    let settle = (latency + jitter) * 2 + Duration::from_millis(500);
    let mut bots_done_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        server.tick_incoming_with(|_, ev| match ev {
            Event::Disconnected { .. } => srv.disconnected += 1,
            Event::Connected { .. } => srv.connected += 1,
            _ => {}
        });
        server.tick_outgoing();
        for bot in bots.iter_mut() {
            bot.client.tick_incoming();
            while let Some(ev) = bot.client.poll_event() {
                bot.st.on_event(ev, &plan, now, &mut scratch);
            }
            bot.client.tick_outgoing();
        }
        if bots_done_at.is_none() && bots.iter().all(|b| b.st.closed) {
            bots_done_at = Some(now);
        }
        if let Some(t) = bots_done_at {
            if server.connection_count() == 0 || now >= t + settle {
                break;
            }
        }
        if now >= shutdown_deadline {
            break;
        }
        std::thread::sleep(FRAME);
    }
    let server_saw_disconnects = srv.disconnected - srv_before_shutdown.disconnected;
    let server_left = server.connection_count();
    let shutdown_time = shutdown_start.elapsed();
    server.shutdown();
    while server.poll_event().is_some() {}

    // ---------------------------------------------------------------- summary
    let n = bots.len();
    let connected = bots.iter().filter(|b| b.st.connected_at.is_some()).count();
    let slowest_connect = bots.iter().filter_map(|b| b.st.connected_at).max();
    let rel_sent: u64 = bots.iter().map(|b| u64::from(b.st.rel_sent)).sum();
    let rel_bytes: u64 = bots.iter().map(|b| b.st.rel_bytes).sum();
    let rel_echoed: u64 = bots.iter().map(|b| u64::from(b.st.rel_echoed)).sum();
    let unrel_sent: u64 = bots.iter().map(|b| b.st.unrel_sent).sum();
    let unrel_echoed: u64 = bots.iter().map(|b| b.st.unrel_echoed).sum();
    let unrel_corrupt: u64 = bots.iter().map(|b| b.st.unrel_corrupt).sum();
    let failed: Vec<&BotState> = bots
        .iter()
        .map(|b| &b.st)
        .filter(|s| s.failure.is_some())
        .collect();
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    // Loss in percent as text, "-" when nothing was sent.
    let loss_of = |got: u64, sent: u64| {
        if sent == 0 {
            "-".to_string()
        } else {
            format!("{:.2}%", 100.0 - pct(got, sent))
        }
    };
    let one_way_loss = loss_of(srv_before_shutdown.unrel_received, unrel_sent);
    let echo_loss = loss_of(unrel_echoed, srv_before_shutdown.unrel_received);
    let round_trip_loss = loss_of(unrel_echoed, unrel_sent);
    let expected_rt = 100.0 * (1.0 - (1.0 - loss) * (1.0 - loss));

    let grace_note = if grace_used > Duration::from_millis(50) {
        format!(" + {} s grace", secs(grace_used))
    } else {
        String::new()
    };
    let mut echo_ms: Vec<u32> = bots
        .iter()
        .flat_map(|b| b.st.echo_ms.iter().copied())
        .collect();
    echo_ms.sort_unstable();
    let graceful = bots
        .iter()
        .filter(|b| b.st.close_reason == Some(DisconnectReason::Local))
        .count();
    let send_s = send_phase.as_secs_f64();
    let (lat2, jit) = (2 * o.latency_ms, o.jitter_ms);

    // The summary is printed and kept for the report.
    let mut summary = String::new();
    macro_rules! say {
        () => {{
            println!();
            summary.push('\n');
        }};
        ($($arg:tt)*) => {{
            let line = format!($($arg)*);
            println!("{line}");
            summary.push_str(&line);
            summary.push('\n');
        }};
    }
    say!();
    say!("=== summary ===");
    say!(
        "run         {n} bots at {} Hz for {} s ({} s sending + {} s drain{grace_note})",
        o.rate_hz,
        secs(duration),
        secs(send_phase),
        secs(drain),
    );
    say!(
        "link        each one-way path: loss {}%, latency {} ms, jitter 0..={} ms; seed {}",
        o.loss_pct,
        o.latency_ms,
        o.jitter_ms,
        o.seed
    );
    match slowest_connect {
        Some(d) => say!(
            "connect     {connected}/{n} bots connected, the slowest after {} ms",
            d.as_millis()
        ),
        None => say!("connect     no bot connected"),
    }
    say!(
        "reliable    sent {rel_sent} msgs ({:.2} MB, {:.0}/s), server received {} ({:.2} MB)",
        rel_bytes as f64 / 1e6,
        rel_sent as f64 / send_s,
        srv_before_shutdown.rel_received,
        srv_before_shutdown.rel_bytes as f64 / 1e6,
    );
    say!(
        "            echoed back complete, in order, byte-identical: {rel_echoed}/{rel_sent} ({:.2}%)",
        pct(rel_echoed, rel_sent)
    );
    say!(
        "            echo round trip p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        fmt_opt(percentile(&echo_ms, 0.5)),
        fmt_opt(percentile(&echo_ms, 0.99)),
        fmt_opt(percentile(&echo_ms, 0.999)),
        fmt_opt(echo_ms.last().copied()),
    );
    say!(
        "unreliable  sent {unrel_sent} ({:.0}/s), server received {}: one-way loss {one_way_loss}",
        unrel_sent as f64 / send_s,
        srv_before_shutdown.unrel_received,
    );
    say!(
        "            echoes received {unrel_echoed}: return loss {echo_loss}, round trip {round_trip_loss}"
    );
    say!(
        "            configured {}% per path = {expected_rt:.2}% round trip; corrupted echoes {unrel_corrupt}",
        o.loss_pct
    );
    say!(
        "server      in {:.2} MB ({} datagrams), out {:.2} MB ({} datagrams)",
        server_stats.bytes_received as f64 / 1e6,
        server_stats.datagrams_received,
        server_stats.bytes_sent as f64 / 1e6,
        server_stats.datagrams_sent,
    );
    say!(
        "            KCP retransmissions {rexmit_total} (both ends); echo send errors {}; error events {}",
        srv.send_errors, srv.errors
    );
    if o.fec != Fec::Off {
        let (recovered, parity, parity_bytes) = fec_total;
        let total = server_stats.bytes_sent + server_stats.bytes_received;
        say!(
            "fec         {recovered} datagrams rebuilt from parity (both ends), {parity} parity datagrams, {:.2} MB ({:.0}% of the server's traffic)",
            parity_bytes as f64 / 1e6,
            100.0 * parity_bytes as f64 / total.max(1) as f64
        );
        say!("            bots' shapes at the end (data+parity per full group): {shapes}");
    }
    say!(
        "rtt         Ping/Pong p50 {} ms, p99 {} ms, max {} ms; KCP srtt p50 {} ms, p99 {} ms",
        fmt_opt(percentile(&rtts, 0.5)),
        fmt_opt(percentile(&rtts, 0.99)),
        fmt_opt(rtts.last().copied()),
        fmt_opt(percentile(&srtts, 0.5)),
        fmt_opt(percentile(&srtts, 0.99)),
    );
    if jit == 0 {
        say!("            expected {lat2} ms (2 x latency) plus a few ms of 1 ms frame rounding");
    } else {
        say!(
            "            expected {lat2}..{} ms (2 x latency + jitter each way, mean {} ms)",
            lat2 + 2 * jit,
            lat2 + jit
        );
    }
    say!(
        "loop        {frames} frames of {} ms in {:.1} s: busy {:.0}%, worst frame {:.1} ms, {all_late} bot ticks skipped",
        FRAME.as_millis(),
        run_time.as_secs_f64(),
        100.0 * all_busy.as_secs_f64() / run_time.as_secs_f64(),
        all_max.as_secs_f64() * 1000.0
    );
    if o.secure {
        let s = &server_stats;
        say!(
            "secure      {}/{} server connections were secure sessions (SecurityMode::Required, +{SEAL_OVERHEAD} bytes a datagram)",
            srv_before_shutdown.secure_connected,
            srv_before_shutdown.connected
        );
        say!(
            "            tokens refused: invalid {}, expired {}, wrong server {}, in use {}; kcp2k Hellos refused {}",
            s.tokens_invalid,
            s.tokens_expired,
            s.tokens_wrong_server,
            s.tokens_in_use,
            s.refused_unauthenticated
        );
        say!(
            "            sealed datagrams forged {}, replayed {}; unsealed dropped {}; migrations {}",
            s.sealed_forged,
            s.sealed_replayed,
            s.unsealed_dropped,
            s.migrations
        );
    }
    say!(
        "shutdown    {graceful}/{n} bots disconnected gracefully in {} ms",
        shutdown_time.as_millis(),
    );
    say!(
        "            server: {server_connections} connections before, {server_saw_disconnects} Disconnected events, {server_left} left for shutdown()"
    );
    if failed.is_empty() {
        say!("failed      none");
    } else {
        say!("failed      {} bot(s):", failed.len());
        for s in failed.iter().take(10) {
            say!(
                "            bot {:>4}: {}",
                s.index,
                s.failure.as_deref().unwrap_or("")
            );
        }
        if failed.len() > 10 {
            say!("            ... and {} more", failed.len() - 10);
        }
    }

    let mut reasons = Vec::new();
    if !failed.is_empty() {
        let first = failed[0];
        reasons.push(format!(
            "{} of {n} bots failed (bot {}: {})",
            failed.len(),
            first.index,
            first.failure.as_deref().unwrap_or("")
        ));
    }
    if srv_before_shutdown.send_errors > 0 {
        reasons.push(format!(
            "the server failed to echo {} messages",
            srv_before_shutdown.send_errors
        ));
    }
    if send_errors > 0 && failed.is_empty() {
        reasons.push(format!("{send_errors} bot sends failed"));
    }
    if rel_sent == 0 {
        reasons.push("no reliable message was sent".into());
    }
    if o.secure {
        let plain = srv_before_shutdown.connected - srv_before_shutdown.secure_connected;
        if plain > 0 {
            reasons.push(format!(
                "{plain} server connections were not secure sessions"
            ));
        }
        if server_stats.sealed_forged > 0 {
            reasons.push(format!(
                "{} sealed datagrams failed to open on a link that does not alter bytes",
                server_stats.sealed_forged
            ));
        }
    }
    let pass = reasons.is_empty();
    let verdict = if pass {
        "VERDICT: PASS — every reliable message delivered in order".to_string()
    } else {
        format!("VERDICT: FAIL — {}", reasons.join("; "))
    };
    if let Some(path) = &o.report {
        summary.push_str(&verdict);
        let report = report::Report {
            title: format!(
                "{n} bots at {} Hz for {} s; each one-way path: loss {}%, latency {} ms, jitter 0..={} ms; seed {}{}",
                o.rate_hz,
                secs(duration),
                o.loss_pct,
                o.latency_ms,
                o.jitter_ms,
                o.seed,
                if o.secure { "; secure sessions" } else { "" }
            ),
            rows: report_rows,
            summary,
            pass,
        };
        std::fs::write(path, report::render(&report))
            .map_err(|e| format!("cannot write the report {}: {e}", path.display()))?;
        println!("report      written to {}", path.display());
    }
    println!("{verdict}");
    Ok(pass)
}
