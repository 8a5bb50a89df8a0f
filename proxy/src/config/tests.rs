//! Tests of config loading: every key, the defaults, each refusal with its line, real files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("conf/x.yml"))
}

#[track_caller]
fn parsed(text: &str) -> Config {
    parse(text).unwrap_or_else(|err| panic!("refused: {err}\n{text}"))
}

#[track_caller]
fn refused(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted: {config:?}\n{text}"),
        Err(err) => err.to_string(),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A pool with every key (but `redis_auth`, which only a Redis pool may have).
const EVERY_KEY: &str = "\
alpha:
  listen: 127.0.0.1:22121
  hash: murmur
  hash_tag: \"{}\"
  distribution: modula
  timeout: 400
  backlog: 1024
  client_connections: 100
  redis: false
  redis_db: 3
  preconnect: true
  auto_eject_hosts: true
  server_connections: 2
  server_retry_timeout: 2000
  server_failure_limit: 3
  tcpkeepalive: true
  item_size_max: 2097152
  client_buffer: 8388608
  servers:
   - 127.0.0.1:11211:1
   - 127.0.0.1:11212:2 second
";

#[test]
fn every_key_is_read() {
    let config = parsed(EVERY_KEY);
    assert_eq!(config.path, PathBuf::from("conf/x.yml"));
    let [pool] = &config.pools[..] else {
        panic!("{config:?}")
    };
    assert_eq!(pool.name, "alpha");
    assert_eq!(pool.line, 1);
    assert_eq!(
        pool.listen,
        Listen::Tcp {
            host: "127.0.0.1".into(),
            port: 22121,
            addr: addr("127.0.0.1:22121")
        }
    );
    assert_eq!(pool.hash, HashKind::Murmur);
    assert_eq!(pool.hash_tag, Some(*b"{}"));
    assert_eq!(pool.distribution, Distribution::Modula);
    assert_eq!(pool.timeout, Some(Duration::from_millis(400)));
    assert_eq!(pool.backlog, 1024);
    assert_eq!(pool.client_connections, 100);
    assert!(pool.preconnect);
    assert!(pool.auto_eject_hosts);
    assert_eq!(pool.server_connections, 2);
    assert_eq!(pool.server_retry_timeout, Duration::from_millis(2000));
    assert_eq!(pool.server_failure_limit, 3);
    assert!(pool.tcpkeepalive);
    assert_eq!(pool.item_size_max, 2 << 20);
    assert_eq!(pool.client_buffer, 8 << 20);
    assert_eq!(
        pool.servers,
        vec![
            ServerSpec {
                addr: ServerAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 11211,
                    addr: addr("127.0.0.1:11211")
                },
                weight: 1,
                name: None,
                addr_text: "127.0.0.1:11211".into(),
                line: 20,
            },
            ServerSpec {
                addr: ServerAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 11212,
                    addr: addr("127.0.0.1:11212")
                },
                weight: 2,
                name: Some("second".into()),
                addr_text: "127.0.0.1:11212".into(),
                line: 21,
            },
        ]
    );
}

#[test]
fn defaults_are_nutcrackers() {
    let config = parsed("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n");
    let pool = &config.pools[0];
    assert_eq!(pool.hash, HashKind::Fnv1a64);
    assert_eq!(pool.hash_tag, None);
    assert_eq!(pool.distribution, Distribution::Ketama);
    assert_eq!(pool.timeout, None);
    assert_eq!(pool.backlog, 512);
    assert_eq!(pool.client_connections, 0);
    assert!(!pool.preconnect);
    assert!(!pool.auto_eject_hosts);
    assert_eq!(pool.server_connections, 1);
    assert_eq!(pool.server_retry_timeout, Duration::from_secs(30));
    assert_eq!(pool.server_failure_limit, 2);
    assert!(!pool.tcpkeepalive);
    assert_eq!(pool.item_size_max, 1 << 20);
    assert_eq!(pool.client_buffer, 64 << 20);
    assert_eq!(pool.servers[0].line, 4);
}

