//! Run kcpnet servers in a fleet: the [Agones](https://agones.dev) SDK driven from the game
//! loop, a graceful drain on SIGTERM or on the GameServer's shutdown, and the server's
//! figures through the [`metrics`] facade.
//!
//! * [`AgonesHandle`] — the official `agones` SDK on its own thread with its own tokio
//!   runtime; the loop talks to it through channels and never blocks on it. `ready()`,
//!   health pings paced by [`AgonesHandle::frame`] (a stalled loop stops them), labels,
//!   annotations, the players list (Agones Counters and Lists), and a
//!   [`AgonesEvent::ShutdownRequested`] when the GameServer goes to `Shutdown`.
//! * [`DrainSignal`] and [`drain()`] — SIGTERM/SIGINT as a flag, and `begin_drain` + `linger`:
//!   works with any fleet manager, Agones or not.
//! * [`ServerMetrics`] — `EndpointStats` and a summary of every connection's
//!   `ConnectionQuality` as `metrics` counters and gauges; [`MetricsServer`] serves a
//!   `metrics-exporter-prometheus` recorder on `GET /metrics`.
//! * [`Fleet`] — the three together, as a game loop uses them; the
//!   `kcpnet-agones-server` binary is a complete dedicated echo server built on it.
//!
//! tokio and the gRPC stack are dependencies of this crate only: `cargo tree -p kcpnet` has
//! neither.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod drain;
pub mod export;
pub mod fleet;
pub mod sdk;

pub use drain::{drain, DrainSignal, DEFAULT_DRAIN_CODE, DEFAULT_DRAIN_MESSAGE};
pub use export::{MetricsServer, MetricsSnapshot, ServerMetrics};
pub use fleet::{DrainCause, DrainReport, Fleet, FleetConfig, FleetError};
pub use sdk::{AgonesConfig, AgonesError, AgonesEvent, AgonesHandle, GameServerInfo, HealthPacer};

/// The kcpnet crate this integration is built on.
pub use kcpnet;
/// The `metrics` facade the figures are published through.
pub use metrics;
/// The Prometheus exporter [`MetricsServer`] serves.
pub use metrics_exporter_prometheus;

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
