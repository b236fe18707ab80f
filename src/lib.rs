//! # kcpnet
//!
//! Reliable UDP for game loops. kcpnet speaks the wire protocol of
//! [kcp2k](https://github.com/MirrorNetworking/kcp2k) (the KCP transport of Mirror / Unity),
//! so a Rust dedicated server can host C# kcp2k clients and a Rust client can join a kcp2k
//! server, over a KCP core that is byte-compatible with the reference C `ikcp`.
//!
//! * **Non-blocking, no threads, no async runtime**: the game loop calls
//!   [`Server::tick_incoming`] and [`Server::tick_outgoing`] once per frame.
//! * **Two channels**: [`Channel::Reliable`] (ordered, exactly once, messages up to
//!   148 716 bytes by default) and [`Channel::Unreliable`] (one datagram, up to 1194 bytes).
//! * **Events** through a drained queue that hands out each event with the endpoint, so the
//!   application replies without copying ([`Server::drain_events`]), a plain queue
//!   ([`Server::poll_event`]), or callbacks ([`Server::tick_incoming_with`]); no allocation
//!   per message in steady state.
//! * **Waits in the OS poller** ([`Server::wait`]) until a datagram or a timer is due,
//!   instead of spinning or sleeping a fixed time; `Server` and `Client` are `Send + Sync`.
//! * **Hardened handshake**: nothing is allocated for strangers, a server reports
//!   `Connected` only after the client proved it receives at its address (the server's
//!   handshake is stateless: a Hello flood fills nothing), and a stranger gets at most one
//!   54-byte reply per 30-byte Hello.
//! * **Backpressure**: a reliable send past `Config::send_queue_limit` fails with
//!   [`Error::SendQueueFull`] and the connection stays open ([`Server::send_capacity`]).
//! * **Link conditioner** ([`io::LinkConditioner`]): loss, latency, jitter, reordering,
//!   duplication and bandwidth caps, settable at run time, deterministic under a virtual
//!   clock.
//! * **Between two kcpnet peers** (negotiated in the Hello; a kcp2k peer never sees it):
//!   close reasons ([`Server::disconnect_with`] → [`DisconnectReason::App`], and a
//!   shutdown, a kick, a protocol error and a timeout told apart), half-close
//!   ([`Server::shutdown_send`]), and each side's loss as the other counts it.
//! * **Connection quality** ([`Server::connection_quality`]): KCP's RTT and the Ping RTT
//!   named apart, loss estimates with their margins ([`LossEstimate`]: one-way datagram
//!   loss each way between kcpnet peers, the retransmission ratio with any peer), bytes and
//!   messages per second over the last second, pending reliable data, time since the last
//!   datagram.
//!
//! ## A server and a client (drained-queue form)
//! ```
//! use kcpnet::{Channel, Client, Config, Error, Event, Server};
//!
//! # fn main() -> Result<(), kcpnet::Error> {
//! let mut server = Server::bind("127.0.0.1:0", Config::default())?;
//! let port = server.local_addr()?.port();
//! let mut client = Client::connect(("127.0.0.1", port), Config::default())?;
//!
//! let mut echoed = None;
//! for _frame in 0..2000 {
//!     server.tick_incoming();
//!     // Each event comes with the server: reply while holding it, without a copy.
//!     let mut events = server.drain_events();
//!     while let Some((event, server)) = events.next() {
//!         if let Event::Data { id, channel, data } = event {
//!             match server.send(id, data, channel) {
//!                 Ok(()) | Err(Error::ConnectionClosed) => {} // it may have left this tick
//!                 Err(e) => return Err(e),
//!             }
//!         }
//!     }
//!     drop(events);
//!     server.tick_outgoing();
//!
//!     client.tick_incoming();
//!     while let Some(event) = client.poll_event() {
//!         match event {
//!             Event::Connected { .. } => {}
//!             Event::Data { data, .. } => echoed = Some(data.to_vec()),
//!             other => println!("{other:?}"),
//!         }
//!     }
//!     if client.is_connected() && client.connection_stats().reliable_sent == 0 {
//!         client.send(b"hello", Channel::Reliable)?;
//!     }
//!     client.tick_outgoing();
//!     if echoed.is_some() {
//!         break;
//!     }
//!     // Sleep in the OS poller until a datagram arrives or a timer is due (at most 1 ms).
//!     server.wait(std::time::Duration::from_millis(1))?;
//! }
//! assert_eq!(echoed.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! ## Callback form
//! The handler borrows the message from the receive buffer and can reply through the
//! context at once:
//! ```no_run
//! # use kcpnet::{Config, Event, Server};
//! # let mut server = Server::bind("[::]:7777", Config::default()).unwrap();
//! loop {
//!     server.tick_incoming_with(|ctx, event| match event {
//!         Event::Data { id, channel, data } => {
//!             if data == b"KICK" {
//!                 let _ = ctx.disconnect(id);
//!             } else {
//!                 let _ = ctx.send(id, data, channel);
//!             }
//!         }
//!         Event::Error { id, code, message } => eprintln!("{id}: {code}: {message}"),
//!         _ => {}
//!     });
//!     server.tick_outgoing();
//!     server.wait(std::time::Duration::from_millis(16)).unwrap();
//! }
//! ```
//!
//! ## Testing under a bad network
//! Every server and client made by [`Server::bind`] / [`Client::connect`] sends and receives
//! through a [`io::LinkConditioner`] whose conditions start perfect and can be changed at any
//! time. For tests, the same endpoints run over an in-memory network with a virtual clock, so
//! a whole session is deterministic and takes microseconds of CPU per simulated second:
//! ```
//! use std::time::Duration;
//! use kcpnet::io::{Conditions, Direction, LinkConditioner, ManualClock, MemoryNetwork};
//! use kcpnet::{Channel, Client, Config, Event, Server};
//!
//! let net = MemoryNetwork::new();
//! let clock = ManualClock::new();
//! let server_addr = "10.0.0.1:7777".parse().unwrap();
//! let socket = net.bind(server_addr).unwrap();
//! let mut server = Server::with_conditioned_transport(
//!     LinkConditioner::new(socket, 1), // seeded: the same run every time
//!     Box::new(clock.clone()),
//!     Config::default(),
//! ).unwrap();
//! let socket = net.bind("10.0.0.2:5000".parse().unwrap()).unwrap();
//! let mut client = Client::with_conditioned_transport(
//!     LinkConditioner::new(socket, 2),
//!     Box::new(clock.clone()),
//!     server_addr,
//!     Config::default(),
//! ).unwrap();
//!
//! // 10% loss and 40 ms ± 10 ms on everything the server sends, 2% duplicates.
//! let bad = Conditions::lossy(0.10)
//!     .with_latency(Duration::from_millis(40))
//!     .with_jitter(Duration::from_millis(10))
//!     .with_duplicate(0.02);
//! server.set_conditions(Direction::Send, bad).unwrap();
//!
//! let mut received = 0;
//! for step in 0..5_000 {
//!     server.tick_incoming_with(|server, event| {
//!         if let Event::Data { id, channel, data } = event {
//!             server.send(id, data, channel).unwrap(); // echo
//!         }
//!     });
//!     server.tick_outgoing();
//!     client.tick_incoming();
//!     while let Some(event) = client.poll_event() {
//!         if let Event::Data { .. } = event {
//!             received += 1;
//!         }
//!     }
//!     if client.is_connected() && step % 10 == 0 && step < 2_000 {
//!         client.send(&[step as u8; 300], Channel::Reliable).unwrap();
//!     }
//!     client.tick_outgoing();
//!     clock.advance(Duration::from_millis(1)); // virtual time
//! }
//! let sent = client.connection_stats().reliable_sent;
//! assert_eq!(received, sent); // every reliable echo arrived despite the losses
//! assert!(client.connection_stats().retransmits > 0);
//! ```
//!
//! ## Why a connection ended, and how good it is
//! A kcpnet server can say why it closes a connection, and a kcpnet client receives it (a
//! kcp2k client sees a plain Disconnect); both ends can read the link's quality at any time:
//! ```
//! use std::time::Duration;
//! use kcpnet::io::{Conditions, Direction, ManualClock, MemoryNetwork};
//! use kcpnet::{Channel, Client, Config, DisconnectReason, Event, Server};
//!
//! let net = MemoryNetwork::new();
//! let clock = ManualClock::new();
//! let server_addr = "10.0.0.1:7777".parse().unwrap();
//! let mut server = Server::with_transport(
//!     Box::new(net.bind(server_addr).unwrap()),
//!     Box::new(clock.clone()),
//!     Config::default(),
//! ).unwrap();
//! let mut client = Client::with_conditioned_transport(
//!     kcpnet::io::LinkConditioner::new(net.bind("10.0.0.2:5000".parse().unwrap()).unwrap(), 7),
//!     Box::new(clock.clone()),
//!     server_addr,
//!     Config::default(),
//! ).unwrap();
//! // 5% loss and 30 ms each way on the client's link.
//! let bad = Conditions::lossy(0.05).with_latency(Duration::from_millis(30));
//! client.set_conditions(Direction::Both, bad).unwrap();
//!
//! let mut peer = None;
//! let mut reason = None;
//! for step in 0..8_000 {
//!     server.tick_incoming();
//!     while let Some(event) = server.poll_event() {
//!         if let Event::Connected { id, .. } = event {
//!             peer = Some(id);
//!         }
//!     }
//!     if step == 6_000 {
//!         let q = server.connection_quality(peer.unwrap()).unwrap();
//!         println!(
//!             "rtt {} ms (ping {:?}), loss out {:.1}% ±{:.1}, in {:.0} B/s, {} B pending",
//!             q.kcp_rtt_ms, q.ping_rtt_ms, q.loss_out.value * 100.0,
//!             q.loss_out.margin * 100.0, q.bytes_in_per_sec, q.pending_reliable_bytes,
//!         );
//!         assert!((55..=70).contains(&q.kcp_rtt_ms)); // 2 × 30 ms
//!         assert!(q.messages_in_per_sec > 90.0); // the client sends 100 a second
//!         server.disconnect_with(peer.unwrap(), 403, "kicked: speed hack").unwrap();
//!     }
//!     server.tick_outgoing();
//!
//!     client.tick_incoming();
//!     while let Some(event) = client.poll_event() {
//!         if let Event::Disconnected { reason: r, .. } = event {
//!             reason = Some(r);
//!         }
//!     }
//!     if client.is_connected() && step % 10 == 0 {
//!         client.send(&[0; 200], Channel::Reliable).unwrap();
//!     }
//!     client.tick_outgoing();
//!     clock.advance(Duration::from_millis(1));
//! }
//! match reason {
//!     Some(DisconnectReason::App { code, message }) => {
//!         assert_eq!((code, message.as_str()), (403, "kicked: speed hack"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! ## Shutting down cleanly
//! Closes send their datagrams within the call ([`Server::disconnect`],
//! [`Server::disconnect_with`], [`Server::shutdown`], and the same on [`Client`]); graceful
//! closes wait for the peer's acknowledgements. After the last close keep the endpoint
//! ticking until nothing is left to send — [`Server::linger`] / [`Client::linger`] do it —
//! then drop it:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use kcpnet::{Config, Server};
//! # let mut server = Server::bind("[::]:7777", Config::default())?;
//! server.shutdown(); // every client gets `Disconnected { reason: RemoteShutdown }`
//! server.linger(Duration::from_secs(1));
//! # Ok::<(), kcpnet::Error>(())
//! ```
//!
//! ## Layers
//! [`wire`] (datagram and segment codecs) → [`kcp`] (the ARQ core, sans-IO) → the kcp2k
//! connection state machine → the sans-IO [`endpoint::Endpoint`] (connection table,
//! admission, timers, events; usable on its own over any datagram path) → [`Server`] /
//! [`Client`] (a socket and a clock around one endpoint) over [`io`] (UDP, an in-memory
//! network, the link conditioner). See `docs/ARCHITECTURE.md`.
#![warn(missing_docs)]
// `unsafe` is denied everywhere but `io::sys` (the recvmmsg/sendmmsg wrappers).
#![deny(unsafe_code)]

mod client;
pub mod config;
mod connection;
mod driver;
pub mod endpoint;
pub mod error;
pub mod event;
#[cfg(feature = "fec")]
pub(crate) mod fec;
pub mod flags;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod kcp;
pub mod secure;
mod server;
pub mod stats;
pub mod wire;

pub use client::{resolve, Client, ClientCtx};
pub use config::{Config, Fec};
pub use connection::{ConnectionState, Extensions};
pub use driver::EventDrain;
pub use error::{Error, ErrorCode};
pub use event::{CloseMessage, ConnectionId, DisconnectReason, Event, OwnedEvent};
pub use flags::SendFlags;
pub use server::{Server, ServerCtx};
pub use stats::{ConnectionQuality, ConnectionStats, EndpointStats, LossConfidence, LossEstimate};
pub use wire::datagram::Channel;

/// The README's code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The Mirror guide's code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/MIRROR.md")]
pub struct MirrorGuideDoctests;

#[cfg(test)]
mod thread_safety {
    /// Engines (bevy) hold endpoints as ordinary resources: they must be `Send + Sync`.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Server>();
        assert_send_sync::<crate::Client>();
    };
}
