//! Real memcached processes (TCP and unix socket) for the tests, and what they hold.

#[allow(unused_imports)]
use super::*;

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

    /// With extra memcached flags (e.g. `-I 2m`). A start that fails its check (on a loaded
    /// machine a process can die or lose its port right after listening) is tried again on
    /// another port, twice at most.
    pub fn start_with(extra: &[&str]) -> Memcached {
        let mut m = Memcached {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..2 {
            match m.launch() {
                Ok(()) => return m,
                Err(e) => eprintln!("memcached on {}: {e}; trying another port", m.port),
            }
            m.port = free_port();
        }
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
        if let Err(e) = self.launch() {
            panic!("memcached on 127.0.0.1:{}: {e}", self.port);
        }
    }

    /// Starts memcached on `port` and checks that what answers there is that process.
    fn launch(&mut self) -> Result<(), String> {
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
        let pid = match stats_pid(self.addr()) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no stats: {e}"));
            }
        };
        if pid != child.id().to_string() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "answered for process {pid}, not the one just started"
            ));
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server keeps its sockets but never answers. Returns once every thread of
    /// it is stopped, so nothing sent afterwards is answered.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            assert!(signal(c, "-STOP"), "kill -STOP {}", c.id());
            let stopped = eventually(Duration::from_secs(5), || all_threads_stopped(c.id()));
            assert!(stopped, "memcached {} did not stop on SIGSTOP", c.id());
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

/// Every thread of process `pid` is stopped (state `T` in /proc).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

/// The `pid` a memcached reports in `stats`.
fn stats_pid(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"stats\r\n")?;
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    while !text.ends_with(b"END\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        text.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("STAT pid "))
        .map(|p| p.trim().to_string())
        .ok_or_else(|| std::io::Error::other("no pid in stats"))
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
