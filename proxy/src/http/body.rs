//! Message bodies, streamed: a strict chunked decoder, and the relay that copies a body from one
//! connection to another through one bounded buffer, re-framing it on the way.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::timer::Timer;

use super::head::Framing;

/// How much is read at once; a relay's buffer stays near this size.
pub const READ_CHUNK: usize = 64 * 1024;
/// The longest chunk-size line or trailer line accepted.
const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// A chunked body that breaks the syntax (a smuggling shape, or garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad chunked body")]
pub struct BadChunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// What the decoder found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The first `n` bytes of the buffer are body data (the caller consumes them).
    Data(usize),
    /// The body ended (the last chunk and trailers are consumed).
    End,
}

/// RFC 9112 chunked coding: hex sizes only (no sign, no spaces), CRLF line ends, extensions
/// and trailers read and dropped.
#[derive(Debug, Clone, Copy)]
pub struct ChunkDecoder(State);

impl Default for ChunkDecoder {
    fn default() -> Self {
        ChunkDecoder(State::Size)
    }
}

/// The end of the CRLF-terminated line at the start of `buf` (the index after LF).
fn line(buf: &[u8]) -> Result<Option<usize>, BadChunk> {
    match memchr::memchr(b'\n', buf) {
        Some(lf) if lf > 0 && buf[lf - 1] == b'\r' && lf < MAX_LINE => Ok(Some(lf + 1)),
        Some(_) => Err(BadChunk),
        None if buf.len() >= MAX_LINE => Err(BadChunk),
        None => Ok(None),
    }
}

impl ChunkDecoder {
    /// Decodes what it can at the start of `buf`; `None` when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Piece>, BadChunk> {
        loop {
            match self.0 {
                State::Size => {
                    let Some(end) = line(buf)? else {
                        return Ok(None);
                    };
                    let text = &buf[..end - 2];
                    let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                    let rest = &text[digits..];
                    if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
                        return Err(BadChunk);
                    }
                    let hex = std::str::from_utf8(&text[..digits]).map_err(|_| BadChunk)?;
                    let size = u64::from_str_radix(hex, 16).map_err(|_| BadChunk)?;
                    buf.advance(end);
                    self.0 = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.0 = if n as u64 == left {
                        State::DataEnd
                    } else {
                        State::Data(left - n as u64)
                    };
                    return Ok(Some(Piece::Data(n)));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BadChunk);
                    }
                    buf.advance(2);
                    self.0 = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(end) = line(buf)? else {
                        return Ok(None);
                    };
                    buf.advance(end);
                    if end == 2 {
                        self.0 = State::Done;
                        return Ok(Some(Piece::End));
                    }
                    if seen + end > MAX_TRAILERS {
                        return Err(BadChunk);
                    }
                    self.0 = State::Trailers(seen + end);
                }
                State::Done => return Ok(Some(Piece::End)),
            }
        }
    }
}

/// How the relayed body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// Bytes as they are (Content-Length, or until close).
    Raw,
    /// Chunked coding, ended by the last chunk.
    Chunked,
}

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The source broke the framing.
    #[error("bad body framing")]
    Bad,
    /// The source closed early or failed.
    #[error("reading the body failed: {0}")]
    Read(io::Error),
    /// The source sent nothing for the read timeout.
    #[error("reading the body timed out")]
    ReadTimeout,
    /// The destination failed.
    #[error("writing the body failed: {0}")]
    Write(io::Error),
    /// The destination took nothing for the write timeout (it stopped reading).
    #[error("writing the body timed out")]
    WriteTimeout,
    /// The tap stopped the body (it says why).
    #[error("a body filter stopped the body")]
    Tapped,
}

/// What a body passes through on its way: each piece of it goes in, and what comes out is
/// written instead (the body filters).
pub trait Tap {
    /// Takes the body's next bytes (`end`: the body ends with them) and gives what to write;
    /// `None` stops the body.
    fn pass(&mut self, data: &[u8], end: bool) -> Option<&[u8]>;
}

/// How long a relay waits for each read from its source and each write to its destination.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub read: Duration,
    pub write: Duration,
}

