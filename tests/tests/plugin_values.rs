//! Value hooks end to end: the compress example stores values compressed in a real memcached
//! and every retrieval a client has (get, multi-get, gets/cas, gat, mg, ms) reads them back as
//! written; values written without the plugin read as they are; a hook that fails is contained
//! by its policy and counted per plugin in the stats JSON.

use std::path::PathBuf;

use walnut_tests::{Memcached, Proxy, mc_pool, parse_values, plugin_dir, storage_request};

fn wasm(name: &str) -> PathBuf {
    plugin_dir(&["compress", "key-rewrite", "misbehave"]).join(format!("{name}.wasm"))
}

/// The flag bit the compress plugin marks its values with (its default).
const COMPRESSED: u32 = 1 << 30;
const ITEM_MAX: usize = 2 << 20;

/// A memcached taking values up to 2 MiB, so 1 MiB values fit with room to spare.
fn memcached() -> Memcached {
    Memcached::start_with(&["-I", "2m"])
}

/// Walnut over `m` with the compress plugin on the whole pool.
fn compress_pool(m: &Memcached, on_error: &str) -> Proxy {
    let config = mc_pool(&[m.address()], &format!("  item_size_max: {ITEM_MAX}\n"))
        + &format!(
            "  plugins:\n   - path: {}\n     on_error: {on_error}\n     time_budget_ms: 200\n",
            wasm("compress").display()
        );
    Proxy::walnut(&config)
}

/// Text that compresses well, and bytes that do not compress at all.
fn payloads(len: usize, seed: u64) -> [Vec<u8>; 2] {
    let text: Vec<u8> = format!("walnut value {seed} ")
        .bytes()
        .cycle()
        .take(len)
        .collect();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let random = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    [text, random]
}

const SIZES: [usize; 10] = [0, 1, 100, 255, 256, 257, 4096, 65_536, 500_000, 1 << 20];

/// The value memcached itself holds for `key`: (flags, bytes).
fn raw(m: &Memcached, key: &str) -> Option<(u32, Vec<u8>)> {
    let reply = m.client().call_raw(format!("get {key}\r\n").as_bytes());
    parse_values(&reply)
        .into_iter()
        .next()
        .map(|v| (v.flags, v.data))
}

/// An `mg` hit: its header line's tokens after `VA <len>`, and its data.
fn meta_hit(reply: &[u8]) -> (Vec<String>, Vec<u8>) {
    let eol = reply.windows(2).position(|w| w == b"\r\n").expect("a line");
    let line = String::from_utf8_lossy(&reply[..eol]).into_owned();
    let mut tokens = line.split(' ');
    assert_eq!(tokens.next(), Some("VA"), "a hit: {line}");
    let len: usize = tokens.next().expect("length").parse().expect("a number");
    let data = reply[eol + 2..eol + 2 + len].to_vec();
    assert_eq!(&reply[eol + 2 + len..], b"\r\n");
    (tokens.map(str::to_owned).collect(), data)
}

#[test]
fn compressed_values_read_back_as_written_through_every_retrieval() {
    let m = memcached();
    let walnut = compress_pool(&m, "fail_closed");
    let mut c = walnut.client();
    let mut keys = Vec::new();
    for (i, &len) in SIZES.iter().enumerate() {
        for (kind, data) in payloads(len, i as u64).iter().enumerate() {
            let key = format!("v{len}-{kind}");
            let flags = 7 + i as u32;
            assert_eq!(
                c.call(&storage_request("set", &key, flags, data, "")),
                "STORED\r\n",
                "{key}"
            );
            // What memcached holds: compressible values of 256 bytes and more are smaller
            // and marked; the rest are stored as they came.
            let (stored_flags, stored) = raw(&m, &key).expect("stored");
            if kind == 0 && len >= 256 {
                assert_eq!(stored_flags, flags | COMPRESSED, "{key}");
                assert!(
                    stored.len() < len / 4,
                    "{key}: {} bytes stored for {len}",
                    stored.len()
                );
            } else {
                assert_eq!((stored_flags, &stored), (flags, data), "{key}");
            }
            // get, gets, gat: the client's bytes and flags.
            let got = parse_values(&c.call_raw(format!("get {key}\r\n").as_bytes()));
            assert_eq!(got.len(), 1, "{key}");
            assert_eq!((got[0].flags, &got[0].data), (flags, data), "{key}");
            let got = parse_values(&c.call_raw(format!("gat 0 {key}\r\n").as_bytes()));
            assert_eq!((got[0].flags, &got[0].data), (flags, data), "gat {key}");
            let got = parse_values(&c.call_raw(format!("gets {key}\r\n").as_bytes()));
            let cas = got[0].cas.expect("gets gives a cas unique");
            assert_eq!(&got[0].data, data, "gets {key}");
            // cas with that unique stores a new value, compressed again.
            let mut next = data.clone();
            next.extend_from_slice(b" and more");
            assert_eq!(
                c.call(&storage_request(
                    "cas",
                    &key,
                    flags,
                    &next,
                    &cas.to_string()
                )),
                "STORED\r\n",
                "cas {key}"
            );
            assert_eq!(c.get(key.as_bytes()).as_deref(), Some(&next[..]), "{key}");
            // mg with and without f: the value as written, flags shown only when asked.
            let (tokens, got) = meta_hit(&c.call_raw(format!("mg {key} v f k\r\n").as_bytes()));
            assert_eq!(got, next, "mg {key}");
            assert!(tokens.contains(&format!("f{flags}")), "{tokens:?}");
            assert!(tokens.contains(&format!("k{key}")), "{tokens:?}");
            let (tokens, got) = meta_hit(&c.call_raw(format!("mg {key} v c\r\n").as_bytes()));
            assert_eq!(got, next, "mg {key}");
            assert!(tokens.iter().all(|t| !t.starts_with('f')), "{tokens:?}");
            assert!(tokens.iter().any(|t| t.starts_with('c')), "{tokens:?}");
            keys.push((key, flags, next));
        }
    }
    // One multi-get of every key, split over nothing but checked in order.
    let line = keys.iter().map(|(k, ..)| k.as_str()).collect::<Vec<_>>();
    let got = parse_values(&c.call_raw(format!("get {}\r\n", line.join(" ")).as_bytes()));
    assert_eq!(got.len(), keys.len());
    for (v, (key, flags, data)) in got.iter().zip(&keys) {
        assert_eq!((&v.key, v.flags, &v.data), (key, *flags, data));
    }
    // ms stores compressed too, mg and get read it back.
    let text = payloads(10_000, 99)[0].clone();
    let mut ms = format!("ms meta {} F3 T0\r\n", text.len()).into_bytes();
    ms.extend_from_slice(&text);
    ms.extend_from_slice(b"\r\n");
    assert_eq!(c.call(&ms), "HD\r\n");
    let (flags, stored) = raw(&m, "meta").expect("stored");
    assert_eq!(flags, 3 | COMPRESSED);
    assert!(stored.len() < 1000);
    assert_eq!(meta_hit(&c.call_raw(b"mg meta v\r\n")).1, text);
    assert_eq!(c.get(b"meta").as_deref(), Some(&text[..]));
}

