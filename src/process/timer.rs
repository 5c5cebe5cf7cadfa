//! Task time limits: one thread per pool, started with the first limited
//! task, that kills a worker whose running task passes its deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::worker::Worker;

/// A running task's deadline: the worker to kill and the limit it had.
type Entry = (Weak<Worker>, Duration);

#[derive(Default)]
struct State {
    /// By deadline, then sequence number (unique per pool).
    deadlines: BTreeMap<(Instant, u64), Entry>,
    thread: Option<JoinHandle<()>>,
    closed: bool,
}

/// The deadlines of the running tasks that have a time limit.
#[derive(Default)]
pub(crate) struct Timer {
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Timer {
    /// Kills `worker` at `at` unless task `seq` has finished by then
    /// ([`cancel`](Timer::cancel)).
    pub(crate) fn schedule(&self, at: Instant, worker: &Arc<Worker>, seq: u64, limit: Duration) {
        let (lock, cond) = &*self.state;
        let mut st = lock.lock();
        if st.closed {
            return;
        }
        st.deadlines
            .insert((at, seq), (Arc::downgrade(worker), limit));
        if st.thread.is_none() {
            let state = Arc::clone(&self.state);
            match thread::Builder::new()
                .name("concurrent-futures-timer".into())
                .spawn(move || run(&state))
            {
                Ok(h) => st.thread = Some(h),
                Err(_) => {
                    // No thread, no limits: say so rather than hang.
                    tracing::error!(target: "concurrent_futures", "cannot start the time-limit thread; tasks run without their time limits");
                }
            }
        }
        cond.notify_one();
    }

    /// Task `seq` finished before its deadline `at`.
    pub(crate) fn cancel(&self, at: Instant, seq: u64) {
        self.state.0.lock().deadlines.remove(&(at, seq));
    }

    /// Stops the thread (at shutdown, once no task runs) and joins it.
    pub(crate) fn close(&self) {
        let (lock, cond) = &*self.state;
        let thread = {
            let mut st = lock.lock();
            st.closed = true;
            st.deadlines.clear();
            cond.notify_one();
            st.thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Timer {
    /// A pool whose last handle went on one of its own threads (a
    /// done-callback) never ran `close`; without this its timer thread
    /// waited for deadlines forever. The thread holds no part of the pool,
    /// so the join cannot wait for this drop.
    fn drop(&mut self) {
        self.close();
    }
}

fn run(state: &(Mutex<State>, Condvar)) {
    let (lock, cond) = state;
    let mut st = lock.lock();
    loop {
        if st.closed {
            return;
        }
        let now = Instant::now();
        match st.deadlines.first_key_value().map(|(k, _)| *k) {
            Some((at, seq)) if at <= now => {
                let entry = st.deadlines.remove(&(at, seq));
                if let Some((worker, limit)) = entry {
                    parking_lot::MutexGuard::unlocked(&mut st, || {
                        if let Some(w) = worker.upgrade() {
                            w.expire(seq, limit);
                        }
                    });
                }
            }
            Some((at, _)) => {
                cond.wait_until(&mut st, at);
            }
            None => cond.wait(&mut st),
        }
    }
}
