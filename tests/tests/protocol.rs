//! The memcached text protocol through walnut: every command with its exact replies, `noreply`,
//! meta commands, the commands walnut answers itself, `flush_all` and `quit`. Real memcached
//! servers behind the real walnut binary.

use std::time::Duration;

use walnut_tests::{
    Client, Memcached, Proxy, mc_keys_on, mc_owner, mc_pool, parse_values, show,
    storage_request as storage, three_servers, value_block as value,
};

/// A key on each of the three servers, with a tag.
fn key_per_server(tag: &str) -> [String; 3] {
    [0, 1, 2].map(|i| mc_keys_on(3, i, 1, &format!("{tag}:{i}:"))[0].clone())
}

#[test]
fn storage_commands_answer_as_memcached_on_every_server() {
    let (servers, walnut) = three_servers();
    let mut c = walnut.client();
    for (i, key) in key_per_server("store").iter().enumerate() {
        let missing = format!("{key}:missing");
        let mut req = Vec::new();
        let mut expected = Vec::new();
        let mut step = |r: Vec<u8>, e: &[u8]| {
            req.extend_from_slice(&r);
            expected.extend_from_slice(e);
        };
        step(storage("set", key, 5, b"abc", ""), b"STORED\r\n");
        step(storage("add", key, 0, b"x", ""), b"NOT_STORED\r\n");
        step(storage("replace", &missing, 0, b"x", ""), b"NOT_STORED\r\n");
        step(storage("replace", key, 7, b"xyz", ""), b"STORED\r\n");
        step(storage("append", key, 0, b"12", ""), b"STORED\r\n");
        step(storage("prepend", key, 0, b"<<", ""), b"STORED\r\n");
        step(storage("append", &missing, 0, b"x", ""), b"NOT_STORED\r\n");
        step(storage("prepend", &missing, 0, b"x", ""), b"NOT_STORED\r\n");
        step(storage("cas", &missing, 0, b"x", "1"), b"NOT_FOUND\r\n");
        step(format!("get {key}\r\n").into_bytes(), &{
            let mut v = value(key, 7, b"<<xyz12");
            v.extend_from_slice(b"END\r\n");
            v
        });
        step(storage("add", &missing, 3, b"new", ""), b"STORED\r\n");
        step(b"mn\r\n".to_vec(), b"MN\r\n");
        c.expect(&req, &expected);

        // gets gives a cas unique that cas accepts once.
        c.send(format!("gets {key}\r\n").as_bytes());
        let blocks = parse_values(&c.read_replies(1));
        assert_eq!(blocks.len(), 1);
        let cas = blocks[0].cas.expect("gets returns a cas value");
        let mut req = storage("cas", key, 9, b"new", &cas.to_string());
        req.extend_from_slice(&storage("cas", key, 9, b"old", &cas.to_string()));
        c.expect(&req, b"STORED\r\nEXISTS\r\n");

        // The owner holds the result: the key went to the server its hash names.
        assert_eq!(
            servers[i].client().get(key.as_bytes()).as_deref(),
            Some(&b"new"[..]),
            "{key} on mc{}",
            i + 1
        );
        let owner = mc_owner(3, missing.as_bytes());
        assert_eq!(
            servers[owner].client().get(missing.as_bytes()).as_deref(),
            Some(&b"new"[..])
        );
    }
}

