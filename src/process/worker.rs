//! One worker process as the pool sees it: its launcher's handle, its
//! stderr tail, the lock its writer and reader share (`link.rs`), and how
//! the pool stops it or asks for a task back.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::sync::{AtomicBool, Condvar};

use super::bell::Bell;
use super::launcher::StderrTail;
use super::link::{Fate, Link, Stage};
use crate::future::Holder;
use crate::launch::WorkerProcess;

thread_local! {
    /// True on a pool's writer, reader and timer threads: a cancel there
    /// cannot wait for a worker's answer, which such a thread delivers.
    static IO_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as one of a pool's I/O threads.
pub(crate) fn mark_io_thread() {
    IO_THREAD.with(|t| t.set(true));
}

/// One worker process, through its launcher.
pub(crate) struct Worker {
    /// Its local pid, if it runs on this machine.
    pub(crate) pid: Option<u32>,
    /// Where it runs (`None`: here), for error messages.
    pub(crate) label: Option<String>,
    pub(crate) link: crate::sync::Mutex<Link>,
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
    /// The bell of the host link whose driver thread writes to and reads
    /// from this worker (`driven.rs`), instead of threads of its own.
    pub(crate) bell: Option<Arc<Bell>>,
    /// What its writer thread waits on in `Shared::take_jobs`: a bell of
    /// its own, so that the pool wakes the writers that can take work, not
    /// every writer at once.
    pub(crate) work_bell: Bell,
}

impl Worker {
    /// A worker, served by its own writer thread, or by the driver of the
    /// host link whose `bell` is given.
    pub(crate) fn new(
        process: Box<dyn WorkerProcess>,
        label: Option<String>,
        tail: Arc<StderrTail>,
        stderr_thread: Option<JoinHandle<()>>,
        bell: Option<Arc<Bell>>,
    ) -> Arc<Worker> {
        Arc::new_cyclic(|me: &Weak<Worker>| {
            let me = me.clone();
            let holder = Holder::new(move |key, still_held| {
                me.upgrade()
                    .is_some_and(|worker| worker.cancel_held(key, still_held))
            });
            Worker {
                pid: process.pid(),
                label,
                link: crate::sync::Mutex::new(Link::new()),
                cond: Condvar::new(),
                process: Mutex::new(Some(process)),
                tail,
                leaving: AtomicBool::new(false),
                waiting: AtomicBool::new(false),
                stderr_thread: Mutex::new(stderr_thread),
                holder,
                bell,
                work_bell: Bell::default(),
            }
        })
    }

    /// Cancels the held task of future `key`: asks the worker for it back
    /// and waits until its answer (or its end) settled the future. On a
    /// pool's own I/O thread it cannot wait, and leaves the task alone.
    fn cancel_held(&self, key: usize, still_held: &dyn Fn() -> bool) -> bool {
        if IO_THREAD.with(Cell::get) {
            return false;
        }
        {
            let mut link = self.link.lock();
            if !link.recall_to_cancel(key) {
                // Gone, its tasks not yet settled: once they are, the
                // future is pending in the queue again (or done), and the
                // cancel looks again.
                while link.stage == Stage::Gone && !link.settled {
                    self.cond.wait(&mut link);
                }
                return true;
            }
        }
        // Wakes its writer (or link driver) wherever it waits, the pool's
        // queue included.
        self.notify();
        let mut link = self.link.lock();
        while still_held() {
            self.cond.wait(&mut link);
        }
        true
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
        for at in 1..link.held.len() {
            asked |= link.recall_to_cancel_at(at);
        }
        if asked {
            self.notify();
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
        self.notify();
    }

    /// Wakes its writer if tasks wait behind one it has run long: another
    /// worker ran out of work and could take them. Not before the task
    /// counts as long: the writer looks again then anyway (its timed
    /// wait), and a link driver woken sooner would only look in vain, over
    /// and over while the other worker stays idle.
    pub(crate) fn wake_if_stranded(&self) {
        let link = self.link.lock();
        if link.stranded_at().is_some_and(|t| t <= Instant::now()) {
            self.notify();
        }
    }

    /// A task it gave back was cancelled (`cancel`) or queued again
    /// (`requeued`): wakes whoever waits on its link (its writer, cancels
    /// waiting for an answer).
    pub(crate) fn given_back(&self, cancel: bool, requeued: bool) {
        let mut link = self.link.lock();
        if cancel {
            link.cancelling = link.cancelling.saturating_sub(1);
        }
        if requeued {
            // Only now that it is back in the queue may the writer take
            // more: what it gave back goes out before what came after.
            link.recall_done();
        }
        self.notify();
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

    /// Wakes whoever waits on its link: its writer (or the driver of the
    /// host link it runs on), wherever it waits, and cancels waiting for an
    /// answer.
    pub(crate) fn notify(&self) {
        self.cond.notify_all();
        // Its writer may wait for work instead (its worker ended, or has
        // recalls to send).
        self.ring();
    }

    /// Wakes what serves this worker if it waits for work: its link's
    /// driver, or its writer thread.
    pub(crate) fn ring(&self) {
        match &self.bell {
            Some(bell) => bell.ring(),
            None => self.work_bell.ring(),
        }
    }

    /// Moves to `stage` (under the link's lock) and wakes the writer.
    pub(crate) fn set_stage(&self, link: &mut Link, stage: Stage) {
        link.stage = stage;
        if matches!(stage, Stage::Retiring | Stage::Gone) {
            self.leaving.store(true, Ordering::Release);
        }
        self.notify();
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
