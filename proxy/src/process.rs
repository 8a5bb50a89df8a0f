//! What walnut asks of the operating system as a process: stop signals, daemonizing, the pid
//! file, logging and the host name. Every `unsafe` call into libc lives in this file.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::reopen::{self, ReopenFile};
use crate::shutdown::ShutdownTrigger;

/// SIGINT and SIGTERM (stop), SIGUSR1 and SIGHUP (reopen the log files: SIGUSR1 as nginx and
/// logrotate recipes expect, SIGHUP as nutcracker does), blocked in every thread and taken by
/// `wait_for_signals` alone.
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

/// Starts a thread that fires `stop` on SIGINT or SIGTERM, and asks for the log files to be
/// reopened on SIGUSR1 or SIGHUP.
pub fn stop_on_signal(stop: ShutdownTrigger) -> Result<(), String> {
    std::thread::Builder::new()
        .name("walnut-signals".into())
        .spawn(move || wait_for_signals(stop))
        .map(drop)
        .map_err(|e| format!("cannot start signal thread: {e}"))
}

fn wait_for_signals(stop: ShutdownTrigger) {
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
            continue;
        }
        tracing::info!(
            signal = sig,
            "signal received: finishing in-flight requests"
        );
        stop.fire();
    }
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
