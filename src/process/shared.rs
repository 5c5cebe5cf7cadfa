//! What a process pool's handle, writers and readers share: the queue of
//! tasks no worker holds yet, the workers, and the rules for a worker's
//! end (break the pool, or replace the worker and send what it had not
//! started elsewhere). How much of the queue a worker takes, and the
//! wake-ups around it, are `dispatch.rs`.
//!
//! Lock order: the pool's `state`, then a worker's `link`, then the
//! timer's. Nothing takes `state` while holding a `link`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sync::{AtomicBool, Condvar, Mutex, MutexGuard};

use super::bell::Bell;
use super::builder::Config;
use super::job::{Job, Place};
use super::link::{Fate, Sent, Stage};
use super::timer::Timer;
use super::worker::Worker;
use crate::executor::Stop;
use crate::launch::backoff::Backoff;
use crate::lifecycle::{self, fail_all, Abandon, Deadline, Pool, Threads};
use crate::stats::Counters;
use crate::{Error, Shutdown};

/// The pause before another launch after workers in a row died before
/// they were ready (while others live): 0.1 s, doubling to 30 s.
const LAUNCH_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));

/// Where a worker runs, for events and `stats()`: its launcher's label, or
/// `localhost`.
pub(crate) fn host_of(worker: &Worker) -> &str {
    worker.label.as_deref().unwrap_or(LOCALHOST)
}

/// The name of the one host entry of a launcher that lists none.
pub(crate) const LOCALHOST: &str = "localhost";

/// A worker's pid: its local one, or the one its handshake gave.
pub(crate) fn pid_of(worker: &Worker) -> Option<u32> {
    worker.pid.or_else(|| worker.link.lock().hello_pid)
}

/// What the pool does about a worker's end, decided under its lock.
enum Verdict {
    /// The pool was already broken, for this reason.
    Broken(String),
    /// It retired or the pool shut down.
    Clean,
    /// The pool stopped it on purpose.
    Stopped,
    /// A replacement takes over (a time limit, a retry, `restart_workers`).
    Replace,
    /// It never became ready while others live: launches wait this long.
    BackOff(Duration),
    /// Its death breaks the pool: the queued jobs and workers to end.
    Break(VecDeque<Job>, Vec<Arc<Worker>>),
}

/// A worker's end, as its reader reports it to the pool.
pub(crate) struct Exit {
    /// What it held: the front may have started, the rest never did.
    pub(crate) held: VecDeque<Sent>,
    /// Why the pool ended it, if it did.
    pub(crate) fate: Option<Fate>,
    /// Its stage before its output ended.
    pub(crate) was: Stage,
    /// It exited with status 0, holding nothing, unprompted.
    pub(crate) clean: bool,
    /// "worker process 7 exited with code 3 (...); its last stderr lines: ..."
    pub(crate) reason: String,
    /// The reason for the tasks that did not run in it, when it died
    /// running one: "... while running another task (submit #3); ...".
    /// Else the same as `reason`.
    pub(crate) others: String,
    /// "exited with code 3", "was killed by signal SIGKILL (9)", "ended".
    pub(crate) status: String,
    /// The link to its host died first: its status is unknown.
    pub(crate) lost: bool,
}

/// What submitters, workers and `shutdown` agree on, under one lock.
pub(crate) struct State {
    /// Tasks no worker holds yet, oldest first.
    pub(crate) queue: VecDeque<Job>,
    /// Shutdown has begun: no new tasks.
    pub(crate) closing: bool,
    pub(crate) broken: Option<String>,
    /// `broken` was set by `shutdown_timeout` killing what still ran: a
    /// later submit hears that the pool is shut down, not broken.
    broken_by_deadline: bool,
    pub(crate) workers: Vec<Arc<Worker>>,
    /// Workers being launched (a slot reserved, the launch not done).
    pub(crate) starting: usize,
    /// Workers in a row that died before they were ready, and the time
    /// before which no other is launched (backoff).
    failed_starts: u32,
    launch_after: Option<Instant>,
    /// The last launch failed (for `stats()` of a launcher without hosts).
    pub(crate) launch_failed: bool,
    /// The last launch error or worker death, for `stats()`.
    pub(crate) last_error: Option<String>,
    /// Submits queued so far: the next one's index, for error messages.
    submits: u64,
    /// Writer and reader threads not yet joined.
    pub(super) threads: Threads,
    /// Workers that host links' drivers serve (`driven.rs`) and that are
    /// not settled yet: what a shutdown waits for instead of their
    /// threads.
    pub(super) driven: usize,
}

