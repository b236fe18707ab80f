//! Replicated walkers under loss, in a terminal.
//!
//! A headless server app and N client apps (one process, or separate processes with
//! `--server` / `--client`) over loopback UDP through kcpnet's link conditioner. Each client
//! walks its player by sending input; the server moves a crowd of NPCs and replicates every
//! walker. Once a second the server prints one line; after `--duration` seconds movement
//! stops, and the run exits 0 once every client reports the server's exact state (a digest
//! of every walker's id and position), 1 if that does not happen within `--settle` seconds.
//!
//! ```sh
//! cargo run --release -p bevy_replicon_kcpnet --example headless
//! cargo run --release -p bevy_replicon_kcpnet --example headless -- --clients 8 --loss 0.2
//! cargo run --release -p bevy_replicon_kcpnet --example headless -- --server --port 7777 --clients 2
//! cargo run --release -p bevy_replicon_kcpnet --example headless -- --client --port 7777 --index 1
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bevy::app::{AppExit, ScheduleRunnerPlugin};
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use bevy_replicon::prelude::*;
use bevy_replicon_kcpnet::kcpnet::io::Conditions;
use bevy_replicon_kcpnet::kcpnet::Config;
use bevy_replicon_kcpnet::prelude::*;
use serde::{Deserialize, Serialize};

const HELP: &str = "\
headless: a bevy_replicon server and clients over kcpnet, under loss

USAGE: headless [--server | --client] [OPTIONS]

MODES
  (default)         server and --clients clients in this process
  --server          only the server; waits for --clients clients from other processes
  --client          only one client, connecting to --host:--port

OPTIONS
  --clients N       clients (default 4)
  --npcs N          server-driven walkers (default 32)
  --duration S      seconds of movement, from when all clients are connected (default 10)
  --settle S        seconds allowed to converge after movement stops (default 5)
  --loss P          loss probability each way, on the server's link (default 0.10)
  --latency MS      one-way latency (default 30)
  --jitter MS       extra random one-way delay (default 10)
  --rate HZ         frames per second of every app (default 60)
  --host H          server host for --client (default 127.0.0.1)
  --port P          server port (default 0 = any in one process, 7777 otherwise)
  --index K         this client's number, for its walking pattern (--client; default 0)
  --seed N          link conditioner seed (default 1)
  -h, --help        this text
";

#[derive(Debug, Clone)]
struct Args {
    mode: Mode,
    clients: usize,
    npcs: u32,
    duration: f64,
    settle: f64,
    loss: f64,
    latency_ms: u64,
    jitter_ms: u64,
    rate: f64,
    host: String,
    port: Option<u16>,
    index: u32,
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Both,
    Server,
    Client,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: Mode::Both,
        clients: 4,
        npcs: 32,
        duration: 10.0,
        settle: 5.0,
        loss: 0.10,
        latency_ms: 30,
        jitter_ms: 10,
        rate: 60.0,
        host: "127.0.0.1".into(),
        port: None,
        index: 0,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: bad value {v:?}"))
        }
        match flag.as_str() {
            "--server" => a.mode = Mode::Server,
            "--client" => a.mode = Mode::Client,
            "--clients" => a.clients = num("--clients", value("--clients")?)?,
            "--npcs" => a.npcs = num("--npcs", value("--npcs")?)?,
            "--duration" => a.duration = num("--duration", value("--duration")?)?,
            "--settle" => a.settle = num("--settle", value("--settle")?)?,
            "--loss" => a.loss = num("--loss", value("--loss")?)?,
            "--latency" => a.latency_ms = num("--latency", value("--latency")?)?,
            "--jitter" => a.jitter_ms = num("--jitter", value("--jitter")?)?,
            "--rate" => a.rate = num("--rate", value("--rate")?)?,
            "--host" => a.host = value("--host")?,
            "--port" => a.port = Some(num("--port", value("--port")?)?),
            "--index" => a.index = num("--index", value("--index")?)?,
            "--seed" => a.seed = num("--seed", value("--seed")?)?,
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other:?} (see --help)")),
        }
    }
    if !(a.rate > 0.0 && a.duration >= 0.0 && a.settle > 0.0) {
        return Err("--rate and --settle must be positive, --duration not negative".into());
    }
    Ok(a)
}

// ------------------------------------------------------------------ the replicated world

