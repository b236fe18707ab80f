//! The demo's `--report FILE.html`: the run's time series as one self-contained HTML file
//! with inline SVG charts (no script, no external asset, nothing fetched to view it).

use std::fmt::Write as _;

/// One row of the report: the figures of one statistics window (about a second).
#[derive(Debug, Clone, Copy, Default)]
pub struct Row {
    /// End of the window, in seconds since the start.
    pub t: f64,
    /// Connections on the server.
    pub connections: usize,
    /// Ping/Pong RTT percentiles over bots, in ms.
    pub rtt_p50: Option<f64>,
    /// As above, p99.
    pub rtt_p99: Option<f64>,
    /// KCP's smoothed RTT, p50 over bots, in ms.
    pub kcp_rtt_p50: Option<f64>,
    /// The datagram loss estimate (`ConnectionQuality::loss_estimate`) pooled over both
    /// ends, in percent.
    pub datagram_loss_pct: Option<f64>,
    /// Bot → server unreliable loss over the window, in percent.
    pub unreliable_loss_pct: Option<f64>,
    /// kB/s into the server's socket.
    pub in_kbps: f64,
    /// kB/s out of the server's socket.
    pub out_kbps: f64,
    /// Reliable messages the server received per second.
    pub reliable_per_sec: f64,
    /// Unreliable messages the server received per second.
    pub unreliable_per_sec: f64,
}

/// A whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One line describing the run (bots, rate, link).
    pub title: String,
    /// The rows, in time order.
    pub rows: Vec<Row>,
    /// The text summary and verdict the demo printed.
    pub summary: String,
    /// Whether the verdict was PASS.
    pub pass: bool,
}

