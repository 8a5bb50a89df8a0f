//! The memcached core in-process: a client session, its pool and its server connections run in
//! this test's own runtime against scripted servers on loopback (no walnut binary, no
//! memcached), so orderings a real server cannot produce on demand are checked exactly.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::watch;
use walnut::config::Config;
use walnut::net::Stream;
use walnut::pool::{PoolShared, WorkerPool};
use walnut::shutdown::{Shutdown, ShutdownTrigger};
use walnut::stats::{PoolNames, Registry};
use walnut_tests::plugin_dir;

/// A scripted memcached: `get`s are answered with `v:<key>` for every key, sets with
/// `STORED`, each only while its gate is open; `mn` gets `ERROR` (so it is asked classically).
/// Every request line it reads is kept.
struct FakeServer {
    addr: SocketAddr,
    gate: watch::Sender<bool>,
    seen: Rc<RefCell<Vec<String>>>,
}

impl FakeServer {
    async fn start(open: bool) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (gate, rx) = watch::channel(open);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&seen);
        tokio::task::spawn_local(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::task::spawn_local(serve_fake(conn, rx.clone(), Rc::clone(&log)));
            }
        });
        FakeServer { addr, gate, seen }
    }

    fn open(&self) {
        let _ = self.gate.send(true);
    }

    /// The request lines it read (the `mn` probe left out).
    fn lines(&self) -> Vec<String> {
        let seen = self.seen.borrow();
        seen.iter().filter(|l| *l != "mn").cloned().collect()
    }
}

async fn serve_fake(
    conn: tokio::net::TcpStream,
    mut gate: watch::Receiver<bool>,
    seen: Rc<RefCell<Vec<String>>>,
) {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    while r.read_line(&mut line).await.is_ok_and(|n| n > 0) {
        let request = line.trim_end().to_owned();
        line.clear();
        seen.borrow_mut().push(request.clone());
        let words: Vec<&str> = request.split(' ').collect();
        let reply = match words[0] {
            "mn" => "ERROR\r\n".to_owned(),
            "get" => {
                let mut out = String::new();
                for key in &words[1..] {
                    let value = format!("v:{key}");
                    out.push_str(&format!("VALUE {key} 0 {}\r\n{value}\r\n", value.len()));
                }
                out + "END\r\n"
            }
            "set" => {
                let len: usize = words[4].parse().expect("length");
                let mut data = vec![0u8; len + 2];
                if r.read_exact(&mut data).await.is_err() {
                    return;
                }
                "STORED\r\n".to_owned()
            }
            _ => "ERROR\r\n".to_owned(),
        };
        if words[0] != "mn" && gate.wait_for(|&open| open).await.is_err() {
            return;
        }
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A port nothing listens on: connecting to it is refused.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// One worker's view of the pool `alpha` over `servers` (named s0, s1, ...), with `options`
/// (pool keys, each `  key: value\n`), its plugins loaded.
fn pool(servers: &[SocketAddr], options: &str) -> Rc<WorkerPool> {
    let mut yaml = format!("alpha:\n  listen: 127.0.0.1:1\n  timeout: 2000\n{options}  servers:\n");
    for (i, s) in servers.iter().enumerate() {
        yaml.push_str(&format!("   - {s}:1 s{i}\n"));
    }
    let dir = walnut_tests::temp_dir("core");
    let config = Config::parse(&yaml, &dir.join("core.yml")).expect("config");
    let loaded = walnut::plugin::load(config).expect("plugins load");
    let walnut::plugin::McPool { config, chains } =
        loaded.memcache.into_iter().next().expect("a pool");
    let shared = PoolShared::new(0, config, chains);
    let registry = Arc::new(Registry::new(
        vec![PoolNames {
            name: "alpha".into(),
            servers: shared.names.to_vec(),
            plugins: shared.plugins.labels(),
        }],
        1,
    ));
    let stats = Arc::clone(&registry.workers[0][0]);
    WorkerPool::new(shared, stats, registry)
}

/// A client connection to `pool`: the session serves one end of a socket pair, the test holds
/// the other. The trigger keeps shutdown from starting while the test runs.
fn client(pool: &Rc<WorkerPool>, id: usize) -> (UnixStream, ShutdownTrigger) {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let (trigger, shutdown) = Shutdown::new();
    let current = walnut::current::Current::new(Rc::clone(pool));
    tokio::task::spawn_local(walnut::session::serve(
        Stream::Unix(theirs),
        current,
        id,
        shutdown,
    ));
    (ours, trigger)
}

/// Reads until `expected` bytes came, or fails after a few seconds.
async fn read_exactly(c: &mut UnixStream, expected: usize) -> String {
    let mut buf = vec![0u8; expected];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .expect("the replies come")
        .expect("read");
    String::from_utf8(buf).expect("text")
}

/// Keys `k0`, `k1`, ... that `pool` places on `server`, `n` of them.
fn keys_on(pool: &WorkerPool, server: usize, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| pool.place(k.as_bytes()) == Ok(server))
        .take(n)
        .collect()
}

/// The ring of servers s0..s{n-1} with `dead` ejected.
fn ring_without(n: usize, dead: usize) -> walnut::ring::Ring {
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let servers: Vec<walnut::ring::RingServer> = names
        .iter()
        .map(|n| walnut::ring::RingServer {
            name: n.as_bytes(),
            weight: 1,
        })
        .collect();
    let live: Vec<bool> = (0..n).map(|i| i != dead).collect();
    walnut::ring::Ring::build(walnut::ring::Distribution::Ketama, &servers, &live)
}

/// Keys on server 2 of 3 that move to `to` once server 2 is out of the ring, `n` of them.
fn moving_to(pool: &WorkerPool, to: usize, n: usize) -> Vec<String> {
    let after = ring_without(3, 2);
    (0..)
        .map(|i| format!("m{i}"))
        .filter(|k| pool.place(k.as_bytes()) == Ok(2))
        .filter(|k| after.locate(walnut::hash::HashKind::Fnv1a64, None, k.as_bytes()) == Some(to))
        .take(n)
        .collect()
}

fn value(key: &str) -> String {
    let v = format!("v:{key}");
    format!("VALUE {key} 0 {}\r\n{v}\r\n", v.len())
}

fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, test);
}