#[test]
fn values_are_read_as_written() {
    let config = parsed(
        "\"alpha\":\n  listen: '127.0.0.1:022121'\n  timeout: 0\n  preconnect: \"true\"\n  \
         hash_tag: ab\n  servers:\n   - \"127.0.0.1:11211:01\" # one\n",
    );
    let pool = &config.pools[0];
    assert_eq!(pool.name, "alpha");
    // nutcracker arms no timer for 0.
    assert_eq!(pool.timeout, None);
    assert!(pool.preconnect);
    assert_eq!(pool.hash_tag, Some(*b"ab"));
    assert_eq!(pool.servers[0].weight, 1);
    assert_eq!(pool.servers[0].line, 7);
    let Listen::Tcp { port, .. } = pool.listen else {
        panic!()
    };
    assert_eq!(port, 22121);
}

#[test]
fn every_refusal_names_file_line_pool_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  hsh: md5\n",
            "conf/x.yml:3: pool \"alpha\": unknown key \"hsh\"",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n\n\n  hash: fnv2\n",
            "conf/x.yml:7: pool \"alpha\": hash \"fnv2\" is not one of one_at_a_time, md5, crc16, \
             crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins",
        ),
        (
            "# pools\n\nalpha:\n  listen: 127.0.0.1:22121\n  hash: md5\n  distribution: ketama\n  \
             timeout: 400\n  servers:\n   - 127.0.0.1:11211:1\n   - 127.0.0.1:11212:1\n   \
             # the next one\n   - 127.0.0.1:11211\n",
            "conf/x.yml:12: pool \"alpha\": servers: \"127.0.0.1:11211\" is not \
             host:port:weight [name] or /path.sock:weight [name]",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  distribution: Ketama\n",
            "conf/x.yml:3: pool \"alpha\": distribution \"Ketama\" is not one of ketama, modula, random",
        ),
        (
            "alpha:\n  servers:\n   - 127.0.0.1:11211:1\n",
            "conf/x.yml:1: pool \"alpha\": missing listen (host:port or /path.sock [mode])",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\nbeta:\n  listen: 127.0.0.1:22122\n",
            "conf/x.yml:1: pool \"alpha\": missing servers (a list of host:port:weight [name])",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  hash: md5\n  hash: crc32\n",
            "conf/x.yml:4: pool \"alpha\": hash is given twice (first on line 3)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  hash:\n",
            "conf/x.yml:3: pool \"alpha\": hash has no value",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  hash_tag: \"{\"\n",
            "conf/x.yml:3: pool \"alpha\": hash_tag \"{\" is not exactly two bytes, e.g. \"{}\"",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  timeout: -1\n",
            "conf/x.yml:3: pool \"alpha\": timeout \"-1\" is not a whole number from 0 to 2147483647",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  backlog: 2147483648\n",
            "conf/x.yml:3: pool \"alpha\": backlog \"2147483648\" is not a whole number from 0 to 2147483647",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  preconnect: yes\n",
            "conf/x.yml:3: pool \"alpha\": preconnect \"yes\" is not true or false",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  auto_eject_hosts: True\n",
            "conf/x.yml:3: pool \"alpha\": auto_eject_hosts \"True\" is not true or false",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  server_connections: 0\n",
            "conf/x.yml:3: pool \"alpha\": server_connections cannot be 0",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  item_size_max: 1023\n",
            "conf/x.yml:3: pool \"alpha\": item_size_max 1023 is not between 1024 and 1073741824 bytes",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  item_size_max: 2097152\n  client_buffer: 4194303\n  servers:\n   - 127.0.0.1:11211:1\n",
            "conf/x.yml:4: pool \"alpha\": client_buffer 4194303 is less than twice item_size_max (2097152)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  redis_auth: secret\n  servers:\n   - 127.0.0.1:11211:1\n",
            "conf/x.yml:3: pool \"alpha\": redis_auth is only valid for a redis pool",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  hash: nope\n  redis: true\n",
            "conf/x.yml:4: pool \"alpha\": redis: true: Redis pools are not supported; walnut \
             proxies memcached only",
        ),
        (
            "alpha:\n  listen: 127.0.0.1\n",
            "conf/x.yml:2: pool \"alpha\": listen \"127.0.0.1\" is not host:port or /path.sock [mode]",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:65536\n",
            "conf/x.yml:2: pool \"alpha\": listen \"127.0.0.1:65536\" has an invalid port (expected 1 to 65535)",
        ),
        (
            "alpha:\n  listen: /tmp/walnut.sock 1777\n",
            "conf/x.yml:2: pool \"alpha\": listen \"/tmp/walnut.sock 1777\" has an invalid permission \
             (expected octal, at most 0777)",
        ),
        (
            "alpha:\n  listen: tmp/walnut.sock\n",
            "conf/x.yml:2: pool \"alpha\": listen \"tmp/walnut.sock\" is not host:port or /path.sock [mode]",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n",
            "conf/x.yml:3: pool \"alpha\": servers: the list is empty",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:0\n",
            "conf/x.yml:4: pool \"alpha\": servers: \"127.0.0.1:11211:0\" has weight 0 (expected 1 or more)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1 a b\n",
            "conf/x.yml:4: pool \"alpha\": servers: \"127.0.0.1:11211:1 a b\" has an invalid weight \
             (expected a whole number from 1 to 2147483647)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:0:1\n",
            "conf/x.yml:4: pool \"alpha\": servers: \"127.0.0.1:0:1\" has an invalid port (expected 1 to 65535)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - /tmp/a:b.sock:1\n",
            "conf/x.yml:4: pool \"alpha\": servers: \"/tmp/a:b.sock:1\" is not \
             host:port:weight [name] or /path.sock:weight [name]",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n   - 127.0.0.1:11211:2\n",
            "conf/x.yml:5: pool \"alpha\": servers: \"127.0.0.1:11211:2\" has the same name \"127.0.0.1\" \
             as the server on line 4 (add a distinct name after the weight)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1 a\n   - 127.0.0.1:11212:1 a\n",
            "conf/x.yml:5: pool \"alpha\": servers: \"127.0.0.1:11212:1 a\" has the same name \"a\" \
             as the server on line 4 (add a distinct name after the weight)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers: 127.0.0.1:11211:1\n",
            "conf/x.yml:3: pool \"alpha\": servers must be a list of \"host:port:weight [name]\" entries",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n   - a: b\n",
            "conf/x.yml:5: pool \"alpha\": servers: each entry must be one \"host:port:weight [name]\" value",
        ),
        (
            "alpha:\n  listen:\n   - 127.0.0.1:22121\n",
            "conf/x.yml:2: pool \"alpha\": listen must be a single value, not a list or mapping",
        ),
        (
            "alpha: 127.0.0.1:22121\n",
            "conf/x.yml:1: pool \"alpha\": expected its keys (listen:, servers:, ...) indented below it",
        ),
        (
            "- alpha\n",
            "conf/x.yml:1: expected pools: each pool's name followed by its indented keys (listen:, servers:, ...)",
        ),
        (
            "# nothing yet\n",
            "conf/x.yml:1: no pools: expected a pool name followed by its indented keys (listen:, servers:, ...)",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\nalpha:\n  listen: 127.0.0.1:22122\n",
            "conf/x.yml:5: pool \"alpha\": a pool of this name is already on line 1",
        ),
        (
            "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n\
             beta:\n  servers:\n   - 127.0.0.1:11212:1\n  listen: 127.0.0.1:22121\n",
            "conf/x.yml:8: pool \"beta\": listen \"127.0.0.1:22121\" is the address pool \"alpha\" listens on (line 1)",
        ),
        (
            "alpha:\n  listen: /tmp/walnut.sock\n  servers:\n   - 127.0.0.1:11211:1\n\
             beta:\n  listen: /tmp/walnut.sock 0666\n  servers:\n   - 127.0.0.1:11212:1\n",
            "conf/x.yml:6: pool \"beta\": listen \"/tmp/walnut.sock 0666\" is the address pool \"alpha\" \
             listens on (line 1)",
        ),
        (
            "'':\n  listen: 127.0.0.1:22121\n",
            "conf/x.yml:1: pool \"\": a pool needs a name",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(refused(text), *expected, "\n{text}");
    }
}

