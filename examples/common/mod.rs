//! Command-line handling shared by the `echo_server` and `echo_client` examples: the KCP
//! config flags (parsed into a [`kcpnet::Config`] that starts from the kcp2k defaults), the
//! `--help` text, usage errors (exit code 2) and logging set-up.

use std::ffi::OsString;
use std::fmt::Display;
use std::process::exit;
use std::str::FromStr;

use kcpnet::Config;
use lexopt::{Arg, Parser};

/// Exit code for bad command lines and invalid configurations.
pub const EXIT_USAGE: i32 = 2;

/// Initialises `env_logger` from `RUST_LOG`, showing warnings and errors by default.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
}

/// Prints `error: {msg}` and a hint to stderr, then exits with [`EXIT_USAGE`].
pub fn usage_error(prog: &str, msg: impl Display) -> ! {
    eprintln!("{prog}: error: {msg}");
    eprintln!("Try '{prog} --help' for the list of flags.");
    exit(EXIT_USAGE)
}

/// Takes the value of option `--flag` and parses it, with an error naming the flag.
pub fn value<T>(parser: &mut Parser, flag: &str) -> Result<T, lexopt::Error>
where
    T: FromStr,
    T::Err: Display,
{
    let raw = parser.value()?;
    parse_os(&raw, flag)
}

fn parse_os<T>(raw: &OsString, flag: &str) -> Result<T, lexopt::Error>
where
    T: FromStr,
    T::Err: Display,
{
    let text = raw
        .to_str()
        .ok_or_else(|| format!("--{flag}: the value {raw:?} is not valid UTF-8"))?;
    text.parse::<T>()
        .map_err(|e| format!("--{flag}: invalid value {text:?}: {e}").into())
}

/// The `--help` section describing the config flags, with kcpnet's (= kcp2k's) defaults.
fn config_help() -> String {
    let d = Config::default();
    format!(
        "\
KCP config flags (every kcpnet::Config field; default = kcp2k's KcpConfig). Both ends must
use the same --mtu and receive window: the largest reliable message is derived from them.
  --preset kcp2k|mirror  start from kcp2k's KcpConfig (default) or Mirror's KcpTransport
                         (windows 4096 4096, fast resend 2, max retransmits 40); the other
                         flags then change single fields, in any order
  --mtu N                datagram size in bytes, kcp2k header included [default: {mtu}]
  --window SND RCV       KCP send and receive windows in segments [default: {snd} {rcv}]
  --interval MS          KCP flush interval in ms (KCP clamps it to 10..=5000) [default: {interval}]
  --timeout MS           disconnect after MS ms without receiving anything [default: {timeout}]
  --nodelay 0|1|2        KCP no-delay mode: 0 off, 1 on, 2 aggressive [default: {nodelay}]
  --fast-resend N        fast retransmit after N later ACKs, 0 off [default: {fast}]
  --congestion-window true|false  KCP congestion control [default: {cwnd}]
  --max-retransmits N    dead link after N sends of one segment [default: {maxrt}]
  --dual-mode true|false server: IPv6 socket that also accepts IPv4 [default: {dual}]
  --recv-buffer BYTES    SO_RCVBUF [default: {rbuf}]
  --send-buffer BYTES    SO_SNDBUF [default: {sbuf}]
  --handshake-timeout MS give up a handshake after MS ms [default: {hs}]
  --max-connections N    server: most connections [default: {conns}]
  --linger MS            graceful disconnect: flush for at most MS ms [default: {linger}]
  --flush-on-tick true|false  flush ACKs/data every tick, not only on the interval [default: {fot}]
  --choke N              disconnect when N segments are queued [default: {choke}]
  --send-queue-limit BYTES  reliable bytes queued before send fails (backpressure) [default: {sql}]
  --max-pending-event-bytes BYTES  received bytes held for the app [default: {peb}]
  --max-datagrams-per-tick N  datagrams read per tick [default: {dpt}]

Other:
  -h, --help             print this help and exit
Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to see more than warnings.
Exit code 2: invalid command line or configuration.",
        mtu = d.mtu,
        snd = d.send_window_size,
        rcv = d.receive_window_size,
        interval = d.interval_ms,
        timeout = d.timeout_ms,
        nodelay = d.no_delay,
        fast = d.fast_resend,
        cwnd = d.congestion_window,
        maxrt = d.max_retransmits,
        dual = d.dual_mode,
        rbuf = d.recv_buffer_size,
        sbuf = d.send_buffer_size,
        hs = d.handshake_timeout_ms,
        conns = d.max_connections,
        linger = d.linger_timeout_ms,
        fot = d.flush_on_tick,
        choke = d.queue_disconnect_threshold,
        sql = d.send_queue_limit,
        peb = d.max_pending_event_bytes,
        dpt = d.max_datagrams_per_tick,
    )
}

