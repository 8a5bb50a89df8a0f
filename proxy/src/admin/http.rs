//! The admin HTTP listener: a small, strict HTTP/1.1 server on its own thread. One request per
//! connection; a bad request gets 400, an unknown path 404, another method 405, and a slow or
//! oversized one is cut off. Nothing a client sends can take the process down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use arc_swap::ArcSwap;

use super::View;
use crate::shutdown::Shutdown;

/// The largest request head taken.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 64;
/// How long the input left after an answer is read and dropped.
const LINGER: Duration = Duration::from_secs(2);

/// An answer: status, content type, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Further header lines, each ending in CRLF.
    pub extra: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            extra: "",
            body: body.into(),
        }
    }

    /// A plain-text answer ending in a newline.
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }
}

/// Binds the admin listener now, so a taken or bad address fails start-up with its name.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    super::stats_port::bind(addr)
        .map_err(|e| format!("cannot listen for the admin HTTP listener (--admin) on {addr}: {e}"))
}

/// Reloads the config (`POST /reload`): `Err` holds why the new config was refused.
pub type Reload = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves the admin endpoints until shutdown, on its own thread: each request reads the
/// newest `views` (a reload swaps it).
pub fn spawn(
    listener: std::net::TcpListener,
    views: Arc<ArcSwap<View>>,
    reload: Reload,
    mut shutdown: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("walnut-admin".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::error!("admin listener: cannot start its runtime");
                return;
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    tracing::error!("admin listener: cannot register its socket");
                    return;
                };
                let busy = Arc::new(AtomicUsize::new(0));
                loop {
                    let accepted = tokio::select! {
                        c = listener.accept() => c,
                        () = shutdown.recv() => return,
                    };
                    let Ok((stream, _)) = accepted else {
                        // Out of descriptors and the like: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let view = views.load_full();
                    let busy = Arc::clone(&busy);
                    let reload = Arc::clone(&reload);
                    tokio::task::spawn_local(async move {
                        let over = busy.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS;
                        serve(stream, &view, &*reload, over).await;
                        busy.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            });
        })
}

/// Reads one request, answers it, closes.
async fn serve(
    mut stream: TcpStream,
    view: &View,
    reload: &(dyn Fn() -> Result<(), String> + Send + Sync),
    over: bool,
) {
    let (response, head_only) = if over {
        (Response::text(503, "too many admin connections"), false)
    } else {
        match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(Some((head, len)))) => answer(view, &head[..len], reload),
            Ok(Ok(None)) => (Response::text(431, "request head too large"), false),
            Ok(Err(())) => return,
            Err(_) => (
                Response::text(408, "request head not received in time"),
                false,
            ),
        }
    };
    write(&mut stream, response, head_only).await;
}

/// Reads until the end of the head: `Ok(Some((bytes, head length)))`, `Ok(None)` when it is
/// too large, `Err` when the client left.
async fn read_head(stream: &mut TcpStream) -> Result<Option<(Vec<u8>, usize)>, ()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            return Ok(Some((buf, end + 4)));
        }
        // A bare-LF head, which httparse also accepts.
        if let Some(end) = memchr::memmem::find(&buf, b"\n\n") {
            return Ok(Some((buf, end + 2)));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                // A head cut short is still answered, as a bad request.
                return if buf.is_empty() {
                    Err(())
                } else {
                    Ok(Some((buf.clone(), buf.len())))
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The answer to one request head, and whether it is to a HEAD request (no body sent).
fn answer(
    view: &View,
    head: &[u8],
    reload: &(dyn Fn() -> Result<(), String> + Send + Sync),
) -> (Response, bool) {
    let bad = |r| (r, false);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let (method, target) = match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some(m), Some(p)) => (m, p),
            _ => return bad(Response::text(400, "bad request")),
        },
        Ok(httparse::Status::Partial) => {
            return bad(Response::text(400, "incomplete request head"));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return bad(Response::text(431, "too many request headers"));
        }
        Err(e) => return bad(Response::text(400, &format!("bad request: {e}"))),
    };
    let head_only = method == "HEAD";
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/reload" {
        if method != "POST" {
            let mut r = Response::text(405, "a reload is asked with POST");
            r.extra = "Allow: POST\r\n";
            return bad(r);
        }
        // Answered once every worker runs the new config, or with why it was refused.
        return bad(match reload() {
            Ok(()) => Response::text(200, "reloaded"),
            Err(e) => Response::text(500, &format!("reload failed: {e}")),
        });
    }
    if method != "GET" && !head_only {
        let mut r = Response::text(405, "only GET and HEAD are served here");
        r.extra = "Allow: GET, HEAD\r\n";
        return bad(r);
    }
    let r = match path {
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(view),
        ),
        "/status" => Response::new(200, "text/html; charset=utf-8", super::status::page(view)),
        "/status.json" => Response::new(
            200,
            "application/json",
            super::status::json(view).to_string(),
        ),
        "/route" => super::route::answer(view, query),
        "/" => Response::text(
            200,
            "walnut admin: /metrics (Prometheus), /status (status page), /status.json, \
             /route?pool=NAME&key=KEY (memcached) or /route?pool=NAME&path=/x&method=GET (HTTP), \
             POST /reload (reload the config file)",
        ),
        _ => Response::text(404, &format!("no such page: {path}")),
    };
    (r, head_only)
}

/// Writes `r` (its head only when `head_only`, with the length a GET would get) and closes the
/// connection.
async fn write(stream: &mut TcpStream, r: Response, head_only: bool) {
    let mut out = Vec::with_capacity(r.body.len() + 160);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nServer: walnut\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}Connection: close\r\n\r\n",
            r.status,
            reason(r.status),
            r.content_type,
            r.body.len(),
            r.extra
        )
        .as_bytes(),
    );
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    let _ = tokio::time::timeout(HEAD_TIMEOUT, async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
    // Closing with unread input (a body sent with the request) would reset the connection and
    // could destroy the answer: read and drop what comes for a moment (nginx's lingering close).
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await
            && n > 0
        {}
    })
    .await;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}
