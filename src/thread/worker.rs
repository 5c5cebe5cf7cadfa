//! The loop of one worker thread.

use std::io::Write;
use std::sync::Arc;

use super::job::Job;
use super::pool::Shared;
use crate::panic::catch;
use crate::Error;

/// The loop of one worker thread.
///
/// Holds no lock while it runs a job. Between jobs its state (searching,
/// sleeping, running) is kept by its [`Seat`](super::queue::Seat) in the
/// queue: as a job's result is about to be published (under the future's
/// lock, before anyone can see it), the worker takes the next queued job,
/// or counts itself searching, so that a caller woken by the result and
/// submitting at once finds it instead of starting another thread. Not if
/// done-callbacks will run here: they may wait for a task they submit,
/// which then needs another thread.
pub(crate) fn run(shared: Arc<Shared>) {
    let mut seat = shared.queue.seat();
    if let Some(init) = &shared.config.initializer {
        let outcome = catch(|| init()).and_then(|r| r.map_err(Error::BrokenPool));
        if let Err(e) = outcome {
            let reason = match e {
                Error::BrokenPool(msg) => format!("the initializer failed: {msg}"),
                other => format!("the initializer failed: {other}"),
            };
            drop(seat);
            shared.break_pool(reason);
            return;
        }
    }
    let mut next = seat.next();
    while let Some(job) = next {
        let mut prefetched: Option<Job> = None;
        let mut before_publish = |has_callbacks: bool| {
            if !has_callbacks {
                prefetched = seat.finishing();
            }
        };
        // The task's own panics are caught inside `run`; this catches the
        // rest (a waker that panics while being woken), so that nothing a
        // user hands the pool can take a worker thread down.
        let run = std::panic::AssertUnwindSafe(|| job.run(&mut before_publish));
        if std::panic::catch_unwind(run).is_err() {
            let _ = writeln!(
                std::io::stderr(),
                "concurrent-futures: a panic escaped a job's completion; the worker goes on"
            );
        }
        next = prefetched.or_else(|| seat.next());
    }
}
