//! The per-request costs: decoding requests, placing keys, and one plugin hook call.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use walnut::config::{OnError, PluginSpec};
use walnut::hash::HashKind;
use walnut::http::body_phases::{Body, BodyStages};
use walnut::http::plugins::{HttpCall, HttpEdits, HttpVerdict};
use walnut::memcache::Decoder;
use walnut::plugin::{PoolPlugins, RequestTag, chain::PoolChains};
use walnut::ring::{Distribution, Ring, RingServer};
use walnut::stats::PoolStats;

fn decoding(c: &mut Criterion) {
    let key = "key:0000000000000000000000000042";
    let get = format!("get {key}\r\n").into_bytes();
    let mget: Vec<u8> = format!(
        "get{}\r\n",
        (0..10).map(|i| format!(" key:{i:028}")).collect::<String>()
    )
    .into_bytes();
    let set100 = [
        format!("set {key} 0 0 100\r\n").as_bytes(),
        &[b'v'; 100],
        b"\r\n",
    ]
    .concat();
    let set100k = [
        format!("set {key} 0 0 102400\r\n").as_bytes(),
        &vec![b'v'; 102_400],
        b"\r\n",
    ]
    .concat();
    for (name, wire) in [
        ("decode get", &get),
        ("decode get x10", &mget),
        ("decode set 100 B", &set100),
        ("decode set 100 KiB", &set100k),
    ] {
        let mut buf = BytesMut::with_capacity(wire.len());
        let mut decoder = Decoder::new(1 << 20, 32);
        c.bench_function(name, |b| {
            b.iter(|| {
                buf.extend_from_slice(wire);
                black_box(decoder.decode(&mut buf).expect("valid").expect("complete"));
            })
        });
    }
}

fn placement(c: &mut Criterion) {
    for n in [3usize, 1000] {
        let names: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:11211", i / 250, i % 250))
            .collect();
        let servers: Vec<RingServer> = names
            .iter()
            .enumerate()
            .map(|(i, s)| RingServer {
                name: s.as_bytes(),
                weight: 1 + (i % 3) as u32,
            })
            .collect();
        let ring = Ring::build(Distribution::Ketama, &servers, &[]);
        c.bench_function(&format!("ring lookup, {n} servers"), |b| {
            b.iter(|| {
                black_box(ring.locate(
                    HashKind::Fnv1a64,
                    None,
                    black_box(b"key:0000000000000000000000000042"),
                ))
            })
        });
        if n == 1000 {
            c.bench_function("ring build, 1000 weighted servers", |b| {
                b.iter(|| black_box(Ring::build(Distribution::Ketama, &servers, &[])))
            });
        }
    }
}

fn plugin_hook(c: &mut Criterion) {
    let dir = wasm_plugins(&["key-rewrite"]);
    let mut plugins = pool_plugins(
        &dir.join("key_rewrite.wasm"),
        r#"{"add":"tenant1:"}"#,
        "route",
    );
    // With its counters, as in a pool: the call is counted and timed.
    let stats = PoolStats::with_plugins(1, 1);
    c.bench_function("plugin hook: key rewrite of a 32-byte key", |b| {
        b.iter(|| {
            let req = walnut_sdk::abi::McRequest {
                command: b"get",
                key: black_box(b"key:0000000000000000000000000042"),
                flags: 0,
                exptime: 0,
                value_len: 0,
                meta_flags: b"",
            };
            black_box(plugins.request(&req, false, &stats))
        })
    });
}

/// Plugin crates `names` (examples and test plugins) built for wasm32 (release); the folder
/// holding their `.wasm`.
fn wasm_plugins(names: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root).args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
    ]);
    for n in names {
        cmd.args(["-p", n]);
    }
    let status = cmd.status().expect("run cargo build for the test plugins");
    assert!(status.success(), "building {names:?} failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm32-unknown-unknown/release")
}

/// A pool's plugins in one worker: the plugin at `path` with JSON `config`, on the pool
/// (`scope_kind`: "route" for memcached, "location" for HTTP).
fn pool_plugins(path: &Path, config: &str, scope_kind: &'static str) -> PoolPlugins {
    let spec = PluginSpec {
        path: path.to_path_buf(),
        config_json: config.into(),
        on_error: OnError::FailClosed,
        // Roomy: a loaded machine's descheduling must not count as a fault; the budget costs
        // nothing per call.
        time_budget: Duration::from_millis(100),
        memory_max: 16 << 20,
        line: 1,
    };
    let compiled = walnut::plugin::compile(&spec, "bench").expect("the plugin loads");
    let chains = PoolChains {
        pool: vec![compiled],
        routes: Vec::new(),
        scope_kind,
    };
    PoolPlugins::new("bench", &chains)
}

