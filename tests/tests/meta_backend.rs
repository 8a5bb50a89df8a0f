//! One-key retrievals go to a server that speaks the meta protocol as `mg` (memcached 1.6
//! answers a batch of meta gets in one packet, classic gets one packet each): clients still see
//! exactly memcached's classic replies. Multi-key retrievals stay classic. A server without meta
//! (answering `mn` with `ERROR`) is asked classically.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use walnut_tests::{Client, Memcached, Proxy, eventually, mc_pool, show, storage_request};

/// walnut with one worker over `servers`, connected before the first request.
fn walnut_over(servers: &[String]) -> Proxy {
    Proxy::walnut_with(
        &mc_pool(servers, "  preconnect: true\n  timeout: 2000\n"),
        &["-w", "1"],
    )
}

/// memcached's `bytes_read` counter.
fn bytes_read(c: &mut Client) -> u64 {
    let stats = c.call("stats\r\n".as_bytes());
    stats
        .lines()
        .find_map(|l| l.strip_prefix("STAT bytes_read "))
        .and_then(|n| n.trim().parse().ok())
        .expect("bytes_read in stats")
}

#[test]
fn retrievals_read_exactly_as_from_memcached() {
    let m = Memcached::start_with(&["-I", "2m"]);
    let walnut = walnut_over(&[m.address()]);
    let mut direct = m.client();
    let mut via = walnut.client();
    let big = vec![b'v'; 1024 * 1024];
    let binary = b"a\r\nEND\r\nVALUE x 0 1\r\n\0\xff".to_vec();
    for (key, flags, data) in [
        ("m:plain", 0, &b"hello"[..]),
        ("m:flags", u32::MAX, b"f"),
        ("m:empty", 7, b""),
        ("m:binary", 1, &binary[..]),
        ("m:big", 2, &big[..]),
        ("m:touched", 3, b"t"),
    ] {
        direct.expect(&storage_request("set", key, flags, data, ""), b"STORED\r\n");
    }
    let requests: &[&[u8]] = &[
        b"get m:plain\r\n",
        b"gets m:plain\r\n",
        b"get m:flags\r\n",
        b"gets m:empty\r\n",
        b"get m:binary\r\n",
        b"get m:big\r\n",
        b"get m:missing\r\n",
        b"gets m:missing\r\n",
        b"gat 1000 m:touched\r\n",
        b"gats 0 m:touched\r\n",
        b"gat 1000 m:missing\r\n",
        b"get  m:plain \r\n",
        // Several keys: classic, merged back.
        b"get m:plain m:missing m:flags m:plain\r\n",
        b"gets m:empty m:binary m:missing\r\n",
        b"gat 1000 m:touched m:missing m:plain\r\n",
        b"gats 0 m:missing m:big m:plain\r\n",
        b"get m:missing m:nothing\r\n",
    ];
    // Walnut learns that the server speaks meta when the connection opens.
    assert!(
        eventually(Duration::from_secs(5), || {
            let before = bytes_read(&mut direct);
            via.expect(b"get m:plain\r\n", b"VALUE m:plain 0 5\r\nhello\r\nEND\r\n");
            // `mg m:plain f v O<n>`: the opaque token is a number of one to ten digits.
            let sent = bytes_read(&mut direct) - before;
            let base = ("stats\r\n".len() + "mg m:plain f v O\r\n".len()) as u64;
            (base + 1..=base + 10).contains(&sent)
        }),
        "walnut never sent `get` as `mg m:plain f v O<n>`"
    );
    let before = bytes_read(&mut direct);
    via.expect(
        b"get m:plain m:flags\r\n",
        b"VALUE m:plain 0 5\r\nhello\r\nVALUE m:flags 4294967295 1\r\nf\r\nEND\r\n",
    );
    assert_eq!(
        bytes_read(&mut direct) - before,
        ("stats\r\n".len() + "get m:plain m:flags\r\n".len()) as u64,
        "a multi-key get should reach the server as it came (one command, one packet)"
    );
    for request in requests {
        let expected = direct.call_raw(request);
        let got = via.call_raw(request);
        assert!(
            got == expected,
            "{}: walnut {} memcached {}",
            show(request),
            show(&got),
            show(&expected)
        );
    }
    // Pipelined in one write, between other commands: every reply in order.
    let mut all = Vec::new();
    for request in requests {
        all.extend_from_slice(request);
        all.extend_from_slice(b"delete m:nothing\r\n");
    }
    direct.send(&all);
    via.send(&all);
    let n = requests.len() * 2;
    let expected = direct.read_replies(n);
    let got = via.read_replies(n);
    assert!(
        got == expected,
        "pipelined: walnut {} memcached {}",
        show(&got),
        show(&expected)
    );
    // The cas unique from walnut's `gets` is the server's: `cas` with it succeeds.
    let reply = String::from_utf8_lossy(&via.call_raw(b"gets m:plain\r\n")).into_owned();
    let unique = reply
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    via.expect(
        format!("cas m:plain 0 0 3 {unique}\r\nnew\r\n").as_bytes(),
        b"STORED\r\n",
    );
    via.expect(b"get m:plain\r\n", b"VALUE m:plain 0 3\r\nnew\r\nEND\r\n");
}

