//! The shared state of a [`Future`]: its phase, its listeners and, for a
//! thread-pool task, its job.
//!
//! # State machine
//!
//! ```text
//!            cancel()                 (terminal, notifies)
//!  PENDING ───────────────────────▶ CANCELLED
//!     │ ▲ set_running() / start()
//!     ▼ │ release()   complete(r)
//!  RUNNING ───────────────────────▶ FINISHED(r) ──result()──▶ TAKEN
//! ```
//!
//! A process-pool task may be `PENDING` in a worker that holds it behind
//! the task it runs: its job slot names that [`Holder`] (`hold()`). Only
//! the worker knows whether it has started the task by now, so `cancel()`
//! asks it and the worker's answer decides (`src/process/inbox.rs`): the
//! future is cancelled, or running. A `PENDING` future may also be
//! completed directly (a pool that fails it before it runs), and a
//! process-pool task whose worker died under it goes from `RUNNING` back
//! to `PENDING` when it is to run again (`release()`, `Task::retries`).
//! Every transition happens under the future's mutex; the listeners
//! (blocked threads, done-callbacks, an async waker, `as_completed`/`wait`
//! waiters) live in the `PENDING` and `RUNNING` states, are taken out with
//! the state under the lock and told after it is released, in the
//! completing thread.
//!
//! # One allocation per task
//!
//! The shared state is an `Arc<Inner<T, J>>` whose last field is the job
//! `J`: a thread-pool task is `Inner<T, Option<F>>` (the closure `F` waits
//! there until a worker takes it out), a [`Promise`](crate::Promise)'s is
//! `Inner<T, ()>`. The handle sees `Inner<T, dyn Slot>`, the queue
//! `dyn Runnable` (src/thread/job.rs): both point into the same allocation,
//! as in tokio's task cell. A thread blocked on the future is one more
//! listener (woken by `unpark`), so the state needs no condition variable:
//! for `Future<u64>` and a closure capturing a `u64`, the whole allocation
//! is 56 bytes.

use std::sync::Arc;
use std::task::Waker;

use crate::panic::run_callback;
use crate::sync::{Mutex, MutexGuard, Thread};
use crate::wait::Waiter;
use crate::{Error, Future};

/// The type-erased job at the end of a future's shared state: what the
/// future's handle knows of it. A process-pool task's slot names the
/// worker that holds it, if one does; the others hold none.
pub(crate) trait Slot: Send {
    /// The worker holding the task, sent ahead and not started.
    fn holder(&self) -> Option<&Arc<Holder>> {
        None
    }

    /// Records (or, with `None`, clears) the worker holding the task;
    /// false if this kind of task cannot be held.
    fn set_holder(&mut self, _holder: Option<Arc<Holder>>) -> bool {
        false
    }
}

/// A thread-pool task: the closure, until a worker takes it out.
impl<F: Send> Slot for Option<F> {}

/// A [`Promise`](crate::Promise)'s future: no job.
impl Slot for () {}

/// A process-pool task's slot: the worker that holds it, if any.
#[derive(Default)]
pub(crate) struct HeldBy(Option<Arc<Holder>>);

impl Slot for HeldBy {
    fn holder(&self) -> Option<&Arc<Holder>> {
        self.0.as_ref()
    }

    fn set_holder(&mut self, holder: Option<Arc<Holder>>) -> bool {
        self.0 = holder;
        true
    }
}

/// Listeners, newest first: one word inline, so a future nobody listens to
/// stays small.
pub(crate) type List<T> = Option<Box<Node<T>>>;

/// Who holds a task sent ahead to a worker, to be asked for it back when
/// its future is cancelled.
pub(crate) struct Holder {
    /// Asks for the task of the future whose state is at this address, to
    /// cancel it; returns once the future is no longer held (the holder
    /// gave it back and cancelled it, or found that it started): true; or
    /// at once if the holder cannot ask: false. The second argument tells
    /// whether the future is still held.
    recall: Recall,
}

/// See [`Holder`].
type Recall = Box<dyn Fn(usize, &dyn Fn() -> bool) -> bool + Send + Sync>;

impl Holder {
    pub(crate) fn new(
        recall: impl Fn(usize, &dyn Fn() -> bool) -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Holder {
            recall: Box::new(recall),
        })
    }
}

/// Where a future is in its life.
pub(crate) enum Phase<T> {
    /// Queued, or held by a worker that has not started it (its slot says
    /// which); may still be cancelled.
    Pending(List<T>),
    /// A worker has started it; it can no longer be cancelled.
    Running(List<T>),
    /// Cancelled before it started. Terminal.
    Cancelled,
    /// Finished with a value or an error (boxed to keep pending futures small).
    Finished(Result<T, Box<Error>>),
    /// Finished with a value that has since been moved out.
    Taken,
}

/// A done-callback.
pub(crate) type Callback<T> = Box<dyn FnOnce(&Future<T>) + Send>;

/// Someone to tell when the future is done.
pub(crate) enum Listener<T> {
    /// A thread blocked in `result`, `wait` or `exception`.
    Thread(Thread),
    Callback(Callback<T>),
    Waker(Waker),
    Waiter(Arc<Waiter>, usize),
}

