//! The loop of one worker thread.

use std::sync::Arc;

use super::job::Job;
use super::pool::Shared;
use crate::panic::catch;
use crate::stats::{Ended, Tally};
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
/// The futures it ends are counted in its own `tally` (as a result is
/// about to be published, so a caller that sees its future done finds it
/// counted).
pub(crate) fn run(shared: Arc<Shared>, tally: &Tally) {
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
        let mut before_publish = |has_callbacks: bool, how: Ended| {
            tally.ended(how);
            if !has_callbacks {
                prefetched = seat.finishing();
            }
        };
        // The task's own panics are caught inside `run`; this catches the
        // rest (a waker that panics while being woken), so that nothing a
        // user hands the pool can take a worker thread down.
        let run = std::panic::AssertUnwindSafe(|| job.run_counted(&mut before_publish));
        match std::panic::catch_unwind(run) {
            Ok(true) => {}
            // Cancelled while queued: it ends here.
            Ok(false) => tally.ended(Ended::Cancelled),
            Err(_) => {
                tracing::error!(
                    target: "concurrent_futures",
                    "a panic escaped a job's completion; the worker goes on"
                );
            }
        }
        next = prefetched.or_else(|| seat.next());
    }
}