/// The state the worker threads share with the pool handle.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    /// Signalled when a worker goes or a launch ends: what a shutdown
    /// with a deadline waits on.
    pub(super) changed: Condvar,
    /// Launches a worker into a reserved slot and starts its threads
    /// (`spawn.rs`; a function here, so that this file, which decides,
    /// does not depend on the threads that carry its decisions out).
    start: fn(&Arc<Shared>),
    /// Jobs outstanding, futures running and ended, workers replaced:
    /// shared with every job's ticket.
    pub(crate) counters: Arc<Counters>,
    seq: AtomicU64,
    /// Held while a `shutdown` joins the threads.
    joining: parking_lot::Mutex<()>,
    pub(crate) timer: Timer,
    /// The bells of the host links whose driver threads serve workers of
    /// this pool: rung whenever writers are woken for work (empty for a pool
    /// whose workers have threads of their own).
    pub(super) bells: Mutex<Vec<Weak<Bell>>>,
    /// A bell was ever added: until then `notify_work` skips their lock.
    pub(super) any_bells: AtomicBool,
}

impl Shared {
    pub(crate) fn new(config: Config, start: fn(&Arc<Shared>)) -> Self {
        Shared {
            start,
            config,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closing: false,
                broken: None,
                broken_by_deadline: false,
                workers: Vec::new(),
                starting: 0,
                failed_starts: 0,
                launch_after: None,
                launch_failed: false,
                last_error: None,
                submits: 0,
                threads: Threads::default(),
                driven: 0,
            }),
            changed: Condvar::new(),
            counters: Arc::default(),
            seq: AtomicU64::new(0),
            joining: parking_lot::Mutex::new(()),
            timer: Timer::default(),
            bells: Mutex::new(Vec::new()),
            any_bells: AtomicBool::new(false),
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a job (or fails it if the pool refuses work) and starts a
    /// worker if the running ones cannot take it; wakes a writer only if
    /// `wake`. A `map` that submits its whole window queues it first and
    /// wakes the writers once ([`wake_writers`](Self::wake_writers)), so
    /// that its thread is not preempted by the first worker it wakes before
    /// it has queued the rest (on a machine with as many cores as workers,
    /// it was, and the tasks reached the workers one at a time).
    pub(crate) fn enqueue(self: &Arc<Self>, mut job: Job, wake: bool) {
        let mut st = self.state.lock();
        // Broken wins over shut down, as in Python and on the thread pool;
        // but a pool that `shutdown_timeout` had to kill is shut down.
        let refusal = match (&st.broken, st.closing) {
            (Some(reason), _) if !st.broken_by_deadline => Some(Error::BrokenPool(reason.clone())),
            (_, true) => Some(Error::Shutdown),
            (Some(reason), false) => Some(Error::BrokenPool(reason.clone())),
            (None, false) => None,
        };
        if let Some(e) = refusal {
            drop(st);
            job.abandon(Some(e));
            return;
        }
        if let Place::Submit(n) = &mut job.place {
            *n = st.submits;
            st.submits += 1;
        }
        st.queue.push_back(job);
        if wake {
            self.notify_work(&st, false, None);
        }
        self.start_if_needed(st);
    }

    /// A worker gave back a task it held: `cancelled`, whose future is
    /// cancelled, or `requeue`, queued again for any worker.
    pub(crate) fn recalled(self: &Arc<Self>, cancelled: Option<Sent>, requeue: Option<Sent>) {
        for sent in cancelled.iter().chain(&requeue) {
            if let (Some(limit), Some(start)) = (sent.job.time_limit, sent.started_at) {
                self.timer.cancel(start + limit, sent.seq);
            }
        }
        if let Some(sent) = cancelled {
            sent.job.abandon(None);
        }
        if let Some(sent) = requeue {
            self.reroute(std::iter::once(sent.job));
        }
    }

