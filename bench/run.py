#!/usr/bin/env python3
"""walnut end-to-end benchmark suite.  One command, from the project root:

    python3 bench/run.py                    # build, run every workload, print the table

Brings up on 127.0.0.1 (ports >= --port-base, all < 32768): two memcached backends, memcached
direct, nutcracker, an nginx backend, an nginx proxy and walnut; drives the same load at each in
turn (ABBA order per rep) and prints one markdown table (also bench/results/latest.{md,json}).

Pinning (2 cores): the proxy under test alone on --target-cpu; load generator, backends and this
script on --aux-cpu. CPU time from /proc (whole process tree), peak RSS = VmHWM of a fresh
proxy process per run. See BENCHMARKS.md for what each column means and what limits it.
Needs: gcc, memcached, nutcracker, nginx, wrk (apt-get install wrk), taskset, cargo.
"""
import argparse, atexit, json, os, re, resource, signal, socket, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUN = os.path.join(HERE, "run")
BUILD = os.path.join(HERE, ".build")
RESULTS = os.path.join(HERE, "results")
MCLOAD = os.path.join(BUILD, "mcload")
CLK = os.sysconf("SC_CLK_TCK")
ALL_WL = ["mix", "mget10", "pipe8", "big", "rate", "http", "idle", "scale"]

procs = []  # (name, Popen) we started; stopped by pid at exit


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

