//! Checks of the simulation harness itself (tests/common), so that the suites built on it
//! can trust it.
mod common;
use common::*;
use kcpnet::{Channel, Config, OwnedEvent};

fn data_of(events: &[OwnedEvent]) -> Vec<Vec<u8>> {
    common::data_of(events, None)
        .into_iter()
        .map(|(_, d)| d.to_vec())
        .collect()
}

#[test]
fn harness_connects_records_and_echoes() {
    let mut sim = Sim::new(Config::default(), 7);
    sim.add_client(Config::default());
    sim.add_client(Config::default());
    sim.connect_all(100);
    assert!(sim.server_id_of(0).is_some() && sim.server_id_of(1).is_some());
    assert_ne!(sim.server_id_of(0), sim.server_id_of(1));

    // Without an echoing server, messages arrive at the server and nothing comes back.
    sim.clients[0]
        .send(&payload(0, 0, 3000), Channel::Reliable)
        .unwrap();
    sim.run_for(std::time::Duration::from_millis(200));
    assert_eq!(data_of(&sim.server_events), vec![payload(0, 0, 3000)]);
    assert!(data_of(&sim.client_events[0]).is_empty());

    // With step_echo, each client gets its own message back.
    for i in 0..2 {
        sim.clients[i]
            .send(&payload(i as u64, 1, 3000), Channel::Reliable)
            .unwrap();
    }
    for _ in 0..200 {
        sim.step_echo();
    }
    for i in 0..2 {
        assert_eq!(
            data_of(&sim.client_events[i]),
            vec![payload(i as u64, 1, 3000)]
        );
    }
    assert_ne!(payload(0, 0, 16), vec![0u8; 16]);
    assert_ne!(payload(0, 0, 16), payload(0, 1, 16));
}
