//! memcached's answers in the corners, each compared byte for byte with a memcached spoken to
//! directly: retrieval lines of any length, a value too large unlinking the old one, lines that
//! look like HTTP, and `stats <group>`.

use std::time::Duration;

use walnut_tests::{Client, Memcached, Proxy, mc_pool, show, vm_rss_kib};

/// Three memcached servers behind walnut, and one more to compare with.
fn setup(extra: &str) -> (Vec<Memcached>, Proxy, Memcached) {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = Proxy::walnut(&mc_pool(&addrs, extra));
    (servers, walnut, Memcached::start())
}

/// Sends `request` (`replies` requests) to walnut and to the reference memcached: both answer
/// the same bytes.
fn same_answer(c: &mut Client, reference: &mut Client, request: &[u8], replies: usize) -> Vec<u8> {
    reference.send(request);
    let expected = reference.read_replies(replies);
    c.send(request);
    let got = c.read_replies(replies);
    assert!(
        got == expected,
        "request: {}\nmemcached: {}\n   walnut: {}",
        show(request),
        show(&expected),
        show(&got)
    );
    expected
}

/// Stores `value_of(key)` for every key where it is `Some`, through walnut and on the
/// reference, pipelined.
fn store(
    c: &mut Client,
    reference: &mut Client,
    keys: &[String],
    value_of: impl Fn(usize) -> Option<Vec<u8>>,
) {
    for chunk in keys.chunks(500).enumerate().map(|(n, ks)| (n * 500, ks)) {
        let (base, ks) = chunk;
        let mut wire = Vec::new();
        let mut n = 0;
        for (i, key) in ks.iter().enumerate() {
            if let Some(v) = value_of(base + i) {
                wire.extend_from_slice(format!("set {key} 7 0 {}\r\n", v.len()).as_bytes());
                wire.extend_from_slice(&v);
                wire.extend_from_slice(b"\r\n");
                n += 1;
            }
        }
        for client in [&mut *c, &mut *reference] {
            client.send(&wire);
            let replies = client.read_replies(n);
            assert_eq!(replies, b"STORED\r\n".repeat(n));
        }
    }
}

#[test]
fn retrieval_lines_of_any_length_are_answered_in_key_order_in_bounded_memory() {
    let (_servers, walnut, m) = setup("");
    let (mut c, mut r) = (walnut.client(), m.client());
    c.set_read_timeout(Duration::from_secs(60));
    r.set_read_timeout(Duration::from_secs(60));
    // 200 KB and 2 MB lines, with a value for one key in ten (1 KB each).
    for (count, width, step) in [(20_000usize, 10usize, 10usize), (10_000, 200, 10)] {
        let keys: Vec<String> = (0..count).map(|i| format!("long{i:0width$}")).collect();
        store(&mut c, &mut r, &keys, |i| {
            (i % step == 0).then(|| format!("{i:01024}").into_bytes())
        });
        let rss_before = vm_rss_kib(walnut.pid());
        let line = format!("get {}\r\n", keys.join(" "));
        assert!(line.len() > if width > 10 { 2_000_000 } else { 200_000 });
        let values = count.div_ceil(step);
        let reply = same_answer(&mut c, &mut r, line.as_bytes(), 1);
        assert!(
            reply.ends_with(b"END\r\n"),
            "{}",
            show(&reply[reply.len() - 40..])
        );
        assert_eq!(
            reply.windows(6).filter(|w| w == b"VALUE ").count(),
            values,
            "every stored key, in order"
        );
        // gets too (each server has its own cas uniques, so those are left out).
        let line = format!("gets {}\r\n", keys.join(" "));
        for client in [&mut r, &mut c] {
            client.send(line.as_bytes());
            let got = client.read_replies(1);
            let without_cas: Vec<(String, Vec<u8>)> = walnut_tests::parse_values(&got)
                .into_iter()
                .map(|v| (v.key, v.data))
                .collect();
            assert_eq!(without_cas.len(), values);
            assert!(
                without_cas
                    .iter()
                    .enumerate()
                    .all(|(n, (k, _))| *k == keys[n * step])
            );
        }
        let grown = vm_rss_kib(walnut.pid()).saturating_sub(rss_before);
        assert!(
            grown < 48 * 1024,
            "a {count}-key line read in batches: walnut grew {grown} KiB"
        );
        // The connection goes on.
        same_answer(&mut c, &mut r, b"mn\r\n", 1);
    }
    // gat and gats lines of any length too (memcached itself takes long lines for get and gets
    // only, and closes the connection on others).
    let keys: Vec<String> = (0..20_000).map(|i| format!("long{i:010}")).collect();
    c.send(format!("gat 0 {}\r\n", keys.join(" ")).as_bytes());
    let reply = c.read_replies(1);
    assert_eq!(reply.windows(6).filter(|w| w == b"VALUE ").count(), 2000);
    let first = b"VALUE long0000000000 7 1024\r\n";
    assert!(reply.starts_with(first), "{}", show(&reply[..60]));
}

