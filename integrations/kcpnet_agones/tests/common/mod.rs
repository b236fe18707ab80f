//! Shared by the integration tests: a real Agones SDK server (dummy-agones) on loopback,
//! what it logs, and kcpnet clients.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use dummy_agones::sdk::GameServer;
use dummy_agones::AgonesServer;
use kcpnet::{Client, Config, DisconnectReason, Event};

/// What dummy-agones logged (through `tracing`), with when it was seen: its only record of
/// the health pings and of `Shutdown()` calls.
static SEEN: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());
/// The tests of one binary that use `SEEN` run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Capture;

struct MessageVisitor<'a>(&'a mut String);

impl tracing::field::Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if !event.metadata().target().starts_with("dummy_agones") {
            return;
        }
        let mut message = String::new();
        event.record(&mut MessageVisitor(&mut message));
        SEEN.lock().unwrap().push((Instant::now(), message));
    }
}

fn install_capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    });
}

/// A dummy-agones SDK server on 127.0.0.1 (any free port), on its own tokio runtime.
pub struct Dummy {
    pub server: AgonesServer,
    pub port: u16,
    _runtime: tokio::runtime::Runtime,
    _serial: MutexGuard<'static, ()>,
}

impl Dummy {
    pub fn start() -> Dummy {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        install_capture();
        SEEN.lock().unwrap().clear();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = AgonesServer::default();
        let addr = runtime
            .block_on(server.start_with_port(0))
            .expect("dummy-agones binds");
        Dummy {
            server,
            port: addr.port(),
            _runtime: runtime,
            _serial: serial,
        }
    }

    pub fn game_server(&self) -> GameServer {
        self.server.game_server()
    }

    pub fn state(&self) -> String {
        self.game_server()
            .status
            .map(|s| s.state)
            .unwrap_or_default()
    }

    pub fn label(&self, key: &str) -> Option<String> {
        self.game_server()
            .object_meta
            .and_then(|m| m.labels.get(key).cloned())
    }

    pub fn annotation(&self, key: &str) -> Option<String> {
        self.game_server()
            .object_meta
            .and_then(|m| m.annotations.get(key).cloned())
    }

    /// Marks the GameServer for shutdown, as Agones does on a fleet scale-down or a delete.
    pub fn request_shutdown(&self) {
        let mut gs = self.game_server();
        let mut status = gs.status.take().unwrap_or_default();
        status.state = "Shutdown".to_owned();
        gs.status = Some(status);
        self.server.set_game_server(gs);
    }

    /// When dummy-agones logged `message`, each time.
    pub fn seen(&self, message: &str) -> Vec<Instant> {
        SEEN.lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m == message)
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn health_pings(&self) -> usize {
        self.seen("Got health message").len()
    }
}

/// Runs `step` (which does some work and says whether the wait is over) until it returns
/// true, at most `max`; whether it did.
pub fn until(max: Duration, mut step: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < max {
        if step() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// A kcpnet client and what it received.
pub struct Player {
    pub client: Client,
    pub connected: bool,
    /// The index (first 4 bytes, u32 LE) of every reliable message of 4 bytes or more.
    pub reliable: Vec<u32>,
    pub other: usize,
    pub reason: Option<DisconnectReason>,
    pub ended_at: Option<Instant>,
}

impl Player {
    pub fn connect(addr: std::net::SocketAddr) -> Player {
        Player {
            client: Client::connect(addr, Config::default()).expect("client socket"),
            connected: false,
            reliable: Vec::new(),
            other: 0,
            reason: None,
            ended_at: None,
        }
    }

    pub fn tick(&mut self) {
        self.client.tick_incoming();
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Connected { .. } => self.connected = true,
                Event::Data { channel, data, .. } => {
                    if channel == kcpnet::Channel::Reliable && data.len() >= 4 {
                        self.reliable
                            .push(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
                    } else {
                        self.other += 1;
                    }
                }
                Event::Disconnected { reason, .. } if self.reason.is_none() => {
                    self.reason = Some(reason);
                    self.ended_at = Some(Instant::now());
                }
                _ => {}
            }
        }
        self.client.tick_outgoing();
    }

    /// Whether every reliable message 0..n arrived exactly once, in order.
    pub fn got_all(&self, n: u32) -> bool {
        self.reliable.len() == n as usize && self.reliable.iter().copied().eq(0..n)
    }
}

/// The drain reason the tests expect: `App { code, message }`.
pub fn is_reason(reason: &Option<DisconnectReason>, code: u32, message: &str) -> bool {
    matches!(reason, Some(DisconnectReason::App { code: c, message: m }) if *c == code && m.as_str() == message)
}
