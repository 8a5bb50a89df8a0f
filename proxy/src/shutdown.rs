//! The one signal that walnut is stopping: every task that must notice it holds a [`Shutdown`].

use tokio::sync::watch;

/// Tells every task that walnut is stopping; cloned into each one that must notice.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Starts the shutdown every [`Shutdown`] made with it sees.
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Shutdown has begun (or nobody is left who could start it).
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once shutdown begins; at once if it has.
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|&stop| stop).await;
    }
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}
