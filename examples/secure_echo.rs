//! # Secure echo: a token issuer, a secure echo server and its client
//!
//! ```text
//! cargo run --release --example secure_echo                # self-test: all three on 127.0.0.1
//! cargo run --release --example secure_echo -- keygen --out server.key
//! cargo run --release --example secure_echo -- server --key-file server.key --port 7777 [--mixed]
//! cargo run --release --example secure_echo -- issue --key-file server.key \
//!     --server 127.0.0.1:7777 --client-id 42 --user-data team:red --out token.hex
//! cargo run --release --example secure_echo -- client --token-file token.hex
//! cargo run --release --example secure_echo -- --help
//! ```
//!
//! Secure sessions (`kcpnet::secure`, `docs/SECURITY.md`) in one program with four roles:
//!
//! * **`keygen`** writes a new random 32-byte [`PrivateKey`] as 64 hex digits: the secret the
//!   backend that issues tokens shares with the game servers.
//! * **`issue`** is the matchmaker, in a few lines ([`issue`]): from the key (`--key-file`,
//!   or `--key HEX`, which other users of the machine can see in the process list) it makes
//!   a [`ConnectToken`] for one client id, with optional user data (at most 256 bytes),
//!   valid for the named server address(es) for `--valid-secs`, and writes its 772 bytes as
//!   hex to stdout or `--out`. A real backend sends these bytes to the player's client over
//!   its own secure channel (HTTPS).
//! * **`server`** is a secure echo server: [`SecurityMode::Required`] (only clients with a
//!   valid token are admitted) or, with `--mixed`, [`SecurityMode::Mixed`] (kcp2k clients
//!   too, unauthenticated: try the `echo_client` example against it). It prints each
//!   client's client id and user data on `Connected` (from [`Server::secure_session`]) and
//!   echoes every message back on its channel. Refused tokens get no reply and no event;
//!   they are counted, and the counts are printed on exit.
//! * **`client`** reads a token (`--token-file PATH`, `-` for stdin, or `--token HEX`),
//!   connects with [`Client::connect_with_token`] to the first server it names, sends
//!   `--count` reliable messages (1 to 5000 bytes: the larger ones travel as several KCP
//!   fragments, each datagram sealed), checks that every echo comes back byte-identical and
//!   in order, and disconnects. A server that refuses the token does not answer: the
//!   attempt times out.
//!
//! **Self-test** (no role, or `selftest`): one process, one loop, real UDP on 127.0.0.1,
//! bounded by `--timeout-secs` (default 20). It makes a key, starts a `Required` server and
//! a `Mixed` server, issues tokens as the `issue` role does (through their hex text) and
//! checks that:
//!
//! * a token client of the `Required` server connects, its echoes come back right, and the
//!   server reads its client id and user data and marks it secure;
//! * the `Required` server refuses, with no event, a kcp2k client without a token, a token
//!   made under another key, an expired token, a token for another server, and the first
//!   client's token replayed from another address while that client is connected, each
//!   counted in its own [`EndpointStats`] counter;
//! * the `Mixed` server serves a token client (secure) and a kcp2k client (unauthenticated)
//!   side by side.
//!
//! Exit code: 0 when everything held (the self-test prints `VERDICT: PASS`, the client
//! "all echoes ok"), 1 on a failure or timeout, 2 on a bad command line.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kcpnet::secure::{
    ConnectToken, PrivateKey, SecureConfig, SecurityMode, TokenError, TokenParams,
};
use kcpnet::{Channel, Client, Config, ConnectionId, EndpointStats, Event, Server};

/// The protocol id of this example's tokens (a game picks its own, per game and version).
const PROTOCOL_ID: u64 = 0x6b63_706e_6574_0e01;
/// Sizes of the client's reliable messages, in turn: 3000 and 5000 span several fragments.
const SIZES: [usize; 6] = [1, 16, 100, 1000, 3000, 5000];
/// Handshake timeout of the self-test's clients that must be refused: a refused token gets
/// no answer, so the attempt ends only at this timeout.
const REFUSED_HANDSHAKE_MS: u32 = 1000;
/// One turn of the loop sleeps this long.
const TURN: Duration = Duration::from_millis(1);

const USAGE: &str = "\
secure_echo: secure sessions (connect tokens, sealed datagrams) in one program (kcpnet example)

