//! The stats port: every connection gets nutcracker's stats JSON, then is closed (unchanged
//! from nutcracker; the admin HTTP listener is separate).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::shutdown::Shutdown;
use arc_swap::ArcSwap;

use super::View;
use tokio::io::AsyncWriteExt;

/// Binds the stats listener now, so a taken port fails start-up, as nutcracker's does.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves the stats JSON until shutdown, on its own thread.
pub fn spawn(
    listener: std::net::TcpListener,
    views: Arc<ArcSwap<View>>,
    mut shutdown: Shutdown,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("walnut-stats".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        c = listener.accept() => {
                            if let Ok((mut s, _)) = c {
                                let json = views.load().registry.render_json();
                                tokio::spawn(async move {
                                    let _ = s.write_all(json.as_bytes()).await;
                                    let _ = s.shutdown().await;
                                });
                            }
                        }
                        () = shutdown.recv() => return,
                    }
                }
            });
        })
}