/// One line of a chart: a name, a colour and its points (a `None` value breaks the line).
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, Option<f64>)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 36.0;

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// A "nice" step (1, 2 or 5 × 10^n) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else if step >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One SVG line chart.
fn chart(title: &str, unit: &str, series: &[Series<'_>]) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0f64, f64::max);
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1));
    let y_max = ys.fold(0.0f64, f64::max);
    let y_step = nice_step(if y_max > 0.0 { y_max } else { 1.0 }, 4.0);
    let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
    let x_step = nice_step(x_max, 8.0);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let sx = |x: f64| LEFT + x / x_max * pw;
    let sy = |y: f64| TOP + ph - y / y_top * ph;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}">"##,
        t = esc(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><text x="{LEFT}" y="20" class="title">{t} <tspan class="unit">({u})</tspan></text>"##,
        t = esc(title),
        u = esc(unit)
    );
    // Grid and y labels.
    let mut y = 0.0;
    while y <= y_top + y_step * 0.01 {
        let py = sy(y);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{x2:.1}" y2="{py:.1}" stroke="#e2e2e2"/><text x="{lx:.1}" y="{ty:.1}" class="tick" text-anchor="end">{v}</text>"##,
            x2 = LEFT + pw,
            lx = LEFT - 6.0,
            ty = py + 4.0,
            v = fmt_tick(y, y_step)
        );
        y += y_step;
    }
    // X labels.
    let mut x = 0.0;
    while x <= x_max + x_step * 0.01 {
        let px = sx(x);
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{y1:.1}" stroke="#999999"/><text x="{px:.1}" y="{ty:.1}" class="tick" text-anchor="middle">{v}</text>"##,
            y0 = TOP + ph,
            y1 = TOP + ph + 4.0,
            ty = TOP + ph + 16.0,
            v = fmt_tick(x, x_step)
        );
        x += x_step;
    }
    let _ = write!(
        svg,
        r##"<text x="{cx:.1}" y="{ty:.1}" class="tick" text-anchor="middle">time (s)</text><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999999"/>"##,
        cx = LEFT + pw / 2.0,
        ty = HEIGHT - 4.0
    );
    // Lines (broken where a value is missing) and a dot where a point stands alone.
    for s in series {
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in &s.points {
            match y {
                Some(y) => runs
                    .last_mut()
                    .map(|r| r.push((sx(x), sy(y))))
                    .unwrap_or(()),
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if run.len() == 1 {
                let _ = write!(
                    svg,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"##,
                    run[0].0, run[0].1, s.color
                );
                continue;
            }
            let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                svg,
                r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"/>"##,
                pts.join(" "),
                s.color
            );
        }
    }
    // Legend, top right.
    let mut lx = WIDTH - RIGHT;
    for s in series.iter().rev() {
        let w = 22.0 + 7.0 * s.name.chars().count() as f64;
        lx -= w;
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="10" width="12" height="12" fill="{c}"/><text x="{tx:.1}" y="20" class="tick">{n}</text>"##,
            c = s.color,
            tx = lx + 16.0,
            n = esc(s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole HTML document.
pub fn render(report: &Report) -> String {
    let col = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        report.rows.iter().map(|r| (r.t, f(r))).collect()
    };
    let charts = [
        chart(
            "Round-trip time over bots",
            "ms",
            &[
                Series {
                    name: "ping p50",
                    color: "#1a73e8",
                    points: col(&|r| r.rtt_p50),
                },
                Series {
                    name: "ping p99",
                    color: "#d93025",
                    points: col(&|r| r.rtt_p99),
                },
                Series {
                    name: "KCP p50",
                    color: "#188038",
                    points: col(&|r| r.kcp_rtt_p50),
                },
            ],
        ),
        chart(
            "Loss",
            "%",
            &[
                Series {
                    name: "datagram loss (estimate)",
                    color: "#e37400",
                    points: col(&|r| r.datagram_loss_pct),
                },
                Series {
                    name: "unreliable bot→server",
                    color: "#9334e6",
                    points: col(&|r| r.unreliable_loss_pct),
                },
            ],
        ),
        chart(
            "Server throughput",
            "kB/s",
            &[
                Series {
                    name: "in",
                    color: "#1a73e8",
                    points: col(&|r| Some(r.in_kbps)),
                },
                Series {
                    name: "out",
                    color: "#e37400",
                    points: col(&|r| Some(r.out_kbps)),
                },
            ],
        ),
        chart(
            "Messages the server received",
            "per second",
            &[
                Series {
                    name: "reliable",
                    color: "#188038",
                    points: col(&|r| Some(r.reliable_per_sec)),
                },
                Series {
                    name: "unreliable",
                    color: "#1a73e8",
                    points: col(&|r| Some(r.unreliable_per_sec)),
                },
            ],
        ),
        chart(
            "Connections on the server",
            "count",
            &[Series {
                name: "connections",
                color: "#5f6368",
                points: col(&|r| Some(r.connections as f64)),
            }],
        ),
    ];
    let mut html = String::new();
    let verdict = if report.pass { "PASS" } else { "FAIL" };
    let _ = write!(
        html,
        r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kcpnet demo report: {verdict}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #202124; background: #f8f9fa; }}
h1 {{ font-size: 20px; margin: 0 0 4px 0; }}
p.run {{ margin: 0 0 16px 0; color: #5f6368; }}
.verdict {{ font-weight: bold; padding: 2px 8px; border-radius: 4px; color: #ffffff; }}
.pass {{ background: #188038; }}
.fail {{ background: #d93025; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.charts svg {{ border: 1px solid #dadce0; border-radius: 4px; }}
svg .title {{ font: bold 13px sans-serif; fill: #202124; }}
svg .unit {{ font-weight: normal; fill: #5f6368; }}
svg .tick {{ font: 11px sans-serif; fill: #5f6368; }}
pre {{ background: #ffffff; border: 1px solid #dadce0; padding: 12px; overflow-x: auto; }}
</style>
</head>
<body>
<h1>kcpnet demo <span class="verdict {class}">{verdict}</span></h1>
<p class="run">{title}</p>
<div class="charts">
"##,
        class = verdict.to_ascii_lowercase(),
        title = esc(&report.title),
    );
    for c in &charts {
        html.push_str(c);
        html.push('\n');
    }
    let _ = write!(
        html,
        "</div>\n<h2>Summary</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        esc(report.summary.trim())
    );
    html
}
