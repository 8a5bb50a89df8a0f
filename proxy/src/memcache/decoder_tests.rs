//! Decoder tests, driven by wire bytes.

use bytes::BytesMut;

use super::*;
use crate::memcache::request::write_meta_get_as_classic;

const LIMIT: usize = 1024 * 1024;
const BATCH: usize = 64;

fn decode(buf: &mut BytesMut, limit: usize) -> Result<Option<Request>, Refusal> {
    Decoder::new(limit, BATCH).decode(buf)
}

fn one(wire: &[u8]) -> Result<Option<Request>, ProtocolError> {
    decode(&mut BytesMut::from(wire), LIMIT).map_err(|r| r.error)
}

/// Decodes everything in `wire` with one decoder: each request's command (or error), and how
/// many bytes are left over.
fn all(wire: &[u8]) -> (Vec<Result<Command, ProtocolError>>, usize) {
    let mut d = Decoder::new(LIMIT, BATCH);
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(r)) => out.push(Ok(r.command)),
            Ok(None) => break,
            Err(r) => {
                out.push(Err(r.error));
                if r.error.is_fatal() {
                    break;
                }
            }
        }
    }
    (out, buf.len())
}

#[test]
fn every_prefix_of_a_request_is_incomplete() {
    let requests: [&[u8]; 12] = [
        b"get a\r\n",
        b"get a bb ccc\r\n",
        b"gat 10 a b\r\n",
        b"set k 1 2 5\r\nhello\r\n",
        b"cas k 0 0 2 99 noreply\r\nhi\r\n",
        b"delete k\r\n",
        b"incr k 5\r\n",
        b"touch k 10\r\n",
        b"mg k v f\r\n",
        b"ms k 3 T10\r\nabc\r\n",
        b"mn\r\n",
        b"flush_all\r\n",
    ];
    for wire in requests {
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(
                matches!(decode(&mut buf, LIMIT), Ok(None)),
                "{:?}",
                &wire[..cut]
            );
            assert_eq!(
                buf.len(),
                cut,
                "an incomplete request must leave the buffer untouched"
            );
        }
        let r = one(wire).unwrap().unwrap();
        assert_eq!(&r.frame()[..], wire);
    }
}

#[test]
fn the_next_pipelined_request_stays_buffered() {
    let mut buf = BytesMut::from(&b"set k 0 0 2\r\nhi\r\nget k\r\nget"[..]);
    let set = decode(&mut buf, LIMIT).unwrap().unwrap();
    assert_eq!(set.command, Command::Set);
    assert_eq!(set.value(), b"hi");
    assert_eq!(&buf[..], b"get k\r\nget");
    let get = decode(&mut buf, LIMIT).unwrap().unwrap();
    assert_eq!(get.key(), b"k");
    assert!(decode(&mut buf, LIMIT).unwrap().is_none());
    assert_eq!(&buf[..], b"get");
}

#[test]
fn keys_and_fields() {
    let r = one(b"gets  a  bb ccc \r\n").unwrap().unwrap();
    assert_eq!(r.keys().collect::<Vec<_>>(), vec![&b"a"[..], b"bb", b"ccc"]);
    assert_eq!(r.key_count(), 3);
    assert_eq!(r.key(), b"a");
    assert_eq!(&r.frame()[..r.keys_range().start], b"gets  ");
    let r = one(b"gat 100 x y\r\n").unwrap().unwrap();
    assert_eq!(&r.frame()[..r.keys_range().start], b"gat 100 ");
    assert_eq!(r.keys().count(), 2);
    let r = one(b"set k\xff\x80 0 0 3\r\na\r\n\r\n").unwrap().unwrap();
    assert_eq!(r.key(), b"k\xff\x80");
    assert_eq!(r.value(), b"a\r\n");
    let r = one(b"set e 0 0 0\r\n\r\n").unwrap().unwrap();
    assert_eq!(r.value(), b"");
    // A bare \n ends a line too, as memcached allows.
    let r = one(b"get k\n").unwrap().unwrap();
    assert_eq!(r.key(), b"k");
}

