//! Hostile clients and faulty servers: floods and clients that never read stay within a bounded
//! memory while other clients are served, and a server that answers wrongly (twice, with a
//! value longer than allowed, or a meta command it does not know) never gets a reply onto
//! another request. Real memcached where it can play the part; scripted servers where it cannot.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use walnut_tests::{Client, Memcached, Proxy, eventually, mc_keys_on, mc_pool, vm_rss_kib};

/// A `/proc/<pid>/status` figure in KiB (`VmHWM` is the peak resident size).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("a figure")
}

/// A scripted server: every connection is served on a thread by `serve`, which gets its lines
/// (request lines only; a data block is up to `serve` to read) and the socket to answer on.
/// Every line read is recorded.
struct Fake {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

type Serve = dyn Fn(&str, &mut BufReader<TcpStream>, &mut TcpStream, usize) -> bool + Send + Sync;

impl Fake {
    /// `serve(line, reader, writer, n)` answers the `n`th line of a connection; false closes it.
    fn start(serve: Arc<Serve>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&lines);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (serve, log) = (Arc::clone(&serve), Arc::clone(&log));
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut r = BufReader::new(conn);
                    let mut line = String::new();
                    let mut n = 0;
                    while r.read_line(&mut line).is_ok_and(|k| k > 0) {
                        let l = line.trim_end().to_owned();
                        line.clear();
                        log.lock().unwrap().push(l.clone());
                        if !serve(&l, &mut r, &mut w, n) {
                            return;
                        }
                        n += 1;
                    }
                });
            }
        });
        Fake { addr, lines }
    }

    /// A server that accepts connections and never reads from them.
    fn deaf() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&held);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                keep.lock().unwrap().push(conn);
            }
        });
        (addr, held)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A classic `get` answer for `keys` holding `v:<key>`.
fn values(keys: &[&str]) -> String {
    let mut out = String::new();
    for k in keys {
        let v = format!("v:{k}");
        out.push_str(&format!("VALUE {k} 0 {}\r\n{v}\r\n", v.len()));
    }
    out + "END\r\n"
}

/// The number after `"name":` in the stats JSON.
fn stat(json: &str, name: &str) -> u64 {
    let at = json.find(&format!("\"{name}\":")).expect("field") + name.len() + 3;
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

#[test]
fn a_noreply_flood_never_buffers_more_than_a_server_queue() {
    // Two servers: mc1 real, mc2 accepting but never reading.
    let m = Memcached::start();
    let (deaf, _held) = Fake::deaf();
    let walnut = Proxy::walnut(&mc_pool(
        &[m.address(), deaf.to_string()],
        "  timeout: 60000\n",
    ));
    let pid = walnut.pid();
    let before = vm_rss_kib(pid);
    let on_deaf = mc_keys_on(2, 1, 1, "flood:")[0].clone();
    let on_real = mc_keys_on(2, 0, 1, "fine:")[0].clone();
    let value = vec![b'v'; 100_000];
    let mut set = format!("set {on_deaf} 0 0 100000 noreply\r\n").into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    // The flood: the client never reads; its writes block once walnut stops reading it.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let mut s = TcpStream::connect(walnut.addr).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match s.write(&set) {
                    Ok(n) => _ = sent.fetch_add(n, Ordering::Relaxed),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Other clients are served meanwhile.
    let mut c = walnut.client();
    c.set(on_real.as_bytes(), b"still here");
    assert_eq!(
        c.get(on_real.as_bytes()).as_deref(),
        Some(&b"still here"[..])
    );
    let grown = vm_rss_kib(pid).saturating_sub(before);
    let sent_mb = sent.load(Ordering::Relaxed) >> 20;
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert!(sent_mb >= 4, "the flood ran ({sent_mb} MiB sent)");
    assert!(
        grown < 32 * 1024,
        "a server that stops reading holds walnut to its queue: grew {grown} KiB after {sent_mb} MiB"
    );
}

#[test]
fn a_noreply_flood_to_a_reading_server_passes_through_in_bounded_memory() {
    let m = Memcached::start_with(&["-m", "256"]);
    let walnut = Proxy::walnut(&mc_pool(&[m.address()], ""));
    let pid = walnut.pid();
    let before = vm_rss_kib(pid);
    let mut s = TcpStream::connect(walnut.addr).expect("connect");
    let mut set = b"set flood 0 0 100000 noreply\r\n".to_vec();
    set.extend_from_slice(&[b'f'; 100_000]);
    set.extend_from_slice(b"\r\n");
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        s.write_all(&set).expect("walnut reads the flood");
        sent += set.len();
    }
    let grown = vm_rss_kib(pid).saturating_sub(before);
    assert!(sent > 50 << 20, "the flood ran ({} MiB)", sent >> 20);
    assert!(
        grown < 32 * 1024,
        "grew {grown} KiB after {} MiB",
        sent >> 20
    );
    // Nothing was lost: the last value is the one memcached holds.
    let mut c = walnut.client();
    assert_eq!(c.get(b"flood").map(|v| v.len()), Some(100_000));
}

