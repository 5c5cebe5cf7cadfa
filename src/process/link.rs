//! What a worker's writer (`writer.rs`) and reader (`reader.rs`) threads
//! share under one lock: its stage, the tasks it holds, its pace and the
//! recalls to send. The worker itself (its process, how the pool stops
//! it) is `worker.rs`.
//!
//! # Stages
//!
//! ```text
//!  Starting ──HELLO──▶ Initializing ──INIT_DONE ok──▶ Ready ──last task sent──▶ Retiring
//!     │                    │          (no initializer: │       or shutdown          │
//!     │                    │           HELLO → Ready)  │                            │
//!     └────────────────────┴───────── output ends ─────┴────────────────────────────┴──▶ Gone
//! ```
//!
//! Only a `Ready` worker is sent tasks. `Retiring` takes no more and exits
//! when its stdin closes. `Gone` is final: its reader saw the end of its
//! output, and hands what it held to the pool in one [`Exit`].
//!
//! # What a worker holds
//!
//! The worker runs its frames in order and writes each answer before it
//! takes the next frame, so `held` is in the worker's order and only its
//! front can have started. The rest never ran: when the worker dies they
//! can go to another worker. Their futures are pending (their job slot
//! names the worker that holds them), not running: only the front's
//! future runs.
//!
//! # Recalls
//!
//! A task held behind the running one can be taken back with a `Recall`;
//! the worker answers at once, even mid-task, whether it gave the task back
//! (it never ran) or had started it (`src/process/inbox.rs`). The pool
//! recalls:
//!
//! - what waits behind a task that has run longer than a short task would
//!   (it was sent ahead on the guess that the running one was short): back
//!   to the pool's queue, where any worker can take it and `cancel()`
//!   needs no worker;
//! - a task whose future is cancelled (`Future::cancel`, or
//!   `shutdown_with(cancel_futures)`): the worker's answer decides whether
//!   the future is cancelled or running.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::job::Job;
use super::pace::Pace;
use crate::Error;

/// Where a worker is in its life; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Started; its handshake has not arrived.
    Starting,
    /// Handshake done; its initializer runs.
    Initializing,
    /// Takes tasks.
    Ready,
    /// Takes no more tasks; finishes what it holds and exits.
    Retiring,
    /// Its output ended.
    Gone,
}

/// Why the pool ended a worker, when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Stopped on purpose (`kill_workers`, `terminate_workers`, a broken
    /// pool, `shutdown_timeout`): what it held fails with this reason.
    Stopped(String),
    /// Killed because task `seq` ran past its `limit`.
    TimeLimit { seq: u64, limit: Duration },
    /// It broke the protocol or never answered: reported like a death.
    Failed(String),
}

/// A task sent to the worker.
pub(crate) struct Sent {
    pub(crate) seq: u64,
    pub(crate) job: Job,
    pub(crate) sent_at: Instant,
    /// When it started, as far as the pool can tell: when it was sent to
    /// an idle worker, or when the answer before it arrived.
    pub(crate) started_at: Option<Instant>,
    /// Asked back, and whether its future is to be cancelled.
    pub(crate) recall: Option<Recall>,
}

/// A recall asked for and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recall {
    /// Cancel the future if the task comes back; else queue it again.
    pub(crate) cancel: bool,
}

/// What a worker's answer to a recall leaves for the pool to do.
pub(crate) struct Recalled {
    /// The task it gave back to be cancelled.
    pub(crate) cancelled: Option<Sent>,
    /// The task it gave back to run elsewhere.
    pub(crate) requeue: Option<Sent>,
    /// The front task, if the answer settled it as the one that runs: its
    /// number, time limit and start, to arm the limit.
    pub(crate) now_running: Option<(u64, Duration, Instant)>,
}

