//! The Agones SDK on its own thread, reached from the game loop through a synchronous handle.
//!
//! The official `agones` crate is async (tonic over tokio). A game loop must never wait on
//! it, so [`AgonesHandle::connect`] starts one thread (`kcpnet-agones-sdk`) with a
//! single-threaded tokio runtime that owns the `agones::Sdk`. The loop sends it commands
//! over an unbounded channel (each call returns at once) and reads what it reports with
//! [`AgonesHandle::poll_event`]. Commands are carried out in the order they were given, so a
//! `shutdown()` issued after the last player update reaches the SDK after it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tokio_mpsc;

/// The Agones health period Agones uses when the GameServer does not set one
/// (`spec.health.periodSeconds`, 5 s).
pub const DEFAULT_HEALTH_PERIOD: Duration = Duration::from_secs(5);

/// How long dropping an [`AgonesHandle`] waits for the SDK thread to finish its commands.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// How the handle connects to the SDK server (the Agones sidecar) and paces its calls.
#[derive(Debug, Clone)]
pub struct AgonesConfig {
    /// The SDK server's gRPC port on localhost; `None` takes `AGONES_SDK_GRPC_PORT` (which
    /// Agones sets in every game server pod), else 9357.
    pub port: Option<u16>,
    /// How long [`AgonesHandle::connect`] waits for the SDK server (it retries every 100 ms
    /// until then). The `agones` crate itself gives up after 30 s.
    pub connect_timeout: Duration,
    /// How often [`AgonesHandle::frame`] sends a health ping. `None` derives it from the
    /// GameServer: half of `spec.health.periodSeconds` ([`DEFAULT_HEALTH_PERIOD`], 5 s, when
    /// unset, so 2.5 s), so that every period Agones checks contains at least one ping even
    /// when a frame is late.
    pub health_interval: Option<Duration>,
    /// The Agones *List* (Counters and Lists, beta) the connected players are tracked in: one
    /// value per connection. `None` tracks no list. The list must be declared in the
    /// GameServer's `spec.lists` with a capacity (see `deploy/`).
    pub player_list: Option<String>,
}

impl Default for AgonesConfig {
    fn default() -> Self {
        AgonesConfig {
            port: None,
            connect_timeout: Duration::from_secs(30),
            health_interval: None,
            player_list: Some("players".to_owned()),
        }
    }
}

/// Something the SDK thread reports to the game loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgonesEvent {
    /// The GameServer's `status.state` changed (from `WatchGameServer`): `Ready`,
    /// `Allocated`, `Shutdown`, …
    StateChanged {
        /// The new state, as Agones spells it.
        state: String,
    },
    /// The GameServer was marked for shutdown (its state became `Shutdown` without this
    /// process asking): drain and exit. Reported once.
    ShutdownRequested,
    /// An SDK call failed; the loop goes on (the call is not retried).
    CallFailed {
        /// Which call (`ready`, `set_label`, `append_list_value`, …).
        call: &'static str,
        /// The error as the SDK reported it.
        error: String,
    },
}

/// Why the handle could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgonesError {
    /// The SDK server could not be reached within [`AgonesConfig::connect_timeout`].
    Connect(String),
    /// The SDK call failed.
    Rpc(String),
    /// No answer within the time given.
    Timeout,
    /// The SDK thread has stopped (its runtime failed to start or it panicked).
    Stopped,
}

impl fmt::Display for AgonesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgonesError::Connect(e) => write!(f, "cannot reach the Agones SDK server: {e}"),
            AgonesError::Rpc(e) => write!(f, "Agones SDK call failed: {e}"),
            AgonesError::Timeout => f.write_str("the Agones SDK did not answer in time"),
            AgonesError::Stopped => f.write_str("the Agones SDK thread has stopped"),
        }
    }
}

impl std::error::Error for AgonesError {}

/// What the GameServer looked like when the handle connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GameServerInfo {
    /// `metadata.name` (empty outside a cluster).
    pub name: String,
    /// `status.state`.
    pub state: String,
    /// `spec.health.periodSeconds`, if set.
    pub health_period_seconds: Option<i32>,
}

enum Command {
    Ready,
    Health,
    Label(String, String),
    Annotation(String, String),
    PlayerConnect(String),
    PlayerDisconnect(String),
    Shutdown(std_mpsc::Sender<Result<(), AgonesError>>),
}

