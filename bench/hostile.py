#!/usr/bin/env python3
"""Measure the orchestrator under hostile clients: RSS with N stalled unauthenticated uploads,
and a normal request's latency while M connections are held mid-handshake/mid-header.
usage (bench/hostile.sh runs it): hostile.py PID HOST:PORT MODE N [SRC]
  MODE: uploads | held | busy (connections each in a request: a head announcing a small body
  that never comes, held for the server's body grace); SRC: the hostile connections' source
  address (e.g. 127.1.2.3; the normal requests come from the default one)."""
import socket, ssl, sys, time, subprocess, json, statistics

pid, addr, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
src = (sys.argv[5], 0) if len(sys.argv) > 5 else None
host, port = addr.rsplit(":", 1); port = int(port)

def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) / 1024
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

def hello_ms():
    t = time.monotonic()
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=5))
    s.sendall(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    d = b""
    while True:
        c = s.recv(65536)
        if not c: break
        d += c
    s.close()
    assert d.startswith(b"HTTP/1.1 200"), d[:100]
    return (time.monotonic() - t) * 1000

print(f"RSS before: {rss():.1f} MB")
held = []
if mode == "uploads":
    body = b"x" * (1900 * 1024)
    for i in range(n):
        s = ctx.wrap_socket(socket.create_connection((host, port), timeout=30))
        path = "/v1/runs" if i % 2 == 0 else "/v1/agent/records"
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n".encode())
        s.setblocking(False)
        try:
            s.send(body)   # as much as the socket takes, then stall
        except (BlockingIOError, ssl.SSLWantWriteError, ConnectionError, ssl.SSLError):
            pass
        held.append(s)
    time.sleep(3)
    print(f"RSS with {n} stalled unauthenticated uploads: {rss():.1f} MB")
else:
    # TLS connections that stop mid-header (the handshake done, half a request head sent),
    # or (busy) in a request: a whole head announcing a body that does not come.
    failed = 0
    t0 = time.monotonic()
    for i in range(n):
        try:
            s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10, source_address=src))
            if mode == "busy":
                s.sendall(b"POST /v1/agent/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{")
            else:
                s.sendall(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\nX-A: ")
            held.append(s)
        except OSError:
            failed += 1
    time.sleep(1)
    what = "in a request (body stalled)" if mode == "busy" else "held mid-header"
    print(f"{len(held)} TLS connections {what}{' from ' + src[0] if src else ''} ({failed} could not connect or were closed; {time.monotonic() - t0:.1f} s to open)")
    lat, errors = [], 0
    for _ in range(20):
        try:
            lat.append(hello_ms())
        except Exception as e:
            errors += 1
    if lat:
        print(f"GET /v1/hello over a new TLS connection meanwhile: median {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms, {errors} of 20 failed")
    else:
        print(f"GET /v1/hello over a new TLS connection meanwhile: all 20 failed")
for s in held:
    try: s.close()
    except Exception: pass
time.sleep(3)
print(f"RSS after the clients left: {rss():.1f} MB")
