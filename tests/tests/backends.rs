//! Backend failure without ejection: a dead, hung or misbehaving server answers
//! `SERVER_ERROR <reason>` to exactly the requests that went to it, keys on other servers keep
//! working, multi-key gets report its keys as misses, and walnut keeps serving. Real memcached
//! for dead and hung servers; fake listeners only for garbage and connection resets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use walnut_tests::{Client, Memcached, Proxy, eventually, mc_keys_on, mc_pool};

const NO_EJECT: &str = "  timeout: 300\n  auto_eject_hosts: false\n";

/// walnut with one worker (one connection per server) over `addrs`, never ejecting.
fn walnut_over(addrs: &[String]) -> Proxy {
    Proxy::walnut_with(&mc_pool(addrs, NO_EJECT), &["-w", "1"])
}

/// One key per server of `n`, stored through walnut with the value `v-<key>`.
fn stored_keys(c: &mut Client, n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = mc_keys_on(n, i, 1, &format!("{tag}:{i}:"))[0].clone();
            c.set(key.as_bytes(), format!("v-{key}").as_bytes());
            key
        })
        .collect()
}

fn value(key: &str) -> String {
    let v = format!("v-{key}");
    format!("VALUE {key} 0 {}\r\n{v}\r\n", v.len())
}

/// A single `SERVER_ERROR <reason>\r\n` line.
fn is_server_error(reply: &str) -> bool {
    reply.starts_with("SERVER_ERROR ")
        && reply.len() > "SERVER_ERROR \r\n".len()
        && reply.ends_with("\r\n")
        && reply.matches('\n').count() == 1
}

const REFUSED: &str = "SERVER_ERROR Connection refused\r\n";

/// Kills `m2` and waits until walnut has noticed: a request to it is refused.
fn kill_and_wait(m: &mut Memcached, c: &mut Client, key: &str) {
    m.kill();
    let ok = eventually(Duration::from_secs(5), || {
        let reply = c.call(format!("get {key}\r\n").as_bytes());
        assert!(is_server_error(&reply), "while dying: {reply:?}");
        reply == REFUSED
    });
    assert!(ok, "requests to a killed server end up refused");
}

#[test]
fn a_dead_server_fails_exactly_the_requests_sent_to_it() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let mut servers = servers;
    let walnut = walnut_over(&addrs);
    let mut c = walnut.client();
    let k = stored_keys(&mut c, 3, "dead");
    kill_and_wait(&mut servers[1], &mut c, &k[1]);
    let (a, b, d) = (&k[0], &k[1], &k[2]);
    let mut req = String::new();
    let mut expected = String::new();
    let mut step = |r: String, e: String| {
        req.push_str(&r);
        expected.push_str(&e);
    };
    step(format!("set {a} 0 0 1\r\n1\r\n"), "STORED\r\n".into());
    step(format!("set {b} 0 0 1\r\n2\r\n"), REFUSED.into());
    step(format!("get {d}\r\n"), format!("{}END\r\n", value(d)));
    step(format!("get {b}\r\n"), REFUSED.into());
    step(format!("delete {b}\r\n"), REFUSED.into());
    step(format!("incr {b} 1\r\n"), REFUSED.into());
    step(format!("touch {b} 10\r\n"), REFUSED.into());
    step(format!("mg {b} v\r\n"), REFUSED.into());
    step(format!("ms {b} 1 q\r\nx\r\n"), REFUSED.into());
    step(format!("set {b} 0 0 1 noreply\r\n3\r\n"), String::new());
    step(format!("gets {b} {b}\r\n"), REFUSED.into());
    step(format!("add {d} 0 0 1\r\n4\r\n"), "NOT_STORED\r\n".into());
    step(
        format!("get {a}\r\n"),
        "VALUE ".to_string() + a + " 0 1\r\n1\r\nEND\r\n",
    );
    step("mn\r\n".into(), "MN\r\n".into());
    c.expect(req.as_bytes(), expected.as_bytes());
    // A new connection sees the same.
    let mut fresh = walnut.client();
    assert_eq!(fresh.call(format!("get {b}\r\n").as_bytes()), REFUSED);
    assert_eq!(
        fresh.call(format!("get {d}\r\n").as_bytes()),
        format!("{}END\r\n", value(d))
    );
    // Back on its port, the server is used again (it was never ejected).
    servers[1].restart();
    assert!(
        eventually(Duration::from_secs(5), || c
            .call(format!("set {b} 0 0 4\r\nback\r\n").as_bytes())
            == "STORED\r\n"),
        "the restarted server takes requests again"
    );
    assert_eq!(
        servers[1].client().get(b.as_bytes()).as_deref(),
        Some(&b"back"[..])
    );
}

