//! # kcpnet inspector in a bevy window
//!
//! ```text
//! cargo run --release -p kcpnet_inspector_example                  # until the window closes
//! cargo run --release -p kcpnet_inspector_example -- --bots 8 --loss 10 --latency 50
//! cargo run --release -p kcpnet_inspector_example -- --seconds 12 --screenshot shot.png
//! cargo run --release -p kcpnet_inspector_example -- --help
//! ```
//!
//! One bevy app runs a kcpnet server ([`KcpServerPlugin`], real UDP on `127.0.0.1`, any
//! port) and `--bots` bot [`Client`]s, each with its own socket, ticked once per frame.
//! Every bot sends an unreliable "position" (40–100 bytes) at `--rate` Hz and every 10th
//! tick a reliable "event" (100–1500 bytes); the server echoes everything back.
//!
//! **The lossy link** is the server socket's link conditioner, in both directions
//! ([`KcpLinkConditions`], which `KcpServerPlugin` applies to the server through
//! `Server::set_conditions` whenever it changes): every datagram between a bot and the
//! server passes the conditioner once, so a round trip costs `2 × latency` and an echo
//! survives with probability `(1 - loss)²`.
//!
//! **The window** shows kcpnet_visualizer's [`Inspector`] (fed once per frame from the
//! server by [`NetworkHistory::sample_server`]) and a "link" panel: sliders for loss,
//! latency and jitter, and keys to change them live (see [`HELP`]).
//!
//! **Timed runs** (`--seconds S` or `--frames N`) exit by themselves with a verdict: half
//! way through, the run adds `--step-latency` ms (100 by default) of one-way latency and
//! `--step-loss` % (20) of loss, as a developer would with the keys; at the end it checks
//! that every bot connected and got echoes, that the inspector was drawn with samples of
//! every connection, and that the graphs reacted: over the last 40 % of the run after the
//! step, the recorded RTT is up by at least half the added round trip and the loss of the
//! bots' unreliable messages is up by at least half the added loss, compared with the 3 s
//! before the step. With
//! `--screenshot FILE.png` it also saves the window (bevy's screenshot API) and checks the
//! image is not blank. Exit code 0 = PASS, 1 = FAIL, 2 = bad arguments.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bevy::app::AppExit;
use bevy::prelude::*;
use bevy::render::view::screenshot::{save_to_disk, Screenshot, ScreenshotCaptured};
use bevy::window::{PresentMode, WindowResolution};
use bevy::winit::{UpdateMode, WinitSettings};
use bevy_egui::{egui, EguiContexts, EguiPlugin, EguiPrimaryContextPass};
use bevy_kcpnet::prelude::*;
use kcpnet::io::Conditions;
use kcpnet::{Channel, Client, Config, Event};
use kcpnet_visualizer::{ConnectionSample, Inspector, NetworkHistory};

/// The command line help, with the keys.
pub const HELP: &str = "\
kcpnet_inspector_example: a kcpnet server and bots over a lossy link, inspected live

USAGE: cargo run --release -p kcpnet_inspector_example -- [OPTIONS]

OPTIONS
  --bots N            bot clients, 1..=64                         (default 4)
  --loss PERCENT      one-way loss, 0..=90                        (default 5)
  --latency MS        one-way latency, 0..=1000                   (default 30)
  --jitter MS         extra random one-way delay, 0..=500         (default 0)
  --rate HZ           bot messages per second, 1..=240            (default 30)
  --seconds S         exit after S seconds with a verdict (timed run)
  --frames N          exit after N frames with a verdict (timed run)
  --step-latency MS   one-way latency added half way through a timed run (default 100)
  --step-loss PERCENT loss added half way through a timed run (default 20)
  --screenshot FILE   save the window as a PNG at the end of a timed run
  -h, --help          this text

KEYS (when no text field has focus)
  Up / Down           latency +10 / -10 ms
  Right / Left        loss +1 / -1 %
  PageUp / PageDown   jitter +5 / -5 ms
  0                   a perfect link (no loss, latency or jitter)
  R                   back to the starting conditions
";

// ------------------------------------------------------------------ options

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Bot clients.
    pub bots: usize,
    /// The starting link.
    pub link: Link,
    /// Bot messages per second.
    pub rate_hz: f64,
    /// A timed run's length in seconds.
    pub seconds: Option<f64>,
    /// A timed run's length in frames.
    pub frames: Option<u64>,
    /// One-way latency added half way through a timed run, in ms.
    pub step_latency_ms: f64,
    /// Loss added half way through a timed run, in percent.
    pub step_loss_pct: f64,
    /// Where to save the window at the end of a timed run.
    pub screenshot: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bots: 4,
            link: Link {
                loss_pct: 5.0,
                latency_ms: 30.0,
                jitter_ms: 0.0,
            },
            rate_hz: 30.0,
            seconds: None,
            frames: None,
            step_latency_ms: 100.0,
            step_loss_pct: 20.0,
            screenshot: None,
        }
    }
}

