//! `walnut`: arguments -> config -> plugins -> run.

use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use walnut::admin::View;
use walnut::cli::{Args, Command, RouteArgs};
use walnut::config::Config;
use walnut::process;
use walnut::server::Runtime;
use walnut::shutdown::Shutdown;

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
    if let Some(Command::Route(route)) = &args.command {
        return explain_route(&args, route);
    }
    let conf = &args.conf_file;
    // A config is good only when its plugins load too.
    let loaded = Config::load(conf)
        .map_err(|e| e.to_string())
        .and_then(walnut::plugin::load);
    let loaded = match loaded {
        Ok(loaded) => loaded,
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
    match run(args, loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walnut: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, loaded: walnut::plugin::Loaded) -> Result<(), String> {
    process::block_stop_signals()?;
    let files = process::raise_fd_limit();
    let workers = args
        .workers
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Everything that can fail on a bad setup happens before daemonizing, so the operator sees it.
    let stats_addr = std::net::SocketAddr::new(args.stats_addr, args.stats_port);
    let stats_listener = walnut::admin::bind(stats_addr)
        .map_err(|e| format!("cannot listen for stats on {stats_addr}: {e}"))?;
    let admin_listener = args.admin.map(walnut::admin::http::bind).transpose()?;
    let runtime = Runtime::bind(loaded, workers, args.conf_file.clone())?;
    let log_file = process::open_log(args.output.as_deref())?;
    if args.daemonize {
        process::daemonize()?;
    }
    let pid_file = args
        .pid_file
        .as_deref()
        .map(process::PidFile::write)
        .transpose()?;
    process::init_log(args.log_level(), log_file);
    process::log_panics();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers,
        pools = runtime.pools(),
        conf = %args.conf_file.display(),
        "walnut started"
    );
    match files {
        Ok(n) => tracing::info!(limit = n, "open files"),
        Err(e) => tracing::warn!("{e}"),
    }
    process::give_back_freed_memory()?;
    let (stop, shutdown) = Shutdown::new();
    let stats_thread = walnut::admin::spawn(stats_listener, runtime.views(), shutdown.clone())
        .map_err(|e| format!("cannot start stats thread: {e}"))?;
    let admin_thread = match admin_listener {
        Some(listener) => {
            let reloader = runtime.reloader();
            let reload = Arc::new(move || reloader.reload());
            let thread =
                walnut::admin::http::spawn(listener, runtime.views(), reload, shutdown.clone())
                    .map_err(|e| format!("cannot start the admin thread: {e}"))?;
            Some(thread)
        }
        None => None,
    };
    let reloader = runtime.reloader();
    process::stop_on_signal(stop, move || {
        let _ = reloader.reload();
    })?;
    runtime
        .run(shutdown)
        .map_err(|e| format!("cannot start workers: {e}"))?;
    let _ = stats_thread.join();
    if let Some(thread) = admin_thread {
        let _ = thread.join();
    }
    drop(pid_file);
    tracing::info!("walnut stopped");
    Ok(())
}

/// `walnut route`: loads the config (and its plugins) as `-t` does, and explains one key or
/// request with the code `/route` uses, no walnut running.
fn explain_route(args: &Args, route: &RouteArgs) -> ExitCode {
    let conf = route.conf_file.as_deref().unwrap_or(&args.conf_file);
    let view = match Config::load(conf)
        .map_err(|e| e.to_string())
        .and_then(walnut::plugin::load)
    {
        Ok(loaded) => View::offline(loaded),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut query = walnut::admin::route::Query {
        pool: route.pool.clone(),
        command: Some(route.command.clone()),
        method: Some(route.method.clone()),
        remote: route.remote,
        ..Default::default()
    };
    match view.find(&route.pool) {
        Some((_, walnut::admin::Site::Http(_))) => {
            query.path = Some(route.target.as_bytes().to_vec())
        }
        _ => query.key = Some(route.target.as_bytes().to_vec()),
    }
    for h in &route.headers {
        match walnut::admin::route::parse_header(h.as_bytes()) {
            Ok(h) => query.headers.push(h),
            Err(e) => {
                eprintln!("walnut route: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match walnut::admin::route::explain(&view, &query) {
        Ok(v) if route.json => {
            println!("{v:#}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", walnut::admin::route::to_text(&v));
            ExitCode::SUCCESS
        }
        Err((_, why)) => {
            eprintln!("walnut route: {why}");
            ExitCode::FAILURE
        }
    }
}
