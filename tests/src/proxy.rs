//! The proxy under test (walnut or nutcracker) as a process with its config, logs and stats.

#[allow(unused_imports)]
use super::*;

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
        if std::thread::panicking() {
            // A failed test shows what the proxy said and whether it was still running.
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let log = self.log();
            let start = (log.len().saturating_sub(8192)..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(0);
            let tail = &log[start..];
            eprintln!(
                "proxy on {} ({}); its log ends:\n{tail}",
                self.addr,
                exited.map_or("still running".to_string(), |s| format!("exited: {s}"))
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// Three memcached servers (`mc1`..`mc3`) behind walnut (pool timeout 2 s).
pub fn three_servers() -> (Vec<Memcached>, Proxy) {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = Proxy::walnut(&mc_pool(&addrs, "  timeout: 2000\n"));
    (servers, walnut)
}