#[test]
fn a_value_too_large_unlinks_the_old_one_as_memcached_does() {
    let (_servers, walnut, m) = setup("");
    let (mut c, mut r) = (walnut.client(), m.client());
    let big = vec![b'x'; 2_000_000];
    for (request, replies) in [
        ("set k 0 0 2000000\r\n", 4),
        ("set k 0 0 2000000 noreply\r\n", 3),
        ("ms k 2000000 T0\r\n", 4),
        ("ms k 2000000 q\r\n", 4),
        ("ms aw== 2000000 b\r\n", 4),
    ] {
        let wire = [
            &b"set k 0 0 3\r\nold\r\n"[..],
            request.as_bytes(),
            &big,
            b"\r\nget k\r\nmn\r\n",
        ]
        .concat();
        let reply = same_answer(&mut c, &mut r, &wire, replies);
        assert!(
            reply.ends_with(b"END\r\nMN\r\n"),
            "{request}: {}",
            show(&reply)
        );
    }
    // Not for add, append or cas: memcached keeps the old value then.
    for request in [
        "add k 0 0 2000000\r\n",
        "append k 0 0 2000000\r\n",
        "cas k 0 0 2000000 1\r\n",
    ] {
        let wire = [
            &b"set k 0 0 3\r\nold\r\n"[..],
            request.as_bytes(),
            &big,
            b"\r\nget k\r\nmn\r\n",
        ]
        .concat();
        let reply = same_answer(&mut c, &mut r, &wire, 4);
        assert!(
            reply.ends_with(b"VALUE k 0 3\r\nold\r\nEND\r\nMN\r\n"),
            "{request}"
        );
    }
}

#[test]
fn lines_that_look_like_http_close_the_connection_as_memcached_does() {
    let (_servers, walnut, m) = setup("");
    for line in [
        &b"GET / HTTP/1.0\r\n"[..],
        b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1\r\n",
    ] {
        for (who, mut client) in [("memcached", m.client()), ("walnut", walnut.client())] {
            client.set_read_timeout(Duration::from_secs(2));
            assert_eq!(client.call(b"set k 0 0 1\r\nv\r\n"), "STORED\r\n", "{who}");
            let mut wire = line.to_vec();
            wire.extend_from_slice(b"get k\r\n");
            client.send(&wire);
            assert!(
                client.is_closed(),
                "{who} closes on {} with no answer",
                show(line)
            );
        }
    }
    // A known command with an HTTP word is answered as usual.
    let (mut c, mut r) = (walnut.client(), m.client());
    same_answer(&mut c, &mut r, b"get a HTTP/1.1\r\nmn\r\n", 2);
}

#[test]
fn stats_groups_are_every_servers_lines_ending_in_end() {
    let (servers, walnut, m) = setup("");
    let mut c = walnut.client();
    let names = ["mc1", "mc2", "mc3"];
    for group in ["slabs", "items", "sizes", "settings", "conns"] {
        c.send(format!("stats {group}\r\n").as_bytes());
        let reply = String::from_utf8(c.read_replies(1)).expect("text");
        assert!(reply.ends_with("END\r\n"), "stats {group}: {reply}");
        // The same lines as each server's own answer, under the server's name.
        let mut direct = servers[0].client();
        direct.send(format!("stats {group}\r\n").as_bytes());
        let own = String::from_utf8(direct.read_replies(1)).expect("text");
        // (Connections are listed by descriptor, which differ between the two views.)
        for line in own
            .lines()
            .filter(|l| l.starts_with("STAT ") && group != "conns")
        {
            let name = line.split(' ').nth(1).expect("a stat name");
            // Values move (connections, times); the names are the server's.
            assert!(
                reply.contains(&format!("STAT {}:{name} ", names[0])),
                "stats {group}: {name} of mc1 in {reply}"
            );
        }
        for line in reply.lines().filter(|l| *l != "END") {
            assert!(
                names
                    .iter()
                    .any(|n| line.starts_with(&format!("STAT {n}:"))),
                "stats {group}: {line}"
            );
        }
    }
    // memcached's answers where walnut has nothing to add.
    let (mut c, mut r) = (walnut.client(), m.client());
    same_answer(&mut c, &mut r, b"stats bogus\r\nmn\r\n", 2);
    same_answer(&mut c, &mut r, b"stats reset\r\nmn\r\n", 2);
    // And walnut's own counters for plain `stats`.
    c.send(b"stats\r\n");
    let own = String::from_utf8(c.read_replies(1)).expect("text");
    assert!(
        own.contains("STAT pool alpha\r\n") && own.ends_with("END\r\n"),
        "{own}"
    );
}
