//! Waking one task from code on the same worker thread, without a lock: a backend task when
//! requests are queued, a client task when its replies need it. (tokio's `Notify` takes a mutex
//! on every wait; these waits happen once per request.)

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::task::{Poll, Waker};

/// Like `Notify::notify_one`/`notified` for one waiting task on one thread: a wake-up with
/// nobody waiting is kept for the next wait.
#[derive(Default)]
pub struct LocalWake {
    woken: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalWake {
    pub fn wake(&self) {
        self.woken.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Ready once `wake` was called since the last wait ended.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            if self.woken.replace(false) {
                return Poll::Ready(());
            }
            match self.waker.take() {
                Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
                _ => self.waker.set(Some(cx.waker().clone())),
            }
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_used_once() {
        let w = LocalWake::default();
        w.wake();
        w.wait().await;
        let pending = tokio::time::timeout(std::time::Duration::from_millis(20), w.wait()).await;
        assert!(pending.is_err(), "the wake-up was used by the first wait");
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let w = std::rc::Rc::new(LocalWake::default());
                let w2 = std::rc::Rc::clone(&w);
                let waiter = tokio::task::spawn_local(async move { w2.wait().await });
                tokio::task::yield_now().await;
                w.wake();
                waiter.await.unwrap();
            })
            .await;
    }
}