#[test]
fn a_client_that_never_reads_its_replies_holds_bounded_memory() {
    let m = Memcached::start_with(&["-m", "256"]);
    let walnut = Proxy::walnut(&mc_pool(&[m.address()], "  client_buffer: 8388608\n"));
    let pid = walnut.pid();
    let mut c = walnut.client();
    c.set(b"v100k", &vec![b'x'; 100_000]);
    c.set(b"v1m", &vec![b'y'; 1_000_000]);
    let before = vm_rss_kib(pid);
    // 4,000 gets of a 100 KB value (400 MB) in one go, unread: walnut stops reading the client.
    let mut s = TcpStream::connect(walnut.addr).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let gets = b"get v100k\r\n".repeat(4_000);
    let _ = s.write_all(&gets);
    std::thread::sleep(Duration::from_millis(500));
    let grown = vm_rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "4,000 unread 100 KB replies: grew {grown} KiB"
    );
    // Others are served.
    assert_eq!(c.get(b"v100k").map(|v| v.len()), Some(100_000));
    // Reading now, the client gets every reply, in order.
    let mut reader = Client::from_stream(s);
    for _ in 0..4_000 {
        let reply = reader.read_replies(1);
        assert_eq!(reply.len(), "VALUE v100k 0 100000\r\n".len() + 100_002 + 5);
    }
    // With 1 MB values, the client's buffer (client_buffer, 8 MiB here) bounds what walnut
    // holds for it: walnut stops reading it, and serves it again once it reads.
    let mut s = TcpStream::connect(walnut.addr).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(&b"get v1m\r\n".repeat(500));
    std::thread::sleep(Duration::from_millis(500));
    let grown = vm_rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "500 unread 1 MB replies: grew {grown} KiB"
    );
    assert_eq!(c.get(b"v1m").map(|v| v.len()), Some(1_000_000));
    let mut reader = Client::from_stream(s);
    for i in 0..500 {
        let reply = reader.read_replies(1);
        assert_eq!(
            reply.len(),
            "VALUE v1m 0 1000000\r\n".len() + 1_000_002 + 5,
            "reply {i}"
        );
    }
    let peak = proc_kib(pid, "VmHWM").saturating_sub(before);
    assert!(peak < 96 * 1024, "peak growth {peak} KiB");
    assert!(
        !walnut.log().contains("client_buffer"),
        "a client that reads again is kept"
    );
}

#[test]
fn a_huge_multi_get_is_answered_in_key_order_and_memory_goes_back() {
    let servers: Vec<Memcached> = (0..2)
        .map(|_| Memcached::start_with(&["-m", "1024"]))
        .collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = Proxy::walnut(&mc_pool(&addrs, ""));
    let pid = walnut.pid();
    let mut c = walnut.client();
    c.set_read_timeout(Duration::from_secs(60));
    let keys: Vec<String> = (0..10_000).map(|i| format!("big{i:05}")).collect();
    let value = |i: usize| format!("{i:05}").repeat(10_000).into_bytes();
    // Stored on each key's server directly (where walnut places it), pipelined.
    let mut direct: Vec<Client> = servers.iter().map(Memcached::client).collect();
    for chunk in keys.chunks(100).enumerate() {
        let mut wire = vec![Vec::new(); 2];
        let mut count = [0usize; 2];
        for (j, k) in chunk.1.iter().enumerate() {
            let owner = walnut_tests::mc_owner(2, k.as_bytes());
            let v = value(chunk.0 * 100 + j);
            wire[owner].extend_from_slice(format!("set {k} 0 0 {}\r\n", v.len()).as_bytes());
            wire[owner].extend_from_slice(&v);
            wire[owner].extend_from_slice(b"\r\n");
            count[owner] += 1;
        }
        for (i, d) in direct.iter_mut().enumerate() {
            d.send(&wire[i]);
            assert_eq!(d.read_replies(count[i]), b"STORED\r\n".repeat(count[i]));
        }
    }
    let before = vm_rss_kib(pid);
    let hwm_before = proc_kib(pid, "VmHWM");
    c.send(format!("get {}\r\n", keys.join(" ")).as_bytes());
    let reply = c.read_replies(1);
    let values = walnut_tests::parse_values(&reply);
    assert_eq!(values.len(), 10_000, "every key, once");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v.key, keys[i], "in key order");
        assert_eq!(v.data, value(i));
    }
    drop(reply);
    let peak = proc_kib(pid, "VmHWM").saturating_sub(hwm_before.max(before));
    assert!(
        peak < 160 * 1024,
        "a 500 MB answer streamed: walnut's peak grew {peak} KiB"
    );
    let back = eventually(Duration::from_secs(5), || {
        vm_rss_kib(pid) < before + 64 * 1024
    });
    assert!(
        back,
        "memory goes back after the spike: {} KiB, was {before}",
        vm_rss_kib(pid)
    );
}

