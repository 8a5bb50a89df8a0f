#!/usr/bin/env python3
"""Record where a real nutcracker places keys, for walnut's ring tests.

Runs memcached and nutcracker (both must be installed) on 127.0.0.1 ports from BASE_PORT (default 23200) upward,
writes keys through nutcracker, then asks each memcached which keys it holds. One output file
per scenario, in this directory. Usage: record.py [BASE_PORT] [SCENARIO...]

Output format, one record per line, fields separated by one space:
    dist NAME | hash NAME | tag XY or - |
    server HOST_OR_PATH PORT_OR_- NAME_OR_- WEIGHT LIVE RUNNING |
    key HEX INDEX
INDEX is the server (in config order) holding the key, or -1 when the write failed because
the server it went to was not running. LIVE is 0 for a server nutcracker had ejected.
"""
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = int(sys.argv[1]) if len(sys.argv) > 1 else 23200


def tcp(i, weight=1, name=None, run=True):
    port = BASE + 11 + i
    text = f"127.0.0.1:{port}:{weight}" + (f" {name}" if name else "")
    return {"text": text, "host": "127.0.0.1", "port": port, "weight": weight, "name": name, "run": run}


def mixed4():
    # Config order differs from name order (shorter names sort first).
    return [tcp(2, 2), tcp(0, 1, "zeta"), tcp(1, 3, "alpha2"), tcp(3, 1, "beta")]


def scenarios(tmp):
    out = {}
    for h in ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64",
              "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"]:
        out[f"hash_{h}"] = dict(dist="ketama", hash=h, servers=mixed4(), nplain=100, nrandom=600)
    out["modula_mixed_md5"] = dict(dist="modula", hash="md5", servers=mixed4())
    out["modula_mixed_crc16"] = dict(dist="modula", hash="crc16", servers=mixed4())
    # The server on 11211 is never started: its keys fail, which is enough to see its points.
    out["port_11211"] = dict(dist="ketama", hash="fnv1a_64", nrandom=0, servers=[
        {"text": "127.0.0.1:11211:1", "host": "127.0.0.1", "port": 11211, "weight": 1, "name": None, "run": False},
        tcp(0), tcp(1)])
    unix = []
    for i, w in [(1, 1), (2, 2), (3, 1)]:
        path = f"{tmp}/mc{i}.sock"
        unix.append({"text": f"{path}:{w}", "host": path, "path": path, "weight": w, "name": None, "run": True})
    out["unix_sockets"] = dict(dist="ketama", hash="fnv1a_64", servers=unix + [tcp(0)], nrandom=300)
    rnd = random.Random(3)
    equal = [tcp(20 + i) for i in range(25)]
    rnd.shuffle(equal)
    out["ketama_25_equal"] = dict(dist="ketama", hash="murmur", servers=equal, nplain=1500, nrandom=300)
    weighted = [tcp(20 + i, (i % 4) + 1) for i in range(25)]
    rnd.shuffle(weighted)
    out["ketama_25_weighted"] = dict(dist="ketama", hash="murmur", servers=weighted, nplain=1500, nrandom=300)
    out["long_names_270"] = dict(dist="ketama", hash="fnv1a_64", servers=[
        tcp(i, i + 1, c * 270) for i, c in enumerate("abc")])
    out["long_names_300"] = dict(dist="ketama", hash="fnv1a_64", servers=[
        tcp(i, i + 1, c * 300) for i, c in enumerate("abc")])
    out["long_names_tie"] = dict(dist="ketama", hash="md5", servers=[
        tcp(i, 1, "x" * 280 + c) for i, c in enumerate("cab")] + [tcp(3)])
    for d in ["ketama", "modula"]:
        out[f"eject_{d}"] = dict(dist=d, hash="fnv1a_32", eject=True, servers=[
            tcp(i, w, run=i != 2) for i, w in enumerate([1, 2, 3, 1, 2])])
    for name, tag in [("dollar", "$$"), ("braces", "{}"), ("ab", "ab")]:
        r = random.Random(5)
        extra = ["".join(r.choice("ab{}$xyz") for _ in range(r.randint(1, 8))) for _ in range(600)]
        out[f"hash_tag_{name}"] = dict(dist="modula", hash="crc32a", tag=tag, servers=[tcp(i) for i in range(3)],
                                       nplain=50, nrandom=100, extra=extra)
    return out


