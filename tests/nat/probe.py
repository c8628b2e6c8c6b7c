#!/usr/bin/env python3
"""Tiny UDP probe for the NAT lab (standard library only).

Every datagram is one JSON object. Addresses are "ip:port" strings. Modes:

  echo  --bind IP:PORT [--bind ...] [--ready-file F]
        Mini STUN: answers every datagram with {"seen": <source it saw>, "via": <its own
        address>, "tag": ...}. A request carrying "from": [addr, ...] (each one of the bound
        addresses) makes it first answer from each of those sockets too (like STUN's
        CHANGE-REQUEST), then from the socket that received it, marked "last": true.

  map   --bind [IP:]PORT SERVER [SERVER ...]
        From ONE local socket, asks each echo server what it sees; prints
        {"local": ..., "mapped": {server: seen-or-null}}.

  filter --bind [IP:]PORT --server S --from A [--from B ...]
        From one socket, asks echo server S to answer from S itself and from each A; prints
        {"local", "mapped", "got": {A: true|false, ...}} (which answers got through).

  reach --bind [IP:]PORT [--hello SERVER] [--end-tag TAG] [--ms N]
        Optionally says hello to an echo server first (to open a mapping) and prints
        {"event": "ready", "local", "mapped"} once listening; then reports every datagram that
        gets through until one tagged TAG arrives (plus --grace-ms) or N ms pass:
        {"event": "done", "got": [{"from", "tag"}, ...]}.

  send  [--bind [IP:]PORT] DEST --tag TAG [--count N]
        Sends N datagrams {"tag": TAG} to DEST.

  punch --bind [IP:]PORT --hello SERVER --peer-file F [--ms N]
        Hole punching: learns its mapped address from SERVER, prints {"event": "ready", ...},
        waits for F to hold the peer's mapped address, then sends to it every 20 ms. Done
        when it has heard the peer AND the peer has said it heard us, or after N ms; prints
        {"event": "done", "heard": bool, "heard_from": addr, "peer_heard": bool}.

Exit status is 0 unless the arguments are wrong or a required server never answered.
"""

import argparse
import json
import os
import select
import socket
import sys
import time


def parse_addr(s, default_ip="0.0.0.0"):
    if ":" in s:
        ip, port = s.rsplit(":", 1)
    else:
        ip, port = default_ip, s
    return (ip or default_ip, int(port))


def fmt(addr):
    return "%s:%d" % (addr[0], addr[1])


