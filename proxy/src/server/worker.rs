//! One worker thread: a single-threaded runtime serving every pool of the newest
//! [`Generation`]. A new generation is taken over between one request and the next: each pool
//! that stays gets its new state in its [`Current`] (its connections to servers that stay kept),
//! a new listener starts its accept loop before the old one stops, and a pool that left stops
//! accepting while its clients finish what they asked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::accept::{Accept, Admission, Live};
use super::{Front, Generation, Site};
use crate::current::Current;
use crate::net::Stream;
use crate::pool::{PoolShared, WorkerPool};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::stats::{PoolStats, Registry};
use crate::wake::LocalWake;

/// How long shutdown waits for in-flight requests before leaving anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a worker learns of new generations, and says which one it runs.
pub struct Follow {
    pub(super) generations: watch::Receiver<Arc<Generation>>,
    pub(super) applied: Arc<[AtomicU64]>,
}

/// A pool's state in this worker.
enum Here {
    Memcache(Rc<Current<WorkerPool>>),
    Http(Rc<Current<crate::http::Worker>>),
}

impl Here {
    /// `front`'s state in this worker, new.
    fn new(front: &Front, stats: Arc<PoolStats>, registry: &Arc<Registry>) -> Here {
        match &front.site {
            Site::Memcache(shared) => {
                Here::Memcache(Current::new(memcache(front, shared, stats, registry, None)))
            }
            Site::Http(shared) => {
                let site = crate::http::Worker::new(stats, Arc::clone(shared));
                Here::Http(Current::new(site))
            }
        }
    }

    /// Takes `front`'s new state over, keeping what stays of the old (server connections,
    /// upstream balancing). False, changing nothing, when `front` speaks another protocol.
    fn succeed(&self, front: &Front, stats: Arc<PoolStats>, registry: &Arc<Registry>) -> bool {
        match (self, &front.site) {
            (Here::Memcache(current), Site::Memcache(shared)) => {
                let old = current.get();
                current.replace(memcache(front, shared, stats, registry, Some(&old)));
            }
            (Here::Http(current), Site::Http(shared)) => {
                let old = current.get();
                let site = crate::http::Worker::succeed(stats, Arc::clone(shared), Some(&old));
                current.replace(site);
            }
            _ => return false,
        }
        true
    }
}

/// A memcached pool's state in this worker, following `old`; its connections opened now with
/// `preconnect`.
fn memcache(
    front: &Front,
    shared: &Arc<PoolShared>,
    stats: Arc<PoolStats>,
    registry: &Arc<Registry>,
    old: Option<&WorkerPool>,
) -> Rc<WorkerPool> {
    let pool = WorkerPool::succeed(Arc::clone(shared), stats, Arc::clone(registry), old);
    if front.preconnect {
        pool.preconnect();
    }
    pool
}

/// A pool this worker serves.
struct Served {
    here: Here,
    admission: Rc<RefCell<Admission>>,
    /// Fired when walnut stops or the pool leaves the config: its connections finish and close.
    drain: ShutdownTrigger,
    drained: Shutdown,
    /// The listener its accept loop takes clients from, and what stops that loop.
    listener: u64,
    stop: ShutdownTrigger,
}

impl Served {
    /// Stops accepting and lets the pool's clients finish what they asked.
    fn retire(self) {
        self.stop.fire();
        self.drain.fire();
        if let Here::Memcache(pool) = &self.here {
            pool.get().retire();
        }
    }
}

pub fn run(w: usize, follow: Follow, shutdown: Shutdown) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        // The work runs in a task of its own: the future `block_on` runs is polled each time
        // any task of the worker wakes, so it only waits on a flag.
        let done = Rc::new(LocalWake::default());
        tokio::task::spawn_local(serve(w, follow, shutdown, Rc::clone(&done)));
        done.wait().await;
        Ok(())
    })
}