    /// Jobs that never started, back to the front of the queue (a worker
    /// died before it started them, gave them back, or a writer never
    /// sent them); their futures are pending again.
    pub(crate) fn reroute(self: &Arc<Self>, jobs: impl Iterator<Item = Job>) {
        let mut st = self.state.lock();
        if let Some(reason) = st.broken.clone() {
            drop(st);
            return fail_all(jobs, &Error::BrokenPool(reason));
        }
        // Tasks sent before go back in the order they were first sent,
        // ahead of the rest; tasks a writer took but never sent go right
        // after them, as they were taken.
        let mut unsent = 0;
        for job in jobs {
            job.release();
            let at = match job.first_seq {
                Some(s) => st
                    .queue
                    .iter()
                    .position(|j| j.first_seq.map_or(true, |q| q > s))
                    .unwrap_or(st.queue.len()),
                None => {
                    unsent += 1;
                    st.queue
                        .iter()
                        .take_while(|j| j.first_seq.is_some())
                        .count()
                        + unsent
                        - 1
                }
            };
            st.queue.insert(at, job);
        }
        self.notify_work(&st, true, None);
        self.start_if_needed(st);
    }

    /// Marks the pool broken, fails every queued job and stops the workers.
    pub(crate) fn break_pool(&self, reason: String) {
        let (queued, workers) = {
            let mut st = self.state.lock();
            if st.broken.is_some() {
                return;
            }
            self.mark_broken(&mut st, &reason)
        };
        self.broke(&reason, queued, workers);
    }

    /// Marks the pool broken (it is not yet) and takes what it must end:
    /// the queued jobs and the workers, for [`broke`](Self::broke).
    fn mark_broken(&self, st: &mut State, reason: &str) -> (VecDeque<Job>, Vec<Arc<Worker>>) {
        st.broken = Some(reason.to_string());
        self.notify_work(st, true, None);
        (std::mem::take(&mut st.queue), st.workers.clone())
    }

    /// The pool just broke: fails what was queued and stops the workers.
    fn broke(&self, reason: &str, queued: VecDeque<Job>, workers: Vec<Arc<Worker>>) {
        tracing::error!(target: "concurrent_futures", %reason, "pool broken");
        fail_all(queued, &Error::BrokenPool(reason.to_string()));
        for w in workers {
            w.stop(
                Fate::Stopped("stopped because the pool broke".into()),
                false,
            );
        }
    }

    /// A worker's output ended: settle what it held and decide between
    /// breaking the pool (Python's rule, the default) and replacing it.
    pub(crate) fn worker_exited(self: &Arc<Self>, worker: &Worker, exit: Exit) {
        self.settle_exit(worker, exit);
        // Cancels that waited for this worker's answer see their futures
        // settled now.
        worker.settled();
    }

