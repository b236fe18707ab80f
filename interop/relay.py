#!/usr/bin/env python3
"""A UDP relay on 127.0.0.1 that logs every datagram of one kcp2k session, decoded.

    interop/relay.py LISTEN_PORT SERVER_PORT [--seconds S] [--payload N]

Clients connect to 127.0.0.1:LISTEN_PORT; datagrams go on to 127.0.0.1:SERVER_PORT and
the replies come back. One line per datagram on stdout: time in ms since the first one,
direction (c>s or s>c), length, channel, cookie, and either the unreliable header byte or
the KCP segments (cmd, frg, wnd, ts, sn, una, len, and for PUSH the first payload bytes).
Exits after --seconds (default 20). A diagnostic for interop/run.sh failures; not a test.
"""
import argparse
import selectors
import socket
import struct
import time

CMDS = {81: "PUSH", 82: "ACK", 83: "WASK", 84: "WINS"}
UNRELIABLE_HEADERS = {4: "Data", 5: "Disconnect"}


def decode(data: bytes, payload: int) -> str:
    if len(data) < 5:
        return f"short datagram {data.hex()}"
    channel = data[0]
    cookie = struct.unpack_from("<I", data, 1)[0]
    head = f"ch={channel} cookie={cookie:#010x}"
    body = data[5:]
    if channel == 2:
        if not body:
            return head + " unreliable, no header byte"
        name = UNRELIABLE_HEADERS.get(body[0], f"?{body[0]}")
        return head + f" unreliable {name} {len(body) - 1} bytes"
    if channel != 1:
        return head + f" invalid channel, {body[:16].hex()}"
    segs = []
    off = 0
    while len(body) - off >= 24:
        conv, cmd, frg, wnd, ts, sn, una, ln = struct.unpack_from("<IBBHIIII", body, off)
        off += 24
        seg = f"{CMDS.get(cmd, cmd)} frg={frg} wnd={wnd} ts={ts} sn={sn} una={una} len={ln}"
        if conv != 0:
            seg += f" conv={conv}"
        if cmd == 81 and ln > 0 and off < len(body):
            seg += f" [{body[off:off + payload].hex()}]"
        off += ln
        segs.append(seg)
    if off < len(body):
        segs.append(f"+{len(body) - off} trailing bytes")
    return head + " reliable: " + "; ".join(segs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("listen_port", type=int)
    ap.add_argument("server_port", type=int)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--payload", type=int, default=8, help="payload bytes shown per PUSH")
    args = ap.parse_args()

    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", args.listen_port))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    server = ("127.0.0.1", args.server_port)
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, "c>s")
    sel.register(back, selectors.EVENT_READ, "s>c")
    client = None
    start = None
    end = time.monotonic() + args.seconds
    print(f"relay 127.0.0.1:{args.listen_port} -> 127.0.0.1:{args.server_port}", flush=True)
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.1):
            sock = key.fileobj
            data, addr = sock.recvfrom(65536)
            now = time.monotonic()
            start = start or now
            if key.data == "c>s":
                client = addr
                back.sendto(data, server)
            elif client is not None:
                front.sendto(data, client)
            else:
                continue
            ms = (now - start) * 1000
            print(f"{ms:9.3f} {key.data} {len(data):5} {decode(data, args.payload)}", flush=True)


if __name__ == "__main__":
    main()
