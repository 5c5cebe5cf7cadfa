//! The thread pool's job queue, and the count of its workers by state, under
//! one lock: whether a submit wakes a worker, starts a thread or does
//! neither is decided where the job is queued.
//!
//! # Worker states
//!
//! ```text
//!                         pop finds a job
//!   start ──▶ SEARCHING ────────────────────▶ RUNNING ──┐ the job is done and
//!               │  ▲  ▲                          ▲      │ the queue is empty:
//!  queue empty, │  │  └───────────────────────────┼──────┘ SEARCHING before
//!  after a spin │  │ a submit's permit            │        the result is published
//!               ▼  │ (or the shutdown)            │ the job is done and the
//!             SLEEPING                            └─ queue has one: the next job
//! ```
//!
//! Each worker changes its own state under the lock (a [`Seat`] remembers
//! which count it is in), so the counts are exact: no worker can take back
//! another's place, as an idle token in a shared counter could.
//!
//! A submit queues its job and then wakes a sleeping worker only if the
//! queue now holds more jobs than there are searching workers (awake, not
//! running a job: each takes one job before it could sleep). With nobody
//! to wake, it starts a thread if fewer than `max_workers` have started.
//! A searching worker spins a little before it sleeps, so a steady stream
//! of small tasks finds it awake and costs no wake-up.
//!
//! The items are `pub` for the loom models (`tests/loom_future.rs`, through
//! `__loom` under `--cfg loom`); the module itself is private.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::Error;

/// How many rounds a searching worker looks at the queue before it sleeps:
/// the first ones spin (2^round pause hints), the last ones yield the CPU.
/// None under loom, where a spin would only multiply the interleavings.
const SPIN_ROUNDS: u32 = if cfg!(loom) { 0 } else { 10 };
/// Rounds up to this one spin; the later ones yield.
const SPIN_LIMIT: u32 = 6;

/// What the submitter must do after queueing a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Nothing: a searching worker will take the job (or all workers run
    /// jobs and `max_workers` have started: it waits its turn).
    Nobody,
    /// A sleeping worker was woken for it.
    Sleeper,
    /// Start a thread; it is already counted as a searching worker. Call
    /// [`Queue::spawn_failed`] if it cannot be started.
    Spawn,
}

struct State<J> {
    jobs: VecDeque<J>,
    /// Set by `shutdown`: workers exit once the queue is empty.
    closed: bool,
    /// Why the pool is broken, once it is.
    broken: Option<String>,
    /// Workers awake and not running a job, plus those woken and not yet
    /// awake.
    searching: usize,
    /// Workers asleep, waiting for a permit.
    sleeping: usize,
    /// Wake-ups granted to sleepers and not yet taken.
    permits: usize,
    /// Threads started (and not exited).
    started: usize,
}

/// The queue and the workers' states; see the module docs.
pub struct Queue<J> {
    state: Mutex<State<J>>,
    /// Sleeping workers wait here.
    wake: Condvar,
    /// The number of queued jobs, for spinning workers to read without the
    /// lock (on its own cache line, away from the lock's; `CachePadded`
    /// takes two lines where the CPU prefetches the adjacent one).
    queued: CachePadded<AtomicUsize>,
    max_workers: usize,
}

