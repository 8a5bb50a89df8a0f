//! Bad input gets memcached's answer and the connection lives on: unknown commands, malformed
//! lines, data blocks of the wrong length and oversized values, each in the middle of a pipeline
//! whose good requests are still answered; only a line with no end past the bound closes. Each
//! case goes to a memcached directly too, and walnut's bytes must be memcached's, except where
//! a case says walnut differs on purpose.

use std::time::Duration;

use walnut_tests::{Client, Memcached, Proxy, mc_keys_on, mc_pool, show};

/// Two memcached servers behind walnut, `extra` added to the pool.
fn setup(extra: &str) -> (Vec<Memcached>, Proxy) {
    let servers: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = Proxy::walnut(&mc_pool(&addrs, extra));
    (servers, walnut)
}

/// A key on each of the two servers, stored with a known value; returns the keys and the
/// pipeline fragment that reads them back with its expected reply. The same values go to
/// `reference` (a memcached of its own) so the same pipeline reads the same there.
fn known_keys(c: &mut Client, tag: &str) -> ([String; 2], Vec<u8>, Vec<u8>) {
    let keys = [0, 1].map(|i| mc_keys_on(2, i, 1, &format!("{tag}:{i}:"))[0].clone());
    for key in &keys {
        c.set(key.as_bytes(), b"good");
    }
    let get = format!("get {} {}\r\n", keys[0], keys[1]).into_bytes();
    let reply = format!(
        "VALUE {} 0 4\r\ngood\r\nVALUE {} 0 4\r\ngood\r\nEND\r\n",
        keys[0], keys[1]
    )
    .into_bytes();
    (keys, get, reply)
}

/// Each `(bad request, its reply)` sent between good requests, all in one write, to walnut and
/// to `reference`, a memcached holding the same values: both answer the same bytes, and these
/// are `expected`.
fn like_memcached(
    c: &mut Client,
    reference: &Memcached,
    good: &[u8],
    good_reply: &[u8],
    cases: &[(Vec<u8>, &[u8])],
) {
    let mut req = good.to_vec();
    let mut expected = good_reply.to_vec();
    for (bad, reply) in cases {
        req.extend_from_slice(bad);
        req.extend_from_slice(good);
        expected.extend_from_slice(reply);
        expected.extend_from_slice(good_reply);
    }
    req.extend_from_slice(b"mn\r\n");
    expected.extend_from_slice(b"MN\r\n");
    reference.client().expect(&req, &expected);
    c.expect(&req, &expected);
}

/// A memcached holding `keys` with the value `good`, to compare walnut with.
fn reference(keys: &[String]) -> Memcached {
    let m = Memcached::start();
    let mut c = m.client();
    for key in keys {
        c.set(key.as_bytes(), b"good");
    }
    m
}

/// Each `(bad request, its reply)` sent between good requests, all in one write, to walnut
/// only: the cases where walnut answers otherwise than memcached, on purpose.
fn sandwich(c: &mut Client, good: &[u8], good_reply: &[u8], cases: &[(Vec<u8>, &[u8])]) {
    let mut req = good.to_vec();
    let mut expected = good_reply.to_vec();
    for (bad, reply) in cases {
        req.extend_from_slice(bad);
        req.extend_from_slice(good);
        expected.extend_from_slice(reply);
        expected.extend_from_slice(good_reply);
    }
    req.extend_from_slice(b"mn\r\n");
    expected.extend_from_slice(b"MN\r\n");
    c.expect(&req, &expected);
}

const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

