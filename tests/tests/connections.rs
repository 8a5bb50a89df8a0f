//! Client connections are counted the same way for both protocols: the stats JSON's process
//! counters (`total_connections`, `curr_connections`) and each pool's `client_connections`
//! include HTTP clients as well as memcached ones.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use walnut_tests::{Memcached, Proxy, eventually, free_port};

/// The number after `"name":` in the first place it appears after `from` in `json`.
fn field(json: &str, from: &str, name: &str) -> u64 {
    let start = json
        .find(from)
        .unwrap_or_else(|| panic!("{from} in {json}"));
    let rest = &json[start..];
    let at = rest.find(&format!("\"{name}\":")).expect("field") + name.len() + 3;
    rest[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

/// An HTTP/1.1 request on `s`, and the status line of its answer.
fn http_get(s: &mut TcpStream) -> String {
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn http_clients_are_counted_with_memcached_clients() {
    let m = Memcached::start();
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "alpha:\n  listen: {{listen}}\n  servers:\n   - {}:1\nweb:\n  protocol: http\n  listen: {web}\n  locations:\n    - match: /ping\n      return: \"200 pong\"\n",
        m.address()
    );
    let walnut = Proxy::walnut(&config);
    // The harness's own check that walnut listens was a connection too: wait until it is
    // counted in and out.
    let probed = || {
        let json = walnut.stats_json();
        let total = field(&json, "{", "total_connections");
        (total >= 1 && field(&json, "{", "curr_connections") == 0).then_some(total)
    };
    assert!(eventually(Duration::from_secs(5), || probed().is_some()));
    let before = probed().expect("settled");
    let mut mc: Vec<_> = (0..2).map(|_| walnut.client()).collect();
    for c in &mut mc {
        assert_eq!(c.call(b"version\r\n").split(' ').next(), Some("VERSION"));
    }
    let mut http: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(web).expect("connect to the http pool"))
        .collect();
    for s in &mut http {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(http_get(s), "HTTP/1.1 200 OK");
    }
    let json = walnut.stats_json();
    assert_eq!(field(&json, "{", "total_connections"), before + 5, "{json}");
    assert_eq!(field(&json, "{", "curr_connections"), 5, "{json}");
    assert_eq!(field(&json, "\"alpha\"", "client_connections"), 2, "{json}");
    assert_eq!(field(&json, "\"web\"", "client_connections"), 3, "{json}");
    // Two HTTP clients leave: counted out, whichever worker served them.
    http.truncate(1);
    mc.truncate(1);
    let settled = eventually(Duration::from_secs(5), || {
        let json = walnut.stats_json();
        field(&json, "{", "curr_connections") == 2
            && field(&json, "\"web\"", "client_connections") == 1
    });
    let json = walnut.stats_json();
    assert!(settled, "{json}");
    assert_eq!(field(&json, "{", "total_connections"), before + 5, "{json}");
    assert_eq!(field(&json, "\"alpha\"", "client_connections"), 1, "{json}");
}