#[test]
fn replies_leave_in_the_clients_order_when_servers_answer_out_of_order() {
    run(async {
        let slow = FakeServer::start(false).await;
        let fast = FakeServer::start(true).await;
        let pool = pool(&[slow.addr, fast.addr], "");
        let (a, b) = (&keys_on(&pool, 0, 1)[0], &keys_on(&pool, 1, 1)[0]);
        let (mut c, _keep) = client(&pool, 1);
        c.write_all(format!("get {a}\r\nget {b}\r\n").as_bytes())
            .await
            .unwrap();
        // The fast server has answered the second request...
        while fast.lines().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...but nothing reaches the client before the first one's reply.
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), c.read(&mut byte))
                .await
                .is_err(),
            "a reply overtook the one before it"
        );
        slow.open();
        let expected = format!("{}END\r\n{}END\r\n", value(a), value(b));
        assert_eq!(read_exactly(&mut c, expected.len()).await, expected);
    });
}

/// A pool of two live servers and one that refuses connections, ejected at its first failure.
const EJECT_AT_ONCE: &str =
    "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n";

#[test]
fn a_split_retrieval_whose_server_is_ejected_is_split_again_over_the_live_ones() {
    run(async {
        let (s0, s1) = (FakeServer::start(true).await, FakeServer::start(true).await);
        let pool = pool(&[s0.addr, s1.addr, dead_addr().await], EJECT_AT_ONCE);
        // Keys on every server, interleaved; the dead server's keys move to both others.
        let (k0, k1) = (keys_on(&pool, 0, 6), keys_on(&pool, 1, 6));
        let k2: Vec<String> = [moving_to(&pool, 0, 3), moving_to(&pool, 1, 3)].concat();
        let keys: Vec<&String> = (0..6).flat_map(|i| [&k2[i], &k0[i], &k1[i]]).collect();
        let (mut c, _keep) = client(&pool, 1);
        let line = keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        c.write_all(format!("get {line}\r\n").as_bytes())
            .await
            .unwrap();
        let expected: String = keys.iter().map(|k| value(k)).collect::<String>() + "END\r\n";
        assert_eq!(read_exactly(&mut c, expected.len()).await, expected);
        assert!(pool.shared.health[2].is_ejected());
        // The dead server's keys went to their new owners, the ring's choice without it.
        let asked = |s: &FakeServer| {
            s.lines()
                .join(" ")
                .split(' ')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        for (i, k) in k2.iter().enumerate() {
            let owner = if i < 3 { &s0 } else { &s1 };
            assert!(asked(owner).contains(k), "{k} was asked of its new owner");
        }
    });
}

#[test]
fn a_whole_retrieval_whose_server_is_ejected_is_split_over_the_live_ones() {
    run(async {
        let (s0, s1) = (FakeServer::start(true).await, FakeServer::start(true).await);
        let pool = pool(&[s0.addr, s1.addr, dead_addr().await], EJECT_AT_ONCE);
        // Every key on the dead server: the request goes there whole, as the client sent it.
        let keys: Vec<String> = [moving_to(&pool, 1, 2), moving_to(&pool, 0, 3)].concat();
        let (mut c, _keep) = client(&pool, 1);
        c.write_all(format!("get {}\r\n", keys.join(" ")).as_bytes())
            .await
            .unwrap();
        let expected: String = keys.iter().map(|k| value(k)).collect::<String>() + "END\r\n";
        assert_eq!(read_exactly(&mut c, expected.len()).await, expected);
        assert!(
            !s0.lines().is_empty() && !s1.lines().is_empty(),
            "split over both"
        );
    });
}

#[test]
fn a_request_that_reached_a_failing_server_gets_the_error_and_the_next_goes_elsewhere() {
    run(async {
        // This server reads a request, then closes without answering.
        let closer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closer_addr = closer.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            while let Ok((mut conn, _)) = closer.accept().await {
                let mut buf = [0u8; 64];
                let _ = conn.read(&mut buf).await;
            }
        });
        let live = FakeServer::start(true).await;
        let pool = pool(&[live.addr, closer_addr], EJECT_AT_ONCE);
        let key = &keys_on(&pool, 1, 1)[0];
        let (mut c, _keep) = client(&pool, 1);
        c.write_all(format!("get {key}\r\n").as_bytes())
            .await
            .unwrap();
        let error = "SERVER_ERROR Connection closed by server\r\n";
        assert_eq!(read_exactly(&mut c, error.len()).await, error);
        assert!(
            live.lines().is_empty(),
            "a request that may have been served is not sent twice"
        );
        c.write_all(format!("get {key}\r\n").as_bytes())
            .await
            .unwrap();
        let expected = value(key) + "END\r\n";
        assert_eq!(read_exactly(&mut c, expected.len()).await, expected);
    });
}