#[test]
fn unknown_commands_get_error_mid_pipeline() {
    let (_servers, walnut) = setup("");
    let mut c = walnut.client();
    let (keys, get, reply) = known_keys(&mut c, "unknown");
    let m = reference(&keys);
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (b"bogus\r\n".to_vec(), b"ERROR\r\n"),
        (b"GET a\r\n".to_vec(), b"ERROR\r\n"),
        (b"sets a 0 0 1\r\n".to_vec(), b"ERROR\r\n"),
        (b"\r\n".to_vec(), b"ERROR\r\n"),
        (b"\x00\x01\x02\r\n".to_vec(), b"ERROR\r\n"),
        // An HTTP-looking line closes the connection, but not when its last word is not
        // HTTP's, nor for a command memcached dispatches by its first letter.
        (b"GET / HTTP/1.0 x\r\n".to_vec(), b"ERROR\r\n"),
        (b"gimme HTTP/1.1\r\n".to_vec(), b"ERROR\r\n"),
    ];
    like_memcached(&mut c, &m, &get, &reply, &cases);
    // memcached's admin commands are not proxied (documented).
    let cases: Vec<(Vec<u8>, &[u8])> =
        vec![(b"lru_crawler metadump all\r\n".to_vec(), b"ERROR\r\n")];
    sandwich(&mut c, &get, &reply, &cases);
}

#[test]
fn malformed_lines_get_client_error_mid_pipeline() {
    let (_servers, walnut) = setup("");
    let mut c = walnut.client();
    let (keys, get, reply) = known_keys(&mut c, "malformed");
    let m = reference(&keys);
    let long_key = "k".repeat(251);
    let exptime: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        // Bad numbers.
        (b"set a 0 0 abc\r\n".to_vec(), BAD_FORMAT),
        (b"set a 0 0 -1\r\n".to_vec(), BAD_FORMAT),
        (b"set a x 0 1\r\n".to_vec(), BAD_FORMAT),
        (b"set a 0 1x 1\r\n".to_vec(), BAD_FORMAT),
        (b"set a 0 0 2147483647\r\n".to_vec(), BAD_FORMAT),
        (b"set a 0 0 2147483646\r\n".to_vec(), BAD_FORMAT),
        (b"touch a soon\r\n".to_vec(), exptime),
        (b"gat never a\r\n".to_vec(), exptime),
        (b"flush_all invalid\r\n".to_vec(), exptime),
        (
            b"incr a one\r\n".to_vec(),
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
        ),
        (
            b"decr a -1\r\n".to_vec(),
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
        ),
        // Keys over 250 bytes.
        (format!("get {long_key}\r\n").into_bytes(), BAD_FORMAT),
        (format!("get a {long_key} b\r\n").into_bytes(), BAD_FORMAT),
        (format!("delete {long_key}\r\n").into_bytes(), BAD_FORMAT),
        (format!("incr {long_key} 1\r\n").into_bytes(), BAD_FORMAT),
        (format!("mg {long_key} v\r\n").into_bytes(), BAD_FORMAT),
        // The wrong number of tokens is memcached's ERROR (and `gat` with no key, END).
        (b"get\r\n".to_vec(), b"ERROR\r\n"),
        (b"gets\r\n".to_vec(), b"ERROR\r\n"),
        (b"gat 10\r\n".to_vec(), b"END\r\n"),
        (b"set a 0 0\r\n".to_vec(), b"ERROR\r\n"),
        (b"cas a 0 0 1\r\n".to_vec(), b"ERROR\r\n"),
        (b"cas foo 0 0 6 \r\n".to_vec(), b"ERROR\r\n"),
        (b"incr a\r\n".to_vec(), b"ERROR\r\n"),
        (b"touch a\r\n".to_vec(), b"ERROR\r\n"),
        (b"delete\r\n".to_vec(), b"ERROR\r\n"),
        (b"incr a 1 noreply extra\r\n".to_vec(), b"ERROR\r\n"),
        (b"verbosity\r\n".to_vec(), b"ERROR\r\n"),
        (b"mg\r\n".to_vec(), b"ERROR\r\n"),
        (b"me\r\n".to_vec(), BAD_FORMAT),
        (b"ms a\r\n".to_vec(), BAD_FORMAT),
        // A meta flag given twice. Passed on, `mg k v q q` would reach the server as a quiet
        // `mg k v q` whose silent miss shifts every later reply on that server connection.
        (
            b"mg nokey v q q\r\n".to_vec(),
            b"CLIENT_ERROR duplicate flag\r\n",
        ),
        (
            b"mg a T1 v T2\r\n".to_vec(),
            b"CLIENT_ERROR duplicate flag\r\n",
        ),
        (
            b"md nokey q q\r\n".to_vec(),
            b"CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        (
            b"ma nokey q N0 q\r\n".to_vec(),
            b"CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        (
            b"delete a 10\r\n".to_vec(),
            b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        ),
        // noreply silences the error too.
        (b"delete k 10 noreply\r\n".to_vec(), b""),
        (b"incr k abc noreply\r\n".to_vec(), b""),
        (b"touch k abc noreply\r\n".to_vec(), b""),
        (b"flush_all abc noreply\r\n".to_vec(), b""),
        (b"verbosity abc noreply\r\n".to_vec(), b""),
    ];
    like_memcached(&mut c, &m, &get, &reply, &cases);
    // Walnut refuses keys with control characters, which memcached takes (documented), and
    // answers `mg`'s own errors in its own words.
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (b"get a\x01b\r\n".to_vec(), BAD_FORMAT),
        (b"get a\tb\r\n".to_vec(), BAD_FORMAT),
        (b"delete a\x7f\r\n".to_vec(), BAD_FORMAT),
        (b"touch \x1b[0m 10\r\n".to_vec(), BAD_FORMAT),
        (
            b"mg !!!! b v\r\n".to_vec(),
            b"CLIENT_ERROR error decoding key\r\n",
        ),
    ];
    sandwich(&mut c, &get, &reply, &cases);
    // A 250-byte key is fine.
    let key = "k".repeat(250);
    c.set(key.as_bytes(), b"max");
    assert_eq!(c.get(key.as_bytes()).as_deref(), Some(&b"max"[..]));
}

