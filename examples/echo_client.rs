//! A kcp2k-compatible echo client that checks every echo: a conformance and soak test
//! against any kcp2k echo server (such as the `echo_server` example).
//!
//! ```text
//! cargo run --release --example echo_client -- --host HOST --port PORT [--count N]
//!     [--seed S] [--timeout-secs S] [--kick]
//!     [--mtu N] [--window SND RCV] [--interval MS] [--timeout MS] [--nodelay 0|1|2]
//! ```
//!
//! Once connected it sends reliable messages of 1, 100, 1200, 5000 bytes and the largest
//! reliable size (`Config::reliable_max_message_size`, 148 716 bytes by default), unreliable
//! messages of 1, 100 bytes and the largest unreliable size (1194 by default), then `N`
//! (default 1000) reliable messages of random sizes in 1..=8000 drawn from a generator
//! seeded by `--seed`. Every message starts with its sequence number (u64 little-endian;
//! messages shorter than 8 bytes carry its low bytes) followed by content derived from the
//! sequence number. At most 64 reliable messages are in flight; more are sent as echoes
//! come back, so the default (kcp2k) windows are enough.
//!
//! Every echo is checked: byte-identical content, the right channel, reliable echoes in
//! send order. Lost unreliable messages are counted but are not failures. Then the client
//! disconnects gracefully (waiting at most 5 s for `Disconnected`) or, with `--kick`, sends
//! the reliable message `KICK` and expects the server to disconnect it: reason `Remote` from
//! a kcp2k server, `App { code, message }` from a kcpnet one (the close reason is printed).
//! A summary follows (messages and bytes per channel, elapsed time, RTT, retransmissions,
//! the connection quality).
//!
//! Exit code 0: every reliable echo came back right. 1: connection failure, timeout
//! (`--timeout-secs`, default 30, for the whole run), a mismatch or an unexpected
//! disconnect, with a message on stderr. 2: invalid command line or configuration.

mod common;

use std::collections::VecDeque;
use std::process::exit;
use std::time::{Duration, Instant};

use kcpnet::{Channel, Client, Config, ConnectionStats, DisconnectReason, Event};

const PROG: &str = "echo_client";

const USAGE: &str = "\
echo_client: sends messages to a kcp2k echo server and checks every echo (kcpnet example)

Usage: echo_client --host HOST --port PORT [--count N] [--seed S] [--timeout-secs S]
                   [--kick] [config flags]

  --host HOST          server name or address (IPv4 or IPv6) [default: 127.0.0.1]
  --port PORT          server UDP port (required)
  --count N            random-size reliable messages after the fixed ones [default: 1000]
  --seed S             seed of the message size generator [default: 1]
  --timeout-secs S     fail if the run (connect + echoes) takes longer [default: 30]
  --kick               at the end send the reliable message KICK and expect the server to
                       disconnect us (reason Remote from kcp2k, App with a code and a
                       message from kcpnet) instead of disconnecting ourselves

Exit code 0 if every reliable echo came back byte-identical and in order, 1 on a
connection failure, timeout, mismatch or unexpected disconnect.";

/// Most reliable messages sent and not yet echoed.
const MAX_IN_FLIGHT: usize = 64;
/// Random message sizes are drawn from 1..=MAX_RANDOM_SIZE.
const MAX_RANDOM_SIZE: usize = 8000;
/// How long to wait for missing unreliable echoes once all reliable ones are back.
const UNRELIABLE_GRACE: Duration = Duration::from_millis(500);
/// How long to wait for `Disconnected` after a graceful disconnect or a KICK.
const DISCONNECT_CAP: Duration = Duration::from_secs(5);

struct Args {
    host: String,
    port: u16,
    count: u64,
    seed: u64,
    timeout: Duration,
    kick: bool,
    config: Config,
}

fn parse_args() -> Args {
    let mut host = "127.0.0.1".to_string();
    let mut port = None;
    let mut count = 1000;
    let mut seed = 1;
    let mut timeout_secs = 30;
    let mut kick = false;
    let config = common::parse_args(PROG, USAGE, |name, parser| {
        match name {
            "host" => {
                let h: String = common::value(parser, name)?;
                // Accept the bracketed URL form of IPv6 addresses too: [::1].
                host = h.trim_start_matches('[').trim_end_matches(']').to_string();
            }
            "port" => port = Some(common::value::<u16>(parser, name)?),
            "count" => count = common::value(parser, name)?,
            "seed" => seed = common::value(parser, name)?,
            "timeout-secs" => timeout_secs = common::value(parser, name)?,
            "kick" => kick = true,
            _ => return Ok(false),
        }
        Ok(true)
    });
    match port {
        None => common::usage_error(PROG, "--port is required"),
        Some(0) => common::usage_error(PROG, "--port must not be 0"),
        Some(port) => Args {
            host,
            port,
            count,
            seed,
            timeout: Duration::from_secs(timeout_secs),
            kick,
            config,
        },
    }
}

