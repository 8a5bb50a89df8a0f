//! `walnut`: arguments -> config -> run.

use std::process::ExitCode;

use clap::Parser;
use walnut::cli::Args;
use walnut::config::Config;
use walnut::worker::Runtime;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.version {
        println!(
            "This is walnut-{} (twemproxy 0.5.0 compatible)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if args.describe_stats {
        print!("{}", walnut::stats::describe());
        return ExitCode::SUCCESS;
    }
    let conf = &args.conf_file;
    // A config is good only when its plugins load too.
    let loaded = Config::load(conf)
        .map_err(|e| e.to_string())
        .and_then(|config| walnut::plugin::load(&config).map(|plugins| (config, plugins)));
    let (config, plugins) = match loaded {
        Ok(both) => both,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "walnut: configuration file '{}' syntax is invalid",
                conf.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if args.test_conf {
        println!(
            "walnut: configuration file '{}' syntax is ok",
            conf.display()
        );
        return ExitCode::SUCCESS;
    }
    match run(args, config, plugins) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walnut: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, config: Config, plugins: walnut::plugin::Loaded) -> Result<(), String> {
    block_stop_signals()?;
    let workers = args
        .workers
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Everything that can fail on a bad setup happens before daemonizing, so the operator sees it.
    let stats_addr = std::net::SocketAddr::new(args.stats_addr, args.stats_port);
    let stats_listener = walnut::admin::bind(stats_addr)
        .map_err(|e| format!("cannot listen for stats on {stats_addr}: {e}"))?;
    let runtime = Runtime::bind(config, plugins, workers)?;
    let log_file = match &args.output {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    if args.daemonize {
        daemonize()?;
    }
    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", pid_file.display()))?;
    }
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(args.log_level())
        .with_target(false);
    match log_file {
        Some(file) => subscriber
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init(),
        None => {
            use std::io::IsTerminal;
            subscriber
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init()
        }
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers,
        pools = runtime.config.pools.len(),
        conf = %args.conf_file.display(),
        "walnut started"
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stats_thread = walnut::admin::spawn(
        stats_listener,
        std::sync::Arc::clone(&runtime.registry),
        rx.clone(),
    )
    .map_err(|e| format!("cannot start stats thread: {e}"))?;
    std::thread::Builder::new()
        .name("walnut-signals".into())
        .spawn(move || wait_for_signal(tx))
        .map_err(|e| format!("cannot start signal thread: {e}"))?;
    runtime
        .run(rx)
        .map_err(|e| format!("cannot start workers: {e}"))?;
    let _ = stats_thread.join();
    if let Some(pid_file) = &args.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    tracing::info!("walnut stopped");
    Ok(())
}

/// SIGINT and SIGTERM, blocked in every thread and taken by `wait_for_signal` alone.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM before any thread starts, so every thread inherits the mask and a
/// signal that arrives during start-up waits for `wait_for_signal` instead of killing walnut.
fn block_stop_signals() -> Result<(), String> {
    let set = stop_signals();
    // SAFETY: pthread_sigmask reads the set we own and changes this thread's mask only.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!("cannot block SIGINT/SIGTERM: error {rc}"));
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM, then tells every thread to stop accepting and finish.
fn wait_for_signal(tx: tokio::sync::watch::Sender<bool>) {
    let set = stop_signals();
    let mut sig = 0;
    // SAFETY: sigwait reads the set and writes the signal number into `sig`, both ours.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        tracing::error!("sigwait failed: error {rc}; walnut stops only when killed");
        return;
    }
    tracing::info!(
        signal = sig,
        "signal received: finishing in-flight requests"
    );
    let _ = tx.send(true);
}

/// Detaches from the terminal, as nutcracker's `-d` does.
fn daemonize() -> Result<(), String> {
    // SAFETY: called before any thread is started, so fork duplicates only this thread; the
    // child only calls async-signal-safe functions (setsid, open, dup2, close) before returning.
    unsafe {
        match libc::fork() {
            -1 => return Err("cannot fork".into()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err("cannot create a session".into());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
    }
    Ok(())
}