/// The game loop's side of the Agones SDK: every method returns at once (except
/// [`AgonesHandle::connect`] and [`AgonesHandle::shutdown`], which are meant for start-up and
/// the end of a drain).
///
/// ```no_run
/// use std::time::Instant;
/// use kcpnet_agones::{AgonesConfig, AgonesHandle};
///
/// let mut agones = AgonesHandle::connect(AgonesConfig::default())?;
/// agones.ready(); // once the kcpnet Server is bound
/// loop {
///     // … tick the server, handle events, tick_outgoing …
///     agones.frame(Instant::now()); // a health ping when one is due
///     # break;
/// }
/// # Ok::<(), kcpnet_agones::AgonesError>(())
/// ```
pub struct AgonesHandle {
    commands: tokio_mpsc::UnboundedSender<Command>,
    events: std_mpsc::Receiver<AgonesEvent>,
    health: HealthPacer,
    info: GameServerInfo,
    thread: Option<JoinHandle<()>>,
    finished: std_mpsc::Receiver<()>,
}

impl fmt::Debug for AgonesHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgonesHandle")
            .field("health", &self.health)
            .field("info", &self.info)
            .finish()
    }
}

/// Paces health pings: one at the first frame, then one per interval, each from a frame.
///
/// Nothing here runs by itself: a loop that stops calling [`HealthPacer::due`] stops the
/// pings, which is the point (Agones then marks the GameServer Unhealthy and replaces it).
#[derive(Debug, Clone)]
pub struct HealthPacer {
    interval: Duration,
    last: Option<Instant>,
    sent: u64,
}

impl HealthPacer {
    /// A pacer that allows one ping per `interval`.
    pub fn new(interval: Duration) -> HealthPacer {
        HealthPacer {
            interval,
            last: None,
            sent: 0,
        }
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Pings allowed so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether a ping is due at `now` (and, if so, counts it as sent).
    pub fn due(&mut self, now: Instant) -> bool {
        let due = match self.last {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.interval,
        };
        if due {
            self.last = Some(now);
            self.sent += 1;
        }
        due
    }
}

/// The health interval for a GameServer whose `spec.health.periodSeconds` is `period`: half
/// the period (the default period, 5 s, when unset or not positive).
pub fn health_interval_for(period_seconds: Option<i32>) -> Duration {
    let period = match period_seconds {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => DEFAULT_HEALTH_PERIOD,
    };
    period / 2
}

impl AgonesHandle {
    /// Starts the SDK thread and waits until the SDK server answers (at most
    /// `config.connect_timeout`), then starts watching the GameServer. Call it before the
    /// game loop starts.
    pub fn connect(config: AgonesConfig) -> Result<AgonesHandle, AgonesError> {
        let (command_tx, command_rx) = tokio_mpsc::unbounded_channel();
        let (event_tx, event_rx) = std_mpsc::channel();
        let (connected_tx, connected_rx) = std_mpsc::channel();
        let (finished_tx, finished_rx) = std_mpsc::channel();
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("kcpnet-agones-sdk".to_owned())
            .spawn(move || {
                sdk_thread(thread_config, command_rx, event_tx, connected_tx);
                let _ = finished_tx.send(());
            })
            .map_err(|e| AgonesError::Connect(e.to_string()))?;
        let wait = config.connect_timeout + Duration::from_secs(1);
        let info = match connected_rx.recv_timeout(wait) {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(e),
            Err(std_mpsc::RecvTimeoutError::Timeout) => return Err(AgonesError::Timeout),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return Err(AgonesError::Stopped),
        };
        let health_interval = config
            .health_interval
            .unwrap_or_else(|| health_interval_for(info.health_period_seconds));
        Ok(AgonesHandle {
            commands: command_tx,
            events: event_rx,
            health: HealthPacer::new(health_interval),
            info,
            thread: Some(thread),
            finished: finished_rx,
        })
    }

    /// The GameServer as it was when the handle connected.
    pub fn info(&self) -> &GameServerInfo {
        &self.info
    }

    /// The interval between health pings (see [`AgonesConfig::health_interval`]).
    pub fn health_interval(&self) -> Duration {
        self.health.interval()
    }

    /// Health pings handed to the SDK thread so far.
    pub fn pings_sent(&self) -> u64 {
        self.health.sent()
    }

    fn command(&self, command: Command) {
        // A stopped SDK thread is reported by `shutdown` and `poll_event`; the loop goes on.
        let _ = self.commands.send(command);
    }

