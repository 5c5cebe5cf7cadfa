//! One worker as the pool sees it: its stage, the tasks it holds, its
//! pace, and how the pool stops it. Its writer (`writer.rs`) and reader
//! (`reader.rs`) threads share this under one lock.
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
//! can go to another worker. Their futures are pending (`Held`), not
//! running: only the front's future runs.
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

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::job::Job;
use super::launcher::StderrTail;
use crate::future::Holder;
use crate::launch::WorkerProcess;
use crate::Error;

/// The largest window: tasks sent and not answered.
pub(crate) const MAX_WINDOW: usize = 512;
/// A task this many round trips long or longer (and at least
/// [`SHORT_FLOOR`]) is not pipelined: it is sent only to a worker with
/// nothing else to do.
const PIPELINE_RATIO: f64 = 8.0;
/// Tasks shorter than this are always pipelined: on a machine with a round
/// trip of tens of microseconds, waiting one trip per task of a few hundred
/// microseconds would idle the worker for a sixth of its time, while the
/// tasks queued behind one of these (about [`WINDOW_TARGET`] of them) wait
/// for it at most this long.
const SHORT_FLOOR: Duration = Duration::from_millis(1);
/// The least work a window holds beyond the running task. The pool's
/// threads answer a worker within a round trip only while a core is free
/// for them; when the workers hold every core, the reader that takes an
/// answer and the writer that sends the next task wait for the scheduler
/// to give them one, which can take a millisecond or more (traced here: up
/// to 1.7 ms on 2 vCPUs). So a worker keeps this much queued, and tiny
/// tasks travel in batches of about this much.
const WINDOW_TARGET: Duration = Duration::from_millis(1);
/// The smallest round trip assumed (a first estimate can be too low).
const MIN_RTT: Duration = Duration::from_micros(20);
/// A worker idle this long forgets how long its tasks take.
const IDLE_SPELL: Duration = Duration::from_millis(20);

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
    /// The task it gave back (cancel it or queue it again).
    pub(crate) back: Option<Sent>,
    /// The front task, if the answer settled it as the one that runs: its
    /// number, time limit and start, to arm the limit.
    pub(crate) now_running: Option<(u64, Duration, Instant)>,
}

thread_local! {
    /// True on a pool's writer, reader and timer threads: a cancel there
    /// cannot wait for a worker's answer, which such a thread delivers.
    static IO_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as one of a pool's I/O threads.
pub(crate) fn mark_io_thread() {
    IO_THREAD.with(|t| t.set(true));
}

/// How fast the worker answers: sizes its window.
#[derive(Debug)]
struct Pace {
    /// Smoothed run time of its tasks, 0 until one is measured.
    task_ns: f64,
    /// The shortest round trip (answer time less run time) of the tasks
    /// sent to it while idle since its last idle spell. The shortest, not
    /// an average: one delayed answer (a big frame through `srun`, which
    /// can take 40 ms) must not make every later task look short.
    rtt_ns: f64,
    last_activity: Option<Instant>,
    /// Slow start: the window at most doubles per answer, so a quick
    /// first task does not let a burst of others queue behind a long one.
    cap: usize,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            task_ns: 0.0,
            rtt_ns: 0.0,
            last_activity: None,
            cap: 1,
        }
    }
}

impl Pace {
    fn smooth(old: f64, sample: f64) -> f64 {
        if old == 0.0 {
            sample
        } else {
            0.7 * old + 0.3 * sample
        }
    }

    /// The run time from which a task counts as long: not pipelined, and
    /// nothing is pipelined behind it.
    fn long_ns(&self) -> f64 {
        (PIPELINE_RATIO * self.rtt_ns.max(MIN_RTT.as_nanos() as f64))
            .max(SHORT_FLOOR.as_nanos() as f64)
    }

    /// One task while it is long; else the running one plus enough to
    /// keep the worker busy while the pool answers: a round trip's worth,
    /// and at least [`WINDOW_TARGET`]'s. No more than that: every task in
    /// a window is bound to this worker, and at the end of a burst an idle
    /// worker could have run it.
    fn window(&self) -> usize {
        if self.task_ns == 0.0 || self.task_ns >= self.long_ns() {
            return 1;
        }
        let task = self.task_ns.max(1.0);
        let ahead = self.rtt_ns.max(WINDOW_TARGET.as_nanos() as f64);
        (((ahead / task).ceil() + 1.0) as usize)
            .clamp(2, MAX_WINDOW)
            .min(self.cap)
    }
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
    cancelling: usize,
}