Usage:
  secure_echo [selftest] [--timeout-secs S]
      all roles in one process on 127.0.0.1, checks admitted and refused clients;
      exit code 0 = PASS [default timeout: 20 s]
  secure_echo keygen [--out PATH]
      writes a new random key (64 hex digits) to PATH or stdout
  secure_echo issue (--key-file PATH | --key HEX) --server ADDR [--server ADDR]...
                    --client-id N [--user-data TEXT] [--valid-secs S] [--protocol-id N]
                    [--out PATH]
      the matchmaker: a connect token for client N, valid for S seconds [default: 30] at
      the given server address(es) (as the client reaches them); 772 bytes written as hex
  secure_echo server (--key-file PATH | --key HEX) --port PORT [--bind IP]
                     [--public ADDR]... [--mixed] [--protocol-id N] [--max-seconds N]
      a secure echo server on IP:PORT [default IP: 127.0.0.1]; --public names the
      address(es) clients reach it at when they differ from the bound one (required when
      binding 0.0.0.0 or [::]); --mixed also admits kcp2k clients, unauthenticated
  secure_echo client (--token-file PATH|- | --token HEX) [--count N] [--timeout-secs S]
      connects with the token, sends N reliable messages [default: 12], checks the echoes
      [default timeout: 20 s]

The key file holds 64 hex digits (or the 32 raw bytes); --key HEX puts the key in the
process list, for trying things out only. Exit code 0 = success, 1 = failure, 2 = bad
command line. --protocol-id defaults to this example's own (0x6b63706e65740e01).";

// ---------------------------------------------------------------------- the roles

/// The matchmaker's whole job: a token for one client, valid for `valid_secs` from now at
/// `servers`, carrying `user_data` sealed for the server's eyes only.
fn issue(
    key: &PrivateKey,
    protocol_id: u64,
    client_id: u64,
    servers: &[SocketAddr],
    user_data: &[u8],
    valid_secs: u64,
) -> Result<ConnectToken, TokenError> {
    ConnectToken::generate(
        key,
        &TokenParams {
            protocol_id,
            client_id,
            server_addresses: servers.to_vec(),
            user_data: user_data.to_vec(),
            created_unix_secs: unix_now(),
            valid_secs,
        },
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The secure settings of a server with `key`, in `mode`.
fn secure_config(
    key: PrivateKey,
    protocol_id: u64,
    mode: SecurityMode,
    public: Vec<SocketAddr>,
) -> Config {
    Config {
        security: Some(SecureConfig {
            mode,
            protocol_id,
            key,
            public_addresses: public,
            cipher: Default::default(),
        }),
        ..Config::default()
    }
}

/// A client the server admitted, as its app sees it on `Connected`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Admitted {
    id: ConnectionId,
    addr: SocketAddr,
    /// Every datagram sealed ([`Server::is_secure`]).
    secure: bool,
    /// The token's client id and user data ([`Server::secure_session`]); `None` for a
    /// kcp2k client of a `Mixed` server.
    session: Option<(u64, Vec<u8>)>,
}

/// User data as text when it is printable UTF-8, else as hex.
fn show_user_data(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => format!("hex {}", hex(data)),
    }
}

/// The echo server's part of one loop turn: takes every datagram, records and prints each
/// admission (client id and user data of a token client), echoes every message on its
/// channel, flushes. `tag` prefixes its lines.
fn serve(server: &mut Server, tag: &str, admitted: &mut Vec<Admitted>) {
    server.tick_incoming_with(|ctx, event| match event {
        Event::Connected { id, addr } => {
            let session = ctx
                .secure_session(id)
                .map(|s| (s.client_id, s.user_data.to_vec()));
            let secure = ctx.is_secure(id);
            match &session {
                Some((client_id, data)) => println!(
                    "{tag}{id} connected from {addr}: client id {client_id}, user data {}, secure session",
                    show_user_data(data)
                ),
                None => println!(
                    "{tag}{id} connected from {addr}: a kcp2k client, unauthenticated{}",
                    if secure { " (but sealed?)" } else { "" }
                ),
            }
            admitted.push(Admitted {
                id,
                addr,
                secure,
                session,
            });
        }
        Event::Data { id, channel, data } => {
            if let Err(e) = ctx.send(id, data, channel) {
                println!("{tag}{id} echo of {} bytes failed: {e}", data.len());
            }
        }
        Event::AddressChanged { id, addr } => println!("{tag}{id} moved to {addr}"),
        Event::Disconnected { id, reason } => println!("{tag}{id} disconnected: {reason}"),
        Event::Error { id, code, message } => println!("{tag}{id} error {code}: {message}"),
        _ => {}
    });
    server.tick_outgoing();
}