impl Options {
    /// Whether the run ends by itself.
    pub fn timed(&self) -> bool {
        self.seconds.is_some() || self.frames.is_some()
    }
}

/// A bad command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// `--help` was asked for.
    Help,
    /// An option without its value.
    MissingValue(String),
    /// A value that does not parse or is out of range.
    BadValue {
        /// The option.
        option: String,
        /// Its value.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
    /// An option this example does not know.
    Unknown(String),
    /// `--screenshot` without `--seconds` or `--frames`.
    ScreenshotNeedsTimedRun,
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Help => f.write_str("help requested"),
            ArgError::MissingValue(o) => write!(f, "{o} needs a value"),
            ArgError::BadValue {
                option,
                value,
                expected,
            } => write!(f, "{option}: bad value {value:?} (expected {expected})"),
            ArgError::Unknown(o) => write!(f, "unknown option {o:?} (try --help)"),
            ArgError::ScreenshotNeedsTimedRun => {
                f.write_str("--screenshot needs a timed run (--seconds or --frames)")
            }
        }
    }
}

impl std::error::Error for ArgError {}

/// Parses the options (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, ArgError> {
    fn num<T: std::str::FromStr + PartialOrd>(
        option: &str,
        value: Option<String>,
        range: std::ops::RangeInclusive<T>,
        expected: &'static str,
    ) -> Result<T, ArgError> {
        let value = value.ok_or_else(|| ArgError::MissingValue(option.to_string()))?;
        match value.parse::<T>() {
            Ok(v) if range.contains(&v) => Ok(v),
            _ => Err(ArgError::BadValue {
                option: option.to_string(),
                value,
                expected,
            }),
        }
    }
    let mut o = Options::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bots" => o.bots = num(&flag, it.next(), 1..=64, "1..=64")?,
            "--loss" => o.link.loss_pct = num(&flag, it.next(), 0.0..=90.0, "0..=90")?,
            "--latency" => o.link.latency_ms = num(&flag, it.next(), 0.0..=1000.0, "0..=1000")?,
            "--jitter" => o.link.jitter_ms = num(&flag, it.next(), 0.0..=500.0, "0..=500")?,
            "--rate" => o.rate_hz = num(&flag, it.next(), 1.0..=240.0, "1..=240")?,
            "--seconds" => o.seconds = Some(num(&flag, it.next(), 1.0..=3600.0, "1..=3600")?),
            "--frames" => o.frames = Some(num(&flag, it.next(), 10..=1_000_000, "10..=1000000")?),
            "--step-latency" => {
                o.step_latency_ms = num(&flag, it.next(), 0.0..=500.0, "0..=500")?;
            }
            "--step-loss" => o.step_loss_pct = num(&flag, it.next(), 0.0..=50.0, "0..=50")?,
            "--screenshot" => {
                let path = it
                    .next()
                    .ok_or_else(|| ArgError::MissingValue(flag.clone()))?;
                o.screenshot = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Err(ArgError::Help),
            other => return Err(ArgError::Unknown(other.to_string())),
        }
    }
    if o.screenshot.is_some() && !o.timed() {
        return Err(ArgError::ScreenshotNeedsTimedRun);
    }
    Ok(o)
}

// ------------------------------------------------------------------ the link

/// The link's conditions as the sliders show them; the app turns every change into
/// [`KcpLinkConditions`] (the same conditions both ways on the server's socket).
#[derive(Resource, Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way loss in percent, 0..=90.
    pub loss_pct: f64,
    /// One-way latency in ms, 0..=1000.
    pub latency_ms: f64,
    /// Extra random one-way delay in ms, 0..=500.
    pub jitter_ms: f64,
}

impl Link {
    /// A perfect link.
    pub const PERFECT: Link = Link {
        loss_pct: 0.0,
        latency_ms: 0.0,
        jitter_ms: 0.0,
    };

    /// The same link with every value clamped to its slider's range.
    pub fn clamped(self) -> Link {
        Link {
            loss_pct: self.loss_pct.clamp(0.0, 90.0),
            latency_ms: self.latency_ms.clamp(0.0, 1000.0),
            jitter_ms: self.jitter_ms.clamp(0.0, 500.0),
        }
    }