/// A walker's stable number (the same on the server and every client).
#[derive(Component, Serialize, Deserialize, Debug, Clone, Copy)]
struct Walker(u32);

/// Replicated position.
#[derive(Component, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct Position {
    x: f32,
    y: f32,
}

/// Server only: the client who walks this player.
#[derive(Component)]
struct Player {
    client: Entity,
}

/// Server only: an NPC walking a circle.
#[derive(Component)]
struct Npc {
    center: (f32, f32),
    radius: f32,
    speed: f32,
}

/// Client to server, every frame while walking (unreliable).
#[derive(Message, Serialize, Deserialize, Debug, Clone, Copy)]
struct MoveInput {
    dx: f32,
    dy: f32,
}

/// Server to clients, four times a second (reliable): the state clients should converge to.
#[derive(Message, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct ServerDigest {
    frozen: bool,
    entities: u32,
    hash: u64,
}

/// Client to server, four times a second (reliable): what the client has.
#[derive(Message, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct ClientDigest {
    entities: u32,
    hash: u64,
}

/// FNV-1a over the sorted (id, x, y) triples: equal exactly when the states are equal.
fn digest<'a>(walkers: impl Iterator<Item = (&'a Walker, &'a Position)>) -> (u32, u64) {
    let mut all: Vec<(u32, u32, u32)> = walkers
        .map(|(w, p)| (w.0, p.x.to_bits(), p.y.to_bits()))
        .collect();
    all.sort_unstable();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (id, x, y) in &all {
        for b in [id.to_le_bytes(), x.to_le_bytes(), y.to_le_bytes()]
            .iter()
            .flatten()
        {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    (all.len() as u32, hash)
}

fn base_app(rate: f64) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_secs_f64(
            1.0 / rate,
        ))),
        StatesPlugin,
        // Replicate every frame.
        RepliconPlugins.set(ServerPlugin::new(PostUpdate)),
        RepliconKcpPlugins,
    ))
    .replicate::<Walker>()
    .replicate::<Position>()
    .add_client_message::<MoveInput>(Channel::Unreliable)
    .add_client_message::<ClientDigest>(Channel::Ordered)
    .add_server_message::<ServerDigest>(Channel::Ordered);
    app
}

// ------------------------------------------------------------------------ the server app

/// How long the server waits for all its clients before giving up.
const WAIT_FOR_CLIENTS: Duration = Duration::from_secs(30);

#[derive(Resource)]
struct ServerRun {
    args: Args,
    /// When all expected clients were first connected: the movement phase starts then.
    start: Option<Instant>,
    launched: Instant,
    frame: u64,
    next_walker: u32,
    frozen_at: Option<Instant>,
    /// Each client's last digest and when it arrived.
    reports: HashMap<Entity, (ClientDigest, Instant)>,
    last_line: Instant,
    last_totals: Totals,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    sent: u64,
    received: u64,
    datagrams: u64,
    resent: u64,
}

fn server_app(args: &Args, server: KcpServer) -> App {
    let mut app = base_app(args.rate);
    let bad = Conditions::lossy(args.loss)
        .with_latency(Duration::from_millis(args.latency_ms))
        .with_jitter(Duration::from_millis(args.jitter_ms));
    let now = Instant::now();
    app.insert_resource(server)
        // Both directions of every link, on the server's socket.
        .insert_resource(KcpLinkConditions::symmetric(bad))
        .insert_resource(ServerRun {
            args: args.clone(),
            start: None,
            launched: now,
            frame: 0,
            next_walker: 0,
            frozen_at: None,
            reports: HashMap::default(),
            last_line: now,
            last_totals: Totals::default(),
        })
        .add_systems(Startup, spawn_npcs)
        .add_systems(
            Update,
            (
                apply_inputs,
                move_npcs,
                collect_reports,
                (broadcast_digest, report, verdict),
            )
                .chain()
                .run_if(in_state(ServerState::Running)),
        )
        .add_observer(spawn_player)
        .add_observer(despawn_player);
    app.world_mut()
        .resource_mut::<KcpServer>()
        .conditioner()
        .expect("bind wraps the socket in a link conditioner")
        .reseed(args.seed);
    app.finish();
    app.cleanup();
    app
}