/// The refusal counters of a server's stats, one line.
fn refusals(s: &EndpointStats) -> String {
    format!(
        "tokens refused: invalid {}, expired {}, wrong server {}, in use {}; \
         kcp2k Hellos refused {}; sealed datagrams forged {}, replayed {}; unsealed dropped {}; \
         migrations {}",
        s.tokens_invalid,
        s.tokens_expired,
        s.tokens_wrong_server,
        s.tokens_in_use,
        s.refused_unauthenticated,
        s.sealed_forged,
        s.sealed_replayed,
        s.unsealed_dropped,
        s.migrations
    )
}

/// Message `n` of the client: "echo #n " then bytes derived from `n`, `SIZES[n % 6]` long.
fn message(n: usize) -> Vec<u8> {
    let len = SIZES[n % SIZES.len()];
    let mut m = format!("echo #{n} ").into_bytes();
    let mut x = (n as u32).wrapping_mul(0x9E37_79B9) | 1;
    while m.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        m.push(x as u8);
    }
    m.truncate(len);
    m
}

/// What a client of the self-test (or the `client` role) is there to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Connects, sends `count` messages, gets every echo back right, disconnects.
    Echo { count: usize },
    /// Is never admitted: its attempt ends (no answer, so a timeout) without `Connected`.
    Refused,
}

/// One client and its checks, driven a loop turn at a time by [`Peer::step`].
struct Peer {
    name: String,
    client: Client,
    expect: Expect,
    /// Connects with a token (a secure session), not as a kcp2k client.
    with_token: bool,
    /// Messages sent and not echoed yet, oldest first.
    waiting: VecDeque<Vec<u8>>,
    sent: usize,
    echoed: usize,
    connected: bool,
    /// May disconnect once its echoes are back (the self-test holds the first client until
    /// the replayed copy of its token has been refused).
    release: bool,
    leaving: bool,
    outcome: Option<Result<String, String>>,
}

impl Peer {
    fn new(name: impl Into<String>, client: Client, with_token: bool, expect: Expect) -> Peer {
        Peer {
            name: name.into(),
            client,
            expect,
            with_token,
            waiting: VecDeque::new(),
            sent: 0,
            echoed: 0,
            connected: false,
            release: true,
            leaving: false,
            outcome: None,
        }
    }

    /// How its datagrams travel.
    fn wire(&self) -> &'static str {
        if self.with_token {
            "secure session, every datagram sealed"
        } else {
            "kcp2k wire, unauthenticated, in clear"
        }
    }

    fn done(&self) -> bool {
        self.outcome.is_some()
    }

    fn finish(&mut self, result: Result<String, String>) {
        if self.outcome.is_none() {
            match &result {
                Ok(what) => println!("[{}] {what}", self.name),
                Err(why) => println!("[{}] FAILED: {why}", self.name),
            }
            self.outcome = Some(result);
        }
    }

    /// One loop turn: receive, check, send, flush.
    fn step(&mut self) {
        if self.done() {
            return;
        }
        self.client.tick_incoming();
        let mut just_connected = false;
        let mut result = None;
        while let Some(event) = self.client.poll_event() {
            match (event, self.expect) {
                (Event::Connected { .. }, Expect::Echo { .. }) => {
                    self.connected = true;
                    just_connected = true;
                }
                (Event::Connected { .. }, Expect::Refused) => {
                    self.connected = true;
                    result = Some(Err("admitted, but should have been refused".to_string()));
                }
                (Event::Data { channel, data, .. }, Expect::Echo { .. }) => {
                    let expected = self.waiting.pop_front();
                    if channel != Channel::Reliable || expected.as_deref() != Some(data) {
                        result = Some(Err(format!(
                            "echo #{} wrong: {} bytes on {channel}, expected {:?} bytes",
                            self.echoed,
                            data.len(),
                            expected.map(|m| m.len())
                        )));
                    } else {
                        self.echoed += 1;
                    }
                }
                (Event::Error { code, message, .. }, Expect::Refused) => {
                    result.get_or_insert(Ok(format!(
                        "refused as expected: no answer from the server ({code}: {message})"
                    )));
                }
                (Event::Disconnected { reason, .. }, Expect::Refused) => {
                    result.get_or_insert(Ok(format!("refused as expected ({reason})")));
                }
                (Event::Error { code, message, .. }, Expect::Echo { .. }) if !self.leaving => {
                    result.get_or_insert(Err(format!("error {code}: {message}")));
                }
                (Event::Disconnected { reason, .. }, Expect::Echo { count }) => {
                    result.get_or_insert(if self.leaving {
                        Ok(format!(
                            "{}/{count} echoes ok (1 to 5000 bytes; {}); disconnected: {reason}",
                            self.echoed,
                            self.wire()
                        ))
                    } else {
                        Err(format!("disconnected unexpectedly: {reason}"))
                    });
                }
                _ => {}
            }
        }
        if just_connected {
            println!(
                "[{}] connected to {} ({})",
                self.name,
                self.client.remote_addr(),
                self.wire()
            );
        }
        if let Expect::Echo { count } = self.expect {
            if self.connected && !self.leaving && result.is_none() {
                while self.sent < count {
                    let m = message(self.sent);
                    if let Err(e) = self.client.send(&m, Channel::Reliable) {
                        result = Some(Err(format!("send #{} failed: {e}", self.sent)));
                        break;
                    }
                    self.waiting.push_back(m);
                    self.sent += 1;
                }
                if self.echoed == count && self.release {
                    self.leaving = true;
                    self.client.disconnect_graceful();
                }
            }
        }
        self.client.tick_outgoing();
        if let Some(r) = result {
            if r.is_err() {
                self.client.disconnect();
            }
            self.finish(r);
        }
    }
}

