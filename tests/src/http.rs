//! HTTP test peers: nginx instances, a raw HTTP client, and a scriptable backend.

#[allow(unused_imports)]
use super::*;

/// A real nginx (Debian's `nginx` package) in its own prefix on a loopback port chosen at run
/// time, with `server_body` inside its `server { }` block. Its access log records the method,
/// the URI and the connection serial number of every request (`$connection`).
pub struct Nginx {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(server_body: &str) -> Nginx {
        Nginx::start_on(free_port(), server_body)
    }

    pub fn start_on(port: u16, server_body: &str) -> Nginx {
        Nginx::start_with(port, "", server_body)
    }

    /// nginx with `http_body` in its `http { }` block (upstreams, timeouts) and `server_body` in
    /// its `server { }` block, on `port`.
    pub fn start_with(port: u16, http_body: &str, server_body: &str) -> Nginx {
        let dir = temp_dir("nginx");
        std::fs::create_dir_all(dir.join("html")).expect("nginx html dir");
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               log_format walnut '$request_method $request_uri $connection';\n\
               access_log {d}/access.log walnut;\n\
               client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               keepalive_requests 100000;\n\
               {http_body}\n\
               server {{ listen 127.0.0.1:{port}; root {d}/html; {server_body} }}\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let mut n = Nginx {
            port,
            dir,
            child: None,
        };
        n.restart();
        n
    }

    /// Starts it (again) on its port.
    pub fn restart(&mut self) {
        let bin = require("nginx", "nginx");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_listening(self.addr(), "nginx", &mut child);
        self.child = Some(child);
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A file served from its root.
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.join("html").join(name), bytes).expect("write nginx file");
    }

    /// The access log: `(method, uri, connection number)` per request.
    pub fn requests(&self) -> Vec<(String, String, u64)> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some((
                    w.next()?.to_owned(),
                    w.next()?.to_owned(),
                    w.next()?.parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP response as read by [`HttpClient`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1 client on one connection: send bytes, read whole responses.
pub struct HttpClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        let stream = TcpStream::connect(addr).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set read timeout");
        HttpClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the proxy");
    }

    /// `GET path` with keep-alive, answered.
    pub fn get(&mut self, path: &str) -> HttpResponse {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.read_response(false)
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read from the proxy");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill() > 0, "connection closed mid-line");
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response (its body too, unless `head_request`).
    pub fn read_response(&mut self, head_request: bool) -> HttpResponse {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("a header line");
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        let mut r = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || status < 200 {
            return r;
        }
        if r.header("transfer-encoding").is_some() {
            loop {
                let size = usize::from_str_radix(self.line().split(';').next().unwrap(), 16)
                    .expect("chunk size");
                if size == 0 {
                    while !self.line().is_empty() {}
                    break;
                }
                let data = self.take(size);
                r.body.extend_from_slice(&data);
                self.take(2);
            }
        } else if let Some(len) = r.header("content-length") {
            let len = len.parse().expect("content-length");
            r.body = self.take(len);
        } else {
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    /// Whether the peer closed the connection (waiting up to `limit`).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).expect("timeout");
        let mut b = [0u8; 1024];
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// One request as a [`TestBackend`] saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub head: String,
    pub body_len: u64,
    /// The body's bytes as received (de-chunked); short of its length when the peer closed
    /// the connection before sending all of it.
    pub body: Vec<u8>,
    pub connection: u64,
}

/// A small HTTP/1.1 backend (std threads): answers every request with `200` and a body
/// naming its path and how many body bytes it read, records every request with its body,
/// keeps connections alive. Bodies may be Content-Length or chunked.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    pub connections: std::sync::Arc<AtomicU32>,
}

impl TestBackend {
    pub fn start() -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test backend");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(AtomicU32::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = u64::from(c.fetch_add(1, Ordering::Relaxed));
                let s = s.clone();
                std::thread::spawn(move || backend_conn(stream, n, &s));
            }
        });
        TestBackend {
            addr,
            seen,
            connections,
        }
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen").clone()
    }
}

fn backend_conn(stream: TcpStream, n: u64, seen: &std::sync::Mutex<Vec<SeenRequest>>) {
    let mut r = std::io::BufReader::with_capacity(65536, stream.try_clone().expect("clone"));
    let mut w = stream;
    use std::io::BufRead;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let lower = head.to_ascii_lowercase();
        let header = |name: &str| {
            lower.lines().find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_owned())
            })
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some() {
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let size = u64::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                if size == 0 {
                    let mut end = String::new();
                    let _ = r.read_line(&mut end);
                    break;
                }
                if (&mut r).take(size).read_to_end(&mut body).is_err() {
                    return;
                }
                let mut crlf = String::new();
                let _ = r.read_line(&mut crlf);
            }
        } else if let Some(len) = header("content-length") {
            let len: u64 = len.parse().unwrap_or(0);
            let _ = (&mut r).take(len).read_to_end(&mut body);
        }
        let body_len = body.len() as u64;
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        seen.lock().expect("seen").push(SeenRequest {
            head: head.clone(),
            body_len,
            body,
            connection: n,
        });
        let answer = format!("path={path} body={body_len}\n");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend-Conn: {n}\r\n\r\n{answer}",
            answer.len()
        );
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A backend whose connections are each served by `serve` on a thread of its own (numbered
/// from 0): for what a real server cannot do on demand (hang, close at a chosen moment, leave a
/// body unread, send 150 header lines).
pub struct FakeBackend {
    pub addr: SocketAddr,
}

impl FakeBackend {
    pub fn start(serve: impl Fn(TcpStream, u64) + Send + Sync + 'static) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
        let addr = listener.local_addr().expect("addr");
        let serve = std::sync::Arc::new(serve);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().flatten().enumerate() {
                let serve = serve.clone();
                std::thread::spawn(move || serve(stream, n as u64));
            }
        });
        FakeBackend { addr }
    }
}

/// Reads one request or response head, up to its empty line; `None` at the end of input.
pub fn read_head(r: &mut impl std::io::BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
    }
}

/// walnut and nginx configured alike, side by side.
pub struct SideBySide {
    pub walnut: Proxy,
    pub nginx: Nginx,
}

impl SideBySide {
    /// walnut on `walnut_config` (`{listen}` for its address), nginx with `nginx_http` in its
    /// `http { }` and `nginx_server` in its `server { }`.
    pub fn start(walnut_config: &str, nginx_http: &str, nginx_server: &str) -> SideBySide {
        SideBySide {
            walnut: Proxy::walnut_with(walnut_config, &["-w", "1"]),
            nginx: Nginx::start_with(free_port(), nginx_http, nginx_server),
        }
    }

    /// `("walnut", address)` and `("nginx", address)`.
    pub fn both(&self) -> [(&'static str, SocketAddr); 2] {
        [("walnut", self.walnut.addr), ("nginx", self.nginx.addr())]
    }
}
