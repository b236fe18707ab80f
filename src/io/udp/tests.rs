#[cfg(target_os = "linux")]
use super::batch::GSO_QUEUE_DATAGRAMS;
use super::*;
#[cfg(target_os = "linux")]
use crate::io::sys;
use std::time::Instant;

fn small_opts() -> SocketOptions {
    SocketOptions {
        dual_mode: true,
        recv_buffer_size: 256 * 1024,
        send_buffer_size: 256 * 1024,
        ..SocketOptions::default()
    }
}

/// `send_to` and `poll` (which sends a pending batch), as the drivers do per tick.
fn send(t: &mut UdpTransport, data: &[u8], to: SocketAddr) -> bool {
    let queued = t.send_to(data, to, Duration::ZERO).unwrap();
    t.poll(Duration::ZERO).unwrap();
    queued
}

/// Poll `t` for up to two seconds until a datagram arrives.
fn recv_wait(t: &mut UdpTransport, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Some(r) = t.recv_from(buf, Duration::ZERO).unwrap() {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn default_options() {
    let o = SocketOptions::default();
    assert!(o.dual_mode);
    assert_eq!(o.recv_buffer_size, 7_340_032);
    assert_eq!(o.send_buffer_size, 7_340_032);
    assert_eq!(o.batch, cfg!(target_os = "linux"));
    assert_eq!(o.dscp, None);
    assert!(!o.reuse_port);
    assert_eq!(o.gso, cfg!(target_os = "linux"));
    assert_eq!(o.gro, cfg!(target_os = "linux"));
}

#[test]
fn round_trip_v4() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    assert!(a.recv_buffer_size() > 0);
    assert!(a.send_buffer_size() > 0);
    let b_addr = b.local_addr().unwrap();
    let a_addr = a.local_addr().unwrap();
    assert!(send(&mut a, b"ping", b_addr));
    let mut buf = [0u8; 64];
    let (len, from) = recv_wait(&mut b, &mut buf).expect("datagram");
    assert_eq!(&buf[..len], b"ping");
    assert_eq!(from, a_addr);
    assert!(send(&mut b, b"pong", from));
    let (len, from) = recv_wait(&mut a, &mut buf).expect("reply");
    assert_eq!(&buf[..len], b"pong");
    assert_eq!(from, b_addr);
    assert!(!a.poll(Duration::ZERO).unwrap().connection_refused);
}

#[test]
fn connected_socket_reports_port_unreachable() {
    // A port nobody listens on: bind one, note its address, close it.
    let closed = {
        let s =
            UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        s.local_addr().unwrap()
    };
    let mut a = UdpTransport::bind_any_for(closed, &SocketOptions::default()).unwrap();
    a.connect(closed).unwrap();
    let mut buf = [0u8; 64];
    let mut refused = false;
    for _ in 0..200 {
        let _ = a.send_to(b"hello?", closed, Duration::ZERO);
        let sent = a.poll(Duration::ZERO).unwrap();
        let _ = a.recv_from(&mut buf, Duration::ZERO);
        // What the receive saw comes with the next poll.
        if sent.connection_refused || a.poll(Duration::ZERO).unwrap().connection_refused {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(refused, "ICMP port unreachable was not reported");
}

#[test]
fn truncates_to_buffer() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    send(&mut a, b"0123456789", b.local_addr().unwrap());
    let mut buf = [0u8; 4];
    let (len, _) = recv_wait(&mut b, &mut buf).expect("datagram");
    #[cfg(not(windows))]
    {
        assert_eq!(len, 4);
        assert_eq!(&buf, b"0123");
    }
    let _ = len;
}

#[test]
fn round_trip_v6_loopback() {
    let Ok(mut a) = UdpTransport::bind("[::1]:0".parse().unwrap(), &small_opts()) else {
        eprintln!("IPv6 unavailable; skipping");
        return;
    };
    let mut b = UdpTransport::bind("[::1]:0".parse().unwrap(), &small_opts()).unwrap();
    let b_addr = b.local_addr().unwrap();
    assert!(send(&mut a, b"six", b_addr));
    let mut buf = [0u8; 64];
    let (len, from) = recv_wait(&mut b, &mut buf).expect("datagram");
    assert_eq!(&buf[..len], b"six");
    assert_eq!(from, a.local_addr().unwrap());
    assert!(from.is_ipv6());
}

#[test]
fn dual_mode_reports_v4_source_and_replies() {
    let Ok(mut server) = UdpTransport::bind("[::]:0".parse().unwrap(), &small_opts()) else {
        eprintln!("IPv6 unavailable; skipping");
        return;
    };
    let port = server.local_addr().unwrap().port();
    let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let client_addr = client.local_addr().unwrap();
    let server_v4: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    assert!(send(&mut client, b"hello", server_v4));
    let mut buf = [0u8; 64];
    let (len, from) = recv_wait(&mut server, &mut buf).expect("datagram");
    assert_eq!(&buf[..len], b"hello");
    assert!(from.is_ipv4(), "source {from} should be plain IPv4");
    assert_eq!(from, client_addr);
    assert!(send(&mut server, b"reply", from));
    let (len, from) = recv_wait(&mut client, &mut buf).expect("reply");
    assert_eq!(&buf[..len], b"reply");
    assert_eq!(from, server_v4);
}

#[test]
fn nothing_pending_is_none() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
    }
}

