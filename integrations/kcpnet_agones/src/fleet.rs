//! [`Fleet`]: everything a dedicated server does for its fleet manager, called from the game
//! loop: Ready, health pings, players, live figures, metrics, and the drain.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use kcpnet::{ConnectionId, Event, Server};

use crate::drain::{DrainSignal, DEFAULT_DRAIN_CODE, DEFAULT_DRAIN_MESSAGE};
use crate::export::{MetricsSnapshot, ServerMetrics};
use crate::sdk::{AgonesError, AgonesEvent, AgonesHandle};

/// The label with the number of connected players.
pub const LABEL_PLAYERS: &str = "kcpnet-players";
/// The label that says whether the server is draining (`true` / `false`).
pub const LABEL_DRAINING: &str = "kcpnet-draining";
/// The annotation with a line of live figures (players, RTT and loss quantiles, bytes).
pub const ANNOTATION_FIGURES: &str = "kcpnet-figures";

/// How a [`Fleet`] drains and how often it publishes.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The close code every client receives when the server drains.
    pub drain_code: u32,
    /// The close message every client receives (128 bytes at most).
    pub drain_message: String,
    /// How long the drain waits for connections to end (keep it below the pod's
    /// `terminationGracePeriodSeconds`).
    pub linger: Duration,
    /// How often metrics are recorded and the players label refreshed (when it changed).
    pub publish_interval: Duration,
    /// How often the figures annotation is refreshed (when it changed). Each refresh is a
    /// write to the Kubernetes API through the sidecar: keep it slow for large fleets.
    pub figures_interval: Duration,
    /// How long the drain waits for the SDK's `Shutdown()` to be answered.
    pub shutdown_timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            drain_code: DEFAULT_DRAIN_CODE,
            drain_message: DEFAULT_DRAIN_MESSAGE.to_owned(),
            linger: Duration::from_secs(10),
            publish_interval: Duration::from_secs(1),
            figures_interval: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a drain started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// SIGTERM or SIGINT (or [`DrainSignal::request`]).
    Signal,
    /// The GameServer was marked for shutdown in Agones.
    AgonesShutdown,
}

/// How a drain ended.
#[derive(Debug)]
pub struct DrainReport {
    /// Whether every connection ended within [`FleetConfig::linger`].
    pub clean: bool,
    /// Connections that ended during the drain.
    pub disconnected: usize,
    /// The SDK's `Shutdown()` result (`None` without Agones).
    pub agones_shutdown: Option<Result<(), AgonesError>>,
}

/// Why a drain could not start.
#[derive(Debug)]
pub enum FleetError {
    /// `begin_drain` refused the reason (too long for a close datagram).
    Drain(kcpnet::Error),
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetError::Drain(e) => write!(f, "cannot drain: {e}"),
        }
    }
}

impl std::error::Error for FleetError {}

/// The fleet side of a game loop. Each frame: hand every server event to
/// [`Fleet::observe`], then call [`Fleet::frame`]; when it returns a [`DrainCause`], call
/// [`Fleet::drain`] and exit.
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use kcpnet::{Config, Server};
/// use kcpnet_agones::{AgonesConfig, AgonesHandle, DrainSignal, Fleet, FleetConfig};
///
/// let mut server = Server::bind("0.0.0.0:7777", Config::default())?;
/// let agones = AgonesHandle::connect(AgonesConfig::default()).ok(); // None off-cluster
/// let mut fleet = Fleet::new(FleetConfig::default(), agones, DrainSignal::install()?);
/// fleet.ready();
/// let cause = loop {
///     server.tick_incoming();
///     let mut events = server.drain_events();
///     while let Some((event, _server)) = events.next() {
///         fleet.observe(&event);
///         // … the game …
///     }
///     drop(events);
///     server.tick_outgoing();
///     if let Some(cause) = fleet.frame(&server, Instant::now()) {
///         break cause;
///     }
///     server.wait(Duration::from_millis(16))?;
/// };
/// let report = fleet.drain(&mut server, |_event| {})?;
/// std::process::exit(if report.clean { 0 } else { 1 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Fleet {
    config: FleetConfig,
    agones: Option<AgonesHandle>,
    signal: DrainSignal,
    metrics: ServerMetrics,
    players: BTreeSet<ConnectionId>,
    last_publish: Option<Instant>,
    last_figures: Option<Instant>,
    published_players: Option<usize>,
    published_figures: String,
    snapshot: Option<MetricsSnapshot>,
    agones_shutdown_requested: bool,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("config", &self.config)
            .field("agones", &self.agones)
            .field("players", &self.players.len())
            .finish()
    }
}

impl Fleet {
    /// A fleet with an Agones handle (or `None`: SIGTERM and metrics only).
    pub fn new(config: FleetConfig, agones: Option<AgonesHandle>, signal: DrainSignal) -> Fleet {
        Fleet {
            config,
            agones,
            signal,
            metrics: ServerMetrics::new(),
            players: BTreeSet::new(),
            last_publish: None,
            last_figures: None,
            published_players: None,
            published_figures: String::new(),
            snapshot: None,
            agones_shutdown_requested: false,
        }
    }

    /// The Agones handle, if any.
    pub fn agones(&self) -> Option<&AgonesHandle> {
        self.agones.as_ref()
    }

    /// The drain signal.
    pub fn signal(&self) -> &DrainSignal {
        &self.signal
    }

    /// Players connected now (as reported by [`Fleet::observe`]).
    pub fn players(&self) -> usize {
        self.players.len()
    }

    /// The last metrics recording, if any.
    pub fn snapshot(&self) -> Option<&MetricsSnapshot> {
        self.snapshot.as_ref()
    }