impl Link {
    /// How many more tasks may be sent now. None behind a task that has
    /// run longer than a short one would: it is not short after all.
    pub(crate) fn room(&self, now: Instant) -> usize {
        if self.stage != Stage::Ready {
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
        if idle
            && self
                .pace
                .last_activity
                .is_some_and(|t| now.duration_since(t) > IDLE_SPELL)
        {
            // After an idle spell the next tasks may be of another kind,
            // and the way to the worker may have changed.
            self.pace.task_ns = 0.0;
            self.pace.rtt_ns = 0.0;
            self.pace.cap = 1;
        }
        self.pace.last_activity = Some(now);
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
        let run = run_ns as f64;
        self.pace.task_ns = Pace::smooth(self.pace.task_ns, run);
        self.pace.cap = (self.pace.cap * 2).min(MAX_WINDOW);
        if done.started_at == Some(done.sent_at) {
            let rtt = (now.duration_since(done.sent_at).as_nanos() as f64 - run).max(1.0);
            self.pace.rtt_ns = if self.pace.rtt_ns == 0.0 {
                rtt
            } else {
                self.pace.rtt_ns.min(rtt)
            };
        }
        self.pace.last_activity = Some(now);
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
                next.job.completion.set_running();
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
            }
        }
        true
    }

    /// Asks for the task of future `key` back to cancel it; false if the
    /// worker does not hold it behind another (it runs, or is gone).
    fn recall_to_cancel(&mut self, key: usize) -> bool {
        let Some(at) = self.held.iter().position(|s| s.job.completion.key() == key) else {
            return false;
        };
        let sent = &mut self.held[at];
        match &mut sent.recall {
            Some(r) => r.cancel = true,
            None if at == 0 && sent.started_at.is_some() => return false,
            None => {
                sent.recall = Some(Recall { cancel: true });
                self.to_send.push(sent.seq);
            }
        }
        true
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
        let none = Recalled {
            back: None,
            now_running: None,
        };
        let Some(at) = self.held.iter().position(|s| s.seq == seq) else {
            if given_back {
                return Err(Error::Protocol(format!(
                    "task {seq} given back, which the worker does not hold"
                )));
            }
            return Ok(none); // it started and was answered meanwhile
        };
        if self.held[at].recall.is_none() || self.to_send.contains(&seq) {
            return Err(Error::Protocol(format!(
                "an answer to a recall of task {seq}, never sent"
            )));
        }
        if !given_back {
            self.held[at].recall = None;
            if at > 0 {
                return Ok(none);
            }
            // Its time limit was not enforced while this was open.
            self.front_started(now);
            return Ok(Recalled {
                back: None,
                now_running: self.front_limit(),
            });
        }
        let back = self.held.remove(at);
        if back
            .as_ref()
            .is_some_and(|s| s.recall.is_some_and(|r| r.cancel))
        {
            self.cancelling += 1;
        }
        let mut now_running = None;
        if at == 0 {
            // The worker went on to the next task when the answer before
            // the one given back arrived.
            let since = back.as_ref().and_then(|s| s.started_at).unwrap_or(now);
            self.front_started(since);
            now_running = self.front_limit();
        }
        Ok(Recalled { back, now_running })
    }
}

/// One worker process, through its launcher.
pub(crate) struct Worker {
    /// Its local pid, if it runs on this machine.
    pub(crate) pid: Option<u32>,
    /// Where it runs (`None`: here), for error messages.
    pub(crate) label: Option<String>,
    pub(crate) link: Mutex<Link>,
    /// Signalled when the stage changes or room opens.
    pub(crate) cond: Condvar,
    pub(crate) process: Mutex<Option<Box<dyn WorkerProcess>>>,
    pub(crate) tail: Arc<StderrTail>,
    /// Stage is `Retiring` or `Gone`: readable without the lock, for the
    /// pool's count of workers that take tasks.
    leaving: AtomicBool,
    /// Its writer waits in `Shared::take_jobs` for work (written under the
    /// pool's lock).
    pub(crate) waiting: AtomicBool,
    /// Copies the worker's stderr; joined once the worker is gone.
    stderr_thread: Mutex<Option<JoinHandle<()>>>,
    /// What the futures of the tasks it holds ask to be cancelled.
    pub(crate) holder: Arc<Holder>,
    /// Wakes its writer when it waits for work in the pool's queue.
    wake_writer: Arc<dyn Fn() + Send + Sync>,
}

