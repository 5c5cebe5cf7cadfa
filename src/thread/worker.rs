//! The worker side of the thread pool: jobs and the loop that runs them.

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
    fn run(self: Box<Self>);
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
    fn run(self: Box<Self>) {
        let ClosureJob { promise, f } = *self;
        if promise.set_running() {
            // `f` is consumed by the call: the closure and what it captured
            // are dropped here, before the result is published.
            let result = catch(f);
            let _ = promise.complete(result);
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

/// The loop of one worker thread.
///
/// Holds no lock while it runs a job. Before blocking on an empty queue it
/// leaves an idle token that `submit` consumes instead of starting a thread.
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
    loop {
        let job = match shared.jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                shared.idle.fetch_add(1, Ordering::AcqRel);
                let got = shared.jobs.recv();
                // Take our token back unless a submitter already consumed one.
                let _ = shared
                    .idle
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                match got {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        job.run();
    }
}
