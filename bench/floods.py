#!/usr/bin/env python3
"""Walnut's resident memory under the floods of tests/tests/hostile.rs, with the release binary:
the figures the README's "Memory per client" paragraph gives.

    cargo build --release -p walnut && python3 bench/floods.py [--walnut PATH]

Each case starts a fresh walnut (-w 2) over fresh memcached processes on loopback, runs the
flood, and prints walnut's RSS before, at its peak (VmHWM) and after.
"""

import argparse
import os
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=10.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class Memcached:
    def __init__(self, megabytes=1024):
        self.port = free_port()
        self.p = subprocess.Popen(
            ["memcached", "-p", str(self.port), "-l", "127.0.0.1", "-U", "0", "-t", "1",
             "-m", str(megabytes), "-u", "root"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        self.p.kill()
        self.p.wait()


class Deaf:
    """Accepts connections and never reads them."""

    def __init__(self):
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(64)
        self.port = self.s.getsockname()[1]
        self.held = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                self.held.append(self.s.accept()[0])
            except OSError:
                return

    def stop(self):
        self.s.close()


class Walnut:
    def __init__(self, binary, servers, extra=""):
        self.dir = tempfile.mkdtemp(prefix="walnut-floods-")
        self.port = free_port()
        conf = os.path.join(self.dir, "w.yml")
        with open(conf, "w") as f:
            f.write(f"alpha:\n  listen: 127.0.0.1:{self.port}\n  hash: fnv1a_64\n{extra}  servers:\n")
            for i, port in enumerate(servers):
                f.write(f"   - 127.0.0.1:{port}:1 mc{i + 1}\n")
        self.p = subprocess.Popen(
            [binary, "-c", conf, "-w", "2", "-s", str(free_port()), "-a", "127.0.0.1",
             "-o", os.path.join(self.dir, "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def rss(self):
        return proc_kib(self.p.pid, "VmRSS")

    def peak(self):
        return proc_kib(self.p.pid, "VmHWM")

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self):
        self.p.kill()
        self.p.wait()


def read_until(s, end, limit=None):
    buf = bytearray()
    while not buf.endswith(end):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        if limit and len(buf) > limit:
            break
    return bytes(buf)


def flood(s, payload, seconds):
    s.settimeout(0.2)
    deadline = time.time() + seconds
    sent = 0
    while time.time() < deadline:
        try:
            sent += s.send(payload)
        except (socket.timeout, BlockingIOError):
            pass
    return sent


def case_noreply_reading(binary):
    m = Memcached()
    w = Walnut(binary, [m.port])
    before = w.rss()
    s = w.connect()
    payload = b"set flood 0 0 100000 noreply\r\n" + b"f" * 100000 + b"\r\n"
    sent = flood(s, payload, 3)
    result = (before, w.peak(), w.rss(), f"{sent >> 20} MiB of noreply sets in 3 s")
    w.stop(); m.stop()
    return result


def case_noreply_deaf(binary):
    d = Deaf()
    w = Walnut(binary, [d.port], "  timeout: 60000\n")
    before = w.rss()
    s = w.connect()
    payload = b"set flood 0 0 100000 noreply\r\n" + b"f" * 100000 + b"\r\n"
    sent = flood(s, payload, 3)
    result = (before, w.peak(), w.rss(), f"{sent >> 20} MiB accepted from the client in 3 s")
    w.stop(); d.stop()
    return result


def case_unread_gets(binary, value, count):
    m = Memcached()
    w = Walnut(binary, [m.port])
    c = w.connect()
    c.sendall(b"set v 0 0 %d\r\n" % value + b"x" * value + b"\r\n")
    read_until(c, b"STORED\r\n")
    before = w.rss()
    s = w.connect()
    s.settimeout(2)
    try:
        s.sendall(b"get v\r\n" * count)
    except socket.timeout:
        pass
    time.sleep(1)
    result = (before, w.peak(), w.rss(),
              f"{count} gets of a {value >> 10} KiB value, never read")
    w.stop(); m.stop()
    return result


def case_big_multiget(binary):
    ms = [Memcached(), Memcached()]
    w = Walnut(binary, [m.port for m in ms])
    c = w.connect()
    keys = [b"big%05d" % i for i in range(10000)]
    for i in range(0, len(keys), 100):
        wire = b"".join(b"set %s 0 0 50000\r\n" % k + b"v" * 50000 + b"\r\n" for k in keys[i:i + 100])
        c.sendall(wire)
        got = b""
        while got.count(b"STORED\r\n") < 100:
            got += c.recv(1 << 16)
    time.sleep(0.5)
    before = w.rss()
    c.sendall(b"get " + b" ".join(keys) + b"\r\n")
    total = 0
    tail = b""
    while True:
        chunk = c.recv(1 << 20)
        total += len(chunk)
        tail = (tail + chunk)[-5:]
        if tail == b"END\r\n":
            break
    time.sleep(2)
    result = (before, w.peak(), w.rss(), f"one get of 10,000 keys, {total >> 20} MiB answer")
    w.stop()
    for m in ms:
        m.stop()
    return result


def case_idle(binary, n):
    m = Memcached()
    w = Walnut(binary, [m.port])
    before = w.rss()
    conns = [w.connect() for _ in range(n)]
    time.sleep(0.5)
    during = w.rss()
    for s in conns:
        s.close()
    time.sleep(1)
    result = (before, during, w.rss(), f"{n} idle client connections (peak = while open)")
    w.stop(); m.stop()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--walnut", default="target/release/walnut")
    args = ap.parse_args()
    cases = [
        lambda b: case_idle(b, 1000),
        case_noreply_reading,
        case_noreply_deaf,
        lambda b: case_unread_gets(b, 100_000, 20_000),
        lambda b: case_unread_gets(b, 1_000_000, 2_000),
        case_big_multiget,
    ]
    print(f"{'before':>9} {'peak':>9} {'after':>9}  case (KiB)")
    for case in cases:
        before, peak, after, what = case(args.walnut)
        print(f"{before:>9} {peak:>9} {after:>9}  {what}", flush=True)


if __name__ == "__main__":
    main()