#[test]
fn delete_incr_decr_touch_answer_as_memcached() {
    let (_servers, walnut) = three_servers();
    let mut c = walnut.client();
    let [n, s, t] = key_per_server("arith");
    let mut req = Vec::new();
    let mut expected = Vec::new();
    let mut step = |r: &[u8], e: &[u8]| {
        req.extend_from_slice(r);
        expected.extend_from_slice(e);
    };
    step(&storage("set", &n, 0, b"10", ""), b"STORED\r\n");
    step(format!("incr {n} 5\r\n").as_bytes(), b"15\r\n");
    step(format!("decr {n} 20\r\n").as_bytes(), b"0\r\n");
    step(
        format!("incr {n} 18446744073709551615\r\n").as_bytes(),
        b"18446744073709551615\r\n",
    );
    step(format!("incr {n} 1\r\n").as_bytes(), b"0\r\n");
    step(
        format!("incr {n}:missing 1\r\n").as_bytes(),
        b"NOT_FOUND\r\n",
    );
    step(
        format!("decr {n}:missing 1\r\n").as_bytes(),
        b"NOT_FOUND\r\n",
    );
    step(&storage("set", &s, 0, b"abc", ""), b"STORED\r\n");
    step(
        format!("incr {s} 1\r\n").as_bytes(),
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    step(&storage("set", &t, 0, b"t", ""), b"STORED\r\n");
    step(format!("touch {t} 1000\r\n").as_bytes(), b"TOUCHED\r\n");
    step(
        format!("touch {t}:missing 1000\r\n").as_bytes(),
        b"NOT_FOUND\r\n",
    );
    step(format!("delete {n}\r\n").as_bytes(), b"DELETED\r\n");
    step(format!("delete {n}\r\n").as_bytes(), b"NOT_FOUND\r\n");
    step(format!("delete {s} 0\r\n").as_bytes(), b"DELETED\r\n");
    step(format!("get {n} {s} {t}\r\n").as_bytes(), &{
        let mut v = value(&t, 0, b"t");
        v.extend_from_slice(b"END\r\n");
        v
    });
    step(b"mn\r\n", b"MN\r\n");
    c.expect(&req, &expected);
    // touch set the expiry: about 1000 s left.
    let reply = c.call(format!("mg {t} t\r\n").as_bytes());
    assert!(
        reply == "HD t1000\r\n" || reply == "HD t999\r\n",
        "touch took effect: {reply:?}"
    );
}

#[test]
fn noreply_is_honoured_everywhere_memcached_accepts_it() {
    let (servers, walnut) = three_servers();
    let mut c = walnut.client();
    let [a, b, cc] = key_per_server("quiet");
    let d = format!("{a}:d");
    let mut req = Vec::new();
    req.extend_from_slice(&storage("set", &a, 0, b"a", "noreply"));
    req.extend_from_slice(&storage("add", &a, 0, b"z", "noreply"));
    req.extend_from_slice(&storage("add", &b, 0, b"b", "noreply"));
    req.extend_from_slice(&storage("replace", &b, 3, b"bb", "noreply"));
    req.extend_from_slice(&storage("replace", &d, 3, b"no", "noreply"));
    req.extend_from_slice(&storage("append", &a, 0, b"+", "noreply"));
    req.extend_from_slice(&storage("prepend", &a, 0, b"-", "noreply"));
    req.extend_from_slice(&storage("set", &cc, 0, b"5", "noreply"));
    req.extend_from_slice(format!("incr {cc} 10 noreply\r\n").as_bytes());
    req.extend_from_slice(format!("decr {cc} 3 noreply\r\n").as_bytes());
    req.extend_from_slice(format!("touch {cc} 1000 noreply\r\n").as_bytes());
    req.extend_from_slice(&storage("set", &d, 0, b"d", "noreply"));
    req.extend_from_slice(format!("delete {d} noreply\r\n").as_bytes());
    req.extend_from_slice(format!("delete {d} noreply\r\n").as_bytes());
    req.extend_from_slice(format!("incr {d} 1 noreply\r\n").as_bytes());
    req.extend_from_slice(&storage("cas", &a, 0, b"q", "1 noreply"));
    req.extend_from_slice(b"verbosity 1 noreply\r\n");
    req.extend_from_slice(format!("get {a} {b} {cc} {d}\r\n").as_bytes());
    req.extend_from_slice(b"mn\r\n");
    let mut expected = value(&a, 0, b"-a+");
    expected.extend_from_slice(&value(&b, 3, b"bb"));
    expected.extend_from_slice(&value(&cc, 0, b"12"));
    expected.extend_from_slice(b"END\r\nMN\r\n");
    c.expect(&req, &expected);

    // cas with noreply, using a real cas value.
    c.send(format!("gets {a}\r\n").as_bytes());
    let cas = parse_values(&c.read_replies(1))[0].cas.expect("cas");
    let mut req = storage("cas", &a, 4, b"cas", &format!("{cas} noreply"));
    req.extend_from_slice(format!("get {a}\r\nmn\r\n").as_bytes());
    let mut expected = value(&a, 4, b"cas");
    expected.extend_from_slice(b"END\r\nMN\r\n");
    c.expect(&req, &expected);
    assert!(
        c.is_quiet_for(Duration::from_millis(200)),
        "no stray reply after the pipeline"
    );
    // touch ... noreply took effect on the server itself.
    let reply = servers[2]
        .client()
        .call(format!("mg {cc} t\r\n").as_bytes());
    assert!(
        reply == "HD t1000\r\n" || reply == "HD t999\r\n",
        "touch noreply reached mc3: {reply:?}"
    );
}

/// Standard base64, for meta `b` keys.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn meta_commands_are_routed_by_key_with_their_flags() {
    let (servers, walnut) = three_servers();
    let mut c = walnut.client();
    let [k1, k2, n1] = key_per_server("meta");
    let miss = format!("{k1}:miss");
    let mut req = Vec::new();
    let mut expected = Vec::new();
    let mut step = |r: &str, e: &str| {
        req.extend_from_slice(r.as_bytes());
        expected.extend_from_slice(e.as_bytes());
    };
    step(&format!("ms {k1} 2 T0 F5\r\nhi\r\n"), "HD\r\n");
    step(&format!("ms {k2} 3 q\r\nabc\r\n"), "");
    step(
        &format!("mg {k1} v f k O77\r\n"),
        &format!("VA 2 f5 k{k1} O77\r\nhi\r\n"),
    );
    step(&format!("mg {k2} v q\r\n"), "VA 3\r\nabc\r\n");
    step(&format!("mg {miss} v q O1\r\n"), "");
    step(&format!("mg {miss} v O2\r\n"), "EN O2\r\n");
    step(&format!("mg {miss} v k q\r\n"), "");
    step(&format!("ms {n1} 1\r\n5\r\n"), "HD\r\n");
    step(&format!("ma {n1}\r\n"), "HD\r\n");
    step(&format!("ma {n1} v\r\n"), "VA 1\r\n7\r\n");
    step(&format!("ma {n1} q\r\n"), "");
    step(&format!("ma {n1} MD D3 v O9\r\n"), "VA 1 O9\r\n5\r\n");
    step(&format!("ma {miss} q\r\n"), "NF\r\n");
    step(&format!("ma {miss}:n N0 J7 v\r\n"), "VA 1\r\n7\r\n");
    step(&format!("md {k2} q\r\n"), "");
    step(&format!("md {k2} q\r\n"), "NF\r\n");
    step(&format!("md {k2}\r\n"), "NF\r\n");
    step(&format!("mg {k2} v\r\n"), "EN\r\n");
    step(&format!("ms {k1} 2 MA q\r\nzz\r\n"), "");
    step(&format!("mg {k1} s v\r\n"), "VA 4 s4\r\nhizz\r\n");
    step(&format!("ms {k1} 2 ME\r\nzz\r\n"), "NS\r\n");
    step("mn\r\n", "MN\r\n");
    c.expect(&req, &expected);

    // Each key lives on the server its hash names.
    let on = |i: usize, key: &str| {
        servers[i]
            .client()
            .call(format!("mg {key} v\r\n").as_bytes())
    };
    assert_eq!(on(0, &k1), "VA 4\r\nhizz\r\n");
    assert_eq!(on(2, &n1), "VA 1\r\n5\r\n");
    assert_eq!(on(1, &k2), "EN\r\n", "md reached mc2");

    // me: routed by key, answered by the owner.
    let reply = c.call(format!("me {k1}\r\n").as_bytes());
    assert!(
        reply.starts_with(&format!("ME {k1} exp=-1 ")) && reply.ends_with("\r\n"),
        "{reply:?}"
    );
    c.expect(format!("me {miss}\r\n").as_bytes(), b"EN\r\n");

    // Base64 keys (b) are placed by their decoded bytes.
    for (i, server) in servers.iter().enumerate() {
        let raw = mc_keys_on(3, i, 1, "b64 key\u{1}:")[0].clone();
        let enc = base64(raw.as_bytes());
        c.expect(format!("ms {enc} 3 b\r\nb64\r\n").as_bytes(), b"HD\r\n");
        c.expect(
            format!("mg {enc} b k v\r\n").as_bytes(),
            format!("VA 3 k{enc} b\r\nb64\r\n").as_bytes(),
        );
        assert_eq!(
            server.client().call(format!("mg {enc} b v\r\n").as_bytes()),
            "VA 3\r\nb64\r\n",
            "the base64 key {raw:?} is on mc{}",
            i + 1
        );
        let reply = c.call(format!("me {enc} b\r\n").as_bytes());
        assert!(reply.starts_with(&format!("ME {enc} ")), "{reply:?}");
        c.expect(format!("md {enc} b q\r\nmn\r\n").as_bytes(), b"MN\r\n");
        assert_eq!(
            server.client().call(format!("mg {enc} b v\r\n").as_bytes()),
            "EN\r\n"
        );
    }
}

