//! Idle clients in bounded memory: 10,000 connections that sit idle on an HTTP pool, then on a
//! memcached pool, walnut's resident memory per connection while they wait (before and after
//! one request each), other clients served meanwhile, and the memory given back once they
//! close. The figures are printed; README's "Memory" section states them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use walnut_tests::{
    HttpClient, Memcached, Proxy, TestBackend, eventually, raise_fd_limit, vm_rss_kib,
};

const CONNS: usize = 10_000;

/// One flood at a time: two would need twice the open files and ephemeral ports.
static FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `curr_connections` from the stats JSON.
fn curr_connections(proxy: &Proxy) -> u64 {
    let json = proxy.stats_json();
    let at = json
        .find("\"curr_connections\":")
        .expect("curr_connections")
        + 19;
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

/// Waits until walnut counts exactly `n` client connections.
fn wait_connections(proxy: &Proxy, n: u64) {
    let counted = eventually(Duration::from_secs(60), || curr_connections(proxy) == n);
    assert!(
        counted,
        "walnut counts {} connections, not {n}",
        curr_connections(proxy)
    );
}

/// `n` connections to `addr` that send nothing.
fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        })
        .collect()
}

/// RSS in KiB once it stops moving (two samples 200 ms apart within 64 KiB).
fn settled_rss(pid: u32) -> u64 {
    let mut last = vm_rss_kib(pid);
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = vm_rss_kib(pid);
        if now.abs_diff(last) < 64 {
            return now;
        }
        last = now;
    }
    last
}

/// What one flood cost, in KiB of walnut's RSS.
#[derive(Debug)]
struct Figures {
    baseline: u64,
    idle: u64,
    after_one_request: u64,
    /// The least RSS seen once every connection closed (walnut gives freed memory back within
    /// a few seconds).
    closed: u64,
}

/// How far above its baseline walnut's RSS may stay once the connections closed.
const CLOSED_MARGIN_KIB: u64 = 8 * 1024;

// Bounds on what one connection costs, in bytes: the figures README states, measured on a
// debug build (the one `cargo test` runs: 3.7 KiB per HTTP connection idle and after a request,
// 2.9 KiB and 3.4 KiB for memcached), with room for noise and another allocator state.
const IDLE_HTTP: u64 = 5 * 1024;
const AFTER_REQUEST_HTTP: u64 = 6 * 1024;
const IDLE_MEMCACHED: u64 = 4 * 1024;
const AFTER_REQUEST_MEMCACHED: u64 = 4608;

impl Figures {
    fn per_conn_bytes(&self, rss: u64) -> u64 {
        rss.saturating_sub(self.baseline) * 1024 / CONNS as u64
    }

    fn report(&self, what: &str) {
        eprintln!(
            "{what}: VmRSS baseline {} KiB; {CONNS} idle {} KiB ({} B each); after one request each {} KiB ({} B each); all closed {} KiB",
            self.baseline,
            self.idle,
            self.per_conn_bytes(self.idle),
            self.after_one_request,
            self.per_conn_bytes(self.after_one_request),
            self.closed
        );
    }

    fn check(&self, idle: u64, after_request: u64) {
        assert!(self.per_conn_bytes(self.idle) <= idle, "{self:?}");
        assert!(
            self.per_conn_bytes(self.after_one_request) <= after_request,
            "{self:?}"
        );
        assert!(self.closed <= self.baseline + CLOSED_MARGIN_KIB, "{self:?}");
    }
}

/// Floods `proxy` with idle connections: measures, makes each send `request(i)` and checks its
/// answer with `check(i, conn)`, keeps `other` working throughout, then closes them all.
fn flood(
    proxy: &Proxy,
    addr: SocketAddr,
    request: impl Fn(usize) -> Vec<u8>,
    check: impl Fn(usize, &mut BufReader<TcpStream>),
    other: impl Fn(),
) -> Figures {
    let pid = proxy.pid();
    other();
    wait_connections(proxy, 0);
    let baseline = settled_rss(pid);
    let conns = open_idle(addr, CONNS);
    wait_connections(proxy, CONNS as u64);
    let idle = settled_rss(pid);
    other();
    let mut conns: Vec<BufReader<TcpStream>> = conns.into_iter().map(BufReader::new).collect();
    // One at a time, so the backends behind walnut see a few connections, not 10,000.
    for (i, c) in conns.iter_mut().enumerate() {
        c.get_mut().write_all(&request(i)).unwrap();
        check(i, c);
    }
    let after_one_request = settled_rss(pid);
    other();
    drop(conns);
    wait_connections(proxy, 0);
    other();
    wait_connections(proxy, 0);
    let mut closed = u64::MAX;
    eventually(Duration::from_secs(30), || {
        closed = closed.min(vm_rss_kib(pid));
        closed <= baseline + CLOSED_MARGIN_KIB
    });
    Figures {
        baseline,
        idle,
        after_one_request,
        closed,
    }
}

/// Reads one HTTP response with a Content-Length body; returns the body.
fn read_http(r: &mut BufReader<TcpStream>) -> String {
    let mut len = 0;
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

#[test]
fn ten_thousand_idle_http_connections_cost_little_and_are_given_back() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit(CONNS as u64 + 1000);
    let backend = TestBackend::start();
    let config = format!(
        "web:\n  protocol: http\n  listen: {{listen}}\n  upstreams:\n    b:\n      servers: [\"{}\"]\n      keepalive: 8\n  locations:\n    - match: /\n      proxy_pass: b\n    - match: = /ping\n      return: \"200 pong\"\n",
        backend.addr
    );
    let walnut = Proxy::walnut(&config);
    let web = walnut.addr;
    let other = || {
        let mut c = HttpClient::connect(web);
        assert_eq!(c.get("/ping").text(), "pong");
        assert_eq!(c.get("/other").text(), "path=/other body=0\n");
    };
    let f = flood(
        &walnut,
        web,
        |i| format!("GET /c{i} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
        |i, c| assert_eq!(read_http(c), format!("path=/c{i} body=0\n")),
        other,
    );
    f.report("HTTP");
    f.check(IDLE_HTTP, AFTER_REQUEST_HTTP);
}

#[test]
fn ten_thousand_idle_memcached_connections_cost_little_and_are_given_back() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit(CONNS as u64 + 1000);
    let m = Memcached::start();
    let walnut = Proxy::walnut(&format!(
        "alpha:\n  listen: {{listen}}\n  servers:\n   - {}:1\n",
        m.address()
    ));
    walnut.client().set(b"k", b"v");
    let other = || {
        let mut c = walnut.client();
        assert_eq!(c.call(b"get k\r\n"), "VALUE k 0 1\r\nv\r\nEND\r\n");
    };
    let f = flood(
        &walnut,
        walnut.addr,
        |i| format!("set c{i} 0 0 {}\r\n{i}\r\n", i.to_string().len()).into_bytes(),
        |_, c| {
            let mut line = String::new();
            c.read_line(&mut line).unwrap();
            assert_eq!(line, "STORED\r\n");
        },
        other,
    );
    f.report("memcached");
    // Every value went where it belongs.
    let mut c = walnut.client();
    for i in (0..CONNS).step_by(997) {
        let v = i.to_string();
        let want = format!("VALUE c{i} 0 {}\r\n{v}\r\nEND\r\n", v.len());
        assert_eq!(c.call(format!("get c{i}\r\n").as_bytes()), want);
    }
    f.check(IDLE_MEMCACHED, AFTER_REQUEST_MEMCACHED);
}