#[test]
fn data_blocks_of_the_wrong_length_get_bad_data_chunk_mid_pipeline() {
    let (servers, walnut) = setup("");
    let mut c = walnut.client();
    let ([k1, k2], get, reply) = known_keys(&mut c, "chunk");
    let m = reference(&[k1.clone(), k2.clone()]);
    let chunk: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
    let error: &[u8] = b"ERROR\r\n";
    // As memcached: exactly the announced bytes and two more are read; when those two are not
    // `\r\n` the value is refused, and what follows is read as commands.
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            format!("set {k1} 0 0 3\r\nabcd\r\n").into_bytes(),
            [chunk, error].concat(),
        ),
        (
            format!("set {k2} 0 0 1\r\nlonger value\r\n").into_bytes(),
            [chunk, error].concat(),
        ),
        (
            format!("cas {k1} 0 0 2 1\r\nxyz\r\n").into_bytes(),
            [chunk, error].concat(),
        ),
        (
            format!("ms {k1} 2\r\nabc\r\n").into_bytes(),
            [chunk, error].concat(),
        ),
        // A noreply set's error is silent; the line after it is still read as a command.
        (
            format!("set {k1} 0 0 1 noreply\r\nab\r\n").into_bytes(),
            error.to_vec(),
        ),
    ];
    let cases: Vec<(Vec<u8>, &[u8])> = cases.iter().map(|(a, b)| (a.clone(), &b[..])).collect();
    like_memcached(&mut c, &m, &get, &reply, &cases);
    // Shorter than announced: the data takes what follows, up to its length (here `ab\r\ng`,
    // then `et` where `\r\n` should be), and the rest of that line is an unknown command.
    let short = format!("set {k1} 0 0 5\r\nab\r\nget {k1}\r\nget {k2}\r\nmn\r\n");
    let expected =
        format!("CLIENT_ERROR bad data chunk\r\nERROR\r\nVALUE {k2} 0 4\r\ngood\r\nEND\r\nMN\r\n");
    m.client().expect(short.as_bytes(), expected.as_bytes());
    c.expect(short.as_bytes(), expected.as_bytes());
    // The bad sets stored nothing.
    assert_eq!(
        servers[0].client().get(k1.as_bytes()).as_deref(),
        Some(&b"good"[..])
    );
    assert_eq!(
        servers[1].client().get(k2.as_bytes()).as_deref(),
        Some(&b"good"[..])
    );
    // However the bytes arrive, the answers are the same: the value and the line after it in
    // pieces, with pauses between them.
    let wire = format!(
        "set {k1} 0 0 3\r\nabcdef\r\n{}",
        String::from_utf8_lossy(&get)
    );
    let expected = [chunk, error, &reply[..]].concat();
    for cut in [14, 17, 18, 19, 21, 22] {
        c.send(&wire.as_bytes()[..cut]);
        std::thread::sleep(Duration::from_millis(30));
        c.expect(&wire.as_bytes()[cut..], &expected);
    }
}

