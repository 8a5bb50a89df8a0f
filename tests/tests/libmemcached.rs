//! A real client: libmemcached's command-line tools (Debian's libmemcached-tools: memccp,
//! memccat, memcexist, memcrm, memctouch, memcflush, memcstat) talking to walnut.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use walnut_tests::{Memcached, Proxy, mc_keys_on, mc_owner, mc_pool, require, temp_dir};

/// A libmemcached tool by its Debian name (`memccat`) or its upstream one (`memcat`).
fn tool(debian: &str, upstream: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&dirs).chain(["/usr/bin".into(), "/usr/local/bin".into()]) {
        for name in [debian, upstream] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    require(debian, "libmemcached-tools")
}

fn run(program: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn two_servers() -> (Vec<Memcached>, Proxy) {
    let servers: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = Proxy::walnut(&mc_pool(&addrs, ""));
    (servers, walnut)
}

#[test]
fn memccp_and_memccat_copy_files_through_walnut_byte_exact() {
    let memccp = tool("memccp", "memcp");
    let memccat = tool("memccat", "memcat");
    let (servers, walnut) = two_servers();
    let dir = temp_dir("memccp");
    let servers_arg = format!("--servers={}", walnut.addr);
    // File names are the keys: pick names that land on each server.
    let names: Vec<String> = (0..2).flat_map(|i| mc_keys_on(2, i, 2, "file-")).collect();
    let mut rng = 0x2545_f491u32;
    let contents: Vec<Vec<u8>> = vec![
        (0..1024).map(|i| (i % 256) as u8).collect(),
        b"line\r\nEND\r\nVALUE x 0 1\r\ny\r\nSTORED\r\n".to_vec(),
        (0..200_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng as u8
            })
            .collect(),
        b"\r\n".to_vec(),
    ];
    for (name, data) in names.iter().zip(&contents) {
        std::fs::write(dir.join(name), data).expect("write file");
    }
    let mut args = vec![servers_arg.as_str()];
    args.extend(names.iter().map(String::as_str));
    let out = run(&memccp, &args, &dir);
    assert!(out.status.success(), "memccp: {}", describe(&out));

    for (name, data) in names.iter().zip(&contents) {
        // Stored byte-exact on the server nutcracker would pick.
        let owner = mc_owner(2, name.as_bytes());
        assert_eq!(
            servers[owner].client().get(name.as_bytes()).as_deref(),
            Some(&data[..]),
            "{name} on mc{}",
            owner + 1
        );
        // And read back through walnut by memccat.
        let copy = dir.join(format!("{name}.out"));
        let file_arg = format!("--file={}", copy.display());
        let out = run(&memccat, &[&servers_arg, &file_arg, name], &dir);
        assert!(out.status.success(), "memccat {name}: {}", describe(&out));
        let back = std::fs::read(&copy).expect("memccat wrote the file");
        assert!(
            back == *data,
            "{name}: {} bytes back, {} sent",
            back.len(),
            data.len()
        );
    }
    // A key that does not exist.
    let out = run(&memccat, &[&servers_arg, "no-such-file"], &dir);
    assert!(
        !out.status.success(),
        "memccat of a miss fails: {}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn memcexist_memcrm_memctouch_memcflush_and_memcstat_through_walnut() {
    let memcexist = tool("memcexist", "memexist");
    let memcrm = tool("memcrm", "memrm");
    let memctouch = tool("memctouch", "memtouch");
    let memcflush = tool("memcflush", "memflush");
    let memcstat = tool("memcstat", "memstat");
    let (servers, walnut) = two_servers();
    let dir = temp_dir("memctools");
    let servers_arg = format!("--servers={}", walnut.addr);
    let mut c = walnut.client();
    let keys: Vec<String> = (0..2).flat_map(|i| mc_keys_on(2, i, 2, "tool:")).collect();
    for key in &keys {
        c.set(key.as_bytes(), b"x");
    }
    let owner = |key: &str| &servers[mc_owner(2, key.as_bytes())];

    for key in &keys {
        let out = run(&memcexist, &[&servers_arg, key], &dir);
        assert!(out.status.success(), "memcexist {key}: {}", describe(&out));
    }
    let out = run(&memcexist, &[&servers_arg, "tool:missing"], &dir);
    assert!(
        !out.status.success(),
        "memcexist of a miss: {}",
        describe(&out)
    );

    // memcrm deletes on the right server.
    let out = run(&memcrm, &[&servers_arg, &keys[0], &keys[2]], &dir);
    assert!(out.status.success(), "memcrm: {}", describe(&out));
    for key in [&keys[0], &keys[2]] {
        assert_eq!(
            owner(key).client().get(key.as_bytes()),
            None,
            "{key} removed"
        );
        let out = run(&memcexist, &[&servers_arg, key], &dir);
        assert!(!out.status.success(), "{key} is gone: {}", describe(&out));
    }

    // memctouch sets the expiry on the server holding the key.
    let out = run(&memctouch, &[&servers_arg, "--expire=5000", &keys[1]], &dir);
    assert!(out.status.success(), "memctouch: {}", describe(&out));
    let ttl = owner(&keys[1])
        .client()
        .call(format!("mg {} t\r\n", keys[1]).as_bytes());
    assert!(ttl == "HD t5000\r\n" || ttl == "HD t4999\r\n", "{ttl:?}");

    // memcstat talks to walnut, which answers itself.
    let out = run(&memcstat, &[&servers_arg], &dir);
    assert!(out.status.success(), "memcstat: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1.6.0-walnut-"),
        "memcstat shows walnut's stats: {}",
        describe(&out)
    );

    // memcflush empties every server.
    let out = run(&memcflush, &[&servers_arg], &dir);
    assert!(out.status.success(), "memcflush: {}", describe(&out));
    for key in &keys {
        assert_eq!(
            owner(key).client().get(key.as_bytes()),
            None,
            "{key} flushed"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
