//! Helpers shared by the integration tests.
//!
//! Each test file uses only some of them.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use concurrent_futures::{Future, ThreadPoolExecutor};
use crossbeam_channel::{unbounded, Receiver};

/// The upper bound for "did not hang": generous, since a loaded CI machine
/// may be slow, but short enough that a hang fails the run quickly.
pub const LONG: Duration = Duration::from_secs(10);

/// How long a whole test binary may run before [`arm_watchdog`] aborts it.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// Aborts the test binary once it has run for [`WATCHDOG`]: the backstop for
/// a hang where no test can put a timeout (a pool's `Drop` joining its
/// threads). Armed once per process by the helpers below, so every test
/// that uses them is covered. The whole run normally takes about a second.
pub fn arm_watchdog() {
    static ARMED: Once = Once::new();
    ARMED.call_once(|| {
        if cfg!(miri) {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(|| {
                std::thread::sleep(WATCHDOG);
                eprintln!("watchdog: the tests ran for {WATCHDOG:?}, something hangs; aborting");
                std::process::abort();
            });
    });
}

/// Counts how many of its tokens were dropped.
#[derive(Debug, Clone, Default)]
pub struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A value that bumps the count once when it is dropped.
    pub fn token(&self) -> Token {
        Token(Arc::clone(&self.0))
    }

    /// How many tokens were dropped so far.
    pub fn dropped(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A value counted by its [`DropCounter`] when dropped.
#[derive(Debug)]
pub struct Token(Arc<AtomicUsize>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit`: a hang becomes a failure instead of a stuck test run. A panic in
/// `f` is passed on unchanged.
#[track_caller]
pub fn with_timeout<R, F>(limit: Duration, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    arm_watchdog();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the closure neither returned nor panicked"),
        },
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("hung: did not finish within {limit:?}")
        }
    }
}

/// Polls `cond` until it holds, failing the test after [`LONG`]. For things
/// that happen right after an event the test cannot observe directly (a
/// worker dropping what it held after publishing a result).
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    arm_watchdog();
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A gate that blocked tasks wait on. The test holds the `Gate`; tasks hold
/// a [`Waiter`] from [`Gate::waiter`]. The gate opens with [`Gate::open`] or
/// when the `Gate` is dropped (so a failing test does not leave tasks
/// blocked); a waiter gives up after [`LONG`] so a forgotten gate fails a
/// test instead of hanging it.
#[derive(Debug)]
pub struct Gate {
    tx: Option<crossbeam_channel::Sender<()>>,
    rx: crossbeam_channel::Receiver<()>,
}

/// The tasks' side of a [`Gate`].
#[derive(Debug, Clone)]
pub struct Waiter(crossbeam_channel::Receiver<()>);

impl Gate {
    pub fn new() -> Self {
        arm_watchdog();
        let (tx, rx) = crossbeam_channel::bounded(0);
        Gate { tx: Some(tx), rx }
    }

    /// A handle for a task to wait on.
    pub fn waiter(&self) -> Waiter {
        Waiter(self.rx.clone())
    }

    /// Opens the gate for every present and future waiter.
    pub fn open(&mut self) {
        self.tx = None;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Waiter {
    /// Blocks until the gate opens; false if it stayed shut for [`LONG`].
    pub fn wait(&self) -> bool {
        matches!(
            self.0.recv_timeout(LONG),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        )
    }
}

/// Receives from `rx`, failing the test after [`LONG`].
#[track_caller]
pub fn recv<T>(rx: &crossbeam_channel::Receiver<T>) -> T {
    arm_watchdog();
    match rx.recv_timeout(LONG) {
        Ok(v) => v,
        Err(e) => panic!("nothing received within {LONG:?}: {e}"),
    }
}

// ------------------------------------------------------ thread pool helpers --

/// A thread pool of `n` workers.
pub fn pool(n: usize) -> ThreadPoolExecutor {
    arm_watchdog();
    ThreadPoolExecutor::new(n).unwrap()
}

/// Submits `n` tasks that report their index on the returned channel once
/// they run, then block until `gate` opens and return their index.
pub fn blocked_tasks(
    pool: &ThreadPoolExecutor,
    gate: &Gate,
    n: usize,
) -> (Vec<Future<usize>>, Receiver<usize>) {
    let (tx, rx) = unbounded();
    let futures = (0..n)
        .map(|i| {
            let tx = tx.clone();
            let waiter = gate.waiter();
            pool.submit(move || {
                tx.send(i).unwrap();
                assert!(waiter.wait());
                i
            })
        })
        .collect();
    (futures, rx)
}

/// Records which items a mapped function ran on.
#[derive(Debug, Clone, Default)]
pub struct Ran(Arc<Mutex<Vec<usize>>>);

impl Ran {
    pub fn push(&self, x: usize) {
        self.0.lock().unwrap().push(x);
    }
    pub fn get(&self) -> Vec<usize> {
        self.0.lock().unwrap().clone()
    }
}

/// An input iterator that counts how many items were pulled from it.
pub fn counted(
    items: impl Iterator<Item = usize> + Send + 'static,
) -> (
    impl Iterator<Item = usize> + Send + 'static,
    Arc<AtomicUsize>,
) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&pulled);
    let it = items.inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    (it, pulled)
}
