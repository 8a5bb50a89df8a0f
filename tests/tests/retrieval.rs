//! Multi-key retrievals (`get`, `gets`, `gat`, `gats`) across servers: answered in the client's
//! key order with one `END`, duplicates and misses included, and `gets` cas values that work
//! with `cas`.

use std::collections::HashMap;

use walnut_tests::{
    Client, Memcached, mc_keys_on, mc_owner, parse_values, storage_request as storage,
    three_servers, value_block as value,
};

/// Keys spread over the three servers: four stored on each, one missing on each.
struct Spread {
    /// The request's key list, in the client's order: hits, misses and duplicates.
    order: Vec<String>,
    /// Stored keys and their (flags, value).
    stored: HashMap<String, (u32, Vec<u8>)>,
}

fn spread(c: &mut Client, servers: &[Memcached], tag: &str) -> Spread {
    let per: Vec<Vec<String>> = (0..3)
        .map(|i| mc_keys_on(3, i, 5, &format!("{tag}:")))
        .collect();
    let mut stored = HashMap::new();
    for (i, keys) in per.iter().enumerate() {
        for (j, key) in keys[..4].iter().enumerate() {
            let data = format!("value of {key} ({i}/{j})").into_bytes();
            let flags = (i * 10 + j) as u32;
            c.expect(&storage("set", key, flags, &data, ""), b"STORED\r\n");
            stored.insert(key.clone(), (flags, data));
        }
    }
    // Every server really holds its keys (so the request spans all three).
    for (i, keys) in per.iter().enumerate() {
        assert!(
            servers[i].client().get(keys[0].as_bytes()).is_some(),
            "{} on mc{}",
            keys[0],
            i + 1
        );
    }
    let [a, b, c3] = [&per[0], &per[1], &per[2]];
    let order = vec![
        &a[0], &b[0], &c3[0], &a[4], &a[1], &b[1], &a[0], &c3[1], &b[4], &c3[2], &b[2], &a[2],
        &b[0], &c3[4], &a[3], &b[3], &c3[3], &c3[3],
    ]
    .into_iter()
    .cloned()
    .collect();
    Spread { order, stored }
}

#[test]
fn multi_key_retrievals_across_servers_come_back_in_key_order() {
    let (servers, walnut) = three_servers();
    let mut c = walnut.client();
    let s = spread(&mut c, &servers, "mget");
    let keys = s.order.join(" ");
    let mut expected = Vec::new();
    for key in &s.order {
        if let Some((flags, data)) = s.stored.get(key) {
            expected.extend_from_slice(&value(key, *flags, data));
        }
    }
    expected.extend_from_slice(b"END\r\n");

    c.expect(format!("get {keys}\r\n").as_bytes(), &expected);
    c.expect(format!("gat 0 {keys}\r\n").as_bytes(), &expected);

    for cmd in ["gets", "gats 1000"] {
        c.send(format!("{cmd} {keys}\r\n").as_bytes());
        let blocks = parse_values(&c.read_replies(1));
        let got: Vec<(&str, u32, &[u8])> = blocks
            .iter()
            .map(|b| (b.key.as_str(), b.flags, &b.data[..]))
            .collect();
        let want: Vec<(&str, u32, &[u8])> = s
            .order
            .iter()
            .filter_map(|k| s.stored.get(k).map(|(f, d)| (k.as_str(), *f, &d[..])))
            .collect();
        assert_eq!(got, want, "{cmd}: values in the client's key order");
        // A key asked twice has the same cas both times.
        let mut cas_of = HashMap::new();
        for b in &blocks {
            let cas = b
                .cas
                .unwrap_or_else(|| panic!("{cmd} returns cas for {}", b.key));
            assert_eq!(*cas_of.entry(b.key.clone()).or_insert(cas), cas);
        }
    }
    // gats 1000 set the expiry on every server.
    for key in [&s.order[0], &s.order[1], &s.order[2]] {
        let owner = mc_owner(3, key.as_bytes());
        let reply = servers[owner]
            .client()
            .call(format!("mg {key} t\r\n").as_bytes());
        assert!(
            reply == "HD t1000\r\n" || reply == "HD t999\r\n",
            "gats reached mc{}: {reply:?}",
            owner + 1
        );
    }
    // All misses across servers: one END.
    let misses: Vec<String> = s.order.iter().map(|k| format!("{k}:none")).collect();
    c.expect(
        format!("get {}\r\n", misses.join(" ")).as_bytes(),
        b"END\r\n",
    );
    // Keys all on one server: passed through whole, still exact.
    let one: Vec<&String> = s
        .order
        .iter()
        .filter(|k| mc_owner(3, k.as_bytes()) == 1)
        .collect();
    let mut expected = Vec::new();
    for key in &one {
        if let Some((flags, data)) = s.stored.get(*key) {
            expected.extend_from_slice(&value(key, *flags, data));
        }
    }
    expected.extend_from_slice(b"END\r\n");
    let list: Vec<&str> = one.iter().map(|k| k.as_str()).collect();
    c.expect(format!("get {}\r\n", list.join(" ")).as_bytes(), &expected);
}