#[test]
fn values_over_item_size_max_are_read_off_and_refused() {
    let (servers, walnut) = setup("  item_size_max: 1024\n");
    let mut c = walnut.client();
    let (keys, get, reply) = known_keys(&mut c, "large");
    let too_large: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
    // The value holds request-like lines that must not be parsed.
    let mut body = b"set x 0 0 1\r\ny\r\nget x\r\n".to_vec();
    body.resize(2000, b'v');
    let mut big = format!("set {} 0 0 2000\r\n", keys[0]).into_bytes();
    big.extend_from_slice(&body);
    big.extend_from_slice(b"\r\n");
    let mut meta = format!("ms {} 1025 T0\r\n", keys[1]).into_bytes();
    meta.extend_from_slice(&[b'm'; 1025]);
    meta.extend_from_slice(b"\r\n");
    // As memcached, a `set` (or `ms`) too large also drops the key's old value, so a later
    // get misses instead of reading stale data.
    let only_second = format!("VALUE {} 0 4\r\ngood\r\nEND\r\n", keys[1]).into_bytes();
    let mut req = [&get[..], &big, &get, &meta, &get, b"mn\r\n"].concat();
    let expected = [
        &reply[..],
        too_large,
        &only_second,
        too_large,
        b"END\r\n",
        b"MN\r\n",
    ]
    .concat();
    c.expect(&req, &expected);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            servers[i].client().get(key.as_bytes()),
            None,
            "{key} was unlinked"
        );
        c.set(key.as_bytes(), b"good");
    }
    req.clear();
    // An `add` or `append` too large leaves the value, as in memcached.
    let mut add = format!("append {} 0 0 2000\r\n", keys[0]).into_bytes();
    add.resize(add.len() + 2000, b'a');
    add.extend_from_slice(b"\r\n");
    sandwich(&mut c, &get, &reply, &[(add, too_large)]);
    // Exactly item_size_max is fine.
    let at_limit = vec![b'z'; 1024];
    c.set(keys[1].as_bytes(), &at_limit);
    assert_eq!(
        servers[1].client().get(keys[1].as_bytes()).as_deref(),
        Some(&at_limit[..])
    );
    c.set(keys[1].as_bytes(), b"good");
    // The oversized value arriving in pieces, with pauses between them.
    c.send(&big[..500]);
    std::thread::sleep(Duration::from_millis(30));
    c.send(&big[500..1500]);
    std::thread::sleep(Duration::from_millis(30));
    c.send(&big[1500..]);
    c.expect(&get, &[too_large, &only_second[..]].concat());
    // Nothing of it was stored or run (and the old value went).
    assert_eq!(c.get(b"x"), None);
    assert_eq!(servers[0].client().get(keys[0].as_bytes()), None);
    c.set(keys[0].as_bytes(), b"good");
    // A much larger one (1 MiB) is skipped without trouble too.
    let mut huge = format!("set {} 0 0 1048576\r\n", keys[0]).into_bytes();
    huge.resize(huge.len() + 1_048_576, b'h');
    huge.extend_from_slice(b"\r\n");
    huge.extend_from_slice(&get);
    c.expect(&huge, &[too_large, &only_second[..]].concat());
}