fn spawn_npcs(mut commands: Commands, mut run: ResMut<ServerRun>) {
    for i in 0..run.args.npcs {
        let f = i as f32;
        commands.spawn((
            Replicated,
            Walker(i),
            Position { x: 0.0, y: 0.0 },
            Npc {
                center: ((f * 7.0) % 50.0, (f * 13.0) % 50.0),
                radius: 2.0 + (f % 5.0),
                speed: 0.5 + (f % 3.0) * 0.25,
            },
        ));
    }
    run.next_walker = run.args.npcs;
}

fn spawn_player(
    add: On<Add, AuthorizedClient>,
    mut commands: Commands,
    mut run: ResMut<ServerRun>,
) {
    let id = run.next_walker;
    run.next_walker += 1;
    commands.spawn((
        Replicated,
        Walker(id),
        Position { x: 25.0, y: 25.0 },
        Player { client: add.entity },
    ));
}

fn despawn_player(
    remove: On<Remove, ConnectedClient>,
    mut commands: Commands,
    players: Query<(Entity, &Player)>,
    mut run: ResMut<ServerRun>,
) {
    run.reports.remove(&remove.entity);
    for (entity, player) in &players {
        if player.client == remove.entity {
            commands.entity(entity).despawn();
        }
    }
}

fn apply_inputs(
    mut inputs: MessageReader<FromClient<MoveInput>>,
    mut players: Query<(&Player, &mut Position)>,
    run: Res<ServerRun>,
) {
    if run.frozen_at.is_some() {
        inputs.clear();
        return;
    }
    let step = 4.0 / run.args.rate as f32; // 4 units per second
    for input in inputs.read() {
        let Some(client) = input.client_id.entity() else {
            continue;
        };
        let (dx, dy) = (input.message.dx, input.message.dy);
        let len = (dx * dx + dy * dy).sqrt();
        if !len.is_finite() || len == 0.0 {
            continue;
        }
        for (player, mut position) in &mut players {
            if player.client == client {
                position.x += dx / len.max(1.0) * step;
                position.y += dy / len.max(1.0) * step;
            }
        }
    }
}

fn move_npcs(mut npcs: Query<(&Npc, &mut Position)>, mut run: ResMut<ServerRun>) {
    if run.frozen_at.is_some() {
        return;
    }
    run.frame += 1;
    let t = run.frame as f32 / run.args.rate as f32;
    for (npc, mut position) in &mut npcs {
        let a = t * npc.speed;
        *position = Position {
            x: npc.center.0 + npc.radius * a.cos(),
            y: npc.center.1 + npc.radius * a.sin(),
        };
    }
}

fn collect_reports(
    mut reports: MessageReader<FromClient<ClientDigest>>,
    mut run: ResMut<ServerRun>,
) {
    let now = Instant::now();
    for report in reports.read() {
        if let Some(client) = report.client_id.entity() {
            run.reports.insert(client, (report.message, now));
        }
    }
}

fn broadcast_digest(
    walkers: Query<(&Walker, &Position)>,
    clients: Query<(), With<AuthorizedClient>>,
    mut run: ResMut<ServerRun>,
    mut digests: MessageWriter<ToClients<ServerDigest>>,
) {
    if run.start.is_none() && clients.iter().count() >= run.args.clients {
        run.start = Some(Instant::now());
    }
    let moving_for = run.start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    if run.frozen_at.is_none() && run.start.is_some() && moving_for >= run.args.duration {
        run.frozen_at = Some(Instant::now());
        println!("-- movement stops; waiting for every client to match the server");
    }
    if run.frame.is_multiple_of((run.args.rate as u64 / 4).max(1)) || run.frozen_at.is_some() {
        let (entities, hash) = digest(walkers.iter());
        digests.write(ToClients {
            targets: SendTargets::All,
            message: ServerDigest {
                frozen: run.frozen_at.is_some(),
                entities,
                hash,
            },
        });
    }
}