/// One listener of the list.
pub(crate) struct Node<T> {
    pub(crate) listener: Listener<T>,
    pub(crate) next: List<T>,
}

pub(crate) struct State<T, J: ?Sized> {
    pub(crate) phase: Phase<T>,
    /// The task, until a worker takes it out (`()` for a promise's future).
    job: J,
}

/// The shared state of a future; `J` is its job (see the module docs).
pub(crate) struct Inner<T, J: ?Sized = dyn Slot> {
    pub(crate) state: Mutex<State<T, J>>,
}

/// The lock on a future's state, as the handle sees it.
pub(crate) type Guard<'a, T> = MutexGuard<'a, State<T, dyn Slot>>;

/// The outcome a listener is told about.
#[derive(Clone, Copy)]
pub(crate) struct Outcome {
    /// Finished with an error (not cancelled).
    pub(crate) failed: bool,
}

impl<T> Phase<T> {
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Phase::Cancelled | Phase::Finished(_) | Phase::Taken)
    }

    pub(crate) fn outcome(&self) -> Outcome {
        Outcome {
            failed: matches!(self, Phase::Finished(Err(_))),
        }
    }

    /// The listeners, while the future is not done.
    pub(crate) fn listeners(&mut self) -> Option<&mut List<T>> {
        match self {
            Phase::Pending(l) | Phase::Running(l) => Some(l),
            _ => None,
        }
    }

    /// PENDING -> RUNNING, keeping the listeners; false if the future is
    /// no longer pending.
    pub(crate) fn start(&mut self) -> bool {
        let Phase::Pending(l) = self else {
            return false;
        };
        let l = l.take();
        *self = Phase::Running(l);
        true
    }

    /// RUNNING -> PENDING: its task is back in the pool's queue, to run
    /// again (its worker died under it).
    pub(crate) fn release(&mut self) {
        if let Phase::Running(l) = self {
            let l = l.take();
            *self = Phase::Pending(l);
        }
    }

    /// Adds a listener; a done future has none (its caller checked).
    pub(crate) fn push(&mut self, listener: Listener<T>) {
        if let Some(list) = self.listeners() {
            let next = list.take();
            *list = Some(Box::new(Node { listener, next }));
        }
    }

    /// Removes the listeners `drop_it` picks, keeping the others' order.
    pub(crate) fn remove_where(&mut self, mut drop_it: impl FnMut(&Listener<T>) -> bool) {
        let Some(list) = self.listeners() else {
            return;
        };
        let mut kept = None;
        let mut cur = list.take();
        while let Some(mut node) = cur {
            cur = node.next.take();
            if !drop_it(&node.listener) {
                node.next = kept;
                kept = Some(node);
            }
        }
        // `kept` is reversed; reverse it back.
        *list = reverse(kept);
    }
}

/// Reverses a list in place (newest-first becomes oldest-first).
fn reverse<T>(mut list: List<T>) -> List<T> {
    let mut out = None;
    while let Some(mut node) = list {
        list = node.next.take();
        node.next = out;
        out = Some(node);
    }
    out
}

impl<T, J: ?Sized> State<T, J> {
    pub(crate) fn is_done(&self) -> bool {
        self.phase.is_done()
    }

    /// Replaces the phase by a terminal one; hands back the listeners.
    fn settle(&mut self, phase: Phase<T>) -> List<T> {
        match std::mem::replace(&mut self.phase, phase) {
            Phase::Pending(l) | Phase::Running(l) => l,
            _ => None,
        }
    }
}

impl<T, J> Inner<T, J> {
    /// A pending future holding `job`.
    pub(crate) fn with_job(job: J) -> Self {
        Inner {
            state: Mutex::new(State {
                phase: Phase::Pending(None),
                job,
            }),
        }
    }
}

impl<T> Inner<T, ()> {
    /// A future already finished with `result`, with no job.
    pub(crate) fn finished(result: Result<T, Error>) -> Self {
        Inner {
            state: Mutex::new(State {
                phase: Phase::Finished(result.map_err(Box::new)),
                job: (),
            }),
        }
    }
}

impl<T, F> Inner<T, Option<F>> {
    /// PENDING -> RUNNING, handing out the job to run. `Err` with the job
    /// (to be dropped by the caller, outside the lock) if the future is no
    /// longer pending.
    pub(crate) fn start(&self) -> Result<F, Option<F>> {
        let mut st = self.state.lock();
        let job = st.job.take();
        if st.phase.start() {
            if let Some(f) = job {
                return Ok(f);
            }
        }
        Err(job)
    }

    /// Takes the job out without running it.
    pub(crate) fn take_job(&self) -> Option<F> {
        self.state.lock().job.take()
    }
}

