//! The README's run command from a clean clone: `./run` in a fresh `git clone` of this
//! repository (its committed HEAD), with `RUSTUP_AUTO_INSTALL=0` and a `rustup` that reports the
//! wasm32 target missing (as on a machine whose stable toolchain came without it), builds, starts
//! two memcached and walnut, serves a client, and stops everything it started on Ctrl-C
//! (SIGINT to its process group).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use walnut_tests::{Client, admin_get, eventually, require, temp_dir};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The value after `label` on the line that has it (`memcached clients  127.0.0.1:PORT`).
fn after(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
}

fn port_of(addr: &str) -> u16 {
    addr.split_whitespace()
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.trim_end_matches('/').split('/').next().map(str::to_owned))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// The process group `./run` leads: whatever is left of it is stopped when the test ends, also
/// when it fails half-way.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn the_run_command_works_from_a_clean_clone_and_stops_on_ctrl_c() {
    require("git", "git");
    let real_rustup = require("rustup", "rustup (https://rustup.rs)");
    let dir = temp_dir("run-command");
    let clone = dir.join("walnut");
    let status = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(workspace())
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(status.success(), "git clone of the workspace");
    // A rustup that says the wasm32 target is not installed and records the script adding it.
    let shims = dir.join("shims");
    std::fs::create_dir_all(&shims).expect("shim dir");
    let added = dir.join("rustup-calls");
    let shim = shims.join("rustup");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nif [ \"$*\" = \"target list --installed\" ]; then exit 0; fi\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            added.display(),
            real_rustup.display()
        ),
    )
    .expect("write the rustup shim");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out_path = dir.join("run.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    // The workspace's target folder: dependencies already built are reused, the clone's own
    // crates are built anew.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let mut run = Command::new("bash");
    run.arg("./run")
        .current_dir(&clone)
        .env("PATH", path)
        .env("RUSTUP_AUTO_INSTALL", "0")
        .env("CARGO_TARGET_DIR", &target)
        .env("WALNUT_RUN_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .process_group(0);
    // As from a terminal: SIGINT not ignored, whatever this test process inherited (a shell
    // ignores it for its background jobs, and bash cannot trap a signal ignored on entry).
    // SAFETY: between fork and exec only signal(2), which is async-signal-safe, is called.
    unsafe {
        run.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = run.spawn().expect("start ./run");
    let pgid = child.id();
    let _group = Group(pgid);
    let text = |p: &Path| {
        let mut s = String::new();
        let _ = std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    // Building from the clone takes minutes on a cold machine; nothing is timed but this wait.
    let deadline = Instant::now() + Duration::from_secs(1500);
    while !text(&out_path).contains("Ctrl-C stops") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("./run exited with {status}:\n{}", text(&out_path));
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            panic!("./run did not start walnut in time:\n{}", text(&out_path));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let printed = text(&out_path);
    assert!(
        text(&added).contains("target add wasm32-unknown-unknown"),
        "./run adds the missing target:\n{printed}"
    );
    let listen = port_of(&after(&printed, "memcached clients"));
    let admin = port_of(&after(&printed, "http://127.0.0.1:"));
    let walnut_pid: u32 = after(&printed, "walnut is running (pid")
        .split(')')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("walnut's pid");
    // The plugins of conf/plugins.yml are at work: a tenant key, a refused flush_all.
    let mut c = Client::connect(([127, 0, 0, 1], listen).into());
    assert_eq!(
        c.call(b"set tenant1:a 0 0 1\r\nx\r\n"),
        "STORED\r\n",
        "{printed}"
    );
    assert_eq!(
        c.call(b"get tenant1:a\r\n"),
        "VALUE tenant1:a 0 1\r\nx\r\nEND\r\n"
    );
    assert!(c.call(b"flush_all\r\n").starts_with("CLIENT_ERROR"));
    drop(c);
    let (status, route) = admin_get(admin, "/route?pool=alpha&key=tenant1:a");
    assert_eq!(status, 200);
    assert!(route.contains("\"sent_key\": \"t1/a\""), "{route}");
    let memcached: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains("(memcached)")
                && stat
                    .rsplit_once(") ")
                    .and_then(|(_, r)| r.split(' ').nth(2))
                    .and_then(|pgrp| pgrp.parse::<u32>().ok())
                    == Some(pgid)
        })
        .collect();
    assert_eq!(memcached.len(), 2, "two memcached in the run's group");

    // Ctrl-C: SIGINT to the whole foreground group, as a terminal sends it.
    let _ = Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status();
    let ended = eventually(Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(ended, "./run ends on Ctrl-C:\n{}", text(&out_path));
    let gone = eventually(Duration::from_secs(15), || {
        !alive(walnut_pid) && memcached.iter().all(|&p| !alive(p))
    });
    assert!(gone, "walnut and both memcached are stopped");
    assert!(std::net::TcpStream::connect(("127.0.0.1", listen)).is_err());
    assert!(text(&out_path).contains("stopping walnut and memcached"));
    let _ = std::fs::remove_dir_all(dir);
}
