//! A task on its way to a worker: [`Job`], and the pool's side of its
//! future ([`Completion`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::lifecycle::Abandon;
use crate::task::{decode, ErasedTask};
use crate::{Error, Promise};

/// The pool's side of a future: completes it from the wire.
pub(crate) trait Completion: Send {
    /// Marks the future running; false if it was cancelled (do not send).
    fn set_running(&self) -> bool;
    /// Completes the future from a worker's reply.
    fn finish(self: Box<Self>, reply: Result<&[u8], Error>);
    /// Never sent: cancel (`None`) or fail the future.
    fn abandon(self: Box<Self>, error: Option<Error>);
}

impl<R: DeserializeOwned + Send> Completion for Promise<R> {
    fn set_running(&self) -> bool {
        Promise::set_running(self)
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
    pub(crate) chunk: bool,
    pub(crate) payload: Payload,
    /// The run-time limit, counted from the start in the worker.
    pub(crate) time_limit: Option<Duration>,
    pub(crate) completion: Box<dyn Completion>,
    pub(crate) ticket: Ticket,
    /// Its future is marked running (it was sent once already).
    pub(crate) sent_before: bool,
}

impl Job {
    /// Marks the future running the first time the job is sent; false if
    /// it was cancelled while queued (then it must not be sent).
    pub(crate) fn claim(&mut self) -> bool {
        if self.sent_before {
            return true;
        }
        self.sent_before = self.completion.set_running();
        self.sent_before
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