#[test]
fn noreply_and_quiet_are_stripped_when_forwarding() {
    let r = one(b"set k 0 0 1 noreply\r\nx\r\n").unwrap().unwrap();
    assert!(r.is_noreply());
    let (a, b) = r.forward_parts();
    assert_eq!([a, b].concat(), b"set k 0 0 1\r\nx\r\n");
    let r = one(b"mg k v q k\r\n").unwrap().unwrap();
    assert!(r.is_silent() && !r.is_noreply());
    let (a, b) = r.forward_parts();
    assert_eq!([a, b].concat(), b"mg k v k\r\n");
    let r = one(b"delete k 0 noreply\r\n").unwrap().unwrap();
    assert!(r.is_noreply());
    let r = one(b"flush_all noreply\r\n").unwrap().unwrap();
    assert!(r.is_noreply());
    let r = one(b"get k\r\n").unwrap().unwrap();
    assert_eq!(r.forward_parts(), (&b"get k\r\n"[..], &b""[..]));
}

#[test]
fn forwarded_requests_know_where_their_key_went() {
    let forward = |wire: &[u8], key: Option<&[u8]>| {
        let r = one(wire).unwrap().unwrap();
        let mut buf = BytesMut::from(&b"before"[..]);
        let span = r.write_forward(&mut buf, key);
        let written = buf.split_off(6);
        (
            written.to_vec(),
            span.of(&written).to_vec(),
            span.is_base64(),
        )
    };
    assert_eq!(
        forward(b"set k 1 2 1 noreply\r\nx\r\n", Some(b"t1/k")),
        (b"set t1/k 1 2 1\r\nx\r\n".to_vec(), b"t1/k".to_vec(), false)
    );
    assert_eq!(
        forward(b"get a bb c\r\n", None),
        (b"get a bb c\r\n".to_vec(), b"a bb c".to_vec(), false)
    );
    assert_eq!(
        forward(b"md Zm9v b q\r\n", None),
        (b"md Zm9v b\r\n".to_vec(), b"Zm9v".to_vec(), true)
    );
    assert_eq!(forward(b"flush_all\r\n", None).1, b"");
}

#[test]
fn a_value_a_plugin_replaced_is_written_with_its_length_and_flags() {
    let stored = |wire: &[u8], key: Option<&[u8]>, flags: u32, data: &[u8]| {
        let r = one(wire).unwrap().unwrap();
        let mut buf = BytesMut::new();
        let span = r.write_stored(&mut buf, key, flags, data);
        (buf.to_vec(), span.of(&buf).to_vec())
    };
    assert_eq!(
        stored(b"set k 1 30 3 noreply\r\nabc\r\n", None, 9, b"xyzxyz"),
        (b"set k 9 30 6\r\nxyzxyz\r\n".to_vec(), b"k".to_vec())
    );
    assert_eq!(
        stored(b"cas k 1 0 3 77\r\nabc\r\n", Some(b"t/k"), 2, b""),
        (b"cas t/k 2 0 0 77\r\n\r\n".to_vec(), b"t/k".to_vec())
    );
    assert_eq!(
        stored(b"ms k 3 T30 F1 q\r\nabc\r\n", None, 5, b"de"),
        (b"ms k 2 T30 F5\r\nde\r\n".to_vec(), b"k".to_vec())
    );
    assert_eq!(
        stored(b"ms k 3\r\nabc\r\n", None, 5, b"de").0,
        b"ms k 2 F5\r\nde\r\n"
    );
    // A base64 key given decoded is written encoded.
    assert_eq!(
        stored(b"ms Zm9v 1 b\r\nx\r\n", Some(b"bar"), 0, b"y"),
        (b"ms YmFy 1 b\r\ny\r\n".to_vec(), b"YmFy".to_vec())
    );
    let r = one(b"mg Zm9v b v\r\n").unwrap().unwrap();
    let mut buf = BytesMut::new();
    r.write_forward(&mut buf, Some(b"bar"));
    assert_eq!(&buf[..], b"mg YmFy b v\r\n");
}

