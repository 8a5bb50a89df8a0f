//! `walnut -t` on configs that are not config files, or are built to be slow to read: an
//! endless device, a FIFO nobody writes to, flow collections nested hundreds of thousands
//! deep, a 20,000-server JSON config. Each run ends (a guard kills it after a minute) with
//! exit status 1 and a `file:line:` message, or with "syntax is ok".

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use walnut_tests::{require, temp_dir, walnut_bin};

/// Runs `walnut -t -c conf` through `bash -c` (so `conf` may be a process substitution),
/// killed if it runs for a minute.
fn check_config(conf: &str) -> Output {
    let mut child = Command::new(require("bash", "bash"))
        .arg("-c")
        .arg(format!("exec {} -t -c {conf}", walnut_bin().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start walnut -t");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("walnut -t -c {conf} still runs after a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("walnut's output")
}

/// The first line walnut printed on stderr, after a run that failed with status 1.
fn refusal(conf: &str) -> String {
    let out = check_config(conf);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{conf}: {stderr}");
    assert!(stderr.contains("syntax is invalid"), "{conf}: {stderr}");
    stderr.lines().next().unwrap_or_default().to_owned()
}

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

#[test]
fn an_endless_file_is_refused_at_one_mib() {
    assert_eq!(
        refusal("/dev/zero"),
        "/dev/zero:1: the file goes on past 1 MiB (1048576 bytes), the most walnut reads: is it a config file?"
    );
    let dir = temp_dir("config-limits");
    let lines = write(&dir, "lines.yml", "# a comment line\n".repeat(70_000));
    assert_eq!(
        refusal(&lines),
        format!(
            "{lines}:61681: the file goes on past 1 MiB (1048576 bytes), the most walnut reads: is it a config file?"
        )
    );
}

#[test]
fn fifos_and_pipes_never_hang() {
    let dir = temp_dir("config-fifo");
    let fifo = dir.join("fifo.yml");
    let made = Command::new(require("mkfifo", "coreutils"))
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    // Nobody writes to it: it reads as empty.
    assert_eq!(
        refusal(&fifo.display().to_string()),
        format!(
            "{}:1: no pools: expected a pool name followed by its indented keys (listen:, servers:, ...)",
            fifo.display()
        )
    );
    // A pipe whose writer takes its time is read to its end.
    let conf = "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n";
    let file = write(&dir, "conf.yml", conf);
    let out = check_config(&format!("<(sleep 0.2; cat {file})"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("syntax is ok"));
}

#[test]
fn deep_nesting_is_refused_at_once_naming_its_line() {
    let dir = temp_dir("config-deep");
    let maps = write(
        &dir,
        "maps.yml",
        format!(
            "alpha:\n  listen: 127.0.0.1:22121\n  x: {}\n",
            "{a: ".repeat(200_000)
        ),
    );
    let message = "[ ] and { } nest more than 64 deep here; walnut refuses deeper nesting";
    assert_eq!(refusal(&maps), format!("{maps}:3: {message}"));
    let lists = write(
        &dir,
        "lists.yml",
        format!("alpha:\n  servers:\n{}\n", "  [\n".repeat(300)),
    );
    assert_eq!(refusal(&lists), format!("{lists}:67: {message}"));
    // Inside quotes and comments, brackets are text.
    let many = "[".repeat(500);
    let quoted = format!(
        "alpha: # {many}\n  listen: 127.0.0.1:22121\n  redis_auth: \"{many}\"\n  servers:\n   - 127.0.0.1:11211:1\n"
    );
    let quoted = write(&dir, "quoted.yml", quoted);
    assert!(refusal(&quoted).starts_with(&format!("{quoted}:3: pool \"alpha\": redis_auth")));
}

#[test]
fn a_large_json_config_is_read_in_one_pass_and_errors_name_their_line() {
    let servers: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                "    \"127.0.{}.{}:{}:1 s{i}\"",
                i / 250,
                i % 250 + 1,
                1000 + i % 60_000
            )
        })
        .collect();
    let json = |servers: &[String]| {
        format!(
            "{{\n  \"alpha\": {{\n    \"listen\": \"127.0.0.1:22121\",\n    \"servers\": [\n{}\n    ]\n  }}\n}}\n",
            servers.join(",\n")
        )
    };
    let dir = temp_dir("config-json");
    let good = write(&dir, "good.json", json(&servers));
    let out = check_config(&good);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut bad = servers;
    bad[15_000] = "    \"127.0.0.1:0:1 zero\"".to_owned();
    let bad_file = write(&dir, "bad.json", json(&bad));
    assert_eq!(
        refusal(&bad_file),
        format!(
            "{bad_file}:15005: pool \"alpha\": servers: \"127.0.0.1:0:1 zero\" has an invalid port (expected 1 to 65535)"
        )
    );
}

#[test]
fn text_that_is_not_utf8_names_its_line() {
    let dir = temp_dir("config-latin1");
    let file = write(
        &dir,
        "latin1.yml",
        b"alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - caf\xe9:11211:1\n",
    );
    assert_eq!(
        refusal(&file),
        format!("{file}:4: byte 0xe9 at column 9 is not UTF-8 text")
    );
}
