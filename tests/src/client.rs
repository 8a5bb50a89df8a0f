//! A raw memcached text-protocol client and reply framing.

#[allow(unused_imports)]
use super::*;

/// A raw memcached text-protocol client: send bytes, read whole replies.
pub struct Client {
    stream: TcpStream,
    pub(crate) buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client on a connection already open.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// Reads until `n` complete replies have arrived (VALUE blocks and data counted in) and
    /// returns their bytes.
    pub fn read_replies(&mut self, n: usize) -> Vec<u8> {
        let mut end = 0;
        for _ in 0..n {
            end = loop {
                if let Some(len) = reply_len(&self.buf[end..]) {
                    break end + len;
                }
                self.fill();
            };
        }
        self.buf.drain(..end).collect()
    }

    /// Sends `request` and returns its one reply's bytes.
    pub fn call_raw(&mut self, request: &[u8]) -> Vec<u8> {
        self.send(request);
        self.read_replies(1)
    }

    /// Sends `request` and returns its one reply as text (lossy).
    pub fn call(&mut self, request: &[u8]) -> String {
        self.send(request);
        String::from_utf8_lossy(&self.read_replies(1)).into_owned()
    }

    /// `set` then expect `STORED`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        let mut req = b"set ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        let reply = self.call(&req);
        assert_eq!(reply, "STORED\r\n", "set {}", String::from_utf8_lossy(key));
    }

    /// `get` one key: its value, or None on a miss. Panics on an error reply.
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let mut req = b"get ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(b"\r\n");
        self.send(&req);
        let reply = self.read_replies(1);
        if reply == b"END\r\n" {
            return None;
        }
        assert!(
            reply.starts_with(b"VALUE "),
            "get {}: {}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&reply)
        );
        let nl = reply.iter().position(|&b| b == b'\n').expect("line");
        Some(reply[nl + 1..reply.len() - 7].to_vec())
    }

    /// True when the server closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }

    pub(crate) fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).expect("read from server");
        assert!(
            n > 0,
            "server closed the connection; got so far: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the first complete reply in `buf`: a line, a VALUE... END sequence, or a
/// meta VA block.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let nl = pos + buf[pos..].iter().position(|&b| b == b'\n')?;
        let line = &buf[pos..nl + 1];
        let data_len = |line: &[u8], idx: usize| -> usize {
            // Split on the protocol's separator only: keys may hold any other byte.
            let line = line.strip_suffix(b"\r\n").unwrap_or(line);
            let token = line
                .split(|&b| b == b' ')
                .filter(|t| !t.is_empty())
                .nth(idx);
            token
                .and_then(|t| std::str::from_utf8(t).ok()?.parse().ok())
                .expect("a length in a VALUE/VA line")
        };
        if line.starts_with(b"VALUE ") {
            let end = nl + 1 + data_len(line, 3) + 2;
            if buf.len() < end {
                return None;
            }
            pos = end;
            continue;
        }
        if line.starts_with(b"VA ") {
            let end = nl + 1 + data_len(line, 1) + 2;
            return (buf.len() >= end).then_some(end);
        }
        if line.starts_with(b"STAT ") {
            pos = nl + 1;
            continue;
        }
        return Some(nl + 1);
    }
}

/// Shows bytes readably in assertion messages (`\r\n` and binary escaped).
pub fn show(bytes: &[u8]) -> String {
    let text = bytes.escape_ascii().to_string();
    if text.len() > 600 {
        format!(
            "{} ... ({} bytes) ... {}",
            &text[..300],
            bytes.len(),
            &text[text.len() - 200..]
        )
    } else {
        text
    }
}

impl Client {
    /// Reads until `n` bytes have arrived and returns them; fewer only when the server closed
    /// the connection, reset it, or sent nothing for the read timeout.
    pub fn read_len(&mut self, n: usize) -> Vec<u8> {
        let mut chunk = vec![0u8; 256 * 1024];
        while self.buf.len() < n {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        let end = n.min(self.buf.len());
        self.buf.drain(..end).collect()
    }

    /// Sends `request` (any number of pipelined requests) and asserts that the reply bytes are
    /// exactly `expected`. End a pipeline with `mn\r\n` (answered `MN\r\n`) to also prove that no
    /// stray reply came before it.
    pub fn expect(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request);
        let got = self.read_len(expected.len());
        assert!(
            got == expected,
            "request: {}\nexpected: {}\n     got: {}",
            show(request),
            show(expected),
            show(&got)
        );
    }

    /// Changes how long a read waits for the server (10 s by default).
    pub fn set_read_timeout(&self, limit: Duration) {
        self.stream
            .set_read_timeout(Some(limit))
            .expect("set read timeout");
    }

    /// Closes the sending side (as `nc -q` does at the end of its input); replies still arrive.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down the sending side");
    }

    /// True when nothing more arrives within `limit` (and the connection is still open).
    pub fn is_quiet_for(&mut self, limit: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream
            .set_read_timeout(Some(limit))
            .expect("set timeout");
        let mut byte = [0u8; 1];
        let quiet = match self.stream.read(&mut byte) {
            Ok(0) => false,
            Ok(_) => {
                self.buf.push(byte[0]);
                false
            }
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        quiet
    }
}