fn report(
    mut run: ResMut<ServerRun>,
    server: ResMut<KcpServer>,
    walkers: Query<(), With<Walker>>,
    clients: Query<(), With<AuthorizedClient>>,
) {
    let now = Instant::now();
    let dt = now.duration_since(run.last_line).as_secs_f64();
    if dt < 1.0 {
        return;
    }
    let mut totals = Totals::default();
    let mut rtts = Vec::new();
    let ids: Vec<_> = server.connections().collect();
    for id in ids {
        let Some(s) = server.connection_stats(id) else {
            continue;
        };
        totals.sent += s.reliable_sent + s.unreliable_sent;
        totals.received += s.reliable_received + s.unreliable_received;
        totals.datagrams += s.datagrams_sent;
        totals.resent += s.retransmits + s.fast_retransmits;
        rtts.extend(s.rtt_ms);
    }
    let last = run.last_totals;
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
    let rtt = if rtts.is_empty() {
        "-".to_string()
    } else {
        format!("{}", rtts.iter().sum::<u32>() / rtts.len() as u32)
    };
    let c = server.conditioner_stats().unwrap_or_default();
    let loss = 100.0 * c.dropped as f64 / (c.sent + c.received).max(1) as f64;
    let resent = 100.0 * totals.resent.saturating_sub(last.resent) as f64
        / totals.datagrams.saturating_sub(last.datagrams).max(1) as f64;
    let replicated = run
        .reports
        .values()
        .map(|(d, _)| d.entities)
        .min()
        .unwrap_or(0);
    println!(
        "t={:>3.0}s  entities {replicated:>3}/{:<3}  clients {}/{}  msgs/s out {:>5.0} in {:>5.0}  \
         rtt {rtt:>3} ms  loss {loss:>4.1}% (resent {resent:>4.1}%)",
        run.launched.elapsed().as_secs_f64(),
        walkers.iter().count(),
        clients.iter().count(),
        run.args.clients,
        rate(totals.sent, last.sent),
        rate(totals.received, last.received),
    );
    run.last_line = now;
    run.last_totals = totals;
}

fn verdict(
    run: Res<ServerRun>,
    walkers: Query<(&Walker, &Position)>,
    clients: Query<Entity, With<AuthorizedClient>>,
    mut exit: MessageWriter<AppExit>,
) {
    let Some(frozen_at) = run.frozen_at else {
        if run.start.is_none() && run.launched.elapsed() > WAIT_FOR_CLIENTS {
            println!(
                "NOT started: {} of {} clients connected in {} s",
                clients.iter().count(),
                run.args.clients,
                WAIT_FOR_CLIENTS.as_secs()
            );
            exit.write(AppExit::error());
        }
        return;
    };
    let (entities, hash) = digest(walkers.iter());
    let connected: Vec<Entity> = clients.iter().collect();
    let matching = connected
        .iter()
        .filter(|c| {
            run.reports
                .get(*c)
                .is_some_and(|(d, at)| *at > frozen_at && d.hash == hash && d.entities == entities)
        })
        .count();
    if connected.len() >= run.args.clients && matching == connected.len() {
        println!(
            "converged: {matching}/{} clients hold the server's {entities} entities \
             (digest {hash:016x}) {:.2} s after movement stopped",
            run.args.clients,
            frozen_at.elapsed().as_secs_f64()
        );
        exit.write(AppExit::Success);
    } else if frozen_at.elapsed().as_secs_f64() > run.args.settle {
        println!(
            "NOT converged after {:.1} s: {matching} of {} connected clients match ({} expected)",
            run.args.settle,
            connected.len(),
            run.args.clients
        );
        exit.write(AppExit::error());
    }
}

// ------------------------------------------------------------------------ the client app

#[derive(Resource)]
struct ClientRun {
    index: u32,
    rate: f64,
    frame: u64,
    frozen: bool,
    /// Split mode: when the server's frozen digest matched ours.
    matched_at: Option<Instant>,
    exit_when_matched: bool,
    deadline: Instant,
}

fn client_app(args: &Args, client: KcpClient, index: u32, exit_when_matched: bool) -> App {
    let mut app = base_app(args.rate);
    app.insert_resource(client)
        .insert_resource(ClientRun {
            index,
            rate: args.rate,
            frame: 0,
            frozen: false,
            matched_at: None,
            exit_when_matched,
            deadline: Instant::now()
                + WAIT_FOR_CLIENTS
                + Duration::from_secs_f64(args.duration + args.settle),
        })
        .add_systems(
            Update,
            (walk, send_digest).run_if(in_state(ClientState::Connected)),
        )
        .add_systems(Update, (read_server_digest, client_exit).chain());
    app.finish();
    app.cleanup();
    app
}

