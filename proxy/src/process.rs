//! What walnut asks of the operating system as a process: stop signals, daemonizing, the pid
//! file, logging and the host name. Every `unsafe` call into libc lives in this file.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::shutdown::ShutdownTrigger;

/// SIGINT and SIGTERM, blocked in every thread and taken by `wait_for_stop` alone.
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
/// signal that arrives during start-up waits for `wait_for_stop` instead of killing walnut.
pub fn block_stop_signals() -> Result<(), String> {
    let set = stop_signals();
    // SAFETY: pthread_sigmask reads the set we own and changes this thread's mask only.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!("cannot block SIGINT/SIGTERM: error {rc}"));
    }
    Ok(())
}

/// Starts a thread that waits for SIGINT or SIGTERM, then fires `stop`.
pub fn stop_on_signal(stop: ShutdownTrigger) -> Result<(), String> {
    std::thread::Builder::new()
        .name("walnut-signals".into())
        .spawn(move || wait_for_stop(stop))
        .map(drop)
        .map_err(|e| format!("cannot start signal thread: {e}"))
}

fn wait_for_stop(stop: ShutdownTrigger) {
    let set = stop_signals();
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
    tracing::info!(
        signal = sig,
        "signal received: finishing in-flight requests"
    );
    stop.fire();
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

/// Opens the log file (`-o`) for appending; `None` logs to stderr.
pub fn open_log(path: Option<&Path>) -> Result<Option<std::fs::File>, String> {
    path.map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
    })
    .transpose()
}

/// Sends `tracing` output at `level` and above to `file`, or to stderr (coloured on a terminal).
pub fn init_log(level: tracing::Level, file: Option<std::fs::File>) {
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
