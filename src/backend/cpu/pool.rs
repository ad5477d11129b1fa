//! A tiny persistent thread pool for the CPU ops: `run(n, f)` calls `f(0..n)` spread over the
//! pool's threads (the caller's included) and returns when every call has returned.
//!
//! Why not `std::thread::scope` per op: spawning and joining a scoped thread measured 60–70 µs
//! on the 2-core test machine, and a decode step runs about 120 parallel regions (SmolLM2), i.e.
//! ~8 ms of overhead per token against a 6 ms llama.cpp token. Workers here stay alive, spin
//! briefly between regions (decode regions come every few tens of µs) and then sleep.
//!
//! Soundness of the one `unsafe`: `run` erases the lifetime of `f` to hand it to the workers,
//! and does not return (nor unwind) before every worker has finished with it: the
//! `WaitGuard` waits in `Drop`, so a panic in the caller's share also waits. Panics in
//! workers are caught and re-raised in the caller.
//!
//! On wasm32 (no threads) and with one thread, `run` is a plain loop.

#[cfg(not(target_arch = "wasm32"))]
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(target_arch = "wasm32"))]
use std::sync::{Arc, Condvar, Mutex};

/// The pool. `Pool::new(1)` (and every pool on wasm32) runs everything on the caller.
pub struct Pool {
    n_threads: usize,
    #[cfg(not(target_arch = "wasm32"))]
    shared: Option<Arc<Shared>>,
    #[cfg(not(target_arch = "wasm32"))]
    handles: Vec<std::thread::JoinHandle<()>>,
    /// Serialises concurrent `run` calls from different threads.
    #[cfg(not(target_arch = "wasm32"))]
    busy: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("n_threads", &self.n_threads)
            .finish()
    }
}

/// How long a worker (or the caller, waiting) spins before sleeping, in spin-loop hints.
#[cfg(not(target_arch = "wasm32"))]
const SPIN_ITERS: u32 = 1 << 16;

#[cfg(not(target_arch = "wasm32"))]
type Job = *const (dyn Fn(usize) + Sync);

#[cfg(not(target_arch = "wasm32"))]
struct JobSlot {
    job: Job,
    n_tasks: usize,
}
// SAFETY: the pointer is only dereferenced while `run` keeps the closure alive (module docs).
#[cfg(not(target_arch = "wasm32"))]
unsafe impl Send for JobSlot {}

#[cfg(not(target_arch = "wasm32"))]
struct Shared {
    generation: AtomicU64,
    next: AtomicUsize,
    /// Workers still inside the current job.
    active: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    slot: Mutex<Option<JobSlot>>,
    sleep: Mutex<()>,
    wake: Condvar,
}

impl Pool {
    /// A pool of `n_threads` threads in total (the caller counts as one).
    pub fn new(n_threads: usize) -> Pool {
        let n_threads = n_threads.max(1);
        #[cfg(target_arch = "wasm32")]
        {
            let _ = n_threads;
            Pool { n_threads: 1 }
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            if n_threads == 1 {
                return Pool {
                    n_threads,
                    shared: None,
                    handles: Vec::new(),
                    busy: Mutex::new(()),
                };
            }
            let shared = Arc::new(Shared {
                generation: AtomicU64::new(0),
                next: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
                slot: Mutex::new(None),
                sleep: Mutex::new(()),
                wake: Condvar::new(),
            });
            let mut handles = Vec::new();
            for i in 1..n_threads {
                let s = shared.clone();
                match std::thread::Builder::new()
                    .name(format!("ternlm-cpu-{i}"))
                    .spawn(move || worker(&s))
                {
                    Ok(h) => handles.push(h),
                    Err(_) => break,
                }
            }
            let n_threads = handles.len() + 1;
            Pool {
                n_threads,
                shared: (n_threads > 1).then_some(shared),
                handles,
                busy: Mutex::new(()),
            }
        }
    }

    /// Threads in the pool, the caller included.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Calls `f(i)` for every `i < n_tasks`, in parallel, in no particular order.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        #[cfg(not(target_arch = "wasm32"))]
        if let (Some(shared), true) = (&self.shared, n_tasks > 1) {
            let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            let n_workers = self.handles.len();
            // SAFETY: lifetime erasure only; `guard` below keeps `f` borrowed until every worker
            // has left the job (see the module docs).
            let job: Job = unsafe {
                std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(
                    f as *const (dyn Fn(usize) + Sync),
                )
            };
            *shared.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobSlot { job, n_tasks });
            shared.next.store(0, Ordering::SeqCst);
            shared.active.store(n_workers, Ordering::SeqCst);
            shared.panicked.store(false, Ordering::SeqCst);
            {
                let _g = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
                shared.generation.fetch_add(1, Ordering::SeqCst);
            }
            shared.wake.notify_all();
            let guard = WaitGuard(shared);
            loop {
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if i >= n_tasks {
                    break;
                }
                f(i);
            }
            drop(guard);
            if shared.panicked.load(Ordering::SeqCst) {
                panic!("a ternlm CPU worker thread panicked");
            }
            return;
        }
        for i in 0..n_tasks {
            f(i);
        }
    }
}

/// Waits (in `Drop`, so also while unwinding) until the workers have left the current job.
#[cfg(not(target_arch = "wasm32"))]
struct WaitGuard<'a>(&'a Shared);

#[cfg(not(target_arch = "wasm32"))]
impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.0.active.load(Ordering::Acquire) != 0 {
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        *self.0.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn worker(s: &Shared) {
    // Generation 0 is "no job yet": reading the counter here instead could miss a first job
    // posted before this thread started, and `run` would wait for it forever.
    let mut seen = 0;
    loop {
        // Spin, then sleep, until a new generation (or shutdown).
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if s.generation.load(Ordering::Acquire) != seen {
                break;
            }
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            let g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            if s.generation.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Acquire) {
                drop(s.wake.wait(g).unwrap_or_else(|e| e.into_inner()));
            }
        }
        seen = s.generation.load(Ordering::Acquire);
        let slot = s
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|j| (j.job, j.n_tasks));
        if let Some((job, n_tasks)) = slot {
            // SAFETY: `run` keeps the closure alive until `active` reaches 0 (module docs).
            let f = unsafe { &*job };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
                let i = s.next.fetch_add(1, Ordering::Relaxed);
                if i >= n_tasks {
                    break;
                }
                f(i);
            }));
            if r.is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            {
                let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                s.shutdown.store(true, Ordering::SeqCst);
            }
            s.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// The default thread count: `TERNLM_THREADS`, else the available parallelism (1 on wasm32).
pub fn default_threads() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::env::var("TERNLM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_task_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for n in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn worker_panic_is_reraised_and_pool_survives() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(64, &|i| {
                if i == 40 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(10, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 10);
    }
}
