//! Framing a client's byte stream into requests, as memcached frames it. One [`Decoder`] per
//! connection keeps what a request spread over several reads needs: the data block of a refused
//! request still to be swallowed, and a retrieval read in batches of keys (a `get` with many
//! keys, or a line of any length), so memory stays bounded whatever the client sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::Command;
use super::error::ProtocolError;
use super::parse::{LineError, check_key, parse_line, trim_eol};
use super::request::{Part, Request};

/// The longest line accepted for commands other than retrievals; longer is fatal.
pub const MAX_LINE: usize = 128 * 1024;
/// A retrieval line with no end yet after this many bytes is read in batches as it arrives.
const STREAM_AT: usize = 16 * 1024;

/// A request walnut answers itself with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: ProtocolError,
    /// The line ended in `noreply`: no answer, as memcached gives none.
    pub noreply: bool,
    /// A `set`/`ms` too large to store: memcached unlinks the key's old value, so walnut has
    /// the key's owner delete it. The key as the client wrote it, and whether it is base64.
    pub unlink: Option<(Bytes, bool)>,
}

impl From<ProtocolError> for Refusal {
    fn from(error: ProtocolError) -> Refusal {
        Refusal {
            error,
            noreply: false,
            unlink: None,
        }
    }
}

/// A retrieval line being read in batches.
#[derive(Debug)]
enum Open {
    /// Its keys go on; `prefix` is its line up to the first key (`gat 10 `).
    Keys { command: Command, prefix: Bytes },
    /// A bad key ended it; the rest of the line is thrown away.
    Discard,
}

/// Reads one client's requests off its byte stream.
#[derive(Debug)]
pub struct Decoder {
    item_size_max: usize,
    /// Keys per batch of a retrieval read in batches.
    batch_keys: usize,
    /// Bytes of a refused request's data block still to throw away, unbuffered.
    skip: usize,
    open: Option<Open>,
}

impl Decoder {
    /// A decoder refusing values over `item_size_max`, reading retrievals with more than
    /// `batch_keys` keys (or lines too long to hold) in batches of that many keys.
    pub fn new(item_size_max: usize, batch_keys: usize) -> Decoder {
        Decoder {
            item_size_max,
            batch_keys: batch_keys.max(1),
            skip: 0,
            open: None,
        }
    }

    /// New limits (a reload changed the pool), for the requests not begun yet.
    pub fn set_limits(&mut self, item_size_max: usize, batch_keys: usize) {
        self.item_size_max = item_size_max;
        self.batch_keys = batch_keys.max(1);
    }

