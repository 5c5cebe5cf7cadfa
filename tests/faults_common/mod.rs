//! Helpers of the fault matrix (`tests/faults_*.rs`): the ways a worker
//! dies, the tasks that die on command, a scratch directory through which
//! the test commands the worker, and checks on process ids through `/proc`.
//!
//! Every wait here has a deadline ([`LONG`]), so a fault that makes the pool
//! hang fails the test instead of stalling the run.
#![allow(dead_code, unreachable_pub)]

use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, Future};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The upper bound for "did not hang".
pub const LONG: Duration = Duration::from_secs(20);

/// The exit code of [`Death::Exit`].
pub const EXIT_CODE: i32 = 7;

// The helpers the process-pool conformance tests use too: the pool builder
// that makes this test binary the worker, plain tasks, `/proc` checks.
#[path = "../process_common/mod.rs"]
mod process_common;

// Each fault file uses some of them.
#[allow(unused_imports)]
pub use process_common::{
    builder, pid, proc_state, reaped, send_signal, square, test_path, within, Scratch, WORKER_ARGS,
};

// ---------------------------------------------------------------------------
// How a worker dies.

/// The ways a worker process dies in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Death {
    /// SIGKILL (sent by the test when it can, else by the worker to itself).
    Kill,
    /// A real segmentation fault: a write to an unmapped address.
    Segv,
    /// SIGSEGV sent with kill(2), repeatedly: std's stack-overflow handler
    /// takes the first one (it finds no guard-page fault, restores the
    /// default action and returns), so one is not enough.
    SegvSignal,
    /// `std::process::abort()` (SIGABRT).
    Abort,
    /// `std::process::exit(EXIT_CODE)`.
    Exit,
}

impl Death {
    /// The words the pool's message must contain.
    pub fn words(self) -> &'static str {
        match self {
            Death::Kill => "was killed by signal SIGKILL (9",
            Death::Segv | Death::SegvSignal => "was killed by signal SIGSEGV (11",
            Death::Abort => "was killed by signal SIGABRT (6",
            Death::Exit => "exited with code 7",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Death::Kill => "kill",
            Death::Segv => "segv",
            Death::SegvSignal => "segv-signal",
            Death::Abort => "abort",
            Death::Exit => "exit",
        }
    }

    fn parse(s: &str) -> Option<Death> {
        [
            Death::Kill,
            Death::Segv,
            Death::SegvSignal,
            Death::Abort,
            Death::Exit,
        ]
        .into_iter()
        .find(|d| d.word() == s.trim())
    }
}