#[test]
fn a_yaml_syntax_error_gives_its_line() {
    let message = refused("alpha:\n  listen: 127.0.0.1:22121\n   hash: md5\n  servers: []\n");
    assert!(
        message.starts_with("conf/x.yml:3: mapping values are not allowed"),
        "{message}"
    );
    // libyaml finds the quote unclosed at the end of the text, after the last line: the
    // message names the last line the file has.
    let message = refused("alpha:\n  listen: \"127.0.0.1:22121\n  hash: md5\n");
    assert!(message.starts_with("conf/x.yml:3: "), "{message}");
    let message = refused("alpha:\n  listen: \"127.0.0.1:22121\n  hash: md5");
    assert!(message.starts_with("conf/x.yml:3: "), "{message}");
}

#[test]
fn an_offline_check_looks_no_name_up() {
    let text = |host: &str| {
        format!("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - \"{host}:11211:1\"\n")
    };
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        let parsed = Config::parse_offline(&text(host), Path::new("conf/x.yml"));
        assert!(parsed.is_ok(), "{host}: {parsed:?}");
    }
    let message = Config::parse_offline(&text("cache.example"), Path::new("conf/x.yml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "conf/x.yml:4: pool \"alpha\": servers: \"cache.example:11211:1\" cannot be resolved: \"cache.example\" is not looked up in an offline check"
    );
}