#[test]
fn one_key_retrievals_become_meta_gets() {
    let meta = |wire: &[u8], key: Option<&[u8]>| {
        let r = one(wire).unwrap().unwrap();
        let mut buf = BytesMut::new();
        let span = r.write_as_meta_get(&mut buf, key, 0)?;
        assert_eq!(
            span.of(&buf),
            key.unwrap_or(r.key()),
            "the key's place is known"
        );
        Some(buf.to_vec())
    };
    assert_eq!(meta(b"get k\r\n", None).unwrap(), b"mg k f v\r\n");
    assert_eq!(meta(b"gets  k \r\n", None).unwrap(), b"mg k f v c\r\n");
    assert_eq!(meta(b"gat 10 k\r\n", None).unwrap(), b"mg k f v T10\r\n");
    assert_eq!(meta(b"gats -1 k\r\n", None).unwrap(), b"mg k f v c T-1\r\n");
    let mut buf = BytesMut::new();
    one(b"get k\r\n")
        .unwrap()
        .unwrap()
        .write_as_meta_get(&mut buf, None, 42);
    assert_eq!(&buf[..], b"mg k f v O42\r\n");
    assert_eq!(
        meta(b"get k\r\n", Some(b"new:k")).unwrap(),
        b"mg new:k f v\r\n"
    );
    // Several keys and other commands stay classic (a bad exptime never decodes).
    assert_eq!(meta(b"get a b\r\n", None), None);
    assert!(one(b"gat x k\r\n").is_err());
    assert_eq!(meta(b"delete k\r\n", None), None);
    assert_eq!(meta(b"mg k v\r\n", None), None);
    // And back, for a server without meta.
    for (mg, classic) in [
        (&b"mg k f v\r\n"[..], &b"get k\r\n"[..]),
        (b"mg k f v c\r\n", b"gets k\r\n"),
        (b"mg k f v T10\r\n", b"gat 10 k\r\n"),
        (b"mg new:k f v c T-1\r\n", b"gats -1 new:k\r\n"),
        (b"mg k f v O7\r\n", b"get k\r\n"),
    ] {
        let mut back = BytesMut::new();
        let span = write_meta_get_as_classic(mg, &mut back);
        assert_eq!(&back[..], classic);
        assert_eq!(
            span.of(&back),
            &mg[3..mg.iter().skip(3).position(|&b| b == b' ').unwrap() + 3]
        );
    }
}

#[test]
fn meta_base64_keys_place_by_their_bytes() {
    let r = one(b"mg Zm9v b v\r\n").unwrap().unwrap();
    let mut scratch = [0u8; 512];
    assert_eq!(r.placement_key(&mut scratch), b"foo");
    assert_eq!(
        one(b"mg !!! b v\r\n").unwrap_err(),
        ProtocolError::BadBase64Key
    );
}

#[test]
fn bad_input_gets_memcacheds_answers() {
    // Each as memcached 1.6 answers it (checked against it in tests/tests/corners.rs).
    use ProtocolError::*;
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"bogus\r\n", UnknownCommand),
        (b"\r\n", UnknownCommand),
        (b"GET k\r\n", UnknownCommand),
        (b"g\r\n", UnknownCommand),
        // The wrong number of tokens is an unknown command to memcached.
        (b"get\r\n", UnknownCommand),
        (b"gets\r\n", UnknownCommand),
        (b"set foo 0 0\r\n", UnknownCommand),
        (b"cas foo 0 0 6 \r\n", UnknownCommand),
        (b"set k 0 0 1 a b\r\n", UnknownCommand),
        (b"incr foo\r\n", UnknownCommand),
        (b"delete\r\n", UnknownCommand),
        (b"touch foo\r\n", UnknownCommand),
        (b"verbosity\r\n", UnknownCommand),
        (b"flush_all 0 noreply extra\r\n", UnknownCommand),
        (b"set k x 0 1\r\n", BadFormat),
        (b"set k 0 0 -1\r\n", BadFormat),
        (b"set k 0 0 2147483647\r\n", BadFormat),
        (b"set k 0 0 2147483646\r\n", BadFormat),
        (b"incr k abc\r\n", BadDelta),
        (b"incr k -1\r\n", BadDelta),
        (b"delete k 5\r\n", BadDelete),
        (b"touch k abc\r\n", BadExptime),
        (b"gat abc k\r\n", BadExptime),
        (b"flush_all invalid\r\n", BadExptime),
        (b"get a\x01b\r\n", BadKey),
        (b"get a\tb\r\n", BadKey),
        (b"mg\r\n", UnknownCommand),
        (b"me\r\n", BadFormat),
        (b"verbosity x\r\n", BadFormat),
    ];
    for (wire, want) in cases {
        let mut buf = BytesMut::from(*wire);
        let refusal = decode(&mut buf, LIMIT).unwrap_err();
        assert_eq!(refusal.error, *want, "{:?}", String::from_utf8_lossy(wire));
        assert!(!refusal.noreply, "{:?}", String::from_utf8_lossy(wire));
        assert!(buf.is_empty(), "the bad line is consumed");
    }
    let long_key = [b"get ".as_slice(), &[b'a'; 251], b"\r\n"].concat();
    assert_eq!(one(&long_key).unwrap_err(), BadKey);
    let max_key = [b"get ".as_slice(), &[b'a'; 250], b"\r\n"].concat();
    assert!(one(&max_key).unwrap().is_some());
    // Zero keys after a gat's exptime: answered END, so a request with no keys.
    let r = one(b"gat 10\r\n").unwrap().unwrap();
    assert_eq!((r.command, r.key_count()), (Command::Gat, 0));
}

