//! The egui drawing of a [`NetworkHistory`]: the endpoint's plots, a sortable connection
//! table, a connection selector and the selected connection's plots.

use egui::{Color32, RichText, Ui};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::history::{ConnectionHistory, ConnectionKey, ConnectionSample, NetworkHistory, SortBy};

const IN: Color32 = Color32::from_rgb(66, 133, 244);
const OUT: Color32 = Color32::from_rgb(234, 134, 0);
const THIRD: Color32 = Color32::from_rgb(52, 168, 83);

/// The inspector's own state (what is selected and shown); the data is a [`NetworkHistory`]
/// passed to [`Inspector::show`] each frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspector {
    /// The time span the plots show, in seconds, ending at the newest sample.
    pub span_secs: f64,
    /// The order of the connection table.
    pub sort: SortBy,
    /// The connection whose plots are drawn (the first one when `None`).
    pub selected: Option<ConnectionKey>,
    /// The height of one plot, in points.
    pub plot_height: f32,
    /// Rows of the connection table shown before it scrolls.
    pub table_rows: usize,
}

impl Default for Inspector {
    fn default() -> Self {
        Inspector {
            span_secs: 30.0,
            sort: SortBy::Rtt,
            selected: None,
            plot_height: 90.0,
            table_rows: 8,
        }
    }
}

/// The spans offered by the inspector's span buttons, in seconds.
pub const SPANS: [f64; 4] = [10.0, 30.0, 60.0, 300.0];

impl Inspector {
    /// Draws everything into `ui`.
    pub fn show(&mut self, ui: &mut Ui, history: &NetworkHistory) {
        let now = history.now().unwrap_or(0.0);
        self.controls(ui, history);
        ui.separator();
        self.endpoint_plots(ui, history, now);
        ui.separator();
        self.table(ui, history);
        ui.separator();
        self.connection_plots(ui, history, now);
    }

    /// The key of the connection whose plots are drawn: the selected one if it still has a
    /// history, else the first in the table order.
    pub fn shown_connection(&self, history: &NetworkHistory) -> Option<ConnectionKey> {
        match self.selected {
            Some(k) if history.connection(k).is_some() => Some(k),
            _ => history.rows(self.sort).first().map(|r| r.id),
        }
    }

    fn controls(&mut self, ui: &mut Ui, history: &NetworkHistory) {
        ui.horizontal(|ui| {
            ui.label("span");
            for s in SPANS {
                let text = format!("{s:.0} s");
                if ui.selectable_label(self.span_secs == s, text).clicked() {
                    self.span_secs = s;
                }
            }
            ui.separator();
            let live = history
                .connections()
                .filter(|(_, h)| !h.is_closed())
                .count();
            let closed = history.connections().count() - live;
            let mut text = format!("{live} live, {closed} closed");
            if history.untracked() > 0 {
                text.push_str(&format!(", {} not tracked", history.untracked()));
            }
            ui.label(text);
        });
    }

    fn endpoint_plots(&self, ui: &mut Ui, history: &NetworkHistory, now: f64) {
        let samples: Vec<_> = history.endpoint().window(now, self.span_secs).collect();
        let series = |f: &dyn Fn(&crate::EndpointSample) -> f64| -> Vec<[f64; 2]> {
            samples.iter().map(|s| [s.t - now, f(s)]).collect()
        };
        ui.label(RichText::new("endpoint").strong());
        ui.columns(2, |cols| {
            self.plot(
                &mut cols[0],
                "endpoint_kbps",
                "kB/s",
                vec![
                    ("in", IN, series(&|s| s.bytes_in_per_sec as f64 / 1000.0)),
                    ("out", OUT, series(&|s| s.bytes_out_per_sec as f64 / 1000.0)),
                ],
            );
            self.plot(
                &mut cols[1],
                "endpoint_connections",
                "connections, refused/s",
                vec![
                    ("connections", THIRD, series(&|s| s.connections as f64)),
                    (
                        "security",
                        OUT,
                        series(&|s| s.security_refused_per_sec as f64),
                    ),
                ],
            );
        });
    }

    fn table(&mut self, ui: &mut Ui, history: &NetworkHistory) {
        ui.horizontal(|ui| {
            ui.label(RichText::new("connections").strong());
            ui.label("sort by");
            for (sort, name) in [
                (SortBy::Rtt, "RTT"),
                (SortBy::Loss, "loss"),
                (SortBy::Id, "id"),
            ] {
                if ui.selectable_label(self.sort == sort, name).clicked() {
                    self.sort = sort;
                }
            }
            let shown = self.shown_connection(history);
            egui::ComboBox::new("kcpnet_visualizer_selector", "plotted")
                .selected_text(shown.map_or_else(|| "none".to_string(), |k| k.to_string()))
                .show_ui(ui, |ui| {
                    for (k, h) in history.connections() {
                        let text = if h.is_closed() {
                            format!("{k} (closed)")
                        } else {
                            k.to_string()
                        };
                        ui.selectable_value(&mut self.selected, Some(k), text);
                    }
                });
        });
        let rows = history.rows(self.sort);
        let shown = self.shown_connection(history);
        let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
        egui::ScrollArea::vertical()
            .max_height(row_height * (self.table_rows as f32 + 1.0))
            .show(ui, |ui| {
                egui::Grid::new("kcpnet_visualizer_table")
                    .striped(true)
                    .num_columns(8)
                    .show(ui, |ui| {
                        for h in [
                            "id", "RTT ms", "ping ms", "loss %", "in kB/s", "out kB/s", "pend kB",
                            "rexmit/s",
                        ] {
                            ui.label(RichText::new(h).strong());
                        }
                        ui.end_row();
                        for r in &rows {
                            let s = &r.latest;
                            let name = if r.closed {
                                format!("{} closed", r.id)
                            } else {
                                r.id.to_string()
                            };
                            if ui.selectable_label(shown == Some(r.id), name).clicked() {
                                self.selected = Some(r.id);
                            }
                            ui.label(format!("{:.0}", s.kcp_rtt_ms));
                            ui.label(s.ping_rtt_ms.map_or("-".into(), |v| format!("{v:.0}")));
                            ui.label(format!("{:.1}", s.loss_out * 100.0));
                            ui.label(format!("{:.1}", s.bytes_in_per_sec / 1000.0));
                            ui.label(format!("{:.1}", s.bytes_out_per_sec / 1000.0));
                            ui.label(format!("{:.1}", s.pending_reliable_bytes / 1000.0));
                            ui.label(
                                s.retransmits_per_sec
                                    .map_or("-".into(), |v| format!("{v:.1}")),
                            );
                            ui.end_row();
                        }
                    });
            });
    }

