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

mod admin;
mod client;
mod curl;
mod http;
mod memcache;
mod memcached;
mod proxy;
mod site;

pub use admin::*;
pub use client::*;
pub use curl::*;
pub use http::*;
pub use memcache::*;
pub use memcached::*;
pub use proxy::*;
pub use site::*;

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

/// `walnut -t -c path`: whether the config was found good, and what walnut printed (stdout,
/// then stderr).
pub fn walnut_check(path: &Path) -> (bool, String) {
    let out = Command::new(walnut_bin())
        .args(["-t", "-c"])
        .arg(path)
        .output()
        .expect("run walnut -t");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
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

/// Sends `sig` (`-STOP`, `-CONT`) with kill(1); false when that failed (the process is gone,
/// or even starting `kill` failed five times on a loaded machine).
fn signal(child: &Child, sig: &str) -> bool {
    (0..5).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    })
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

/// Raises this process's open-file limit to its hard limit, and fails saying what to do when
/// that is below `need` (the tests that open thousands of connections need it).
pub fn raise_fd_limit(need: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    assert!(ok, "cannot raise the open-file limit");
    assert!(
        limit.rlim_max >= need,
        "this test opens {need} files and sockets, but the hard open-file limit is {}: raise it (`ulimit -Hn {need}` as root, or LimitNOFILE=)",
        limit.rlim_max
    );
}