/// Ends this process the way `death` says. Runs in a worker.
pub fn die_now(death: Death) -> ! {
    match death {
        Death::Kill => {
            // SAFETY: plain integers; signalling ourselves.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        Death::SegvSignal => loop {
            // SAFETY: plain integers; signalling ourselves.
            unsafe { libc::raise(libc::SIGSEGV) };
        },
        Death::Segv => {
            // A write to the unmapped first page.
            let addr = std::hint::black_box(8usize) as *mut u8;
            // SAFETY: it is not: this faults, which is the point.
            unsafe { std::ptr::write_volatile(addr, 1) };
        }
        Death::Abort => std::process::abort(),
        Death::Exit => std::process::exit(EXIT_CODE),
    }
    // Only reached if the signal was slow to arrive.
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

/// Sends SIGSEGV to `pid` until it has ended (see [`Death::SegvSignal`]).
pub fn segv_until_ended(pid: u32) {
    let deadline = Instant::now() + LONG;
    while !ended(pid) {
        assert!(Instant::now() < deadline, "{pid} survives SIGSEGV");
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSEGV) };
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Tasks (they run in the worker processes; name them with `task!` at the
// call site).

/// Dies at once, the way `death` says.
pub fn die(death: Death) -> u32 {
    die_now(death)
}

/// Marks `started-<pid>-<n>` in `dir`, then blocks until `dir/open` exists
/// (or `dir` is gone: its test is over), and returns the pid. Dies instead
/// when the test writes a command for this pid (see [`Scratch::command`]).
pub fn block(dir: String) -> u32 {
    static N: AtomicU64 = AtomicU64::new(0);
    let me = std::process::id();
    let n = N.fetch_add(1, Ordering::Relaxed);
    touch(&Path::new(&dir).join(format!("started-{me}-{n}")));
    obey_until_open(&dir);
    me
}

/// Starts a thread in the worker that obeys this pid's command (see
/// [`Scratch::command`]), and returns the pid at once: the worker is then
/// idle with its death armed.
pub fn arm(dir: String) -> u32 {
    let me = std::process::id();
    thread::spawn(move || obey_until_open(&dir));
    me
}

/// The initializer of the matrix: marks `init-<pid>` in `dir`, then waits
/// for a command (or the gate) like [`block`].
pub fn init_wait(dir: String) {
    touch(&Path::new(&dir).join(format!("init-{}", std::process::id())));
    obey_until_open(&dir);
}

/// An initializer that dies every time, in every worker.
pub fn init_die(death: Death) {
    die_now(death)
}

/// Arms a death like [`arm`], marks `big-<pid>`, then returns `len` bytes:
/// the command arrives while the worker writes this large result.
pub fn big_result(dir: String, len: usize) -> ByteBuf {
    let me = std::process::id();
    let armed = dir.clone();
    thread::spawn(move || obey_until_open(&armed));
    touch(&Path::new(&dir).join(format!("big-{me}")));
    ByteBuf::from(vec![0xAB; len])
}

/// The length of a byte string.
pub fn bytes_len(b: ByteBuf) -> usize {
    b.len()
}

fn obey_until_open(dir: &str) {
    let dir = Path::new(dir);
    let cmd = dir.join(format!("cmd-{}", std::process::id()));
    let deadline = Instant::now() + LONG;
    while dir.exists() && !dir.join("open").exists() && Instant::now() < deadline {
        if let Some(death) = fs::read_to_string(&cmd).ok().and_then(|s| Death::parse(&s)) {
            die_now(death);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn touch(path: &Path) {
    let _ = fs::write(path, b"");
}

// ---------------------------------------------------------------------------
// The test's side: a scratch directory.

/// What the fault rows add to the scratch directory of the process tests
/// (a fresh directory that tasks watch; removed on drop, which releases
/// every task still blocked on it).
pub trait FaultScratch {
    /// The directory.
    fn path(&self) -> &Path;

    /// Tells the worker `pid` to die as `death` (its blocked task or armed
    /// thread obeys within a millisecond).
    fn command(&self, pid: u32, death: Death) {
        let tmp = self.path().join(format!("tmp-{pid}"));
        fs::write(&tmp, death.word()).expect("write a command");
        fs::rename(&tmp, self.path().join(format!("cmd-{pid}"))).expect("publish a command");
    }

    /// The pids of the markers named `<prefix><pid>[-n]`, sorted, each
    /// once (`Scratch::pids`).
    fn pids(&self, prefix: &str) -> Vec<u32>;

    /// Waits until markers with `prefix` exist for `n` distinct pids.
    #[track_caller]
    fn wait_pids(&self, prefix: &str, n: usize) -> Vec<u32> {
        let mut pids = Vec::new();
        eventually(&format!("{n} pids marked {prefix}"), || {
            pids = self.pids(prefix);
            pids.len() >= n
        });
        pids
    }
}

impl FaultScratch for Scratch {
    fn path(&self) -> &Path {
        Scratch::path(self)
    }

    fn pids(&self, prefix: &str) -> Vec<u32> {
        Scratch::pids(self, prefix)
    }
}

// ---------------------------------------------------------------------------
// Outcomes.

/// Waits (at most [`LONG`]) for the future and returns its error message if
/// it is `Err(BrokenPool)` containing every one of `words`; fails the test
/// otherwise.
#[track_caller]
pub fn broken<T: Debug>(fut: &mut Future<T>, words: &[&str]) -> String {
    match fut.result_timeout(LONG) {
        // A death under `restart_workers` is `WorkerDied`: the pool goes on.
        Err(Error::BrokenPool(msg) | Error::WorkerDied(msg)) => {
            for w in words {
                assert!(msg.contains(w), "{w:?} missing from {msg:?}");
            }
            msg
        }
        other => panic!("expected Err(BrokenPool({words:?})), got {other:?}"),
    }
}

/// What a pool broken by the death that `ran` (the message of the task
/// that ran in the dead worker) says to every other future: the worker
/// died under another task, at `place` ("submit #1").
pub fn others(ran: &str, place: &str) -> String {
    let another = format!("while running another task ({place})");
    assert!(ran.contains("while running a task"), "{ran:?}");
    ran.replacen("while running a task", &another, 1)
}

/// Waits (at most [`LONG`]) for the future's value.
#[track_caller]
pub fn value<T: Debug>(fut: &mut Future<T>) -> T {
    match fut.result_timeout(LONG) {
        Ok(v) => v,
        Err(e) => panic!("expected a value, got Err({e:?})"),
    }
}

/// `worker process <pid> ` as the pool's messages say it.
pub fn names(pid: u32) -> String {
    format!("worker process {pid} ")
}

// ---------------------------------------------------------------------------
// Processes.

/// True once `pid` no longer runs: reaped, or a zombie whose (new) parent
/// has not reaped it yet.
pub fn ended(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Fails the test unless every pid is reaped within [`LONG`].
#[track_caller]
pub fn assert_reaped(pids: &[u32]) {
    let mut left = Vec::new();
    let ok = within(LONG, || {
        left = pids.iter().copied().filter(|p| !reaped(*p)).collect();
        left.is_empty()
    });
    let states: Vec<_> = left.iter().map(|p| (*p, proc_state(*p))).collect();
    assert!(ok, "worker processes left behind: {states:?}");
}

/// Polls `cond` until it holds; fails the test after [`LONG`].
#[track_caller]
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(within(LONG, cond), "never happened within {LONG:?}: {what}");
}

/// Holds the rows that use much memory (a death row's 100 MB argument or
/// result) apart from the fake rows, whose check of this process's peak
/// resident set ([`peak_rss`], after [`reset_peak_rss`]) must count only
/// their own allocations: all the fault rows share one test binary.
pub fn memory_rows() -> std::sync::MutexGuard<'static, ()> {
    static ROWS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ROWS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets this process's peak resident set (`VmHWM`) back to its current
/// resident set (Linux: `5` written to `/proc/self/clear_refs`).
pub fn reset_peak_rss() {
    fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM through /proc/self/clear_refs");
}

/// This process's peak resident set (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a VmHWM value");
    kb * 1024
}

/// The most bytes waiting in any pipe this process shares with `pid` (its
/// stdin, stdout or stderr pipe). Linux: through `/proc/<pid>/fd` and
/// `FIONREAD` on a second descriptor of the same pipe.
pub fn pipe_backlog(pid: u32) -> usize {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let links = |dir: String| -> Vec<(PathBuf, String)> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let target = fs::read_link(e.path()).ok()?;
                let target = target.to_string_lossy().into_owned();
                target.starts_with("pipe:").then(|| (e.path(), target))
            })
            .collect()
    };
    let theirs: Vec<String> = links(format!("/proc/{pid}/fd"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let mut most = 0;
    for (path, target) in links("/proc/self/fd".to_string()) {
        if !theirs.contains(&target) {
            continue;
        }
        let Ok(f) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } == 0 {
            most = most.max(n as usize);
        }
    }
    most
}
