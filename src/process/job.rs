//! A task on its way to a worker: [`Job`], and the pool's side of its
//! future ([`Completion`]).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::future::Holder;
use crate::lifecycle::Abandon;
use crate::stats::{Counters, Ended};
use crate::task::{decode, ErasedTask};
use crate::{Error, Promise};

/// The pool's side of a future: completes it from the wire. Each way to
/// complete it tells `counted` how the future ended, under the future's
/// lock before anyone sees it done (or, for a future that was already
/// done, right after): a caller that sees its future done finds it in the
/// pool's counts.
pub(crate) trait Completion: Send {
    /// Marks the future running; false if it was cancelled (do not send).
    fn set_running(&self) -> bool;
    /// Marks the future held by a worker (sent ahead, not started); false
    /// if it was cancelled (do not send).
    fn hold(&self, holder: &Arc<Holder>) -> bool;
    /// A held future is back in the pool's queue: pending again.
    fn release(&self);
    /// Identifies the future (see `Holder`).
    fn key(&self) -> usize;
    /// Completes the future from a worker's reply.
    fn finish(self: Box<Self>, reply: Result<&[u8], Error>, counted: &mut dyn FnMut(Ended));
    /// Never sent: cancel (`None`) or fail the future.
    fn abandon(self: Box<Self>, error: Option<Error>, counted: &mut dyn FnMut(Ended));
}

impl<R: DeserializeOwned + Send> Completion for Promise<R> {
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }

    fn hold(&self, holder: &Arc<Holder>) -> bool {
        Promise::hold(self, holder)
    }

    fn release(&self) {
        Promise::release(self);
    }

    fn key(&self) -> usize {
        Promise::key(self)
    }

    fn finish(self: Box<Self>, reply: Result<&[u8], Error>, counted: &mut dyn FnMut(Ended)) {
        let value = reply.and_then(decode::<R>);
        let how = if value.is_ok() {
            Ended::Value
        } else {
            Ended::Error
        };
        if self.complete_then(value, |_| counted(how)).is_err() {
            // Already done: only a cancel can have done it.
            counted(Ended::Cancelled);
        }
    }

    fn abandon(self: Box<Self>, error: Option<Error>, counted: &mut dyn FnMut(Ended)) {
        match error {
            None if self.cancel() => counted(Ended::Cancelled),
            // A running future cannot be cancelled: dropping the promise
            // fails it.
            None => counted(Ended::Error),
            Some(e) => {
                if self
                    .complete_then(Err(e), |_| counted(Ended::Error))
                    .is_err()
                {
                    counted(Ended::Cancelled);
                }
            }
        }
    }
}

/// Counts a job as outstanding while it lives, whether its future is
/// running, and its future's end, in the pool's [`Counters`]. The counts
/// change under the future's lock before anyone sees it done: a caller
/// woken by the completion may submit at once, and a stale outstanding
/// count would make the pool start a worker it does not need.
pub(crate) struct Ticket {
    counters: Arc<Counters>,
    /// Its future is marked running (and counted so).
    running: Cell<bool>,
    /// Its end is counted (and it no longer counts as outstanding).
    settled: Cell<bool>,
}

impl Ticket {
    /// Counts a new job as outstanding.
    pub(crate) fn new(counters: &Arc<Counters>) -> Self {
        counters.outstanding.fetch_add(1, Ordering::AcqRel);
        Ticket {
            counters: Arc::clone(counters),
            running: Cell::new(false),
            settled: Cell::new(false),
        }
    }