    fn connection_plots(&self, ui: &mut Ui, history: &NetworkHistory, now: f64) {
        let Some(key) = self.shown_connection(history) else {
            ui.label("no connection");
            return;
        };
        let Some(h) = history.connection(key) else {
            return;
        };
        ui.label(RichText::new(format!("connection {key}")).strong());
        let series = series_of(h, now, self.span_secs);
        ui.columns(2, |cols| {
            self.plot(
                &mut cols[0],
                "rtt",
                "RTT ms",
                vec![
                    ("KCP", IN, series(&|s| Some(s.kcp_rtt_ms as f64))),
                    ("ping", OUT, series(&|s| s.ping_rtt_ms.map(f64::from))),
                ],
            );
            self.plot(
                &mut cols[1],
                "loss",
                "loss %",
                vec![
                    (
                        "out (KCP)",
                        OUT,
                        series(&|s| Some(s.loss_out as f64 * 100.0)),
                    ),
                    (
                        "out (unreliable)",
                        THIRD,
                        series(&|s| s.unreliable_loss_out.map(|v| v as f64 * 100.0)),
                    ),
                    (
                        "in (unreliable)",
                        IN,
                        series(&|s| s.unreliable_loss_in.map(|v| v as f64 * 100.0)),
                    ),
                ],
            );
        });
        ui.columns(2, |cols| {
            self.plot(
                &mut cols[0],
                "bytes",
                "kB/s",
                vec![
                    (
                        "in",
                        IN,
                        series(&|s| Some(s.bytes_in_per_sec as f64 / 1000.0)),
                    ),
                    (
                        "out",
                        OUT,
                        series(&|s| Some(s.bytes_out_per_sec as f64 / 1000.0)),
                    ),
                    (
                        "send cap",
                        THIRD,
                        series(&|s| s.send_rate_limit.map(|v| v as f64 / 1000.0)),
                    ),
                ],
            );
            self.plot(
                &mut cols[1],
                "messages",
                "messages/s",
                vec![
                    ("in", IN, series(&|s| Some(s.messages_in_per_sec as f64))),
                    ("out", OUT, series(&|s| Some(s.messages_out_per_sec as f64))),
                ],
            );
        });
        ui.columns(2, |cols| {
            self.plot(
                &mut cols[0],
                "pending",
                "pending kB",
                vec![(
                    "reliable",
                    OUT,
                    series(&|s| Some(s.pending_reliable_bytes as f64 / 1000.0)),
                )],
            );
            self.plot(
                &mut cols[1],
                "rexmit",
                "retransmits/s, FEC rebuilt/s",
                vec![
                    (
                        "KCP",
                        OUT,
                        series(&|s| s.retransmits_per_sec.map(f64::from)),
                    ),
                    (
                        "FEC",
                        THIRD,
                        series(&|s| s.fec_recovered_per_sec.map(f64::from)),
                    ),
                ],
            );
        });
    }

    fn plot(&self, ui: &mut Ui, id: &str, title: &str, lines: Vec<(&str, Color32, Vec<[f64; 2]>)>) {
        ui.label(title);
        Plot::new(("kcpnet_visualizer", id))
            .height(self.plot_height)
            .legend(Legend::default())
            .include_x(-self.span_secs)
            .include_x(0.0)
            .include_y(0.0)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .show(ui, |p| {
                // A series with no point (no FEC, no send cap) stays out of the legend.
                for (name, color, points) in lines.into_iter().filter(|l| !l.2.is_empty()) {
                    p.line(Line::new(name, PlotPoints::from(points)).color(color));
                }
            });
    }
}

/// Picks one value out of a connection sample (`None`: no point there).
type Pick<'p> = &'p dyn Fn(&ConnectionSample) -> Option<f64>;

/// A function building one plot series of a connection: `(t - now, value)` for the samples
/// inside the span that have the value.
fn series_of<'a>(
    h: &'a ConnectionHistory,
    now: f64,
    span: f64,
) -> impl Fn(Pick<'_>) -> Vec<[f64; 2]> + 'a {
    move |f| {
        h.samples
            .window(now, span)
            .filter_map(|s| f(s).map(|v| [s.t - now, v]))
            .collect()
    }
}
