//! Sockets, TCP or unix, behind one type each: a bound [`Listener`] shared by the workers, and a
//! connected [`Stream`] that every client and server connection uses.
//!
//! A `Stream` is read and written through `&self` (readiness, then a non-blocking call), so one
//! task can wait to read and to write at once without splitting the socket, and a reply can be
//! written from whichever task completes it.

use std::future::poll_fn;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::config::{Listen, ServerAddr};

/// A bound listening socket (TCP or unix), cloned into every worker.
pub struct Listener {
    socket: socket2::Socket,
    /// The socket file of a unix listener, removed at exit.
    path: Option<PathBuf>,
}

impl Listener {
    /// Binds `listen` with `backlog`. A socket file left by an earlier run is replaced, and only
    /// a socket is ever removed.
    pub fn bind(listen: &Listen, backlog: u32) -> io::Result<Listener> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let backlog = backlog.clamp(1, i32::MAX as u32) as i32;
        let (socket, path) = match listen {
            Listen::Tcp { addr, .. } => {
                let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                socket.bind(&(*addr).into())?;
                (socket, None)
            }
            Listen::Unix { path, .. } => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?)?;
                (socket, Some(path.clone()))
            }
        };
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        if let Listen::Unix {
            path,
            mode: Some(mode),
        } = listen
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
        }
        Ok(Listener { socket, path })
    }

    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(Listener {
            socket: self.socket.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The unix socket file to remove at exit, if it is one.
    pub fn socket_file(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Registers the listener with this thread's runtime.
    pub fn into_async(self) -> io::Result<AsyncListener> {
        Ok(match self.path {
            None => AsyncListener::Tcp(tokio::net::TcpListener::from_std(self.socket.into())?),
            Some(_) => AsyncListener::Unix(tokio::net::UnixListener::from_std(self.socket.into())?),
        })
    }
}

/// A listener registered with a worker's runtime.
pub enum AsyncListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl AsyncListener {
    /// The next connection, with the peer's IP address (`None` on a unix socket). TCP
    /// connections get `TCP_NODELAY`: replies are batched by walnut, never by the kernel.
    pub async fn accept(&self) -> io::Result<(Stream, Option<std::net::IpAddr>)> {
        match self {
            AsyncListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Some(peer.ip())))
            }
            AsyncListener::Unix(l) => Ok((Stream::Unix(l.accept().await?.0), None)),
        }
    }
}

/// A connected socket.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    /// Connects to `addr` within `limit`, with `TCP_NODELAY` and, when asked, keepalive.
    pub async fn connect(
        addr: &ServerAddr,
        keepalive: bool,
        limit: Duration,
    ) -> io::Result<Stream> {
        let attempt = async {
            match addr {
                ServerAddr::Tcp { addr, .. } => {
                    let socket = if addr.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()
                    } else {
                        tokio::net::TcpSocket::new_v6()
                    }?;
                    if keepalive {
                        socket.set_keepalive(true)?;
                    }
                    let s = socket.connect(*addr).await?;
                    s.set_nodelay(true)?;
                    Ok(Stream::Tcp(s))
                }
                ServerAddr::Unix { path } => {
                    Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?))
                }
            }
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Reads what is there into `buf`'s spare capacity; `WouldBlock` when nothing is. A read
    /// that fills less than the room it had drained the socket, so its readiness is cleared,
    /// as tokio's own `poll_read` clears it: the next read waits for the kernel's word instead
    /// of making a system call that finds nothing (one per request and connection, else).
    pub fn try_read_buf(&self, buf: &mut impl BufMut) -> io::Result<usize> {
        let room = buf.chunk_mut().len();
        let mut drained = 0;
        // Telling `try_io` the read would block is how its readiness gets cleared.
        let mut read = || -> io::Result<usize> {
            let n = match self {
                Stream::Tcp(s) => s.try_read_buf(buf)?,
                Stream::Unix(s) => s.try_read_buf(buf)?,
            };
            if n > 0 && n < room {
                drained = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        };
        let r = match self {
            Stream::Tcp(s) => s.try_io(Interest::READABLE, &mut read),
            Stream::Unix(s) => s.try_io(Interest::READABLE, &mut read),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained > 0 => Ok(drained),
            r => r,
        }
    }

    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(bytes),
            Stream::Unix(s) => s.try_write(bytes),
        }
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_write_ready(cx),
            Stream::Unix(s) => s.poll_write_ready(cx),
        }
    }

    /// Reads into `buf`'s spare capacity once data is there; 0 at end of stream.
    pub fn poll_read_buf(
        &self,
        cx: &mut Context<'_>,
        buf: &mut impl BufMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// Writes as much of `bytes` as the socket takes once it takes any.
    pub fn poll_write(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write(bytes) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// `poll_read_buf` as a future.
    pub async fn read_buf(&self, buf: &mut impl BufMut) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_buf(cx, buf)).await
    }

    /// `poll_write` as a future.
    pub async fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_write(cx, bytes)).await
    }

    /// Waits until the socket takes more.
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// Ends the write side (the peer reads EOF) while reading may go on.
    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write),
        };
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Stream::poll_write(&self, cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_write();
        Poll::Ready(Ok(()))
    }
}
