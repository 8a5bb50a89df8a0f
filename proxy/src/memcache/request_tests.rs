//! Codec tests, driven by wire bytes.

use bytes::BytesMut;

use super::*;

const LIMIT: usize = 1024 * 1024;

fn one(wire: &[u8]) -> Result<Option<Request>, ProtocolError> {
    decode(&mut BytesMut::from(wire), LIMIT).map_err(|r| r.error)
}

/// Decodes everything in `wire`: each request's command or error, and what is left over.
fn all(wire: &[u8]) -> (Vec<Result<Command, ProtocolError>>, usize) {
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    loop {
        match decode(&mut buf, LIMIT) {
            Ok(Some(r)) => out.push(Ok(r.command)),
            Ok(None) => break,
            Err(r) => {
                out.push(Err(r.error));
                if r.error.is_fatal() {
                    break;
                }
                // As the session does: the refused request's data block is skipped.
                let _ = buf.split_to(r.skip.min(buf.len()));
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
fn one_key_retrievals_become_meta_gets() {
    let meta = |wire: &[u8], key: Option<&[u8]>| {
        let r = one(wire).unwrap().unwrap();
        let mut buf = BytesMut::new();
        let span = r.write_as_meta_get(&mut buf, key)?;
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
    let cases: [(&[u8], ProtocolError); 16] = [
        (b"bogus\r\n", ProtocolError::UnknownCommand),
        (b"\r\n", ProtocolError::UnknownCommand),
        (b"GET k\r\n", ProtocolError::UnknownCommand),
        (b"get\r\n", ProtocolError::BadFormat),
        (b"set k 0 0\r\n", ProtocolError::BadFormat),
        (b"set k x 0 1\r\n", ProtocolError::BadFormat),
        (b"set k 0 0 -1\r\n", ProtocolError::BadFormat),
        (b"set k 0 0 1 a b\r\n", ProtocolError::BadFormat),
        (b"incr k abc\r\n", ProtocolError::BadDelta),
        (b"incr k -1\r\n", ProtocolError::BadDelta),
        (b"delete k 5\r\n", ProtocolError::BadDelete),
        (b"get a\x01b\r\n", ProtocolError::BadKey),
        (b"get a\tb\r\n", ProtocolError::BadKey),
        (b"touch k\r\n", ProtocolError::BadFormat),
        (b"mg\r\n", ProtocolError::BadFormat),
        (b"verbosity\r\n", ProtocolError::UnknownCommand),
    ];
    for (wire, want) in cases {
        let mut buf = BytesMut::from(wire);
        let refusal = decode(&mut buf, LIMIT).unwrap_err();
        assert_eq!(refusal.error, want, "{:?}", String::from_utf8_lossy(wire));
        assert!(buf.is_empty(), "the bad line is consumed");
    }
    let long_key = [b"get ".as_slice(), &[b'a'; 251], b"\r\n"].concat();
    assert_eq!(one(&long_key).unwrap_err(), ProtocolError::BadKey);
    let max_key = [b"get ".as_slice(), &[b'a'; 250], b"\r\n"].concat();
    assert!(one(&max_key).unwrap().is_some());
}

#[test]
fn bad_input_mid_pipeline_leaves_the_rest_intact() {
    let (out, left) = all(b"get a\r\nbogus\r\nset k 0 0 1\r\nabc\r\nget b\r\nincr k x\r\nmn\r\n");
    assert_eq!(
        out,
        vec![
            Ok(Command::Get),
            Err(ProtocolError::UnknownCommand),
            Err(ProtocolError::BadDataChunk),
            Ok(Command::Get),
            Err(ProtocolError::BadDelta),
            Ok(Command::MetaNoop),
        ]
    );
    assert_eq!(left, 0);
}

#[test]
fn a_value_that_is_too_large_is_skipped_not_buffered() {
    let mut buf = BytesMut::from(&b"set k 0 0 2000000\r\nxxxx"[..]);
    let refusal = decode(&mut buf, LIMIT).unwrap_err();
    assert_eq!(
        refusal,
        Refusal {
            error: ProtocolError::TooLarge,
            skip: 2_000_002
        }
    );
    assert_eq!(
        &buf[..],
        b"xxxx",
        "only the line is consumed; the caller skips the value"
    );
    let mut buf = BytesMut::from(&b"ms k 2000000 T0\r\n"[..]);
    let refusal = decode(&mut buf, LIMIT).unwrap_err();
    assert_eq!(
        refusal,
        Refusal {
            error: ProtocolError::TooLarge,
            skip: 2_000_002
        }
    );
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
        let refusal = decode(&mut BytesMut::from(wire), LIMIT).unwrap_err();
        assert_eq!(refusal.skip, 20, "{:?}", String::from_utf8_lossy(wire));
    }
    let long_key = [b"ms ".as_slice(), &[b'k'; 251], b" 18\r\n"].concat();
    for wire in [&b"set k\x01 0 0 18\r\n"[..], b"set k x 0 18\r\n", &long_key] {
        let refusal = decode(&mut BytesMut::from(wire), LIMIT).unwrap_err();
        assert_eq!(refusal.skip, 0, "{:?}", String::from_utf8_lossy(wire));
    }
    let (out, left) = all(b"ms k 18 ?\r\ndelete swallow:1:0\r\nget swallow:1:0\r\n");
    assert_eq!(out, vec![Err(ProtocolError::BadFormat), Ok(Command::Get)]);
    assert_eq!(left, 0);
}

#[test]
fn memcached_leniencies_are_kept() {
    // A stray last word where `noreply` may stand is ignored; version and mn take any tail.
    let r = one(b"set k 0 0 1 norepy\r\nx\r\n").unwrap().unwrap();
    assert!(!r.is_noreply());
    assert!(one(b"version foo bar\r\n").unwrap().is_some());
    assert!(one(b"verbosity noreply\r\n").unwrap().unwrap().is_noreply());
}

#[test]
fn a_line_without_end_is_fatal_past_the_bound() {
    let mut buf = BytesMut::from(&vec![b'g'; MAX_LINE][..]);
    assert!(decode(&mut buf, LIMIT).unwrap().is_none());
    buf.extend_from_slice(b"g");
    let e = decode(&mut buf, LIMIT).unwrap_err().error;
    assert_eq!(e, ProtocolError::LineTooLong);
    assert!(e.is_fatal());
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