#[test]
fn noreply_silences_errors_too() {
    for wire in [
        &b"delete k 10 noreply\r\n"[..],
        b"incr k abc noreply\r\n",
        b"touch k abc noreply\r\n",
        b"flush_all abc noreply\r\n",
        b"verbosity abc noreply\r\n",
        b"verbosity noreply\r\n",
        b"set k x 0 1 noreply\r\n",
        b"set k 0 0 2000000 noreply\r\n",
    ] {
        let refusal = decode(&mut BytesMut::from(wire), LIMIT).unwrap_err();
        assert!(refusal.noreply, "{:?}", String::from_utf8_lossy(wire));
    }
    // A line with the wrong number of tokens is not read for noreply, as memcached.
    let refusal = decode(
        &mut BytesMut::from(&b"set foo 0 0 1 noreply extra\r\n"[..]),
        LIMIT,
    )
    .unwrap_err();
    assert_eq!(
        (refusal.error, refusal.noreply),
        (ProtocolError::UnknownCommand, false)
    );
    // A bad data chunk of a classic noreply set is silent; a meta set's never is.
    let (mut d, mut buf) = (
        Decoder::new(LIMIT, BATCH),
        BytesMut::from(&b"set k 0 0 1 noreply\r\nab\r\n"[..]),
    );
    assert!(d.decode(&mut buf).unwrap_err().noreply);
    let (mut d, mut buf) = (
        Decoder::new(LIMIT, BATCH),
        BytesMut::from(&b"ms k 1 q\r\nab\r\n"[..]),
    );
    assert!(!d.decode(&mut buf).unwrap_err().noreply);
}

#[test]
fn lines_that_look_like_http_close_the_connection() {
    for wire in [
        &b"GET / HTTP/1.0\r\n"[..],
        b"POST /x HTTP/1.1\r\n",
        b"HTTP/1.1\r\n",
        b"foo HTTP/1.1\r\n",
        b"PUT /a b c HTTP/2\r\n",
    ] {
        let e = one(wire).unwrap_err();
        assert_eq!(
            e,
            ProtocolError::NotMemcached,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
        assert!(e.is_fatal() && e.reply().is_empty());
    }
    // Not when the last token is something else, nor for a command memcached dispatches by its
    // first letter, nor for a known command.
    for (wire, want) in [
        (&b"GET / HTTP/1.0 x\r\n"[..], ProtocolError::UnknownCommand),
        (b"gxx HTTP/1.1\r\n", ProtocolError::UnknownCommand),
        (b"mz HTTP/1.1\r\n", ProtocolError::UnknownCommand),
        (b"delete a HTTP/1.1\r\n", ProtocolError::BadDelete),
    ] {
        assert_eq!(
            one(wire).unwrap_err(),
            want,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    assert_eq!(one(b"get a HTTP/1.1\r\n").unwrap().unwrap().key_count(), 2);
}

#[test]
fn bad_input_mid_pipeline_leaves_the_rest_intact() {
    // A data block of the wrong length: exactly the promised bytes are taken, and what
    // follows is read as commands (here an empty line), as memcached reads it.
    let (out, left) = all(b"get a\r\nbogus\r\nset k 0 0 1\r\nabc\r\nget b\r\nincr k x\r\nmn\r\n");
    assert_eq!(
        out,
        vec![
            Ok(Command::Get),
            Err(ProtocolError::UnknownCommand),
            Err(ProtocolError::BadDataChunk),
            Err(ProtocolError::UnknownCommand),
            Ok(Command::Get),
            Err(ProtocolError::BadDelta),
            Ok(Command::MetaNoop),
        ]
    );
    assert_eq!(left, 0);
}

#[test]
fn what_is_decoded_does_not_depend_on_how_the_bytes_arrive() {
    let wire: &[u8] = b"set k 0 0 3\r\nabcdef\r\nget k\r\nset big 0 0 2000000 noreply\r\nxx\r\nmn\r\nget k a b\r\n";
    let (whole, _) = all(wire);
    for cut in 0..wire.len() {
        let mut d = Decoder::new(LIMIT, BATCH);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in [&wire[..cut], &wire[cut..]] {
            buf.extend_from_slice(part);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(r)) => out.push(Ok(r.command)),
                    Ok(None) => break,
                    Err(r) => out.push(Err(r.error)),
                }
            }
        }
        assert_eq!(out, whole, "split at {cut}");
    }
}

