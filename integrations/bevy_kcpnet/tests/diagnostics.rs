//! KcpDiagnosticsPlugin: real values from a connected client and its server, over kcpnet's
//! in-memory network and a virtual clock, read back from bevy's `DiagnosticsStore`.

use std::net::SocketAddr;
use std::time::Duration;

use bevy::diagnostic::{DiagnosticPath, DiagnosticsStore};
use bevy::prelude::*;
use bevy_kcpnet::diagnostics::*;
use bevy_kcpnet::kcpnet::io::{Conditions, LinkConditioner, ManualClock, MemoryNetwork};
use bevy_kcpnet::kcpnet::{Channel, Config};
use bevy_kcpnet::prelude::*;

const FRAME: Duration = Duration::from_millis(10);

fn value(app: &App, path: &DiagnosticPath) -> Option<f64> {
    app.world()
        .resource::<DiagnosticsStore>()
        .get(path)
        .and_then(|d| d.value())
}

#[test]
fn diagnostics_read_real_values_from_a_connected_client() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let mut server = App::new();
    server
        .add_plugins((MinimalPlugins, KcpServerPlugin, KcpDiagnosticsPlugin))
        .insert_resource(
            KcpServer::with_conditioned_transport(
                LinkConditioner::new(net.bind(server_addr).unwrap(), 1),
                Box::new(clock.clone()),
                Config::default(),
            )
            .unwrap(),
        );
    let mut client = App::new();
    let socket = net.bind("10.0.0.2:5000".parse().unwrap()).unwrap();
    client
        .add_plugins((MinimalPlugins, KcpClientPlugin, KcpDiagnosticsPlugin))
        .insert_resource(
            KcpClient::with_conditioned_transport(
                LinkConditioner::new(socket, 2),
                Box::new(clock.clone()),
                server_addr,
                Config::default(),
            )
            .unwrap(),
        )
        // 20 ms each way: the RTT the diagnostics must show is about 40 ms.
        .insert_resource(KcpLinkConditions::symmetric(
            Conditions::default().with_latency(Duration::from_millis(20)),
        ));

    // Before connecting: the client reports 0 connected and no RTT.
    client.update();
    server.update();
    assert_eq!(value(&client, &CLIENT_CONNECTED), Some(0.0));
    assert_eq!(value(&client, &CLIENT_RTT), None);
    assert_eq!(value(&server, &SERVER_CONNECTIONS), Some(0.0));

    // Three seconds of traffic: the client sends 1000 reliable bytes every frame.
    for _ in 0..300 {
        if client.world().resource::<KcpClient>().is_connected() {
            client
                .world_mut()
                .resource_mut::<KcpClient>()
                .send(&[1u8; 1000], Channel::Reliable)
                .unwrap();
        }
        client.update();
        server.update();
        clock.advance(FRAME);
    }

    assert_eq!(value(&client, &CLIENT_CONNECTED), Some(1.0));
    assert_eq!(value(&server, &SERVER_CONNECTIONS), Some(1.0));
    let rtt = value(&client, &CLIENT_RTT).expect("client RTT measured");
    assert!(
        (35.0..=80.0).contains(&rtt),
        "client KCP RTT {rtt} ms, link 2 x 20 ms"
    );
    let srtt = value(&server, &SERVER_RTT).expect("server RTT measured");
    assert!((35.0..=80.0).contains(&srtt), "server KCP RTT {srtt} ms");
    assert!(value(&server, &SERVER_RTT_MAX).unwrap() >= srtt);
    let out = value(&client, &CLIENT_BYTES_OUT).unwrap();
    assert!(out > 90_000.0, "client sends ~100 kB/s, measured {out}");
    let inb = value(&server, &SERVER_BYTES_IN).unwrap();
    assert!(inb > 90_000.0, "server receives ~100 kB/s, measured {inb}");
    assert!(
        value(&server, &SERVER_BYTES_OUT).unwrap() > 0.0,
        "ACKs flow back"
    );
    assert_eq!(value(&client, &CLIENT_LOSS), Some(0.0), "a lossless link");
    assert_eq!(value(&server, &SERVER_LOSS), Some(0.0));

    // Loss on the client's link shows up in the client's loss estimate.
    client.insert_resource(KcpLinkConditions::symmetric(
        Conditions::lossy(0.2).with_latency(Duration::from_millis(20)),
    ));
    let mut max_loss = 0.0f64;
    // Six seconds: the estimate is the server's report of what it received, which rides on
    // the once-a-second work; over three seconds a lost Ping or two (the link's seed is
    // random) left only a report of the window before the loss, in about one run in eight.
    for _ in 0..600 {
        client
            .world_mut()
            .resource_mut::<KcpClient>()
            .send(&[1u8; 1000], Channel::Reliable)
            .unwrap();
        client.update();
        server.update();
        clock.advance(FRAME);
        max_loss = max_loss.max(value(&client, &CLIENT_LOSS).unwrap_or(0.0));
    }
    assert!(
        max_loss > 5.0,
        "20% loss each way, the client's estimate peaked at {max_loss}%"
    );
}