#[test]
fn v4_socket_rejects_pure_v6_target() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let err = a
        .send_to(b"x", "[::1]:9".parse().unwrap(), Duration::ZERO)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn mapped_target_from_v4_socket_is_unmapped() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let port = b.local_addr().unwrap().port();
    let mapped = SocketAddr::V6(SocketAddrV6::new(
        Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
        port,
        0,
        0,
    ));
    assert!(send(&mut a, b"m", mapped));
    let mut buf = [0u8; 8];
    let (len, _) = recv_wait(&mut b, &mut buf).expect("datagram");
    assert_eq!(&buf[..len], b"m");
}

#[test]
fn normalise_mapped_addresses() {
    let mapped: SocketAddr = "[::ffff:10.1.2.3]:99".parse().unwrap();
    assert_eq!(
        normalise(mapped),
        "10.1.2.3:99".parse::<SocketAddr>().unwrap()
    );
    let v6: SocketAddr = "[::1]:99".parse().unwrap();
    assert_eq!(normalise(v6), v6);
    let v4: SocketAddr = "1.2.3.4:5".parse().unwrap();
    assert_eq!(normalise(v4), v4);
}

#[test]
fn bind_any_for_matches_family() {
    let t = UdpTransport::bind_any_for("127.0.0.1:9".parse().unwrap(), &small_opts()).unwrap();
    assert!(t.local_addr().unwrap().is_ipv4());
    assert_ne!(t.local_addr().unwrap().port(), 0);
    if let Ok(t) = UdpTransport::bind_any_for("[::1]:9".parse().unwrap(), &small_opts()) {
        assert!(t.local_addr().unwrap().is_ipv6());
    }
}

