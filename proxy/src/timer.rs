//! One timer per connection, re-armed lazily.
//!
//! A tokio timer costs a lock on the runtime's timer wheel each time it is set or dropped, and
//! setting one earlier than the runtime expects wakes the runtime's poller with a write to its
//! eventfd. A connection that set a fresh timeout around every read would pay that per request.
//! `Timer` keeps one timer for the connection's life and moves it only when it must: a new
//! deadline later than the armed one leaves the timer alone, and when it fires early the
//! current deadline is checked and the timer set to it. A busy connection whose deadlines only
//! move forward re-arms about once per timeout period, not once per request.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A deadline passed before the awaited operation finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pub struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// When `sleep` fires (or fired).
    armed: Instant,
}

impl Default for Timer {
    fn default() -> Self {
        // Armed in the far future and never polled until needed, so never in the wheel until a
        // wait actually blocks.
        let far = Instant::now() + Duration::from_secs(100 * 365 * 86_400);
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(far)),
            armed: far,
        }
    }
}

impl Timer {
    /// Runs `fut` until it finishes, or fails with `Elapsed` once `deadline` has passed.
    pub async fn within<F: Future>(
        &mut self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            self.poll_until(cx, deadline).map(|()| Err(Elapsed))
        })
        .await
    }

    /// `within(now + timeout, fut)`.
    pub async fn timeout<F: Future>(
        &mut self,
        timeout: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        self.within(Instant::now() + timeout, fut).await
    }

    /// Ready once `deadline` has passed; until then pending, with the task's waker registered.
    pub fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if deadline < self.armed {
            self.arm(deadline);
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            // Fired at `armed`, which is at or before `deadline`.
            if self.armed >= deadline || Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.arm(deadline);
        }
    }

    fn arm(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.armed = deadline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_in_the_past_elapses_and_a_ready_future_wins() {
        let mut t = Timer::default();
        let now = Instant::now();
        assert_eq!(t.within(now, async { 1 }).await, Ok(1));
        assert_eq!(
            t.within(now, std::future::pending::<()>()).await,
            Err(Elapsed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn later_deadlines_are_honoured_after_an_early_fire() {
        let mut t = Timer::default();
        let start = Instant::now();
        // Armed at +1 s; the next wait asks for +5 s and must not end at +1 s.
        let _ = t
            .within(start + Duration::from_secs(1), async {
                tokio::time::sleep(Duration::from_millis(10)).await
            })
            .await;
        let r = t
            .within(start + Duration::from_secs(5), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_re_arms_the_timer() {
        let mut t = Timer::default();
        let start = Instant::now();
        let _ = t
            .within(start + Duration::from_secs(60), async {
                tokio::time::sleep(Duration::from_millis(10)).await
            })
            .await;
        let r = t
            .within(start + Duration::from_secs(2), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_operation_finishing_in_time_is_not_cut_short() {
        let mut t = Timer::default();
        let r = t
            .timeout(Duration::from_secs(3), async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                7
            })
            .await;
        assert_eq!(r, Ok(7));
    }
}
