//! The `kcpnet-agones-server` binary as a fleet manager runs it: SIGTERM with 50 connected
//! clients, each with reliable data still queued on the server: every client gets the
//! drain's reason and every message, the SDK's `Shutdown()` is called, exit code 0.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{is_reason, until, Dummy, Player};
use kcpnet::Channel;

const CLIENTS: usize = 50;
const BURST: u32 = 200;
const BURST_SIZE: usize = 1000;

/// Kills the child if the test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(envs: &[(&str, String)]) -> (Guard, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcpnet-agones-server"));
    cmd.env("KCPNET_HOST", "127.0.0.1")
        .env("KCPNET_PORT", "0")
        .env("KCPNET_METRICS_ADDR", "127.0.0.1:0")
        .env("KCPNET_LINGER_MS", "15000")
        .env_remove("AGONES_SDK_GRPC_PORT")
        .env_remove("PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the server binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Guard(child), rx)
}

/// The next log line with `event=NAME`, within `max`.
fn wait_line(rx: &mpsc::Receiver<String>, event: &str, max: Duration) -> String {
    let end = Instant::now() + max;
    let tag = format!("event={event} ");
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(&tag) => return line,
            Ok(_) => {}
            Err(e) => panic!("no `{event}` line: {e}"),
        }
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let key = format!("{key}=");
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key.as_str()))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, max: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + max;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < end,
            "the server did not exit within {max:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_50_clients_with_queued_data_then_exits_0() {
    let dummy = Dummy::start();
    let (mut child, log) = spawn(&[
        ("KCPNET_AGONES", "on".to_owned()),
        ("AGONES_SDK_GRPC_PORT", dummy.port.to_string()),
    ]);
    let listening = wait_line(&log, "listening", Duration::from_secs(30));
    let addr: SocketAddr = field(&listening, "addr").parse().unwrap();
    assert_eq!(field(&listening, "agones"), "true");
    assert!(until(Duration::from_secs(5), || dummy.state() == "Ready"));

    let mut players: Vec<Player> = (0..CLIENTS).map(|_| Player::connect(addr)).collect();
    assert!(
        until(Duration::from_secs(20), || {
            players.iter_mut().for_each(Player::tick);
            players.iter().all(|p| p.connected)
        }),
        "{} of {CLIENTS} connected",
        players.iter().filter(|p| p.connected).count()
    );
    // Each asks for a burst; once a player has its first message, the server has queued
    // the whole burst (it queues it in one go).
    let request = format!("burst {BURST} {BURST_SIZE}");
    for p in players.iter_mut() {
        p.client
            .send(request.as_bytes(), Channel::Reliable)
            .unwrap();
    }
    assert!(until(Duration::from_secs(20), || {
        players.iter_mut().for_each(Player::tick);
        players.iter().all(|p| !p.reliable.is_empty())
    }));
    let outstanding: usize = players
        .iter()
        .map(|p| BURST as usize - p.reliable.len())
        .sum();
    assert!(
        outstanding > 0,
        "some reliable data is still queued on the server at SIGTERM"
    );

    sigterm(&child.0);
    assert!(
        until(Duration::from_secs(30), || {
            players.iter_mut().for_each(Player::tick);
            players.iter().all(|p| p.reason.is_some())
        }),
        "every client was disconnected"
    );
    let status = wait_exit(&mut child.0, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit code 0");
    let mut lines = Vec::new();
    while let Ok(line) = log.try_recv() {
        lines.push(line);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("event=drain_requested cause=Signal")),
        "{lines:#?}"
    );
    let exit = lines
        .iter()
        .find(|l| l.contains("event=exit "))
        .expect("an exit line");
    assert_eq!(field(exit, "clean"), "true");
    assert_eq!(field(exit, "disconnected"), CLIENTS.to_string());
    assert_eq!(field(exit, "agones_shutdown"), "ok");
    assert_eq!(dummy.state(), "Shutdown", "the SDK's Shutdown() was called");

    for (i, p) in players.iter().enumerate() {
        assert!(
            is_reason(&p.reason, 1001, "server draining"),
            "client {i}: {:?}",
            p.reason
        );
        assert!(
            p.got_all(BURST),
            "client {i} got {} of {BURST} queued messages",
            p.reliable.len()
        );
    }
    eprintln!("{outstanding} messages were still queued at SIGTERM");
}

#[test]
fn without_agones_sigterm_drains_and_metrics_are_served() {
    let (mut child, log) = spawn(&[
        ("KCPNET_AGONES", "off".to_owned()),
        ("KCPNET_DRAIN_CODE", "4000".to_owned()),
        ("KCPNET_DRAIN_MESSAGE", "match over".to_owned()),
    ]);
    let listening = wait_line(&log, "listening", Duration::from_secs(30));
    let addr: SocketAddr = field(&listening, "addr").parse().unwrap();
    let metrics: SocketAddr = field(&listening, "metrics").parse().unwrap();
    assert_eq!(field(&listening, "agones"), "false");

    let mut players: Vec<Player> = (0..3).map(|_| Player::connect(addr)).collect();
    assert!(until(Duration::from_secs(10), || {
        players.iter_mut().for_each(Player::tick);
        players.iter().all(|p| p.connected)
    }));
    for p in players.iter_mut() {
        p.client
            .send(&7u32.to_le_bytes(), Channel::Reliable)
            .unwrap();
    }
    assert!(until(Duration::from_secs(10), || {
        players.iter_mut().for_each(Player::tick);
        players.iter().all(|p| p.reliable == [7])
    }));
    // The binary records its metrics every second: wait for a scrape that shows the 3.
    assert!(
        until(Duration::from_secs(10), || {
            players.iter_mut().for_each(Player::tick);
            scrape(metrics).contains("\nkcpnet_connections 3\n")
        }),
        "{}",
        scrape(metrics)
    );

    sigterm(&child.0);
    assert!(until(Duration::from_secs(20), || {
        players.iter_mut().for_each(Player::tick);
        players.iter().all(|p| p.reason.is_some())
    }));
    assert_eq!(
        wait_exit(&mut child.0, Duration::from_secs(20)).code(),
        Some(0)
    );
    for p in &players {
        assert!(is_reason(&p.reason, 4000, "match over"), "{:?}", p.reason);
    }
}

fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