def out(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def bind(spec):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(parse_addr(spec))
    return s


def send(sock, dest, obj):
    try:
        sock.sendto(json.dumps(obj).encode(), dest)
    except OSError:
        pass  # e.g. ICMP unreachable reported on a later send: irrelevant here


def recv(sock, timeout):
    """One datagram within timeout seconds: (obj, addr) or (None, None)."""
    r, _, _ = select.select([sock], [], [], max(0.0, timeout))
    if not r:
        return None, None
    try:
        data, addr = sock.recvfrom(65535)
    except OSError:  # ICMP port unreachable from an earlier send
        return None, None
    try:
        obj = json.loads(data.decode())
    except ValueError:
        obj = {"raw": data.decode("latin-1")}
    return (obj if isinstance(obj, dict) else {"raw": obj}), addr


def ask(sock, server, req, want, timeout=2.0, tries=4):
    """Send req to server (retrying) until want(obj, addr) accepts a reply; returns
    (reply, list of all (obj, addr) received meanwhile)."""
    got = []
    deadline = time.monotonic() + timeout
    per_try = timeout / tries
    while time.monotonic() < deadline:
        send(sock, server, req)
        t_end = min(deadline, time.monotonic() + per_try)
        while time.monotonic() < t_end:
            obj, addr = recv(sock, t_end - time.monotonic())
            if obj is None:
                continue
            got.append((obj, addr))
            if want(obj, addr):
                return obj, got
    return None, got


def mode_echo(a):
    socks = {}
    for spec in a.bind:
        s = bind(spec)
        socks[fmt(s.getsockname())] = s
    if a.ready_file:
        with open(a.ready_file + ".tmp", "w") as f:
            f.write(" ".join(socks) + "\n")
        os.replace(a.ready_file + ".tmp", a.ready_file)
    out({"event": "ready", "bound": sorted(socks)})
    while True:
        r, _, _ = select.select(list(socks.values()), [], [])
        for s in r:
            try:
                data, addr = s.recvfrom(65535)
            except OSError:
                continue
            try:
                req = json.loads(data.decode())
                if not isinstance(req, dict):
                    req = {}
            except ValueError:
                req = {}
            me = fmt(s.getsockname())
            base = {"seen": fmt(addr), "tag": req.get("tag")}
            for alt in req.get("from") or []:
                if alt in socks:
                    send(socks[alt], addr, dict(base, via=alt, last=False))
            send(s, addr, dict(base, via=me, last=True))
            if a.verbose:
                out({"event": "req", "from": fmt(addr), "to": me, "tag": req.get("tag")})


def mode_map(a):
    s = bind(a.bind)
    mapped = {}
    for spec in a.servers:
        srv = parse_addr(spec)
        rep, _ = ask(s, srv, {"tag": "map"},
                     lambda o, ad, srv=srv: ad == srv and "seen" in o, a.timeout_ms / 1000.0)
        mapped[fmt(srv)] = rep["seen"] if rep else None
    out({"local": fmt(s.getsockname()), "mapped": mapped})
    return 0 if all(mapped.values()) else 1


def mode_filter(a):
    s = bind(a.bind)
    srv = parse_addr(a.server)
    alts = [fmt(parse_addr(x)) for x in a.alt]
    rep, got = ask(s, srv, {"tag": "filter", "from": alts},
                   lambda o, ad: ad == srv and o.get("last"), a.timeout_ms / 1000.0)
    if rep is not None:
        # The echo server sent the alternates before the final answer; allow stragglers.
        t_end = time.monotonic() + a.grace_ms / 1000.0
        while time.monotonic() < t_end:
            obj, addr = recv(s, t_end - time.monotonic())
            if obj is not None:
                got.append((obj, addr))
    seen_from = {fmt(addr) for _, addr in got}
    out({"local": fmt(s.getsockname()), "mapped": rep["seen"] if rep else None,
         "got": {x: x in seen_from for x in alts}})
    return 0 if rep else 1


def mode_reach(a):
    s = bind(a.bind)
    mapped = None
    if a.hello:
        srv = parse_addr(a.hello)
        rep, _ = ask(s, srv, {"tag": "hello"}, lambda o, ad: ad == srv and "seen" in o)
        if rep is None:
            out({"event": "error", "error": "no answer from %s" % a.hello})
            return 1
        mapped = rep["seen"]
    out({"event": "ready", "local": fmt(s.getsockname()), "mapped": mapped})
    got = []
    deadline = time.monotonic() + a.ms / 1000.0
    while time.monotonic() < deadline:
        obj, addr = recv(s, deadline - time.monotonic())
        if obj is None:
            continue
        got.append({"from": fmt(addr), "tag": obj.get("tag")})
        if a.end_tag and obj.get("tag") == a.end_tag:
            deadline = min(deadline, time.monotonic() + a.grace_ms / 1000.0)
    out({"event": "done", "got": got})
    return 0


def mode_send(a):
    s = bind(a.bind)
    dest = parse_addr(a.dest)
    for i in range(a.count):
        send(s, dest, {"tag": a.tag, "seq": i})
    return 0


def mode_punch(a):
    s = bind(a.bind)
    srv = parse_addr(a.hello)
    rep, _ = ask(s, srv, {"tag": "hello"}, lambda o, ad: ad == srv and "seen" in o)
    if rep is None:
        out({"event": "error", "error": "no answer from %s" % a.hello})
        return 1
    out({"event": "ready", "local": fmt(s.getsockname()), "mapped": rep["seen"]})
    deadline = time.monotonic() + a.ms / 1000.0
    peer = None
    while peer is None and time.monotonic() < deadline:
        try:
            with open(a.peer_file) as f:
                txt = f.read().strip()
            if txt:
                peer = parse_addr(txt)
                break
        except OSError:
            pass
        time.sleep(0.01)
    heard_from, peer_heard, next_send = None, False, 0.0
    while peer is not None and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            send(s, peer, {"tag": "punch", "heard": heard_from is not None})
            next_send = now + 0.02
        obj, addr = recv(s, min(next_send, deadline) - time.monotonic())
        if obj is None or obj.get("tag") != "punch":
            continue
        heard_from = heard_from or fmt(addr)
        peer_heard = peer_heard or bool(obj.get("heard"))
        if peer_heard:
            # Tell the peer we heard it a few more times, then stop.
            for _ in range(3):
                send(s, addr, {"tag": "punch", "heard": True})
            break
    out({"event": "done", "peer": fmt(peer) if peer else None, "heard": heard_from is not None,
         "heard_from": heard_from, "peer_heard": peer_heard})
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)

    e = sub.add_parser("echo")
    e.add_argument("--bind", action="append", required=True)
    e.add_argument("--ready-file")
    e.add_argument("--verbose", action="store_true")

    m = sub.add_parser("map")
    m.add_argument("--bind", default="0")
    m.add_argument("--timeout-ms", type=int, default=2000)
    m.add_argument("servers", nargs="+")

    f = sub.add_parser("filter")
    f.add_argument("--bind", default="0")
    f.add_argument("--server", required=True)
    f.add_argument("--from", dest="alt", action="append", required=True)
    f.add_argument("--timeout-ms", type=int, default=2000)
    f.add_argument("--grace-ms", type=int, default=150)

    r = sub.add_parser("reach")
    r.add_argument("--bind", required=True)
    r.add_argument("--hello")
    r.add_argument("--end-tag")
    r.add_argument("--ms", type=int, default=3000)
    r.add_argument("--grace-ms", type=int, default=150)

    s = sub.add_parser("send")
    s.add_argument("--bind", default="0")
    s.add_argument("--tag", default="probe")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("dest")

    h = sub.add_parser("punch")
    h.add_argument("--bind", required=True)
    h.add_argument("--hello", required=True)
    h.add_argument("--peer-file", required=True)
    h.add_argument("--ms", type=int, default=2000)

    a = p.parse_args(argv)
    return {"echo": mode_echo, "map": mode_map, "filter": mode_filter, "reach": mode_reach,
            "send": mode_send, "punch": mode_punch}[a.mode](a)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
