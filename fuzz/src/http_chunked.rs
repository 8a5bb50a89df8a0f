//! The chunked body decoder, fed as a relay feeds it: pieces of data taken off the front of a
//! growing buffer until the body ends.
//!
//! Invariants: a data piece is never empty and lies within the buffer; the body never holds
//! more bytes than the input; the decoder stops at the body's end, leaving what follows (a
//! pipelined request) untouched; a whole body decodes to data that, chunked again, decodes to
//! the same data; the results are the same however the input is split into two reads.

use bytes::{Buf, BytesMut};
use walnut::http::body::{BadChunk, ChunkDecoder, Piece};

/// The one call into the decoder.
fn next(decoder: &mut ChunkDecoder, buf: &mut BytesMut) -> Result<Option<Piece>, BadChunk> {
    decoder.next(buf)
}

pub const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"0\r\n\r\n",
    b"3\r\nabc\r\n",
    b"a;ext=1\r\n",
    b";",
    b"0",
    b"f",
    b"F",
    b"fffffffffffffff",
    b"X-Trailer: 1\r\n",
    b"\n",
    b" ",
];

#[derive(Debug, PartialEq)]
enum End {
    /// More input is needed.
    Open,
    Done,
    Bad,
}

#[derive(Debug, PartialEq)]
struct Body {
    data: Vec<u8>,
    end: End,
    /// The bytes left in the buffer.
    rest: Vec<u8>,
}

/// A relay's source: bytes arrive and are decoded as they come.
struct Relay {
    decoder: ChunkDecoder,
    buf: BytesMut,
    body: Body,
}

impl Relay {
    fn new() -> Relay {
        Relay {
            decoder: ChunkDecoder::default(),
            buf: BytesMut::new(),
            body: Body {
                data: Vec::new(),
                end: End::Open,
                rest: Vec::new(),
            },
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while self.body.end == End::Open {
            let before = self.buf.len();
            match next(&mut self.decoder, &mut self.buf) {
                Ok(Some(Piece::Data(n))) => {
                    assert!(
                        n > 0 && n <= self.buf.len(),
                        "a piece of {n} in {}",
                        self.buf.len()
                    );
                    self.body.data.extend_from_slice(&self.buf[..n]);
                    self.buf.advance(n);
                }
                Ok(Some(Piece::End)) => self.body.end = End::Done,
                Ok(None) => break,
                Err(BadChunk) => self.body.end = End::Bad,
            }
            assert!(self.buf.len() <= before);
        }
        self.body.rest = self.buf.to_vec();
    }
}

pub fn run(data: &[u8]) {
    let mut whole = Relay::new();
    whole.feed(data);
    let body = &whole.body;
    assert!(body.data.len() + body.rest.len() <= data.len());
    assert!(
        data.ends_with(&body.rest),
        "bytes after the body were changed"
    );
    for cut in crate::cuts(data) {
        let mut split = Relay::new();
        split.feed(&data[..cut]);
        split.feed(&data[cut..]);
        assert_eq!(
            split.body,
            whole.body,
            "split at {cut}: {}",
            crate::show(data)
        );
    }
    if body.end == End::Done {
        let mut again = Vec::new();
        for piece in body.data.chunks(7) {
            again.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            again.extend_from_slice(piece);
            again.extend_from_slice(b"\r\n");
        }
        again.extend_from_slice(b"0\r\n\r\n");
        let mut relay = Relay::new();
        relay.feed(&again);
        assert_eq!(
            (relay.body.data, relay.body.end),
            (body.data.clone(), End::Done)
        );
    }
}