    fn settle_exit(self: &Arc<Self>, worker: &Worker, exit: Exit) {
        let Exit {
            mut held,
            fate,
            was,
            clean,
            reason,
            others,
            status,
            lost,
        } = exit;
        // Tasks behind the front never started: those whose futures were
        // being cancelled are cancelled.
        let mut cancelled = Vec::new();
        let mut kept = VecDeque::with_capacity(held.len());
        for (i, sent) in held.into_iter().enumerate() {
            if i > 0 && sent.recall.is_some_and(|r| r.cancel) {
                cancelled.push(sent.job);
            } else {
                kept.push_back(sent);
            }
        }
        held = kept;
        lifecycle::cancel_all(cancelled);
        let ran_past_limit = matches!(
            (&fate, held.front()),
            (Some(Fate::TimeLimit { seq, .. }), Some(front)) if front.seq == *seq
        );
        // Killed at a time limit, even if the task answered just before
        // the kill landed (then the front, if any, is the task after it):
        // not a crash, so never a broken pool.
        let time_limit = matches!(fate, Some(Fate::TimeLimit { .. }));
        // Stopped on purpose (kill_workers, terminate_workers).
        let stopped = matches!(fate, Some(Fate::Stopped(_)));
        let became_ready = matches!(was, Stage::Ready | Stage::Retiring);
        // A ready worker died on its own under a task with a retry left:
        // the task runs again elsewhere, so the pool goes on.
        let retry =
            fate.is_none() && became_ready && held.front().is_some_and(|s| s.job.retries_left > 0);
        let replace = time_limit || retry || (self.config.restart_workers && became_ready);
        // Decided under the same lock that takes the worker out: once it is
        // gone from the pool's workers, a submit sees the pool broken if
        // its death breaks it, never a fresh worker in between.
        let verdict = {
            let mut st = self.state.lock();
            st.workers.retain(|w| !std::ptr::eq(Arc::as_ptr(w), worker));
            if !clean {
                st.last_error = Some(reason.clone());
            }
            self.notify_work(&st, true, None);
            self.changed.notify_all();
            if let Some(b) = st.broken.clone() {
                Verdict::Broken(b)
            } else if clean {
                Verdict::Clean
            } else if stopped {
                Verdict::Stopped
            } else if replace {
                Verdict::Replace
            } else if let Some(delay) = self
                .config
                .restart_workers
                .then(|| Self::back_off(&mut st))
                .flatten()
            {
                Verdict::BackOff(delay)
            } else {
                let (queued, workers) = self.mark_broken(&mut st, &others);
                Verdict::Break(queued, workers)
            }
        };
        let (host, pid) = (host_of(worker), pid_of(worker));
        // What it held and did not answer, as jobs (the front may have run:
        // it is failed, never run again).
        let jobs = |held: VecDeque<Sent>| held.into_iter().map(|s| s.job);
        match verdict {
            Verdict::Broken(b) => {
                tracing::debug!(target: "concurrent_futures", host, pid, %status, "worker exited");
                fail_all(jobs(held), &Error::BrokenPool(b));
            }
            Verdict::Clean => {
                // Retired or shut down: a successor takes what is queued.
                let st = self.state.lock();
                if st.closing {
                    tracing::debug!(target: "concurrent_futures", host, pid, %status, "worker exited");
                } else {
                    tracing::info!(target: "concurrent_futures", host, pid, %status, "worker retired");
                }
                self.start_if_needed(st);
            }
            Verdict::Stopped => {
                tracing::debug!(target: "concurrent_futures", host, pid, %status, "worker exited");
                fail_all(jobs(held), &Error::BrokenPool(reason));
            }
            Verdict::Replace => {
                let c = self.counters.ends();
                c.restarts.fetch_add(1, Ordering::Relaxed);
                if let Some(Fate::TimeLimit { limit, .. }) = fate {
                    c.time_limit_kills.fetch_add(1, Ordering::Relaxed);
                    let limit_ms = limit.as_millis() as u64;
                    tracing::warn!(target: "concurrent_futures", host, pid, limit_ms, "worker killed at a time limit; replacing it");
                } else {
                    tracing::warn!(target: "concurrent_futures", host, pid, %status, %reason, "worker replaced");
                }
                // Only the task that ran fails (or runs again); the others
                // never started. The pool goes on: a death is `WorkerDied`.
                let again = match (held.pop_front(), fate) {
                    (Some(front), Some(Fate::TimeLimit { limit, .. })) if ran_past_limit => {
                        let error = front.job.limit_error(limit);
                        front.job.finish(Err(error));
                        None
                    }
                    (Some(front), None) => front.job.died(reason, lost),
                    (Some(front), _) => {
                        let error = front.job.died_error(reason, true, lost);
                        front.job.finish(Err(error));
                        None
                    }
                    (None, _) => None,
                };
                self.reroute(again.into_iter().chain(jobs(held)));
            }
            Verdict::BackOff(delay) => {
                // Never ready, but other workers live (another host may be
                // down while this one works): try again later.
                tracing::warn!(target: "concurrent_futures", host, pid, %status, %reason, "worker died");
                let delay_ms = delay.as_millis() as u64;
                tracing::warn!(target: "concurrent_futures", %reason, delay_ms, "a worker failed before it was ready; the pool goes on with its other workers and launches again after a backoff");
                fail_all(jobs(held), &Error::BrokenPool(reason));
            }
            Verdict::Break(queued, workers) => {
                // A worker that was never ready, alone, breaks the pool
                // under either policy: its replacement would fail the same
                // way, and restarting would start processes without end. A
                // worker that died in a task fails that task with its
                // reason; everything else hears that it died under another
                // task, and which.
                tracing::warn!(target: "concurrent_futures", host, pid, %status, %reason, "worker died");
                self.broke(&others, queued, workers);
                if let Some(front) = held.pop_front() {
                    let error = front.job.died_error(reason, false, lost);
                    front.job.finish(Err(error));
                }
                fail_all(jobs(held), &Error::BrokenPool(others));
            }
        }
    }

    /// A worker died before it was ready. If other workers live, the pool
    /// goes on without it and launches no other before a backoff (0.1 s,
    /// doubling to 30 s; a worker that becomes ready resets it): the
    /// backoff. `None` if no worker is left.
    fn back_off(st: &mut State) -> Option<Duration> {
        if st.workers.is_empty() && st.starting == 0 {
            return None;
        }
        st.failed_starts = st.failed_starts.saturating_add(1);
        let delay = LAUNCH_BACKOFF.after(st.failed_starts);
        st.launch_after = Some(Instant::now() + delay);
        Some(delay)
    }