/// Serves each generation in turn until shutdown, then lets in-flight requests finish.
async fn serve(w: usize, follow: Follow, mut shutdown: Shutdown, done: Rc<LocalWake>) {
    let live = Rc::new(Live::default());
    let mut pools: HashMap<String, Served> = HashMap::new();
    let Follow {
        mut generations,
        applied,
    } = follow;
    loop {
        let generation = Arc::clone(&generations.borrow_and_update());
        take_over(w, &generation, &mut pools, &live);
        applied[w].store(generation.id, Ordering::Release);
        tokio::select! {
            changed = generations.changed() => if changed.is_err() {
                shutdown.recv().await;
                break;
            },
            () = shutdown.recv() => break,
        }
    }
    for served in pools.values() {
        served.stop.fire();
        served.drain.fire();
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while live.count.get() > 0 {
            live.idle.wait().await;
        }
    })
    .await;
    done.wake();
}

/// Serves `generation` from now on.
fn take_over(
    w: usize,
    generation: &Generation,
    pools: &mut HashMap<String, Served>,
    live: &Rc<Live>,
) {
    let registry = &generation.registry;
    let mut next = HashMap::with_capacity(generation.fronts.len());
    for front in &generation.fronts {
        let stats = Arc::clone(&registry.workers[w][front.index]);
        let admission = Admission {
            registry: Arc::clone(registry),
            index: front.index,
            limit: front.limit,
            stats: Arc::clone(&stats),
        };
        // A pool that stays (same name, same protocol) follows its old state in this worker.
        let served = match pools.remove(&front.name) {
            Some(mut served) if served.here.succeed(front, Arc::clone(&stats), registry) => {
                *served.admission.borrow_mut() = admission;
                if served.listener != front.bound.id {
                    // The new socket is listening already (bound by the reload); the old one
                    // closes when its last accept loop stops.
                    let (stop, stopped) = Shutdown::new();
                    std::mem::replace(&mut served.stop, stop).fire();
                    served.listener = front.bound.id;
                    accept(&served, front, stopped, live);
                }
                served
            }
            old => {
                if let Some(old) = old {
                    old.retire();
                }
                let (drain, drained) = Shutdown::new();
                let (stop, stopped) = Shutdown::new();
                let served = Served {
                    here: Here::new(front, stats, registry),
                    admission: Rc::new(RefCell::new(admission)),
                    drain,
                    drained,
                    listener: front.bound.id,
                    stop,
                };
                accept(&served, front, stopped, live);
                served
            }
        };
        next.insert(front.name.clone(), served);
    }
    for (_, gone) in pools.drain() {
        gone.retire();
    }
    *pools = next;
}

/// Starts `served`'s accept loop on `front`'s listener, until `stop`.
fn accept(served: &Served, front: &Front, stop: Shutdown, live: &Rc<Live>) {
    let listener = match front.bound.listener.try_clone() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(pool = %front.name, "cannot use the pool's listener: {e}");
            return;
        }
    };
    let accept = Accept {
        name: front.name.clone(),
        admission: Rc::clone(&served.admission),
        live: Rc::clone(live),
        drain: served.drained.clone(),
        stop,
    };
    match &served.here {
        Here::Memcache(current) => {
            let current = Rc::clone(current);
            tokio::task::spawn_local(accept.run(listener, move |conn| {
                crate::session::serve(conn.stream, Rc::clone(&current), conn.id, conn.shutdown)
            }));
        }
        Here::Http(current) => {
            let current = Rc::clone(current);
            tokio::task::spawn_local(accept.run(listener, move |conn| {
                let current = Rc::clone(&current);
                async move {
                    // HTTP pools listen on TCP only (the config refuses a unix socket).
                    if let (Stream::Tcp(s), Some(peer)) = (conn.stream, conn.peer) {
                        crate::http::proxy::serve(&current, s, peer, conn.shutdown).await;
                    }
                }
            }));
        }
    }
}