// ------------------------------------------------------------------ the self-test

/// The self-test: see the module docs. `Ok(true)` on PASS.
fn selftest(timeout: Duration) -> Result<bool, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    println!(
        "secure_echo self-test on 127.0.0.1 (at most {} s)",
        timeout.as_secs()
    );

    // The secret the matchmaker shares with the servers, and one it does not.
    let key = PrivateKey::generate();
    let other_key = PrivateKey::generate();
    let mut required = Server::bind(
        "127.0.0.1:0",
        secure_config(key.clone(), PROTOCOL_ID, SecurityMode::Required, vec![]),
    )
    .map_err(|e| format!("cannot bind the Required server: {e}"))?;
    let mut mixed = Server::bind(
        "127.0.0.1:0",
        secure_config(key.clone(), PROTOCOL_ID, SecurityMode::Mixed, vec![]),
    )
    .map_err(|e| format!("cannot bind the Mixed server: {e}"))?;
    let r_addr = required.local_addr().map_err(|e| e.to_string())?;
    let m_addr = mixed.local_addr().map_err(|e| e.to_string())?;
    println!("[server R] listening on {r_addr}, SecurityMode::Required");
    println!("[server M] listening on {m_addr}, SecurityMode::Mixed");

    // The matchmaker's tokens, through their hex text as the `issue` role writes them.
    let through_text = |token: ConnectToken| -> Result<ConnectToken, String> {
        let bytes = unhex(&hex(token.as_bytes())).ok_or("hex round trip failed")?;
        ConnectToken::from_bytes(&bytes).map_err(|e| e.to_string())
    };
    let mint = |k: &PrivateKey, id: u64, server: SocketAddr, data: &str| {
        issue(k, PROTOCOL_ID, id, &[server], data.as_bytes(), 30)
            .map_err(|e| format!("issue: {e}"))
            .and_then(through_text)
    };
    let token1 = mint(&key, 1, r_addr, "player one; team red")?;
    let token2 = mint(&key, 2, m_addr, "player two; team blue")?;
    let forged = mint(&other_key, 3, r_addr, "not from our matchmaker")?;
    let for_m = mint(&key, 5, m_addr, "a token for server M")?;
    let expired = ConnectToken::generate(
        &key,
        &TokenParams {
            protocol_id: PROTOCOL_ID,
            client_id: 4,
            server_addresses: vec![r_addr],
            user_data: b"expired".to_vec(),
            created_unix_secs: unix_now().saturating_sub(120),
            valid_secs: 60,
        },
    )
    .map_err(|e| format!("issue: {e}"))?;
    println!(
        "[issuer] 5 tokens of {} bytes ({} hex digits): client 1 for R, client 2 for M, \
         client 3 under another key, client 4 expired, client 5 for M",
        token1.as_bytes().len(),
        2 * token1.as_bytes().len()
    );

    let refused_config = Config {
        handshake_timeout_ms: REFUSED_HANDSHAKE_MS,
        ..Config::default()
    };
    let echo = Expect::Echo { count: 12 };
    let with_token = |token: &ConnectToken, config: Config| {
        Client::connect_with_token(token, config).map_err(|e| format!("client: {e}"))
    };
    // Presents `token` to `addr`, whatever the token names.
    let misdirected = |token: &ConnectToken, addr: SocketAddr| -> Result<Client, String> {
        let mut c = Client::connect(addr, refused_config.clone()).map_err(|e| e.to_string())?;
        c.use_token(token).map_err(|e| e.to_string())?;
        Ok(c)
    };
    // A client that speaks kcp2k's wire exactly, as a Unity (kcp2k) client does.
    let plain = |addr: SocketAddr, config: Config| {
        let config = Config {
            kcpnet_extensions: false,
            ..config
        };
        Client::connect(addr, config).map_err(|e| format!("client: {e}"))
    };

    let mut peers = vec![
        Peer::new(
            "client 1 -> R, token",
            with_token(&token1, Config::default())?,
            true,
            echo,
        ),
        Peer::new(
            "kcp2k client -> R, no token",
            plain(r_addr, refused_config.clone())?,
            false,
            Expect::Refused,
        ),
        Peer::new(
            "client 3 -> R, token under another key",
            with_token(&forged, refused_config.clone())?,
            true,
            Expect::Refused,
        ),
        Peer::new(
            "client 4 -> R, expired token",
            with_token(&expired, refused_config.clone())?,
            true,
            Expect::Refused,
        ),
        Peer::new(
            "client 5 -> R, token for server M",
            misdirected(&for_m, r_addr)?,
            true,
            Expect::Refused,
        ),
        Peer::new(
            "client 2 -> M, token",
            with_token(&token2, Config::default())?,
            true,
            echo,
        ),
        Peer::new(
            "kcp2k client -> M, no token",
            plain(m_addr, Config::default())?,
            false,
            echo,
        ),
    ];
    // Client 1 stays connected until its token, replayed from another address, is refused.
    peers[0].release = false;
    let mut replay_started = false;

    let (mut admitted_r, mut admitted_m) = (Vec::new(), Vec::new());
    let mut timed_out = false;
    loop {
        serve(&mut required, "[server R] ", &mut admitted_r);
        serve(&mut mixed, "[server M] ", &mut admitted_m);
        for p in peers.iter_mut() {
            p.step();
        }
        if !replay_started && peers[0].connected {
            replay_started = true;
            let replay = Client::connect(r_addr, refused_config.clone())
                .and_then(|mut c| c.use_token(&token1).map(|()| c))
                .map_err(|e| format!("client: {e}"))?;
            peers.push(Peer::new(
                "client 1's token replayed from another address -> R",
                replay,
                true,
                Expect::Refused,
            ));
        }
        if replay_started && peers.iter().skip(1).all(Peer::done) {
            peers[0].release = true;
        }
        if peers.iter().all(Peer::done) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(TURN);
    }
    // Let the servers take the last Disconnects (bounded).
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle
        && (required.connection_count() > 0 || mixed.connection_count() > 0)
    {
        serve(&mut required, "[server R] ", &mut admitted_r);
        serve(&mut mixed, "[server M] ", &mut admitted_m);
        std::thread::sleep(TURN);
    }

    // ------------------------------------------------------------- the verdict
    let (rs, ms) = (required.stats(), mixed.stats());
    println!();
    println!("=== summary ({:.2} s) ===", start.elapsed().as_secs_f64());
    println!(
        "server R    {} connections accepted; {}",
        rs.connections_accepted,
        refusals(&rs)
    );
    println!(
        "server M    {} connections accepted; {}",
        ms.connections_accepted,
        refusals(&ms)
    );
    let mut failures = Vec::new();
    if timed_out {
        let late: Vec<&str> = peers
            .iter()
            .filter(|p| !p.done())
            .map(|p| p.name.as_str())
            .collect();
        failures.push(format!(
            "timed out after {} s waiting for: {}",
            timeout.as_secs(),
            late.join(", ")
        ));
    }
    for p in &peers {
        if let Some(Err(why)) = &p.outcome {
            failures.push(format!("{}: {why}", p.name));
        }
    }
    let session = |id: u64, data: &str| Some((id, data.as_bytes().to_vec()));
    let r_sessions: Vec<_> = admitted_r
        .iter()
        .map(|a| (a.secure, a.session.clone()))
        .collect();
    if r_sessions != [(true, session(1, "player one; team red"))] {
        failures.push(format!(
            "server R should have admitted client 1 alone, secure, with its user data; it admitted {admitted_r:?}"
        ));
    }
    let mut m_sessions: Vec<_> = admitted_m
        .iter()
        .map(|a| (a.secure, a.session.clone()))
        .collect();
    m_sessions.sort();
    if m_sessions != [(false, None), (true, session(2, "player two; team blue"))] {
        failures.push(format!(
            "server M should have admitted client 2 (secure) and one kcp2k client (not secure); it admitted {admitted_m:?}"
        ));
    }
    let counters = [
        ("tokens_invalid (another key)", rs.tokens_invalid),
        ("tokens_expired", rs.tokens_expired),
        ("tokens_wrong_server", rs.tokens_wrong_server),
        ("tokens_in_use (replayed token)", rs.tokens_in_use),
        (
            "refused_unauthenticated (kcp2k client)",
            rs.refused_unauthenticated,
        ),
    ];
    for (name, value) in counters {
        if value == 0 {
            failures.push(format!("server R counted no refusal in {name}"));
        }
    }
    for (name, s) in [("R", &rs), ("M", &ms)] {
        if s.sealed_forged > 0 {
            failures.push(format!(
                "server {name}: {} sealed datagrams failed to open on a clean loopback",
                s.sealed_forged
            ));
        }
    }
    required.shutdown();
    mixed.shutdown();

    if failures.is_empty() {
        println!(
            "VERDICT: PASS — token clients admitted with their client id and user data, \
             echoes intact; 5 bad attempts refused without an answer and counted; \
             Mixed served a kcp2k client beside a token client"
        );
        Ok(true)
    } else {
        let mut text = String::new();
        for f in &failures {
            let _ = writeln!(text, "  {f}");
        }
        print!("{text}");
        println!("VERDICT: FAIL — {}", failures[0]);
        Ok(false)
    }
}