/// Copies a body framed as `framing` from `src` (with `buf` holding bytes already read) to
/// `dst`, written as `out`, through `tap` when there is one. Bytes past the body stay in `buf`
/// (a pipelined request).
#[allow(clippy::too_many_arguments)]
pub async fn relay<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    framing: Framing,
    dst: &mut W,
    out: Out,
    (timer, pace): (&mut Timer, Pace),
    scratch: &mut Vec<u8>,
    mut tap: Option<&mut dyn Tap>,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read_timeout = pace.read;
    let mut sink = Sink {
        dst,
        timer,
        limit: pace.write,
    };
    match framing {
        Framing::None => {}
        Framing::Length(mut left) => {
            while left > 0 {
                if buf.is_empty() {
                    fill(src, buf, sink.timer, read_timeout, false).await?;
                }
                let n = (buf.len() as u64).min(left) as usize;
                left -= n as u64;
                sink.emit(tapped(&mut tap, &buf[..n], left == 0)?, out, scratch)
                    .await?;
                buf.advance(n);
            }
        }
        Framing::Close => loop {
            if buf.is_empty() && !fill(src, buf, sink.timer, read_timeout, true).await? {
                sink.emit(tapped(&mut tap, b"", true)?, out, scratch)
                    .await?;
                break;
            }
            sink.emit(tapped(&mut tap, &buf[..], false)?, out, scratch)
                .await?;
            buf.clear();
        },
        Framing::Chunked => {
            let mut decoder = ChunkDecoder::default();
            loop {
                match decoder.next(buf).map_err(|_| RelayError::Bad)? {
                    Some(Piece::Data(n)) => {
                        sink.emit(tapped(&mut tap, &buf[..n], false)?, out, scratch)
                            .await?;
                        buf.advance(n);
                    }
                    Some(Piece::End) => {
                        sink.emit(tapped(&mut tap, b"", true)?, out, scratch)
                            .await?;
                        break;
                    }
                    None => {
                        fill(src, buf, sink.timer, read_timeout, false).await?;
                    }
                }
            }
        }
    }
    if out == Out::Chunked {
        sink.write(b"0\r\n\r\n").await?;
    }
    sink.dst.flush().await.map_err(RelayError::Write)
}

/// What of `data` goes on: all of it, or what `tap` gives for it.
fn tapped<'a>(
    tap: &'a mut Option<&mut dyn Tap>,
    data: &'a [u8],
    end: bool,
) -> Result<&'a [u8], RelayError> {
    match tap {
        None => Ok(data),
        Some(tap) => tap.pass(data, end).ok_or(RelayError::Tapped),
    }
}

/// Reads more into `buf`; false at a clean end when `eof_ok`.
async fn fill<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    timer: &mut Timer,
    read_timeout: Duration,
    eof_ok: bool,
) -> Result<bool, RelayError> {
    buf.reserve(READ_CHUNK);
    match timer.timeout(read_timeout, src.read_buf(buf)).await {
        Err(_) => Err(RelayError::ReadTimeout),
        Ok(Err(e)) => Err(RelayError::Read(e)),
        Ok(Ok(0)) if eof_ok => Ok(false),
        Ok(Ok(0)) => Err(RelayError::Read(io::ErrorKind::UnexpectedEof.into())),
        Ok(Ok(_)) => Ok(true),
    }
}

