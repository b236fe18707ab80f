//! Harness of the `batch` fuzz target: coalesced unreliable datagrams (`kcpnet::wire::batch`,
//! `docs/PROTOCOL.md`, "Coalesced unreliable messages").
//!
//! 1. The parser on the raw bytes, checked against the format written out here: accepted
//!    exactly when the lengths tile the payload, each at least 1; the messages in order;
//!    re-encoding gives the same bytes.
//! 2. A round trip: messages cut from the input, encoded, parsed back unchanged.
//! 3. A live connection: a kcpnet server and client (sans-IO endpoints, virtual time)
//!    connect; then the input, cut into datagrams, is sent to the server as the client's
//!    coalesced datagrams (its real cookie). The server must deliver exactly the messages of
//!    the well-formed ones, in order, count each malformed one as dropped, stay connected,
//!    and stay within its memory bound.
//!
//! Shared by `fuzz/fuzz_targets/batch.rs` and the corpus replay in `tests/fuzz_corpus.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::endpoint::{Endpoint, Outbox};
use kcpnet::wire::batch::{entries, push_entry, BATCH_HEADER};
use kcpnet::wire::WireError;
use kcpnet::{Channel, Config, Event};

/// The format, written out independently: the messages, or `None` if it does not parse.
fn reference(payload: &[u8]) -> Option<Vec<&[u8]>> {
    if payload.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < payload.len() {
        if at + 2 > payload.len() {
            return None;
        }
        let len = payload[at] as usize | (payload[at + 1] as usize) << 8;
        at += 2;
        if len == 0 || at + len > payload.len() {
            return None;
        }
        out.push(&payload[at..at + len]);
        at += len;
    }
    Some(out)
}

/// One fuzz case.
pub fn run(data: &[u8]) {
    parser(data);
    round_trip(data);
    live(data);
}

fn parser(data: &[u8]) {
    let want = reference(data);
    match entries(data) {
        Ok(e) => {
            let want = want.expect("the parser accepted what the format refuses");
            assert_eq!(e.message_count(), want.len());
            let got: Vec<&[u8]> = e.collect();
            assert_eq!(got, want);
            let mut again = Vec::new();
            for m in &got {
                assert!(push_entry(&mut again, m));
            }
            assert_eq!(again, data);
        }
        Err(err) => {
            assert!(want.is_none(), "the parser refused a valid payload: {err}");
            let expected = if data.is_empty() {
                WireError::TooShort
            } else {
                WireError::BadBatch
            };
            assert_eq!(err, expected);
        }
    }
}

fn round_trip(data: &[u8]) {
    // Cut the input into messages of 1..=64 bytes, the length taken from each first byte.
    let mut msgs = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let len = (usize::from(n) % 64 + 1).min(tail.len().max(1));
        if tail.is_empty() {
            break;
        }
        msgs.push(&tail[..len.min(tail.len())]);
        rest = &tail[len.min(tail.len())..];
    }
    if msgs.is_empty() {
        return;
    }
    let mut buf = Vec::new();
    for m in &msgs {
        assert!(push_entry(&mut buf, m));
    }
    let back: Vec<&[u8]> = entries(&buf).expect("what push_entry wrote").collect();
    assert_eq!(back, msgs);
}

const SERVER: &str = "10.0.0.1:7777";
const CLIENT: &str = "10.0.0.2:5000";

/// Moves every datagram of `out` (from `from`) to `to`'s endpoint.
fn deliver(
    out: &mut Outbox,
    now: Duration,
    from: SocketAddr,
    to: &mut Endpoint,
    back: &mut Outbox,
) {
    while let Some((_, d)) = out.pop() {
        let d = d.to_vec();
        to.handle_datagram(now, from, &d, back);
    }
}

fn live(data: &[u8]) {
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let mut server = Endpoint::server(Config::default()).unwrap();
    let mut client = Endpoint::client(Config::default()).unwrap();
    let (mut to_server, mut to_client) = (Outbox::new(), Outbox::new());
    let mut now = Duration::from_secs(1);
    let cid = client.connect(now, server_addr).unwrap();
    let mut sid = None;
    // The handshake (bounded).
    for _ in 0..200 {
        client.handle_timeout(now, &mut to_server);
        client.flush(now, &mut to_server);
        deliver(
            &mut to_server,
            now,
            client_addr,
            &mut server,
            &mut to_client,
        );
        server.handle_timeout(now, &mut to_client);
        server.flush(now, &mut to_client);
        while let Some(ev) = server.poll_event() {
            if let Event::Connected { id, .. } = ev {
                sid = Some(id);
            }
        }
        deliver(
            &mut to_client,
            now,
            server_addr,
            &mut client,
            &mut to_server,
        );
        while client.poll_event().is_some() {}
        now += Duration::from_millis(5);
        if sid.is_some() && client.is_connected(cid) {
            break;
        }
    }
    let sid = sid.expect("the pair connects");
    // The cookie the client's datagrams carry: from a real one.
    let mut probe = Outbox::new();
    client
        .send(now, cid, b"probe", Channel::Unreliable, &mut probe)
        .unwrap();
    client.flush(now, &mut probe);
    let cookie: [u8; 4] = {
        let (_, d) = probe.pop().expect("the probe datagram");
        d[1..5].try_into().unwrap()
    };
    server.handle_datagram(
        now,
        client_addr,
        &[2, cookie[0], cookie[1], cookie[2], cookie[3], 4, b'p'],
        &mut to_client,
    );
    while server.poll_event().is_some() {}

    // The input, cut at each 0xFF into datagram bodies (up to 16 of them).
    let dropped0 = server.connection_stats(sid).unwrap().datagrams_dropped;
    let mut want: Vec<Vec<u8>> = Vec::new();
    let mut malformed = 0u64;
    for body in data.split(|&b| b == 0xFF).take(16) {
        let mut d = vec![2];
        d.extend_from_slice(&cookie);
        d.push(BATCH_HEADER);
        d.extend_from_slice(body);
        if d.len() > Config::default().mtu {
            continue; // longer than any datagram a socket would hand over
        }
        match reference(body) {
            Some(msgs) => want.extend(msgs.into_iter().map(<[u8]>::to_vec)),
            None => malformed += 1,
        }
        server.handle_datagram(now, client_addr, &d, &mut to_client);
    }
    server.handle_timeout(now, &mut to_client);
    let mut got = Vec::new();
    while let Some(ev) = server.poll_event() {
        match ev {
            Event::Data {
                id,
                channel: Channel::Unreliable,
                data,
            } => {
                assert_eq!(id, sid);
                got.push(data.to_vec());
            }
            Event::Data { .. } => panic!("a reliable message out of a coalesced datagram"),
            Event::Disconnected { .. } | Event::Error { .. } => {
                panic!("a coalesced datagram closed the connection")
            }
            _ => {}
        }
    }
    assert_eq!(got, want);
    let st = server.connection_stats(sid).unwrap();
    assert_eq!(st.datagrams_dropped - dropped0, malformed);
    assert!(server.is_connected(sid));
    let used = server.connection_memory(sid).unwrap();
    assert!(used <= server.connection_memory_bound(), "{used} bytes");
}