    /// Its future was marked running (`true`) or is pending again.
    fn running(&self, now: bool) {
        if self.running.replace(now) != now {
            let running = &self.counters.running;
            if now {
                running.fetch_add(1, Ordering::Relaxed);
            } else {
                running.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Its future ended `how`: counted, and no longer outstanding.
    fn settle(&self, how: Ended) {
        if !self.settled.replace(true) {
            self.counters.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        self.running(false);
        self.counters.ended(how);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled.get() {
            self.counters.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
        self.running(false);
    }
}

/// Where a task came from, for the errors of the tasks that a worker's
/// death took with it: "submit #3", "map item 7", "map items 8 to 11"
/// (counting from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The pool's `n`th `submit` (numbered as it is queued).
    Submit(u64),
    /// A `map`'s items `first..first + len`.
    Items { first: u64, len: u64 },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Place::Submit(n) => write!(f, "submit #{n}"),
            Place::Items { first, len: 0 | 1 } => write!(f, "map item {first}"),
            Place::Items { first, len } => {
                write!(f, "map items {first} to {}", first + len - 1)
            }
        }
    }
}

/// An encoded argument. A big one is shared between the writer that sends
/// it (without the worker's lock) and the record of what the worker holds
/// (to send it elsewhere if the worker dies before starting it).
pub(crate) enum Payload {
    Inline(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl Payload {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Payload::Inline(v) => v,
            Payload::Shared(v) => v,
        }
    }

    /// Makes the bytes shareable and returns a handle on them.
    pub(crate) fn share(&mut self) -> Arc<Vec<u8>> {
        match self {
            Payload::Shared(v) => Arc::clone(v),
            Payload::Inline(v) => {
                let shared = Arc::new(std::mem::take(v));
                *self = Payload::Shared(Arc::clone(&shared));
                shared
            }
        }
    }
}

/// A task waiting in the shared queue, or held by a worker.
pub(crate) struct Job {
    pub(crate) entry: &'static dyn ErasedTask,
    /// For a chunk of a `map`, how many items it carries (`None`: one
    /// argument, not a chunk).
    pub(crate) items: Option<u32>,
    pub(crate) payload: Payload,
    /// The run-time limit, counted from the start in the worker. A chunk
    /// has its items' limit once per item (see [`Job::limit_error`]).
    pub(crate) time_limit: Option<Duration>,
    pub(crate) completion: Box<dyn Completion>,
    pub(crate) ticket: Ticket,
    /// The sequence number it was first sent with: where it goes back in
    /// the queue if it comes back without running (given back, or its
    /// worker died first), so that tasks keep their order.
    pub(crate) first_seq: Option<u64>,
    /// How many more times it may run when its worker dies under it.
    pub(crate) retries_left: u32,
    /// Why each earlier try ended (its worker died under it), oldest first.
    pub(crate) tries: Vec<String>,
    /// Where it came from, for error messages.
    pub(crate) place: Place,
}

impl Job {
    /// Marks the future as it is sent: running if the worker starts it at
    /// once (`holder` is `None`), else held by the worker. False if it was
    /// cancelled while queued (then it must not be sent).
    pub(crate) fn claim(&self, holder: Option<&Arc<Holder>>) -> bool {
        let claimed = match holder {
            None => self.start(),
            Some(h) => self.completion.hold(h),
        };
        if !claimed {
            // Cancelled while queued: the caller drops the job.
            self.ticket.settle(Ended::Cancelled);
        }
        claimed
    }

    /// Marks the future running (sent to an idle worker, or its worker
    /// started it after holding it); false if it was no longer pending.
    pub(crate) fn start(&self) -> bool {
        let started = self.completion.set_running();
        if started {
            self.ticket.running(true);
        }
        started
    }

    /// Back in the pool's queue: its future is pending again.
    pub(crate) fn release(&self) {
        self.completion.release();
        self.ticket.running(false);
    }

    /// The run-time limit of a job of `items` (a chunk's count, or `None`)
    /// whose task has `limit` per item: the item's limit for one item, and
    /// that many times it for a chunk, so that no item that keeps to its
    /// limit fails because it shares a chunk.
    pub(crate) fn run_limit(limit: Option<Duration>, items: Option<u32>) -> Option<Duration> {
        let limit = limit?;
        Some(match items {
            None => limit,
            Some(n) => limit.checked_mul(n.max(1)).unwrap_or(Duration::MAX),
        })
    }

    /// The error of a job killed at its run-time limit `limit`.
    pub(crate) fn limit_error(&self, limit: Duration) -> Error {
        match self.items {
            None => Error::TimeLimit(limit),
            Some(n) => Error::ChunkTimeLimit {
                items: n as usize,
                limit: limit / n.max(1),
            },
        }
    }

    /// Its worker died under it (`reason`): if a retry is left, records the
    /// try and returns the job to run again; else fails its future with an
    /// error that names every try.
    /// The pool goes on: a last try fails with [`Error::WorkerDied`] (or
    /// [`Error::HostLost`] if the link to its host died, `lost`).
    pub(crate) fn died(mut self, reason: String, lost: bool) -> Option<Job> {
        if self.retries_left > 0 {
            self.retries_left -= 1;
            self.ticket
                .counters
                .ends()
                .retries
                .fetch_add(1, Ordering::Relaxed);
            let place = self.place.to_string();
            let attempt = self.tries.len() + 2;
            tracing::warn!(target: "concurrent_futures", task = %place, attempt, %reason, "task retried");
            self.tries.push(reason);
            return Some(self);
        }
        let error = self.died_error(reason, true, lost);
        self.finish(Err(error));
        None
    }

    /// The error of a job whose worker died under it on its last try:
    /// [`Error::HostLost`] if the link to its host died (`lost`),
    /// [`Error::WorkerDied`] if the pool `goes_on`, else
    /// [`Error::BrokenPool`].
    pub(crate) fn died_error(&self, reason: String, goes_on: bool, lost: bool) -> Error {
        let wrap = if lost {
            Error::HostLost
        } else if goes_on {
            Error::WorkerDied
        } else {
            Error::BrokenPool
        };
        if self.tries.is_empty() {
            return wrap(reason);
        }
        let n = self.tries.len() + 1;
        let mut text = format!("{reason} (try {n} of {n}; before:");
        for (i, why) in self.tries.iter().enumerate() {
            text.push_str(&format!(" try {}: {why};", i + 1));
        }
        text.pop();
        text.push(')');
        wrap(text)
    }

    /// Completes its future from the worker's reply (or its failure).
    pub(crate) fn finish(self, reply: Result<&[u8], Error>) {
        let Job {
            completion, ticket, ..
        } = self;
        completion.finish(reply, &mut |how| ticket.settle(how));
    }
}

impl Abandon for Job {
    /// Never ran: cancel (`None`) or fail its future.
    fn abandon(self, error: Option<Error>) {
        let Job {
            completion, ticket, ..
        } = self;
        completion.abandon(error, &mut |how| ticket.settle(how));
    }
}