#[test]
fn a_value_that_is_too_large_is_skipped_not_buffered() {
    let mut d = Decoder::new(LIMIT, BATCH);
    let mut buf = BytesMut::from(&b"set k 0 0 2000000\r\nxxxx"[..]);
    let refusal = d.decode(&mut buf).unwrap_err();
    assert_eq!(refusal.error, ProtocolError::TooLarge);
    assert_eq!(
        refusal.unlink.as_ref().map(|(k, b64)| (&k[..], *b64)),
        Some((&b"k"[..], false))
    );
    // The value is dropped as it comes, never held.
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
    buf.extend_from_slice(&vec![b'x'; 1_999_996]);
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
    buf.extend_from_slice(b"\r\nget k\r\n");
    assert_eq!(d.decode(&mut buf).unwrap().unwrap().command, Command::Get);
    // A meta set too large unlinks too (with its base64 key as written); add, append and cas
    // do not, as memcached.
    let refusal = decode(&mut BytesMut::from(&b"ms aw== 2000000 b T0\r\n"[..]), LIMIT).unwrap_err();
    assert_eq!(refusal.error, ProtocolError::TooLarge);
    assert_eq!(
        refusal.unlink.as_ref().map(|(k, b64)| (&k[..], *b64)),
        Some((&b"aw=="[..], true))
    );
    for wire in [
        &b"add k 0 0 2000000\r\n"[..],
        b"append k 0 0 2000000\r\n",
        b"cas k 0 0 2000000 1\r\n",
    ] {
        let refusal = decode(&mut BytesMut::from(wire), LIMIT).unwrap_err();
        assert_eq!(
            (refusal.error, refusal.unlink),
            (ProtocolError::TooLarge, None)
        );
    }
    let mut buf = BytesMut::from(&b"set k 0 0 1048576\r\n"[..]);
    assert!(
        decode(&mut buf, LIMIT).unwrap().is_none(),
        "exactly the limit is fine"
    );
}