def start(name, cmd, cpus, logname=None, env=None):
    out = open(os.path.join(RUN, (logname or name) + ".log"), "ab")
    p = subprocess.Popen(["taskset", "-c", cpus] + cmd, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    procs.append((name, p))
    return p


def stop(p, grace=3.0):
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # its own group (start_new_session)
            except ProcessLookupError:
                pass
            p.wait()
    procs[:] = [x for x in procs if x[1] is not p]


def stop_all():
    for _, p in list(reversed(procs)):
        stop(p, 2.0)


def on_signal(sig, frame):
    log(f"signal {sig}: stopping {len(procs)} processes")
    stop_all()
    sys.exit(130)


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, p, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if p.poll() is not None:
            raise RuntimeError(f"process exited with {p.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def mc_probe(port):
    s = socket.create_connection(("127.0.0.1", port), 2)
    s.sendall(b"set bench:probe 0 0 5\r\nhello\r\nget bench:probe\r\n")
    want = b"STORED\r\nVALUE bench:probe 0 5\r\nhello\r\nEND\r\n"
    buf = b""
    end = time.time() + 3
    while len(buf) < len(want) and time.time() < end:
        buf += s.recv(4096)
    s.close()
    if buf != want:
        raise RuntimeError(f"memcached probe on {port} answered {buf!r}")


def http_probe(port):
    s = socket.create_connection(("127.0.0.1", port), 2)
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    buf = b""
    end = time.time() + 3
    while time.time() < end:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.close()
    if not buf.startswith(b"HTTP/1.1 200") or not buf.endswith(BODY):
        raise RuntimeError(f"HTTP probe on {port} answered {buf[:200]!r}")


# ---------------------------------------------------------------- /proc accounting

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    return kids


def tree(pid, kids):
    out, todo = [], [pid]
    while todo:
        x = todo.pop()
        out.append(x)
        todo += kids.get(x, [])
    return out


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        v = st[st.rindex(")") + 2:].split()
        return (int(v[11]) + int(v[12])) / CLK
    except (OSError, ValueError):
        return 0.0


def proc_status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return 0


def cpu_stat():
    """per-cpu (busy, steal) seconds and total busy"""
    res = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu"):
                v = line.split()
                n = [int(x) for x in v[1:]]
                busy = n[0] + n[1] + n[2] + n[5] + n[6]
                res[v[0]] = (busy / CLK, n[7] / CLK)
    return res


def tcp_out_segs():
    """TCP segments sent so far, machine-wide (loopback: every segment is sent and received here)"""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutSegs")])


class Snap:
    def __init__(self, groups):
        kids = children_map()
        self.t = time.time()
        self.groups = {g: sum(proc_cpu(x) for pid in pids for x in tree(pid, kids)) for g, pids in groups.items()}
        self.stat = cpu_stat()
        self.segs = tcp_out_segs()


def cpu_delta(a, b, target_cpus, aux_cpu):
    dt = b.t - a.t
    r = {g: (b.groups[g] - a.groups.get(g, 0)) / dt for g in b.groups}
    ours = sum(r.values())
    tot = b.stat["cpu"][0] - a.stat["cpu"][0]
    r["other"] = max(0.0, tot / dt - ours)
    r["steal"] = (b.stat["cpu"][1] - a.stat["cpu"][1]) / dt
    for c in {aux_cpu, *target_cpus}:
        k = f"cpu{c}"
        r[f"core{c}"] = (b.stat[k][0] - a.stat[k][0]) / dt
    return r


def quiet_wait(args):
    """wait (at most --quiet-wait s) until foreign CPU use is below --quiet-threshold cores"""
    end = time.time() + args.quiet_wait
    while True:
        groups = {"ours": [os.getpid()] + [p.pid for _, p in procs]}
        a = Snap(groups)
        time.sleep(0.5)
        b = Snap(groups)
        d = cpu_delta(a, b, [args.target_cpu], args.aux_cpu)
        if (d["other"] < args.quiet_threshold and d["steal"] < args.max_steal) or time.time() > end:
            return d["other"]
        log(f"  waiting for a quiet machine: other {d['other']:.2f} cores, steal {d['steal']:.2f}")


# ---------------------------------------------------------------- servers

BODY = b"0123456789abcdef0123456789abcdef\n"  # 33 bytes


def nginx_conf(name, body):
    tmp = os.path.join(RUN, "tmp-" + name)
    os.makedirs(tmp, exist_ok=True)
    conf = os.path.join(RUN, name + ".conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {RUN}/{name}.pid;
error_log {RUN}/{name}.err warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
{body}
}}
""")
    return ["/usr/sbin/nginx", "-p", RUN, "-e", f"{RUN}/{name}.err", "-c", conf]


class Env:
    def __init__(self, args):
        self.a = args
        B = args.port_base
        self.be = [B + 1, B + 2]
        self.p = dict(direct=B + 10, nutcracker=B + 20, walnut=B + 30,
                      hbe0=B + 100, hbe1=B + 101, hdirect=B + 110, nginx=B + 120, hwalnut=B + 130)
        self.tcpu = str(args.target_cpu)
        self.acpu = str(args.aux_cpu)

    def all_ports(self):
        return self.be + list(self.p.values()) + [self.p["nutcracker"] + 1, self.p["walnut"] + 1, self.p["walnut"] + 2,
                                                   self.p["hwalnut"] + 1]

    def memcached(self, name, port, cpu):
        p = start(name, ["/usr/bin/memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                         "-t", "1", "-m", "1024", "-c", "20000"], cpu)
        wait_port(port, p)
        return p

    def populate(self, port, big=False):
        a = self.a
        cmd = [MCLOAD, "-s", f"127.0.0.1:{port}", "-L", "-c", "4", "-H", "120"]
        cmd += ["-k", str(a.big_keyspace), "-V", str(a.big_vallen), "-x", "big:"] if big else \
               ["-k", str(a.keyspace), "-V", str(a.vallen)]
        r = subprocess.run(["taskset", "-c", self.acpu] + cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"populate {port}: {r.stdout} {r.stderr}")

    def start_backends(self, need_big):
        for i, port in enumerate(self.be):
            self.memcached(f"backend{i}", port, self.acpu)
            self.populate(port)
            if need_big:
                self.populate(port, big=True)

    def start_http_backend(self):
        body = f"""  server {{ listen 127.0.0.1:{self.p['hbe0']}; listen 127.0.0.1:{self.p['hbe1']};
    location / {{ return 200 "{BODY.decode().strip()}\\n"; }} }}"""
        p = start("nginx-backend", nginx_conf("nginx-backend", body), self.acpu)
        wait_port(self.p["hbe0"], p)
        http_probe(self.p["hbe0"])

    # a target: (name, kind) -> (Popen, port, cpus)
    def start_target(self, name, wl):
        a, bl = self.a, ",".join(f"127.0.0.1:{x}" for x in self.be)
        if name == "memcached-direct":
            port = self.p["direct"]
            p = self.memcached(name, port, self.tcpu)
            self.populate(port, big=(wl == "big"))
            return p, port, [a.target_cpu]
        if name == "nutcracker":
            port = self.p["nutcracker"]
            conf = os.path.join(RUN, "nutcracker.yml")
            with open(conf, "w") as f:
                f.write(f"bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n"
                        "  backlog: 1024\n  preconnect: true\n  auto_eject_hosts: false\n  server_connections: 1\n"
                        "  servers:\n" + "".join(f"   - 127.0.0.1:{x}:1\n" for x in self.be))
            p = start(name, ["/usr/sbin/nutcracker", "-c", conf, "-s", str(port + 1), "-a", "127.0.0.1",
                             "-o", os.path.join(RUN, "nutcracker.out")], self.tcpu)
            wait_port(port, p)
            mc_probe(port)
            return p, port, [a.target_cpu]
        if name.startswith("walnut") and wl != "http":
            port = self.p["walnut"]
            workers = "2" if name == "walnut-2w" else "1"
            cpus = (a.scale_cpus or f"{a.target_cpu},{a.aux_cpu}") if workers == "2" else self.tcpu
            extra = {"walnut+rewrite": ["rewrite"], "walnut+compress": ["compress"]}.get(name, [])
            env = dict(os.environ)
            if name == "walnut-B":
                env["WALNUT_BIN"] = a.ab
            elif a.admin:
                # Metrics on: the admin listener serves /metrics (port + 2; stats is port + 1).
                env["WALNUT_ADMIN"] = f"127.0.0.1:{port + 2}"
            p = start(name, [os.path.join(HERE, "walnut-mc.sh"), f"127.0.0.1:{port}", bl, workers] + extra, cpus,
                      logname="walnut-mc", env=env)
            wait_port(port, p)
            mc_probe(port)
            return p, port, [int(c) for c in cpus.split(",")]
        if name == "direct":
            port = self.p["hdirect"]
            body = f"""  server {{ listen 127.0.0.1:{port};
    location / {{ return 200 "{BODY.decode().strip()}\\n"; }} }}"""
            p = start("nginx-direct", nginx_conf("nginx-direct", body), self.tcpu)
        elif name == "nginx":
            port = self.p["nginx"]
            body = f"""  upstream b {{ server 127.0.0.1:{self.p['hbe0']}; server 127.0.0.1:{self.p['hbe1']};
    keepalive 64; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}"""
            p = start("nginx-proxy", nginx_conf("nginx-proxy", body), self.tcpu)
        elif name.startswith("walnut"):
            port = self.p["hwalnut"]
            extra = ["guard"] if name == "walnut+guard" else []
            env = dict(os.environ)
            if name == "walnut-B":
                env["WALNUT_BIN"] = a.ab
            p = start(name, [os.path.join(HERE, "walnut-http.sh"), f"127.0.0.1:{port}",
                             f"127.0.0.1:{self.p['hbe0']}", f"127.0.0.1:{self.p['hbe1']}", "1"] + extra,
                      self.tcpu, logname="walnut-http", env=env)
        else:
            raise ValueError(name)
        wait_port(port, p)
        http_probe(port)
        return p, port, [a.target_cpu]


# ---------------------------------------------------------------- workloads

def mc_args(a, wl):
    base = ["-c", str(a.conns), "-d", str(a.duration), "-w", str(a.warmup), "-k", str(a.keyspace),
            "-V", str(a.vallen), "-r", "0.9"]
    if wl == "mget10":
        base += ["-r", "1", "-m", "10"]
    elif wl == "pipe8":
        base += ["-P", "8"]
    elif wl == "big":
        base += ["-k", str(a.big_keyspace), "-V", str(a.big_vallen), "-x", "big:"]
    elif wl == "rate":
        base += ["-R", str(a.rate)]
    return base


AB = False  # --ab: a second walnut binary ("walnut-B") runs the memcached workloads too


def targets_for(wl):
    if AB and wl == "http":
        return ["direct", "nginx", "walnut", "walnut-B", "walnut+guard"]
    if AB and wl in ("mix", "mget10", "pipe8", "big", "rate"):
        return {"mix": ["memcached-direct", "nutcracker", "walnut", "walnut-B", "walnut+rewrite",
                        "walnut+compress"],
                "big": ["memcached-direct", "nutcracker", "walnut", "walnut-B", "walnut+compress"]}.get(
            wl, ["memcached-direct", "nutcracker", "walnut", "walnut-B"])
    return {"mix": ["memcached-direct", "nutcracker", "walnut", "walnut+rewrite", "walnut+compress"],
            "mget10": ["memcached-direct", "nutcracker", "walnut"],
            "pipe8": ["memcached-direct", "nutcracker", "walnut"],
            "big": ["memcached-direct", "nutcracker", "walnut", "walnut+compress"],
            "rate": ["memcached-direct", "nutcracker", "walnut"],
            "scale": ["walnut", "walnut-2w"],
            "http": ["direct", "nginx", "walnut", "walnut+guard"],
            "idle": ["nutcracker", "walnut"]}[wl]


def one_run(env, wl, name):
    a = env.a
    quiet_wait(a)
    tp, port, tcpus = env.start_target(name, wl)
    try:
        time.sleep(0.2)
        if wl == "idle":
            return idle_run(env, tp, port, name)
        if wl == "http":
            lg = ["wrk", "-t1", f"-c{a.conns}", f"-d{max(1, round(a.duration))}s", "--latency", "-s",
                  os.path.join(HERE, "wrk-pct.lua"), f"http://127.0.0.1:{port}/"]
            subprocess.run(["taskset", "-c", env.acpu, "wrk", "-t1", f"-c{a.conns}", f"-d{max(1, round(a.warmup))}s",
                            f"http://127.0.0.1:{port}/"], capture_output=True)
            warm = 0.1
        else:
            lg = [MCLOAD, "-s", f"127.0.0.1:{port}"] + mc_args(a, wl)
            warm = a.warmup
        lp = start("loadgen", lg, env.acpu)
        time.sleep(warm)
        groups = {"target": [tp.pid], "loadgen": [lp.pid],
                  "backends": [p.pid for n, p in procs if n.startswith(("backend", "nginx-backend"))],
                  "harness": [os.getpid()]}
        s0 = Snap(groups)
        time.sleep((max(1, round(a.duration)) if wl == "http" else a.duration) - (0.2 if wl == "http" else 0))
        s1 = Snap(groups)
        out, _ = lp.communicate(timeout=a.duration + 30)
        stop(lp)
        with open(os.path.join(RUN, "loadgen.log")) as f:
            text = f.read()
        cpu = cpu_delta(s0, s1, tcpus, a.aux_cpu)
        kids = children_map()
        rss = max(proc_status(x, "VmHWM") for x in tree(tp.pid, kids))
        if wl == "http":
            m = re.findall(r"^JSON (.*)$", text, re.M)
            j = json.loads(m[-1])
            res = dict(ops_per_s=j["requests"] / (j["duration_us"] / 1e6), p50=j["p50"], p99=j["p99"],
                       p999=j["p999"], errors=j["non2xx"] + j["sock_errors"], hit_ratio=None)
        else:
            j = json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
            res = dict(ops_per_s=j["ops_per_s"], p50=j["lat_us"]["p50"], p99=j["lat_us"]["p99"],
                       p999=j["lat_us"]["p999"], errors=j["errors"] + j["badlen"] + j["conn_errors"],
                       hit_ratio=j["hit_ratio"], late=j.get("late_sends"), loadgen_self=j["cpu_util"])
        os.truncate(os.path.join(RUN, "loadgen.log"), 0)
        res.update(cpu=cpu, rss_kb=rss, raw=j)
        res["us_per_op"] = cpu["target"] * 1e6 / res["ops_per_s"] if res["ops_per_s"] else None
        res["segs_per_op"] = (s1.segs - s0.segs) / (res["ops_per_s"] * (s1.t - s0.t)) if res["ops_per_s"] else None
        res["disturbed"] = cpu["other"] > a.disturb_other or cpu["steal"] > a.max_steal
        return res
    finally:
        stop(tp)


def idle_run(env, tp, port, name):
    a = env.a
    rss0 = proc_status(tp.pid, "VmRSS")
    lp = start("loadgen", [MCLOAD, "-s", f"127.0.0.1:{port}", "-c", str(a.idle_conns), "-I", "3", "-H", "60"],
               env.acpu)
    peak, end = 0, time.time() + 70
    ready = False
    while lp.poll() is None and time.time() < end:
        peak = max(peak, proc_status(tp.pid, "VmRSS"))
        if not ready:
            with open(os.path.join(RUN, "loadgen.log")) as f:
                ready = "idle connections ready" in f.read()
            if ready:
                time.sleep(1)
                rss_idle = proc_status(tp.pid, "VmRSS")
        time.sleep(0.2)
    lp.wait()
    stop(lp)
    with open(os.path.join(RUN, "loadgen.log")) as f:
        text = f.read()
    os.truncate(os.path.join(RUN, "loadgen.log"), 0)
    j = json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
    if not ready:
        raise RuntimeError(f"idle connections never became ready: {text[-500:]}")
    hwm = proc_status(tp.pid, "VmHWM")
    return dict(rss0_kb=rss0, rss_idle_kb=rss_idle, rss_kb=hwm, conns=j["idle_conns"], errors=j["conn_errors"],
                per_conn_b=(rss_idle - rss0) * 1024 / max(1, j["idle_conns"]), disturbed=False, raw=j)


# ---------------------------------------------------------------- report

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"


def use(runs):
    clean = [r for r in runs if not r.get("disturbed")]
    return (clean or runs), len(clean)


def paired(res, wl, a_name, b_name, key="ops_per_s"):
    rs = []
    for ra, rb in zip(res[wl].get(a_name, []), res[wl].get(b_name, [])):
        if ra.get(key) and rb.get(key):
            rs.append(ra[key] / rb[key])
    if not rs:
        return None
    return f"{statistics.median(rs):.2f} ({min(rs):.2f}..{max(rs):.2f})"


def report(args, res, meta):
    L = []
    L.append(f"walnut benchmark, {meta['date']}, {meta['machine']}")
    L.append(f"`{meta['command']}`: {args.reps} reps x {args.duration} s (+{args.warmup} s warm-up), "
             f"{args.conns} connections, proxy on CPU {args.target_cpu}, load generator + backends on CPU {args.aux_cpu}")
    L.append("")
    L.append("| workload | target | ops/s median | min..max (spread) | p50 / p99 / p99.9 us | proxy CPU | proxy us/op | TCP segs/op "
             "| peak RSS MiB | core{t} / core{a} busy | backends + loadgen CPU | other / steal | limited by | clean "
             "| ratio ops/s (paired) | ratio us/op |".replace("{t}", str(args.target_cpu)).replace("{a}", str(args.aux_cpu)))
    L.append("|" + "---|" * 16)
    for wl in [w for w in ALL_WL if w in res and w != "idle"]:
        base = "nginx" if wl == "http" else "nutcracker"
        direct = "direct" if wl == "http" else "memcached-direct"
        for name in targets_for(wl):
            runs, nclean = use(res[wl].get(name, []))
            if not runs:
                continue
            ops = [r["ops_per_s"] for r in runs]
            m = med(ops)
            spread = (max(ops) - min(ops)) / m if m else 0
            c = lambda k: med([r["cpu"].get(k) for r in runs])
            tc = c("target")
            cores = [c(f"core{args.target_cpu}"), c(f"core{args.aux_cpu}")]
            if name == "walnut-2w":
                lim = "both cores"
            else:
                lim = []
                if tc >= 0.9:
                    lim.append("proxy core")
                if cores[1] >= 0.9:
                    lim.append("aux core")
                if wl == "rate":
                    lim = ["fixed rate"]
                lim = " + ".join(lim) or "neither (latency-bound)"
            ratios, usr = [], []
            if name.startswith("walnut"):
                comps = [base, direct] + (["walnut"] if name != "walnut" else [])
                if AB and name == "walnut":
                    comps.append("walnut-B")
                for b in comps:
                    if wl == "scale" and b != "walnut":
                        continue
                    pr = paired(res, wl, name, b)
                    if pr:
                        ratios.append(f"/{b} {pr}")
                    pu = paired(res, wl, name, b, "us_per_op")
                    if pu and b != direct:
                        usr.append(f"/{b} {pu}")
            lat = f"{fmt(med([r['p50'] for r in runs]))} / {fmt(med([r['p99'] for r in runs]))} / {fmt(med([r['p999'] for r in runs]))}"
            errs = sum(r["errors"] for r in runs)
            hr = med([r.get("hit_ratio") for r in runs])
            note = ""
            if errs:
                note += f" ERRORS {errs}"
            if hr is not None and hr < 0.999:
                note += f" hit {hr:.3f}"
            L.append(f"| {wl} | {name}{note} | {fmt(m)} | {fmt(min(ops))}..{fmt(max(ops))} ({spread*100:.0f} %) | {lat} "
                     f"| {tc*100:.0f} % | {fmt(med([r['us_per_op'] for r in runs]), 1)} "
                     f"| {fmt(med([r.get('segs_per_op') for r in runs]), 2)} "
                     f"| {med([r['rss_kb'] for r in runs])/1024:.1f} | {cores[0]*100:.0f} / {cores[1]*100:.0f} % "
                     f"| {c('backends')*100:.0f} + {c('loadgen')*100:.0f} % | {c('other')*100:.0f} / {c('steal')*100:.0f} % "
                     f"| {lim} | {nclean}/{len(res[wl][name])} | {'; '.join(ratios) or '-'} | {'; '.join(usr) or '-'} |")
    if "idle" in res:
        L.append("")
        L.append(f"Idle connections ({args.idle_conns} connections, one `get` each, then idle):")
        L.append("")
        L.append("| target | RSS before MiB | RSS with idle conns MiB | peak RSS (VmHWM) MiB | bytes per connection | errors |")
        L.append("|---|---|---|---|---|---|")
        for name in targets_for("idle"):
            runs = res["idle"].get(name, [])
            if runs:
                L.append(f"| {name} | {med([r['rss0_kb'] for r in runs])/1024:.1f} | {med([r['rss_idle_kb'] for r in runs])/1024:.1f} "
                         f"| {med([r['rss_kb'] for r in runs])/1024:.1f} | {fmt(med([r['per_conn_b'] for r in runs]))} "
                         f"| {sum(r['errors'] for r in runs)} |")
        a = med([r["per_conn_b"] for r in res["idle"].get("walnut", [])])
        b = med([r["per_conn_b"] for r in res["idle"].get("nutcracker", [])])
        if a and b:
            L.append(f"\nwalnut/nutcracker bytes per idle connection: {a/b:.2f}")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(ALL_WL), help=f"comma list of {ALL_WL}")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--keyspace", type=int, default=100000)
    ap.add_argument("--vallen", type=int, default=100)
    ap.add_argument("--big-keyspace", type=int, default=500)
    ap.add_argument("--big-vallen", type=int, default=102400)
    ap.add_argument("--rate", type=int, default=20000, help="ops/s of the fixed-rate workload")
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--port-base", type=int, default=21200)
    ap.add_argument("--target-cpu", type=int, default=0)
    ap.add_argument("--aux-cpu", type=int, default=1)
    ap.add_argument("--scale-cpus", default=None, help="CPU list for walnut -w 2 (default: target,aux)")
    ap.add_argument("--quiet-wait", type=float, default=20, help="max seconds to wait for a quiet machine per run")
    ap.add_argument("--quiet-threshold", type=float, default=0.15, help="foreign CPU (cores) counted as quiet")
    ap.add_argument("--disturb-other", type=float, default=0.25, help="foreign CPU (cores) marking a run DISTURBED")
    ap.add_argument("--max-steal", type=float, default=0.10)
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build")
    ap.add_argument("--ab", metavar="WALNUT_BIN", default=None,
                    help="another walnut binary, run as target walnut-B beside walnut (A/B in one run)")
    ap.add_argument("--admin", action="store_true",
                    help="start walnut (not walnut-B) with its admin listener (--admin)")
    a = ap.parse_args()
    global AB
    AB = bool(a.ab)
    wls = [w for w in a.workloads.split(",") if w]
    for w in wls:
        if w not in ALL_WL:
            sys.exit(f"unknown workload {w}")
    os.chdir(ROOT)
    for d in (RUN, BUILD, RESULTS):
        os.makedirs(d, exist_ok=True)
    missing = [t for t in ("gcc", "taskset", "memcached", "nutcracker", "nginx", "wrk") if
               subprocess.run(["sh", "-c", f"command -v {t} || test -x /usr/sbin/{t}"], capture_output=True).returncode]
    if missing:
        sys.exit(f"missing tools: {missing}; on Debian: apt-get install gcc util-linux memcached nutcracker nginx-light wrk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, a.idle_conns + 2000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if "idle" in wls and want < a.idle_conns + 200:
        sys.exit(f"open-files hard limit {hard} is too low for --idle-conns {a.idle_conns}")
    env = Env(a)
    taken = [p for p in env.all_ports() if not port_free(p)]
    if taken or max(env.all_ports()) >= 32768:
        sys.exit(f"ports in use or >= 32768: {taken}; pick another --port-base")
    os.sched_setaffinity(0, {a.aux_cpu})
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(stop_all)

    subprocess.run(["gcc", "-O2", "-o", MCLOAD, os.path.join(HERE, "mcload.c")], check=True)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "walnut"], check=True)
        subprocess.run(["cargo", "build", "--release", "--target", "wasm32-unknown-unknown",
                        "-p", "key-rewrite", "-p", "command-guard", "-p", "compress"], check=True)
    for f in os.listdir(RUN):
        if f.endswith(".log"):
            os.truncate(os.path.join(RUN, f), 0)

    model = subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True, capture_output=True, text=True).stdout.strip()
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                machine=f"{os.cpu_count()} CPUs, {model}, kernel {os.uname().release}",
                command="python3 bench/run.py " + " ".join(sys.argv[1:]), args=vars(a))
    res = {}
    mc = [w for w in wls if w not in ("http",)]
    if mc:
        env.start_backends(need_big="big" in wls)
    if "http" in wls:
        env.start_http_backend()
    t_start = time.time()
    for wl in wls:
        res[wl] = {}
        tl = targets_for(wl)
        reps = 1 if wl == "idle" and a.reps > 1 else a.reps
        for rep in range(reps):
            order = tl if rep % 2 == 0 else list(reversed(tl))
            for name in order:
                try:
                    r = one_run(env, wl, name)
                except Exception as e:  # keep going: one broken target must not lose the rest
                    log(f"  {wl} {name} rep {rep}: FAILED: {e}")
                    continue
                r["rep"] = rep
                res[wl].setdefault(name, []).append(r)
                if wl == "idle":
                    log(f"{wl:7} {name:17} rep {rep}: {r['conns']} conns, RSS {r['rss0_kb']/1024:.1f} -> "
                        f"{r['rss_idle_kb']/1024:.1f} MiB ({r['per_conn_b']:.0f} B/conn)")
                else:
                    c = r["cpu"]
                    log(f"{wl:7} {name:17} rep {rep}: {r['ops_per_s']:>10,.0f} ops/s p50 {r['p50']:.0f} p99 {r['p99']:.0f} "
                        f"p99.9 {r['p999']:.0f} us | proxy {c['target']*100:.0f} % {r['us_per_op']:.1f} us/op, "
                        f"{r['segs_per_op']:.2f} TCP segs/op | "
                        f"backends {c['backends']*100:.0f} % loadgen {c['loadgen']*100:.0f} % other {c['other']*100:.0f} % "
                        f"steal {c['steal']*100:.0f} % | RSS {r['rss_kb']/1024:.1f} MiB | err {r['errors']}"
                        + (" DISTURBED" if r["disturbed"] else ""))
    meta["elapsed_s"] = round(time.time() - t_start)
    text = report(a, res, meta)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t_start))
    for name in ("latest", "run-" + stamp):  # latest.* is overwritten, run-STAMP.* is kept
        with open(os.path.join(RESULTS, name + ".md"), "w") as f:
            f.write(text)
        with open(os.path.join(RESULTS, name + ".json"), "w") as f:
            json.dump(dict(meta=meta, results=res), f, indent=1, default=str)
    stop_all()


if __name__ == "__main__":
    main()