#[test]
fn cas_values_from_a_multi_server_gets_work_with_cas() {
    let (servers, walnut) = three_servers();
    let mut c = walnut.client();
    let s = spread(&mut c, &servers, "cas");
    c.send(format!("gets {}\r\n", s.order.join(" ")).as_bytes());
    let blocks = parse_values(&c.read_replies(1));
    let mut seen = HashMap::new();
    for b in &blocks {
        seen.insert(b.key.clone(), b.cas.expect("cas"));
    }
    assert_eq!(seen.len(), 12, "every stored key came back");
    let mut keys: Vec<&String> = seen.keys().collect();
    keys.sort();
    // Each cas succeeds once, then the same cas is stale.
    let mut req = Vec::new();
    let mut expected = Vec::new();
    for key in &keys {
        let cas = seen[*key].to_string();
        req.extend_from_slice(&storage("cas", key, 1, b"swapped", &cas));
        req.extend_from_slice(&storage("cas", key, 1, b"again", &cas));
        expected.extend_from_slice(b"STORED\r\nEXISTS\r\n");
    }
    req.extend_from_slice(b"mn\r\n");
    expected.extend_from_slice(b"MN\r\n");
    c.expect(&req, &expected);
    for key in keys {
        let owner = mc_owner(3, key.as_bytes());
        assert_eq!(
            servers[owner].client().get(key.as_bytes()).as_deref(),
            Some(&b"swapped"[..]),
            "{key} on mc{}",
            owner + 1
        );
    }
}

#[test]
fn a_multi_get_of_a_thousand_keys_across_servers() {
    let (_servers, walnut) = three_servers();
    let mut c = walnut.client();
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("{}:{i}", ["a", "user", "10", "session", "k"][i % 5]))
        .collect();
    // Every third key stored, with its index as the value.
    let mut req = Vec::new();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        req.extend_from_slice(&storage(
            "set",
            key,
            i as u32,
            i.to_string().as_bytes(),
            "noreply",
        ));
    }
    req.extend_from_slice(b"mn\r\n");
    c.expect(&req, b"MN\r\n");
    let mut expected = Vec::new();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        expected.extend_from_slice(&value(key, i as u32, i.to_string().as_bytes()));
    }
    expected.extend_from_slice(b"END\r\n");
    c.expect(format!("get {}\r\n", keys.join(" ")).as_bytes(), &expected);
    // The keys really are spread over all three servers.
    let mut per_server = [0usize; 3];
    for key in &keys {
        per_server[mc_owner(3, key.as_bytes())] += 1;
    }
    assert!(per_server.iter().all(|&n| n > 0), "{per_server:?}");
}

/// Many clients pipelining multi-gets at once: the fragments queued together for a server are
/// joined into one line there, and each client still gets exactly its own keys' values.
#[test]
fn concurrent_multi_gets_from_many_clients_each_get_their_own_values() {
    let (_servers, walnut) = three_servers();
    let mut c = walnut.client();
    let stored: Vec<(String, u32, Vec<u8>)> = (0..120)
        .map(|i| {
            (
                format!("join:{i}"),
                i,
                format!("value {i} {}", "x".repeat(i as usize)).into_bytes(),
            )
        })
        .collect();
    for (key, flags, data) in &stored {
        c.expect(&storage("set", key, *flags, data, ""), b"STORED\r\n");
    }
    let stored = std::sync::Arc::new(stored);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let stored = std::sync::Arc::clone(&stored);
            let addr = walnut.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                let mut next = move |n: usize| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % n as u64) as usize
                };
                for round in 0..40 {
                    let mut wire = Vec::new();
                    let mut expected = Vec::new();
                    for r in 0..5 {
                        let cmd = ["get", "gat 0", "get"][(round + r) % 3];
                        let mut keys = Vec::new();
                        let mut want = Vec::new();
                        for _ in 0..1 + next(8) {
                            // One key in six is a miss; some repeat.
                            let i = next(stored.len() + stored.len() / 5);
                            match stored.get(i) {
                                Some((key, flags, data)) => {
                                    keys.push(key.clone());
                                    want.extend_from_slice(&value(key, *flags, data));
                                }
                                None => keys.push(format!("join:missing:{i}")),
                            }
                        }
                        want.extend_from_slice(b"END\r\n");
                        wire.extend_from_slice(format!("{cmd} {}\r\n", keys.join(" ")).as_bytes());
                        expected.push((format!("{cmd} {}", keys.join(" ")), want));
                    }
                    c.send(&wire);
                    for (request, want) in expected {
                        let got = c.read_replies(1);
                        assert!(
                            got == want,
                            "client {t}, round {round}, {request}: got {}",
                            walnut_tests::show(&got)
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}