impl<J> Queue<J> {
    /// An open, empty queue for a pool of at most `max_workers` threads.
    pub fn new(max_workers: usize) -> Self {
        Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
                broken: None,
                searching: 0,
                sleeping: 0,
                permits: 0,
                started: 0,
            }),
            wake: Condvar::new(),
            queued: CachePadded::new(AtomicUsize::new(0)),
            max_workers,
        }
    }

    /// Queues `job` and says what else to do; refuses it (handing it back)
    /// after `shutdown` or once the pool is broken.
    pub fn push(&self, job: J) -> Result<Wake, (J, Error)> {
        let mut st = self.state.lock();
        if let Some(reason) = &st.broken {
            let e = Error::BrokenPool(reason.clone());
            return Err((job, e));
        }
        if st.closed {
            return Err((job, Error::Shutdown));
        }
        st.jobs.push_back(job);
        self.queued.store(st.jobs.len(), Ordering::Relaxed);
        if st.jobs.len() <= st.searching {
            return Ok(Wake::Nobody);
        }
        if st.sleeping > 0 {
            st.sleeping -= 1;
            st.permits += 1;
            st.searching += 1;
            self.wake.notify_one();
            return Ok(Wake::Sleeper);
        }
        if st.started < self.max_workers {
            st.started += 1;
            st.searching += 1;
            return Ok(Wake::Spawn);
        }
        Ok(Wake::Nobody)
    }

    /// Un-counts a thread [`push`](Queue::push) asked for and that could not
    /// start. If no thread is left, nothing would ever run the queued jobs:
    /// they are handed back, to be failed.
    pub fn spawn_failed(&self) -> Vec<J> {
        let mut st = self.state.lock();
        st.started -= 1;
        st.searching -= 1;
        if st.started == 0 {
            self.take_all(&mut st)
        } else {
            Vec::new()
        }
    }

    /// Stops accepting jobs; the workers exit once the queue is empty.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.wake.notify_all();
    }

    /// Takes every queued job out (to be cancelled).
    pub fn drain(&self) -> Vec<J> {
        let mut st = self.state.lock();
        self.take_all(&mut st)
    }

    /// Marks the pool broken (the first reason stays) and takes every queued
    /// job out (to be failed).
    pub fn break_with(&self, reason: &str) -> Vec<J> {
        let mut st = self.state.lock();
        if st.broken.is_none() {
            st.broken = Some(reason.to_string());
        }
        self.take_all(&mut st)
    }

    /// The jobs queued, the threads started (and not exited), and those of
    /// them not running a job (searching or sleeping; a thread asked for
    /// and not yet running counts as searching).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.state.lock();
        (st.jobs.len(), st.started, st.searching + st.sleeping)
    }

    /// Whether `shutdown` has closed the queue, and why the pool is broken.
    pub fn status(&self) -> (bool, Option<String>) {
        let st = self.state.lock();
        (st.closed, st.broken.clone())
    }

    /// The first queued job, keeping `queued` in step.
    fn pop(&self, st: &mut State<J>) -> Option<J> {
        let job = st.jobs.pop_front()?;
        self.queued.store(st.jobs.len(), Ordering::Relaxed);
        Some(job)
    }

    fn take_all(&self, st: &mut State<J>) -> Vec<J> {
        self.queued.store(0, Ordering::Relaxed);
        st.jobs.drain(..).collect()
    }

    /// The seat of a thread that [`push`](Queue::push) asked for: it starts
    /// out searching (already counted).
    pub fn seat(&self) -> Seat<'_, J> {
        Seat {
            queue: self,
            searching: true,
        }
    }

    /// Looks at the queue without the lock for a while, until a job shows
    /// up.
    fn spin(&self) {
        for round in 0..SPIN_ROUNDS {
            if round <= SPIN_LIMIT {
                for _ in 0..1u32 << round {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if self.queued.load(Ordering::Relaxed) > 0 {
                return;
            }
        }
    }
}

/// One worker's place in the counts: searching (counted in `searching`) or
/// running a job (counted nowhere). Dropping it un-counts the worker.
pub struct Seat<'a, J> {
    queue: &'a Queue<J>,
    searching: bool,
}

impl<J> Seat<'_, J> {
    /// The next job, waiting for one (searching, then sleeping); `None`
    /// once the queue is closed and empty.
    pub fn next(&mut self) -> Option<J> {
        let q = self.queue;
        let mut st = q.state.lock();
        self.search(&mut st);
        let mut spun = false;
        loop {
            if let Some(job) = q.pop(&mut st) {
                self.searching = false;
                st.searching -= 1;
                return Some(job);
            }
            if st.closed {
                return None;
            }
            if !spun && SPIN_ROUNDS > 0 {
                spun = true;
                MutexGuard::unlocked(&mut st, || q.spin());
                continue;
            }
            // SEARCHING -> SLEEPING, until a submit hands out a permit (and
            // counts this worker searching again) or the queue closes.
            st.searching -= 1;
            st.sleeping += 1;
            while st.permits == 0 && !st.closed {
                q.wake.wait(&mut st);
            }
            if st.permits > 0 {
                st.permits -= 1;
            } else {
                st.sleeping -= 1;
                st.searching += 1;
            }
            spun = false;
        }
    }

    /// Called as a job's result is about to be published: takes the next
    /// job if one is queued (the worker stays running), else counts the
    /// worker searching, so that a caller woken by the result and
    /// submitting at once finds it instead of starting a thread.
    pub fn finishing(&mut self) -> Option<J> {
        let q = self.queue;
        let mut st = q.state.lock();
        if let Some(job) = q.pop(&mut st) {
            return Some(job);
        }
        self.search(&mut st);
        None
    }

    /// Counts this worker searching, unless it already is.
    fn search(&mut self, st: &mut State<J>) {
        if !self.searching {
            self.searching = true;
            st.searching += 1;
        }
    }
}

impl<J> Drop for Seat<'_, J> {
    fn drop(&mut self) {
        let mut st = self.queue.state.lock();
        st.started -= 1;
        if self.searching {
            st.searching -= 1;
        }
    }
}

impl<J> std::fmt::Debug for Queue<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock();
        f.debug_struct("Queue")
            .field("jobs", &st.jobs.len())
            .field("searching", &st.searching)
            .field("sleeping", &st.sleeping)
            .field("started", &st.started)
            .finish()
    }
}

impl<J> std::fmt::Debug for Seat<'_, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat")
            .field("searching", &self.searching)
            .finish()
    }
}