/// A classic-only server: `mn` (and any other meta command) is `ERROR`, `get k`/`gets k` find
/// `v-k`, everything else is `ERROR`. Records every line it is sent.
struct ClassicServer {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ClassicServer {
    fn start() -> ClassicServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lines);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve_classic(s, seen));
            }
        });
        ClassicServer { port, lines }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn serve_classic(s: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut out = s.try_clone().expect("clone");
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { return };
        let line = line.trim_end().to_string();
        seen.lock().unwrap().push(line.clone());
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        let reply = match words.as_slice() {
            [cmd @ ("get" | "gets"), keys @ ..] if !keys.is_empty() => {
                let mut reply = String::new();
                for key in keys {
                    let cas = if *cmd == "gets" { " 42" } else { "" };
                    reply += &format!("VALUE {key} 5 {}{cas}\r\nv-{key}\r\n", key.len() + 2);
                }
                reply + "END\r\n"
            }
            ["version"] => "VERSION 1.4.39\r\n".to_string(),
            _ => "ERROR\r\n".to_string(),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn a_server_without_meta_is_asked_classically() {
    let old = ClassicServer::start();
    let walnut = walnut_over(&[old.address()]);
    let mut c = walnut.client();
    assert!(
        eventually(Duration::from_secs(5), || old
            .lines()
            .iter()
            .any(|l| l == "mn")),
        "walnut never asked the server whether it speaks meta: {:?}",
        old.lines()
    );
    for i in 0..20 {
        let key = format!("old:{i}");
        c.expect(
            format!("get {key}\r\n").as_bytes(),
            format!("VALUE {key} 5 {}\r\nv-{key}\r\nEND\r\n", key.len() + 2).as_bytes(),
        );
        c.expect(
            format!("gets {key}\r\n").as_bytes(),
            format!("VALUE {key} 5 {} 42\r\nv-{key}\r\nEND\r\n", key.len() + 2).as_bytes(),
        );
    }
    let value = |key: &str| format!("VALUE {key} 5 {}\r\nv-{key}\r\n", key.len() + 2);
    c.expect(
        b"get old:1 old:2 old:1\r\n",
        format!(
            "{}{}{}END\r\n",
            value("old:1"),
            value("old:2"),
            value("old:1")
        )
        .as_bytes(),
    );
    let lines = old.lines();
    assert!(
        lines.iter().all(|l| !l.starts_with("mg ")),
        "a meta get reached a server that answered `mn` with ERROR: {lines:?}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("get ")).count(), 21);
    assert_eq!(lines.iter().filter(|l| *l == "mn").count(), 1, "{lines:?}");
    // The probe is not a client request: the server's counts show only the 41.
    let stats = walnut.stats_json();
    assert!(
        stats.contains("\"requests\":41,") && stats.contains("\"responses\":41,"),
        "mc1's requests and responses should be 41: {stats}"
    );
}

/// walnut in front of nutcracker, which closes a connection on any command it does not know
/// (`mn` included, and the requests before it on that connection get no answer): the probe goes
/// on a connection of its own, so the serving connection never breaks and every request works.
#[test]
fn walnut_in_front_of_nutcracker_never_loses_its_connection() {
    let m = Memcached::start();
    let nutcracker = Proxy::nutcracker(&mc_pool(&[m.address()], ""));
    let walnut = walnut_over(&[nutcracker.addr.to_string()]);
    let mut c = walnut.client();
    for i in 0..30 {
        let key = format!("chain:{i}");
        c.expect(
            &storage_request("set", &key, i, key.as_bytes(), ""),
            b"STORED\r\n",
        );
        let value = format!("VALUE {key} {i} {}\r\n{key}\r\n", key.len());
        c.expect(
            format!("get {key}\r\n").as_bytes(),
            format!("{value}END\r\n").as_bytes(),
        );
        c.expect(
            format!("get {key} chain:none {key}\r\n").as_bytes(),
            format!("{value}{value}END\r\n").as_bytes(),
        );
    }
    let stats = walnut.stats_json();
    assert!(
        stats.contains("\"server_eof\":0, \"server_err\":0, \"server_timedout\":0"),
        "walnut's connection to nutcracker never failed: {stats}"
    );
}
