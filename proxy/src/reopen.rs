//! Files reopened on request (SIGUSR1, or SIGHUP as nutcracker does), so logrotate can rename
//! them: the signal thread bumps a process-wide generation, and each [`ReopenFile`] reopens its
//! path at its next write once the generation moved. A writer's check is one relaxed atomic
//! load, so a per-worker writer (an access log) can use it on the request path: no lock, no
//! syscall until a reopen is due.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How many reopens were requested so far; a writer that saw another number reopens.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// Asks every [`ReopenFile`] (and every writer watching [`generation`]) to reopen its path.
pub fn request() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Opens `path` for appending, creating it.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// A file written by appending, reopened by path after a [`request`].
#[derive(Debug)]
pub struct ReopenFile {
    path: PathBuf,
    file: File,
    seen: u64,
}

impl ReopenFile {
    pub fn open(path: &Path) -> std::io::Result<ReopenFile> {
        Ok(ReopenFile {
            path: path.to_path_buf(),
            file: open_append(path)?,
            seen: generation(),
        })
    }

    /// The file to write to now: reopened if a reopen was requested since the last write.
    /// If the path cannot be opened, writing goes on to the old file rather than nowhere.
    fn current(&mut self) -> &mut File {
        let now = generation();
        if now != self.seen {
            self.seen = now;
            match open_append(&self.path) {
                Ok(file) => self.file = file,
                Err(e) => {
                    let _ = writeln!(
                        self.file,
                        "walnut: cannot reopen {}: {e}; writing on here",
                        self.path.display()
                    );
                }
            }
        }
        &mut self.file
    }
}

impl Write for ReopenFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.current().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_file_is_left_behind_after_a_request() {
        let dir = std::env::temp_dir().join(format!("walnut-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        let mut f = ReopenFile::open(&path).unwrap();
        f.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("x.log.1")).unwrap();
        f.write_all(b"two\n").unwrap();
        request();
        f.write_all(b"three\n").unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&dir.join("x.log.1")), "one\ntwo\n");
        assert_eq!(read(&path), "three\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