    /// kcpnet's conditions for one direction (values clamped first, so always valid).
    pub fn conditions(self) -> Conditions {
        let l = self.clamped();
        Conditions::lossy(l.loss_pct / 100.0)
            .with_latency(Duration::from_secs_f64(l.latency_ms / 1000.0))
            .with_jitter(Duration::from_secs_f64(l.jitter_ms / 1000.0))
    }
}

/// A change of the link asked for by a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKey {
    /// Up: latency +10 ms.
    LatencyUp,
    /// Down: latency -10 ms.
    LatencyDown,
    /// Right: loss +1 %.
    LossUp,
    /// Left: loss -1 %.
    LossDown,
    /// PageUp: jitter +5 ms.
    JitterUp,
    /// PageDown: jitter -5 ms.
    JitterDown,
    /// 0: a perfect link.
    Perfect,
    /// R: the starting link.
    Reset,
}

impl LinkKey {
    /// The keys this example listens to.
    pub const ALL: [(KeyCode, LinkKey); 9] = [
        (KeyCode::ArrowUp, LinkKey::LatencyUp),
        (KeyCode::ArrowDown, LinkKey::LatencyDown),
        (KeyCode::ArrowRight, LinkKey::LossUp),
        (KeyCode::ArrowLeft, LinkKey::LossDown),
        (KeyCode::PageUp, LinkKey::JitterUp),
        (KeyCode::PageDown, LinkKey::JitterDown),
        (KeyCode::Digit0, LinkKey::Perfect),
        (KeyCode::Numpad0, LinkKey::Perfect),
        (KeyCode::KeyR, LinkKey::Reset),
    ];

    /// `link` after this key, with `start` the link the app started with.
    pub fn apply(self, link: Link, start: Link) -> Link {
        let mut l = link;
        match self {
            LinkKey::LatencyUp => l.latency_ms += 10.0,
            LinkKey::LatencyDown => l.latency_ms -= 10.0,
            LinkKey::LossUp => l.loss_pct += 1.0,
            LinkKey::LossDown => l.loss_pct -= 1.0,
            LinkKey::JitterUp => l.jitter_ms += 5.0,
            LinkKey::JitterDown => l.jitter_ms -= 5.0,
            LinkKey::Perfect => l = Link::PERFECT,
            LinkKey::Reset => l = start,
        }
        l.clamped()
    }
}

// ------------------------------------------------------------------ the network lab

/// One bot: a kcpnet client with its own UDP socket.
pub struct Bot {
    /// The client.
    pub client: Client,
    /// Messages it sent so far (its sequence number).
    pub tick: u32,
    /// When it sends next.
    pub next_send: Instant,
    /// Echoes it received.
    pub echoes: u64,
}

/// The bots, ticked once per frame by [`LabPlugin`].
#[derive(Resource, Default)]
pub struct Bots(pub Vec<Bot>);

/// The sample history and the inspector's state (sort order, selection, span).
#[derive(Resource)]
pub struct Net {
    /// Fed once per frame from the server.
    pub history: NetworkHistory,
    /// Drawn by the UI.
    pub inspector: Inspector,
    /// The history's time origin.
    pub start: Instant,
}

/// The settings the lab runs with.
#[derive(Resource, Debug, Clone)]
pub struct LabSettings {
    /// The link the app started with (the R key).
    pub start_link: Link,
    /// Bot messages per second.
    pub rate_hz: f64,
}

/// The network side of the example, without any window: the server (its resource is
/// inserted by the caller), the echo, the bots, the link and the history. Add it next to
/// [`KcpServerPlugin`].
pub struct LabPlugin {
    /// The settings.
    pub settings: LabSettings,
}

impl Plugin for LabPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.settings.clone())
            .insert_resource(self.settings.start_link)
            .insert_resource(KcpLinkConditions::symmetric(
                self.settings.start_link.conditions(),
            ))
            .init_resource::<Bots>()
            .insert_resource(Net {
                history: NetworkHistory::default(),
                inspector: Inspector::default(),
                start: Instant::now(),
            })
            .add_systems(
                Update,
                (
                    apply_link.run_if(resource_changed::<Link>),
                    echo,
                    tick_bots,
                    sample.run_if(resource_exists::<KcpServer>),
                ),
            );
    }
}

/// Every change of [`Link`] becomes the server conditioner's conditions both ways.
fn apply_link(link: Res<Link>, mut conditions: ResMut<KcpLinkConditions>) {
    *conditions = KcpLinkConditions::symmetric(link.conditions());
}