#[test]
fn an_unresolvable_host_is_refused() {
    let message = refused("alpha:\n  listen: :22121\n");
    assert!(
        message.starts_with("conf/x.yml:2: pool \"alpha\": listen \":22121\" cannot be resolved: "),
        "{message}"
    );
    let message = refused("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - :11211:1\n");
    assert!(
        message.starts_with(
            "conf/x.yml:4: pool \"alpha\": servers: \":11211:1\" cannot be resolved: "
        ),
        "{message}"
    );
}

#[test]
fn lines_are_right_when_values_span_lines() {
    // The quick line scan gives up on these; each node is then located through serde_yaml.
    let folded = "\
alpha:
  listen: >-
    127.0.0.1:22121
  servers:
   - 127.0.0.1:11211:1
   - \"127.0.0.1:\\
     11212:1\"
   - 127.0.0.1:11213:0
";
    assert_eq!(
        refused(folded),
        "conf/x.yml:8: pool \"alpha\": servers: \"127.0.0.1:11213:0\" has weight 0 (expected 1 or more)"
    );
    let flow = "\
alpha: {listen: 127.0.0.1:22121,
  servers: [127.0.0.1:11211:1,
    127.0.0.1:11212:1]}
beta:
  listen: 127.0.0.1:22122
  hsh: 1
";
    assert_eq!(
        refused(flow),
        "conf/x.yml:6: pool \"beta\": unknown key \"hsh\""
    );
    let config = parsed(&flow.replace("  hsh: 1\n", "  servers:\n   - 127.0.0.1:11213:1\n"));
    let lines: Vec<usize> = config
        .pools
        .iter()
        .flat_map(|p| p.servers.iter().map(|s| s.line))
        .collect();
    assert_eq!(lines, [2, 3, 7]);
    assert_eq!(config.pools[1].line, 4);
}

/// twemproxy 0.5.0's conf/nutcracker.yml, as shipped.
const UPSTREAM: &str = "\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: true
  redis: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  servers:
   - 127.0.0.1:6379:1