    /// The next request in `buf`, taken from it. `Ok(None)`: more bytes are needed (bytes
    /// being swallowed may have been dropped; nothing else was taken). After a refusal the next
    /// request decodes cleanly, except after a fatal one (the connection is to close).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Refusal> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        match &self.open {
            Some(Open::Discard) => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    buf.clear();
                    return Ok(None);
                };
                buf.advance(nl + 1);
                self.open = None;
            }
            Some(Open::Keys { .. }) => return self.next_batch(buf),
            None => {}
        }
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > STREAM_AT && retrieval_start(buf).is_some() {
                return self.open_line(buf);
            }
            if buf.len() > MAX_LINE {
                return Err(ProtocolError::LineTooLong.into());
            }
            return Ok(None);
        };
        let line_len = nl + 1;
        let head = match parse_line(trim_eol(&buf[..nl]), self.item_size_max) {
            Ok(head) => head,
            Err(e) => return Err(self.refuse(buf, line_len, e)),
        };
        if head.command.is_retrieval() && head.key_count as usize > self.batch_keys {
            return self.open_line(buf);
        }
        let frame_len = match head.data_len {
            None => line_len,
            Some(n) => {
                let total = line_len + n + 2;
                if buf.len() < total {
                    buf.reserve(total - buf.len());
                    return Ok(None);
                }
                if &buf[line_len + n..total] != b"\r\n" {
                    // As memcached: exactly the promised bytes are read, and what follows them
                    // is read as the next command, however the bytes came in.
                    buf.advance(total);
                    return Err(Refusal {
                        error: ProtocolError::BadDataChunk,
                        noreply: head.silent.is_some() && !head.command.is_meta(),
                        unlink: None,
                    });
                }
                total
            }
        };
        let frame = buf.split_to(frame_len).freeze();
        let value = match head.data_len {
            Some(n) => line_len..line_len + n,
            None => line_len..line_len,
        };
        Ok(Some(Request::from_parts(
            head.command,
            frame,
            head.keys,
            head.key_count,
            head.silent,
            head.base64_key,
            value,
        )))
    }

    /// Takes the refused line (`line_len` bytes) from `buf` and sets up swallowing its data.
    fn refuse(&mut self, buf: &mut BytesMut, line_len: usize, e: LineError) -> Refusal {
        let line = buf.split_to(line_len).freeze();
        self.skip = e.data_len.map_or(0, |n| n + 2);
        Refusal {
            error: e.error,
            noreply: e.noreply,
            unlink: e.unlink.map(|(key, base64)| (line.slice(key), base64)),
        }
    }

    /// Starts reading the retrieval line at the front of `buf` in batches: takes its command
    /// (and a `gat`'s exptime), then the first batch.
    fn open_line(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Refusal> {
        let (command, prefix_len) = retrieval_start(buf).expect("checked by the caller");
        if let Err(error) = check_prefix(command, &buf[..prefix_len]) {
            self.open = Some(Open::Discard);
            return Err(error.into());
        }
        let prefix = buf.split_to(prefix_len).freeze();
        self.open = Some(Open::Keys { command, prefix });
        self.next_batch(buf)
    }

    /// The next batch of the open retrieval line's keys: `batch_keys` of them, or those left
    /// before the line ends (the last batch). `Ok(None)` until a batch is complete.
    fn next_batch(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Refusal> {
        let Some(Open::Keys { command, prefix }) = &self.open else {
            unreachable!("next_batch is called with an open line");
        };
        let end = memchr::memchr(b'\n', buf);
        let scan = match end {
            Some(nl) => trim_eol(&buf[..nl]),
            None => &buf[..],
        };
        // The batch's own line: the prefix, then its keys as they are checked.
        let mut frame = BytesMut::with_capacity(prefix.len() + 64 * self.batch_keys.min(64));
        frame.put_slice(prefix);
        let (mut count, mut i, mut taken) = (0usize, 0usize, 0usize);
        while count < self.batch_keys {
            while i < scan.len() && scan[i] == b' ' {
                i += 1;
            }
            let start = i;
            while i < scan.len() && scan[i] != b' ' {
                i += 1;
            }
            if start == i {
                break;
            }
            let key = &scan[start..i];
            // A key at the end of what came so far may go on in the next read.
            if i == scan.len() && end.is_none() {
                if key.len() > super::request::MAX_KEY_LEN {
                    self.open = Some(Open::Discard);
                    return Err(ProtocolError::BadKey.into());
                }
                break;
            }
            if let Err(error) = check_key(key) {
                self.open = Some(Open::Discard);
                return Err(error.into());
            }
            if count > 0 {
                frame.put_u8(b' ');
            }
            frame.put_slice(key);
            count += 1;
            taken = i;
        }
        let last = end.is_some() && scan[taken..].iter().all(|&b| b == b' ');
        if !last && count < self.batch_keys {
            return Ok(None);
        }
        let command = *command;
        let keys = prefix.len()..frame.len();
        frame.put_slice(b"\r\n");
        buf.advance(match end {
            Some(nl) if last => nl + 1,
            _ => taken,
        });
        if last {
            self.open = None;
        }
        let frame_len = frame.len();
        let mut req = Request::from_parts(
            command,
            frame.freeze(),
            keys,
            count as u32,
            None,
            false,
            frame_len..frame_len,
        );
        req.part = if last { Part::Last } else { Part::Leading };
        Ok(Some(req))
    }
}

/// A retrieval command at the front of `buf` (`get `, `gets `, `gat <n> `, `gats <n> `): the
/// command and the length of the line up to its first key.
fn retrieval_start(buf: &[u8]) -> Option<(Command, usize)> {
    let name_end = memchr::memchr(b' ', buf)?;
    let command = Command::from_name(&buf[..name_end]).filter(|c| c.is_retrieval())?;
    let mut at = name_end;
    if command.is_touching_retrieval() {
        while at < buf.len() && buf[at] == b' ' {
            at += 1;
        }
        at += memchr::memchr(b' ', &buf[at..])?;
    }
    Some((command, at + 1))
}

/// A touching retrieval's exptime must be a number.
fn check_prefix(command: Command, prefix: &[u8]) -> Result<(), ProtocolError> {
    if !command.is_touching_retrieval() {
        return Ok(());
    }
    let exptime = prefix
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .nth(1);
    let digits = exptime.map(|t| t.strip_prefix(b"-").unwrap_or(t));
    match digits {
        Some(d) if !d.is_empty() && d.len() <= 18 && d.iter().all(u8::is_ascii_digit) => Ok(()),
        _ => Err(ProtocolError::BadExptime),
    }
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