/// The server echoes every message back on its channel.
fn echo(mut events: MessageReader<ServerEvent>, mut server: ResMut<KcpServer>) {
    for event in events.read() {
        if let OwnedEvent::Data { id, channel, data } = &event.0 {
            // A full send queue or a connection that just closed: the echo is dropped.
            let _ = server.send(*id, data, *channel);
        }
    }
}

/// The message of bot `index` at its tick `tick`: an unreliable position, and every 10th
/// tick a reliable event. Sizes vary with both numbers.
pub fn bot_message(index: usize, tick: u32) -> (Channel, Vec<u8>) {
    let mix = (index as u32).wrapping_mul(2_654_435_761) ^ tick.wrapping_mul(40_503);
    if tick.is_multiple_of(10) {
        (Channel::Reliable, vec![b'E'; 100 + (mix % 1401) as usize])
    } else {
        (Channel::Unreliable, vec![b'P'; 40 + (mix % 61) as usize])
    }
}

fn tick_bots(mut bots: ResMut<Bots>, settings: Res<LabSettings>) {
    let now = Instant::now();
    let period = Duration::from_secs_f64(1.0 / settings.rate_hz);
    for (index, bot) in bots.0.iter_mut().enumerate() {
        bot.client.tick_incoming();
        while let Some(event) = bot.client.poll_event() {
            if let Event::Data { .. } = event {
                bot.echoes += 1;
            }
        }
        if bot.client.is_connected() && now >= bot.next_send {
            let (channel, message) = bot_message(index, bot.tick);
            // A full send queue under heavy loss: this message is skipped.
            let _ = bot.client.send(&message, channel);
            bot.tick = bot.tick.wrapping_add(1);
            // Skip missed sends rather than burst after a slow frame.
            bot.next_send = (bot.next_send + period).max(now);
        }
        bot.client.tick_outgoing();
    }
}

fn sample(server: Res<KcpServer>, mut net: ResMut<Net>) {
    let t = net.start.elapsed().as_secs_f64();
    net.history.sample_server(t, server.inner());
}

/// Binds the server on `127.0.0.1` (any port) and connects `bots` clients to it.
pub fn start_network(bots: usize) -> Result<(KcpServer, Bots), kcpnet::Error> {
    let server = KcpServer::bind(("127.0.0.1", 0), Config::default())?;
    let port = server.local_addr()?.port();
    let now = Instant::now();
    let mut list = Vec::with_capacity(bots);
    for _ in 0..bots {
        list.push(Bot {
            client: Client::connect(("127.0.0.1", port), Config::default())?,
            tick: 0,
            next_send: now,
            echoes: 0,
        });
    }
    Ok((server, Bots(list)))
}

