//! kcpnet's figures as bevy [`Diagnostic`]s: RTT, loss, bytes in and out, connections.
//!
//! Add [`KcpDiagnosticsPlugin`] next to [`KcpServerPlugin`](crate::KcpServerPlugin) and/or
//! [`KcpClientPlugin`](crate::KcpClientPlugin): once per frame, after
//! [`KcpSystems::Receive`], it measures the [`KcpServer`] and
//! [`KcpClient`] resources that exist, so the values show in any diagnostics overlay or in
//! bevy's `LogDiagnosticsPlugin`. `bevy_diagnostic` is part of every bevy build (it is not
//! behind a feature), so this adds no renderer and no dependency to a headless server.

use bevy::diagnostic::{Diagnostic, DiagnosticPath, Diagnostics, RegisterDiagnostic};
use bevy::prelude::*;

use crate::{KcpClient, KcpServer, KcpSystems};

/// Connections on the server.
pub const SERVER_CONNECTIONS: DiagnosticPath =
    DiagnosticPath::const_new("kcpnet/server/connections");
/// The mean of KCP's smoothed RTT over the server's connections that have one, in ms.
pub const SERVER_RTT: DiagnosticPath = DiagnosticPath::const_new("kcpnet/server/rtt_ms");
/// The highest KCP RTT among the server's connections, in ms.
pub const SERVER_RTT_MAX: DiagnosticPath = DiagnosticPath::const_new("kcpnet/server/rtt_max_ms");
/// The server's outgoing loss estimate pooled over its connections by samples
/// ([`kcpnet::ConnectionQuality::loss_estimate`]: its datagrams the clients did not get,
/// or the retransmission ratio with a kcp2k client), in percent.
pub const SERVER_LOSS: DiagnosticPath = DiagnosticPath::const_new("kcpnet/server/loss_percent");
/// Bytes per second the server received, summed over its connections (quality window).
pub const SERVER_BYTES_IN: DiagnosticPath =
    DiagnosticPath::const_new("kcpnet/server/bytes_in_per_sec");
/// Bytes per second the server sent, summed over its connections (quality window).
pub const SERVER_BYTES_OUT: DiagnosticPath =
    DiagnosticPath::const_new("kcpnet/server/bytes_out_per_sec");
/// 1 while the client is connected, else 0.
pub const CLIENT_CONNECTED: DiagnosticPath = DiagnosticPath::const_new("kcpnet/client/connected");
/// The client's KCP smoothed RTT, in ms (measured while connected).
pub const CLIENT_RTT: DiagnosticPath = DiagnosticPath::const_new("kcpnet/client/rtt_ms");
/// The client's latest Ping/Pong round trip, in ms (once a Pong came).
pub const CLIENT_PING_RTT: DiagnosticPath = DiagnosticPath::const_new("kcpnet/client/ping_rtt_ms");
/// The client's outgoing loss estimate ([`kcpnet::ConnectionQuality::loss_estimate`]), in
/// percent (measured while connected).
pub const CLIENT_LOSS: DiagnosticPath = DiagnosticPath::const_new("kcpnet/client/loss_percent");
/// Bytes per second the client received (measured while connected).
pub const CLIENT_BYTES_IN: DiagnosticPath =
    DiagnosticPath::const_new("kcpnet/client/bytes_in_per_sec");
/// Bytes per second the client sent (measured while connected).
pub const CLIENT_BYTES_OUT: DiagnosticPath =
    DiagnosticPath::const_new("kcpnet/client/bytes_out_per_sec");

/// Registers kcpnet's [`Diagnostic`]s (the `SERVER_*` and `CLIENT_*` paths of this module)
/// and measures them once per frame in `PreUpdate`, after [`KcpSystems::Receive`].
///
/// ```
/// use bevy::prelude::*;
/// use bevy::diagnostic::DiagnosticsStore;
/// use bevy_kcpnet::diagnostics::{KcpDiagnosticsPlugin, SERVER_CONNECTIONS};
/// use bevy_kcpnet::prelude::*;
///
/// let mut app = App::new();
/// app.add_plugins((MinimalPlugins, KcpServerPlugin, KcpDiagnosticsPlugin));
/// let store = app.world().resource::<DiagnosticsStore>();
/// assert!(store.get(&SERVER_CONNECTIONS).is_some());
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct KcpDiagnosticsPlugin;