// ---------------------------------------------------------------- hex and files

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex digits (whitespace ignored) to bytes; `None` if not hex.
fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| (b as char).to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    Some(digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
}

/// A file's bytes (`-` is stdin).
fn read_input(path: &PathBuf) -> Result<Vec<u8>, String> {
    if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(v);
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Hex text or raw bytes of exactly `len` bytes.
fn decode(raw: &[u8], len: usize, what: &str) -> Result<Vec<u8>, String> {
    if raw.len() == len {
        if let Some(v) = std::str::from_utf8(raw).ok().and_then(unhex) {
            if v.len() == len {
                return Ok(v);
            }
        }
        return Ok(raw.to_vec());
    }
    let v = std::str::from_utf8(raw)
        .ok()
        .and_then(unhex)
        .ok_or_else(|| format!("the {what} is neither {len} raw bytes nor hex"))?;
    if v.len() != len {
        return Err(format!("the {what} has {} bytes, expected {len}", v.len()));
    }
    Ok(v)
}

fn key_from(text: &[u8]) -> Result<PrivateKey, String> {
    let v = decode(text, 32, "key")?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&v);
    Ok(PrivateKey::from_bytes(k))
}

/// Writes `text` to `out` or stdout.
fn write_output(out: Option<&PathBuf>, text: &str) -> Result<(), String> {
    match out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

// --------------------------------------------------------------- command line

#[derive(Debug, Default)]
struct Args {
    role: Option<String>,
    key: Option<Vec<u8>>,
    key_file: Option<PathBuf>,
    servers: Vec<SocketAddr>,
    client_id: Option<u64>,
    user_data: Vec<u8>,
    valid_secs: Option<u64>,
    protocol_id: Option<u64>,
    out: Option<PathBuf>,
    port: Option<u16>,
    bind: Option<std::net::IpAddr>,
    public: Vec<SocketAddr>,
    mixed: bool,
    max_seconds: Option<u64>,
    token: Option<Vec<u8>>,
    token_file: Option<PathBuf>,
    count: Option<usize>,
    timeout_secs: Option<u64>,
    help: bool,
}

fn value<T>(parser: &mut lexopt::Parser, name: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = parser.value().map_err(|e| e.to_string())?;
    let text = raw.to_string_lossy();
    text.parse()
        .map_err(|e| format!("invalid value {text:?} for --{name}: {e}"))
}

/// An address, resolved if it is a name.
fn address(parser: &mut lexopt::Parser, name: &str) -> Result<SocketAddr, String> {
    let text: String = value(parser, name)?;
    text.to_socket_addrs()
        .map_err(|e| format!("--{name} {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("--{name} {text}: no address"))
}

/// A u64 in decimal or 0x-prefixed hex.
fn number(parser: &mut lexopt::Parser, name: &str) -> Result<u64, String> {
    let text: String = value(parser, name)?;
    let parsed = match text.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("invalid value {text:?} for --{name}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut a = Args::default();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Value(v) if a.role.is_none() => a.role = Some(v.to_string_lossy().into_owned()),
            Long("selftest") if a.role.is_none() => a.role = Some("selftest".into()),
            Long("key") => {
                let text: String = value(&mut parser, "key")?;
                a.key = Some(text.into_bytes());
            }
            Long("key-file") => a.key_file = Some(value(&mut parser, "key-file")?),
            Long("server") => a.servers.push(address(&mut parser, "server")?),
            Long("client-id") => a.client_id = Some(number(&mut parser, "client-id")?),
            Long("user-data") => {
                let text: String = value(&mut parser, "user-data")?;
                a.user_data = text.into_bytes();
            }
            Long("valid-secs") => a.valid_secs = Some(value(&mut parser, "valid-secs")?),
            Long("protocol-id") => a.protocol_id = Some(number(&mut parser, "protocol-id")?),
            Long("out") => a.out = Some(value(&mut parser, "out")?),
            Long("port") => a.port = Some(value(&mut parser, "port")?),
            Long("bind") => {
                let text: String = value(&mut parser, "bind")?;
                let bare = text.trim_start_matches('[').trim_end_matches(']');
                a.bind = Some(
                    bare.parse()
                        .map_err(|e| format!("--bind: invalid address {text:?}: {e}"))?,
                );
            }
            Long("public") => a.public.push(address(&mut parser, "public")?),
            Long("mixed") => a.mixed = true,
            Long("max-seconds") => a.max_seconds = Some(value(&mut parser, "max-seconds")?),
            Long("token") => {
                let text: String = value(&mut parser, "token")?;
                a.token = Some(text.into_bytes());
            }
            Long("token-file") => a.token_file = Some(value(&mut parser, "token-file")?),
            Long("count") => a.count = Some(value(&mut parser, "count")?),
            Long("timeout-secs") => a.timeout_secs = Some(value(&mut parser, "timeout-secs")?),
            Long("help") | Short('h') => a.help = true,
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(a)
}

impl Args {
    fn key(&self) -> Result<PrivateKey, String> {
        match (&self.key, &self.key_file) {
            (Some(text), None) => key_from(text),
            (None, Some(path)) => key_from(&read_input(path)?),
            _ => Err("give the key with exactly one of --key-file PATH or --key HEX".into()),
        }
    }

    fn token(&self) -> Result<ConnectToken, String> {
        let raw = match (&self.token, &self.token_file) {
            (Some(text), None) => text.clone(),
            (None, Some(path)) => read_input(path)?,
            _ => {
                return Err(
                    "give the token with exactly one of --token-file PATH or --token HEX".into(),
                )
            }
        };
        let bytes = decode(&raw, kcpnet::secure::CONNECT_TOKEN_BYTES, "token")?;
        ConnectToken::from_bytes(&bytes).map_err(|e| format!("the token: {e}"))
    }
}

/// An error of the command line (exit code 2) or of the run (exit code 1).
enum Failure {
    Usage(String),
    Run(String),
}

fn usage(e: impl Into<String>) -> Failure {
    Failure::Usage(e.into())
}

fn run(a: &Args) -> Result<bool, Failure> {
    let role = a.role.as_deref().unwrap_or("selftest");
    let timeout = Duration::from_secs(a.timeout_secs.unwrap_or(20));
    match role {
        "selftest" => selftest(timeout).map_err(Failure::Run),
        "keygen" => {
            let text = format!("{}\n", hex(PrivateKey::generate().as_bytes()));
            write_output(a.out.as_ref(), &text).map_err(Failure::Run)?;
            if let Some(path) = &a.out {
                eprintln!(
                    "keygen: wrote a new key to {} (keep it secret)",
                    path.display()
                );
            }
            Ok(true)
        }
        "issue" => {
            let key = a.key().map_err(usage)?;
            let client_id = a
                .client_id
                .ok_or_else(|| usage("--client-id is required"))?;
            let valid = a.valid_secs.unwrap_or(30);
            let token = issue(
                &key,
                a.protocol_id.unwrap_or(PROTOCOL_ID),
                client_id,
                &a.servers,
                &a.user_data,
                valid,
            )
            .map_err(|e| usage(e.to_string()))?;
            write_output(a.out.as_ref(), &format!("{}\n", hex(token.as_bytes())))
                .map_err(Failure::Run)?;
            eprintln!(
                "issue: token for client {client_id} ({} bytes, user data {} bytes), valid {valid} s at {:?}{}",
                token.as_bytes().len(),
                a.user_data.len(),
                token.server_addresses(),
                a.out
                    .as_ref()
                    .map_or(String::new(), |p| format!(", written to {}", p.display()))
            );
            Ok(true)
        }
        "server" => run_server(a),
        "client" => run_client(a, timeout),
        other => Err(usage(format!(
            "unknown role {other:?} (selftest, keygen, issue, server or client)"
        ))),
    }
}

fn run_server(a: &Args) -> Result<bool, Failure> {
    let key = a.key().map_err(usage)?;
    let port = a.port.ok_or_else(|| usage("--port is required"))?;
    let bind = SocketAddr::new(a.bind.unwrap_or([127, 0, 0, 1].into()), port);
    let mode = if a.mixed {
        SecurityMode::Mixed
    } else {
        SecurityMode::Required
    };
    let config = secure_config(
        key,
        a.protocol_id.unwrap_or(PROTOCOL_ID),
        mode,
        a.public.clone(),
    );
    let mut server =
        Server::bind(bind, config).map_err(|e| Failure::Run(format!("cannot bind {bind}: {e}")))?;
    let local = server
        .local_addr()
        .map_err(|e| Failure::Run(e.to_string()))?;
    let public = server
        .config()
        .security
        .as_ref()
        .map(|s| s.public_addresses.clone())
        .unwrap_or_default();
    println!(
        "secure echo server on {local}, SecurityMode::{mode:?}, accepting tokens for {public:?}"
    );
    let start = Instant::now();
    let deadline = a.max_seconds.map(|s| start + Duration::from_secs(s));
    let mut admitted = Vec::new();
    loop {
        serve(&mut server, "", &mut admitted);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Err(e) = server.wait(Duration::from_millis(100)) {
            eprintln!("secure_echo: wait failed: {e}");
            std::thread::sleep(TURN);
        }
    }
    server.shutdown();
    let s = server.stats();
    println!(
        "exiting after {:.1} s: {} connections accepted; {}",
        start.elapsed().as_secs_f64(),
        s.connections_accepted,
        refusals(&s)
    );
    Ok(true)
}

fn run_client(a: &Args, timeout: Duration) -> Result<bool, Failure> {
    let token = a.token().map_err(usage)?;
    let count = a.count.unwrap_or(12);
    let now = unix_now();
    println!(
        "token for {:?}, expires in {} s",
        token.server_addresses(),
        token.expires_unix_secs() as i64 - now as i64
    );
    let client = Client::connect_with_token(&token, Config::default())
        .map_err(|e| Failure::Run(format!("cannot connect: {e}")))?;
    let mut peer = Peer::new("client", client, true, Expect::Echo { count });
    let deadline = Instant::now() + timeout;
    while !peer.done() {
        peer.step();
        if Instant::now() >= deadline {
            peer.finish(Err(format!(
                "timed out after {} s ({} of {count} echoes back{})",
                timeout.as_secs(),
                peer.echoed,
                if peer.connected {
                    ""
                } else {
                    "; never connected: a server that refuses a token does not answer"
                }
            )));
            break;
        }
        std::thread::sleep(TURN);
    }
    Ok(matches!(peer.outcome, Some(Ok(_))))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("secure_echo: error: {e}\nTry 'secure_echo --help'.");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Usage(e)) => {
            eprintln!("secure_echo: error: {e}\nTry 'secure_echo --help'.");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("secure_echo: {e}");
            println!("VERDICT: FAIL — {e}");
            ExitCode::from(1)
        }
    }
}
