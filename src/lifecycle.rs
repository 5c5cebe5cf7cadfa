//! The life of a pool, written once for both: how a task that never runs
//! leaves ([`Abandon`]), the threads a pool has to join ([`Threads`]), and
//! [`shutdown`], with the steps where the pools differ as the hooks of
//! [`Pool`].
//!
//! What each pool keeps: where it stores "shutting down" and "broken". The
//! thread pool keeps them inside its queue, under the lock every `submit`
//! takes anyway (so closing and queueing are decided at one place, and a
//! submit costs no second lock); the process pool in its `State`. A pool
//! both shut down and broken refuses with `BrokenPool` on either pool, as
//! Python's do (a process pool whose `shutdown_timeout` killed what still
//! ran is shut down, not broken); tests pin both.
// Without the process pool (not unix) some of it has no user.
#![cfg_attr(not(unix), allow(dead_code))]

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{Error, Shutdown};

/// A queued task, as far as leaving its pool without running goes.
pub(crate) trait Abandon {
    /// Never runs the task: cancels its future (`None`) or fails it with
    /// `error`. Call it without the pool's locks: it runs the future's
    /// done-callbacks, which may submit to the pool.
    fn abandon(self, error: Option<Error>);
}

/// Cancels every job (a shutdown with `cancel_futures`).
pub(crate) fn cancel_all<J: Abandon>(jobs: impl IntoIterator<Item = J>) {
    for job in jobs {
        job.abandon(None);
    }
}

/// Fails every job with `error` (a broken pool, a worker that cannot start).
pub(crate) fn fail_all<J: Abandon>(jobs: impl IntoIterator<Item = J>, error: &Error) {
    for job in jobs {
        job.abandon(Some(error.clone()));
    }
}

/// The threads a pool started and has not joined yet.
#[derive(Default)]
pub(crate) struct Threads(Vec<JoinHandle<()>>);

impl Threads {
    pub(crate) fn push(&mut self, thread: JoinHandle<()>) {
        self.0.push(thread);
    }

    pub(crate) fn extend(&mut self, threads: impl IntoIterator<Item = JoinHandle<()>>) {
        self.0.extend(threads);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if the calling thread is one of them (see [`shutdown`]).
    pub(crate) fn include_current(&self) -> bool {
        let me = thread::current().id();
        self.0.iter().any(|t| t.thread().id() == me)
    }

    /// Takes them all out, to be joined.
    pub(crate) fn take(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.0)
    }

    /// Joins those that have finished. Without this a process pool that
    /// replaces workers (`max_tasks_per_child`, `restart_workers`) kept
    /// every retired worker's threads unjoined, with their stacks mapped,
    /// until shutdown. The threads are finished, so the joins do not block.
    pub(crate) fn join_finished(&mut self) {
        let (finished, running) = self.take().into_iter().partition(JoinHandle::is_finished);
        self.0 = running;
        join(finished);
    }
}

/// Joins `threads` (a thread that panicked is joined all the same).
fn join(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        let _ = t.join();
    }
}

/// When a shutdown stops waiting for the submitted work: the process
/// pool's `shutdown_timeout`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    /// The timeout it came from, for the error of the tasks it kills.
    pub(crate) limit: Duration,
}

impl Deadline {
    /// `timeout` from now; `None` if that is beyond what `Instant` holds.
    pub(crate) fn after(timeout: Duration) -> Option<Deadline> {
        Instant::now()
            .checked_add(timeout)
            .map(|at| Deadline { at, limit: timeout })
    }
}

/// A pool as [`shutdown`] sees it: the steps where the two pools differ.
pub(crate) trait Pool {
    /// A queued task.
    type Job: Abandon;

    /// Stops accepting tasks, under the lock a submit takes (so a
    /// concurrent submit either queues before it, and runs, or gets
    /// `Error::Shutdown`), and wakes the threads that wait for work. With
    /// `cancel`, takes the queued jobs out, to be cancelled.
    fn close(&self, cancel: bool) -> Vec<Self::Job>;

    /// True if the calling thread is one of the pool's threads.
    fn on_own_thread(&self) -> bool;

    /// Held while a shutdown joins the threads, so that concurrent
    /// shutdowns all wait until the joining is done.
    fn joining(&self) -> &Mutex<()>;

    /// Waits until the submitted work is done or `deadline`; then kills
    /// what still runs and takes the queued jobs out (to be cancelled once
    /// the joining is done). True if the work was done in time.
    fn wait_or_kill(&self, deadline: Deadline) -> (bool, Vec<Self::Job>);

    /// The threads to join next; none once every thread is joined. Called
    /// until it returns none: threads a submit started just before the
    /// shutdown are joined too.
    fn next_to_join(&self, deadline: Option<Deadline>) -> Vec<JoinHandle<()>>;

    /// Runs once every thread is joined, before the shutdowns waiting on
    /// [`joining`](Pool::joining) go on.
    fn joined(&self) {}
}

/// Stops `pool`: no new tasks; cancels the queued ones if asked; with
/// `wait`, waits for the rest (until `deadline`, if any, then kills what
/// runs) and joins every thread. Idempotent; a later call with `wait`
/// joins what an earlier one left running. Returns false if the deadline
/// passed first.
///
/// From one of the pool's own threads (a task, or a done-callback run by a
/// worker or reader, that drops or shuts down its pool) it does not wait:
/// another caller may be joining that very thread, or the thread's worker
/// cannot finish while it is blocked here. A later shutdown or drop, from
/// another thread, waits.
pub(crate) fn shutdown<P: Pool>(pool: &P, options: Shutdown, deadline: Option<Deadline>) -> bool {
    // Without a lock: cancelling runs the futures' done-callbacks, which
    // may call `submit` (and get `Error::Shutdown`).
    cancel_all(pool.close(options.cancel_futures));
    if !options.wait {
        return true;
    }
    if pool.on_own_thread() {
        return false;
    }
    let joining = pool.joining().lock();
    let (in_time, late) = match deadline {
        Some(d) => pool.wait_or_kill(d),
        None => (true, Vec::new()),
    };
    loop {
        let threads = pool.next_to_join(deadline);
        if threads.is_empty() {
            break;
        }
        join(threads);
    }
    pool.joined();
    drop(joining);
    // Their done-callbacks may shut the pool down again: not while this
    // thread holds `joining`.
    cancel_all(late);
    in_time
}
