//! The worker pool every CPU kernel runs on, built for a desktop that is busy with
//! other work.
//!
//! A decode step is a few hundred short parallel regions (one per matmul, per
//! attention, per activation quantization), each a few microseconds to a
//! millisecond. candle's barrier pool, which we used before, splits each region
//! across *all* its workers and waits at a barrier for every one of them: when
//! another process holds one of the cores, the worker sleeping there stalls every
//! region for a scheduler time slice (SmolLM2 decode fell about 3x with one of two
//! cores busy). Here:
//!
//! - **Nobody waits for a worker that is not there.** The caller publishes the
//!   region and takes part in it; items are claimed from an atomic counter in
//!   chunks, so whoever runs does the work. The caller waits only for chunks already
//!   claimed, never for a worker to wake up. With every core taken, the caller does
//!   the whole region itself: the thread count adapts to the cores we actually get.
//! - **Brief spinning, then parking.** Between regions a worker spins for
//!   [`SPIN`] (regions of one step follow each other closely), then parks, so an
//!   idle model takes no CPU from the rest of the desktop.
//! - No pinning to cores: the OS moves our threads where there is room.
//!
//! The region's closure lives on the caller's stack; a late worker holding the
//! region finds its counter exhausted and never calls the closure, and the caller
//! returns only once every claimed chunk is finished (see [`run_chunked`]).

use std::any::Any;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins for the next region before parking.
const SPIN: Duration = Duration::from_micros(50);

/// Chunks per thread a region is cut into: enough that a worker losing its core
/// mid-region leaves little unfinished work to wait for, few enough that claiming
/// costs nothing.
const CHUNKS_PER_THREAD: usize = 8;

/// One parallel region.
struct Region {
    /// Calls the caller's closure on a range of items.
    call: unsafe fn(*const (), Range<usize>),
    /// The closure, on the caller's stack: valid until the caller returns, which
    /// is after every claimed chunk is finished.
    data: *const (),
    items: usize,
    chunk: usize,
    /// Next unclaimed item.
    next: AtomicUsize,
    /// Items finished.
    done: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `data` is only dereferenced through `call` for a claimed chunk, and the
// caller keeps the closure (which is `Sync`) alive until every claimed chunk is done.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// Claims and runs chunks until none are left.
    fn work(&self) {
        loop {
            let start = self.next.fetch_add(self.chunk, Ordering::Relaxed);
            if start >= self.items {
                return;
            }
            let end = self.items.min(start + self.chunk);
            let call = self.call;
            let data = self.data;
            // SAFETY: the chunk was claimed, so the caller is still waiting for it
            // and the closure is alive.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                call(data, start..end)
            }));
            if let Err(p) = r {
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(p);
            }
            self.done.fetch_add(end - start, Ordering::Release);
        }
    }
}

unsafe fn call_closure<F: Fn(Range<usize>)>(data: *const (), items: Range<usize>) {
    (*(data as *const F))(items)
}

/// A worker's mailbox: the region it was offered, if it has not taken it yet.
struct Mailbox {
    region: Mutex<Option<Arc<Region>>>,
    full: AtomicBool,
}

struct Pool {
    mailboxes: Vec<Arc<Mailbox>>,
    threads: Vec<std::thread::Thread>,
}

thread_local! {
    /// Set on the pool's workers and on a caller inside a region: a nested region
    /// runs inline.
    static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads the kernels use: the caller plus the workers. `set_threads` (or
/// `RAYON_NUM_THREADS`) decides it before the first region; every logical core
/// by default.
pub fn threads() -> usize {
    pool().threads.len() + 1
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        let mut mailboxes = Vec::new();
        let mut threads = Vec::new();
        for i in 1..n {
            let mailbox = Arc::new(Mailbox {
                region: Mutex::new(None),
                full: AtomicBool::new(false),
            });
            let mb = mailbox.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("unicorn-worker-{i}"))
                .spawn(move || worker(&mb));
            // A pool with fewer workers still computes everything (the caller
            // takes what nobody else does).
            if let Ok(handle) = spawned {
                threads.push(handle.thread().clone());
                mailboxes.push(mailbox);
            }
        }
        Pool { mailboxes, threads }
    })
}

fn worker(mb: &Mailbox) {
    INSIDE.with(|f| f.set(true));
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        while !mb.full.load(Ordering::Acquire) {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || started.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                // An unpark that came first makes this return at once.
                std::thread::park();
            }
        }
        mb.full.store(false, Ordering::Relaxed);
        let region = mb.region.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(region) = region {
            region.work();
        }
    }
}

/// Runs `f` over `0..items` in chunks on the pool and the calling thread, and
/// returns when every item is done. A panic in `f` is raised again here.
pub fn run_chunked<F: Fn(Range<usize>) + Sync>(items: usize, f: F) {
    if items == 0 {
        return;
    }
    let pool = pool();
    if pool.threads.is_empty() || items == 1 || INSIDE.with(|i| i.get()) {
        f(0..items);
        return;
    }
    let chunk = items
        .div_ceil((pool.threads.len() + 1) * CHUNKS_PER_THREAD)
        .max(1);
    let region = Arc::new(Region {
        call: call_closure::<F>,
        data: &f as *const F as *const (),
        items,
        chunk,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panic: Mutex::new(None),
    });
    for (mb, t) in pool.mailboxes.iter().zip(&pool.threads) {
        // A worker still holding its mailbox's lock is busy elsewhere: skip it
        // rather than wait for it.
        if let Ok(mut slot) = mb.region.try_lock() {
            *slot = Some(region.clone());
            mb.full.store(true, Ordering::Release);
            t.unpark();
        }
    }
    INSIDE.with(|i| i.set(true));
    region.work();
    INSIDE.with(|i| i.set(false));
    // Only chunks already claimed remain: wait for them, briefly spinning, then
    // giving the core to whoever holds them.
    let started = Instant::now();
    while region.done.load(Ordering::Acquire) < items {
        if started.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    let panic = region
        .panic
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
}

/// A raw pointer work items may share: each item writes only its own elements.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
// SAFETY: users write disjoint elements from different items (stated at each use).
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_exactly_once() {
        for items in [0, 1, 2, 7, 64, 1000, 100_003] {
            let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
            run_chunked(items, |r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{items}"
            );
        }
    }

    #[test]
    fn regions_from_several_threads_and_nested_ones_complete() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run_chunked(50, |r| {
                            // A nested region runs inline.
                            run_chunked(r.len(), |inner| {
                                total.fetch_add(inner.len(), Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 50);
    }

    #[test]
    fn a_panic_in_a_region_reaches_the_caller_and_the_pool_survives() {
        let r = std::panic::catch_unwind(|| {
            run_chunked(100, |r| {
                if r.contains(&42) {
                    panic!("item 42");
                }
            })
        });
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        run_chunked(100, |r| {
            n.fetch_add(r.len(), Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 100);
    }
}
