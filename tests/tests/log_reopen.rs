//! The `-o` log file is reopened on SIGUSR1 (and on SIGHUP, nutcracker's reopen signal), so a
//! renamed file is left behind: by hand, and by the real logrotate with a postrotate signal.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walnut_tests::{Memcached, Proxy, eventually, mc_pool, require};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn sigusr1_and_sighup_reopen_the_log_after_a_rename() {
    let m = Memcached::start();
    let mut walnut = Proxy::walnut(&mc_pool(&[m.address()], ""));
    let log = walnut.dir.join("proxy.log");
    // walnut listens before it logs that it started.
    assert!(eventually(Duration::from_secs(10), || read(&log)
        .contains("walnut started")));
    for (round, signal) in [(1, "-USR1"), (2, "-HUP")] {
        let old = walnut.dir.join(format!("proxy.log.{round}"));
        std::fs::rename(&log, &old).expect("rename the log");
        walnut.signal(signal);
        // The reopen is logged, into the new file.
        let reopened = eventually(Duration::from_secs(10), || {
            read(&log).contains("log files reopened")
        });
        assert!(
            reopened,
            "a new {} after {signal}: {:?}",
            log.display(),
            read(&log)
        );
        // Each file holds the lines of its own time: the rotated one ends before this signal.
        assert_eq!(
            read(&log).matches("log files reopened").count(),
            1,
            "{signal}"
        );
        assert_eq!(
            read(&old).matches("log files reopened").count(),
            round - 1,
            "{signal}: {}",
            read(&old)
        );
        // walnut is still serving, and lines go on into the new file.
        assert!(walnut.client().call(b"version\r\n").starts_with("VERSION"));
    }
    assert!(read(&walnut.dir.join("proxy.log.1")).contains("walnut started"));
    let status = walnut.terminate();
    assert!(status.success(), "{status}");
    assert!(read(&log).contains("walnut stopped"), "{}", read(&log));
}

#[test]
fn logrotate_with_a_postrotate_sigusr1_keeps_every_line() {
    let logrotate = require("logrotate", "logrotate");
    let m = Memcached::start();
    let mut walnut = Proxy::walnut(&mc_pool(&[m.address()], ""));
    let log = walnut.dir.join("proxy.log");
    assert!(eventually(Duration::from_secs(10), || read(&log)
        .contains("walnut started")));
    let conf = walnut.dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 3\n  create\n  missingok\n  postrotate\n    kill -USR1 {}\n  endscript\n}}\n",
            log.display(),
            walnut.pid()
        ),
    )
    .expect("logrotate config");
    let state = walnut.dir.join("logrotate.state");
    let out = Command::new(logrotate)
        .arg("-f")
        .arg("-s")
        .arg(&state)
        .arg(&conf)
        .output()
        .expect("run logrotate");
    assert!(out.status.success(), "logrotate: {out:?}");
    let rotated = walnut.dir.join("proxy.log.1");
    assert!(
        read(&rotated).contains("walnut started"),
        "{}",
        read(&rotated)
    );
    assert!(
        eventually(Duration::from_secs(10), || read(&log)
            .contains("log files reopened")),
        "walnut writes to the file logrotate created: {:?}",
        read(&log)
    );
    assert!(walnut.terminate().success());
    assert!(read(&log).contains("walnut stopped"));
    assert!(!read(&rotated).contains("walnut stopped"));
}