beta:
  listen: 127.0.0.1:22122
  hash: fnv1a_64
  hash_tag: \"{}\"
  distribution: ketama
  auto_eject_hosts: false
  timeout: 400
  redis: true
  servers:
   - 127.0.0.1:6380:1 server1
   - 127.0.0.1:6381:1 server2
   - 127.0.0.1:6382:1 server3
   - 127.0.0.1:6383:1 server4

gamma:
  listen: 127.0.0.1:22123
  hash: fnv1a_64
  distribution: ketama
  timeout: 400
  backlog: 1024
  preconnect: true
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 3
  servers:
   - 127.0.0.1:11212:1
   - 127.0.0.1:11213:1

delta:
  listen: 127.0.0.1:22124
  hash: fnv1a_64
  distribution: ketama
  timeout: 100
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  servers:
   - 127.0.0.1:11214:1
   - 127.0.0.1:11215:1
   - 127.0.0.1:11216:1
   - 127.0.0.1:11217:1
   - 127.0.0.1:11218:1
   - 127.0.0.1:11219:1
   - 127.0.0.1:11220:1
   - 127.0.0.1:11221:1
   - 127.0.0.1:11222:1
   - 127.0.0.1:11223:1

omega:
  listen: /tmp/gamma
  hash: hsieh
  distribution: ketama
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:11214:100000
   - 127.0.0.1:11215:1
";

#[test]
fn the_upstream_example_loads_but_its_redis_pools() {
    assert_eq!(
        refused(UPSTREAM),
        "conf/x.yml:6: pool \"alpha\": redis: true: Redis pools are not supported; walnut proxies memcached only"
    );
    let beta_on = UPSTREAM.replacen("redis: true", "redis: false", 1);
    assert_eq!(
        refused(&beta_on),
        "conf/x.yml:19: pool \"beta\": redis: true: Redis pools are not supported; walnut proxies memcached only"
    );

    // The memcached pools, with the lines they have in the file.
    let config = parsed(&UPSTREAM.replace("redis: true", "redis: false"));
    let names: Vec<(&str, usize)> = config
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.line))
        .collect();
    assert_eq!(
        names,
        [
            ("alpha", 1),
            ("beta", 12),
            ("gamma", 26),
            ("delta", 40),
            ("omega", 60)
        ]
    );
    let gamma = &config.pools[2];
    assert_eq!(gamma.timeout, Some(Duration::from_millis(400)));
    assert_eq!(gamma.backlog, 1024);
    assert!(gamma.preconnect && gamma.auto_eject_hosts);
    assert_eq!(gamma.server_retry_timeout, Duration::from_millis(2000));
    assert_eq!(gamma.server_failure_limit, 3);
    assert_eq!(
        gamma.servers.iter().map(|s| s.line).collect::<Vec<_>>(),
        [37, 38]
    );
    let delta = &config.pools[3];
    assert_eq!(delta.servers.len(), 10);
    assert_eq!(delta.servers[9].line, 58);
    assert_eq!(delta.servers[9].addr_text, "127.0.0.1:11223");
    let omega = &config.pools[4];
    assert_eq!(
        omega.listen,
        Listen::Unix {
            path: "/tmp/gamma".into(),
            mode: None
        }
    );
    assert_eq!(omega.hash, HashKind::Hsieh);
    assert_eq!(omega.servers[0].weight, 100_000);
    let beta = &config.pools[1];
    assert_eq!(beta.hash_tag, Some(*b"{}"));
    assert_eq!(beta.servers[3].name.as_deref(), Some("server4"));

    // gamma to omega alone: the file's memcached pools as they stand.
    let memcached = &UPSTREAM[UPSTREAM.find("gamma:").unwrap()..];
    assert_eq!(parsed(memcached).pools.len(), 3);
}