#[test]
fn a_refused_meta_set_skips_its_data_block_as_memcached_does() {
    // As memcached 1.6: a meta set refused for its flags or base64 key swallows its data; a
    // malformed classic set does not (its data is read as commands, as memcached reads it).
    for wire in [&b"ms k 18 ?\r\n"[..], b"ms !!!! 18 b\r\n"] {
        let mut line = wire.to_vec();
        line.extend_from_slice(b"delete swallow:1:0\r\nmn\r\n");
        let (out, left) = all(&line);
        assert_eq!(out.len(), 2, "{:?}: {out:?}", String::from_utf8_lossy(wire));
        assert_eq!(out[1], Ok(Command::MetaNoop));
        assert_eq!(left, 0);
    }
    let long_key = [b"ms ".as_slice(), &[b'k'; 251], b" 18\r\n"].concat();
    for wire in [&b"set k\x01 0 0 18\r\n"[..], b"set k x 0 18\r\n", &long_key] {
        let mut line = wire.to_vec();
        line.extend_from_slice(b"delete swallow:1:0\r\nmn\r\n");
        let (out, _) = all(&line);
        assert_eq!(
            out[1..],
            [Ok(Command::Delete), Ok(Command::MetaNoop)],
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn memcached_leniencies_are_kept() {
    // A stray last word where `noreply` may stand is ignored; version and mn take any tail.
    let r = one(b"set k 0 0 1 norepy\r\nx\r\n").unwrap().unwrap();
    assert!(!r.is_noreply());
    assert!(one(b"version foo bar\r\n").unwrap().is_some());
    // `verbosity noreply` is memcached's bad number, answered with nothing.
    let refusal = decode(&mut BytesMut::from(&b"verbosity noreply\r\n"[..]), LIMIT).unwrap_err();
    assert!(refusal.noreply);
    assert!(
        one(b"verbosity 1 noreply\r\n")
            .unwrap()
            .unwrap()
            .is_noreply()
    );
}

#[test]
fn a_line_without_end_is_fatal_past_the_bound() {
    let mut buf = BytesMut::from(&vec![b'g'; MAX_LINE][..]);
    assert!(decode(&mut buf, LIMIT).unwrap().is_none());
    buf.extend_from_slice(b"g");
    let e = decode(&mut buf, LIMIT).unwrap_err().error;
    assert_eq!(e, ProtocolError::LineTooLong);
    assert!(e.is_fatal());
    // Not for a retrieval: its keys are read as they come.
    let mut d = Decoder::new(LIMIT, BATCH);
    let mut buf = BytesMut::from(&b"get "[..]);
    let mut batches = 0;
    for i in 0..(MAX_LINE / 4) {
        buf.extend_from_slice(format!("k{i:05} ").as_bytes());
        while let Some(r) = d.decode(&mut buf).unwrap() {
            assert_eq!((r.part, r.key_count()), (Part::Leading, BATCH));
            batches += 1;
        }
        assert!(
            buf.len() < 20 * 1024,
            "the line is not held: {} bytes",
            buf.len()
        );
    }
    assert!(batches > 400);
}

#[test]
fn a_retrieval_with_many_keys_is_read_in_batches_in_key_order() {
    let keys: Vec<String> = (0..150).map(|i| format!("key{i}")).collect();
    for (command, prefix) in [("get", "get "), ("gats", "gats 30 ")] {
        let wire = format!(
            "{command}{} {}\r\nmn\r\n",
            if command == "gats" { " 30" } else { "" },
            keys.join("  ")
        );
        let mut d = Decoder::new(LIMIT, BATCH);
        let mut buf = BytesMut::from(wire.as_bytes());
        let mut seen = Vec::new();
        let mut parts = Vec::new();
        while let Some(r) = d.decode(&mut buf).unwrap() {
            if r.command == Command::MetaNoop {
                break;
            }
            assert!(r.frame().starts_with(prefix.as_bytes()), "{:?}", r.frame());
            assert!(r.key_count() <= BATCH);
            parts.push(r.part);
            seen.extend(r.keys().map(|k| String::from_utf8(k.to_vec()).unwrap()));
        }
        assert_eq!(seen, keys);
        assert_eq!(parts, [Part::Leading, Part::Leading, Part::Last]);
        assert!(buf.is_empty(), "mn was read after the line");
    }
    // A line that ends right after a full batch ends with an empty last batch (its END).
    let wire = format!(
        "get {}\r\n",
        keys[..BATCH].join(" ") + " " + &keys[BATCH..2 * BATCH].join(" ")
    );
    let mut d = Decoder::new(LIMIT, BATCH);
    let mut buf = BytesMut::from(wire.as_bytes());
    let counts: Vec<(usize, Part)> = std::iter::from_fn(|| d.decode(&mut buf).unwrap())
        .map(|r| (r.key_count(), r.part))
        .collect();
    assert_eq!(counts, [(BATCH, Part::Leading), (BATCH, Part::Last)]);
}

#[test]
fn a_bad_key_in_a_line_read_in_batches_ends_it() {
    // Complete in the buffer: the whole line is refused, as memcached refuses it.
    let mut keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    keys[80] = "x".repeat(251);
    let (out, left) = all(format!("get {}\r\nmn\r\n", keys.join(" ")).as_bytes());
    assert_eq!(out, [Err(ProtocolError::BadKey), Ok(Command::MetaNoop)]);
    assert_eq!(left, 0);
    // Read as it comes (a line too long to hold): the batches before it stand, then the
    // error, and the rest of the line is dropped.
    let mut keys: Vec<String> = (0..4000).map(|i| format!("k{i}")).collect();
    keys[3000] = "x".repeat(251);
    let mut d = Decoder::new(LIMIT, BATCH);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let wire = format!("get {} \r\nmn\r\n", keys.join(" "));
    for chunk in wire.as_bytes().chunks(300) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => out.push(Ok((r.command, r.part))),
                Ok(None) => break,
                Err(r) => out.push(Err(r.error)),
            }
        }
    }
    let leading = out
        .iter()
        .take_while(|r| **r == Ok((Command::Get, Part::Leading)))
        .count();
    assert!((1..=3000 / BATCH).contains(&leading), "{out:?}");
    assert_eq!(
        out[leading..],
        [
            Err(ProtocolError::BadKey),
            Ok((Command::MetaNoop, Part::Whole))
        ]
    );
}

#[test]
fn binary_values_with_crlf_inside_round_trip() {
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\n\r\n").collect();
    let wire = [
        format!("set bin 7 0 {}\r\n", value.len()).as_bytes(),
        &value,
        b"\r\n",
    ]
    .concat();
    let r = one(&wire).unwrap().unwrap();
    assert_eq!(r.value(), &value[..]);
}