def wait_listening(port=None, path=None):
    for _ in range(200):
        try:
            if path:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
            else:
                s = socket.create_connection(("127.0.0.1", port))
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port or path}")


def read_until(s, ends):
    buf = b""
    while not any(buf.endswith(e) for e in ends):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def connect(sv):
    if "path" in sv:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sv["path"])
        return s
    return socket.create_connection(("127.0.0.1", sv["port"]))


def make_keys(sc):
    rnd = random.Random(7)
    keys = [f"key{i}".encode() for i in range(sc.get("nplain", 500))]
    allowed = [b for b in range(0x21, 0x100) if b != 0x7f]
    for _ in range(sc.get("nrandom", 500)):
        keys.append(bytes(rnd.choice(allowed) for _ in range(rnd.randint(1, 24))))
    keys += [k.encode() for k in sc.get("extra", [])]
    return list(dict.fromkeys(keys))


def record(name, sc, tmp):
    procs = []
    listen = BASE
    try:
        for sv in sc["servers"]:
            if not sv["run"]:
                continue
            if "path" in sv:
                if os.path.exists(sv["path"]):
                    os.unlink(sv["path"])
                cmd = ["memcached", "-s", sv["path"], "-u", "root", "-U", "0"]
            else:
                cmd = ["memcached", "-p", str(sv["port"]), "-U", "0", "-u", "root", "-l", "127.0.0.1"]
            procs.append(subprocess.Popen(cmd))
            wait_listening(sv.get("port"), sv.get("path"))
        conf = ["pool:", f"  listen: 127.0.0.1:{listen}", f"  hash: {sc['hash']}",
                f"  distribution: {sc['dist']}", "  timeout: 2000",
                f"  auto_eject_hosts: {'true' if sc.get('eject') else 'false'}",
                "  server_retry_timeout: 600000", "  server_failure_limit: 1"]
        if sc.get("tag"):
            conf.append(f"  hash_tag: {json.dumps(sc['tag'])}")
        conf.append("  servers:")
        conf += [f"   - {sv['text']}" for sv in sc["servers"]]
        with open(f"{tmp}/nc.yml", "w") as f:
            f.write("\n".join(conf) + "\n")
        procs.append(subprocess.Popen(["nutcracker", "-c", f"{tmp}/nc.yml", "-s", str(listen + 1),
                                       "-a", "127.0.0.1", "-p", f"{tmp}/nc.pid", "-o", f"{tmp}/nc.log"]))
        wait_listening(listen)

        keys = make_keys(sc)
        proxy = socket.create_connection(("127.0.0.1", listen))
        if sc.get("eject"):
            # Failed reads get the stopped server ejected before anything is written.
            for k in keys[:200]:
                proxy.sendall(b"get " + k + b"\r\n")
                read_until(proxy, [b"END\r\n", b"ERROR\r\n", b"\r\n"])
            time.sleep(0.3)
        for k in keys:
            proxy.sendall(b"set " + k + b" 0 0 1\r\nx\r\n")
            read_until(proxy, [b"\r\n"])
        proxy.close()

        where = {}
        for idx, sv in enumerate(sc["servers"]):
            if not sv["run"]:
                continue
            s = connect(sv)
            for i in range(0, len(keys), 50):
                s.sendall(b"get " + b" ".join(keys[i:i + 50]) + b"\r\n")
                for line in read_until(s, [b"END\r\n"]).split(b"\r\n"):
                    if line.startswith(b"VALUE "):
                        where[line.split(b" ")[1]] = idx
            s.close()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait()

    with open(os.path.join(HERE, f"{name}.txt"), "w") as f:
        f.write(f"dist {sc['dist']}\nhash {sc['hash']}\ntag {sc.get('tag') or '-'}\n")
        for sv in sc["servers"]:
            live = 0 if sc.get("eject") and not sv["run"] else 1
            f.write(f"server {sv['host']} {sv.get('port', '-')} {sv['name'] or '-'} {sv['weight']} "
                    f"{live} {int(sv['run'])}\n")
        for k in keys:
            f.write(f"key {k.hex()} {where.get(k, -1)}\n")
    print(f"{name}: {len(keys)} keys, {len(where)} found", file=sys.stderr)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        all_scenarios = scenarios(tmp)
        wanted = sys.argv[2:] or list(all_scenarios)
        for name in wanted:
            record(name, all_scenarios[name], tmp)


if __name__ == "__main__":
    main()
