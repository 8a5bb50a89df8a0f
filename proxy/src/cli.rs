//! The command line: nutcracker's flags with the same meaning, plus walnut's own.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

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
