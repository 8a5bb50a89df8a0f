//! Pipelining: many requests in one write (or dribbled in pieces, or from many clients at once)
//! answered in order, mixing commands and servers.

use std::collections::HashMap;
use std::time::Duration;

use walnut_tests::{
    mc_keys_on, show, storage_request as storage, three_servers, value_block as value,
};

#[test]
fn a_client_that_half_closes_still_gets_every_reply() {
    // As `printf '...' | nc -q1 host port` does: send everything, shut the sending side.
    let (_servers, walnut) = three_servers();
    let mut c = walnut.client();
    let (req, expected) = mixed_pipeline("half", 30);
    c.send(&req);
    c.shutdown_write();
    c.expect(b"", &expected);
    assert!(c.is_closed(), "walnut closes once everything is answered");
}

/// A long pipeline mixing commands and servers, with its exact expected reply stream.
fn mixed_pipeline(tag: &str, rounds: usize) -> (Vec<u8>, Vec<u8>) {
    let keys: Vec<Vec<String>> = (0..3)
        .map(|i| mc_keys_on(3, i, rounds / 3 + 1, &format!("{tag}:")))
        .collect();
    let key = |i: usize| keys[i % 3][i / 3].clone();
    let version = format!("VERSION 1.6.0-walnut-{}\r\n", env!("CARGO_PKG_VERSION"));
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    let (mut req, mut exp) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let k = key(i);
        let data = format!("{i}-{}", "v".repeat(i % 37)).into_bytes();
        req.extend_from_slice(&storage("set", &k, 0, &data, ""));
        exp.extend_from_slice(b"STORED\r\n");
        model.insert(k.clone(), data);
        req.extend_from_slice(format!("get {k}\r\n").as_bytes());
        exp.extend_from_slice(&value(&k, 0, &model[&k]));
        exp.extend_from_slice(b"END\r\n");
        if i % 5 == 4 {
            let old = key(i - 3);
            req.extend_from_slice(format!("delete {old}\r\n").as_bytes());
            exp.extend_from_slice(b"DELETED\r\n");
            model.remove(&old);
        }
        if i % 4 == 3 {
            let list = [key(i), key(i - 1), key(i - 2), key(i - 3), key(i)];
            req.extend_from_slice(format!("get {}\r\n", list.join(" ")).as_bytes());
            for k in &list {
                if let Some(d) = model.get(k) {
                    exp.extend_from_slice(&value(k, 0, d));
                }
            }
            exp.extend_from_slice(b"END\r\n");
        }
        if i % 7 == 0 {
            req.extend_from_slice(b"mn\r\nversion\r\n");
            exp.extend_from_slice(b"MN\r\n");
            exp.extend_from_slice(version.as_bytes());
        }
        if i % 6 == 5 {
            let n = format!("{k}:n");
            req.extend_from_slice(&storage("set", &n, 0, b"41", ""));
            req.extend_from_slice(format!("incr {n} 1\r\nmg {n} v\r\n").as_bytes());
            exp.extend_from_slice(b"STORED\r\n42\r\nVA 2\r\n42\r\n");
        }
    }
    req.extend_from_slice(b"mn\r\n");
    exp.extend_from_slice(b"MN\r\n");
    (req, exp)
}

#[test]
fn a_pipeline_in_one_write_is_answered_in_order() {
    let (_servers, walnut) = three_servers();
    let mut c = walnut.client();
    let (req, expected) = mixed_pipeline("pipe", 300);
    c.expect(&req, &expected);
    assert!(c.is_quiet_for(Duration::from_millis(100)));
}

#[test]
fn a_pipeline_dribbled_in_small_pieces_is_answered_in_order() {
    let (_servers, walnut) = three_servers();
    let mut c = walnut.client();
    let (req, expected) = mixed_pipeline("drip", 60);
    for piece in req.chunks(7) {
        c.send(piece);
    }
    let got = c.read_len(expected.len());
    assert!(
        got == expected,
        "expected: {}\n     got: {}",
        show(&expected),
        show(&got)
    );
}

#[test]
fn many_clients_pipelining_at_once_each_get_their_own_replies() {
    let (_servers, walnut) = three_servers();
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let mut c = walnut.client();
            std::thread::spawn(move || {
                let (req, expected) = mixed_pipeline(&format!("many{t}"), 90);
                for _ in 0..3 {
                    c.expect(&req, &expected);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
}