/// The mean of `value` over the samples of live connections taken in `from..to` seconds.
pub fn window_mean(
    history: &NetworkHistory,
    from: f64,
    to: f64,
    value: impl Fn(&ConnectionSample) -> Option<f64>,
) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for (_, c) in history.connections().filter(|(_, c)| !c.is_closed()) {
        for v in c
            .samples
            .iter()
            .filter(|s| s.t >= from && s.t < to)
            .filter_map(&value)
        {
            sum += v;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

/// A sample's round trip in ms: the latest Ping/Pong if there was one, else KCP's smoothed
/// RTT (if measured).
pub fn sample_rtt(s: &ConnectionSample) -> Option<f64> {
    s.ping_rtt_ms
        .map(f64::from)
        .or((s.kcp_rtt_ms > 0.0).then_some(f64::from(s.kcp_rtt_ms)))
}

/// The loss of the bots' unreliable messages seen by the server, in percent.
pub fn sample_loss_in(s: &ConnectionSample) -> Option<f64> {
    s.unreliable_loss_in.map(|l| 100.0 * f64::from(l))
}

/// The mean of the latest KCP RTT over the history's live connections that have one.
pub fn mean_kcp_rtt(history: &NetworkHistory) -> Option<f64> {
    let rtts: Vec<f64> = history
        .connections()
        .filter(|(_, c)| !c.is_closed())
        .filter_map(|(_, c)| c.samples.latest())
        .filter(|s| s.kcp_rtt_ms > 0.0)
        .map(|s| f64::from(s.kcp_rtt_ms))
        .collect();
    (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64)
}

// ------------------------------------------------------------------ the window

/// Counts frames in which the inspector was drawn.
#[derive(Resource, Default)]
struct Drawn(u64);

fn setup_camera(mut commands: Commands) {
    commands.spawn(Camera2d);
}

fn keys(
    input: Res<ButtonInput<KeyCode>>,
    mut contexts: EguiContexts,
    mut link: ResMut<Link>,
    settings: Res<LabSettings>,
) {
    if let Ok(ctx) = contexts.ctx_mut() {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
    }
    for (key, action) in LinkKey::ALL {
        if input.just_pressed(key) {
            *link = action.apply(*link, settings.start_link);
        }
    }
}

fn ui(
    mut contexts: EguiContexts,
    mut link: ResMut<Link>,
    mut net: ResMut<Net>,
    bots: Res<Bots>,
    run: Option<Res<TimedRun>>,
    mut drawn: ResMut<Drawn>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    // The whole window, as a Ui for the panels (egui 0.36 panels draw into a Ui).
    let mut screen = egui::Ui::new(
        ctx.clone(),
        "screen".into(),
        egui::UiBuilder::new()
            .layer_id(egui::LayerId::background())
            .max_rect(ctx.viewport_rect()),
    );
    let mut edit = *link;
    egui::Panel::left("link")
        .resizable(false)
        .default_size(230.0)
        .show(&mut screen, |ui| {
            ui.heading("link");
            ui.label("server socket, both ways");
            ui.add(egui::Slider::new(&mut edit.loss_pct, 0.0..=90.0).text("loss %"));
            ui.add(egui::Slider::new(&mut edit.latency_ms, 0.0..=1000.0).text("latency ms"));
            ui.add(egui::Slider::new(&mut edit.jitter_ms, 0.0..=500.0).text("jitter ms"));
            ui.horizontal(|ui| {
                if ui.button("perfect").clicked() {
                    edit = Link::PERFECT;
                }
                if ui.button("bad wifi").clicked() {
                    edit = Link {
                        loss_pct: 8.0,
                        latency_ms: 40.0,
                        jitter_ms: 30.0,
                    };
                }
                if ui.button("mobile").clicked() {
                    edit = Link {
                        loss_pct: 3.0,
                        latency_ms: 120.0,
                        jitter_ms: 20.0,
                    };
                }
            });
            ui.separator();
            ui.label("keys:\nUp / Down: latency ±10 ms\nRight / Left: loss ±1 %\nPgUp / PgDn: jitter ±5 ms\n0: perfect link, R: reset");
            ui.separator();
            let connected = bots.0.iter().filter(|b| b.client.is_connected()).count();
            ui.label(format!("bots connected: {connected} / {}", bots.0.len()));
            let echoes: u64 = bots.0.iter().map(|b| b.echoes).sum();
            ui.label(format!("echoes received: {echoes}"));
            if let Some(rtt) = mean_kcp_rtt(&net.history) {
                ui.label(format!("mean KCP RTT: {rtt:.0} ms"));
            }
            if let Some(run) = run {
                ui.separator();
                ui.label(run.status());
            }
        });
    if edit != *link {
        *link = edit.clamped();
    }
    let net = &mut *net;
    egui::CentralPanel::default().show(&mut screen, |ui| {
        egui::ScrollArea::vertical().show(ui, |ui| net.inspector.show(ui, &net.history));
    });
    drawn.0 += 1;
    Ok(())
}

// ------------------------------------------------------------------ timed runs

/// The state of a timed run: the scripted step, the RTT before and after it, the end.
#[derive(Resource, Debug)]
struct TimedRun {
    seconds: Option<f64>,
    frames: Option<u64>,
    step_latency_ms: f64,
    step_loss_pct: f64,
    screenshot: Option<PathBuf>,
    start: Instant,
    frame: u64,
    /// When the step came, on the history's clock (seconds).
    stepped: Option<f64>,
    phase: Phase,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Running,
    /// A screenshot was asked for at this frame.
    Shooting(u64),
    /// The verdict was given.
    Done,
}

/// What the screenshot observer found: distinct colours in the saved image, or an error.
#[derive(Resource, Default, Debug)]
struct Shot(Option<Result<usize, String>>);

impl TimedRun {
    /// How far the run is, 0..=1.
    fn progress(&self) -> f64 {
        let by_time = self
            .seconds
            .map(|s| self.start.elapsed().as_secs_f64() / s)
            .unwrap_or(0.0);
        let by_frames = self
            .frames
            .map(|n| self.frame as f64 / n as f64)
            .unwrap_or(0.0);
        by_time.max(by_frames).min(1.0)
    }

    fn status(&self) -> String {
        let step = match self.stepped {
            None => "step pending".to_string(),
            Some(t) => format!(
                "stepped +{} ms, +{} % at {t:.1} s",
                self.step_latency_ms, self.step_loss_pct
            ),
        };
        format!("timed run: {:.0} %, {step}", 100.0 * self.progress())
    }
}

#[allow(clippy::too_many_arguments)]
fn timed_run(
    mut commands: Commands,
    mut run: ResMut<TimedRun>,
    mut link: ResMut<Link>,
    net: Res<Net>,
    bots: Res<Bots>,
    server: Res<KcpServer>,
    drawn: Res<Drawn>,
    shot: Res<Shot>,
    mut exit: MessageWriter<AppExit>,
) {
    run.frame += 1;
    let progress = run.progress();
    if run.stepped.is_none() && progress >= 0.5 {
        let t = net.start.elapsed().as_secs_f64();
        run.stepped = Some(t);
        link.latency_ms += run.step_latency_ms;
        link.loss_pct += run.step_loss_pct;
        *link = link.clamped();
        println!(
            "t={t:.1}s: the step: latency +{} ms, loss +{} % (now {} ms, {} % each way)",
            run.step_latency_ms, run.step_loss_pct, link.latency_ms, link.loss_pct
        );
    }
    match run.phase.clone() {
        Phase::Running if progress >= 1.0 => match run.screenshot.clone() {
            Some(path) => {
                commands
                    .spawn(Screenshot::primary_window())
                    .observe(save_to_disk(path))
                    .observe(check_screenshot);
                run.phase = Phase::Shooting(run.frame);
            }
            None => run.phase = Phase::Done,
        },
        // The image arrives a few frames later; give up after 300 frames.
        Phase::Shooting(at) if shot.0.is_some() || run.frame > at + 300 => {
            run.phase = Phase::Done;
        }
        _ => {}
    }
    if run.phase != Phase::Done {
        return;
    }
    let verdict = verdict(&run, &net.history, &bots, &server, drawn.0, &shot);
    match verdict {
        Ok(summary) => {
            println!("VERDICT: PASS — {summary}");
            exit.write(AppExit::Success);
        }
        Err(why) => {
            println!("VERDICT: FAIL — {why}");
            exit.write(AppExit::from_code(1));
        }
    }
    // Only once.
    run.phase = Phase::Running;
    run.seconds = Some(f64::INFINITY);
    run.frames = None;
}

/// Counts the distinct colours of the captured image (a blank window has one or two).
fn check_screenshot(captured: On<ScreenshotCaptured>, mut shot: ResMut<Shot>) {
    let result = match captured.image.clone().try_into_dynamic() {
        Ok(image) => {
            let rgb = image.to_rgb8();
            let mut colours: Vec<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
            colours.sort_unstable();
            colours.dedup();
            Ok(colours.len())
        }
        Err(e) => Err(format!("cannot read the screenshot: {e}")),
    };
    shot.0 = Some(result);
}

fn verdict(
    run: &TimedRun,
    history: &NetworkHistory,
    bots: &Bots,
    server: &KcpServer,
    drawn: u64,
    shot: &Shot,
) -> Result<String, String> {
    let n = bots.0.len();
    let connected = bots.0.iter().filter(|b| b.client.is_connected()).count();
    if connected != n || server.connection_count() != n {
        return Err(format!(
            "{connected} of {n} bots connected, {} connections on the server",
            server.connection_count()
        ));
    }
    if let Some((i, _)) = bots.0.iter().enumerate().find(|(_, b)| b.echoes == 0) {
        return Err(format!("bot {i} received no echo"));
    }
    let sampled = history
        .connections()
        .filter(|(_, c)| !c.is_closed() && c.samples.len() >= 2)
        .count();
    if sampled < n || history.endpoint().len() < 2 {
        return Err(format!(
            "the history has samples of {sampled} of {n} connections and {} endpoint samples",
            history.endpoint().len()
        ));
    }
    if drawn < 2 {
        return Err(format!("the inspector was drawn in {drawn} frames"));
    }
    let step = run.stepped.ok_or("the step never came")?;
    let end = history.now().unwrap_or(step);
    let before = (step - 3.0_f64.min(step / 2.0), step);
    let after = (end - 0.4 * (end - step), end + 1.0);
    let fps = run.frame as f64 / run.start.elapsed().as_secs_f64();
    let mean = |(from, to): (f64, f64), f: fn(&ConnectionSample) -> Option<f64>| {
        window_mean(history, from, to, f)
    };
    let (Some(rtt_b), Some(rtt_a)) = (mean(before, sample_rtt), mean(after, sample_rtt)) else {
        return Err("no RTT samples before or after the step".to_string());
    };
    let (Some(loss_b), Some(loss_a)) = (mean(before, sample_loss_in), mean(after, sample_loss_in))
    else {
        return Err("no loss samples before or after the step".to_string());
    };
    let reacted = format!(
        "RTT {rtt_b:.0} -> {rtt_a:.0} ms after +{} ms one way, unreliable loss in \
         {loss_b:.1} -> {loss_a:.1} % after +{} %, {fps:.0} frames/s",
        run.step_latency_ms, run.step_loss_pct
    );
    // The step adds 2 x step_latency of round trip and ~step_loss of one-way loss: the
    // graphs must show at least half of each.
    if rtt_a < rtt_b + run.step_latency_ms || loss_a < loss_b + run.step_loss_pct / 2.0 {
        return Err(format!("the graphs did not follow the step: {reacted}"));
    }
    let mut summary = format!(
        "{n} bots connected, {} echoes, inspector drawn {drawn} times, {} samples; {reacted}",
        bots.0.iter().map(|b| b.echoes).sum::<u64>(),
        history.sample_count(),
    );
    if let Some(path) = &run.screenshot {
        match &shot.0 {
            None => return Err("the screenshot never arrived".to_string()),
            Some(Err(e)) => return Err(e.clone()),
            Some(Ok(colours)) if *colours < 16 => {
                return Err(format!("the screenshot is blank ({colours} colours)"));
            }
            Some(Ok(colours)) => {
                summary += &format!("; screenshot {} ({colours} colours)", path.display())
            }
        }
    }
    Ok(summary)
}

// ------------------------------------------------------------------ main

fn main() -> AppExit {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(ArgError::Help) => {
            print!("{HELP}");
            return AppExit::Success;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return AppExit::from_code(2);
        }
    };
    let (server, bots) = match start_network(options.bots) {
        Ok(network) => network,
        Err(e) => {
            eprintln!("error: cannot open the sockets: {e}");
            return AppExit::from_code(1);
        }
    };
    println!(
        "server on {}, {} bots; link: loss {} %, latency {} ms, jitter {} ms each way",
        server
            .local_addr()
            .map_or("?".to_string(), |a| a.to_string()),
        options.bots,
        options.link.loss_pct,
        options.link.latency_ms,
        options.link.jitter_ms
    );
    let mut app = App::new();
    app.add_plugins(DefaultPlugins.set(WindowPlugin {
        primary_window: Some(Window {
            title: "kcpnet inspector".into(),
            resolution: WindowResolution::new(1280, 800),
            present_mode: PresentMode::AutoVsync,
            ..default()
        }),
        ..default()
    }))
    // The network is ticked once per frame: keep updating when the window loses focus.
    .insert_resource(WinitSettings {
        focused_mode: UpdateMode::Continuous,
        unfocused_mode: UpdateMode::Continuous,
    })
    .add_plugins(EguiPlugin::default())
    .add_plugins((
        KcpServerPlugin,
        LabPlugin {
            settings: LabSettings {
                start_link: options.link,
                rate_hz: options.rate_hz,
            },
        },
    ))
    .insert_resource(server)
    .insert_resource(bots)
    .init_resource::<Drawn>()
    .init_resource::<Shot>()
    .add_systems(Startup, setup_camera)
    .add_systems(Update, keys)
    .add_systems(EguiPrimaryContextPass, ui);
    if options.timed() {
        app.insert_resource(TimedRun {
            seconds: options.seconds,
            frames: options.frames,
            step_latency_ms: options.step_latency_ms,
            step_loss_pct: options.step_loss_pct,
            screenshot: options.screenshot.clone(),
            start: Instant::now(),
            frame: 0,
            stepped: None,
            phase: Phase::Running,
        })
        .add_systems(Update, timed_run.after(keys));
    }
    app.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Options, ArgError> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn arguments_parse_and_bad_ones_are_typed_errors() {
        let o = args("--bots 8 --loss 12.5 --latency 50 --seconds 10 --screenshot a.png").unwrap();
        assert_eq!(o.bots, 8);
        assert_eq!(o.link.loss_pct, 12.5);
        assert_eq!(o.link.latency_ms, 50.0);
        assert_eq!(o.seconds, Some(10.0));
        assert!(o.timed());
        assert_eq!(args("").unwrap(), Options::default());
        assert!(!Options::default().timed());
        assert_eq!(args("--bots"), Err(ArgError::MissingValue("--bots".into())));
        assert!(matches!(args("--bots 0"), Err(ArgError::BadValue { .. })));
        assert!(matches!(args("--loss 95"), Err(ArgError::BadValue { .. })));
        assert!(matches!(args("--frames x"), Err(ArgError::BadValue { .. })));
        assert_eq!(args("--fast"), Err(ArgError::Unknown("--fast".into())));
        assert_eq!(
            args("--screenshot a.png"),
            Err(ArgError::ScreenshotNeedsTimedRun)
        );
        assert_eq!(args("-h"), Err(ArgError::Help));
    }

    #[test]
    fn keys_change_the_link_within_its_ranges() {
        let start = Options::default().link;
        let mut l = start;
        for _ in 0..3 {
            l = LinkKey::LatencyUp.apply(l, start);
        }
        assert_eq!(l.latency_ms, 60.0);
        l = LinkKey::LossUp.apply(l, start);
        assert_eq!(l.loss_pct, 6.0);
        for _ in 0..10 {
            l = LinkKey::LossDown.apply(l, start);
        }
        assert_eq!(l.loss_pct, 0.0, "clamped at 0");
        l = LinkKey::JitterUp.apply(l, start);
        assert_eq!(l.jitter_ms, 5.0);
        assert_eq!(LinkKey::Perfect.apply(l, start), Link::PERFECT);
        assert_eq!(LinkKey::Reset.apply(Link::PERFECT, start), start);
        let c = l.conditions();
        assert_eq!(c.loss, 0.0);
        assert_eq!(c.latency, Duration::from_millis(60));
        assert_eq!(c.jitter, Duration::from_millis(5));
        // Out-of-range values never make invalid conditions.
        let wild = Link {
            loss_pct: 500.0,
            latency_ms: -3.0,
            jitter_ms: 1e9,
        };
        assert!(wild.conditions().validate().is_ok());
        assert_eq!(wild.conditions().loss, 0.9);
    }

    #[test]
    fn bot_messages_vary_and_every_tenth_is_reliable() {
        let (c0, m0) = bot_message(0, 0);
        let (c1, m1) = bot_message(0, 1);
        assert_eq!(c0, Channel::Reliable);
        assert_eq!(c1, Channel::Unreliable);
        assert!((100..=1500).contains(&m0.len()));
        assert!((40..=100).contains(&m1.len()));
        let sizes: std::collections::HashSet<usize> =
            (1..40).map(|t| bot_message(3, t).1.len()).collect();
        assert!(sizes.len() > 5, "sizes vary: {sizes:?}");
    }

    /// The lab without a window (MinimalPlugins), over loopback UDP, for a bounded number of
    /// frames: the bots connect and get echoes, the history fills, and a change of [`Link`]
    /// reaches the server's conditioner (it starts dropping datagrams).
    #[test]
    fn lab_connects_bots_samples_them_and_applies_link_changes() {
        let (server, bots) = start_network(3).unwrap();
        let mut app = App::new();
        app.add_plugins((MinimalPlugins, KcpServerPlugin))
            .add_plugins(LabPlugin {
                settings: LabSettings {
                    start_link: Link::PERFECT,
                    rate_hz: 100.0,
                },
            })
            .insert_resource(server)
            .insert_resource(bots);
        let all_echoed = |app: &App| {
            let bots = app.world().resource::<Bots>();
            bots.0
                .iter()
                .all(|b| b.client.is_connected() && b.echoes > 0)
        };
        for _ in 0..2000 {
            app.update();
            if all_echoed(&app) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(all_echoed(&app), "every bot connected and got an echo");
        let dropped = |app: &App| {
            let server = app.world().resource::<KcpServer>();
            let stats = server.conditioner_stats().unwrap();
            stats.dropped
        };
        assert_eq!(dropped(&app), 0, "a perfect link drops nothing");
        app.world_mut().resource_mut::<Link>().loss_pct = 50.0;
        for _ in 0..2000 {
            app.update();
            if dropped(&app) > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(dropped(&app) > 0, "the new loss reached the conditioner");
        // Sampling is at most every 250 ms; run long enough for a few samples.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(800) {
            app.update();
            std::thread::sleep(Duration::from_millis(5));
        }
        let net = app.world().resource::<Net>();
        let live = net
            .history
            .connections()
            .filter(|(_, c)| !c.is_closed() && !c.samples.is_empty())
            .count();
        assert_eq!(live, 3, "every connection has samples");
        assert!(net.history.endpoint().len() >= 2);
    }
}