impl Worker {
    /// A worker; `wake_writer` wakes its writer when it waits for work in
    /// the pool's queue.
    pub(crate) fn new(
        process: Box<dyn WorkerProcess>,
        label: Option<String>,
        tail: Arc<StderrTail>,
        stderr_thread: Option<JoinHandle<()>>,
        wake_writer: Arc<dyn Fn() + Send + Sync>,
    ) -> Arc<Worker> {
        Arc::new_cyclic(|me: &Weak<Worker>| {
            let me = me.clone();
            let holder = Holder::new(move |key, still_held| {
                if let Some(worker) = me.upgrade() {
                    worker.cancel_held(key, still_held);
                }
            });
            Worker::with_holder(process, label, tail, stderr_thread, holder, wake_writer)
        })
    }

    fn with_holder(
        process: Box<dyn WorkerProcess>,
        label: Option<String>,
        tail: Arc<StderrTail>,
        stderr_thread: Option<JoinHandle<()>>,
        holder: Arc<Holder>,
        wake_writer: Arc<dyn Fn() + Send + Sync>,
    ) -> Worker {
        Worker {
            pid: process.pid(),
            label,
            link: Mutex::new(Link {
                stage: Stage::Starting,
                fate: None,
                held: VecDeque::new(),
                pace: Pace::default(),
                sent: 0,
                hello_pid: None,
                to_send: Vec::new(),
                settled: false,
                cancelling: 0,
            }),
            cond: Condvar::new(),
            process: Mutex::new(Some(process)),
            tail,
            leaving: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            stderr_thread: Mutex::new(stderr_thread),
            holder,
            wake_writer,
        }
    }

    /// Cancels the held task of future `key`: asks the worker for it back
    /// and waits until its answer (or its end) settled the future. On a
    /// pool's own I/O thread it cannot wait, and leaves the task alone.
    fn cancel_held(&self, key: usize, still_held: &dyn Fn() -> bool) {
        if IO_THREAD.with(Cell::get) {
            return;
        }
        if !self.link.lock().recall_to_cancel(key) {
            return;
        }
        self.cond.notify_all();
        // Its writer may wait in the pool's queue instead (not under the
        // link's lock: the pool's lock comes first).
        (self.wake_writer)();
        let mut link = self.link.lock();
        while still_held() {
            self.cond.wait(&mut link);
        }
    }

    /// Asks for every task it holds behind the one it runs, to cancel them
    /// (a shutdown that cancels the futures); false if it holds none. Wait
    /// for the answers with [`await_cancels`](Self::await_cancels): those
    /// it had started meanwhile run on.
    pub(crate) fn ask_to_cancel_held(&self) -> bool {
        if IO_THREAD.with(Cell::get) {
            return false;
        }
        let mut link = self.link.lock();
        let mut asked = false;
        for i in 1..link.held.len() {
            let key = link.held[i].job.completion.key();
            asked |= link.recall_to_cancel(key);
        }
        if asked {
            self.cond.notify_all();
            drop(link);
            (self.wake_writer)();
        }
        asked
    }

    /// Waits until the worker answered every recall to cancel, or ended
    /// and the pool settled what it held.
    pub(crate) fn await_cancels(&self) {
        let open = |l: &Link| {
            if l.stage == Stage::Gone {
                !l.settled
            } else {
                l.cancelling > 0 || l.held.iter().any(|s| s.recall.is_some_and(|r| r.cancel))
            }
        };
        let mut link = self.link.lock();
        while open(&link) {
            self.cond.wait(&mut link);
        }
    }

    /// The pool settled what it held at its end: wakes the cancels that
    /// wait for it.
    pub(crate) fn settled(&self) {
        let mut link = self.link.lock();
        link.settled = true;
        self.cond.notify_all();
    }

    /// A task it gave back was cancelled or queued again (`cancel`: it was
    /// one of those to cancel): wakes whoever waits on its link (its
    /// writer, cancels waiting for an answer).
    pub(crate) fn given_back(&self, cancel: bool) {
        let mut link = self.link.lock();
        if cancel {
            link.cancelling = link.cancelling.saturating_sub(1);
        }
        self.cond.notify_all();
    }

    /// "worker process 4242" (its pid here, or as its handshake said),
    /// with " on node1" for a worker elsewhere.
    pub(crate) fn name(&self) -> String {
        let pid = self
            .pid
            .or(self.link.lock().hello_pid)
            .map_or_else(|| "(before its handshake)".to_string(), |p| p.to_string());
        match &self.label {
            Some(l) => format!("worker process {pid} on {l}"),
            None => format!("worker process {pid}"),
        }
    }

    /// Moves to `stage` (under the link's lock) and wakes the writer.
    pub(crate) fn set_stage(&self, link: &mut Link, stage: Stage) {
        link.stage = stage;
        if matches!(stage, Stage::Retiring | Stage::Gone) {
            self.leaving.store(true, Ordering::Release);
        }
        self.cond.notify_all();
    }

