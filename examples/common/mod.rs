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
KCP config flags (default = kcp2k's KcpConfig; both ends should use the same --mtu and
receive window, since the largest reliable message is derived from them):
  --mtu N              datagram size in bytes, kcp2k header included [default: {mtu}]
  --window SND RCV     KCP send and receive windows in segments [default: {snd} {rcv}]
  --interval MS        KCP flush interval in ms (KCP clamps it to 10..=5000) [default: {interval}]
  --timeout MS         disconnect after MS ms without receiving anything [default: {timeout}]
  --nodelay 0|1|2      KCP no-delay mode: 0 off, 1 on, 2 aggressive [default: {nodelay}]

Other:
  -h, --help           print this help and exit
Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to see more than warnings.
Exit code 2: invalid command line or configuration.",
        mtu = d.mtu,
        snd = d.send_window_size,
        rcv = d.receive_window_size,
        interval = d.interval_ms,
        timeout = d.timeout_ms,
        nodelay = d.no_delay,
    )
}

/// Handles `--name` if it is one of the config flags; `Ok(false)` if it is not one.
fn config_flag(
    name: &str,
    parser: &mut Parser,
    config: &mut Config,
) -> Result<bool, lexopt::Error> {
    match name {
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
        _ => return Ok(false),
    }
    Ok(true)
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
    let mut config = Config::default();
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
