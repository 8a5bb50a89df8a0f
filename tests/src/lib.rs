//! End-to-end harness: the real `walnut` binary, real `memcached` and `nutcracker` processes on
//! loopback ports chosen at run time, and a raw memcached client. A missing program fails the
//! test with what to install; nothing is skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails with an install hint when `program` is not on the PATH (or at `fallback`).
pub fn require(program: &str, package: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&dirs).chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
    {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("this test needs `{program}`: install it with `apt-get install -y {package}`");
}

/// The `walnut` binary, built once per test run with the same profile as the tests.
pub fn walnut_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = !cfg!(debug_assertions);
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args(["build", "--quiet", "-p", "walnut", "--bin", "walnut"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the walnut binary");
        assert!(status.success(), "building the walnut binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("walnut")
    })
}

/// Builds the plugin crates `names` for wasm32 (release) once per test run, and returns the
/// folder holding their `.wasm` files.
pub fn plugin_dir(names: &[&str]) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !built.iter().any(|b| b == n))
        .collect();
    if !missing.is_empty() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
        ]);
        for n in &missing {
            cmd.args(["-p", n]);
        }
        let status = cmd.status().expect("run cargo build for the plugins");
        assert!(
            status.success(),
            "building plugins {missing:?} for wasm32 failed (needs `rustup target add wasm32-unknown-unknown`)"
        );
        built.extend(missing.iter().map(|s| s.to_string()));
    }
    target.join("wasm32-unknown-unknown").join("release")
}

