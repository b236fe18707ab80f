//! Known samples for the rendering test and the screenshot example: 60 s of a server with
//! three connections (one closes at 40 s), every value a fixed function of time. Connection
//! #1 gets FEC rebuilds after 15 s, and the endpoint refuses a burst of bad connect tokens
//! between 20 s and 35 s.

use kcpnet::{ConnectionQuality, ConnectionStats, EndpointStats, LossEstimate};
use kcpnet_visualizer::{ConnectionKey, HistoryConfig, NetworkHistory};

/// The fixed history: samples every 0.5 s from 0 to 60 s.
pub fn known_history() -> NetworkHistory {
    let mut h = NetworkHistory::new(HistoryConfig {
        interval: std::time::Duration::ZERO,
        ..HistoryConfig::default()
    });
    let keys = [
        ConnectionKey(0),
        ConnectionKey(1),
        ConnectionKey((1 << 32) | 2),
    ];
    let mut endpoint = EndpointStats::default();
    let mut retransmits = [0u64; 3];
    let mut fec_recovered = [0u64; 3];
    for step in 0..=120u32 {
        let t = f64::from(step) * 0.5;
        let mut present = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if i == 2 && t > 40.0 {
                continue; // the third connection closed at 40 s
            }
            let phase = t / 10.0 + i as f64;
            let base_rtt = 40.0 + 30.0 * i as f64;
            let wave = phase.sin();
            let loss = (0.02 * (i as f64 + 1.0) * (1.0 + wave)) as f32;
            retransmits[i] += (5.0 * (1.0 + wave) * (i as f64 + 1.0)) as u64;
            if i == 1 && t > 15.0 {
                fec_recovered[i] += (4.0 * (1.0 + wave)) as u64;
            }
            let quality = ConnectionQuality {
                kcp_rtt_ms: (base_rtt + 15.0 * wave) as u32,
                kcp_rtt_var_ms: 5,
                ping_rtt_ms: Some((base_rtt + 25.0 + 20.0 * wave.abs()) as u32),
                loss_out: LossEstimate::new(loss, 500),
                loss_in: LossEstimate::new(loss * 0.5, 500),
                retransmit_ratio: LossEstimate::new(loss * 1.5, 300),
                peer_unreliable_loss: Some(loss * 0.8),
                unreliable_loss_in: (t > 5.0).then_some(loss * 0.5),
                bytes_in_per_sec: (20_000.0 + 8_000.0 * wave) as f32,
                bytes_out_per_sec: (30_000.0 - 6_000.0 * wave) as f32,
                messages_in_per_sec: (60.0 + 20.0 * wave) as f32,
                messages_out_per_sec: (90.0 - 10.0 * wave) as f32,
                window_ms: 1000,
                since_last_receive_ms: 10,
                connected_ms: (t * 1000.0) as u32,
                pending_reliable_bytes: (4_000.0 * (1.0 + (phase * 2.0).cos())) as usize,
                pending_reliable_messages: 3,
                peer_window: 4096,
                ..ConnectionQuality::default()
            };
            let stats = ConnectionStats {
                retransmits: retransmits[i],
                fec_recovered: fec_recovered[i],
                quality,
                ..ConnectionStats::default()
            };
            h.record_stats(t, *key, &stats);
            present.push(*key);
        }
        h.retain_present(t, &present, 0);
        endpoint.connections = present.len();
        if (20.0..35.0).contains(&t) {
            endpoint.tokens_invalid += 1 + u64::from(step % 3);
        }
        endpoint.bytes_received += (50_000.0 + 10_000.0 * (t / 7.0).sin()) as u64 / 2;
        endpoint.bytes_sent += (70_000.0 - 10_000.0 * (t / 7.0).sin()) as u64 / 2;
        h.record_endpoint(t, &endpoint);
    }
    h
}
