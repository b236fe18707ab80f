//! Writes a PNG of the inspector drawn with known samples (the rendering test's fixture):
//!
//! ```text
//! cargo run -p kcpnet_visualizer --example screenshot -- inspector.png
//! ```
//!
//! Headless: egui_kittest renders with wgpu on any adapter (Mesa's lavapipe software Vulkan
//! is enough: `apt-get install mesa-vulkan-drivers`).

#[path = "../tests/common/mod.rs"]
mod common;

use egui_kittest::Harness;
use kcpnet_visualizer::Inspector;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "inspector.png".to_string());
    let history = common::known_history();
    let mut inspector = Inspector::default();
    let mut harness = Harness::builder()
        .with_size((900.0, 660.0))
        .with_pixels_per_point(1.0)
        .build_ui(move |ui| inspector.show(ui, &history));
    harness.run();
    match harness.render() {
        Ok(image) => match image.save(&path) {
            Ok(()) => println!("wrote {path} ({}x{})", image.width(), image.height()),
            Err(e) => {
                eprintln!("cannot write {path}: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("cannot render (no wgpu adapter? install mesa-vulkan-drivers): {e}");
            std::process::exit(1);
        }
    }
}
