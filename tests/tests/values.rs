//! Values are opaque bytes: binary data, `\r\n` and reply-like text inside values, empty values
//! and 1 MiB values round-trip byte-exact through walnut, alone, in multi-gets and in meta
//! commands.

use walnut_tests::{
    Memcached, Proxy, mc_keys_on, mc_owner, mc_pool, show, storage_request, value_block as value,
};

fn set(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    storage_request("set", key, flags, data, "")
}

/// Values a reply parser could trip on.
fn awkward_values() -> Vec<Vec<u8>> {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut twice = all_bytes.clone();
    twice.extend((0..=255u8).rev());
    vec![
        all_bytes,
        twice,
        b"line one\r\nline two\r\n".to_vec(),
        b"\r\n".to_vec(),
        b"END\r\n".to_vec(),
        b"\r\nEND\r\nVALUE other 0 3\r\nabc\r\nEND\r\n".to_vec(),
        b"STORED\r\nSERVER_ERROR fake\r\n".to_vec(),
        b"VA 2\r\nxx\r\nHD\r\nEN\r\n".to_vec(),
        Vec::new(),
        b"\0".to_vec(),
        b"\n".to_vec(),
        b"\r".to_vec(),
        vec![0xff; 3000],
    ]
}

#[test]
fn binary_and_awkward_values_round_trip_byte_exact() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = Proxy::walnut(&mc_pool(&addrs, ""));
    let mut c = walnut.client();
    let values = awkward_values();
    // Spread the values over the three servers.
    let keys: Vec<String> = (0..values.len())
        .map(|i| mc_keys_on(3, i % 3, i / 3 + 1, "bin:")[i / 3].clone())
        .collect();
    for (i, (key, data)) in keys.iter().zip(&values).enumerate() {
        c.expect(&set(key, i as u32, data), b"STORED\r\n");
    }
    for (i, (key, data)) in keys.iter().zip(&values).enumerate() {
        let mut expected = value(key, i as u32, data);
        expected.extend_from_slice(b"END\r\n");
        c.expect(format!("get {key}\r\n").as_bytes(), &expected);
        // Stored unchanged on the server its hash names.
        let owner = mc_owner(3, key.as_bytes());
        assert_eq!(
            servers[owner].client().get(key.as_bytes()).as_deref(),
            Some(&data[..]),
            "value {i} on mc{}",
            owner + 1
        );
    }
    // All of them in one multi-get across the servers, in order, twice over.
    let mut list = keys.clone();
    list.extend(keys.iter().rev().cloned());
    let mut expected = Vec::new();
    for key in &list {
        let i = keys.iter().position(|k| k == key).expect("known key");
        expected.extend_from_slice(&value(key, i as u32, &values[i]));
    }
    expected.extend_from_slice(b"END\r\n");
    c.expect(format!("get {}\r\n", list.join(" ")).as_bytes(), &expected);

    // Meta commands carry the same bytes.
    for (i, data) in values.iter().enumerate() {
        let key = format!("{}:meta", keys[i]);
        let mut req = format!("ms {key} {} F{i}\r\n", data.len()).into_bytes();
        req.extend_from_slice(data);
        req.extend_from_slice(format!("\r\nmg {key} v f\r\n").as_bytes());
        let mut expected = format!("HD\r\nVA {} f{i}\r\n", data.len()).into_bytes();
        expected.extend_from_slice(data);
        expected.extend_from_slice(b"\r\n");
        c.expect(&req, &expected);
    }
}

#[test]
fn one_mib_values_round_trip_byte_exact() {
    // memcached needs room for a full 1 MiB value plus its item header.
    let m1 = Memcached::start_with(&["-I", "2m"]);
    let m2 = Memcached::start_with(&["-I", "2m"]);
    let walnut = Proxy::walnut(&mc_pool(&[m1.address(), m2.address()], ""));
    let mut c = walnut.client();
    let big = |seed: u32| -> Vec<u8> {
        (0..1_048_576u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    };
    let k1 = mc_keys_on(2, 0, 1, "big:")[0].clone();
    let k2 = mc_keys_on(2, 1, 1, "big:")[0].clone();
    let (v1, v2) = (big(1), big(2));
    // Both sets and a multi-get in one write.
    let mut req = set(&k1, 1, &v1);
    req.extend_from_slice(&set(&k2, 2, &v2));
    req.extend_from_slice(format!("get {k2} {k1}\r\n").as_bytes());
    let mut expected = b"STORED\r\nSTORED\r\n".to_vec();
    expected.extend_from_slice(&value(&k2, 2, &v2));
    expected.extend_from_slice(&value(&k1, 1, &v1));
    expected.extend_from_slice(b"END\r\n");
    c.send(&req);
    let got = c.read_len(expected.len());
    assert!(
        got == expected,
        "1 MiB values differ: got {} bytes, expected {}; first difference at {:?}",
        got.len(),
        expected.len(),
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );
    assert_eq!(m1.client().get(k1.as_bytes()).as_deref(), Some(&v1[..]));
    assert_eq!(m2.client().get(k2.as_bytes()).as_deref(), Some(&v2[..]));
    // A single get and a meta get of one of them.
    let mut expected = value(&k1, 1, &v1);
    expected.extend_from_slice(b"END\r\n");
    expected.extend_from_slice(b"VA 1048576\r\n");
    expected.extend_from_slice(&v2);
    expected.extend_from_slice(b"\r\nMN\r\n");
    c.send(format!("get {k1}\r\nmg {k2} v\r\nmn\r\n").as_bytes());
    let got = c.read_len(expected.len());
    assert!(
        got == expected,
        "got {} bytes: {}",
        got.len(),
        show(&got[..got.len().min(200)])
    );
}
