//! The status page in a real browser: headless Chromium loads `/status` from walnut's admin
//! listener, runs its script (which refreshes from `/status.json`), takes a screenshot, and the
//! servers' states are read from the page it rendered.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walnut_tests::{Memcached, Proxy, admin_get, eventually, mc_pool, require, temp_dir};

/// Runs headless Chromium on `url` with `action` (`--dump-dom`, `--screenshot=FILE`), letting
/// the page's timers run for 5 s of virtual time; returns stdout.
fn chromium(url: &str, action: &str, profile: &Path) -> String {
    let bin = require("chromium", "chromium");
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {action} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_shows_servers_up_and_ejected_in_chromium() {
    let mut ms = [Memcached::start(), Memcached::start()];
    let options = "  timeout: 1000\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n";
    let config = mc_pool(
        &ms.iter().map(Memcached::address).collect::<Vec<_>>(),
        options,
    );
    let (walnut, admin) = Proxy::walnut_admin(&config, &["-w", "1"]);
    let mut c = walnut.client();
    for i in 0..10 {
        c.set(format!("k{i}").as_bytes(), b"v");
    }
    // mc2 dies and is ejected (its probe waits 10 minutes: it stays out for the test).
    ms[1].kill();
    // Its idle connection's EOF is no failure; a request to it is (connect refused).
    for i in 0..10 {
        c.call(format!("get k{i}\r\n").as_bytes());
    }
    let ejected = eventually(Duration::from_secs(10), || {
        admin_get(admin, "/status.json")
            .1
            .contains("\"state\":\"ejected\"")
    });
    assert!(ejected, "mc2 is ejected");

    let dir = temp_dir("chromium");
    let url = format!("http://127.0.0.1:{admin}/status");
    let dom = chromium(&url, "--dump-dom", &dir.join("profile1"));
    // The rows the script rendered, with each server's state.
    let row = |name: &str, state: &str| format!("data-server=\"{name}\" data-state=\"{state}\"");
    assert!(dom.contains(&row("mc1", "up")), "mc1 up in:\n{dom}");
    assert!(
        dom.contains(&row("mc2", "ejected")),
        "mc2 ejected in:\n{dom}"
    );
    assert!(dom.contains(&ms[0].address()) && dom.contains(&ms[1].address()));
    assert!(dom.contains("Pool alpha (memcache)"), "{dom}");
    // The ejection's time is shown for mc2; mc1 has been up since the start.
    assert!(dom.contains(" UTC</td>"), "{dom}");
    // The page refreshed itself from /status.json at least once in its 5 s.
    let refreshes: u32 = dom
        .split("refreshes ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refresh count in:\n{dom}"));
    assert!(refreshes >= 1, "the page never refreshed:\n{dom}");
    // And a rate appears once there are two samples.
    assert!(dom.contains("/s)"), "{dom}");

    let shot = dir.join("status.png");
    chromium(
        &url,
        &format!("--screenshot={}", shot.display()),
        &dir.join("profile2"),
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a page, not a blank: {} bytes",
        png.len()
    );
    // Kept for a person to look at when the test is run by hand.
    let keep = std::env::temp_dir().join("walnut-status.png");
    let _ = std::fs::copy(&shot, &keep);
    eprintln!("screenshot: {}", keep.display());
    let _ = std::fs::remove_dir_all(dir);
}
