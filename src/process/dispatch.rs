//! Handing queued jobs to workers: how much of the queue a worker's writer
//! (or its link's driver) takes, the share rule that splits a burst
//! evenly, and the wake-ups that keep no writer waiting while it could
//! take a job (`loom_model.rs` checks the one after an answer). `shared.rs`
//! holds the queue and the rules for a worker's end.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use super::bell::Bell;
use super::job::Job;
use super::shared::{Shared, State};
use super::worker::Worker;
use crate::sync::MutexGuard;

/// A writer takes at most this many bytes of arguments at once.
const BATCH_BYTES: usize = 1 << 20;

/// What [`Shared::poll_jobs`] found.
pub(crate) enum Take {
    /// As [`Shared::take_jobs`] returns.
    Jobs(Option<Vec<Job>>),
    /// Nothing to take yet: poll again when rung, or at this time.
    Wait(Option<Instant>),
}

impl Shared {
    /// Rings `bell` too whenever writers are woken for work.
    pub(crate) fn add_bell(&self, bell: &Arc<Bell>) {
        let mut bells = self.bells.lock();
        self.any_bells.store(true, Ordering::Release);
        bells.retain(|b| b.strong_count() > 0);
        if !bells
            .iter()
            .any(|b| std::ptr::eq(b.as_ptr(), Arc::as_ptr(bell)))
        {
            bells.push(Arc::downgrade(bell));
        }
    }

    /// Wakes the writers waiting for work (one, unless `all`: a free one if
    /// any waits), and every link driver but the one of `except`'s bell: a
    /// driver that passes on a wake-up must not wake itself, or it would
    /// never rest. Call under the pool's lock (`st`).
    pub(super) fn notify_work(&self, st: &State, all: bool, except: Option<&Worker>) {
        let others = || {
            st.workers.iter().filter(|w| {
                !except.is_some_and(|e| std::ptr::eq(Arc::as_ptr(w), e))
                    && w.bell.is_none()
                    && w.waiting.load(Ordering::SeqCst)
            })
        };
        if all {
            for w in others() {
                w.work_bell.ring();
            }
        } else if let Some(w) = others().find(|w| w.load().1).or_else(|| others().next()) {
            w.work_bell.ring();
        }
        if !self.any_bells.load(Ordering::Acquire) {
            return;
        }
        let bells = self.bells.lock();
        if bells.is_empty() {
            return;
        }
        let own = except.and_then(|w| w.bell.as_ref()).map(Arc::as_ptr);
        for bell in bells.iter().filter_map(Weak::upgrade) {
            if Some(Arc::as_ptr(&bell)) != own {
                bell.ring();
            }
        }
    }

    /// Wakes the writers (or link drivers) of the workers other than
    /// `except` that are free: they take jobs left in the queue that a busy
    /// worker may not. A busy one woken would only pass the wake-up on. If
    /// none is free (or being launched), every writer waiting for work: one
    /// with room may take its even share.
    fn wake_free(&self, st: &State, except: &Worker) {
        let mut free = false;
        for w in &st.workers {
            if std::ptr::eq(Arc::as_ptr(w), except) || w.leaving() || !w.load().1 {
                continue;
            }
            free = true;
            w.ring();
        }
        // A worker being launched takes its part once it is up; until
        // then a busy one takes none, and waking them would only have them
        // wake each other.
        if !free && st.starting == 0 {
            self.notify_work(st, true, Some(except));
        }
    }

    /// Wakes the writers for `n` jobs queued with `enqueue(.., false)`.
    pub(crate) fn wake_writers(&self, n: usize) {
        let st = self.state.lock();
        self.notify_work(&st, n != 1, None);
    }

    /// Queued jobs for `worker`, as many as its window has room for (at
    /// most `left`), waiting until there are any. While other workers wait
    /// idle, a worker takes only its share: a busy one leaves each idle one
    /// at least as many, so a job never queues behind a running task while
    /// a worker is idle, and a burst is split evenly.
    /// `Some` of nothing if the room closed meanwhile; `None` once the
    /// worker is gone, or the pool is shutting down and nothing is queued.
    pub(crate) fn take_jobs(&self, worker: &Worker, left: Option<usize>) -> Option<Vec<Job>> {
        let mut st = self.state.lock();
        let taken = loop {
            match self.try_take(&mut st, worker, left) {
                Take::Jobs(taken) => break taken,
                // A ring between the look and the wait is not lost: the
                // bell keeps it.
                Take::Wait(until) => MutexGuard::unlocked(&mut st, || worker.work_bell.wait(until)),
            }
        };
        self.took(&st, worker);
        taken
    }

    /// [`take_jobs`](Self::take_jobs) without the wait, for a worker that
    /// a host link's driver serves: the driver is rung when it may try
    /// again.
    pub(crate) fn poll_jobs(&self, worker: &Worker, left: Option<usize>) -> Take {
        let mut st = self.state.lock();
        let take = self.try_take(&mut st, worker, left);
        if let Take::Jobs(_) = &take {
            self.took(&st, worker);
        }
        take
    }