#[test]
fn unix_sockets() {
    let config = parsed(
        "alpha:\n  listen: /tmp/walnut.sock 0666\n  servers:\n   - /tmp/mc1.sock:1\n   - /tmp/mc2.sock:2 two\n\
         beta:\n  listen: /tmp/walnut2.sock\n  servers:\n   - 127.0.0.1:11211:1\n\
         gamma:\n  listen: /tmp/walnut3.sock x\n  servers:\n   - 127.0.0.1:11212:1\n",
    );
    let [alpha, beta, gamma] = &config.pools[..] else {
        panic!()
    };
    assert_eq!(
        alpha.listen,
        Listen::Unix {
            path: "/tmp/walnut.sock".into(),
            mode: Some(0o666)
        }
    );
    assert_eq!(
        beta.listen,
        Listen::Unix {
            path: "/tmp/walnut2.sock".into(),
            mode: None
        }
    );
    // As strtol reads it in nutcracker: no octal digits is mode 0, which changes nothing.
    assert_eq!(
        gamma.listen,
        Listen::Unix {
            path: "/tmp/walnut3.sock".into(),
            mode: None
        }
    );
    let [one, two] = &alpha.servers[..] else {
        panic!()
    };
    assert_eq!(
        one.addr,
        ServerAddr::Unix {
            path: "/tmp/mc1.sock".into()
        }
    );
    assert_eq!(
        (one.weight, one.addr_text.as_str(), one.line),
        (1, "/tmp/mc1.sock", 4)
    );
    assert_eq!(
        two.addr,
        ServerAddr::Unix {
            path: "/tmp/mc2.sock".into()
        }
    );
    assert_eq!((two.weight, two.name.as_deref()), (2, Some("two")));
    assert_eq!(one.ring_name(), "/tmp/mc1.sock:");
    assert_eq!(two.ring_name(), "two");

    let long = format!("alpha:\n  listen: /tmp/{}.sock\n", "a".repeat(100));
    assert!(refused(&long).ends_with("has a socket path longer than 107 bytes"));
}

#[test]
fn hostnames_are_resolved() {
    let config = parsed("alpha:\n  listen: localhost:22121\n  servers:\n   - localhost:11212:1\n");
    let pool = &config.pools[0];
    let Listen::Tcp { host, port, addr } = &pool.listen else {
        panic!()
    };
    assert_eq!((host.as_str(), *port), ("localhost", 22121));
    assert!(addr.ip().is_loopback() && addr.port() == 22121);
    let ServerAddr::Tcp { host, port, addr } = &pool.servers[0].addr else {
        panic!()
    };
    assert_eq!((host.as_str(), *port), ("localhost", 11212));
    assert!(addr.ip().is_loopback() && addr.port() == 11212);
    assert_eq!(pool.servers[0].ring_name(), "localhost:11212");
}

#[test]
fn ring_names_follow_nutcracker() {
    let config = parsed(
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n   \
         - 127.0.0.1:011212:1\n   - 127.0.0.1:11213:1 named\n   - \"::1:11214:1\"\n",
    );
    let names: Vec<String> = config.pools[0]
        .servers
        .iter()
        .map(ServerSpec::ring_name)
        .collect();
    assert_eq!(
        names,
        ["127.0.0.1", "127.0.0.1:011212", "named", "::1:11214"]
    );
    // The same address twice is fine when the names differ.
    parsed(
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1 a\n   - 127.0.0.1:11211:1 b\n",
    );
}

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "yml") {
            Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
            loaded += 1;
        }
    }
    assert!(loaded > 0, "no .yml in {}", dir.display());
}

#[test]
fn the_example_config_is_the_classic_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/nutcracker.yml");
    let config = Config::load(&path).unwrap();
    let [alpha] = &config.pools[..] else { panic!() };
    assert_eq!(alpha.name, "alpha");
    assert_eq!(
        alpha.listen,
        Listen::Tcp {
            host: "127.0.0.1".into(),
            port: 22121,
            addr: addr("127.0.0.1:22121")
        }
    );
    assert_eq!(
        (alpha.hash, alpha.distribution),
        (HashKind::Fnv1a64, Distribution::Ketama)
    );
    assert_eq!(alpha.timeout, Some(Duration::from_millis(400)));
    assert_eq!(alpha.backlog, 1024);
    assert!(alpha.preconnect && alpha.auto_eject_hosts);
    assert_eq!(
        (alpha.server_retry_timeout, alpha.server_failure_limit),
        (Duration::from_secs(30), 3)
    );
    let addrs: Vec<&str> = alpha.servers.iter().map(|s| s.addr_text.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:11211", "127.0.0.1:11212"]);
}

