//! Every encoding walnut writes, read back by the SDK's own decoders (and the reverse for
//! what plugins answer): the host's side and the plugin's side of the ABI cannot drift apart.

use super::*;
use crate::{Command, HttpRequest, HttpResponse, MemcacheRequest, Value};

#[test]
fn memcache_requests_round_trip() {
    let mut buf = Vec::new();
    let req = McRequest {
        command: b"ms",
        key: b"k\x00binary",
        flags: 7,
        exptime: -1,
        value_len: 100,
        meta_flags: b"T30 F7 q",
    };
    encode_memcache(&mut buf, &req);
    assert_eq!(decode_memcache(&buf), Some(req));
    let sdk = crate::rt::decode_memcache(&buf).unwrap();
    assert_eq!(
        sdk,
        MemcacheRequest::new(Command::MetaSet, b"k\x00binary")
            .with_storage(7, -1, 100)
            .with_meta_flags("T30 F7 q")
    );
    assert_eq!(
        sdk.meta_flags().collect::<Vec<_>>(),
        [&b"T30"[..], b"F7", b"q"]
    );
    for cut in 0..buf.len() {
        assert!(decode_memcache(&buf[..cut]).is_none(), "cut at {cut}");
    }
    // A command the SDK does not know is refused, not guessed.
    let mut buf = Vec::new();
    encode_memcache(
        &mut buf,
        &McRequest {
            command: b"quit",
            ..req
        },
    );
    assert!(crate::rt::decode_memcache(&buf).is_none());
}

#[test]
fn values_round_trip() {
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut buf = Vec::new();
    encode_value(
        &mut buf,
        &ValueParts {
            command: b"set",
            key: b"k",
            flags: u32::MAX,
            meta_flags: b"",
            data: &data,
        },
    );
    assert_eq!(
        crate::rt::decode_value(&buf),
        Some(Value::new(Command::Set, b"k", u32::MAX, data.clone()))
    );
    buf.clear();
    encode_value(
        &mut buf,
        &ValueParts {
            command: b"ms",
            key: b"k",
            flags: 0,
            meta_flags: b"MA q",
            data: b"x",
        },
    );
    let appended = crate::rt::decode_value(&buf).expect("decodes");
    assert_eq!(appended.mode(), Some(crate::StoreMode::Append));
    assert_eq!(
        appended.meta_flags().collect::<Vec<_>>(),
        [&b"MA"[..], b"q"]
    );
    let mut answer = Vec::new();
    encode_new_value(&mut answer, 9, &data);
    assert_eq!(decode_new_value(&answer), Some((9, &data[..])));
    assert!(decode_new_value(&answer[..answer.len() - 1]).is_none());
}

#[test]
fn http_requests_round_trip() {
    let mut buf = Vec::new();
    let headers = [(&b"Host"[..], &b"a"[..]), (b"X-A", b"1")];
    encode_http_request(&mut buf, b"GET", b"/p", b"q=1", headers.into_iter());
    let sdk = crate::rt::decode_http(&buf).unwrap();
    assert_eq!(
        sdk,
        HttpRequest::new("GET", "/p?q=1")
            .with_header("Host", "a")
            .with_header("X-A", "1")
    );
    assert!(decode_http_request(&buf[..buf.len() - 1]).is_none());
}

#[test]
fn http_response_heads_and_their_edits_round_trip() {
    let mut buf = Vec::new();
    encode_http_response_head(&mut buf, 404, [(&b"Server"[..], &b"up"[..])].into_iter());
    let mut resp = crate::rt::decode_http_response(&buf).unwrap();
    assert_eq!(resp, HttpResponse::new(404).with_header("Server", "up"));
    resp.add_header("X-A", "1");
    resp.set_header("Server", "walnut");
    resp.remove_header("X-Gone");
    let mut ops = Vec::new();
    encode_header_ops(
        &mut ops,
        resp.edits
            .iter()
            .map(|(op, n, v)| (*op as u8, n.as_bytes(), v.as_bytes())),
    );
    assert_eq!(
        decode_header_ops(&ops),
        Some(vec![
            (2, &b"X-A"[..], &b"1"[..]),
            (1, b"Server", b"walnut"),
            (0, b"X-Gone", b""),
        ])
    );
    assert!(
        decode_header_ops(&[1, 0, 3]).is_none(),
        "an unknown operation"
    );
}

#[test]
fn responses_round_trip() {
    let mut buf = Vec::new();
    encode_response(
        &mut buf,
        403,
        &[("x-why".into(), "guard".into())],
        b"forbidden\n",
    );
    let r = decode_response(&buf).unwrap();
    assert_eq!(
        (r.status, r.headers, r.body),
        (
            403,
            vec![(&b"x-why"[..], &b"guard"[..])],
            &b"forbidden\n"[..]
        )
    );
}

#[test]
fn http_edits_round_trip() {
    let edits = HttpEdits {
        path: Some(b"/new"),
        query: None,
        headers: vec![(b"x-a", Some(b"1")), (b"x-b", None)],
        hash_key: Some(b"user7"),
    };
    let mut buf = Vec::new();
    encode_http_edits(&mut buf, &edits);
    assert_eq!(decode_http_edits(&buf), Some(edits));
    assert!(decode_http_edits(&buf[..buf.len() - 1]).is_none());
}