#[test]
fn version_verbosity_stats_and_mn_are_answered_by_walnut_itself() {
    let mut m1 = Memcached::start();
    let mut m2 = Memcached::start();
    let walnut = Proxy::walnut(&mc_pool(&[m1.address(), m2.address()], ""));
    m1.kill();
    m2.kill();
    let mut c = walnut.client();
    let version = format!("VERSION 1.6.0-walnut-{}\r\n", env!("CARGO_PKG_VERSION"));
    c.expect(
        b"version\r\nverbosity 1\r\nmn\r\nverbosity 0 noreply\r\nmn\r\nversion\r\n",
        format!("{version}OK\r\nMN\r\nMN\r\n{version}").as_bytes(),
    );
    c.send(b"stats\r\nmn\r\n");
    let stats = String::from_utf8(c.read_replies(1)).expect("text");
    assert!(stats.starts_with("STAT pid "), "{stats}");
    assert!(stats.ends_with("\r\nEND\r\n"), "{stats}");
    assert!(
        stats.contains(&format!(
            "STAT version 1.6.0-walnut-{}\r\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{stats}"
    );
    assert!(stats.contains("STAT pool alpha\r\n"), "{stats}");
    assert!(stats.contains("STAT mc2:requests "), "{stats}");
    for line in stats.lines().filter(|l| *l != "END") {
        assert!(line.starts_with("STAT "), "{line:?}");
    }
    assert_eq!(c.read_replies(1), b"MN\r\n");
}

#[test]
fn flush_all_reaches_every_server() {
    let (servers, walnut) = three_servers();
    let mut c = walnut.client();
    let keys = key_per_server("flush");
    let fill = |c: &mut Client| {
        for key in &keys {
            c.set(key.as_bytes(), b"x");
        }
        for (i, key) in keys.iter().enumerate() {
            assert!(servers[i].client().get(key.as_bytes()).is_some());
        }
    };
    let all_gone = |what: &str| {
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                servers[i].client().get(key.as_bytes()),
                None,
                "{what} emptied mc{}",
                i + 1
            );
        }
    };
    fill(&mut c);
    c.expect(b"flush_all\r\n", b"OK\r\n");
    all_gone("flush_all");
    fill(&mut c);
    // No reply to wait for: a get through walnut queues behind the flush on each server.
    c.expect(
        format!("flush_all noreply\r\nmn\r\nget {}\r\n", keys.join(" ")).as_bytes(),
        b"MN\r\nEND\r\n",
    );
    all_gone("flush_all noreply");
    fill(&mut c);
    c.expect(b"flush_all 0\r\n", b"OK\r\n");
    all_gone("flush_all 0");
    assert_eq!(
        c.call(format!("get {}\r\n", keys.join(" ")).as_bytes()),
        "END\r\n"
    );
}

