//! What one worker serves a pool with now. A reload replaces it whole; each connection takes
//! the newest when it starts a request, so a request in flight finishes on the config it
//! started with and the next one uses the new one. Checking costs one `Cell` read; an idle
//! connection is woken to let go of the old one (its plugins' memory) at once.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// The newest of a pool's per-worker state (a memcached [`crate::pool::WorkerPool`] or an HTTP
/// [`crate::http::Worker`]), numbered so a connection can tell it changed.
pub struct Current<T> {
    value: RefCell<Rc<T>>,
    generation: Cell<u64>,
    /// The connections following it that wait for a change, by their slot.
    watchers: RefCell<Slots>,
}

/// Wakers by slot, slots reused once free.
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl<T> Current<T> {
    pub fn new(value: Rc<T>) -> Rc<Current<T>> {
        Rc::new(Current {
            value: RefCell::new(value),
            generation: Cell::new(0),
            watchers: RefCell::default(),
        })
    }

    pub fn get(&self) -> Rc<T> {
        Rc::clone(&self.value.borrow())
    }

    /// Replaces the value, and wakes every connection waiting with the old one.
    pub fn replace(&self, value: Rc<T>) {
        *self.value.borrow_mut() = value;
        self.generation.set(self.generation.get() + 1);
        let wakers: Vec<Waker> = {
            let mut slots = self.watchers.borrow_mut();
            slots.wakers.iter_mut().filter_map(Option::take).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A connection's hold on the newest value.
    pub fn follow(self: &Rc<Self>) -> Follow<T> {
        let slot = {
            let mut slots = self.watchers.borrow_mut();
            match slots.free.pop() {
                Some(i) => i,
                None => {
                    slots.wakers.push(None);
                    slots.wakers.len() - 1
                }
            }
        };
        Follow {
            value: self.get(),
            seen: self.generation.get(),
            current: Rc::clone(self),
            slot,
        }
    }
}

/// The value a connection uses, taken from its [`Current`] anew between requests.
pub struct Follow<T> {
    current: Rc<Current<T>>,
    seen: u64,
    slot: usize,
    pub value: Rc<T>,
}

impl<T> Follow<T> {
    /// Takes the newest value if a reload replaced it; true when it did.
    pub fn refresh(&mut self) -> bool {
        let now = self.current.generation.get();
        if now == self.seen {
            return false;
        }
        self.seen = now;
        self.value = self.current.get();
        true
    }

    /// Ready once a reload replaced the value this holds (then `refresh`).
    pub async fn changed(&self) {
        poll_fn(|cx| {
            if self.current.generation.get() != self.seen {
                return Poll::Ready(());
            }
            let mut slots = self.current.watchers.borrow_mut();
            let waker = &mut slots.wakers[self.slot];
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Follow<T> {
    fn drop(&mut self) {
        let mut slots = self.current.watchers.borrow_mut();
        slots.wakers[self.slot] = None;
        slots.free.push(self.slot);
    }
}

impl<T> std::ops::Deref for Follow<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_a_replace_and_takes_the_new_value() {
        let current = Current::new(Rc::new(1));
        let mut a = current.follow();
        let b = current.follow();
        assert!(!a.refresh());
        let replaced = async { current.replace(Rc::new(2)) };
        tokio::join!(a.changed(), b.changed(), replaced);
        assert!(a.refresh());
        assert_eq!(*a, 2);
        drop(b);
        let c = current.follow();
        assert_eq!((c.slot, *c), (1, 2), "a freed slot is reused");
    }
}