#[test]
fn a_server_down_from_the_start_fails_only_its_requests() {
    // Nothing ever listens on mc2's port; preconnect must not stop walnut from starting.
    let m1 = Memcached::start();
    let dead = format!("127.0.0.1:{}", walnut_tests::free_port());
    let options = format!("{NO_EJECT}  preconnect: true\n");
    let walnut = Proxy::walnut_with(&mc_pool(&[m1.address(), dead], &options), &["-w", "1"]);
    let mut c = walnut.client();
    let good = mc_keys_on(2, 0, 2, "never:");
    let bad = mc_keys_on(2, 1, 2, "never:");
    for _ in 0..3 {
        c.expect(
            format!(
                "set {g} 0 0 1\r\nx\r\nset {b} 0 0 1\r\nx\r\nget {g} {b} {g2} {b2}\r\nget {b}\r\nmn\r\n",
                g = good[0],
                b = bad[0],
                g2 = good[1],
                b2 = bad[1]
            )
            .as_bytes(),
            format!(
                "STORED\r\n{REFUSED}VALUE {g} 0 1\r\nx\r\nEND\r\n{REFUSED}MN\r\n",
                g = good[0]
            )
            .as_bytes(),
        );
    }
}

#[test]
fn in_a_multi_get_a_dead_servers_keys_are_misses() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let mut servers = servers;
    let walnut = walnut_over(&addrs);
    let mut c = walnut.client();
    let k = stored_keys(&mut c, 3, "mget");
    let more = stored_keys(&mut c, 3, "mget2");
    kill_and_wait(&mut servers[1], &mut c, &k[1]);
    let list = [
        &k[0], &k[1], &k[2], &more[1], &more[0], &k[1], &more[2], &k[0],
    ];
    let mut expected = String::new();
    for key in list {
        if !key.contains(":1:") {
            expected.push_str(&value(key));
        }
    }
    expected.push_str("END\r\n");
    let keys: Vec<&str> = list.iter().map(|k| k.as_str()).collect();
    for cmd in ["get", "gat 0"] {
        c.expect(
            format!("{cmd} {}\r\n", keys.join(" ")).as_bytes(),
            expected.as_bytes(),
        );
    }
    // Every key on the dead server: its error, not an empty hit list.
    assert_eq!(
        c.call(format!("get {} {}\r\n", k[1], more[1]).as_bytes()),
        REFUSED
    );
}

#[test]
fn flush_all_with_a_dead_server_is_not_ok() {
    let mut m1 = Memcached::start();
    let m2 = Memcached::start();
    let walnut = walnut_over(&[m1.address(), m2.address()]);
    let mut c = walnut.client();
    let k = stored_keys(&mut c, 2, "flush");
    m1.kill();
    let reply = c.call(b"flush_all\r\n");
    assert!(is_server_error(&reply), "flush_all: {reply:?}");
    assert_eq!(
        m2.client().get(k[1].as_bytes()),
        None,
        "the live server was flushed"
    );
}

#[test]
fn a_hung_server_times_out_while_the_others_answer() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = walnut_over(&addrs);
    let mut c = walnut.client();
    let k = stored_keys(&mut c, 3, "hung");
    servers[1].pause();
    let timed_out = "SERVER_ERROR Connection timed out\r\n";

    let started = Instant::now();
    c.send(format!("get {}\r\n", k[1]).as_bytes());
    // Meanwhile another client uses the other servers at full speed.
    let mut other = walnut.client();
    for key in [&k[0], &k[2]] {
        other.set(key.as_bytes(), format!("v-{key}").as_bytes());
        assert_eq!(
            other.call(format!("get {key}\r\n").as_bytes()),
            format!("{}END\r\n", value(key))
        );
    }
    assert!(
        c.is_quiet_for(Duration::from_millis(1)),
        "the other client was answered before the hung request timed out"
    );
    assert_eq!(String::from_utf8_lossy(&c.read_replies(1)), timed_out);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(3),
        "the pool timeout (300 ms) was waited for: {waited:?}"
    );
    // A multi-get waits for the timeout, then answers the keys of the live servers.
    let started = Instant::now();
    c.expect(
        format!("get {} {} {}\r\nmg {} v\r\n", k[0], k[1], k[2], k[1]).as_bytes(),
        format!("{}{}END\r\n{timed_out}", value(&k[0]), value(&k[2])).as_bytes(),
    );
    assert!(started.elapsed() >= Duration::from_millis(280));
    // Several requests to it in one pipeline all time out, in order with the others.
    let v = value(&k[0]);
    c.expect(
        format!(
            "get {b}\r\ntouch {b} 0\r\nget {a}\r\nmg {b} v\r\nmn\r\n",
            a = k[0],
            b = k[1]
        )
        .as_bytes(),
        format!("{timed_out}{timed_out}{v}END\r\n{timed_out}MN\r\n").as_bytes(),
    );
    // Once it answers again, so do its keys.
    servers[1].resume();
    assert!(
        eventually(Duration::from_secs(5), || c
            .call(format!("get {}\r\n", k[1]).as_bytes())
            == format!("{}END\r\n", value(&k[1]))),
        "the resumed server answers again"
    );
}