impl Plugin for KcpDiagnosticsPlugin {
    fn build(&self, app: &mut App) {
        crate::configure_sets(app);
        for (path, suffix) in [
            (SERVER_CONNECTIONS, ""),
            (SERVER_RTT, " ms"),
            (SERVER_RTT_MAX, " ms"),
            (SERVER_LOSS, " %"),
            (SERVER_BYTES_IN, " B/s"),
            (SERVER_BYTES_OUT, " B/s"),
            (CLIENT_CONNECTED, ""),
            (CLIENT_RTT, " ms"),
            (CLIENT_PING_RTT, " ms"),
            (CLIENT_LOSS, " %"),
            (CLIENT_BYTES_IN, " B/s"),
            (CLIENT_BYTES_OUT, " B/s"),
        ] {
            app.register_diagnostic(Diagnostic::new(path).with_suffix(suffix));
        }
        app.add_systems(
            PreUpdate,
            (
                measure_server.run_if(resource_exists::<KcpServer>),
                measure_client.run_if(resource_exists::<KcpClient>),
            )
                .after(KcpSystems::Receive),
        );
    }
}

/// The server's figures over its connections: (connections, mean RTT, max RTT, pooled loss
/// in percent, bytes in/s, bytes out/s).
fn server_figures(server: &KcpServer) -> ServerFigures {
    let mut f = ServerFigures::default();
    let (mut rtt_sum, mut rtt_n) = (0u64, 0u64);
    let (mut lost, mut sent) = (0.0f64, 0u64);
    for id in server.connections() {
        let Some(q) = server.connection_quality(id) else {
            continue;
        };
        f.connections += 1;
        if q.kcp_rtt_ms > 0 {
            rtt_sum += u64::from(q.kcp_rtt_ms);
            rtt_n += 1;
            f.rtt_max = f.rtt_max.max(f64::from(q.kcp_rtt_ms));
        }
        let l = q.loss_estimate();
        lost += f64::from(l.value) * f64::from(l.samples);
        sent += u64::from(l.samples);
        f.bytes_in += f64::from(q.bytes_in_per_sec);
        f.bytes_out += f64::from(q.bytes_out_per_sec);
    }
    f.rtt_mean = (rtt_n > 0).then(|| rtt_sum as f64 / rtt_n as f64);
    f.loss_percent = if sent > 0 {
        100.0 * lost / sent as f64
    } else {
        0.0
    };
    f
}

#[derive(Debug, Default)]
struct ServerFigures {
    connections: usize,
    rtt_mean: Option<f64>,
    rtt_max: f64,
    loss_percent: f64,
    bytes_in: f64,
    bytes_out: f64,
}

fn measure_server(server: Res<KcpServer>, mut diagnostics: Diagnostics) {
    let f = server_figures(&server);
    diagnostics.add_measurement(&SERVER_CONNECTIONS, || f.connections as f64);
    if let Some(rtt) = f.rtt_mean {
        diagnostics.add_measurement(&SERVER_RTT, || rtt);
        diagnostics.add_measurement(&SERVER_RTT_MAX, || f.rtt_max);
    }
    diagnostics.add_measurement(&SERVER_LOSS, || f.loss_percent);
    diagnostics.add_measurement(&SERVER_BYTES_IN, || f.bytes_in);
    diagnostics.add_measurement(&SERVER_BYTES_OUT, || f.bytes_out);
}

fn measure_client(client: Res<KcpClient>, mut diagnostics: Diagnostics) {
    let connected = client.is_connected();
    diagnostics.add_measurement(&CLIENT_CONNECTED, || f64::from(u8::from(connected)));
    if !connected {
        return;
    }
    let q = client.connection_quality();
    if q.kcp_rtt_ms > 0 {
        diagnostics.add_measurement(&CLIENT_RTT, || f64::from(q.kcp_rtt_ms));
    }
    if let Some(ping) = q.ping_rtt_ms {
        diagnostics.add_measurement(&CLIENT_PING_RTT, || f64::from(ping));
    }
    diagnostics.add_measurement(&CLIENT_LOSS, || 100.0 * f64::from(q.loss_estimate().value));
    diagnostics.add_measurement(&CLIENT_BYTES_IN, || f64::from(q.bytes_in_per_sec));
    diagnostics.add_measurement(&CLIENT_BYTES_OUT, || f64::from(q.bytes_out_per_sec));
}