#[test]
fn a_value_longer_than_item_size_max_from_a_server_fails_that_request_only() {
    let streaming: Arc<Serve> = Arc::new(|line, _, w, _| {
        if line == "mn" {
            let _ = w.write_all(b"ERROR\r\n");
            return true;
        }
        // VALUE with a length far past any limit, then bytes for as long as walnut reads.
        let _ = w.write_all(b"VALUE k 0 9999999999\r\n");
        let chunk = [b'z'; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) && w.write_all(&chunk).is_ok() {}
        false
    });
    let fake = Fake::start(streaming);
    let m = Memcached::start();
    let walnut = Proxy::walnut_with(
        &mc_pool(&[m.address(), fake.addr.to_string()], "  timeout: 5000\n"),
        &["-w", "1"],
    );
    let pid = walnut.pid();
    let before = vm_rss_kib(pid);
    let on_fake = mc_keys_on(2, 1, 1, "huge:")[0].clone();
    let on_real = mc_keys_on(2, 0, 1, "fine:")[0].clone();
    let mut c = walnut.client();
    let started = Instant::now();
    assert_eq!(
        c.call(format!("get {on_fake}\r\n").as_bytes()),
        "SERVER_ERROR Invalid reply from server\r\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused at once, not read to the end"
    );
    assert!(vm_rss_kib(pid) < before + 16 * 1024);
    c.set(on_real.as_bytes(), b"ok");
    assert_eq!(c.get(on_real.as_bytes()).as_deref(), Some(&b"ok"[..]));
}

/// A classic server that answers each connection's first `get` twice.
fn answering_twice() -> Fake {
    Fake::start(Arc::new(|line, _, w, n| {
        let words: Vec<&str> = line.split(' ').collect();
        let reply = match words[0] {
            "mn" => "ERROR\r\n".to_owned(),
            "get" => {
                let reply = values(&words[1..]);
                if n == 0 { reply.repeat(2) } else { reply }
            }
            _ => "ERROR\r\n".to_owned(),
        };
        w.write_all(reply.as_bytes()).is_ok()
    }))
}

/// A meta server (it answers `mn`) that answers each connection's first `mg` twice, echoing
/// the opaque token as memcached does.
fn meta_answering_twice() -> Fake {
    Fake::start(Arc::new(|line, _, w, n| {
        let words: Vec<&str> = line.split(' ').collect();
        let reply = match words[0] {
            "mn" => "MN\r\n".to_owned(),
            "mg" => {
                let v = format!("v:{}", words[1]);
                let opaque = words
                    .iter()
                    .find(|t| t.starts_with('O'))
                    .copied()
                    .unwrap_or("");
                let reply = format!("VA {} f0 {opaque}\r\n{v}\r\n", v.len());
                if n == 0 { reply.repeat(2) } else { reply }
            }
            "get" => values(&words[1..]),
            _ => "ERROR\r\n".to_owned(),
        };
        w.write_all(reply.as_bytes()).is_ok()
    }))
}

#[test]
fn a_server_answering_twice_never_gives_one_client_another_clients_value() {
    for fake in [answering_twice(), meta_answering_twice()] {
        let walnut = Proxy::walnut_with(
            &mc_pool(&[fake.addr.to_string()], "  timeout: 2000\n"),
            &["-w", "1"],
        );
        // The meta server's probe is answered before the gets below are sent.
        let mut warm = walnut.client();
        assert_eq!(warm.call(b"version\r\n").split(' ').next(), Some("VERSION"));
        std::thread::sleep(Duration::from_millis(200));
        let mut clients: Vec<Client> = (0..4).map(|_| walnut.client()).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(format!("get k{i}\r\n").as_bytes());
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let reply = String::from_utf8(c.read_replies(1)).unwrap();
            let own = values(&[&format!("k{i}")]);
            assert!(
                reply == own || reply.starts_with("SERVER_ERROR"),
                "client {i} got {reply:?} (lines seen: {:?})",
                fake.lines()
            );
        }
        // The connection was dropped and a new one serves again.
        let mut c = walnut.client();
        let ok = eventually(Duration::from_secs(5), || {
            c.call(b"get again\r\n") == values(&["again"])
        });
        assert!(ok, "served again after the bad connection was dropped");
    }
}