#[test]
fn addr_in_use_is_an_error() {
    let a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let err = UdpTransport::bind(a.local_addr().unwrap(), &small_opts()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
}

#[test]
fn register_with_mio_poll() {
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(8);
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    b.register(poll.registry(), mio::Token(7)).unwrap();
    send(&mut a, b"wake", b.local_addr().unwrap());
    let mut woke = false;
    for _ in 0..20 {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        if events
            .iter()
            .any(|e| e.token() == mio::Token(7) && e.is_readable())
        {
            woke = true;
            break;
        }
    }
    assert!(woke);
    let mut buf = [0u8; 8];
    let (len, _) = b.recv_from(&mut buf, Duration::ZERO).unwrap().unwrap();
    assert_eq!(&buf[..len], b"wake");
    b.deregister(poll.registry()).unwrap();
}

#[test]
fn wait_returns_on_a_datagram_and_on_timeout() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let mut buf = [0u8; 64];
    // Not drained yet: returns at once even with a long timeout.
    let t = Instant::now();
    a.wait(Duration::from_secs(5)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
    // Drained, nothing coming: returns after the timeout with nothing to read.
    a.wait(Duration::from_millis(30)).unwrap();
    assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
    // A datagram wakes it long before the timeout.
    send(&mut b, b"x", a.local_addr().unwrap());
    let t = Instant::now();
    a.wait(Duration::from_secs(5)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_eq!(recv_wait(&mut a, &mut buf).map(|(n, _)| n), Some(1));
}

#[test]
fn connected_socket_reports_its_source_address() {
    let server = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    let remote = server.local_addr().unwrap();
    let mut c = UdpTransport::bind_any_for(remote, &small_opts()).unwrap();
    assert!(c.local_addr().unwrap().ip().is_unspecified());
    c.connect(remote).unwrap();
    let local = c.local_addr().unwrap();
    assert_eq!(
        local.ip(),
        remote.ip(),
        "the loopback source address, not 0.0.0.0"
    );
    assert_ne!(local.port(), 0);
}

fn opts(batch: bool) -> SocketOptions {
    SocketOptions {
        batch,
        ..small_opts()
    }
}

/// Batched, with GSO and GRO as given.
fn gso_opts(gso: bool, gro: bool) -> SocketOptions {
    SocketOptions {
        gso,
        gro,
        ..opts(true)
    }
}

/// Receive until `count` datagrams arrived (or two seconds passed).
fn recv_n(t: &mut UdpTransport, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.len() < count && Instant::now() < deadline {
        match t.recv_from(&mut buf, Duration::ZERO).unwrap() {
            Some((len, from)) => got.push((buf[..len].to_vec(), from)),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    got
}

/// Datagram `i` of a test stream: its index and a length that varies.
fn payload(tag: u8, i: usize) -> Vec<u8> {
    let mut d = vec![tag; 1 + (i * 37) % 1200];
    d[0] = i as u8;
    d
}

/// 100 datagrams each way between two sockets, every tick's sends followed by a poll.
fn hundred_both_ways(a_addr: &str, b_addr: &str, batch: bool) -> Option<Vec<Vec<u8>>> {
    let mut a = UdpTransport::bind(a_addr.parse().unwrap(), &opts(batch)).ok()?;
    let mut b = UdpTransport::bind(b_addr.parse().unwrap(), &opts(batch)).unwrap();
    if batch {
        assert_eq!(a.is_batching(), cfg!(target_os = "linux"));
    } else {
        assert!(!a.is_batching());
    }
    let (a_at, b_at) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    for i in 0..100 {
        assert!(a.send_to(&payload(1, i), b_at, Duration::ZERO).unwrap());
    }
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    let at_b = recv_n(&mut b, 100);
    for i in 0..100 {
        assert!(b.send_to(&payload(2, i), a_at, Duration::ZERO).unwrap());
    }
    assert_eq!(b.poll(Duration::ZERO).unwrap().send_drops, 0);
    let at_a = recv_n(&mut a, 100);
    let mut log = Vec::new();
    for (side, got, tag, from) in [("b", at_b, 1, a_at), ("a", at_a, 2, b_at)] {
        assert_eq!(got.len(), 100, "{side} received {} of 100", got.len());
        for (i, (data, src)) in got.into_iter().enumerate() {
            assert_eq!(data, payload(tag, i), "datagram {i} at {side}");
            assert_eq!(src, from);
            log.push(data);
        }
    }
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    assert_eq!(b.poll(Duration::ZERO).unwrap().send_drops, 0);
    #[cfg(target_os = "linux")]
    if batch {
        // The runs of datagrams went through the recvmmsg ring.
        assert!(a.batch.as_ref().is_some_and(|b| b.ring.is_some()));
        assert!(b.batch.as_ref().is_some_and(|b| b.ring.is_some()));
    }
    Some(log)
}

#[test]
fn hundred_datagrams_both_ways_intact_and_in_order_v4() {
    let batched = hundred_both_ways("127.0.0.1:0", "127.0.0.1:0", true).unwrap();
    let plain = hundred_both_ways("127.0.0.1:0", "127.0.0.1:0", false).unwrap();
    assert_eq!(
        batched, plain,
        "the fallback path delivers the same datagrams"
    );
}

#[test]
fn hundred_datagrams_both_ways_v6_and_dual_mode() {
    let Some(v6) = hundred_both_ways("[::1]:0", "[::1]:0", true) else {
        eprintln!("IPv6 unavailable; skipping");
        return;
    };
    assert_eq!(v6, hundred_both_ways("[::1]:0", "[::1]:0", false).unwrap());
    // A dual-mode socket talking to an IPv4 one: mapped on the wire, plain IPv4 here.
    let mut server = UdpTransport::bind("[::]:0".parse().unwrap(), &opts(true)).unwrap();
    let port = server.local_addr().unwrap().port();
    let server_v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    for i in 0..100 {
        client
            .send_to(&payload(3, i), server_v4, Duration::ZERO)
            .unwrap();
    }
    client.poll(Duration::ZERO).unwrap();
    let got = recv_n(&mut server, 100);
    assert_eq!(got.len(), 100);
    let from = got[0].1;
    assert_eq!(from, client.local_addr().unwrap());
    for (i, (data, src)) in got.iter().enumerate() {
        assert_eq!((data, *src), (&payload(3, i), from));
    }
    for i in 0..100 {
        server
            .send_to(&payload(4, i), from, Duration::ZERO)
            .unwrap();
    }
    server.poll(Duration::ZERO).unwrap();
    let back = recv_n(&mut client, 100);
    assert_eq!(back.len(), 100);
    for (i, (data, src)) in back.iter().enumerate() {
        assert_eq!((data, *src), (&payload(4, i), server_v4));
    }
}

#[test]
fn mixed_destinations_in_one_batch() {
    for batch in [true, false] {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap();
        let mut peers: Vec<UdpTransport> = (0..3)
            .map(|_| UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
        // 90 datagrams round-robin over three peers: three sendmmsg calls of 32, 32, 26.
        for i in 0..90 {
            a.send_to(&payload(5, i), addrs[i % 3], Duration::ZERO)
                .unwrap();
        }
        a.poll(Duration::ZERO).unwrap();
        for (k, peer) in peers.iter_mut().enumerate() {
            let got = recv_n(peer, 30);
            let want: Vec<Vec<u8>> = (0..90)
                .filter(|i| i % 3 == k)
                .map(|i| payload(5, i))
                .collect();
            let data: Vec<Vec<u8>> = got.iter().map(|(d, _)| d.clone()).collect();
            assert_eq!(data, want, "peer {k}, batch {batch}");
            assert!(got.iter().all(|(_, from)| *from == a.local_addr().unwrap()));
        }
    }
}

#[test]
fn large_datagrams_are_not_truncated() {
    for batch in [true, false] {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap();
        let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(batch)).unwrap();
        let to = b.local_addr().unwrap();
        // Four small ones (the receiver then switches to recvmmsg), then large ones
        // around small ones, up to the largest IPv4 UDP payload (which is sent on its
        // own: it does not fit in a send batch with others).
        let sizes = [10, 20, 30, 40, 40_000, 1200, 65_507, 3, 60_000];
        let datagrams: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|j| (j * 7 + k) as u8).collect())
            .collect();
        for d in &datagrams {
            assert!(a.send_to(d, to, Duration::ZERO).unwrap());
        }
        a.poll(Duration::ZERO).unwrap();
        let got = recv_n(&mut b, sizes.len());
        #[cfg(target_os = "linux")]
        assert_eq!(b.batch.as_ref().is_some_and(|b| b.ring.is_some()), batch);
        let data: Vec<Vec<u8>> = got.into_iter().map(|(d, _)| d).collect();
        assert_eq!(data.len(), sizes.len(), "batch {batch}");
        for (got, want) in data.iter().zip(&datagrams) {
            assert_eq!(got.len(), want.len(), "batch {batch}");
            assert!(got == want, "batch {batch}: {} bytes differ", want.len());
        }
    }
}

#[test]
fn batch_waits_for_poll_wait_or_drop() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let to = b.local_addr().unwrap();
    let mut buf = [0u8; 16];
    assert!(a.send_to(b"one", to, Duration::ZERO).unwrap());
    if a.is_batching() {
        // Queued, not sent: nothing can arrive, and the transport says poll is due.
        assert_eq!(a.next_wakeup(), Some(Duration::ZERO));
        assert!(b.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
    }
    a.poll(Duration::ZERO).unwrap();
    assert_eq!(a.next_wakeup(), None);
    assert_eq!(recv_n(&mut b, 1)[0].0, b"one");
    // wait() sends the batch before it would sleep (a zero timeout does not sleep).
    assert!(a.send_to(b"two", to, Duration::ZERO).unwrap());
    a.wait(Duration::ZERO).unwrap();
    assert_eq!(recv_n(&mut b, 1)[0].0, b"two");
    // Dropping the transport sends what is left.
    assert!(a.send_to(b"three", to, Duration::ZERO).unwrap());
    drop(a);
    assert_eq!(recv_n(&mut b, 1)[0].0, b"three");
}

#[test]
fn a_full_batch_goes_out_without_poll() {
    // Without GSO the 32nd datagram fills the batch, which is sent then.
    let mut a =
        UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &gso_opts(false, false)).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let to = b.local_addr().unwrap();
    for i in 0..32 {
        a.send_to(&payload(6, i), to, Duration::ZERO).unwrap();
    }
    // No poll: the 32nd datagram filled the batch, which was sent then.
    let got = recv_n(&mut b, 32);
    assert_eq!(got.len(), 32);
    assert_eq!(a.next_wakeup(), None);
    // With GSO a run is one entry: 32 entries go out when a 33rd does not fit, and a
    // batch of one run when it holds 256 datagrams.
    #[cfg(target_os = "linux")]
    {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
        if !a.is_gso() {
            eprintln!("no GSO; skipping the GSO half");
            return;
        }
        for i in 0..33 {
            // Ever longer: no datagram joins the one before.
            a.send_to(&payload(6, i), to, Duration::ZERO).unwrap();
        }
        assert_eq!(recv_n(&mut b, 32).len(), 32);
        assert_eq!(a.next_wakeup(), Some(Duration::ZERO), "the 33rd waits");
        assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
        assert_eq!(recv_n(&mut b, 1)[0].0, payload(6, 32));
        for i in 0..GSO_QUEUE_DATAGRAMS {
            a.send_to(&[i as u8; 100], to, Duration::ZERO).unwrap();
        }
        assert_eq!(a.next_wakeup(), None);
        let got = recv_n(&mut b, GSO_QUEUE_DATAGRAMS);
        assert_eq!(got.len(), GSO_QUEUE_DATAGRAMS);
        for (i, (d, _)) in got.iter().enumerate() {
            assert_eq!(d, &[i as u8; 100]);
        }
        assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    }
}

#[test]
fn refused_batch_is_counted_and_flagged() {
    let closed = {
        let s = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        s.local_addr().unwrap()
    };
    let mut a = UdpTransport::bind_any_for(closed, &opts(true)).unwrap();
    a.connect(closed).unwrap();
    let mut refused = false;
    let mut dropped = 0;
    for _ in 0..200 {
        a.send_to(b"anyone?", closed, Duration::ZERO).unwrap();
        a.send_to(b"anyone?", closed, Duration::ZERO).unwrap();
        let report = a.poll(Duration::ZERO).unwrap();
        dropped += report.send_drops;
        refused |= report.connection_refused;
        if refused && dropped > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(refused, "ICMP port unreachable was not reported on send");
    if a.is_batching() {
        assert!(dropped > 0, "the refused datagram was not counted");
    } else {
        assert_eq!(dropped, 0, "the plain path reports drops through send_to");
    }
}

#[test]
fn dscp_is_set_and_read_back() {
    use socket2::SockRef;
    let opts = SocketOptions {
        dscp: Some(46),
        ..small_opts()
    };
    let v4 = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    assert_eq!(SockRef::from(v4.socket()).tos().unwrap(), 46 << 2);
    #[cfg(target_os = "linux")]
    if let Ok(v6) = UdpTransport::bind("[::1]:0".parse().unwrap(), &opts) {
        assert_eq!(SockRef::from(v6.socket()).tclass_v6().unwrap(), 46 << 2);
        assert_eq!(
            SockRef::from(v6.socket()).tos().unwrap(),
            46 << 2,
            "dual mode: IP_TOS too"
        );
    }
    let plain = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
    assert_eq!(SockRef::from(plain.socket()).tos().unwrap(), 0);
    let bad = SocketOptions {
        dscp: Some(64),
        ..small_opts()
    };
    let err = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &bad).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[cfg(target_os = "linux")]
#[test]
fn reuse_port_shards_by_client() {
    let reuse = SocketOptions {
        reuse_port: true,
        ..small_opts()
    };
    let mut shards = vec![UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &reuse).unwrap()];
    let addr = shards[0].local_addr().unwrap();
    shards.push(UdpTransport::bind(addr, &reuse).unwrap());
    // Without the option the port is taken.
    let err = UdpTransport::bind(addr, &small_opts()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

    let mut clients: Vec<UdpTransport> = (0..8)
        .map(|_| UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap())
        .collect();
    for round in 0..20 {
        for c in clients.iter_mut() {
            c.send_to(&[round], addr, Duration::ZERO).unwrap();
            c.poll(Duration::ZERO).unwrap();
        }
    }
    // Who received what: (shard, client address) -> count.
    let mut seen = std::collections::HashMap::new();
    let mut buf = [0u8; 8];
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.values().sum::<usize>() < 160 && Instant::now() < deadline {
        let mut idle = true;
        for (k, s) in shards.iter_mut().enumerate() {
            while let Some((_, from)) = s.recv_from(&mut buf, Duration::ZERO).unwrap() {
                *seen.entry((k, from)).or_insert(0usize) += 1;
                idle = false;
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(seen.values().sum::<usize>(), 160);
    for c in &clients {
        let from = c.local_addr().unwrap();
        let counts: Vec<usize> = (0..2)
            .map(|k| seen.get(&(k, from)).copied().unwrap_or(0))
            .collect();
        assert!(
            counts == [20, 0] || counts == [0, 20],
            "client {from} was split over the shards: {counts:?}"
        );
    }
}

/// The datagram counts of the pending send messages (a run of several is one GSO
/// message).
#[cfg(target_os = "linux")]
fn pending_runs(t: &UdpTransport) -> Vec<usize> {
    t.batch
        .as_ref()
        .map(|b| b.msgs.iter().map(|m| m.count).collect())
        .unwrap_or_default()
}

/// `n` bytes, distinct per `(tag, i)`.
#[cfg(target_os = "linux")]
fn filled(tag: u8, i: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|j| (j as u8).wrapping_mul(31) ^ tag ^ (i as u8).wrapping_mul(7))
        .collect()
}

/// Receive with a std socket until `count` datagrams arrived or two seconds passed.
#[cfg(target_os = "linux")]
fn std_recv_n(rx: &std::net::UdpSocket, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    rx.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.len() < count && Instant::now() < deadline {
        if let Ok((n, from)) = rx.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
        }
    }
    got
}

/// Nothing more arrives at `t` within 50 ms (no duplicate).
#[cfg(target_os = "linux")]
fn nothing_more(t: &mut UdpTransport) {
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_millis(50);
    while Instant::now() < deadline {
        if let Some((len, from)) = t.recv_from(&mut buf, Duration::ZERO).unwrap() {
            panic!("an extra {len}-byte datagram from {from}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn gso_run_to_one_peer_arrives_intact_and_in_order() {
    for (a_addr, b_addr) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
        let Ok(mut a) = UdpTransport::bind(a_addr.parse().unwrap(), &opts(true)) else {
            eprintln!("{a_addr} unavailable; skipping");
            continue;
        };
        if !a.is_gso() {
            eprintln!("no GSO; skipping");
            return;
        }
        // 40 datagrams of 1000 bytes and a short last one: one run.
        let want: Vec<Vec<u8>> = (0..41)
            .map(|i| filled(1, i, if i == 40 { 300 } else { 1000 }))
            .collect();
        // To a plain std socket.
        let plain = std::net::UdpSocket::bind(b_addr).unwrap();
        let to = plain.local_addr().unwrap();
        for d in &want {
            assert!(a.send_to(d, to, Duration::ZERO).unwrap());
        }
        assert_eq!(pending_runs(&a), [41]);
        assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
        let got = std_recv_n(&plain, want.len());
        assert_eq!(got.len(), want.len());
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(d, &want[i], "datagram {i}");
            assert_eq!(*from, a.local_addr().unwrap());
        }
        // To a GRO transport: the same datagrams, one per recv_from.
        let mut b = UdpTransport::bind(b_addr.parse().unwrap(), &opts(true)).unwrap();
        assert!(b.is_gro());
        let to = b.local_addr().unwrap();
        for d in &want {
            assert!(a.send_to(d, to, Duration::ZERO).unwrap());
        }
        assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
        let got = recv_n(&mut b, want.len());
        assert_eq!(got.len(), want.len());
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(d, &want[i], "datagram {i}");
            assert_eq!(*from, a.local_addr().unwrap());
        }
        nothing_more(&mut b);
        let sent = a.offload_stats();
        assert_eq!((sent.gso_messages, sent.gso_datagrams), (2, 82));
        assert_eq!(sent.gso_fallbacks, 0);
        let rcvd = b.offload_stats();
        assert!(rcvd.gro_buffers >= 1, "loopback coalesces for a GRO socket");
        assert!(rcvd.gro_datagrams <= 41);
        assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn gso_mixed_destinations_and_lengths_in_one_flush() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    if !a.is_gso() {
        eprintln!("no GSO; skipping");
        return;
    }
    let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut gro = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let mut no_gro =
        UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &gso_opts(true, false)).unwrap();
    let p: [SocketAddr; 3] = [
        plain.local_addr().unwrap(),
        gro.local_addr().unwrap(),
        no_gro.local_addr().unwrap(),
    ];
    // (peer, length) in send order, and the runs they form.
    let mut plan: Vec<(usize, usize)> = Vec::new();
    plan.extend([(0, 500); 5]); // run of 5
    plan.extend([(1, 800), (1, 800), (1, 800), (1, 100)]); // run of 4, short last
    plan.push((0, 500)); // same peer as before, but not consecutive: alone
    plan.extend([(2, 700); 2]); // run of 2
    plan.extend([(1, 10), (1, 20), (1, 30)]); // ever longer: three alone
    plan.extend([(1, 600), (1, 600), (1, 600), (1, 600), (1, 700)]); // 4, then 1
    plan.extend([(0, 0), (0, 0)]); // empty datagrams: alone
    plan.extend([(2, 50), (2, 50), (2, 20), (2, 20)]); // 3 (short last), then 1
    let mut want: [Vec<Vec<u8>>; 3] = Default::default();
    for (i, &(peer, len)) in plan.iter().enumerate() {
        let d = filled(2, i, len);
        assert!(a.send_to(&d, p[peer], Duration::ZERO).unwrap());
        want[peer].push(d);
    }
    let runs = pending_runs(&a);
    assert_eq!(runs, [5, 4, 1, 2, 1, 1, 1, 4, 1, 1, 1, 3, 1]);
    // Fewer entries than a sendmmsg takes: the whole flush is one syscall.
    assert!(runs.len() <= sys::MAX_BATCH);
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    let at_plain: Vec<Vec<u8>> = std_recv_n(&plain, want[0].len())
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(at_plain, want[0]);
    for (k, t) in [(1, &mut gro), (2, &mut no_gro)] {
        let got = recv_n(t, want[k].len());
        assert!(got.iter().all(|(_, from)| *from == a.local_addr().unwrap()));
        let data: Vec<Vec<u8>> = got.into_iter().map(|(d, _)| d).collect();
        assert_eq!(data, want[k], "peer {k}");
        nothing_more(t);
    }
    let stats = a.offload_stats();
    assert_eq!(stats.gso_messages, 5);
    assert_eq!(stats.gso_datagrams, 5 + 4 + 2 + 4 + 3);
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn gso_runs_longer_than_64_datagrams_are_cut() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    if !a.is_gso() {
        eprintln!("no GSO; skipping");
        return;
    }
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let to = b.local_addr().unwrap();
    // 200 datagrams of 500 bytes: cut at 64 segments. Then 100 of 1200 bytes: cut at
    // 54 (55 would exceed 65,507 bytes).
    for (count, len, runs) in [(200, 500, &[64, 64, 64, 8][..]), (100, 1200, &[54, 46])] {
        let want: Vec<Vec<u8>> = (0..count).map(|i| filled(3, i, len)).collect();
        for d in &want {
            assert!(a.send_to(d, to, Duration::ZERO).unwrap());
        }
        assert_eq!(pending_runs(&a), runs);
        assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
        let got = recv_n(&mut b, count);
        assert_eq!(got.len(), count, "{count} × {len}");
        for (i, (d, _)) in got.iter().enumerate() {
            assert_eq!(d, &want[i], "datagram {i} of {count} × {len}");
        }
    }
    nothing_more(&mut b);
    assert_eq!(a.offload_stats().gso_messages, 6);
    assert_eq!(a.offload_stats().gso_datagrams, 300);
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn forced_gso_failure_falls_back_without_loss_or_duplicates() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    if !a.is_gso() {
        eprintln!("no GSO; skipping");
        return;
    }
    let mut p = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let mut q = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let (pa, qa) = (p.local_addr().unwrap(), q.local_addr().unwrap());
    // Singles first (sent before the run fails), then runs to both peers, then more.
    let plan = [
        (pa, 10, 1),
        (qa, 20, 1),
        (pa, 30, 1),
        (pa, 700, 10),
        (qa, 300, 5),
    ];
    let mut want: [Vec<Vec<u8>>; 2] = Default::default();
    let mut i = 0;
    for &(to, len, n) in &plan {
        for _ in 0..n {
            let d = filled(4, i, len);
            i += 1;
            a.send_to(&d, to, Duration::ZERO).unwrap();
            want[usize::from(to == qa)].push(d);
        }
    }
    a.send_to(b"last", pa, Duration::ZERO).unwrap();
    want[0].push(b"last".to_vec());
    assert_eq!(pending_runs(&a), [1, 1, 1, 10, 5, 1]);
    a.batch.as_mut().unwrap().fail_gso = 1;
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    assert!(!a.is_gso(), "the refusal turns GSO off");
    assert!(a.is_batching(), "batching stays on");
    let stats = a.offload_stats();
    assert_eq!((stats.gso_messages, stats.gso_fallbacks), (0, 1));
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    for (k, t) in [(0, &mut p), (1, &mut q)] {
        let data: Vec<Vec<u8>> = recv_n(t, want[k].len())
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(data, want[k], "peer {k}");
        nothing_more(t);
    }
    // From now on no runs form.
    for _ in 0..3 {
        a.send_to(&[9; 100], pa, Duration::ZERO).unwrap();
    }
    assert_eq!(pending_runs(&a), [1, 1, 1]);
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    assert_eq!(recv_n(&mut p, 3).len(), 3);
}

#[cfg(target_os = "linux")]
#[test]
fn kernel_gso_refusal_falls_back_and_leaves_no_socket_error() {
    use std::os::fd::AsRawFd;
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    if !a.is_gso() {
        eprintln!("no GSO; skipping");
        return;
    }
    // Without UDP checksums the kernel refuses GSO with EINVAL.
    sys::set_no_check(a.socket.as_raw_fd()).unwrap();
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    let to = b.local_addr().unwrap();
    // A single datagram first: sendmmsg sends it, fails on the run and records the
    // error on the socket, where a receive would find it.
    let mut want = vec![filled(5, 0, 40)];
    want.extend((1..9).map(|i| filled(5, i, 900)));
    for d in &want {
        a.send_to(d, to, Duration::ZERO).unwrap();
    }
    assert_eq!(pending_runs(&a), [1, 8]);
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    assert!(!a.is_gso());
    assert_eq!(a.offload_stats().gso_fallbacks, 1);
    assert_eq!(a.poll(Duration::ZERO).unwrap().send_drops, 0);
    let data: Vec<Vec<u8>> = recv_n(&mut b, want.len())
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(data, want);
    nothing_more(&mut b);
    // No EINVAL left for the next receive.
    let mut buf = [0u8; 64];
    assert!(a.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
    assert!(a.socket.take_error().unwrap().is_none());
}

#[cfg(target_os = "linux")]
#[test]
fn refused_gso_run_counts_every_datagram() {
    let closed = {
        let s = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &small_opts()).unwrap();
        s.local_addr().unwrap()
    };
    let mut a = UdpTransport::bind_any_for(closed, &opts(true)).unwrap();
    if !a.is_gso() {
        eprintln!("no GSO; skipping");
        return;
    }
    a.connect(closed).unwrap();
    let (mut refused, mut dropped) = (false, 0);
    for _ in 0..200 {
        for _ in 0..3 {
            a.send_to(b"anyone?", closed, Duration::ZERO).unwrap();
        }
        assert_eq!(pending_runs(&a), [3]);
        let report = a.poll(Duration::ZERO).unwrap();
        dropped += report.send_drops;
        refused |= report.connection_refused;
        if refused && dropped > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(refused, "ICMP port unreachable was not reported on send");
    assert!(dropped > 0);
    assert_eq!(
        dropped % 3,
        0,
        "a refused run drops each of its 3 datagrams"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn gro_splits_coalesced_buffers_on_every_receive_path() {
    let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    if !a.is_gso() {
        eprintln!("no GSO; skipping");
        return;
    }
    let mut b = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    if !b.is_gro() {
        eprintln!("no GRO; skipping");
        return;
    }
    let (to, from) = (b.local_addr().unwrap(), a.local_addr().unwrap());
    let run = |a: &mut UdpTransport, tag: u8, n: usize, len: usize| -> Vec<Vec<u8>> {
        let want: Vec<Vec<u8>> = (0..n).map(|i| filled(tag, i, len)).collect();
        for d in &want {
            a.send_to(d, to, Duration::ZERO).unwrap();
        }
        a.poll(Duration::ZERO).unwrap();
        want
    };
    // 1. Outside a burst: a recvmmsg of a few messages got one coalesced buffer.
    let want = run(&mut a, 6, 30, 1000);
    let mut buf = vec![0u8; 65_536];
    let (len, src) = recv_wait(&mut b, &mut buf).unwrap();
    assert_eq!((&buf[..len], src), (&want[0][..], from));
    assert!(
        !b.batch.as_ref().unwrap().recv_burst,
        "one message: no burst"
    );
    let rest = recv_n(&mut b, 29);
    assert_eq!(rest.len(), 29);
    for (i, (d, src)) in rest.iter().enumerate() {
        assert_eq!((d, *src), (&want[i + 1], from));
    }
    let stats = b.offload_stats();
    assert_eq!((stats.gro_buffers, stats.gro_datagrams), (1, 30));
    // 2. In a burst: through recvmmsg.
    b.batch.as_mut().unwrap().recv_burst = true;
    let want = run(&mut a, 7, 20, 1100);
    let got = recv_n(&mut b, 20);
    assert_eq!(got.len(), 20);
    for (i, (d, src)) in got.iter().enumerate() {
        assert_eq!((d, *src), (&want[i], from));
    }
    assert_eq!(b.offload_stats().gro_buffers, 2);
    // 3. A caller's buffer shorter than 64 KiB: served through the ring, nothing cut.
    b.batch.as_mut().unwrap().recv_burst = false;
    let want = run(&mut a, 8, 10, 1500);
    let mut small = [0u8; 2000];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.len() < 10 && Instant::now() < deadline {
        match b.recv_from(&mut small, Duration::ZERO).unwrap() {
            Some((len, src)) => got.push((small[..len].to_vec(), src)),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert_eq!(got.len(), 10);
    for (i, (d, src)) in got.iter().enumerate() {
        assert_eq!((d, *src), (&want[i], from));
    }
    nothing_more(&mut b);
    assert_eq!(b.offload_stats().gro_buffers, 3);
}

#[cfg(target_os = "linux")]
#[test]
fn gso_and_gro_through_a_dual_mode_socket() {
    let Ok(mut server) = UdpTransport::bind("[::]:0".parse().unwrap(), &opts(true)) else {
        eprintln!("IPv6 unavailable; skipping");
        return;
    };
    let mut client = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(true)).unwrap();
    if !client.is_gso() || !server.is_gso() || !server.is_gro() {
        eprintln!("no GSO/GRO; skipping");
        return;
    }
    let port = server.local_addr().unwrap().port();
    let server_v4 = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let want: Vec<Vec<u8>> = (0..25).map(|i| filled(9, i, 1200)).collect();
    for d in &want {
        client.send_to(d, server_v4, Duration::ZERO).unwrap();
    }
    client.poll(Duration::ZERO).unwrap();
    let got = recv_n(&mut server, want.len());
    let from = client.local_addr().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (d, src)) in got.iter().enumerate() {
        assert_eq!((d, *src), (&want[i], from), "datagram {i}");
    }
    assert!(server.offload_stats().gro_buffers >= 1);
    // Back through the IPv6 socket to the IPv4 peer (an IPv4-mapped destination).
    for d in &want {
        server.send_to(d, from, Duration::ZERO).unwrap();
    }
    assert_eq!(pending_runs(&server), [25]);
    server.poll(Duration::ZERO).unwrap();
    assert_eq!(server.offload_stats().gso_messages, 1);
    let back = recv_n(&mut client, want.len());
    assert_eq!(back.len(), want.len());
    for (i, (d, src)) in back.iter().enumerate() {
        assert_eq!((d, *src), (&want[i], server_v4), "datagram {i} back");
    }
}

#[test]
fn offload_needs_batching() {
    let opts = SocketOptions {
        batch: false,
        ..gso_opts(true, true)
    };
    let a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    assert!(!a.is_gso());
    assert!(!a.is_gro());
    assert_eq!(a.offload_stats(), OffloadStats::default());
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        assert!(!sys::gro_enabled(a.socket.as_raw_fd()).unwrap());
        let b =
            UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &gso_opts(false, false)).unwrap();
        assert!(!b.is_gso());
        assert!(!b.is_gro());
        assert!(!sys::gro_enabled(b.socket.as_raw_fd()).unwrap());
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_short_recvmmsg_ends_the_receive_loop_without_a_syscall() {
    for gro in [false, true] {
        let mut a = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts(false)).unwrap();
        let mut b =
            UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &gso_opts(false, gro)).unwrap();
        let to = b.local_addr().unwrap();
        send(&mut a, b"one", to);
        let mut buf = vec![0u8; 65_536];
        let (len, _) = recv_wait(&mut b, &mut buf).unwrap();
        assert_eq!(&buf[..len], b"one");
        let batch = b.batch.as_ref().unwrap();
        assert!(
            batch.skip_recv_syscall,
            "one message of a few asked: found empty"
        );
        assert!(!batch.recv_burst);
        assert!(!b.status.drained);
        // The next receive answers from that, without a syscall, and allows `wait` to sleep.
        assert!(b.recv_from(&mut buf, Duration::ZERO).unwrap().is_none());
        assert!(b.status.drained);
        assert!(!b.batch.as_ref().unwrap().skip_recv_syscall);
        // Then the socket is asked again: a datagram sent since is received.
        send(&mut a, b"two", to);
        let (len, _) = recv_wait(&mut b, &mut buf).unwrap();
        assert_eq!(&buf[..len], b"two");
    }
}
