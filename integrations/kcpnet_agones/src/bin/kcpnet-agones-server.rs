//! `kcpnet-agones-server`: a dedicated kcpnet echo server for a fleet.
//!
//! Binds the UDP port the fleet manager gives it, says Ready to Agones (when an SDK server
//! is there), pings health from its game loop, tracks players, serves `/metrics`, and on
//! SIGTERM/SIGINT or the GameServer's `Shutdown` drains every client with a reason, calls
//! the SDK's `Shutdown()` and exits 0. Logs are logfmt lines on stderr.
//!
//! The game: every message is echoed on its channel, except a reliable `burst N SIZE`, which
//! queues N reliable messages of SIZE bytes (SIZE ≥ 4; each starts with its index, u32
//! little-endian) — a load the drain must deliver.
//!
//! Environment (every variable optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `KCPNET_PORT`, else `PORT` | 7777 | UDP port (0: any free port, logged) |
//! | `KCPNET_HOST` | `0.0.0.0` | address to bind |
//! | `KCPNET_METRICS_ADDR` | `127.0.0.1:9100` | `/metrics` listener (`off`: none) |
//! | `KCPNET_AGONES` | `auto` | `on`: the SDK is required; `off`: none; `auto`: on when `AGONES_SDK_GRPC_PORT` is set |
//! | `AGONES_SDK_GRPC_PORT` | 9357 | the SDK server's port (Agones sets it) |
//! | `KCPNET_HEALTH_INTERVAL_MS` | half of the GameServer's `health.periodSeconds` | health ping interval |
//! | `KCPNET_LINGER_MS` | 10000 | longest drain |
//! | `KCPNET_DRAIN_CODE` / `KCPNET_DRAIN_MESSAGE` | 1001 / `server draining` | the reason clients get |
//! | `KCPNET_TICK_HZ` | 60 | game loop rate |
//! | `KCPNET_LOG` | `info` | `error`, `warn`, `info`, `debug`, `trace` |

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kcpnet_agones::kcpnet::{Channel, Config, Event, Server};
use kcpnet_agones::metrics_exporter_prometheus::PrometheusBuilder;
use kcpnet_agones::{AgonesConfig, AgonesHandle, DrainSignal, Fleet, FleetConfig, MetricsServer};

/// logfmt to stderr: `ts=… level=… target=… <message>`; the message is itself key=value
/// pairs for this binary's lines.
struct Logfmt {
    level: log::LevelFilter,
}