/// The config a `--preset` name stands for.
fn preset(name: &str) -> Result<Config, lexopt::Error> {
    match name {
        "kcp2k" | "default" => Ok(Config::kcp2k()),
        "mirror" => Ok(Config::mirror()),
        other => Err(format!("--preset: unknown preset {other:?} (kcp2k or mirror)").into()),
    }
}

/// Handles `--name` if it is one of the config flags; `Ok(false)` if it is not one.
fn config_flag(
    name: &str,
    parser: &mut Parser,
    config: &mut Config,
) -> Result<bool, lexopt::Error> {
    match name {
        // Applied before every other flag (see `parse_args`); only consumed here.
        "preset" => {
            let _: String = value(parser, name)?;
        }
        "mtu" => config.mtu = value(parser, name)?,
        "window" => {
            let values: Vec<OsString> = parser.values()?.take(2).collect();
            if values.len() != 2 {
                return Err("--window needs two values: SND RCV (e.g. --window 32 128)".into());
            }
            config.send_window_size = parse_os(&values[0], "window (SND)")?;
            config.receive_window_size = parse_os(&values[1], "window (RCV)")?;
        }
        "interval" => config.interval_ms = value(parser, name)?,
        "timeout" => config.timeout_ms = value(parser, name)?,
        "nodelay" => config.no_delay = value(parser, name)?,
        "fast-resend" => config.fast_resend = value(parser, name)?,
        "congestion-window" => config.congestion_window = value(parser, name)?,
        "max-retransmits" => config.max_retransmits = value(parser, name)?,
        "dual-mode" => config.dual_mode = value(parser, name)?,
        "recv-buffer" => config.recv_buffer_size = value(parser, name)?,
        "send-buffer" => config.send_buffer_size = value(parser, name)?,
        "handshake-timeout" => config.handshake_timeout_ms = value(parser, name)?,
        "max-connections" => config.max_connections = value(parser, name)?,
        "linger" => config.linger_timeout_ms = value(parser, name)?,
        "flush-on-tick" => config.flush_on_tick = value(parser, name)?,
        "choke" => config.queue_disconnect_threshold = value(parser, name)?,
        "send-queue-limit" => config.send_queue_limit = value(parser, name)?,
        "max-pending-event-bytes" => config.max_pending_event_bytes = value(parser, name)?,
        "max-datagrams-per-tick" => config.max_datagrams_per_tick = value(parser, name)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The `--preset` of the command line (the last one given), applied before the other flags
/// so that `--window 64 64 --preset mirror` keeps the windows.
fn preset_of_args() -> Result<Config, lexopt::Error> {
    let mut config = Config::default();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if let Some(name) = text.strip_prefix("--preset=") {
            config = preset(name)?;
        } else if text == "--preset" {
            let name = args
                .next()
                .ok_or("--preset needs a value (kcp2k or mirror)")?;
            config = preset(&name.to_string_lossy())?;
        }
    }
    Ok(config)
}

/// Parses the command line: `own_flag` is offered every long option first (it returns
/// `Ok(false)` for options it does not know), then the config flags and `--help`
/// (`usage` followed by the config flag list) are handled here. Any error, and a config
/// that [`Config::validate`] rejects, ends the process with [`EXIT_USAGE`].
pub fn parse_args(
    prog: &str,
    usage: &str,
    mut own_flag: impl FnMut(&str, &mut Parser) -> Result<bool, lexopt::Error>,
) -> Config {
    let mut config = preset_of_args().unwrap_or_else(|e| usage_error(prog, e));
    let mut parser = Parser::from_env();
    let result = (|| -> Result<(), lexopt::Error> {
        while let Some(arg) = parser.next()? {
            match arg {
                Arg::Short('h') | Arg::Long("help") => {
                    println!("{usage}\n\n{}", config_help());
                    exit(0);
                }
                Arg::Long(name) => {
                    let name = name.to_owned();
                    if !own_flag(&name, &mut parser)?
                        && !config_flag(&name, &mut parser, &mut config)?
                    {
                        return Err(format!("unknown flag --{name}").into());
                    }
                }
                other => return Err(other.unexpected()),
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        usage_error(prog, e);
    }
    if let Err(e) = config.validate() {
        usage_error(prog, e);
    }
    config
}