/// What the writer and reader of one worker share.
pub(crate) struct Link {
    pub(crate) stage: Stage,
    pub(crate) fate: Option<Fate>,
    /// Tasks sent and not answered, in the worker's order.
    pub(crate) held: VecDeque<Sent>,
    pace: Pace,
    /// Tasks sent in all (for `max_tasks_per_child`).
    pub(crate) sent: usize,
    /// The pid the worker gave in its handshake.
    pub(crate) hello_pid: Option<u32>,
    /// Recalls the writer is to send.
    pub(crate) to_send: Vec<u64>,
    /// The pool has settled what it held when it ended.
    pub(crate) settled: bool,
    /// Tasks given back to be cancelled whose futures are not cancelled
    /// yet (that happens outside this lock).
    pub(crate) cancelling: usize,
    /// Recalls to queue tasks again, sent and not answered. The worker is
    /// sent nothing more meanwhile: what it gives back must go out again
    /// before the tasks queued after it.
    rebalancing: usize,
}

impl Link {
    /// A worker just started: nothing sent yet.
    pub(crate) fn new() -> Self {
        Link {
            stage: Stage::Starting,
            fate: None,
            held: VecDeque::new(),
            pace: Pace::default(),
            sent: 0,
            hello_pid: None,
            to_send: Vec::new(),
            settled: false,
            cancelling: 0,
            rebalancing: 0,
        }
    }

    /// How many more tasks may be sent now. None behind a task that has
    /// run longer than a short one would: it is not short after all.
    pub(crate) fn room(&self, now: Instant) -> usize {
        if self.stage != Stage::Ready || self.rebalancing > 0 {
            return 0;
        }
        let front_is_long = self
            .held
            .front()
            .and_then(|s| s.started_at)
            .is_some_and(|t| now.duration_since(t).as_nanos() as f64 > self.pace.long_ns());
        if front_is_long {
            return 0;
        }
        self.pace.window().saturating_sub(self.held.len())
    }

    /// True if the worker holds no task.
    pub(crate) fn idle(&self) -> bool {
        self.held.is_empty()
    }

    /// Records a task as sent; returns true if the worker starts it now
    /// (it held nothing).
    pub(crate) fn push(&mut self, seq: u64, job: Job, now: Instant) -> bool {
        let idle = self.held.is_empty();
        self.pace.sent(idle, now);
        self.held.push_back(Sent {
            seq,
            job,
            sent_at: now,
            started_at: idle.then_some(now),
            recall: None,
        });
        self.sent += 1;
        idle
    }

    /// Takes the answered front task `seq` and learns from its run time.
    /// The next task, if any, starts now. `None` if `seq` is not the front
    /// (the worker broke the order, or never got such a task).
    pub(crate) fn pop(&mut self, seq: u64, run_ns: u64, now: Instant) -> Option<Sent> {
        if self.held.front().map(|s| s.seq) != Some(seq) {
            return None;
        }
        let done = self.held.pop_front()?;
        if done.recall.is_some_and(|r| !r.cancel) {
            // Answered before its recall was: the answer will find nothing.
            self.rebalancing = self.rebalancing.saturating_sub(1);
        }
        let sent_idle = (done.started_at == Some(done.sent_at)).then_some(done.sent_at);
        self.pace.answered(run_ns, sent_idle, now);
        self.front_started(now);
        Some(done)
    }

    /// The front task starts (the answer before it arrived, at `now`):
    /// its future runs, unless a recall of it is unanswered (then the
    /// worker's answer decides).
    fn front_started(&mut self, now: Instant) {
        if let Some(next) = self.held.front_mut() {
            next.started_at.get_or_insert(now);
            if next.recall.is_none() {
                next.job.start();
            }
        }
    }

    /// The front task's number, time limit and start, if it has a limit.
    pub(crate) fn front_limit(&self) -> Option<(u64, Duration, Instant)> {
        let front = self.held.front()?;
        Some((front.seq, front.job.time_limit?, front.started_at?))
    }

