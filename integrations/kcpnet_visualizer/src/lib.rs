//! # kcpnet_visualizer
//!
//! An egui inspector for [kcpnet] connections, like `renet_visualizer`: it keeps a
//! bounded history of samples per connection and for the whole endpoint, fed once per frame
//! (or per interval) from [`kcpnet::ConnectionStats`] / [`kcpnet::ConnectionQuality`] and
//! [`kcpnet::EndpointStats`], and draws KCP and ping RTT, loss in and out, bytes/s and
//! messages/s each way, pending reliable bytes and retransmissions, a connection table
//! sortable by RTT or loss, and a selector for one connection.
//!
//! The history takes plain values: [`NetworkHistory::sample_server`] and
//! [`NetworkHistory::sample_client`] borrow the endpoint only for the call, so the server
//! or client stays free to be ticked, moved or dropped between frames.
//!
//! ```no_run
//! # use kcpnet::{Config, Server};
//! # use kcpnet_visualizer::{Inspector, NetworkHistory};
//! # fn frame(ui: &mut egui::Ui, server: &Server, history: &mut NetworkHistory,
//! #          inspector: &mut Inspector, seconds_since_start: f64) {
//! // once per frame, after ticking the server:
//! history.sample_server(seconds_since_start, server); // a no-op until the interval passed
//! inspector.show(ui, history);
//! # }
//! ```
//!
//! Memory is bounded by [`HistoryConfig`]: `capacity` samples per ring, `max_connections`
//! live connections and `max_closed` closed ones (a connection missing from a sample is
//! marked closed; the oldest closed histories are dropped first).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod history;
mod inspector;

pub use history::{
    ConnectionHistory, ConnectionKey, ConnectionRow, ConnectionSample, EndpointSample,
    HistoryConfig, NetworkHistory, Ring, SortBy, Timed,
};
pub use inspector::{Inspector, SPANS};

pub use egui;
pub use egui_plot;
pub use kcpnet;