    /// A worker a link's driver served is settled, or was never served.
    pub(crate) fn driven_done(&self) {
        let mut st = self.state.lock();
        st.driven = st.driven.saturating_sub(1);
        self.changed.notify_all();
    }

    /// A worker became ready: launches need no more backoff.
    pub(crate) fn worker_ready(&self) {
        let mut st = self.state.lock();
        st.failed_starts = 0;
        st.launch_after = None;
    }

    /// Starts a worker if jobs are queued, more are outstanding than the
    /// workers that take tasks can hold, and `max_workers` allows. The
    /// slot is reserved under the lock; the launch happens without it.
    fn start_if_needed(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        let live = st.workers.iter().filter(|w| !w.leaving()).count() + st.starting;
        // The backoff spares a pool whose other workers take the queue;
        // with none left (they retired or died meanwhile) nothing would
        // ever launch again, so launch now: if this one fails too, it is
        // alone and breaks the pool.
        let backing_off = live > 0 && st.launch_after.is_some_and(|t| Instant::now() < t);
        let wanted = !st.queue.is_empty()
            && st.broken.is_none()
            && !backing_off
            && live < self.config.max_workers
            && self.counters.outstanding.load(Ordering::Acquire) > live;
        if !wanted {
            return;
        }
        st.starting += 1;
        drop(st);
        (self.start)(self);
    }

    /// Stops accepting tasks; cancels the queued ones if asked; with
    /// `wait`, waits for the rest and every worker to exit, killing what
    /// still runs at `deadline`. Returns false if the deadline passed first.
    pub(crate) fn shutdown(&self, options: Shutdown, deadline: Option<Deadline>) -> bool {
        lifecycle::shutdown(self, options, deadline)
    }
}

impl Pool for Shared {
    type Job = Job;

    fn close(&self, cancel: bool) -> Vec<Job> {
        let mut st = self.state.lock();
        st.closing = true;
        self.notify_work(&st, true, None);
        if !cancel {
            return Vec::new();
        }
        let queued = std::mem::take(&mut st.queue).into();
        let workers = st.workers.clone();
        drop(st);
        // What workers hold behind their running tasks has not started
        // either: each worker gives it back to be cancelled, or says it
        // started it meanwhile.
        let asked: Vec<_> = workers.iter().filter(|w| w.ask_to_cancel_held()).collect();
        for w in asked {
            w.await_cancels();
        }
        queued
    }

    fn on_own_thread(&self) -> bool {
        // A link's driver may serve this pool's workers (and another's).
        crate::agent::on_driver_thread() || self.state.lock().threads.include_current()
    }

    fn joining(&self) -> &parking_lot::Mutex<()> {
        &self.joining
    }

    /// Waits until every worker is gone or the deadline; then marks the
    /// pool broken, takes what is queued (for the caller to cancel) and
    /// kills the workers.
    fn wait_or_kill(&self, deadline: Deadline) -> (bool, Vec<Job>) {
        let mut st = self.state.lock();
        let done = |st: &State| st.workers.is_empty() && st.starting == 0 && st.queue.is_empty();
        while !done(&st) {
            if self.changed.wait_until(&mut st, deadline.at).timed_out() {
                break;
            }
        }
        if done(&st) {
            return (true, Vec::new());
        }
        let reason = format!("killed by shutdown_timeout({:?})", deadline.limit);
        if st.broken.is_none() {
            st.broken = Some(reason.clone());
            st.broken_by_deadline = true;
        }
        let queued = std::mem::take(&mut st.queue);
        let workers = st.workers.clone();
        drop(st);
        for w in workers {
            w.stop(Fate::Stopped(reason.clone()), true);
        }
        (false, queued.into())
    }

    fn next_to_join(&self, deadline: Option<Deadline>) -> Vec<JoinHandle<()>> {
        let mut st = self.state.lock();
        // A submit accepted before `closing` may still be launching its
        // worker, without the lock and without threads yet: wait for them
        // (a deadline has already killed what lives). Workers that a host
        // link's driver serves have no threads to join: wait until each is
        // settled (also after a deadline's kill, as joining its reader
        // would).
        let waiting = |st: &State| {
            st.driven > 0 || (deadline.is_none() && (st.starting > 0 || !st.workers.is_empty()))
        };
        while st.threads.is_empty() && waiting(&st) {
            self.changed.wait(&mut st);
        }
        st.threads.take()
    }

    fn joined(&self) {
        self.timer.close();
    }
}

impl Stop for Shared {
    fn stop(self: &Arc<Self>, options: Shutdown) {
        self.shutdown(options, None);
    }
}