/// One HTTP request hook that sets one configured header, by a walnut-SDK plugin
/// (tests/plugins/http-rewrite: set X-Walnut, remove X-Drop, look at the path and X-Route)
/// and by an unmodified proxy-wasm filter (tests/plugins/pw-config: read :method, set the
/// header), each counted and timed as in a pool. The proxy-wasm figure holds the whole
/// per-request life of its context: create, request headers, done, log, delete.
fn http_hook(c: &mut Criterion) {
    // A fault's reason, should a call fail.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let dir = wasm_plugins(&["http-rewrite", "pw-config"]);
    let headers: [(&[u8], &[u8]); 4] = [
        (b"Host", b"example.com"),
        (b"User-Agent", b"curl/8.5.0"),
        (b"Accept", b"*/*"),
        (b"X-Request-Id", b"0123456789abcdef"),
    ];
    for (label, file, config) in [
        ("walnut-SDK plugin", "http_rewrite.wasm", r#"{"tag":"t1"}"#),
        (
            "proxy-wasm filter",
            "pw_config.wasm",
            r#"{"header":"x-walnut","value":"t1"}"#,
        ),
    ] {
        let mut plugins = pool_plugins(&dir.join(file), config, "location");
        let stats = PoolStats::with_plugins(1, 1);
        let mut edits = HttpEdits::default();
        let mut request = || {
            let tag = RequestTag::next(None);
            let call = HttpCall {
                location: None,
                method: "GET",
                path: black_box(b"/api/v1/users"),
                query: b"page=2",
                headers: || headers.iter().copied(),
                underscores: false,
                tag,
            };
            edits.clear();
            let verdict = plugins.http(&call, &mut edits, &stats);
            assert_eq!(verdict, HttpVerdict::Continue);
            plugins.http_done(None, tag, 200, &stats);
            assert!(
                edits.edited(b"x-walnut"),
                "{label} set the header: {edits:?}"
            );
        };
        request();
        c.bench_function(
            &format!("plugin hook: HTTP request, set one header, {label}"),
            |b| b.iter(&mut request),
        );
    }
}

/// One piece of a request body through an unmodified proxy-wasm filter's body phase, for the
/// piece sizes walnut reads (up to 64 KiB): tests/plugins/pw-body, observing (it reads the
/// piece and sums a checksum over it, then continues), and tests/plugins/pw-headers, whose
/// body callback is the SDK's own (it continues without reading): walnut's part.
fn body_phase(c: &mut Criterion) {
    let dir = wasm_plugins(&["pw-body", "pw-headers"]);
    let mut group = c.benchmark_group("proxy-wasm body phase");
    for (label, file) in [
        ("read and passed", "pw_body.wasm"),
        ("passed unread", "pw_headers.wasm"),
    ] {
        let mut plugins = pool_plugins(&dir.join(file), "{}", "location");
        let stats = PoolStats::with_plugins(1, 1);
        let mut edits = HttpEdits::default();
        let tag = RequestTag::next(None);
        let headers: [(&[u8], &[u8]); 2] = [(b"Host", b"example.com"), (b"Content-Length", b"1")];
        let call = HttpCall {
            location: None,
            method: "POST",
            path: b"/upload",
            query: b"",
            headers: || headers.iter().copied(),
            underscores: false,
            tag,
        };
        assert_eq!(
            plugins.http(&call, &mut edits, &stats),
            HttpVerdict::Continue
        );
        let mut stages = BodyStages::default();
        let body = Body {
            location: None,
            tag,
            response: false,
            fixed: true,
            underscores: false,
        };
        for size in [1024, 64 * 1024] {
            let data = vec![b'a'; size];
            group.throughput(Throughput::Bytes(size as u64));
            let name = format!("one {} KiB piece, {label}", size / 1024);
            group.bench_function(name, |b| {
                b.iter(|| {
                    plugins
                        .http_body(&body, (black_box(&data), false), &mut stages, &stats)
                        .expect("the filter passes the piece");
                    assert_eq!(stages.passed().len(), size);
                })
            });
        }
        plugins.http_done(None, tag, 200, &stats);
    }
    group.finish();
}

/// What the request-latency metric costs a memcached request: a clock read when it is queued,
/// one when its reply is written (per batch; here per request, the worst case), and a bucket.
fn latency_metric(c: &mut Criterion) {
    let h = walnut::stats::Histogram::new(walnut::stats::REQUEST_BOUNDS_NS);
    c.bench_function("latency metric: two clock reads and one observation", |b| {
        b.iter(|| {
            let start = std::time::Instant::now();
            h.observe(black_box(start), std::time::Instant::now());
        })
    });
}

criterion_group!(
    benches,
    decoding,
    placement,
    plugin_hook,
    http_hook,
    body_phase,
    latency_metric
);
criterion_main!(benches);