#[test]
fn foreign_values_pass_and_appends_and_the_reserved_bit_are_refused() {
    let m = memcached();
    let walnut = compress_pool(&m, "fail_closed");
    let mut c = walnut.client();
    // Written straight to memcached (no plugin): read through walnut as it is.
    let plain = payloads(5000, 1)[0].clone();
    assert_eq!(
        m.client()
            .call(&storage_request("set", "foreign", 5, &plain, "")),
        "STORED\r\n"
    );
    assert_eq!(
        parse_values(&c.call_raw(b"get foreign\r\n"))[0].data,
        plain,
        "unmarked values pass"
    );
    // Appending raw bytes to a compressed value would break it: refused, memcached untouched.
    c.set(b"log", &payloads(4000, 2)[0]);
    let before = raw(&m, "log");
    for request in [
        storage_request("append", "log", 0, b"more", ""),
        storage_request("prepend", "log", 0, b"more", ""),
        b"ms log 4 MA\r\nmore\r\n".to_vec(),
    ] {
        let reply = c.call(&request);
        assert!(reply.starts_with("CLIENT_ERROR"), "{reply}");
    }
    assert_eq!(raw(&m, "log"), before);
    // A client's own use of the marker bit is refused.
    let reply = c.call(&storage_request("set", "x", COMPRESSED | 1, b"v", ""));
    assert!(reply.starts_with("CLIENT_ERROR"), "{reply}");
    assert_eq!(raw(&m, "x"), None);
    // noreply stores compressed too, and the connection carries on.
    c.send(&storage_request("set", "quiet", 0, &plain, "noreply"));
    assert_eq!(c.get(b"quiet").as_deref(), Some(&plain[..]));
    assert_eq!(raw(&m, "quiet").expect("stored").0, COMPRESSED);
}

#[test]
fn a_value_hook_that_fails_is_contained_by_its_policy_and_counted() {
    let m = memcached();
    // A value marked compressed that does not decompress: the plugin panics reading it.
    let junk = b"\x10\x00\x00\x00not lz4 at all".to_vec();
    for key in ["junk", "junk2"] {
        assert_eq!(
            m.client()
                .call(&storage_request("set", key, COMPRESSED, &junk, "")),
            "STORED\r\n"
        );
    }
    let closed = compress_pool(&m, "fail_closed");
    let mut c = closed.client();
    c.set(b"good", &payloads(3000, 3)[0]);
    c.send(b"get junk\r\nget good junk2\r\nmg junk v\r\nget good\r\n");
    let replies = c.read_replies(4);
    let text = String::from_utf8_lossy(&replies);
    assert!(
        text.starts_with(
            "SERVER_ERROR plugin failed\r\nSERVER_ERROR plugin failed\r\nSERVER_ERROR plugin failed\r\nVALUE good 0 3000\r\n"
        ),
        "{text}"
    );
    let log = closed.log();
    assert!(
        log.contains("a value marked compressed does not decompress"),
        "the plugin's panic message is in the log:\n{log}"
    );
    let stats = closed.stats_json();
    let counter = |name: &str| -> u64 {
        let key = format!("\"plugin:pool:compress.wasm:{name}\":");
        let at = stats
            .find(&key)
            .unwrap_or_else(|| panic!("{key} in {stats}"))
            + key.len();
        stats[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    // Three failed calls (junk, junk2, mg junk) and at least the good value's store and reads.
    assert_eq!(counter("fault_trap"), 3, "{stats}");
    assert!(counter("calls") >= 6, "{stats}");
    assert_eq!(
        counter("rewrites"),
        3,
        "one store and two reads of good: {stats}"
    );
    assert_eq!(counter("rejects"), 0);
    // fail_open: the value passes as memcached holds it.
    let open = compress_pool(&m, "fail_open");
    let got = parse_values(&open.client().call_raw(b"get junk good\r\n"));
    assert_eq!(got[0].data, junk);
    assert_eq!(got[0].flags, COMPRESSED);
    assert_eq!(got[1].data, payloads(3000, 3)[0]);
}