#[test]
fn a_line_with_no_end_past_128_kib_is_refused_and_closed() {
    let (_servers, walnut) = setup("");
    let mut c = walnut.client();
    let (_, get, reply) = known_keys(&mut c, "long");
    // A long but complete line is fine: a multi-get of 500 keys of 200 bytes (100 KiB).
    let keys: Vec<String> = (0..500).map(|i| format!("{i:0>200}")).collect();
    c.expect(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n");
    // Good requests, then 128 KiB + 1 bytes with no end of line.
    let mut req = get.clone();
    req.extend_from_slice(&get);
    req.extend_from_slice(&vec![b'g'; 128 * 1024 + 1]);
    let mut expected = reply.clone();
    expected.extend_from_slice(&reply);
    expected.extend_from_slice(b"CLIENT_ERROR line too long\r\n");
    c.expect(&req, &expected);
    let rest = c.read_len(1 << 20);
    assert!(
        rest.is_empty(),
        "then the connection closes: {}",
        show(&rest)
    );
    assert!(c.is_closed(), "closed after the error");
    // walnut serves others on.
    let mut other = walnut.client();
    other.expect(&get, &reply);
}

#[test]
fn after_every_kind_of_error_the_connection_keeps_working() {
    let (_servers, walnut) = setup("  item_size_max: 1024\n");
    let mut c = walnut.client();
    let (keys, get, _) = known_keys(&mut c, "mixed");
    let mut big = format!("set {} 0 0 1500\r\n", keys[0]).into_bytes();
    big.resize(big.len() + 1500, b'b');
    big.extend_from_slice(b"\r\n");
    // Many errors back to back, then good requests, over and over on one connection. (A too
    // large set drops the key's value: the get after it misses that key.)
    let mut bad = b"nope\r\nget\r\nset a 0 0 z\r\n".to_vec();
    bad.extend_from_slice(format!("set {} 0 0 1\r\nx\r\n", keys[1]).as_bytes());
    bad.extend_from_slice(&big);
    let bad_reply = [
        &b"ERROR\r\n"[..],
        b"ERROR\r\n",
        BAD_FORMAT,
        b"STORED\r\n",
        b"SERVER_ERROR object too large for cache\r\n",
    ]
    .concat();
    let reply = format!("VALUE {} 0 1\r\nx\r\nEND\r\n", keys[1]).into_bytes();
    for _ in 0..20 {
        let mut req = bad.clone();
        req.extend_from_slice(&get);
        c.expect(&req, &[&bad_reply[..], &reply[..]].concat());
    }
}

#[test]
fn a_refused_meta_set_swallows_its_data_block() {
    // memcached reads and drops the data of an `ms` it refuses once the length is known
    // (invalid flag, undecodable base64 key); the data must never run as commands.
    let (servers, walnut) = setup("");
    let mut c = walnut.client();
    let (keys, _, _) = known_keys(&mut c, "swallow");
    let victim = &keys[1];
    let data = format!("delete {victim}");
    let cases = [
        format!("ms {} {} ?\r\n{data}\r\n", keys[0], data.len()),
        format!("ms !!!! {} b\r\n{data}\r\n", data.len()),
        format!("ms {} {} q T1 q\r\n{data}\r\n", keys[0], data.len()),
    ];
    for bad in cases {
        c.send(format!("{bad}get {victim}\r\nmn\r\n").as_bytes());
        let first = String::from_utf8_lossy(&c.read_replies(1)).into_owned();
        assert!(first.starts_with("CLIENT_ERROR "), "{bad:?}: {first:?}");
        let rest = c.read_replies(2);
        assert_eq!(
            String::from_utf8_lossy(&rest),
            format!("VALUE {victim} 0 4\r\ngood\r\nEND\r\nMN\r\n"),
            "after {bad:?} the data block is dropped and the next request is parsed"
        );
        assert_eq!(
            servers[1].client().get(victim.as_bytes()).as_deref(),
            Some(&b"good"[..]),
            "the data of {bad:?} did not run as a command"
        );
    }
}