    /// True once it takes no more tasks.
    pub(crate) fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// How many tasks it holds, and whether it is free for a queued task:
    /// ready and holding nothing (its writer takes work now or in a
    /// moment), or still starting. Call under the pool's lock.
    pub(crate) fn load(&self) -> (usize, bool) {
        let link = self.link.lock();
        let free = match link.stage {
            Stage::Starting | Stage::Initializing => true,
            Stage::Ready => link.idle(),
            Stage::Retiring | Stage::Gone => false,
        };
        (link.held.len(), free)
    }

    /// Stops the process (`kill`: at once; else SIGTERM or the launcher's
    /// gentler stop), recording why unless a reason is already recorded.
    pub(crate) fn stop(&self, fate: Fate, kill: bool) {
        {
            let mut link = self.link.lock();
            if link.stage == Stage::Gone {
                return;
            }
            if link.fate.is_none() {
                link.fate = Some(fate);
            }
        }
        if let Some(p) = self.process.lock().as_mut() {
            let _ = if kill { p.kill() } else { p.terminate() };
        }
    }

    /// Kills the worker if task `seq` is still the one it runs: the task
    /// reached its time limit.
    pub(crate) fn expire(&self, seq: u64, limit: Duration) {
        let running = {
            let link = self.link.lock();
            link.stage != Stage::Gone
                && link
                    .held
                    .front()
                    .is_some_and(|s| s.seq == seq && s.started_at.is_some() && s.recall.is_none())
        };
        if running {
            self.stop(Fate::TimeLimit { seq, limit }, true);
        }
    }

    /// The pool could not start this worker's threads: kill and reap it.
    pub(crate) fn abandon_start(&self) {
        {
            let mut link = self.link.lock();
            self.set_stage(&mut link, Stage::Gone);
        }
        if let Some(mut p) = self.process.lock().take() {
            let _ = p.kill();
            wait_blocking(p.as_mut());
        }
        self.settle_stderr();
    }

    /// Lets the stderr forwarder drain (at most 200 ms) and joins it; if
    /// something still holds the pipe (a grandchild that inherited it), the
    /// thread is left to end on its own rather than hold up the pool.
    pub(crate) fn settle_stderr(&self) {
        let closed = self.tail.wait_closed(Duration::from_millis(200));
        let handle = self.stderr_thread.lock().take();
        if let (true, Some(h)) = (closed, handle) {
            let _ = h.join();
        }
    }
}

/// Waits for a killed worker to be reaped.
pub(crate) fn wait_blocking(process: &mut dyn WorkerProcess) -> Option<std::process::ExitStatus> {
    let mut pause = Duration::from_micros(100);
    loop {
        match process.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(task_us: u64, rtt_us: u64) -> Pace {
        Pace {
            task_ns: (task_us * 1000) as f64,
            rtt_ns: (rtt_us * 1000) as f64,
            last_activity: None,
            cap: MAX_WINDOW,
        }
    }

    #[test]
    fn the_window_is_one_until_a_task_is_measured() {
        assert_eq!(Pace::default().window(), 1);
    }

    #[test]
    fn the_window_at_most_doubles_per_answer() {
        let mut p = pace(1, 60);
        p.cap = 2;
        assert_eq!(p.window(), 2);
        p.cap = 4;
        assert_eq!(p.window(), 4);
    }

    #[test]
    fn long_tasks_are_never_pipelined() {
        // 50 ms tasks, locally and over a 20 ms network; 1 ms tasks here.
        assert_eq!(pace(50_000, 60).window(), 1);
        assert_eq!(pace(1_000, 20).window(), 1);
        assert_eq!(pace(200_000, 20_000).window(), 1);
    }

    #[test]
    fn short_tasks_keep_a_millisecond_or_a_round_trip_queued() {
        // Tiny tasks: 1 ms of them plus the running one, at most 512.
        assert_eq!(pace(1, 60).window(), MAX_WINDOW);
        assert_eq!(pace(10, 60).window(), 101);
        // 0.3 ms tasks with a 60 us round trip: the running one and 1 ms
        // more, so the worker goes on while the pool waits for a core.
        assert_eq!(pace(300, 60).window(), 5);
        // 0.9 ms tasks (under the 1 ms floor, still short): one more.
        assert_eq!(pace(900, 20).window(), 3);
        // 100 us tasks with a 2.5 ms round trip (a slow link): 25 + 1.
        assert_eq!(pace(100, 2_500).window(), 26);
        // 5 ms tasks over a 20 ms network: 20 / 5 + 1.
        assert_eq!(pace(5_000, 20_000).window(), 5);
    }
}