/// A plugin entry for `routes:` or `plugins:`, indented by `pad`.
fn plugin(pad: &str, name: &str, config: &str, extra: &str) -> String {
    let path = plugin_dir(&[&name.replace('_', "-")]).join(format!("{name}.wasm"));
    format!(
        "{pad}- path: {}\n{pad}  config: {config}\n{extra}",
        path.display()
    )
}

#[test]
fn a_key_a_plugin_places_is_placed_the_same_way_when_re_sent() {
    run(async {
        let (s0, s1) = (FakeServer::start(true).await, FakeServer::start(true).await);
        let s2 = dead_addr().await;
        let plugins = format!(
            "  plugins:\n{}",
            plugin("   ", "hash_select", "{ until: \"|\" }", "")
        );
        let pool = pool(
            &[s0.addr, s1.addr, s2],
            &format!("{EJECT_AT_ONCE}{plugins}"),
        );
        // Tenants whose name the ring puts on the dead server, and whose full keys it would
        // put somewhere else than the name once that server is out.
        let ring_without_2 = ring_without(3, 2);
        let locate = |k: &str| {
            ring_without_2
                .locate(walnut::hash::HashKind::Fnv1a64, None, k.as_bytes())
                .unwrap()
        };
        let (tenant, key) = (0..)
            .map(|i| (format!("user{i}"), format!("user{i}|1|name")))
            .find(|(t, k)| pool.place(k.as_bytes()) == Ok(2) && locate(k) != locate(t))
            .unwrap();
        let (mut c, _keep) = client(&pool, 1);
        c.write_all(format!("set {key} 0 0 1\r\nx\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(read_exactly(&mut c, 8).await, "STORED\r\n");
        let owner = [&s0, &s1][locate(&tenant)];
        assert!(
            owner
                .lines()
                .iter()
                .any(|l| l.starts_with(&format!("set {key} "))),
            "re-sent to {tenant}'s server on the live ring"
        );
        assert_eq!(pool.place(key.as_bytes()), Ok(locate(&tenant)));
    });
}

#[test]
fn plugin_faults_fail_their_request_by_policy_and_are_counted() {
    run(async {
        let server = FakeServer::start(true).await;
        let budget = "        time_budget_ms: 20\n";
        let routes = format!(
            "  routes:\n   - prefix: \"bad:\"\n     plugins:\n{}   - prefix: \"open:\"\n     plugins:\n{}",
            plugin("      ", "misbehave", "{}", budget),
            plugin(
                "      ",
                "misbehave",
                "{}",
                &format!("        on_error: fail_open\n{budget}")
            ),
        );
        let pool = pool(&[server.addr], &routes);
        let (mut c, _keep) = client(&pool, 1);
        let failed = "SERVER_ERROR plugin failed\r\n";
        // fail_closed: the request fails; the next one on the same connection is served.
        for bad in ["bad:trap", "bad:loop"] {
            c.write_all(format!("get {bad}\r\nget bad:ok\r\n").as_bytes())
                .await
                .unwrap();
            let expected = format!("{failed}{}END\r\n", value("bad:ok"));
            assert_eq!(
                read_exactly(&mut c, expected.len()).await,
                expected,
                "{bad}"
            );
        }
        // fail_open: the request goes on as if the plugin were absent.
        c.write_all(b"get open:trap\r\n").await.unwrap();
        let expected = value("open:trap") + "END\r\n";
        assert_eq!(read_exactly(&mut c, expected.len()).await, expected);
        assert_eq!(pool.stats.pool.plugin_errors.get(), 3);
        let asked = server.lines();
        assert!(
            !asked
                .iter()
                .any(|l| l.contains("bad:trap") || l.contains("bad:loop")),
            "refused requests never reach the server: {asked:?}"
        );
    });
}
