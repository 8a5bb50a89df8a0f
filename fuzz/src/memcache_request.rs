//! The memcached request decoder, fed as a client connection feeds it: one `Decoder` per
//! connection, bytes arriving in reads, requests taken until it needs more (the decoder itself
//! swallows a refused request's data block and reads long retrievals in batches), nothing read
//! after `quit` or a fatal error.
//!
//! Invariants: the decoder only ever takes bytes from the front of the buffer, and at least one
//! per refusal unless it is fatal; a whole request's frame is the last bytes taken; its keys
//! are valid keys and as many as it says; a request sent on to a server re-encodes
//! (`write_forward`, with its own key or a plugin's) to bytes that decode to the same command,
//! keys and value, and are never silent, since walnut drops the reply to `noreply` and `q`
//! itself; a one-key retrieval written as a meta get, and that written back as a classic one,
//! decode to the same key; the outcomes (a line read in batches counted as one request) are
//! the same however the input is split into two reads.

use bytes::BytesMut;
use walnut::memcache::request::{MAX_KEY_LEN, check_key, write_meta_get_as_classic};
use walnut::memcache::{Command, Decoder, Part, Refusal, Request};

/// Small, so that the "too large" path is easy to reach.
const ITEM_SIZE_MAX: usize = 1024;
/// Keys per batch of a long retrieval: small, so batches are easy to reach.
const BATCH_KEYS: usize = 4;

/// The one way into the decoder.
fn decoder() -> Decoder {
    Decoder::new(ITEM_SIZE_MAX, BATCH_KEYS)
}

pub const TOKENS: &[&[u8]] = &[
    b"get ",
    b"gets ",
    b"gat ",
    b"gats ",
    b"set ",
    b"add ",
    b"replace ",
    b"append ",
    b"prepend ",
    b"cas ",
    b"delete ",
    b"incr ",
    b"decr ",
    b"touch ",
    b"mg ",
    b"ms ",
    b"md ",
    b"ma ",
    b"me ",
    b"mn",
    b"version",
    b"verbosity ",
    b"stats",
    b"flush_all",
    b"quit",
    b" noreply",
    b" q",
    b" b",
    b" v",
    b" f",
    b" c",
    b" T",
    b" k",
    b"\r\n",
    b"\n",
    b" ",
    b"  ",
    b"a2V5",
    b"=",
    b"key",
    b" 0 0 ",
    b"\r\nabc\r\n",
];

#[derive(Debug, PartialEq)]
enum Outcome {
    /// A request (a line read in batches: all its keys, once its last batch came).
    Request {
        command: Command,
        keys: Vec<Vec<u8>>,
        value: Vec<u8>,
    },
    Refused(Refusal),
}

/// A client connection's input, read as the session reads it.
struct Conn {
    decoder: Decoder,
    buf: BytesMut,
    /// After `quit` or a fatal error nothing more is read.
    done: bool,
    /// The keys of a line read in batches so far.
    open: Option<(Command, Vec<Vec<u8>>)>,
    outcomes: Vec<Outcome>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            decoder: decoder(),
            buf: BytesMut::new(),
            done: false,
            open: None,
            outcomes: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while !self.done {
            let before = self.buf.to_vec();
            let result = self.decoder.decode(&mut self.buf);
            let consumed = before
                .len()
                .checked_sub(self.buf.len())
                .expect("decoding grew the buffer");
            assert_eq!(
                &before[consumed..],
                &self.buf[..],
                "decoding changed bytes it did not take: {}",
                crate::show(&before)
            );
            match result {
                Ok(None) => return,
                Ok(Some(req)) => {
                    if req.part == Part::Whole {
                        // After the data block of a refused request it swallowed.
                        assert!(
                            before[..consumed].ends_with(req.frame()),
                            "the frame is not the last bytes taken: {}",
                            crate::show(&before)
                        );
                    }
                    check(&req);
                    self.done = req.command == Command::Quit;
                    let keys = req.keys().map(<[u8]>::to_vec);
                    let keys = match req.part {
                        Part::Whole => keys.collect(),
                        Part::Leading | Part::Last => {
                            let (command, so_far) =
                                self.open.get_or_insert_with(|| (req.command, Vec::new()));
                            assert_eq!(*command, req.command, "one line, one command");
                            so_far.extend(keys);
                            if req.part == Part::Leading {
                                continue;
                            }
                            self.open.take().expect("open").1
                        }
                    };
                    self.outcomes.push(Outcome::Request {
                        command: req.command,
                        keys,
                        value: req.value().to_vec(),
                    });
                }
                Err(refusal) => {
                    assert!(refusal.error.reply().ends_with(b"\r\n") || refusal.error.is_fatal());
                    if refusal.error.is_fatal() {
                        self.done = true;
                    } else {
                        assert!(
                            consumed > 0,
                            "a refusal took nothing: the session would spin on {}",
                            crate::show(&before)
                        );
                    }
                    // A refusal ends a line read in batches.
                    self.open = None;
                    self.outcomes.push(Outcome::Refused(refusal));
                }
            }
        }
    }
}