/// SplitMix64: a tiny, good-enough generator for sizes and message content.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The content of message `seq` of `len` bytes: `seq` as u64 LE, then bytes from a
/// generator seeded by `seq` (a prefix of that when `len < 8`).
fn message(seq: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len + 8);
    m.extend_from_slice(&seq.to_le_bytes());
    let mut g = SplitMix64(seq ^ 0xA076_1D64_78BD_642F);
    while m.len() < len {
        m.extend_from_slice(&g.next_u64().to_le_bytes());
    }
    m.truncate(len);
    m
}

fn seq_of(data: &[u8]) -> Option<u64> {
    data.get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

#[derive(Default, Clone, Copy)]
struct Count {
    messages: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, len: usize) {
        self.messages += 1;
        self.bytes += len as u64;
    }
}

/// The message plan and the echo checks.
struct Run {
    next_seq: u64,
    fixed_reliable: VecDeque<usize>,
    fixed_unreliable: Vec<usize>,
    unreliable_sent: bool,
    random_left: u64,
    sizes: SplitMix64,
    random_max: usize,
    /// Reliable messages sent and not echoed yet, in send order.
    in_flight: VecDeque<(u64, Vec<u8>)>,
    /// Unreliable messages sent and not echoed yet.
    unreliable_pending: Vec<(u64, Vec<u8>)>,
    unreliable_echoed: Vec<Vec<u8>>,
    unreliable_duplicates: u64,
    reliable_sent: Count,
    reliable_echoed: Count,
    unreliable_sent_count: Count,
    unreliable_echoed_count: Count,
}

impl Run {
    fn new(args: &Args) -> Run {
        let c = &args.config;
        let rmax = c.reliable_max_message_size();
        let umax = c.unreliable_max_message_size();
        let mut fixed_reliable: Vec<usize> = [1, 100, 1200, 5000, rmax]
            .into_iter()
            .filter(|&s| s >= 1 && s <= rmax)
            .collect();
        fixed_reliable.dedup();
        let mut fixed_unreliable: Vec<usize> = [1, 100, umax]
            .into_iter()
            .filter(|&s| s >= 1 && s <= umax)
            .collect();
        fixed_unreliable.dedup();
        Run {
            next_seq: 0,
            fixed_reliable: fixed_reliable.into(),
            fixed_unreliable,
            unreliable_sent: false,
            random_left: args.count,
            sizes: SplitMix64(args.seed),
            random_max: MAX_RANDOM_SIZE.min(rmax),
            in_flight: VecDeque::new(),
            unreliable_pending: Vec::new(),
            unreliable_echoed: Vec::new(),
            unreliable_duplicates: 0,
            reliable_sent: Count::default(),
            reliable_echoed: Count::default(),
            unreliable_sent_count: Count::default(),
            unreliable_echoed_count: Count::default(),
        }
    }

    fn plan(&self) -> String {
        format!(
            "reliable sizes {:?}, then {} reliable messages of 1..={} random bytes; unreliable sizes {:?}",
            self.fixed_reliable, self.random_left, self.random_max, self.fixed_unreliable
        )
    }