impl log::Log for Logfmt {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let msg = record.args().to_string();
        let target = record.target();
        // This crate's own lines are already key=value; others are quoted.
        let body =
            if target.starts_with("kcpnet_agones") || target.starts_with("kcpnet_agones_server") {
                msg
            } else {
                format!("msg=\"{}\"", msg.replace('"', "'"))
            };
        let line = format!(
            "ts={}.{:03} level={} target={} {}\n",
            ts.as_secs(),
            ts.subsec_millis(),
            record.level().as_str().to_lowercase(),
            target,
            body
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_parse<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match env(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value")),
    }
}

struct Settings {
    host: String,
    port: u16,
    metrics_addr: Option<String>,
    agones: Option<bool>,
    health_interval: Option<Duration>,
    fleet: FleetConfig,
    tick: Duration,
}

fn settings() -> Result<Settings, String> {
    let port = match env("KCPNET_PORT").or_else(|| env("PORT")) {
        None => 7777,
        Some(p) => p
            .parse()
            .map_err(|_| format!("port {p:?} is not a UDP port"))?,
    };
    let metrics_addr = match env("KCPNET_METRICS_ADDR").as_deref() {
        Some("off") => None,
        Some(a) => Some(a.to_owned()),
        None => Some("127.0.0.1:9100".to_owned()),
    };
    let agones = match env("KCPNET_AGONES").as_deref() {
        None | Some("auto") => env("AGONES_SDK_GRPC_PORT").map(|_| true),
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(v) => return Err(format!("KCPNET_AGONES={v:?}: use on, off or auto")),
    };
    let health_interval = match env("KCPNET_HEALTH_INTERVAL_MS") {
        None => None,
        Some(_) => Some(Duration::from_millis(env_parse(
            "KCPNET_HEALTH_INTERVAL_MS",
            0u64,
        )?)),
    };
    let hz: u32 = env_parse("KCPNET_TICK_HZ", 60)?;
    if hz == 0 || hz > 10_000 {
        return Err(format!("KCPNET_TICK_HZ={hz}: use 1..=10000"));
    }
    let fleet = FleetConfig {
        drain_code: env_parse("KCPNET_DRAIN_CODE", kcpnet_agones::DEFAULT_DRAIN_CODE)?,
        drain_message: env("KCPNET_DRAIN_MESSAGE")
            .unwrap_or_else(|| kcpnet_agones::DEFAULT_DRAIN_MESSAGE.to_owned()),
        linger: Duration::from_millis(env_parse("KCPNET_LINGER_MS", 10_000u64)?),
        ..FleetConfig::default()
    };
    if fleet.drain_message.len() > kcpnet_agones::kcpnet::CloseMessage::MAX_LEN {
        return Err("KCPNET_DRAIN_MESSAGE is longer than 128 bytes".to_owned());
    }
    Ok(Settings {
        host: env("KCPNET_HOST").unwrap_or_else(|| "0.0.0.0".to_owned()),
        port,
        metrics_addr,
        agones,
        health_interval,
        fleet,
        tick: Duration::from_secs(1) / hz,
    })
}

/// The game: echo, or queue a burst for `burst N SIZE`.
fn play(server: &mut Server, event: &Event<'_>) {
    let Event::Data { id, channel, data } = event else {
        return;
    };
    if *channel == Channel::Reliable {
        if let Some(args) = data.strip_prefix(b"burst ") {
            let args = String::from_utf8_lossy(args);
            let mut it = args.split_whitespace().map(|a| a.parse::<usize>());
            if let (Some(Ok(n)), Some(Ok(size))) = (it.next(), it.next()) {
                let size = size.clamp(4, 64 * 1024);
                let mut msg = vec![0xA5u8; size];
                for i in 0..n.min(100_000) {
                    msg[..4].copy_from_slice(&(i as u32).to_le_bytes());
                    if let Err(e) = server.send(*id, &msg, Channel::Reliable) {
                        log::warn!("event=burst_stopped id={id} sent={i} error=\"{e}\"");
                        break;
                    }
                }
                return;
            }
        }
    }
    let _ = server.send(*id, data, *channel);
}

fn run() -> Result<(), String> {
    let level = env_parse("KCPNET_LOG", log::LevelFilter::Info)?;
    let _ = log::set_boxed_logger(Box::new(Logfmt { level }));
    log::set_max_level(level);
    let s = settings()?;

    // Signals first: a SIGTERM during start-up must not kill the process mid-way.
    let signal = DrainSignal::install().map_err(|e| format!("signal handlers: {e}"))?;

    let mut server = Server::bind((s.host.as_str(), s.port), Config::default())
        .map_err(|e| format!("bind {}:{}: {e}", s.host, s.port))?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;

    let _metrics = match &s.metrics_addr {
        None => None,
        Some(a) => {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            kcpnet_agones::metrics::set_global_recorder(recorder)
                .map_err(|e| format!("metrics recorder: {e}"))?;
            let http = MetricsServer::bind(a.as_str(), handle)
                .map_err(|e| format!("metrics listener {a}: {e}"))?;
            Some(http)
        }
    };
    let metrics_at = _metrics
        .as_ref()
        .map(|m| m.local_addr().to_string())
        .unwrap_or_else(|| "off".to_owned());

    let agones = match s.agones {
        Some(true) => {
            let config = AgonesConfig {
                health_interval: s.health_interval,
                ..AgonesConfig::default()
            };
            let handle = AgonesHandle::connect(config).map_err(|e| e.to_string())?;
            log::info!(
                "event=agones_connected gameserver={:?} state={:?} health_interval_ms={}",
                handle.info().name,
                handle.info().state,
                handle.health_interval().as_millis()
            );
            Some(handle)
        }
        _ => None,
    };
    let mut fleet = Fleet::new(s.fleet.clone(), agones, signal);
    fleet.ready();
    log::info!(
        "event=listening addr={addr} metrics={metrics_at} agones={} tick_ms={}",
        fleet.agones().is_some(),
        s.tick.as_secs_f64() * 1000.0
    );

    let cause = loop {
        let frame_start = Instant::now();
        server.tick_incoming();
        let mut events = server.drain_events();
        while let Some((event, server)) = events.next() {
            fleet.observe(&event);
            play(server, &event);
        }
        drop(events);
        server.tick_outgoing();
        if let Some(cause) = fleet.frame(&server, Instant::now()) {
            break cause;
        }
        let left = s.tick.saturating_sub(frame_start.elapsed());
        if !left.is_zero() {
            server.wait(left).map_err(|e| format!("wait: {e}"))?;
        }
    };
    log::info!("event=drain_requested cause={cause:?}");
    let report = fleet
        .drain(&mut server, |_| {})
        .map_err(|e| e.to_string())?;
    log::info!(
        "event=exit clean={} disconnected={} agones_shutdown={}",
        report.clean,
        report.disconnected,
        match &report.agones_shutdown {
            None => "none".to_owned(),
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(e)) => format!("\"{e}\""),
        }
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event=fatal error=\"{e}\"");
            // Also without a logger (a failure before it was installed).
            eprintln!("kcpnet-agones-server: {e}");
            ExitCode::from(2)
        }
    }
}