    /// Marks the GameServer Ready (call it once the kcpnet `Server` is bound).
    pub fn ready(&self) {
        self.command(Command::Ready);
    }

    /// Sends a health ping if the last one is at least [`AgonesHandle::health_interval`] old
    /// (or none was sent yet). Call it once per frame, **after** the frame's work: only a loop
    /// that makes progress keeps the GameServer healthy. Returns whether a ping was sent.
    pub fn frame(&mut self, now: Instant) -> bool {
        let due = self.health.due(now);
        if due {
            self.command(Command::Health);
        }
        due
    }

    /// Sets a label on the GameServer (Agones prefixes the key with `agones.dev/sdk-`).
    /// Label values must be valid Kubernetes label values (63 characters at most).
    pub fn set_label(&self, key: &str, value: &str) {
        self.command(Command::Label(key.to_owned(), value.to_owned()));
    }

    /// Sets an annotation on the GameServer (the key is prefixed like a label's).
    pub fn set_annotation(&self, key: &str, value: &str) {
        self.command(Command::Annotation(key.to_owned(), value.to_owned()));
    }

    /// Adds a player to the configured player list ([`AgonesConfig::player_list`]).
    pub fn player_connected(&self, player: &str) {
        self.command(Command::PlayerConnect(player.to_owned()));
    }

    /// Removes a player from the configured player list.
    pub fn player_disconnected(&self, player: &str) {
        self.command(Command::PlayerDisconnect(player.to_owned()));
    }

    /// The next thing the SDK thread reported, if any.
    pub fn poll_event(&self) -> Option<AgonesEvent> {
        self.events.try_recv().ok()
    }

    /// Tells Agones the server is shutting down (`Shutdown()`), after every command given
    /// before, and waits for the answer (at most `timeout`). Call it last, after the drain.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), AgonesError> {
        let (tx, rx) = std_mpsc::channel();
        self.commands
            .send(Command::Shutdown(tx))
            .map_err(|_| AgonesError::Stopped)?;
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(AgonesError::Timeout),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(AgonesError::Stopped),
        }
    }
}

