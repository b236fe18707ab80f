//! A transport wrapper: count every datagram and byte a server and a client exchange over
//! loopback UDP, below the drivers.
//!
//! ```text
//! cargo run --example packet_counter
//! ```
//!
//! [`PacketCounter`] (in `examples/common/packet_counter.rs`) wraps a `UdpTransport` and
//! implements `Transport` by forwarding every call and counting on the way. The same shape
//! fits a pcap writer, an encryption layer or a fault injector. The server takes the counter
//! as it is (`Server::with_transport`); the client puts a link conditioner around it
//! (`Client::with_conditioned_transport`), so `Client::set_conditions` still works and the
//! counter sees what actually reaches the socket.
//!
//! The client sends ten reliable messages of 20,000 bytes (each is cut into many datagrams
//! of the same length, which a Linux socket sends with UDP GSO) and ten small unreliable ones;
//! the server echoes them. Then each side's counts are printed next to the driver's own
//! `stats()`: they agree, since the drivers count the same calls. Exit code 0 if every
//! reliable echo came back and the counts agree, 1 otherwise.

#[path = "common/packet_counter.rs"]
mod packet_counter;

use std::process::exit;
use std::time::Duration;

use kcpnet::io::{LinkConditioner, SocketOptions, SystemClock, UdpTransport};
use kcpnet::{Channel, Client, Config, EndpointStats, Event, Server};
use packet_counter::{Counts, PacketCounter};

/// Ticks at most this many times (1 ms apart) before giving up.
const MAX_TICKS: usize = 10_000;

fn main() {
    let opts = SocketOptions::default(); // batched I/O with GSO and GRO on Linux
    let udp = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts).expect("bind the server");
    let server_gso = udp.is_gso();
    let server_counter = PacketCounter::new(udp);
    let server_counts = server_counter.counts();
    let mut server = Server::with_transport(
        Box::new(server_counter),
        Box::new(SystemClock::new()),
        Config::default(),
    )
    .expect("a valid config");
    let addr = server.local_addr().expect("the server's address");

    // What Client::connect does, with the counter between the conditioner and the socket.
    let mut udp = UdpTransport::bind_any_for(addr, &opts).expect("bind the client");
    udp.connect(addr).expect("connect the client's socket");
    let client_counter = PacketCounter::new(udp);
    let client_counts = client_counter.counts();
    let mut client = Client::with_conditioned_transport(
        LinkConditioner::new(client_counter, 1),
        Box::new(SystemClock::new()),
        addr,
        Config::default(),
    )
    .expect("a valid config");

    let messages: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 20_000]).collect();
    let (mut sent, mut echoed) = (false, 0);
    for _ in 0..MAX_TICKS {
        server.tick_incoming_with(|server, event| {
            if let Event::Data { id, channel, data } = event {
                let _ = server.send(id, data, channel);
            }
        });
        server.tick_outgoing();
        client.tick_incoming();
        while let Some(event) = client.poll_event() {
            if let Event::Data {
                channel: Channel::Reliable,
                data,
                ..
            } = event
            {
                if messages.get(echoed).is_some_and(|m| m.as_slice() == data) {
                    echoed += 1;
                }
            }
        }
        if client.is_connected() && !sent {
            for (i, m) in messages.iter().enumerate() {
                client.send(m, Channel::Reliable).expect("send reliable");
                let _ = client.send(&[i as u8; 100], Channel::Unreliable);
            }
            sent = true;
        }
        client.tick_outgoing();
        if echoed == messages.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    println!("{echoed} of {} reliable echoes back", messages.len());
    let server_ok = report("server", &server_counts, &server.stats(), server_gso);
    let client_ok = report("client", &client_counts, &client.stats(), server_gso);
    if echoed != messages.len() || !server_ok || !client_ok {
        exit(1);
    }
}

/// Prints one side's counts next to its driver's statistics; `true` if they agree.
fn report(side: &str, counts: &Counts, stats: &EndpointStats, gso: bool) -> bool {
    let counted = [
        Counts::get(&counts.datagrams_sent),
        Counts::get(&counts.bytes_sent),
        Counts::get(&counts.datagrams_received),
        Counts::get(&counts.bytes_received),
    ];
    let driver = [
        stats.datagrams_sent,
        stats.bytes_sent,
        stats.datagrams_received,
        stats.bytes_received,
    ];
    println!(
        "{side}: counted {} datagrams / {} bytes out, {} / {} in; the driver says {} / {} out, \
         {} / {} in",
        counted[0], counted[1], counted[2], counted[3], driver[0], driver[1], driver[2], driver[3]
    );
    if gso {
        println!(
            "{side}: {} GSO messages sent, {} GRO buffers received, {} late drops",
            Counts::get(&counts.gso_messages),
            Counts::get(&counts.gro_buffers),
            Counts::get(&counts.send_drops)
        );
    }
    counted == driver
}
