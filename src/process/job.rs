//! A task on its way to a worker: [`Job`], and the pool's side of its
//! future ([`Completion`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::future::Holder;
use crate::lifecycle::Abandon;
use crate::task::{decode, ErasedTask};
use crate::{Error, Promise};

/// The pool's side of a future: completes it from the wire.
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
    fn finish(self: Box<Self>, reply: Result<&[u8], Error>);
    /// Never sent: cancel (`None`) or fail the future.
    fn abandon(self: Box<Self>, error: Option<Error>);
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

    fn finish(self: Box<Self>, reply: Result<&[u8], Error>) {
        let _ = self.complete(reply.and_then(decode::<R>));
    }

    fn abandon(self: Box<Self>, error: Option<Error>) {
        match error {
            None => {
                self.cancel();
            }
            Some(e) => {
                let _ = self.complete(Err(e));
            }
        }
    }
}

/// Counts a job as outstanding while it lives. Drop it before completing
/// the job's future: a caller woken by the completion may submit at once,
/// and a stale count would make the pool start a worker it does not need.
pub(crate) struct Ticket(pub(crate) Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    /// How many more times it may run when its worker dies under it.
    pub(crate) retries_left: u32,
    /// Why each earlier try ended (its worker died under it), oldest first.
    pub(crate) tries: Vec<String>,
}

impl Job {
    /// Marks the future as it is sent: running if the worker starts it at
    /// once (`holder` is `None`), else held by the worker. False if it was
    /// cancelled while queued (then it must not be sent).
    pub(crate) fn claim(&self, holder: Option<&Arc<Holder>>) -> bool {
        match holder {
            None => self.completion.set_running(),
            Some(h) => self.completion.hold(h),
        }
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
    pub(crate) fn died(mut self, reason: String) -> Option<Job> {
        if self.retries_left > 0 {
            self.retries_left -= 1;
            self.tries.push(reason);
            return Some(self);
        }
        let error = self.died_error(reason);
        self.finish(Err(error));
        None
    }

    /// The error of a job whose worker died under it on its last try.
    pub(crate) fn died_error(&self, reason: String) -> Error {
        if self.tries.is_empty() {
            return Error::BrokenPool(reason);
        }
        let n = self.tries.len() + 1;
        let mut text = format!("{reason} (try {n} of {n}; before:");
        for (i, why) in self.tries.iter().enumerate() {
            text.push_str(&format!(" try {}: {why};", i + 1));
        }
        text.pop();
        text.push(')');
        Error::BrokenPool(text)
    }

    /// Completes its future from the worker's reply (or its failure).
    pub(crate) fn finish(self, reply: Result<&[u8], Error>) {
        let Job {
            completion, ticket, ..
        } = self;
        drop(ticket);
        completion.finish(reply);
    }
}

impl Abandon for Job {
    /// Never ran: cancel (`None`) or fail its future.
    fn abandon(self, error: Option<Error>) {
        let Job {
            completion, ticket, ..
        } = self;
        drop(ticket);
        completion.abandon(error);
    }
}