impl<T> Inner<T> {
    /// Tells everyone who listens; called with the lock released. A waker
    /// or callback that panics is reported and the others are still told.
    fn notify(self: &Arc<Self>, listeners: List<T>, outcome: Outcome) {
        let mut callbacks = Vec::new();
        let mut cur = reverse(listeners);
        while let Some(node) = cur {
            let Node { listener, next } = *node;
            cur = next;
            match listener {
                Listener::Thread(t) => t.unpark(),
                Listener::Waiter(w, index) => w.notify(index, outcome),
                Listener::Waker(w) => run_callback("a waker", || w.wake()),
                Listener::Callback(cb) => callbacks.push(cb),
            }
        }
        if !callbacks.is_empty() {
            let handle = Future::from_inner(Arc::clone(self));
            for cb in callbacks {
                run_callback("a done callback", || cb(&handle));
            }
        }
    }

    /// Stores `result` unless the future is done (then hands it back),
    /// wakes the waiters and runs the listeners. `before_publish` runs while
    /// the result is stored but nobody can see it yet, told whether any
    /// done-callback will run (no callback can be added after that point:
    /// `add_done_callback` on a done future runs it at once, in its caller).
    pub(crate) fn complete_then(
        self: &Arc<Self>,
        result: Result<T, Error>,
        before_publish: impl FnOnce(bool),
    ) -> Result<(), Result<T, Error>> {
        let mut st = self.state.lock();
        if st.is_done() {
            return Err(result);
        }
        let listeners = st.settle(Phase::Finished(result.map_err(Box::new)));
        let outcome = st.phase.outcome();
        before_publish(has_callbacks(&listeners));
        drop(st);
        self.notify(listeners, outcome);
        Ok(())
    }

    /// True once finished or cancelled.
    pub(crate) fn is_done(&self) -> bool {
        self.state.lock().is_done()
    }

    /// Where this state lives: how a [`Holder`] finds the task.
    pub(crate) fn key(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as *const () as usize
    }

    /// Cancels a pending future; a held one only if its holder gives the
    /// task back (this waits for the holder's answer).
    pub(crate) fn cancel(self: &Arc<Self>) -> bool {
        // Rounds in which the holder answered but the future still names
        // it: the holder is between taking the task off its list and
        // putting it back in the pool's queue, a few instructions.
        let mut in_transit = 0u32;
        loop {
            let holder = {
                let st = self.state.lock();
                match (&st.phase, st.job.holder()) {
                    (Phase::Pending(_), Some(h)) => Arc::clone(h),
                    // Under the same lock: a pending future may be sent
                    // to a worker (held) the moment the lock is released.
                    _ => return self.cancel_locked(st),
                }
            };
            let held_by = |st: &Guard<'_, T>| {
                matches!(st.phase, Phase::Pending(_))
                    && st.job.holder().is_some_and(|h| Arc::ptr_eq(h, &holder))
            };
            let still_held = || held_by(&self.state.lock());
            let asked = (holder.recall)(self.key(), &still_held);
            let st = self.state.lock();
            match st.phase {
                Phase::Cancelled => return true,
                // Given back to the pool's queue meanwhile, or sent to
                // another worker: ask again.
                Phase::Pending(_) if !held_by(&st) => {}
                Phase::Pending(_) if asked && in_transit < 100_000 => {
                    in_transit += 1;
                    drop(st);
                    std::thread::yield_now();
                }
                _ => return false,
            }
        }
    }

    /// Cancels the future unless it started or is done: the pool's own
    /// cancel, which knows that the task will not run.
    pub(crate) fn cancel_now(self: &Arc<Self>) -> bool {
        self.cancel_locked(self.state.lock())
    }

    /// [`cancel_now`](Self::cancel_now) under a lock already taken.
    fn cancel_locked(self: &Arc<Self>, mut st: Guard<'_, T>) -> bool {
        match st.phase {
            Phase::Pending(_) => {
                st.job.set_holder(None);
                let listeners = st.settle(Phase::Cancelled);
                let outcome = st.phase.outcome();
                drop(st);
                self.notify(listeners, outcome);
                true
            }
            Phase::Cancelled => true,
            _ => false,
        }
    }

    /// Marks a pending future held by `holder` (sent to a worker behind
    /// the task it runs); false if it is no longer pending, or cannot be
    /// held.
    pub(crate) fn hold(&self, holder: &Arc<Holder>) -> bool {
        let mut st = self.state.lock();
        matches!(st.phase, Phase::Pending(_)) && st.job.set_holder(Some(Arc::clone(holder)))
    }

    /// PENDING -> RUNNING, and no longer held.
    pub(crate) fn set_running(&self) -> bool {
        let mut st = self.state.lock();
        st.job.set_holder(None);
        st.phase.start()
    }

    /// Back in the pool's queue: no longer held, and pending again if it
    /// had started (its worker died under it).
    pub(crate) fn release(&self) {
        let mut st = self.state.lock();
        st.job.set_holder(None);
        st.phase.release();
    }
}

/// True if any listener is a done-callback.
fn has_callbacks<T>(mut list: &List<T>) -> bool {
    while let Some(node) = list {
        if matches!(node.listener, Listener::Callback(_)) {
            return true;
        }
        list = &node.next;
    }
    false
}