#[test]
fn meta_commands_never_reach_a_server_without_meta() {
    // An old memcached: `mn` (and every meta command) is an unknown command.
    let fake = Fake::start(Arc::new(|line, _, w, _| {
        let words: Vec<&str> = line.split(' ').collect();
        let reply = match words[0] {
            "get" => values(&words[1..]),
            _ => "ERROR\r\n".to_owned(),
        };
        w.write_all(reply.as_bytes()).is_ok()
    }));
    let walnut = Proxy::walnut_with(&mc_pool(&[fake.addr.to_string()], ""), &["-w", "1"]);
    let mut c = walnut.client();
    // The first request opens the connection, and walnut asks `mn` on one of its own.
    assert_eq!(c.call(b"get a\r\n"), values(&["a"]));
    assert!(eventually(Duration::from_secs(5), || fake
        .lines()
        .iter()
        .any(|l| l == "mn")));
    std::thread::sleep(Duration::from_millis(100));
    let seen = fake.lines().len();
    for request in [
        &b"mg a v\r\n"[..],
        b"ms a 1\r\nx\r\n",
        b"md a\r\n",
        b"ma a\r\n",
        b"me a\r\n",
    ] {
        assert_eq!(
            c.call(request),
            "ERROR\r\n",
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(c.call(b"get b\r\n"), values(&["b"]));
    let after: Vec<String> = fake.lines()[seen..].to_vec();
    assert_eq!(after, ["get b"], "no meta command reached the server");
}

#[test]
fn restarting_an_idle_server_does_not_eject_it() {
    let mut m = Memcached::start();
    let walnut = Proxy::walnut_with(
        &mc_pool(
            &[m.address()],
            "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n",
        ),
        &["-w", "4"],
    );
    // Connections from every worker: many clients, each served by whichever worker took it.
    let mut clients: Vec<Client> = (0..32).map(|_| walnut.client()).collect();
    for c in clients.iter_mut() {
        c.set(b"k", b"v");
    }
    m.kill();
    m.restart();
    // Idle connections closed by the restart are opened again, not counted as failures.
    for c in clients.iter_mut() {
        assert_eq!(
            c.get(b"k"),
            None,
            "the restarted server is empty, and serves"
        );
    }
    let stats = walnut.stats_json();
    assert!(stats.contains("\"server_ejects\":0"), "{stats}");
    assert!(!walnut.log().contains("server ejected"));
}

#[test]
fn one_server_event_counts_once_however_many_workers_saw_it() {
    // A server that reads requests and never answers: every worker's connection times out.
    let silent = Fake::start(Arc::new(|line, _, w, _| {
        if line == "mn" {
            let _ = w.write_all(b"ERROR\r\n");
        }
        true
    }));
    let walnut = Proxy::walnut_with(
        &mc_pool(
            &[silent.addr.to_string()],
            "  timeout: 3000\n  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 60000\n",
        ),
        &["-w", "4"],
    );
    // One request in flight from clients until every worker has one waiting: each worker
    // opens its own connection to the server (counted in `server_connections`).
    let mut clients: Vec<Client> = Vec::new();
    let started = Instant::now();
    while stat(&walnut.stats_json(), "server_connections") < 4 {
        assert!(
            clients.len() < 400 && started.elapsed() < Duration::from_millis(2500),
            "clients never reached every worker: {}",
            walnut.stats_json()
        );
        let mut c = walnut.client();
        c.send(b"get k\r\n");
        clients.push(c);
        std::thread::sleep(Duration::from_millis(2));
    }
    for c in clients.iter_mut() {
        assert_eq!(c.read_replies(1), b"SERVER_ERROR Connection timed out\r\n");
    }
    let stats = walnut.stats_json();
    assert_eq!(
        stat(&stats, "server_timedout"),
        4,
        "every worker's connection timed out: {stats}"
    );
    assert_eq!(
        stat(&stats, "server_ejects"),
        0,
        "one event, one failure, under a limit of two: {stats}"
    );
    // A second event does eject it.
    let mut c = walnut.client();
    let ejected = eventually(Duration::from_secs(10), || {
        let reply = c.call(b"get k\r\n");
        reply == "SERVER_ERROR no server available\r\n"
    });
    assert!(
        ejected,
        "the next failure ejects it: {}",
        walnut.stats_json()
    );
}
