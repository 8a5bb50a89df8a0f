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
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
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
            let text = String::from_utf8_lossy(line);
            text.split_whitespace()
                .nth(idx)
                .and_then(|t| t.parse().ok())
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