/// A relay's destination: every write must be taken within `limit`.
struct Sink<'a, W> {
    dst: &'a mut W,
    timer: &'a mut Timer,
    limit: Duration,
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    async fn write(&mut self, data: &[u8]) -> Result<(), RelayError> {
        match self
            .timer
            .timeout(self.limit, self.dst.write_all(data))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RelayError::Write(e)),
            Err(_) => Err(RelayError::WriteTimeout),
        }
    }

    async fn emit(
        &mut self,
        data: &[u8],
        out: Out,
        scratch: &mut Vec<u8>,
    ) -> Result<(), RelayError> {
        if data.is_empty() {
            return Ok(());
        }
        match out {
            Out::Raw => self.write(data).await,
            Out::Chunked => {
                use std::io::Write;
                scratch.clear();
                let _ = write!(scratch, "{:x}\r\n", data.len());
                if data.len() <= 8192 {
                    scratch.extend_from_slice(data);
                    scratch.extend_from_slice(b"\r\n");
                    return self.write(scratch).await;
                }
                self.write(scratch).await?;
                self.write(data).await?;
                self.write(b"\r\n").await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Result<(Vec<u8>, bool), BadChunk> {
        let mut buf = BytesMut::from(input);
        let mut d = ChunkDecoder::default();
        let mut data = Vec::new();
        loop {
            match d.next(&mut buf)? {
                Some(Piece::Data(n)) => {
                    data.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                }
                Some(Piece::End) => return Ok((data, true)),
                None => return Ok((data, false)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        let (data, done) =
            decode(b"3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n").unwrap();
        assert_eq!((&data[..], done), (&b"abc0123456789"[..], true));
        let (data, done) = decode(b"3\r\nab").unwrap();
        assert_eq!((&data[..], done), (&b"ab"[..], false));
    }

    /// A tap that uppercases what it is given, holding back every piece until `hold` pieces
    /// came (a filter that pauses), and records each call's size and end flag.
    struct Upper {
        calls: Vec<(usize, bool)>,
        held: Vec<u8>,
        out: Vec<u8>,
        hold: usize,
    }

    impl Tap for Upper {
        fn pass(&mut self, data: &[u8], end: bool) -> Option<&[u8]> {
            self.calls.push((data.len(), end));
            self.held.extend(data.iter().map(u8::to_ascii_uppercase));
            self.out.clear();
            if end || self.calls.len() >= self.hold {
                std::mem::swap(&mut self.out, &mut self.held);
            }
            Some(&self.out)
        }
    }

    async fn tapped_relay(
        input: &[u8],
        framing: Framing,
        out: Out,
        hold: usize,
    ) -> (Vec<u8>, Upper) {
        let mut src = Trickle(input.to_vec());
        let mut dst = Vec::new();
        let mut tap = Upper {
            calls: Vec::new(),
            held: Vec::new(),
            out: Vec::new(),
            hold,
        };
        let pace = Pace {
            read: Duration::from_secs(5),
            write: Duration::from_secs(5),
        };
        let mut buf = BytesMut::new();
        relay(
            &mut src,
            &mut buf,
            framing,
            &mut dst,
            out,
            (&mut Timer::default(), pace),
            &mut Vec::new(),
            Some(&mut tap),
        )
        .await
        .unwrap();
        (dst, tap)
    }

    /// A peer sending `input` 7 bytes at a time.
    struct Trickle(Vec<u8>);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.0.len().min(7).min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0.drain(..n);
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_tap_sees_every_piece_once_and_the_end_and_its_output_is_written() {
        let (out, tap) = tapped_relay(b"hello, world!", Framing::Length(13), Out::Raw, 1).await;
        assert_eq!(out, b"HELLO, WORLD!");
        assert_eq!(tap.calls, vec![(7, false), (6, true)]);
        let chunked = b"5\r\nhello\r\n8\r\n, world!\r\n0\r\n\r\n";
        let (out, tap) = tapped_relay(chunked, Framing::Chunked, Out::Chunked, 1).await;
        assert_eq!(decode(&out), Ok((b"HELLO, WORLD!".to_vec(), true)));
        assert_eq!(tap.calls.last(), Some(&(0, true)), "{:?}", tap.calls);
        assert_eq!(tap.calls.iter().map(|c| c.0).sum::<usize>(), 13);
        // Held back to the end, then passed at once; close-delimited to chunked.
        let (out, tap) = tapped_relay(b"hello, world!", Framing::Close, Out::Chunked, 99).await;
        assert_eq!(out, b"d\r\nHELLO, WORLD!\r\n0\r\n\r\n");
        assert_eq!(tap.calls, vec![(7, false), (6, false), (0, true)]);
    }

    #[test]
    fn bad_chunk_sizes_are_refused() {
        for bad in [
            &b"zz\r\nab\r\n"[..],
            b"-1\r\n",
            b" 3\r\nabc\r\n",
            b"3 \r\nabc\r\n",
            b"0x3\r\nabc\r\n",
            b"3\nabc\r\n",
            b"3\r\nabcd\r\n",
            b"ffffffffffffffffff\r\n",
            b"\r\n",
        ] {
            assert_eq!(
                decode(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