#[test]
fn flush_all_is_ok_only_when_every_server_says_ok() {
    // memcached -F refuses flush_all: a real server answering something other than OK.
    let m1 = Memcached::start();
    let m2 = Memcached::start_with(&["-F"]);
    let walnut = Proxy::walnut(&mc_pool(&[m1.address(), m2.address()], ""));
    let mut c = walnut.client();
    let k1 = mc_keys_on(2, 0, 1, "flushf:")[0].clone();
    let k2 = mc_keys_on(2, 1, 1, "flushf:")[0].clone();
    c.set(k1.as_bytes(), b"1");
    c.set(k2.as_bytes(), b"2");
    c.expect(b"flush_all\r\n", b"CLIENT_ERROR flush_all not allowed\r\n");
    assert_eq!(m1.client().get(k1.as_bytes()), None, "mc1 was flushed");
    assert_eq!(
        m2.client().get(k2.as_bytes()).as_deref(),
        Some(&b"2"[..]),
        "mc2 refused"
    );
    // With noreply nothing at all comes back, refusal included.
    c.expect(
        format!("flush_all noreply\r\nmn\r\nget {k2}\r\n").as_bytes(),
        format!("MN\r\nVALUE {k2} 0 1\r\n2\r\nEND\r\n").as_bytes(),
    );
}

#[test]
fn quit_closes_after_the_earlier_replies() {
    let (servers, walnut) = three_servers();
    let mut c = walnut.client();
    let [a, b, cc] = key_per_server("quit");
    let mut req = storage("set", &a, 0, b"1", "");
    req.extend_from_slice(&storage("set", &b, 0, b"2", ""));
    req.extend_from_slice(format!("get {a} {b} {cc}\r\nmn\r\nquit\r\n").as_bytes());
    // Nothing after quit is answered or done.
    req.extend_from_slice(format!("get {a}\r\n").as_bytes());
    req.extend_from_slice(&storage("set", &b, 0, b"after quit", ""));
    req.extend_from_slice(b"mn\r\n");
    let mut expected = b"STORED\r\nSTORED\r\n".to_vec();
    expected.extend_from_slice(&value(&a, 0, b"1"));
    expected.extend_from_slice(&value(&b, 0, b"2"));
    expected.extend_from_slice(b"END\r\nMN\r\n");
    c.expect(&req, &expected);
    let after = c.read_len(1 << 20);
    assert!(
        after.is_empty(),
        "quit closes the connection; nothing after it is answered, got: {}",
        show(&after)
    );
    assert_eq!(
        servers[1].client().get(b.as_bytes()).as_deref(),
        Some(&b"2"[..]),
        "the set after quit was not executed"
    );
    // Other clients are unaffected.
    assert_eq!(
        walnut.client().get(a.as_bytes()).as_deref(),
        Some(&b"1"[..])
    );
}
