//! Heap allocations per message in steady state, counted by a global allocator that wraps
//! `System` and counts only on the measuring thread while a measurement is on. The crate
//! promises "no allocation per message in steady state" for both event forms.
//! Allocations are attributed to the library call that made them, so a failure names it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::io::{LinkConditioner, ManualClock, MemoryNetwork};
use kcpnet::{Channel, Client, Config, ConnectionId, Event, Server};

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    ON.with(|on| {
        if on.get() {
            COUNT.with(|c| c.set(c.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per library call (label), over a measurement.
type Tally = BTreeMap<&'static str, u64>;

/// Runs `f` with counting on and adds its allocations on this thread to `tally[label]`.
fn counted<R>(tally: &mut Tally, label: &'static str, f: impl FnOnce() -> R) -> R {
    let before = COUNT.with(|c| c.get());
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    let n = COUNT.with(|c| c.get()) - before;
    if n > 0 {
        *tally.entry(label).or_insert(0) += n;
    }
    r
}

struct Pair {
    clock: ManualClock,
    server: Server,
    client: Client,
    id: Option<ConnectionId>,
}

fn pair(seed: u64) -> Pair {
    let net = MemoryNetwork::new();
    let clock = ManualClock::starting_at(Duration::from_secs(1));
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let s = LinkConditioner::new(net.bind(server_addr).unwrap(), seed);
    let mut server =
        Server::with_transport(Box::new(s), Box::new(clock.clone()), Config::default()).unwrap();
    server.seed_cookies_for_testing(seed);
    let c = LinkConditioner::new(
        net.bind("10.0.1.1:5000".parse().unwrap()).unwrap(),
        seed + 1,
    );
    let client = Client::with_transport(
        Box::new(c),
        Box::new(clock.clone()),
        server_addr,
        Config::default(),
    )
    .unwrap();
    Pair {
        clock,
        server,
        client,
        id: None,
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Form {
    Queue,
    /// `drain_events`: reply while holding the event, no copy.
    Drain,
    Callback,
}

/// One step: the client sends `msg` (if any), the server echoes every message, the client
/// takes its events. Only library calls are counted (into `t`). Returns the messages echoed
/// back to the client.
fn step(p: &mut Pair, form: Form, msg: Option<(&[u8], Channel)>, t: &mut Tally) -> usize {
    let mut scratch = vec![0u8; 150_000];
    if let Some((m, ch)) = msg {
        counted(t, "Client::send", || p.client.send(m, ch)).unwrap();
    }
    match form {
        Form::Queue => {
            counted(t, "Server::tick_incoming", || p.server.tick_incoming());
            loop {
                let ev = counted(t, "Server::poll_event", || {
                    p.server.poll_event().map(|ev| match ev {
                        Event::Data { id, channel, data } => {
                            scratch[..data.len()].copy_from_slice(data);
                            Some((id, channel, data.len()))
                        }
                        Event::Connected { id, .. } => {
                            p.id = Some(id);
                            None
                        }
                        _ => None,
                    })
                });
                match ev {
                    None => break,
                    Some(None) => {}
                    Some(Some((id, ch, len))) => {
                        counted(t, "Server::send", || p.server.send(id, &scratch[..len], ch))
                            .unwrap();
                    }
                }
            }
        }
        Form::Drain => {
            counted(t, "Server::tick_incoming", || p.server.tick_incoming());
            let id = &mut p.id;
            let server = &mut p.server;
            counted(t, "Server::drain_events", || {
                let mut drain = server.drain_events();
                while let Some((ev, server)) = drain.next() {
                    match ev {
                        Event::Data { id, channel, data } => {
                            server.send(id, data, channel).unwrap()
                        }
                        Event::Connected { id: i, .. } => *id = Some(i),
                        _ => {}
                    }
                }
            });
        }
        Form::Callback => {
            let id = &mut p.id;
            let server = &mut p.server;
            counted(t, "Server::tick_incoming_with", || {
                server.tick_incoming_with(|ctx, ev| match ev {
                    Event::Data { id, channel, data } => ctx.send(id, data, channel).unwrap(),
                    Event::Connected { id: i, .. } => *id = Some(i),
                    _ => {}
                })
            });
        }
    }
    counted(t, "Server::tick_outgoing", || p.server.tick_outgoing());
    counted(t, "Client::tick_incoming", || p.client.tick_incoming());
    let mut echoed = 0;
    loop {
        let got = counted(t, "Client::poll_event", || match p.client.poll_event() {
            Some(Event::Data { data, .. }) => Some(msg.is_none_or(|(m, _)| m == data)),
            Some(_) => Some(true),
            None => None,
        });
        match got {
            None => break,
            Some(ok) => {
                assert!(ok, "echo differs");
                echoed += 1;
            }
        }
    }
    counted(t, "Client::tick_outgoing", || p.client.tick_outgoing());
    p.clock.advance(Duration::from_millis(1));
    echoed
}

/// Connects, warms up, then echoes 1000 messages; returns the allocations made by library
/// calls during those 1000 and how many echoes came back.
fn measure(form: Form, channel: Channel, size: usize) -> (Tally, usize) {
    let mut p = pair(42);
    let mut warm = Tally::new();
    for _ in 0..100 {
        step(&mut p, form, None, &mut warm);
        if p.client.is_connected() && p.id.is_some() {
            break;
        }
    }
    assert!(p.client.is_connected() && p.id.is_some());
    let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
    // Warm-up: several ping intervals of the same traffic, so every buffer, pool and queue
    // reached its working size.
    for _ in 0..5000 {
        step(&mut p, form, Some((&msg, channel)), &mut warm);
    }
    let mut tally = Tally::new();
    let mut echoed = 0;
    for _ in 0..1000 {
        echoed += step(&mut p, form, Some((&msg, channel)), &mut tally);
    }
    assert!(p.client.is_connected());
    (tally, echoed)
}

#[test]
fn steady_state_echo_allocates_nothing_per_message() {
    let mut report = Vec::new();
    for (channel, size) in [
        (Channel::Reliable, 100),
        (Channel::Unreliable, 100),
        (Channel::Reliable, 5000),
        (Channel::Unreliable, 1194),
    ] {
        for form in [Form::Queue, Form::Drain, Form::Callback] {
            let (tally, echoed) = measure(form, channel, size);
            let allocs: u64 = tally.values().sum();
            let name = format!(
                "{} form, {channel:?} {size} bytes",
                match form {
                    Form::Queue => "queue",
                    Form::Drain => "drain",
                    Form::Callback => "callback",
                },
            );
            println!("{name}: {allocs} allocations for {echoed} echoed messages");
            assert!(echoed >= 995, "{name}: only {echoed} echoed");
            report.push((name, tally));
        }
    }
    for (name, tally) in report {
        assert!(
            tally.is_empty(),
            "{name}: allocations in steady state: {tally:?}"
        );
    }
}

/// Large reliable messages, up to the largest (148 716 bytes, 128 fragments): one in flight
/// at a time, echoed; after 300 as a warm-up, the echoes of 20 more allocate nothing (the shared
/// buffer pool and each connection's queues have reached the windows' size).
#[test]
fn large_messages_allocate_nothing_in_steady_state() {
    for size in [60_000usize, 148_716] {
        for form in [Form::Queue, Form::Drain, Form::Callback] {
            let mut p = pair(7);
            let mut warm = Tally::new();
            for _ in 0..100 {
                step(&mut p, form, None, &mut warm);
                if p.client.is_connected() && p.id.is_some() {
                    break;
                }
            }
            let msg: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            let mut run = |rounds: usize, tally: &mut Tally| {
                let mut echoed = 0;
                for _ in 0..rounds {
                    let mut got = step(&mut p, form, Some((&msg, Channel::Reliable)), tally);
                    for _ in 0..2_000 {
                        if got > 0 {
                            break;
                        }
                        got = step(&mut p, form, None, tally);
                    }
                    echoed += got;
                }
                echoed
            };
            assert_eq!(run(300, &mut warm), 300, "{size} bytes: warm-up echoes");
            let mut tally = Tally::new();
            let echoed = run(20, &mut tally);
            println!(
                "{form:?} form, reliable {size} bytes: {} allocations for {echoed} echoes",
                tally.values().sum::<u64>()
            );
            assert_eq!(echoed, 20);
            assert!(tally.is_empty(), "{size} bytes, {form:?}: {tally:?}");
        }
    }
}