fn walk(mut run: ResMut<ClientRun>, mut inputs: MessageWriter<MoveInput>) {
    run.frame += 1;
    if run.frozen {
        return;
    }
    // Each client walks its own circle.
    let t = run.frame as f32 / run.rate as f32;
    let a = t * (0.5 + 0.1 * run.index as f32) + run.index as f32;
    inputs.write(MoveInput {
        dx: -a.sin(),
        dy: a.cos(),
    });
}

fn send_digest(
    run: Res<ClientRun>,
    walkers: Query<(&Walker, &Position), With<Remote>>,
    mut digests: MessageWriter<ClientDigest>,
) {
    if run.frame.is_multiple_of((run.rate as u64 / 4).max(1)) || run.frozen {
        let (entities, hash) = digest(walkers.iter());
        digests.write(ClientDigest { entities, hash });
    }
}

fn read_server_digest(
    mut digests: MessageReader<ServerDigest>,
    walkers: Query<(&Walker, &Position), With<Remote>>,
    mut run: ResMut<ClientRun>,
) {
    for d in digests.read() {
        if d.frozen {
            run.frozen = true;
            let (entities, hash) = digest(walkers.iter());
            if run.matched_at.is_none() && (entities, hash) == (d.entities, d.hash) {
                run.matched_at = Some(Instant::now());
            }
        }
    }
}

fn client_exit(
    run: Res<ClientRun>,
    state: Res<State<ClientState>>,
    mut seen_connected: Local<bool>,
    mut exit: MessageWriter<AppExit>,
) {
    if !run.exit_when_matched {
        return;
    }
    *seen_connected |= *state.get() == ClientState::Connected;
    if let Some(at) = run.matched_at {
        // Stay a moment so the server also gets our matching digest.
        if at.elapsed() > Duration::from_secs(1) {
            println!("client {}: converged with the server", run.index);
            exit.write(AppExit::Success);
        }
    } else if *seen_connected && *state.get() == ClientState::Disconnected {
        println!("client {}: disconnected before converging", run.index);
        exit.write(AppExit::error());
    } else if Instant::now() > run.deadline {
        println!("client {}: no convergence before the deadline", run.index);
        exit.write(AppExit::error());
    }
}

// ------------------------------------------------------------------------------- main

fn exit_code(exit: AppExit) -> ExitCode {
    if exit.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = Config::default();
    match args.mode {
        Mode::Server => {
            let port = args.port.unwrap_or(7777);
            let server = KcpServer::bind(("127.0.0.1", port), config).unwrap();
            println!(
                "server on {}: {} NPCs, {:.0}% loss, {} ms ± {} ms each way; waiting for {} clients",
                server.local_addr().unwrap(),
                args.npcs,
                args.loss * 100.0,
                args.latency_ms,
                args.jitter_ms,
                args.clients
            );
            exit_code(server_app(&args, server).run())
        }
        Mode::Client => {
            let port = args.port.unwrap_or(7777);
            let client = KcpClient::connect((args.host.as_str(), port), config).unwrap();
            exit_code(client_app(&args, client, args.index, true).run())
        }
        Mode::Both => {
            let server =
                KcpServer::bind(("127.0.0.1", args.port.unwrap_or(0)), config.clone()).unwrap();
            let addr = server.local_addr().unwrap();
            println!(
                "server on {addr} + {} clients: {} NPCs, {:.0}% loss, {} ms ± {} ms each way, \
                 {} s of movement",
                args.clients,
                args.npcs,
                args.loss * 100.0,
                args.latency_ms,
                args.jitter_ms,
                args.duration
            );
            let mut server = server_app(&args, server);
            let mut clients: Vec<App> = (0..args.clients)
                .map(|i| {
                    let client = KcpClient::connect(addr, config.clone()).unwrap();
                    client_app(&args, client, i as u32, false)
                })
                .collect();
            // Every app at the same fixed rate, in this thread.
            let frame = Duration::from_secs_f64(1.0 / args.rate);
            let mut next = Instant::now();
            loop {
                server.update();
                for client in &mut clients {
                    client.update();
                }
                if let Some(exit) = server.should_exit() {
                    return exit_code(exit);
                }
                next += frame;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now; // running late: do not try to catch up
                }
            }
        }
    }
}
