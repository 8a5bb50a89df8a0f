//! Unix sockets on both sides: walnut listening on a socket file with the configured mode, and a
//! memcached reached over its unix socket (`memcached -s PATH`, server entry `/path.sock:1`).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use walnut_tests::{
    Memcached, Proxy, UnixMemcached, eventually, mc_keys_on, mc_pool, temp_dir, unix_call,
};

#[test]
fn walnut_listens_on_a_unix_socket_with_the_configured_mode() {
    let m1 = Memcached::start();
    let dir = temp_dir("unix-listen");
    let open = dir.join("open.sock");
    let private = dir.join("private.sock");
    // The TCP pool lets the harness see walnut is up; the others listen on unix sockets.
    let mut config = mc_pool(&[m1.address()], "");
    for (name, path, mode) in [("beta", &open, "0666"), ("gamma", &private, "0600")] {
        config.push_str(&format!(
            "{name}:\n  listen: {} {mode}\n  hash: fnv1a_64\n  distribution: ketama\n  servers:\n   - {}:1 mc1\n",
            path.display(),
            m1.address()
        ));
    }
    let mut walnut = Proxy::walnut(&config);
    for (path, mode) in [(&open, 0o666), (&private, 0o600)] {
        // The harness saw the TCP listener; the socket files may come a moment later.
        let exists = eventually(Duration::from_secs(5), || {
            std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == mode)
        });
        assert!(exists, "{} exists with mode {mode:o}", path.display());
        let meta = std::fs::metadata(path).expect("the socket exists");
        assert!(
            meta.file_type().is_socket(),
            "{} is a socket",
            path.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o777,
            mode,
            "{} has mode {mode:o}",
            path.display()
        );
    }
    assert_eq!(
        unix_call(&open, b"set u 0 0 4\r\nunix\r\nget u\r\n", 2),
        b"STORED\r\nVALUE u 0 4\r\nunix\r\nEND\r\n"
    );
    assert_eq!(m1.client().get(b"u").as_deref(), Some(&b"unix"[..]));
    assert_eq!(
        unix_call(&private, b"get u\r\nmn\r\n", 2),
        b"VALUE u 0 4\r\nunix\r\nEND\r\nMN\r\n"
    );
    // Bad input on the unix socket gets the same answers.
    assert_eq!(
        unix_call(&open, b"bogus\r\nget\r\nincr k x\r\nmn\r\n", 4),
        b"ERROR\r\nERROR\r\nCLIENT_ERROR invalid numeric delta argument\r\nMN\r\n"
    );
    walnut.signal("-TERM");
    let status = walnut.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
    assert!(!open.exists(), "the socket file is removed on exit");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn memcached_behind_a_unix_socket_is_a_server_like_any_other() {
    let tcp = Memcached::start();
    let unix = UnixMemcached::start();
    let walnut = Proxy::walnut(&mc_pool(&[tcp.address(), unix.address()], ""));
    let mut c = walnut.client();
    let on_tcp = mc_keys_on(2, 0, 3, "sock:");
    let on_unix = mc_keys_on(2, 1, 3, "sock:");
    for key in on_tcp.iter().chain(&on_unix) {
        c.set(key.as_bytes(), format!("v-{key}").as_bytes());
    }
    for key in &on_unix {
        assert_eq!(
            unix.get(key.as_bytes()),
            Some(format!("v-{key}").into_bytes()),
            "{key} is on the unix-socket memcached"
        );
        assert_eq!(tcp.client().get(key.as_bytes()), None);
    }
    for key in &on_tcp {
        assert_eq!(unix.get(key.as_bytes()), None, "{key} is on the TCP one");
    }
    // A multi-get across both, in order.
    let list = [&on_unix[0], &on_tcp[0], &on_unix[1], &on_tcp[1]];
    let mut expected = String::new();
    for key in list {
        expected.push_str(&format!("VALUE {key} 0 {}\r\nv-{key}\r\n", key.len() + 2));
    }
    expected.push_str("END\r\n");
    let keys: Vec<&str> = list.iter().map(|k| k.as_str()).collect();
    c.expect(
        format!("get {}\r\n", keys.join(" ")).as_bytes(),
        expected.as_bytes(),
    );
    // Meta commands and deletes reach it too.
    c.expect(
        format!("ma {}:n N0 J41 v\r\ndelete {}\r\n", on_unix[0], on_unix[1]).as_bytes(),
        b"VA 2\r\n41\r\nDELETED\r\n",
    );
    assert_eq!(unix.get(on_unix[1].as_bytes()), None);
}
