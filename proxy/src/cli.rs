//! The command line: nutcracker's flags with the same meaning, plus walnut's own.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A programmable memcached proxy, a drop-in replacement for twemproxy (nutcracker).
#[derive(Debug, Parser)]
#[command(name = "walnut", version, about, disable_version_flag = true)]
pub struct Args {
    /// Show version and exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Test the configuration for syntax errors and exit.
    #[arg(short = 't', long = "test-conf")]
    pub test_conf: bool,
    /// Run as a daemon.
    #[arg(short = 'd', long = "daemonize")]
    pub daemonize: bool,
    /// Print the stats description and exit.
    #[arg(short = 'D', long = "describe-stats")]
    pub describe_stats: bool,
    /// Logging level, 0 to 11 as in nutcracker (5: notices and up; 7: debug; 9 and up: trace).
    #[arg(short = 'v', long = "verbose", value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(0..=11))]
    pub verbose: u8,
    /// Log file (default: stderr).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Configuration file.
    #[arg(
        short = 'c',
        long = "conf-file",
        value_name = "FILE",
        default_value = "conf/nutcracker.yml"
    )]
    pub conf_file: PathBuf,
    /// Stats monitoring port.
    #[arg(
        short = 's',
        long = "stats-port",
        value_name = "PORT",
        default_value_t = 22222
    )]
    pub stats_port: u16,
    /// Stats monitoring address.
    #[arg(
        short = 'a',
        long = "stats-addr",
        value_name = "ADDR",
        default_value = "0.0.0.0"
    )]
    pub stats_addr: IpAddr,
    /// Stats aggregation interval in msec (accepted for compatibility: walnut's stats are live).
    #[arg(
        short = 'i',
        long = "stats-interval",
        value_name = "MSEC",
        default_value_t = 30000
    )]
    pub stats_interval: u64,
    /// Pid file.
    #[arg(short = 'p', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Read buffer size per connection in bytes (nutcracker's mbuf chunk size), 512 to 16 MiB.
    #[arg(short = 'm', long = "mbuf-size", value_name = "N", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(512..=16 * 1024 * 1024))]
    pub mbuf_size: u32,
    /// Worker threads (default: one per core).
    #[arg(short = 'w', long = "workers", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Admin HTTP listener (walnut only): /metrics, /status, /route. Off unless given.
    #[arg(long = "admin", value_name = "HOST:PORT", value_parser = admin_addr)]
    pub admin: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands (walnut only); without one, walnut runs as nutcracker does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Explain where a memcached key (or an HTTP request) goes, from the config alone: the
    /// route, each plugin's decision, the bytes hashed, the hash, the ring point and the server.
    Route(RouteArgs),
}

/// `walnut route [-c FILE] POOL KEY|PATH`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// Configuration file (default: the one `-c` names before `route`).
    #[arg(short = 'c', long = "conf-file", value_name = "FILE")]
    pub conf_file: Option<PathBuf>,
    /// The pool.
    pub pool: String,
    /// A key (memcached pool), or a path such as /a?b=1 (HTTP pool).
    pub target: String,
    /// The memcached command the plugins see.
    #[arg(long = "command", value_name = "CMD", default_value = "get")]
    pub command: String,
    /// The HTTP method.
    #[arg(long = "method", value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// An HTTP request header, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// The HTTP client's address, for `$remote_addr`.
    #[arg(long = "remote", value_name = "IP")]
    pub remote: Option<IpAddr>,
    /// Print the JSON `/route` answers instead of text.
    #[arg(long = "json")]
    pub json: bool,
}

/// `--admin`: `HOST:PORT`, resolved now, with an error that says what is wrong.
fn admin_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} has no port: give HOST:PORT, e.g. 127.0.0.1:22223"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{port:?} is not a port (0 to 65535) in {text:?}: give HOST:PORT, e.g. 127.0.0.1:22223"
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "{text:?} has no host: give HOST:PORT, e.g. 127.0.0.1:22223"
        ));
    }
    match text.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Ok(addr),
        _ => Err(format!("host {host:?} in {text:?} does not resolve")),
    }
}

impl Args {
    /// The tracing level for nutcracker's numeric log level.
    pub fn log_level(&self) -> tracing::Level {
        match self.verbose {
            0..=3 => tracing::Level::ERROR,
            4 => tracing::Level::WARN,
            5 | 6 => tracing::Level::INFO,
            7 | 8 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_are_checked_with_a_reason() {
        assert_eq!(
            admin_addr("127.0.0.1:9100"),
            Ok("127.0.0.1:9100".parse().unwrap())
        );
        assert!(admin_addr("localhost:9100").is_ok());
        assert!(admin_addr("127.0.0.1").unwrap_err().contains("no port"));
        assert!(
            admin_addr("127.0.0.1:99999")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(admin_addr(":9100").unwrap_err().contains("no host"));
        assert!(
            admin_addr("no-such-host.invalid:9100")
                .unwrap_err()
                .contains("does not resolve")
        );
    }

    #[test]
    fn nutcracker_flags_and_route_parse() {
        let a = Args::try_parse_from(["walnut", "-c", "x.yml", "-s", "1"]).unwrap();
        assert!(a.command.is_none() && a.admin.is_none());
        let a = Args::try_parse_from(["walnut", "route", "-c", "x.yml", "alpha", "k"]).unwrap();
        let Some(Command::Route(r)) = a.command else {
            panic!("route");
        };
        assert_eq!((r.pool.as_str(), r.target.as_str()), ("alpha", "k"));
    }
}