    fn all_sent(&self) -> bool {
        self.fixed_reliable.is_empty() && self.unreliable_sent && self.random_left == 0
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Sends in plan order while fewer than `MAX_IN_FLIGHT` reliable messages are out.
    fn send_more(&mut self, client: &mut Client) -> Result<(), String> {
        loop {
            if !self.fixed_reliable.is_empty() || (self.unreliable_sent && self.random_left > 0) {
                if self.in_flight.len() >= MAX_IN_FLIGHT {
                    return Ok(());
                }
                let len = match self.fixed_reliable.pop_front() {
                    Some(len) => len,
                    None => {
                        self.random_left -= 1;
                        1 + (self.sizes.next_u64() % self.random_max as u64) as usize
                    }
                };
                let seq = self.take_seq();
                let mut m = message(seq, len);
                if m == b"KICK" {
                    m.push(0); // never ask the server to kick us by accident
                }
                client.send(&m, Channel::Reliable).map_err(|e| {
                    format!("sending reliable message {seq} ({len} bytes) failed: {e}")
                })?;
                self.reliable_sent.add(m.len());
                self.in_flight.push_back((seq, m));
            } else if !self.unreliable_sent {
                self.unreliable_sent = true;
                for len in self.fixed_unreliable.clone() {
                    let seq = self.take_seq();
                    let m = message(seq, len);
                    client.send(&m, Channel::Unreliable).map_err(|e| {
                        format!("sending unreliable message {seq} ({len} bytes) failed: {e}")
                    })?;
                    self.unreliable_sent_count.add(len);
                    self.unreliable_pending.push((seq, m));
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Checks one echo.
    fn on_echo(&mut self, channel: Channel, data: &[u8]) -> Result<(), String> {
        match channel {
            Channel::Reliable => {
                let Some((seq, expected)) = self.in_flight.pop_front() else {
                    return Err(format!(
                        "unexpected reliable message of {} bytes{}: every reliable message was \
                         already echoed",
                        data.len(),
                        describe_seq(data)
                    ));
                };
                if data != expected.as_slice() {
                    let why = if let Some((s, _)) = self
                        .unreliable_pending
                        .iter()
                        .find(|(_, m)| m.as_slice() == data)
                    {
                        format!("it is unreliable message {s}, echoed on the reliable channel")
                    } else if let Some((s, _)) =
                        self.in_flight.iter().find(|(_, m)| m.as_slice() == data)
                    {
                        format!("it is reliable message {s}: echoes arrived out of order")
                    } else {
                        mismatch_detail(&expected, data)
                    };
                    return Err(format!(
                        "reliable echo mismatch: expected message {seq} ({} bytes), got {} bytes{}: {why}",
                        expected.len(),
                        data.len(),
                        describe_seq(data)
                    ));
                }
                self.reliable_echoed.add(data.len());
            }
            Channel::Unreliable => {
                if let Some(i) = self
                    .unreliable_pending
                    .iter()
                    .position(|(_, m)| m.as_slice() == data)
                {
                    let (_, m) = self.unreliable_pending.swap_remove(i);
                    self.unreliable_echoed_count.add(m.len());
                    self.unreliable_echoed.push(m);
                } else if self.unreliable_echoed.iter().any(|m| m.as_slice() == data) {
                    // UDP may duplicate datagrams; not an error of the protocol.
                    self.unreliable_duplicates += 1;
                } else if let Some((s, _)) =
                    self.in_flight.iter().find(|(_, m)| m.as_slice() == data)
                {
                    return Err(format!(
                        "reliable message {s} ({} bytes) was echoed on the unreliable channel",
                        data.len()
                    ));
                } else {
                    return Err(format!(
                        "unreliable echo of {} bytes{} matches no unreliable message sent",
                        data.len(),
                        describe_seq(data)
                    ));
                }
            }
        }
        Ok(())
    }
}

fn describe_seq(data: &[u8]) -> String {
    seq_of(data).map_or_else(String::new, |s| format!(" (carrying sequence number {s})"))
}

fn mismatch_detail(expected: &[u8], got: &[u8]) -> String {
    match expected.iter().zip(got).position(|(a, b)| a != b) {
        Some(i) => format!(
            "first difference at byte {i} (expected {:#04x}, got {:#04x})",
            expected[i], got[i]
        ),
        None => format!(
            "same prefix, length differs (expected {}, got {})",
            expected.len(),
            got.len()
        ),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Running,
    /// All reliable echoes are back; waiting a little for missing unreliable ones.
    Grace(Instant),
    Kicking(Instant),
    Disconnecting(Instant),
}

struct Outcome {
    connect_time: Option<Duration>,
    echo_time: Option<Duration>,
    stats: Option<ConnectionStats>,
    rtt: Option<u32>,
}

fn main() {
    common::init_logging();
    let args = parse_args();
    let started = Instant::now();
    let mut client = match Client::connect((args.host.as_str(), args.port), args.config.clone()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!(
                "{PROG}: FAILED: cannot connect to {}:{}: {e}",
                args.host, args.port
            );
            exit(1);
        }
    };
    let mut run = Run::new(&args);
    let mut outcome = Outcome {
        connect_time: None,
        echo_time: None,
        stats: None,
        rtt: None,
    };
    println!("connecting to {} ...", client.remote_addr());
    let result = drive(&args, &mut client, &mut run, &mut outcome, started);
    if result.is_err() && client.state() != kcpnet::ConnectionState::Disconnected {
        client.disconnect(); // tell the server at once instead of letting it time out
        client.tick_outgoing();
    }
    print_summary(&run, &outcome, &client, started);
    match result {
        Ok(()) => println!(
            "OK: all {} reliable echoes byte-identical and in order",
            run.reliable_echoed.messages
        ),
        Err(e) => {
            eprintln!("{PROG}: FAILED: {e}");
            exit(1);
        }
    }
}

/// The game loop: tick, check events, send, flush, sleep.
fn drive(
    args: &Args,
    client: &mut Client,
    run: &mut Run,
    out: &mut Outcome,
    started: Instant,
) -> Result<(), String> {
    let remote = client.remote_addr();
    let deadline = started + args.timeout;
    let mut phase = Phase::Connecting;
    let mut connected_at = started;
    let mut last_error: Option<String> = None;
    loop {
        let mut disconnected = None;
        let mut connected = false;
        let mut echo_error = None;
        client.tick_incoming();
        while let Some(event) = client.poll_event() {
            match event {
                Event::Connected { .. } => connected = true,
                Event::Data { channel, data, .. } => {
                    if echo_error.is_none() {
                        echo_error = run.on_echo(channel, data).err();
                    }
                }
                Event::Error { code, message, .. } => {
                    eprintln!("{PROG}: error event {} ({code}): {message}", code as u8);
                    last_error = Some(format!("{code}: {message}"));
                }
                Event::Disconnected { reason, .. } => disconnected = Some(reason),
                other => eprintln!("{PROG}: unexpected event {other:?}"),
            }
        }
        if let Some(e) = echo_error {
            return Err(e);
        }
        let now = Instant::now();
        out.rtt = client.rtt().or(out.rtt); // the last measurement survives the close
        let cause = || {
            last_error
                .as_deref()
                .map_or_else(String::new, |e| format!(" ({e})"))
        };

        if connected {
            connected_at = now;
            out.connect_time = Some(now - started);
            let ext = client.extensions();
            println!(
                "connected to {remote} in {:.1} ms (local {}; {}); {}",
                (now - started).as_secs_f64() * 1e3,
                client
                    .local_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string()),
                if ext.is_empty() {
                    "plain kcp2k".to_string()
                } else {
                    format!("kcpnet extensions {:#x}", ext.bits())
                },
                run.plan()
            );
            phase = Phase::Running;
        }

        match phase {
            Phase::Connecting | Phase::Running | Phase::Grace(_) => {
                if let Some(reason) = disconnected {
                    return Err(if phase == Phase::Connecting {
                        format!(
                            "could not connect to {remote}: disconnected ({reason}){}",
                            cause()
                        )
                    } else {
                        format!(
                            "unexpected disconnect ({reason}){} after {} of {} reliable echoes",
                            cause(),
                            run.reliable_echoed.messages,
                            run.reliable_sent.messages
                        )
                    });
                }
                if now >= deadline {
                    return Err(if phase == Phase::Connecting {
                        format!(
                            "timed out after {} s connecting to {remote}",
                            args.timeout.as_secs()
                        )
                    } else {
                        format!(
                            "timed out after {} s: {} of {} reliable echoes received ({} not sent yet)",
                            args.timeout.as_secs(),
                            run.reliable_echoed.messages,
                            run.reliable_sent.messages,
                            run.fixed_reliable.len() as u64 + run.random_left
                        )
                    });
                }
            }
            Phase::Kicking(since) => match disconnected {
                // A kcp2k server's kick carries no reason; a kcpnet one tells why.
                Some(reason @ (DisconnectReason::Remote | DisconnectReason::App { .. })) => {
                    println!(
                        "kicked by the server after {:.1} ms, as expected: {reason} ({reason:?})",
                        (now - since).as_secs_f64() * 1e3
                    );
                    return Ok(());
                }
                Some(reason) => {
                    return Err(format!(
                        "after KICK expected a disconnect by the server (Remote or App), got \
                         {reason:?}{}",
                        cause()
                    ))
                }
                None if now - since >= DISCONNECT_CAP => {
                    return Err(format!(
                        "the server did not disconnect us within {} s of KICK",
                        DISCONNECT_CAP.as_secs()
                    ))
                }
                None => {}
            },
            Phase::Disconnecting(since) => match disconnected {
                Some(reason) => {
                    println!(
                        "disconnected ({reason}: {reason:?}) {:.1} ms after the graceful disconnect",
                        (now - since).as_secs_f64() * 1e3
                    );
                    return Ok(());
                }
                None if now - since >= DISCONNECT_CAP => {
                    eprintln!(
                        "{PROG}: warning: no Disconnected within {} s of the graceful disconnect; \
                         closing hard",
                        DISCONNECT_CAP.as_secs()
                    );
                    client.disconnect();
                    client.tick_outgoing();
                    return Ok(());
                }
                None => {}
            },
        }

        if phase == Phase::Running {
            run.send_more(client)?;
            if run.all_sent() && run.in_flight.is_empty() {
                out.echo_time = Some(now - connected_at);
                phase = Phase::Grace(now);
            }
        }
        if let Phase::Grace(since) = phase {
            if run.unreliable_pending.is_empty() || now - since >= UNRELIABLE_GRACE {
                out.stats = Some(client.connection_stats());
                if args.kick {
                    client
                        .send(b"KICK", Channel::Reliable)
                        .map_err(|e| format!("sending KICK failed: {e}"))?;
                    phase = Phase::Kicking(now);
                } else {
                    client.disconnect_graceful();
                    phase = Phase::Disconnecting(now);
                }
            }
        }

        client.tick_outgoing();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn print_summary(run: &Run, out: &Outcome, client: &Client, started: Instant) {
    let stats = out.stats.unwrap_or_else(|| client.connection_stats());
    let rtt = out.rtt;
    let ms = |d: Option<Duration>| {
        d.map_or_else(
            || "-".to_string(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
        )
    };
    let rate = match out.echo_time {
        Some(t) if t.as_secs_f64() > 0.0 => format!(
            ", {:.2} MB/s echoed",
            (run.reliable_echoed.bytes + run.unreliable_echoed_count.bytes) as f64
                / t.as_secs_f64()
                / 1e6
        ),
        _ => String::new(),
    };
    println!("summary:");
    println!(
        "  reliable:    sent {} messages ({} bytes), echoed {} ({} bytes)",
        run.reliable_sent.messages,
        run.reliable_sent.bytes,
        run.reliable_echoed.messages,
        run.reliable_echoed.bytes
    );
    println!(
        "  unreliable:  sent {} messages ({} bytes), echoed {} ({} bytes), lost {}, duplicated {}",
        run.unreliable_sent_count.messages,
        run.unreliable_sent_count.bytes,
        run.unreliable_echoed_count.messages,
        run.unreliable_echoed_count.bytes,
        run.unreliable_pending.len(),
        run.unreliable_duplicates
    );
    println!(
        "  elapsed:     {:.1} ms total (connect {}, echoes {}{rate})",
        started.elapsed().as_secs_f64() * 1e3,
        ms(out.connect_time),
        ms(out.echo_time)
    );
    println!(
        "  rtt:         {} (ping/pong), kcp srtt {} ms, rto {} ms",
        rtt.map_or_else(|| "not measured yet".to_string(), |r| format!("{r} ms")),
        stats.srtt_ms,
        stats.rto_ms
    );
    println!(
        "  link:        retransmissions {} (+{} fast) of {} segments sent, datagrams sent {} / \
         received {}, dropped {}",
        stats.retransmits,
        stats.fast_retransmits,
        stats.segments_sent,
        stats.datagrams_sent,
        stats.datagrams_received,
        stats.datagrams_dropped
    );
    let q = stats.quality;
    println!(
        "  quality:     kcp rtt {} ms (var {}), loss {}, {:.0} B/s out, {:.0} B/s in \
         (last {} ms), {} B pending, peer window {}",
        q.kcp_rtt_ms,
        q.kcp_rtt_var_ms,
        loss_text(&q),
        q.bytes_out_per_sec,
        q.bytes_in_per_sec,
        q.window_ms,
        q.pending_reliable_bytes,
        q.peer_window
    );
}

/// The loss figures: each way between kcpnet peers, the retransmission ratio with kcp2k.
fn loss_text(q: &kcpnet::ConnectionQuality) -> String {
    let pct = |e: &kcpnet::LossEstimate| {
        format!(
            "{:.1}% ±{:.1} of {} datagrams",
            e.value * 100.0,
            e.margin * 100.0,
            e.samples
        )
    };
    if q.loss_out.is_known() || q.loss_in.is_known() {
        format!("out {}, in {}", pct(&q.loss_out), pct(&q.loss_in))
    } else {
        let r = q.retransmit_ratio;
        format!(
            "{:.1}% ±{:.1} of {} segments retransmitted",
            r.value * 100.0,
            r.margin * 100.0,
            r.samples
        )
    }
}