/// A fresh directory for one test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "walnut-e2e-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    // Below Linux's ephemeral range (32768 and up), so no outgoing connection's source port
    // takes it between this check and the server's bind; each test process starts at its own
    // offset and never hands out a port twice.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 64) * 190;
    for _ in 0..12_000 {
        let port = 20_000 + (base - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// Waits until `addr` accepts connections, or panics naming `what`.
pub fn wait_listening(addr: SocketAddr, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {addr} within 20 s");
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// A real memcached on a loopback port of its own.
pub struct Memcached {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Memcached {
    pub fn start() -> Memcached {
        Memcached::start_with(&[])
    }

    /// With extra memcached flags (e.g. `-I 2m`).
    pub fn start_with(extra: &[&str]) -> Memcached {
        let mut m = Memcached {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        m.restart();
        m
    }

    /// On a fixed `port` (e.g. 11211) when it is free; `None` when it is taken, or when
    /// memcached lost the port to another process between the check and its start.
    pub fn try_start_on(port: u16) -> Option<Memcached> {
        drop(TcpListener::bind(("127.0.0.1", port)).ok()?);
        let mut m = Memcached {
            port,
            child: None,
            extra: Vec::new(),
        };
        m.restart();
        // A memcached that could not bind exits at once; what answered was someone else.
        std::thread::sleep(Duration::from_millis(100));
        let exited = m.child.as_mut().map(|c| !matches!(c.try_wait(), Ok(None)));
        (exited == Some(false)).then_some(m)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `127.0.0.1:PORT`
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port after `kill` (empty, like a restarted memcached).
    pub fn restart(&mut self) {
        let bin = require("memcached", "memcached");
        let mut child = Command::new(bin)
            .args([
                "-p",
                &self.port.to_string(),
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-t",
                "1",
                "-m",
                "64",
                "-u",
                "root",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached");
        wait_listening(self.addr(), "memcached", &mut child);
        // The port must be this memcached's, not another process's that took it meanwhile.
        let mut probe = Client::connect(self.addr());
        let stats = String::from_utf8_lossy(&probe.call_raw(b"stats\r\n")).into_owned();
        let pid = stats
            .lines()
            .find_map(|l| l.strip_prefix("STAT pid "))
            .map(str::trim);
        assert_eq!(
            pid,
            Some(child.id().to_string().as_str()),
            "127.0.0.1:{} answers for another process, not the memcached just started",
            self.port
        );
        self.child = Some(child);
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server keeps its sockets but never answers.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c, "-STOP");
        }
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c, "-CONT");
        }
    }

    /// A direct client to this memcached.
    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A proxy process (walnut or nutcracker) with its config file, stopped on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    pub stats_port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Proxy {
    /// Starts walnut on `config`, where `{listen}` stands for the loopback address it gets.
    pub fn walnut(config: &str) -> Proxy {
        Proxy::walnut_with(config, &["-w", "2"])
    }

    /// Like `walnut`, with extra command-line arguments.
    pub fn walnut_with(config: &str, args: &[&str]) -> Proxy {
        Proxy::start("walnut", walnut_bin(), config, args)
    }

    /// Starts the real nutcracker (Debian's `nutcracker` package) on `config`.
    pub fn nutcracker(config: &str) -> Proxy {
        let bin = require("nutcracker", "nutcracker");
        Proxy::start("nutcracker", &bin, config, &[])
    }

    fn start(what: &str, bin: &Path, config: &str, args: &[&str]) -> Proxy {
        let dir = temp_dir(what);
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let path = dir.join("proxy.yml");
        std::fs::write(&path, config.replace("{listen}", &addr.to_string())).expect("write config");
        let stats_port = free_port();
        let log = dir.join("proxy.log");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        wait_listening(addr, what, &mut child);
        Proxy {
            addr,
            stats_port,
            dir,
            config: path,
            child: Some(child),
            log,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The stats port's JSON document.
    pub fn stats_json(&self) -> String {
        let mut s =
            TcpStream::connect(("127.0.0.1", self.stats_port)).expect("connect to the stats port");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read stats");
        out
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, "-TERM");
        child.wait().expect("wait for the proxy")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw memcached text-protocol client: send bytes, read whole replies.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// Reads until `n` complete replies have arrived (VALUE blocks and data counted in) and
    /// returns their bytes.
    pub fn read_replies(&mut self, n: usize) -> Vec<u8> {
        let mut end = 0;
        for _ in 0..n {
            end = loop {
                if let Some(len) = reply_len(&self.buf[end..]) {
                    break end + len;
                }
                self.fill();
            };
        }
        self.buf.drain(..end).collect()
    }

    /// Sends `request` and returns its one reply's bytes.
    pub fn call_raw(&mut self, request: &[u8]) -> Vec<u8> {
        self.send(request);
        self.read_replies(1)
    }

    /// Sends `request` and returns its one reply as text (lossy).
    pub fn call(&mut self, request: &[u8]) -> String {
        self.send(request);
        String::from_utf8_lossy(&self.read_replies(1)).into_owned()
    }

    /// `set` then expect `STORED`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        let mut req = b"set ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        let reply = self.call(&req);
        assert_eq!(reply, "STORED\r\n", "set {}", String::from_utf8_lossy(key));
    }

    /// `get` one key: its value, or None on a miss. Panics on an error reply.
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let mut req = b"get ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(b"\r\n");
        self.send(&req);
        let reply = self.read_replies(1);
        if reply == b"END\r\n" {
            return None;
        }
        assert!(
            reply.starts_with(b"VALUE "),
            "get {}: {}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&reply)
        );
        let nl = reply.iter().position(|&b| b == b'\n').expect("line");
        Some(reply[nl + 1..reply.len() - 7].to_vec())
    }

    /// True when the server closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).expect("read from server");
        assert!(
            n > 0,
            "server closed the connection; got so far: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the first complete reply in `buf`: a line, a VALUE... END sequence, or a
/// meta VA block.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let nl = pos + buf[pos..].iter().position(|&b| b == b'\n')?;
        let line = &buf[pos..nl + 1];
        let data_len = |line: &[u8], idx: usize| -> usize {
            // Split on the protocol's separator only: keys may hold any other byte.
            let line = line.strip_suffix(b"\r\n").unwrap_or(line);
            let token = line
                .split(|&b| b == b' ')
                .filter(|t| !t.is_empty())
                .nth(idx);
            token
                .and_then(|t| std::str::from_utf8(t).ok()?.parse().ok())
                .expect("a length in a VALUE/VA line")
        };
        if line.starts_with(b"VALUE ") {
            let end = nl + 1 + data_len(line, 3) + 2;
            if buf.len() < end {
                return None;
            }
            pos = end;
            continue;
        }
        if line.starts_with(b"VA ") {
            let end = nl + 1 + data_len(line, 1) + 2;
            return (buf.len() >= end).then_some(end);
        }
        if line.starts_with(b"STAT ") {
            pos = nl + 1;
            continue;
        }
        return Some(nl + 1);
    }
}

/// Every key each memcached holds, via `lru_crawler metadump all`.
pub fn dump_keys(server: &Memcached) -> Vec<Vec<u8>> {
    let mut c = server.client();
    c.send(b"lru_crawler metadump all\r\n");
    let mut keys = Vec::new();
    let mut text = Vec::new();
    loop {
        c.fill();
        text.extend_from_slice(&c.buf);
        c.buf.clear();
        if text.ends_with(b"END\r\n") || text.starts_with(b"BUSY") || text.starts_with(b"ERROR") {
            break;
        }
    }
    assert!(
        text.ends_with(b"END\r\n"),
        "metadump failed: {}",
        String::from_utf8_lossy(&text)
    );
    for line in text.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"key=") {
            let enc = rest.split(|&b| b == b' ').next().unwrap_or_default();
            keys.push(url_decode(enc));
        }
    }
    keys
}

fn url_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let hex = std::str::from_utf8(&s[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers for the protocol, bad-input, backend-failure and operations tests.

/// The ring nutcracker builds over `n` servers named `mc1`..`mcN` (weight 1, ketama).
fn mc_ring(n: usize) -> walnut::ring::Ring {
    use walnut::ring::{Distribution, Ring, RingServer};
    let names: Vec<String> = (1..=n).map(|i| format!("mc{i}")).collect();
    let servers: Vec<RingServer> = names
        .iter()
        .map(|name| RingServer {
            name: name.as_bytes(),
            weight: 1,
        })
        .collect();
    Ring::build(Distribution::Ketama, &servers, &vec![true; n])
}

/// Which of `n` servers named `mc1`..`mcN` (weight 1, ketama, fnv1a_64) holds `key`: where
/// nutcracker puts it (the `classic` test checks this placement against the real nutcracker).
pub fn mc_owner(n: usize, key: &[u8]) -> usize {
    mc_ring(n)
        .locate(walnut::hash::HashKind::Fnv1a64, None, key)
        .expect("a live server")
}

/// The first `count` keys `{prefix}{i}` that `mc_owner(n, _)` puts on server `index` (0-based).
pub fn mc_keys_on(n: usize, index: usize, count: usize, prefix: &str) -> Vec<String> {
    let ring = mc_ring(n);
    let keys: Vec<String> = (0..1_000_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| ring.locate(walnut::hash::HashKind::Fnv1a64, None, k.as_bytes()) == Some(index))
        .take(count)
        .collect();
    assert_eq!(
        keys.len(),
        count,
        "no {count} keys {prefix}N on server {index} of {n}"
    );
    keys
}

/// A pool `alpha` listening on `{listen}` (ketama, fnv1a_64) over `servers` (`host:port`, or a
/// unix socket path), named `mc1`, `mc2`, ... in order. `options` are extra lines, each
/// `  key: value\n`.
pub fn mc_pool(servers: &[String], options: &str) -> String {
    let mut yaml = format!(
        "alpha:\n  listen: {{listen}}\n  hash: fnv1a_64\n  distribution: ketama\n{options}  servers:\n"
    );
    for (i, s) in servers.iter().enumerate() {
        yaml.push_str(&format!("   - {s}:1 mc{}\n", i + 1));
    }
    yaml
}

/// A storage request: `<cmd> <key> <flags> 0 <len>[ <extra>]\r\n<data>\r\n` (`extra` is the cas
/// unique and/or `noreply`).
pub fn storage_request(cmd: &str, key: &str, flags: u32, data: &[u8], extra: &str) -> Vec<u8> {
    let mut req = format!("{cmd} {key} {flags} 0 {}", data.len()).into_bytes();
    if !extra.is_empty() {
        req.push(b' ');
        req.extend_from_slice(extra.as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(data);
    req.extend_from_slice(b"\r\n");
    req
}

/// One block of a retrieval reply: `VALUE <key> <flags> <len>\r\n<data>\r\n`.
pub fn value_block(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// One block of a retrieval reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub key: String,
    pub flags: u32,
    pub cas: Option<u64>,
    pub data: Vec<u8>,
}

/// Parses a whole `VALUE ... END` reply into its blocks; panics on anything else.
pub fn parse_values(reply: &[u8]) -> Vec<Value> {
    let mut blocks = Vec::new();
    let mut rest = reply;
    loop {
        if rest == b"END\r\n" {
            return blocks;
        }
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or_else(|| panic!("no line in {}", show(reply)));
        let line = std::str::from_utf8(&rest[..nl.saturating_sub(1)]).expect("a text line");
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts[0] == "VALUE" && (parts.len() == 4 || parts.len() == 5),
            "not a VALUE line: {line:?} in {}",
            show(reply)
        );
        let len: usize = parts[3].parse().expect("length");
        assert!(rest.len() >= nl + 3 + len, "truncated: {}", show(reply));
        let data = rest[nl + 1..nl + 1 + len].to_vec();
        assert_eq!(
            &rest[nl + 1 + len..nl + 3 + len],
            b"\r\n",
            "{}",
            show(reply)
        );
        blocks.push(Value {
            key: parts[1].to_string(),
            flags: parts[2].parse().expect("flags"),
            cas: parts.get(4).map(|c| c.parse().expect("cas")),
            data,
        });
        rest = &rest[nl + 3 + len..];
    }
}

/// Shows bytes readably in assertion messages (`\r\n` and binary escaped).
pub fn show(bytes: &[u8]) -> String {
    let text = bytes.escape_ascii().to_string();
    if text.len() > 600 {
        format!(
            "{} ... ({} bytes) ... {}",
            &text[..300],
            bytes.len(),
            &text[text.len() - 200..]
        )
    } else {
        text
    }
}

impl Client {
    /// Reads until `n` bytes have arrived and returns them; fewer only when the server closed
    /// the connection, reset it, or sent nothing for the read timeout.
    pub fn read_len(&mut self, n: usize) -> Vec<u8> {
        let mut chunk = vec![0u8; 256 * 1024];
        while self.buf.len() < n {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        let end = n.min(self.buf.len());
        self.buf.drain(..end).collect()
    }

    /// Sends `request` (any number of pipelined requests) and asserts that the reply bytes are
    /// exactly `expected`. End a pipeline with `mn\r\n` (answered `MN\r\n`) to also prove that no
    /// stray reply came before it.
    pub fn expect(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request);
        let got = self.read_len(expected.len());
        assert!(
            got == expected,
            "request: {}\nexpected: {}\n     got: {}",
            show(request),
            show(expected),
            show(&got)
        );
    }

    /// Changes how long a read waits for the server (10 s by default).
    pub fn set_read_timeout(&self, limit: Duration) {
        self.stream
            .set_read_timeout(Some(limit))
            .expect("set read timeout");
    }

    /// Closes the sending side (as `nc -q` does at the end of its input); replies still arrive.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down the sending side");
    }

    /// True when nothing more arrives within `limit` (and the connection is still open).
    pub fn is_quiet_for(&mut self, limit: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream
            .set_read_timeout(Some(limit))
            .expect("set timeout");
        let mut byte = [0u8; 1];
        let quiet = match self.stream.read(&mut byte) {
            Ok(0) => false,
            Ok(_) => {
                self.buf.push(byte[0]);
                false
            }
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        quiet
    }
}

impl Proxy {
    /// The process id while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (`-TERM`, `-INT`, ...) without waiting.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            signal(c, sig);
        }
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A real memcached listening on a unix socket (`memcached -s PATH`) in a directory of its own.
pub struct UnixMemcached {
    pub path: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl UnixMemcached {
    pub fn start() -> UnixMemcached {
        let dir = temp_dir("mc-unix");
        let path = dir.join("mc.sock");
        let bin = require("memcached", "memcached");
        let mut child = Command::new(bin)
            .arg("-s")
            .arg(&path)
            .args(["-a", "0700", "-t", "1", "-m", "64", "-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached on a unix socket");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&path).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "memcached exited before listening on {}: {status}",
                    path.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "memcached did not listen on {} within 20 s",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        UnixMemcached {
            path,
            dir,
            child: Some(child),
        }
    }

    /// A `servers:` entry stem for it: the socket path.
    pub fn address(&self) -> String {
        self.path.display().to_string()
    }

    /// Sends `request` on a fresh connection and returns its `replies` replies.
    pub fn call(&self, request: &[u8], replies: usize) -> Vec<u8> {
        unix_call(&self.path, request, replies)
    }

    /// `get` one key directly: its value, or None on a miss.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut req = b"get ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(b"\r\n");
        let reply = self.call(&req, 1);
        if reply == b"END\r\n" {
            return None;
        }
        assert!(reply.starts_with(b"VALUE "), "get: {}", show(&reply));
        let nl = reply.iter().position(|&b| b == b'\n').expect("line");
        Some(reply[nl + 1..reply.len() - 7].to_vec())
    }
}

impl Drop for UnixMemcached {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `request` to the unix socket at `path` on a fresh connection and returns the bytes of
/// its first `replies` replies.
pub fn unix_call(path: &Path, request: &[u8], replies: usize) -> Vec<u8> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    s.write_all(request).expect("send on the unix socket");
    let mut buf = Vec::new();
    let mut end = 0;
    let mut chunk = [0u8; 64 * 1024];
    for _ in 0..replies {
        end = loop {
            if let Some(len) = reply_len(&buf[end..]) {
                break end + len;
            }
            let n = s.read(&mut chunk).expect("read from the unix socket");
            assert!(n > 0, "closed; got so far: {}", show(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
    }
    buf.truncate(end);
    buf
}

/// A real nginx (Debian's `nginx` package) in its own prefix on a loopback port chosen at run
/// time, with `server_body` inside its `server { }` block. Its access log records the method,
/// the URI and the connection serial number of every request (`$connection`).
pub struct Nginx {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(server_body: &str) -> Nginx {
        Nginx::start_on(free_port(), server_body)
    }

    pub fn start_on(port: u16, server_body: &str) -> Nginx {
        let dir = temp_dir("nginx");
        std::fs::create_dir_all(dir.join("html")).expect("nginx html dir");
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               log_format walnut '$request_method $request_uri $connection';\n\
               access_log {d}/access.log walnut;\n\
               client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               keepalive_requests 100000;\n\
               server {{ listen 127.0.0.1:{port}; root {d}/html; {server_body} }}\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let mut n = Nginx {
            port,
            dir,
            child: None,
        };
        n.restart();
        n
    }

    /// Starts it (again) on its port.
    pub fn restart(&mut self) {
        let bin = require("nginx", "nginx");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_listening(self.addr(), "nginx", &mut child);
        self.child = Some(child);
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A file served from its root.
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.join("html").join(name), bytes).expect("write nginx file");
    }

    /// The access log: `(method, uri, connection number)` per request.
    pub fn requests(&self) -> Vec<(String, String, u64)> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some((
                    w.next()?.to_owned(),
                    w.next()?.to_owned(),
                    w.next()?.parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP response as read by [`HttpClient`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1 client on one connection: send bytes, read whole responses.
pub struct HttpClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        let stream = TcpStream::connect(addr).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set read timeout");
        HttpClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the proxy");
    }

    /// `GET path` with keep-alive, answered.
    pub fn get(&mut self, path: &str) -> HttpResponse {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response(false)
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read from the proxy");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill() > 0, "connection closed mid-line");
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response (its body too, unless `head_request`).
    pub fn read_response(&mut self, head_request: bool) -> HttpResponse {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("a header line");
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let mut r = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || status < 200 {
            return r;
        }
        if r.header("transfer-encoding").is_some() {
            loop {
                let size = usize::from_str_radix(self.line().split(';').next().unwrap(), 16)
                    .expect("chunk size");
                if size == 0 {
                    while !self.line().is_empty() {}
                    break;
                }
                let data = self.take(size);
                r.body.extend_from_slice(&data);
                self.take(2);
            }
        } else if let Some(len) = r.header("content-length") {
            let len = len.parse().expect("content-length");
            r.body = self.take(len);
        } else {
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    /// Whether the peer closed the connection (waiting up to `limit`).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).expect("timeout");
        let mut b = [0u8; 1024];
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// One request as a [`TestBackend`] saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub head: String,
    pub body_len: u64,
    pub connection: u64,
}

/// A small HTTP/1.1 backend (std threads): answers every request with `200` and a body
/// naming its path and how many body bytes it read, records every request, keeps connections
/// alive. Bodies may be Content-Length or chunked; they are counted, never stored.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    pub connections: std::sync::Arc<AtomicU32>,
}

impl TestBackend {
    pub fn start() -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test backend");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(AtomicU32::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = u64::from(c.fetch_add(1, Ordering::Relaxed));
                let s = s.clone();
                std::thread::spawn(move || backend_conn(stream, n, &s));
            }
        });
        TestBackend {
            addr,
            seen,
            connections,
        }
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen").clone()
    }
}

fn backend_conn(stream: TcpStream, n: u64, seen: &std::sync::Mutex<Vec<SeenRequest>>) {
    let mut r = std::io::BufReader::with_capacity(65536, stream.try_clone().expect("clone"));
    let mut w = stream;
    use std::io::BufRead;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let lower = head.to_ascii_lowercase();
        let header = |name: &str| {
            lower.lines().find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_owned())
            })
        };
        let mut body_len = 0u64;
        if header("transfer-encoding").is_some() {
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let size = u64::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                if size == 0 {
                    let mut end = String::new();
                    let _ = r.read_line(&mut end);
                    break;
                }
                if std::io::copy(&mut (&mut r).take(size), &mut std::io::sink()).is_err() {
                    return;
                }
                body_len += size;
                let mut crlf = String::new();
                let _ = r.read_line(&mut crlf);
            }
        } else if let Some(len) = header("content-length") {
            let len: u64 = len.parse().unwrap_or(0);
            body_len = std::io::copy(&mut (&mut r).take(len), &mut std::io::sink()).unwrap_or(0);
        }
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        seen.lock().expect("seen").push(SeenRequest {
            head: head.clone(),
            body_len,
            connection: n,
        });
        let body = format!("path={path} body={body_len}\n");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend-Conn: {n}\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The resident memory of process `pid`, in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Three memcached servers (`mc1`..`mc3`) behind walnut (pool timeout 2 s).
pub fn three_servers() -> (Vec<Memcached>, Proxy) {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = Proxy::walnut(&mc_pool(&addrs, "  timeout: 2000\n"));
    (servers, walnut)
}