    /// Marks the GameServer Ready and publishes the first figures. Call it once the server
    /// is bound.
    pub fn ready(&mut self) {
        if let Some(agones) = &self.agones {
            agones.set_label(LABEL_PLAYERS, "0");
            agones.set_label(LABEL_DRAINING, "false");
            agones.ready();
        }
        self.published_players = Some(0);
    }

    /// Tracks players from the server's events: `Connected` adds one (to the Agones player
    /// list too), `Disconnected` removes it. Other events are ignored.
    pub fn observe(&mut self, event: &Event<'_>) {
        match event {
            Event::Connected { id, addr } if self.players.insert(*id) => {
                log::info!("event=player_connected id={id} addr={addr}");
                if let Some(agones) = &self.agones {
                    agones.player_connected(&id.to_string());
                }
            }
            Event::Disconnected { id, reason } if self.players.remove(id) => {
                log::info!("event=player_disconnected id={id} reason=\"{reason}\"");
                if let Some(agones) = &self.agones {
                    agones.player_disconnected(&id.to_string());
                }
            }
            _ => {}
        }
    }

    /// Once per frame, after the frame's work: a health ping when due, the SDK's reports,
    /// metrics and figures every [`FleetConfig::publish_interval`]. Returns why the loop must
    /// drain now, if it must.
    pub fn frame(&mut self, server: &Server, now: Instant) -> Option<DrainCause> {
        if let Some(agones) = &mut self.agones {
            agones.frame(now);
            while let Some(event) = agones.poll_event() {
                match event {
                    AgonesEvent::ShutdownRequested => self.agones_shutdown_requested = true,
                    AgonesEvent::StateChanged { state } => {
                        log::info!("event=gameserver_state state={state}")
                    }
                    AgonesEvent::CallFailed { call, error } => {
                        log::warn!("event=agones_call_failed call={call} error=\"{error}\"")
                    }
                }
            }
        }
        let due = self
            .last_publish
            .is_none_or(|last| now.saturating_duration_since(last) >= self.config.publish_interval);
        if due {
            self.last_publish = Some(now);
            let figures_due = self.last_figures.is_none_or(|last| {
                now.saturating_duration_since(last) >= self.config.figures_interval
            });
            if figures_due {
                self.last_figures = Some(now);
            }
            self.publish(server, figures_due);
        }
        if self.signal.requested() {
            Some(DrainCause::Signal)
        } else if self.agones_shutdown_requested {
            Some(DrainCause::AgonesShutdown)
        } else {
            None
        }
    }

    /// Records metrics and, with Agones, refreshes the players label and (with `figures`)
    /// the figures annotation where they changed.
    pub fn publish(&mut self, server: &Server, figures: bool) {
        let snapshot = self.metrics.record(server);
        if let Some(agones) = &self.agones {
            let players = self.players.len();
            if self.published_players != Some(players) {
                agones.set_label(LABEL_PLAYERS, &players.to_string());
                self.published_players = Some(players);
            }
            if figures {
                let line = figures_line(players, &snapshot);
                if line != self.published_figures {
                    agones.set_annotation(ANNOTATION_FIGURES, &line);
                    self.published_figures = line;
                }
            }
        }
        self.snapshot = Some(snapshot);
    }

    /// Drains: `begin_drain` with the configured reason, linger until every connection
    /// ended (at most [`FleetConfig::linger`]), hand the events raised meanwhile to
    /// `on_event` (after [`Fleet::observe`]), publish the final figures, then call the SDK's
    /// `Shutdown()` (with Agones). The process should exit afterwards.
    pub fn drain(
        &mut self,
        server: &mut Server,
        mut on_event: impl FnMut(&Event<'_>),
    ) -> Result<DrainReport, FleetError> {
        let before = self.players.len();
        if !server.is_draining() {
            server
                .begin_drain(self.config.drain_code, &self.config.drain_message)
                .map_err(FleetError::Drain)?;
        }
        if let Some(agones) = &self.agones {
            agones.set_label(LABEL_DRAINING, "true");
        }
        log::info!(
            "event=drain_started players={before} code={} message=\"{}\"",
            self.config.drain_code,
            self.config.drain_message
        );
        let clean = server.linger(self.config.linger);
        while let Some(event) = server.poll_event() {
            self.observe(&event);
            on_event(&event);
        }
        self.publish(server, true);
        let disconnected = before.saturating_sub(self.players.len());
        log::info!("event=drain_done clean={clean} disconnected={disconnected}");
        let agones_shutdown = self.agones.as_ref().map(|agones| {
            let result = agones.shutdown(self.config.shutdown_timeout);
            match &result {
                Ok(()) => log::info!("event=agones_shutdown ok=true"),
                Err(e) => log::warn!("event=agones_shutdown ok=false error=\"{e}\""),
            }
            result
        });
        Ok(DrainReport {
            clean,
            disconnected,
            agones_shutdown,
        })
    }
}

/// The figures annotation's value: `players=N rtt_p50_ms=… rtt_p99_ms=… loss_p50=… loss_max=…
/// bytes_in=… bytes_out=…` (the quantiles only while someone is connected).
pub fn figures_line(players: usize, s: &MetricsSnapshot) -> String {
    let mut line = format!("players={players}");
    if s.rtt_ms.len() == 5 && s.loss.len() == 5 {
        line.push_str(&format!(
            " rtt_p50_ms={} rtt_p99_ms={} loss_p50={:.3} loss_max={:.3}",
            s.rtt_ms[1], s.rtt_ms[3], s.loss[1], s.loss[4]
        ));
    }
    line.push_str(&format!(
        " bytes_in={} bytes_out={}",
        s.stats.bytes_received, s.stats.bytes_sent
    ));
    line
}
