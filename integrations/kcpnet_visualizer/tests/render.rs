//! The inspector drawn headlessly with known samples (egui_kittest, wgpu on whatever adapter
//! is there: Mesa's lavapipe software Vulkan on CI) and compared with the stored reference
//! image `tests/snapshots/inspector.png` within a tolerance.
//!
//! Regenerate the reference after an intended change of the drawing:
//! `UPDATE_SNAPSHOTS=1 cargo test -p kcpnet_visualizer --test render`
//! (a failing run leaves `tests/snapshots/inspector.new.png` and `inspector.diff.png`).

mod common;

use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotOptions};
use kcpnet_visualizer::{ConnectionKey, Inspector, SortBy};

const SIZE: (f32, f32) = (900.0, 660.0);

fn harness(history: kcpnet_visualizer::NetworkHistory) -> Harness<'static, Inspector> {
    Harness::builder()
        .with_size(SIZE)
        .with_pixels_per_point(1.0)
        .build_ui_state(
            move |ui, inspector: &mut Inspector| inspector.show(ui, &history),
            Inspector::default(),
        )
}

#[test]
fn inspector_matches_the_reference_image() {
    let mut h = harness(common::known_history());
    h.run();
    // Tolerance: a per-pixel colour distance up to 1.5 (default 0.6) and 0.05% of the
    // pixels (297) beyond it, for another driver's anti-aliasing. Shifting one connection's
    // RTT by 5 ms (a line moved by a few pixels, three table cells) fails 1335 pixels.
    let options = SnapshotOptions::new()
        .threshold(1.5)
        .max_failed_pixels((SIZE.0 * SIZE.1 * 0.0005) as usize);
    h.snapshot_options("inspector", &options);
}

#[test]
fn table_sorts_and_selects_on_click() {
    let mut h = harness(common::known_history());
    h.run();
    assert_eq!(h.state().sort, SortBy::Rtt);
    // By RTT the worst live connection (#1.0; #2.1 is slower but closed) comes first and
    // is shown.
    let history = common::known_history();
    assert_eq!(h.state().shown_connection(&history), Some(ConnectionKey(1)));
    h.get_by_label("connection #1.0");
    h.get_by_label("loss").click();
    h.run();
    assert_eq!(h.state().sort, SortBy::Loss);
    // Select connection #0.0 in the table: its plots are shown.
    h.get_by_label("#0.0").click();
    h.run();
    assert_eq!(h.state().selected, Some(ConnectionKey(0)));
    assert_eq!(h.state().shown_connection(&history), Some(ConnectionKey(0)));
    h.get_by_label("connection #0.0");
}