impl Drop for AgonesHandle {
    fn drop(&mut self) {
        // Closing the command channel ends the SDK thread's loop; pending commands are
        // carried out first. An SDK server that does not answer must not hang the process:
        // after 2 s the thread is left to end with it.
        let (closed, _) = tokio_mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(thread) = self.thread.take() {
            if self.finished.recv_timeout(DROP_WAIT).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

fn sdk_thread(
    config: AgonesConfig,
    mut commands: tokio_mpsc::UnboundedReceiver<Command>,
    events: std_mpsc::Sender<AgonesEvent>,
    connected: std_mpsc::Sender<Result<GameServerInfo, AgonesError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = connected.send(Err(AgonesError::Connect(e.to_string())));
            return;
        }
    };
    runtime.block_on(async move {
        let sdk =
            tokio::time::timeout(config.connect_timeout, agones::Sdk::new(config.port, None)).await;
        let mut sdk = match sdk {
            Ok(Ok(sdk)) => sdk,
            Ok(Err(e)) => {
                let _ = connected.send(Err(AgonesError::Connect(e.to_string())));
                return;
            }
            Err(_) => {
                let _ = connected.send(Err(AgonesError::Connect(format!(
                    "no answer within {:?}",
                    config.connect_timeout
                ))));
                return;
            }
        };
        let info = match sdk.get_gameserver().await {
            Ok(gs) => GameServerInfo {
                name: gs
                    .object_meta
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                state: gs
                    .status
                    .as_ref()
                    .map(|s| s.state.clone())
                    .unwrap_or_default(),
                health_period_seconds: gs
                    .spec
                    .as_ref()
                    .and_then(|s| s.health.as_ref())
                    .map(|h| h.period_seconds),
            },
            Err(e) => {
                let _ = connected.send(Err(AgonesError::Connect(e.to_string())));
                return;
            }
        };

        // Watch the GameServer: state changes, and a shutdown nobody here asked for.
        let mut watch_sdk = sdk.clone();
        let watch_events = events.clone();
        // The watch is opened again (after 1 s) whenever it fails or ends, e.g. when the
        // sidecar restarts; it ends with the runtime.
        let watcher = tokio::spawn(async move {
            let mut last_state: Option<String> = None;
            let mut shutdown_reported = false;
            loop {
                match watch_sdk.watch_gameserver().await {
                    Ok(mut stream) => {
                        while let Ok(Some(gs)) = stream.message().await {
                            let state = gs.status.map(|s| s.state).unwrap_or_default();
                            if last_state.as_deref() == Some(state.as_str()) {
                                continue;
                            }
                            last_state = Some(state.clone());
                            if state == "Shutdown" && !shutdown_reported {
                                shutdown_reported = true;
                                let _ = watch_events.send(AgonesEvent::ShutdownRequested);
                            }
                            if watch_events
                                .send(AgonesEvent::StateChanged { state })
                                .is_err()
                            {
                                return; // the handle is gone
                            }
                        }
                    }
                    Err(e) => {
                        let event = AgonesEvent::CallFailed {
                            call: "watch_gameserver",
                            error: e.to_string(),
                        };
                        if watch_events.send(event).is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let _ = connected.send(Ok(info));

        let mut health = sdk.health_check();
        let mut beta = sdk.beta().clone();
        let list = config.player_list.clone();
        // Report each kind of failure once per 100 calls at most, so a missing service does
        // not flood the loop.
        let mut failures: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut report = |call: &'static str, error: String| {
            let n = failures.entry(call).or_insert(0);
            if n.is_multiple_of(100) {
                let _ = events.send(AgonesEvent::CallFailed { call, error });
            }
            *n += 1;
        };
        while let Some(command) = commands.recv().await {
            match command {
                Command::Ready => {
                    if let Err(e) = sdk.ready().await {
                        report("ready", e.to_string());
                    }
                }
                Command::Health => {
                    // The SDK's health stream has room for 10 pings; a full stream means
                    // the sidecar is not reading them, and a dropped ping changes nothing.
                    // A closed one (the stream's RPC ended) is opened again for the next
                    // ping.
                    if let Err(tokio_mpsc::error::TrySendError::Closed(())) = health.try_send(()) {
                        report("health", "the health stream closed; reopened".to_owned());
                        health = sdk.health_check();
                        let _ = health.try_send(());
                    }
                }
                Command::Label(k, v) => {
                    if let Err(e) = sdk.set_label(k, v).await {
                        report("set_label", e.to_string());
                    }
                }
                Command::Annotation(k, v) => {
                    if let Err(e) = sdk.set_annotation(k, v).await {
                        report("set_annotation", e.to_string());
                    }
                }
                Command::PlayerConnect(p) => {
                    if let Some(list) = &list {
                        if let Err(e) = beta.append_list_value(list, &p).await {
                            report("append_list_value", e.to_string());
                        }
                    }
                }
                Command::PlayerDisconnect(p) => {
                    if let Some(list) = &list {
                        if let Err(e) = beta.delete_list_value(list, &p).await {
                            report("delete_list_value", e.to_string());
                        }
                    }
                }
                Command::Shutdown(reply) => {
                    let result = sdk
                        .shutdown()
                        .await
                        .map_err(|e| AgonesError::Rpc(e.to_string()));
                    let _ = reply.send(result);
                }
            }
        }
        watcher.abort();
        drop(health);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_interval_is_half_the_period() {
        assert_eq!(health_interval_for(None), Duration::from_millis(2500));
        assert_eq!(health_interval_for(Some(0)), Duration::from_millis(2500));
        assert_eq!(health_interval_for(Some(-3)), Duration::from_millis(2500));
        assert_eq!(health_interval_for(Some(10)), Duration::from_secs(5));
        assert_eq!(health_interval_for(Some(1)), Duration::from_millis(500));
    }

    #[test]
    fn pacer_pings_once_per_interval_and_never_by_itself() {
        let t0 = Instant::now();
        let mut pacer = HealthPacer::new(Duration::from_millis(100));
        assert!(pacer.due(t0), "the first frame pings");
        // Frames every 16 ms for one second: a ping every 100 ms (at 0, 112, 224, …).
        let mut pings = 1;
        for frame in 1..=62u64 {
            if pacer.due(t0 + Duration::from_millis(16 * frame)) {
                pings += 1;
            }
        }
        assert_eq!(pings, 9);
        assert_eq!(pacer.sent(), 9);
        // A stall: no frame, no ping; the first frame after it pings once.
        let after = t0 + Duration::from_secs(10);
        assert!(pacer.due(after));
        assert!(!pacer.due(after + Duration::from_millis(99)));
        assert_eq!(pacer.sent(), 10);
    }
}
