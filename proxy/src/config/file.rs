//! Reading a config file: at most [`MAX_SIZE`] bytes, from whatever the path names (a file,
//! a pipe such as `<(generate-config)`, a device), never waiting on it forever.

use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::ConfigError;

/// The largest config accepted: a thousand times the size of a large real one, and small
/// enough to parse at once.
pub const MAX_SIZE: usize = 1 << 20;
/// How long a pipe may stay silent before walnut gives up on it.
const PIPE_WAIT: Duration = Duration::from_secs(5);

/// The text of the config at `path`.
pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    let failed = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |line, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    // Not blocking, so that opening a FIFO nobody writes to returns at once (it then reads as
    // empty); regular files and devices read as usual.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(failed)?;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut deadline = Instant::now() + PIPE_WAIT;
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let room = MAX_SIZE + 1 - bytes.len();
                bytes.extend_from_slice(&chunk[..n.min(room)]);
                if bytes.len() > MAX_SIZE {
                    let line = line_at(&bytes, MAX_SIZE);
                    return Err(invalid(
                        line,
                        format!(
                            "the file goes on past {} MiB ({MAX_SIZE} bytes), the most walnut reads: is it a config file?",
                            MAX_SIZE >> 20
                        ),
                    ));
                }
                deadline = Instant::now() + PIPE_WAIT;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // A pipe whose writer has not written yet.
                if Instant::now() >= deadline {
                    let line = line_at(&bytes, bytes.len());
                    return Err(invalid(
                        line,
                        format!(
                            "nothing more arrived for {} s (a pipe whose writer is stuck?)",
                            PIPE_WAIT.as_secs()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(failed(e)),
        }
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let column = at
            - bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |nl| nl + 1)
            + 1;
        invalid(
            line_at(bytes, at),
            format!(
                "byte 0x{:02x} at column {column} is not UTF-8 text",
                bytes[at]
            ),
        )
    })
}

/// The 1-based line holding byte `at` of `bytes`.
fn line_at(bytes: &[u8], at: usize) -> usize {
    1 + memchr::memchr_iter(b'\n', &bytes[..at.min(bytes.len())]).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(path: &Path) -> String {
        read(path).unwrap_err().to_string()
    }

    #[test]
    fn endless_and_odd_files_end_with_a_clear_error() {
        let zero = message(Path::new("/dev/zero"));
        assert_eq!(
            zero,
            "/dev/zero:1: the file goes on past 1 MiB (1048576 bytes), the most walnut reads: is it a config file?"
        );
        let dir = std::env::temp_dir().join(format!("walnut-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.yml");
        std::fs::write(&big, "a: b\n".repeat(MAX_SIZE / 5 + 1)).unwrap();
        assert!(message(&big).starts_with(&format!(
            "{}:209716: the file goes on past 1 MiB",
            big.display()
        )));
        let exact = dir.join("exact.yml");
        std::fs::write(&exact, "#".repeat(MAX_SIZE)).unwrap();
        assert_eq!(read(&exact).unwrap().len(), MAX_SIZE);
        let latin1 = dir.join("latin1.yml");
        std::fs::write(&latin1, b"a:\n  listen: caf\xe9:1\n").unwrap();
        assert_eq!(
            message(&latin1),
            format!(
                "{}:2: byte 0xe9 at column 14 is not UTF-8 text",
                latin1.display()
            )
        );
        assert!(message(&dir).ends_with("Is a directory (os error 21)"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
