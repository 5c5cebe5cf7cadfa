//! A thread-pool task: its closure lives in its future's shared state, so
//! submitting costs one allocation (see src/future/state.rs, "One allocation per
//! task").
//!
//! [`Job`] is `pub` for the loom models (through `__loom` under
//! `--cfg loom`); the module itself is private.
#![cfg_attr(not(loom), allow(unreachable_pub))]

use std::sync::Arc;

use crate::future::Inner;
use crate::panic::catch;
use crate::stats::Ended;
use crate::{Error, Future};

/// What the queue holds of a task: its future's state, erased over the
/// closure and result types.
trait Runnable: Send + Sync {
    /// Runs the task unless its future was cancelled (then false), and
    /// completes it; `before_publish` as in `Inner::complete_then`, also
    /// told how the future ends.
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut(bool, Ended)) -> bool;
    /// Never runs the task: cancels its future (`None`) or fails it; says
    /// how it ended.
    fn abandon(self: Arc<Self>, error: Option<Error>) -> Ended;
}

impl<T, F> Runnable for Inner<T, Option<F>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut(bool, Ended)) -> bool {
        // Cancelled while queued: the closure `start` hands back is
        // dropped here, outside the lock.
        let Ok(f) = self.start() else {
            return false;
        };
        // `f` is consumed by the call: the closure and what it captured
        // are dropped here, before the result is published.
        let result = catch(f);
        let how = if result.is_ok() {
            Ended::Value
        } else {
            Ended::Error
        };
        let inner: Arc<Inner<T>> = self;
        let _ = inner.complete_then(result, |callbacks| before_publish(callbacks, how));
        true
    }

    fn abandon(self: Arc<Self>, error: Option<Error>) -> Ended {
        drop(self.take_job());
        let inner: Arc<Inner<T>> = self;
        match error {
            None => {
                inner.cancel();
                Ended::Cancelled
            }
            Some(e) => match inner.complete_then(Err(e), |_| {}) {
                Ok(()) => Ended::Error,
                Err(_) => Ended::Cancelled,
            },
        }
    }
}

/// A queued task. Dropping one that was neither run nor abandoned fails its
/// future with [`Error::BrokenPool`], so a lost task never leaves a waiter
/// hanging (as a dropped `Promise` does).
pub struct Job(Option<Arc<dyn Runnable>>);

impl Job {
    /// The task running `f`, and its future: two handles on one allocation.
    pub fn new<F, T>(f: F) -> (Job, Future<T>)
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let cell = Arc::new(Inner::with_job(Some(f)));
        let future = Future::from_inner(Arc::clone(&cell) as Arc<Inner<T>>);
        (Job(Some(cell)), future)
    }

    /// Runs the task (unless its future was cancelled) and completes its
    /// future, calling `before_publish` as the result is about to be seen,
    /// told whether done-callbacks will run.
    #[cfg(loom)]
    pub fn run(self, before_publish: &mut dyn FnMut(bool)) {
        self.run_counted(&mut |callbacks, _| before_publish(callbacks));
    }

    /// [`run`](Job::run), also telling `before_publish` how the future
    /// ends. False if the future was cancelled and the task not run.
    pub(crate) fn run_counted(mut self, before_publish: &mut dyn FnMut(bool, Ended)) -> bool {
        match self.0.take() {
            Some(cell) => cell.run(before_publish),
            None => false,
        }
    }

    /// Cancels the task's future (`None`) or fails it with `error`; says
    /// how it ended.
    pub(crate) fn abandon(mut self, error: Option<Error>) -> Ended {
        match self.0.take() {
            Some(cell) => cell.abandon(error),
            None => Ended::Cancelled,
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(cell) = self.0.take() {
            cell.abandon(Some(Error::BrokenPool(
                "the task was dropped before it completed".to_string(),
            )));
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the state of a task running `f`, without the `Arc`'s
    /// two counters.
    fn cell_size<F: FnOnce() -> u64>(_: &F) -> usize {
        std::mem::size_of::<Inner<u64, Option<F>>>()
    }

    #[test]
    fn a_pending_future_u64_costs_one_56_byte_allocation() {
        let i = 7u64;
        // The lock (padded to 8), the phase (16: a result, or the listener
        // list), the closure in an `Option` (16); plus the Arc's 16.
        assert_eq!(cell_size(&move || i) + 16, 56);
        // The queue's slot and the caller's handle are two words each.
        assert_eq!(std::mem::size_of::<Job>(), 16);
        assert_eq!(std::mem::size_of::<Future<u64>>(), 16);
    }
}
