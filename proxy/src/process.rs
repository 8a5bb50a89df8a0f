//! What walnut asks of the operating system as a process: stop signals, daemonizing, the pid
//! file, logging, the host name, its open-file limit and giving freed memory back. Every
//! `unsafe` call into libc lives in this file.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reopen::{self, ReopenFile};
use crate::shutdown::ShutdownTrigger;
use crate::trim::{Sample, TrimRule};

/// SIGINT and SIGTERM (stop), SIGUSR1 (reopen the log files, as nginx and logrotate recipes
/// expect) and SIGHUP (reload the config, as nginx does, and reopen the log files, as nutcracker
/// does), blocked in every thread and taken by `wait_for_signals` alone.
fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the signals walnut handles before any thread starts, so every thread inherits the
/// mask and a signal that arrives during start-up waits for the signal thread instead of
/// killing walnut.
pub fn block_stop_signals() -> Result<(), String> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGHUP] {
        // A signal ignored on entry (a `cmd &` in a script ignores SIGINT, nohup SIGHUP) would
        // be discarded before sigwait could take it; nutcracker installs its handlers anyway.
        // SAFETY: setting a signal's disposition to the default touches no memory of ours.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    block_signals_in_this_thread()
}

/// Blocks the signals walnut handles in the calling thread (and the threads it starts). A
/// thread started before `block_stop_signals` (the plugin engine's epoch thread: plugins load
/// before walnut runs) calls it itself; else the kernel could hand it a SIGHUP, whose default
/// action ends the process.
pub fn block_signals_in_this_thread() -> Result<(), String> {
    let set = handled_signals();
    // SAFETY: pthread_sigmask reads the set we own and changes this thread's mask only.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!(
            "cannot block SIGINT/SIGTERM/SIGUSR1/SIGHUP: error {rc}"
        ));
    }
    Ok(())
}

/// Starts a thread that fires `stop` on SIGINT or SIGTERM, asks for the log files to be
/// reopened on SIGUSR1 or SIGHUP, and calls `reload` on SIGHUP.
pub fn stop_on_signal(
    stop: ShutdownTrigger,
    reload: impl Fn() + Send + 'static,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("walnut-signals".into())
        .spawn(move || wait_for_signals(stop, reload))
        .map(drop)
        .map_err(|e| format!("cannot start signal thread: {e}"))
}

fn wait_for_signals(stop: ShutdownTrigger, reload: impl Fn()) {
    let set = handled_signals();
    // Signals keep being taken during the shutdown grace period (a logrotate may run then).
    loop {
        let mut sig = 0;
        // SAFETY: sigwait reads the set and writes the signal number into `sig`, both ours.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc != 0 {
            tracing::error!("sigwait failed: error {rc}; walnut stops only when killed");
            // Keep the trigger: dropping it would read as a shutdown.
            loop {
                std::thread::park();
            }
        }
        if sig == libc::SIGUSR1 || sig == libc::SIGHUP {
            reopen::request();
            // Written to the reopened file: it exists from now on, even before other lines.
            tracing::info!(signal = sig, "signal received: log files reopened");
            if sig == libc::SIGHUP {
                reload();
            }
            continue;
        }
        tracing::info!(
            signal = sig,
            "signal received: finishing in-flight requests"
        );
        stop.fire();
    }
}

/// The calling thread's CPU time so far, in nanoseconds (0 if the clock cannot be read).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Detaches from the terminal, as nutcracker's `-d` does. Call it before any thread starts.
pub fn daemonize() -> Result<(), String> {
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

/// The pid file, written once the pid is final (after `daemonize`) and removed on drop.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile, String> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens the log file (`-o`) for appending, reopened on SIGUSR1 and SIGHUP; `None` logs to
/// stderr.
pub fn open_log(path: Option<&Path>) -> Result<Option<ReopenFile>, String> {
    path.map(|path| {
        ReopenFile::open(path).map_err(|e| format!("cannot open log file {}: {e}", path.display()))
    })
    .transpose()
}

/// Sends `tracing` output at `level` and above to `file`, or to stderr (coloured on a terminal).
pub fn init_log(level: tracing::Level, file: Option<ReopenFile>) {
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false);
    match file {
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
}

/// Logs a panic where the operator reads the log (stderr may be gone), with its backtrace. A
/// panic is a bug; in a connection's task it drops that connection and walnut goes on.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            "bug: {info}\n{}",
            std::backtrace::Backtrace::force_capture()
        );
    }));
}

/// This machine's name, for the stats document's `source`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Raises the soft limit on open files to the hard limit: each client and each server
/// connection is a file, and the soft limit is often 1024 while the hard one is far higher
/// (systemd's default is 1024 and 524288). Returns the limit now in force.
pub fn raise_fd_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    // An unlimited hard limit cannot be the soft one for files: the kernel's ceiling is.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let want = limit.rlim_max.min(ceiling);
    if limit.rlim_cur >= want {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "cannot raise the open-file limit from {} to {want}: {}",
            limit.rlim_cur,
            std::io::Error::last_os_error()
        ));
    }
    Ok(want)
}

/// How often the memory given back is checked.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Starts a thread that gives memory freed by walnut back to the operating system.
///
/// glibc keeps freed memory in its arenas (one per worker thread) for reuse, and gives back
/// only what lies at an arena's top. After thousands of connections close, what they held is
/// free but scattered, and walnut's resident size would stay at the burst's peak (measured:
/// 10,000 HTTP connections that each made a request left 100 MiB resident after they closed).
/// Once a second this thread compares the resident size with what the allocator has handed
/// out (`mallinfo2`), and `malloc_trim` releases the free pages of every arena when
/// [`TrimRule`] says so. A steady load pays a `/proc` read each second, and never a trim.
/// Nothing is started where the allocator cannot say what it handed out.
pub fn give_back_freed_memory() -> Result<(), String> {
    let Some(first) = allocator_sample() else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("walnut-trim".into())
        .spawn(move || {
            let mut rule = TrimRule::new(first);
            loop {
                std::thread::sleep(TRIM_EVERY);
                // A look that fails (no file descriptor left for /proc) is skipped.
                let Some(now) = allocator_sample() else {
                    continue;
                };
                if rule.due(now) {
                    trim();
                    let after = allocator_sample().unwrap_or(now);
                    rule.trimmed(after);
                    tracing::debug!(
                        before = now.held,
                        after = after.held,
                        "gave freed memory back"
                    );
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the memory thread: {e}"))
}

/// What the allocator holds free and what it has handed out; `None` where it cannot be known.
fn allocator_sample() -> Option<Sample> {
    let in_use = in_use()?;
    Some(Sample {
        held: resident_bytes()?.saturating_sub(in_use),
        in_use,
    })
}

/// Walnut's resident size, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: u64 = statm.split(' ').nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(resident * u64::try_from(page).ok()?)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn in_use() -> Option<u64> {
    // SAFETY: mallinfo2 takes no argument and returns a struct by value.
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks + info.hblkhd) as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn in_use() -> Option<u64> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes the allocator's locks itself; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