#[test]
fn a_client_leaving_with_requests_in_flight_harms_no_one() {
    let servers: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let addrs: Vec<String> = servers.iter().map(Memcached::address).collect();
    let walnut = walnut_over(&addrs);
    let mut c = walnut.client();
    let k = stored_keys(&mut c, 3, "leave");
    servers[1].pause();
    for _ in 0..3 {
        let mut gone = walnut.client();
        gone.send(
            format!(
                "get {a} {b} {d}\r\ngets {b}\r\nget {b}\r\nget {a}\r\n",
                a = k[0],
                b = k[1],
                d = k[2]
            )
            .as_bytes(),
        );
        drop(gone);
    }
    // The others are served while those replies are still owed to nobody.
    for key in [&k[0], &k[2]] {
        assert_eq!(
            c.call(format!("get {key}\r\n").as_bytes()),
            format!("{}END\r\n", value(key))
        );
    }
    servers[1].resume();
    assert!(
        eventually(Duration::from_secs(5), || c
            .call(format!("get {}\r\n", k[1]).as_bytes())
            == format!("{}END\r\n", value(&k[1]))),
        "the server's keys work again"
    );
    let mut fresh = walnut.client();
    fresh.expect(
        format!("get {} {} {}\r\n", k[0], k[1], k[2]).as_bytes(),
        format!("{}{}{}END\r\n", value(&k[0]), value(&k[1]), value(&k[2])).as_bytes(),
    );
}

/// What a fake server does with each connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Answers every read with these bytes.
    Answer(&'static [u8]),
    /// Closes with the request unread, so the kernel resets the connection.
    Reset,
    /// Reads the request, then closes cleanly.
    Close,
}

/// A TCP listener standing in for a broken memcached; stops on drop.
struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    fn start(kind: Fake) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).expect("blocking");
                        std::thread::spawn(move || serve_fake(s, kind));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeServer { port, stop }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_fake(mut s: TcpStream, kind: Fake) {
    let mut buf = [0u8; 64 * 1024];
    match kind {
        Fake::Answer(bytes) => loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if s.write_all(bytes).is_err() {
                        return;
                    }
                }
            }
        },
        Fake::Reset => {
            // Wait for the request, leave it unread, close: Linux answers with a reset.
            let _ = s.peek(&mut buf);
        }
        Fake::Close => {
            let _ = s.read(&mut buf);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Pool of a real memcached (`mc1`) and `fake` (`mc2`): requests to mc2 keys get an error
/// accepted by `check`, mc1 keeps working, walnut keeps serving.
fn fake_backend_case(fake: Fake, check: impl Fn(&str) -> bool, what: &str) {
    let m1 = Memcached::start();
    let bad = FakeServer::start(fake);
    let walnut = walnut_over(&[m1.address(), bad.address()]);
    let mut c = walnut.client();
    let good = mc_keys_on(2, 0, 2, "fake:");
    let broken = mc_keys_on(2, 1, 2, "fake:");
    for round in 0..3 {
        for key in &good {
            c.set(key.as_bytes(), format!("v-{key}").as_bytes());
        }
        for key in &broken {
            let reply = c.call(format!("set {key} 0 0 1\r\nx\r\n").as_bytes());
            assert!(check(&reply), "{what}, round {round}: set {key}: {reply:?}");
            let reply = c.call(format!("get {key}\r\n").as_bytes());
            assert!(check(&reply), "{what}, round {round}: get {key}: {reply:?}");
        }
        // Multi-get over both: the broken server's keys are misses.
        c.expect(
            format!(
                "get {} {} {} {}\r\n",
                good[0], broken[0], good[1], broken[1]
            )
            .as_bytes(),
            format!("{}{}END\r\n", value(&good[0]), value(&good[1])).as_bytes(),
        );
        // A fresh connection works too.
        let mut fresh = walnut.client();
        assert_eq!(
            fresh.call(format!("get {}\r\n", good[0]).as_bytes()),
            format!("{}END\r\n", value(&good[0])),
            "{what}: walnut keeps serving"
        );
    }
}

#[test]
fn a_server_answering_garbage_lines_gets_server_error() {
    fake_backend_case(
        Fake::Answer(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"),
        is_server_error,
        "garbage lines",
    );
}

#[test]
fn a_server_answering_unframed_binary_gets_server_error() {
    static NOISE: [u8; 9000] = [0xa5; 9000];
    fake_backend_case(
        Fake::Answer(&NOISE),
        |r| r == "SERVER_ERROR Invalid reply from server\r\n",
        "binary noise",
    );
}

#[test]
fn a_server_answering_a_value_of_the_wrong_length_gets_server_error() {
    fake_backend_case(
        Fake::Answer(b"VALUE k 0 5\r\nmuch too long\r\nEND\r\n"),
        |r| r == "SERVER_ERROR Invalid reply from server\r\n",
        "broken value",
    );
}

#[test]
fn a_server_resetting_connections_gets_server_error() {
    fake_backend_case(
        Fake::Reset,
        |r| r == "SERVER_ERROR Connection reset by peer\r\n",
        "reset",
    );
}

#[test]
fn a_server_closing_connections_gets_server_error() {
    fake_backend_case(
        Fake::Close,
        |r| r == "SERVER_ERROR Connection closed by server\r\n",
        "close",
    );
}