/// Decodes `bytes` as one whole request, or fails naming what it is.
fn decode_one(bytes: &[u8], what: &str) -> Request {
    let mut buf = BytesMut::from(bytes);
    match decoder().decode(&mut buf) {
        Ok(Some(req)) => {
            assert!(
                buf.is_empty(),
                "{what} holds more than one request: {}",
                crate::show(bytes)
            );
            req
        }
        other => panic!("{what} {} decodes as {other:?}", crate::show(bytes)),
    }
}

fn check(req: &Request) {
    let frame = req.frame();
    assert!(frame.ends_with(b"\n"));
    let keys: Vec<&[u8]> = req.keys().collect();
    assert_eq!(keys.len(), req.key_count());
    let mut probe = BytesMut::new();
    let base64 = req.write_forward(&mut probe, None).is_base64();
    // Only `gat <exptime>` and the last batch of a long line may come without a key.
    let keyless_retrieval = req.command.is_retrieval()
        && (req.part == Part::Last || req.command.is_touching_retrieval());
    if req.command.is_keyed() && !(keys.is_empty() && keyless_retrieval) {
        assert!(!keys.is_empty(), "a keyed command without a key");
        let mut scratch = [0u8; 512];
        let placed = req.placement_key(&mut scratch);
        assert!(!placed.is_empty() && placed.len() <= MAX_KEY_LEN);
        if !base64 {
            for key in &keys {
                assert!(check_key(key).is_ok(), "bad key {}", crate::show(key));
            }
        }
    } else {
        assert!(keys.is_empty());
    }
    let _ = req.storage_fields();
    let _ = req.tokens().count();
    if (req.command.is_keyed() && !keys.is_empty()) || req.command == Command::FlushAll {
        forwarded(req, &keys, None);
        if req.command.is_keyed() && !base64 && req.key_count() == 1 {
            forwarded(req, &[b"rewritten:key"], Some(b"rewritten:key"));
        }
    }
    meta_get(req);
}

/// What a server gets for `req`, with its key replaced by `key` if given, decodes to the same
/// request, answered.
fn forwarded(req: &Request, keys: &[&[u8]], key: Option<&[u8]>) {
    let mut fwd = BytesMut::new();
    let span = req.write_forward(&mut fwd, key);
    let fwd = fwd.to_vec();
    let what = format!("the forwarded request (for {})", crate::show(req.frame()));
    let again = decode_one(&fwd, &what);
    assert_eq!(span.of(&fwd), &fwd[again.keys_range()], "KeySpan");
    assert_eq!(again.command, req.command);
    assert_eq!(again.keys().collect::<Vec<_>>(), keys);
    assert_eq!(again.value(), req.value());
    assert!(
        !again.is_silent(),
        "the server would not answer {} (sent for {})",
        crate::show(&fwd),
        crate::show(req.frame())
    );
}

/// A one-key retrieval as a meta get, and back.
fn meta_get(req: &Request) {
    let mut mg = BytesMut::new();
    let Some(span) = req.write_as_meta_get(&mut mg, None, 0) else {
        assert!(!req.fits_meta_get() && mg.is_empty());
        return;
    };
    let mg = mg.to_vec();
    assert_eq!(span.of(&mg), req.key());
    let m = decode_one(&mg, "the meta get");
    assert_eq!((m.command, m.key()), (Command::MetaGet, req.key()));
    assert!(!m.is_silent());
    let mut classic = BytesMut::new();
    let span = write_meta_get_as_classic(&mg, &mut classic);
    let classic = classic.to_vec();
    assert_eq!(span.of(&classic), req.key());
    let c = decode_one(&classic, "the classic retrieval");
    assert_eq!((c.command, c.key()), (req.command, req.key()));
    assert_eq!(c.tokens().next(), req.tokens().next(), "exptime");
}

pub fn run(data: &[u8]) {
    let mut whole = Conn::new();
    whole.feed(data);
    for cut in crate::cuts(data) {
        let mut split = Conn::new();
        split.feed(&data[..cut]);
        split.feed(&data[cut..]);
        assert_eq!(
            (&split.outcomes, split.done),
            (&whole.outcomes, whole.done),
            "split at {cut}: {}",
            crate::show(data)
        );
    }
}