    /// One look at the queue for [`take_jobs`](Self::take_jobs).
    fn try_take(&self, st: &mut State, worker: &Worker, left: Option<usize>) -> Take {
        if worker.leaving() {
            return Take::Jobs(None);
        }
        // Set before this worker's tasks are counted: a reader that then
        // takes an answer off them sees the flag and wakes us (see
        // `answered`), so a share that grows is never missed.
        worker.waiting.store(true, Ordering::SeqCst);
        let (room, held, idle, stranded) = {
            let link = worker.link.lock();
            let now = Instant::now();
            let stranded = link.stranded_at();
            if !link.to_send.is_empty() || stranded.is_some_and(|t| t <= now) {
                // Recalls to send: the writer's own loop does it.
                return Take::Jobs(Some(Vec::new()));
            }
            (link.room(now), link.held.len(), link.idle(), stranded)
        };
        let room = left.map_or(room, |l| room.min(l));
        if room == 0 {
            return Take::Jobs(Some(Vec::new()));
        }
        let queued = st.queue.len();
        let share = self.share(st, worker, held, idle);
        let take = room.min(share);
        if take > 0 {
            let mut jobs = Vec::with_capacity(take);
            let mut bytes = 0;
            while jobs.len() < take && bytes < BATCH_BYTES {
                let Some(job) = st.queue.pop_front() else {
                    break;
                };
                bytes += job.payload.bytes().len();
                jobs.push(job);
            }
            return Take::Jobs(Some(jobs));
        }
        if queued > 0 {
            // Left for other workers; make sure the free ones are awake
            // (only those: a busy one would only pass the wake-up on, and
            // two would pass it back and forth), or, with none free, the
            // writers that wait (one of them has room for its even share).
            self.wake_free(st, worker);
        } else if st.closing {
            return Take::Jobs(None);
        } else if idle {
            // Out of work: a worker holding tasks behind one that runs
            // long may now give them to us.
            for w in &st.workers {
                if !std::ptr::eq(Arc::as_ptr(w), worker) {
                    w.wake_if_stranded();
                }
            }
        }
        // What this worker holds behind its running task is recalled once
        // that task has run long: wake up then.
        Take::Wait(stranded)
    }

    /// `worker` took what it could: it waits no more.
    fn took(&self, st: &State, worker: &Worker) {
        worker.waiting.store(false, Ordering::SeqCst);
        if !st.queue.is_empty() {
            // Jobs are left: for idle workers (which nobody else wakes if
            // the wake-up that brought us here was theirs), or beyond what
            // we could take. Pass the wake-up on to writers that can.
            self.wake_free(st, worker);
        }
    }

    /// How many queued jobs `worker` (holding `held`) may take. Each
    /// worker that takes tasks, starting ones included, gets an even share
    /// of everything outstanding (queued and held), less what it holds. A
    /// worker that holds tasks takes nothing while another worker is free
    /// (ready and holding nothing, or starting): a job never queues behind
    /// a running task, whose length nobody knows yet, while a worker could
    /// start it; a free worker takes its part of the queue. So a burst is
    /// split evenly however deep a window a worker learned on earlier
    /// tasks, and a starting worker gets its part.
    fn share(&self, st: &State, worker: &Worker, held: usize, idle: bool) -> usize {
        let queued = st.queue.len();
        let (mut places, mut outstanding) = (1 + st.starting, queued + held);
        let mut others_free = st.starting;
        for w in &st.workers {
            if std::ptr::eq(Arc::as_ptr(w), worker) || w.leaving() {
                continue;
            }
            let (held, free) = w.load();
            places += 1;
            outstanding += held;
            others_free += usize::from(free);
        }
        let even = outstanding.div_ceil(places).saturating_sub(held);
        let for_free = if idle {
            queued.div_ceil(others_free + 1)
        } else if others_free > 0 {
            0
        } else {
            queued
        };
        even.min(for_free)
    }

    /// True if a worker other than `worker` could start a task now: it is
    /// ready and holds nothing, or it is starting.
    pub(crate) fn another_is_free(&self, worker: &Worker) -> bool {
        let st = self.state.lock();
        st.starting > 0
            || st
                .workers
                .iter()
                .any(|w| !std::ptr::eq(Arc::as_ptr(w), worker) && !w.leaving() && w.load().1)
    }

    /// A reader took an answer off `worker`'s tasks: if its writer waits
    /// for work, its share may have grown; wake it.
    pub(crate) fn answered(&self, worker: &Worker) {
        // Its own writer only: another worker's share does not grow when
        // this one holds less. The flag is set before the writer counts
        // what its worker holds (`try_take`), so a writer that counted
        // before this answer sees the flag here.
        if worker.waiting.load(Ordering::SeqCst) {
            worker.ring();
        }
    }
}
