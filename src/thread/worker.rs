//! The worker side of the thread pool: jobs and the loop that runs them.

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::TryRecvError;

use super::pool::Shared;
use crate::panic::catch;
use crate::{Error, Promise};

/// A queued task: its closure and the promise of its future.
pub(crate) type Job = Box<dyn Runnable>;

/// What the queue holds; erased over the closure and result types.
pub(crate) trait Runnable: Send {
    /// Runs the task unless its future was cancelled, and completes it.
    fn run(self: Box<Self>, idle: &IdleToken<'_>);
    /// Never runs the task: cancels its future (`None`) or fails it.
    fn abandon(self: Box<Self>, error: Option<Error>);
}

pub(crate) struct ClosureJob<F, T> {
    pub(crate) promise: Promise<T>,
    pub(crate) f: F,
}

impl<F, T> Runnable for ClosureJob<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(self: Box<Self>, idle: &IdleToken<'_>) {
        let ClosureJob { promise, f } = *self;
        if promise.set_running() {
            // `f` is consumed by the call: the closure and what it captured
            // are dropped here, before the result is published.
            let result = catch(f);
            // Count this worker idle before anyone can see the result: a
            // caller woken by it that submits at once must find this thread
            // free instead of starting another. Not if done-callbacks will
            // run here: they may wait for a task they submit, which then
            // needs another thread. Decided under the future's lock, before
            // the result is visible, so no submitter can see a stale count.
            // (The queue is looked at before the lock, to keep it short.)
            let queue_empty = idle.shared.jobs.is_empty();
            let _ = promise.complete_then(result, |has_callbacks| {
                if queue_empty && !has_callbacks {
                    idle.offer();
                }
            });
        }
    }

    fn abandon(self: Box<Self>, error: Option<Error>) {
        match error {
            None => {
                self.promise.cancel();
            }
            Some(e) => {
                let _ = self.promise.complete(Err(e));
            }
        }
    }
}

/// One worker's share of the pool's idle count: a token `submit` consumes
/// instead of starting a thread.
pub(crate) struct IdleToken<'a> {
    shared: &'a Shared,
    /// Whether this worker has added itself to the count.
    offered: Cell<bool>,
}

impl IdleToken<'_> {
    /// Counts this worker idle (once).
    fn offer(&self) {
        if !self.offered.replace(true) {
            self.shared.idle.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Takes the token back, unless a submitter already consumed one.
    fn withdraw(&self) {
        if self.offered.replace(false) {
            let _ = self
                .shared
                .idle
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

/// The loop of one worker thread.
///
/// Holds no lock while it runs a job. It counts itself idle while it blocks
/// on an empty queue, and already from the moment its last job's result is
/// about to be published (see [`ClosureJob::run`]).
pub(crate) fn run(shared: Arc<Shared>) {
    if let Some(init) = &shared.config.initializer {
        let outcome = catch(|| init()).and_then(|r| r.map_err(Error::BrokenPool));
        if let Err(e) = outcome {
            let reason = match e {
                Error::BrokenPool(msg) => format!("the initializer failed: {msg}"),
                other => format!("the initializer failed: {other}"),
            };
            shared.break_pool(reason);
            return;
        }
    }
    let idle = IdleToken {
        shared: &shared,
        offered: Cell::new(false),
    };
    // A new thread is started for a job just queued: it waits for its first
    // job without counting itself idle, or the next submit could count on it
    // and queue behind that job instead of starting a thread.
    let Ok(mut job) = shared.jobs.recv() else {
        return;
    };
    loop {
        // The task's own panics are caught inside `run`; this catches the
        // rest (a waker that panics while being woken), so that nothing a
        // user hands the pool can take a worker thread down.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&idle))).is_err() {
            let _ = writeln!(
                std::io::stderr(),
                "concurrent-futures: a panic escaped a job's completion; the worker goes on"
            );
        }
        job = match shared.jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                idle.offer();
                match shared.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        idle.withdraw();
    }
}