#[test]
fn a_missing_file_names_its_path() {
    let err = Config::load(Path::new("/nonexistent/walnut.yml")).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/walnut.yml: "),
        "{err}"
    );
}

/// Configs and whether walnut takes them; where nutcracker 0.5.0 decides otherwise, why.
const VERDICTS: &[(&str, bool, Option<&str>)] = &[
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n",
        true,
        None,
    ),
    (
        EVERY_KEY,
        true,
        Some("item_size_max and client_buffer are walnut's own keys"),
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  timeout: 0\n  backlog: 0\n  server_failure_limit: 0\n  server_retry_timeout: 0\n  servers:\n   - 127.0.0.1:11211:1\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  preconnect: 'false'\n  servers:\n   - 127.0.0.1:11211:2147483647\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  hash_tag: \"é\"\n  servers:\n   - 127.0.0.1:11211:1\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  hash_tag: \"éé\"\n  servers:\n   - 127.0.0.1:11211:1\n",
        false,
        None,
    ),
    (
        "alpha:\n  listen: /tmp/walnut-t.sock 0999\n  servers:\n   - 127.0.0.1:11211:1\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: /tmp/walnut-t.sock -1\n  servers:\n   - 127.0.0.1:11211:1\n",
        false,
        None,
    ),
    (
        "alpha:\n  listen: \"::1:22121\"\n  servers:\n   - \"::1:11211:1\"\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: \"[::1]:22121\"\n  servers:\n   - 127.0.0.1:11211:1\n",
        true,
        Some("walnut takes [::1] for ::1"),
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - '127.0.0.1:11211:1 '\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - '127.0.0.1:11211:1  a'\n",
        false,
        None,
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - /tmp/mc.sock\n",
        false,
        None,
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - :11211:1\n",
        false,
        Some("walnut resolves backends at load"),
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\nbeta:\n  listen: localhost:22121\n  servers:\n   - 127.0.0.1:11212:1\n",
        false,
        Some("walnut compares addresses, not texts"),
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  timeout: 99999999999\n  servers:\n   - 127.0.0.1:11211:1\n",
        false,
        Some("nutcracker wraps around"),
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  redis_db: 2\n  client_connections: 10\n  servers:\n   - 127.0.0.1:11211:1\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:11211:1\n     srv1\n",
        true,
        None,
    ),
    (
        "alpha:\n  listen: /tmp/walnut-t.sock\n  servers:\n   - 127.0.0.1:11211:1\n\
         beta:\n  listen: /tmp/walnut-t.sock 0666\n  servers:\n   - 127.0.0.1:11212:1\n",
        false,
        Some("walnut compares socket paths, not texts"),
    ),
    (UPSTREAM, false, Some("Redis pools are not supported")),
];

/// Where nutcracker is installed, walnut agrees with it on every config above but the marked ones.
#[test]
fn verdicts_match_nutcracker() {
    let nutcracker = [
        "/usr/sbin/nutcracker",
        "/usr/bin/nutcracker",
        "/usr/local/bin/nutcracker",
    ]
    .into_iter()
    .map(Path::new)
    .find(|path| path.exists());
    for (index, (text, walnut, differs)) in VERDICTS.iter().enumerate() {
        assert_eq!(
            parse(text).is_ok(),
            *walnut,
            "walnut on\n{text}\n{:?}",
            parse(text).err()
        );
        let Some(nutcracker) = nutcracker else {
            continue;
        };
        let path =
            std::env::temp_dir().join(format!("walnut-verdict-{}-{index}.yml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let status = std::process::Command::new(nutcracker)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            status.success() == *walnut,
            differs.is_none(),
            "nutcracker on\n{text}\n{differs:?}"
        );
    }
}