    /// When the front task will have run long enough for what waits
    /// behind it to be recalled; `None` if nothing waits that is not
    /// recalled already.
    pub(crate) fn stranded_at(&self) -> Option<Instant> {
        let front = self.held.front()?;
        let waiting = self.held.iter().skip(1).any(|s| s.recall.is_none());
        if !waiting {
            return None;
        }
        let long = Duration::from_nanos(self.pace.long_ns() as u64);
        front.started_at.map(|t| t + long)
    }

    /// Recalls what waits behind a front task that has run long (back to
    /// the pool's queue); true if it asked for any.
    pub(crate) fn recall_stranded(&mut self, now: Instant) -> bool {
        if !self.stranded_at().is_some_and(|t| t <= now) {
            return false;
        }
        for s in self.held.iter_mut().skip(1) {
            if s.recall.is_none() {
                s.recall = Some(Recall { cancel: false });
                self.to_send.push(s.seq);
                self.rebalancing += 1;
            }
        }
        true
    }

    /// Asks for the task of future `key` back to cancel it; false if the
    /// worker does not hold it behind another (it runs, or is gone).
    pub(crate) fn recall_to_cancel(&mut self, key: usize) -> bool {
        match self.held.iter().position(|s| s.job.completion.key() == key) {
            Some(at) => self.recall_to_cancel_at(at),
            None => false,
        }
    }

    /// [`recall_to_cancel`](Self::recall_to_cancel) of the task at `at`
    /// in `held`.
    pub(crate) fn recall_to_cancel_at(&mut self, at: usize) -> bool {
        let Some(sent) = self.held.get_mut(at) else {
            return false;
        };
        match &mut sent.recall {
            Some(r) => {
                if !r.cancel {
                    r.cancel = true;
                    self.rebalancing = self.rebalancing.saturating_sub(1);
                }
            }
            None if at == 0 && sent.started_at.is_some() => return false,
            None => {
                sent.recall = Some(Recall { cancel: true });
                self.to_send.push(sent.seq);
            }
        }
        true
    }

    /// A task given back to run elsewhere is in the pool's queue again.
    pub(crate) fn recall_done(&mut self) {
        self.rebalancing = self.rebalancing.saturating_sub(1);
    }

    /// The worker answered the recall of `seq`: it gave the task back, or
    /// had started it.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if it gives back a task it does not hold, or
    /// answers a recall never sent.
    pub(crate) fn recalled(
        &mut self,
        seq: u64,
        given_back: bool,
        now: Instant,
    ) -> Result<Recalled, Error> {
        let none = || Recalled {
            cancelled: None,
            requeue: None,
            now_running: None,
        };
        let Some(at) = self.held.iter().position(|s| s.seq == seq) else {
            if given_back {
                return Err(Error::Protocol(format!(
                    "task {seq} given back, which the worker does not hold"
                )));
            }
            return Ok(none()); // it started and was answered meanwhile
        };
        if self.held[at].recall.is_none() || self.to_send.contains(&seq) {
            return Err(Error::Protocol(format!(
                "an answer to a recall of task {seq}, never sent"
            )));
        }
        let mut out = none();
        // A task given back to queue again counts as open until it is in
        // the queue (`recall_done`, called by the reader after).
        if !given_back && self.held[at].recall.is_some_and(|r| !r.cancel) {
            self.rebalancing = self.rebalancing.saturating_sub(1);
        }
        if !given_back {
            self.held[at].recall = None;
            if at == 0 {
                // Its time limit was not enforced while this was open.
                self.front_started(now);
                out.now_running = self.front_limit();
            }
        } else if let Some(back) = self.held.remove(at) {
            if at == 0 {
                // The worker went on to the next task when the answer
                // before the one given back arrived.
                self.front_started(back.started_at.unwrap_or(now));
                out.now_running = self.front_limit();
            }
            if back.recall.is_some_and(|r| r.cancel) {
                self.cancelling += 1;
                out.cancelled = Some(back);
            } else {
                out.requeue = Some(back);
            }
        }
        Ok(out)
    }
}
