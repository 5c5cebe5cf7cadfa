//! What a pool says about itself: [`PoolStats`] and [`HostStats`], the
//! snapshot `stats()` returns, and the counters behind it.
//!
//! The counters are bumped where a future changes state (marked running,
//! completed, cancelled), not when a task is sent: what is `running` is
//! what a caller's `Future::running()` says. The process pool keeps them in
//! one [`Counters`] that every job's ticket shares; the thread pool, whose
//! tasks are too small for a shared atomic per task, keeps one
//! [`Tally`] per worker thread, written by that thread alone.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// A snapshot of a pool: its workers, its tasks and what happened to them.
///
/// Returned by [`ThreadPoolExecutor::stats`](crate::ThreadPoolExecutor::stats)
/// and `ProcessPoolExecutor::stats`. Taking one is cheap (a few counters
/// and one look at the pool's lock, never a walk over the futures), so a
/// progress bar may take one every few milliseconds. The counts are read
/// one after the other while tasks go on, so they may disagree by the
/// tasks that change state meanwhile; no more.
///
/// - `workers`, `idle`, `starting`: the workers alive (threads, or
///   processes including those being launched), those of them that hold no
///   task, and those not yet ready (being launched, before their handshake
///   or in their initializer). The thread pool has no `starting` workers.
/// - `queued`, `running`: futures pending and running, as
///   [`Future::running`](crate::Future::running) tells. A future cancelled
///   while queued counts as queued until the pool reaches it, then as
///   cancelled.
/// - `completed`, `failed`, `cancelled`: since the pool was built, futures
///   that got their task's value, that ended in an `Err` (a panic, a
///   crash, a time limit, a codec error, a broken pool), and that were
///   cancelled before they ran. A `map` chunk is one task.
/// - `restarts`: workers the pool replaced after they died or were killed
///   at a time limit, without breaking (a crash under `restart_workers`, a
///   time limit); `time_limit_kills` counts the latter alone. Retirements
///   (`max_tasks_per_child`) are not restarts.
/// - `retries`: tries started again after a task's worker died under it
///   (`Task::retries`, `task_retries`); always 0 on the thread pool.
/// - `hosts`: for a process pool, one entry per host its launcher knows
///   (see [`Launcher::hosts`](crate::launch::Launcher::hosts)); empty for
///   the thread pool.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(2)?;
/// let total: u64 = pool.map(|x: u64| x * 2, 0..100).map(Result::unwrap).sum();
/// assert_eq!(total, 9_900);
/// let s = pool.stats();
/// assert_eq!((s.completed, s.failed, s.cancelled), (100, 0, 0));
/// assert_eq!((s.queued, s.running), (0, 0));
/// assert!(s.workers >= 1 && s.workers <= 2);
/// assert!(s.hosts.is_empty());
/// println!("{} done, {} failed", s.completed, s.failed);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Workers alive: threads, or processes (including those being
    /// launched).
    pub workers: usize,
    /// Workers that hold no task.
    pub idle: usize,
    /// Workers not yet ready: being launched, before their handshake, or
    /// running their initializer.
    pub starting: usize,
    /// Futures pending: submitted, not running yet.
    pub queued: usize,
    /// Futures running.
    pub running: usize,
    /// Futures that got their task's value, since the pool was built.
    pub completed: u64,
    /// Futures that ended in an `Err`, since the pool was built.
    pub failed: u64,
    /// Futures cancelled before they ran, since the pool was built.
    pub cancelled: u64,
    /// Workers replaced after a crash (under `restart_workers`) or a time
    /// limit.
    pub restarts: u64,
    /// Workers killed because their task ran past its time limit.
    pub time_limit_kills: u64,
    /// Tries started again after a task's worker died under it.
    pub retries: u64,
    /// One entry per host of a process pool; empty for the thread pool.
    pub hosts: Vec<HostStats>,
}

/// One host of a process pool, in [`PoolStats::hosts`].
///
/// A [`Launcher`](crate::launch::Launcher) that keeps a host table reports
/// it through [`Launcher::hosts`](crate::launch::Launcher::hosts), built
/// with [`HostStats::new`].
///
/// # Examples
///
/// ```
/// use concurrent_futures::HostStats;
///
/// let h = HostStats::new("node1", 3, false, Some("ssh: connect to host node1: Connection refused".into()));
/// assert_eq!((h.name.as_str(), h.workers, h.up), ("node1", 3, false));
/// assert!(h.last_error.as_deref().is_some_and(|e| e.contains("refused")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// The host's name, as the launcher was given it.
    pub name: String,
    /// Workers started there and not yet gone.
    pub workers: usize,
    /// False while the host is known to be unreachable (its launcher
    /// backs off); true otherwise.
    pub up: bool,
    /// The last thing that went wrong there, if anything did.
    pub last_error: Option<String>,
}

impl HostStats {
    /// An entry for `name` with `workers` live workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::HostStats;
    /// let h = HostStats::new("gpu1", 2, true, None);
    /// assert!(h.up && h.last_error.is_none());
    /// ```
    pub fn new(
        name: impl Into<String>,
        workers: usize,
        up: bool,
        last_error: Option<String>,
    ) -> Self {
        HostStats {
            name: name.into(),
            workers,
            up,
            last_error,
        }
    }
}

/// How a future ended, as the pool saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It got its task's value.
    Value,
    /// It ended in an `Err`.
    Error,
    /// It was cancelled before it ran.
    Cancelled,
}

/// The process pool's counters, shared by every job's ticket. Each group
/// has a cache line of its own: `outstanding` is bumped by submitters and
/// readers, `running` mostly by a worker's reader (a task ends, the next
/// starts), the ends by readers; on one line, every submit and answer
/// moved it between cores (measured: round trips 20% slower).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Jobs submitted and not yet finished (queued or held by a worker).
    pub(crate) outstanding: CachePadded<AtomicUsize>,
    /// Futures marked running and not yet done.
    pub(crate) running: CachePadded<AtomicUsize>,
    ends: CachePadded<Ends>,
}

/// How futures ended, and what happened to workers, since the pool was
/// built.
#[derive(Debug, Default)]
pub(crate) struct Ends {
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) time_limit_kills: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl Counters {
    /// Counts a future's end.
    pub(crate) fn ended(&self, how: Ended) {
        self.ended_n(how, 1);
    }

    /// Counts `n` futures that ended `how`.
    pub(crate) fn ended_n(&self, how: Ended, n: u64) {
        let e = &self.ends;
        let counter = match how {
            Ended::Value => &e.completed,
            Ended::Error => &e.failed,
            Ended::Cancelled => &e.cancelled,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts of what happened to workers and retries.
    pub(crate) fn ends(&self) -> &Ends {
        &self.ends
    }

    /// Fills the task counts of `s`.
    pub(crate) fn fill(&self, s: &mut PoolStats) {
        let running = self.running.load(Ordering::Relaxed);
        s.running = running;
        s.queued = self
            .outstanding
            .load(Ordering::Relaxed)
            .saturating_sub(running);
        let e = &self.ends;
        s.completed = e.completed.load(Ordering::Relaxed);
        s.failed = e.failed.load(Ordering::Relaxed);
        s.cancelled = e.cancelled.load(Ordering::Relaxed);
        s.restarts = e.restarts.load(Ordering::Relaxed);
        s.time_limit_kills = e.time_limit_kills.load(Ordering::Relaxed);
        s.retries = e.retries.load(Ordering::Relaxed);
    }
}

/// One thread-pool worker's counts. Only its own thread writes them, so a
/// bump is a load and a store, not a locked read-modify-write; `stats()`
/// sums the tallies. On a cache line of its own, away from the others.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Tally {
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
}

impl Tally {
    /// Counts a future's end. Call only from the tally's own thread (or
    /// under a lock that every writer of this tally takes).
    pub(crate) fn ended(&self, how: Ended) {
        let counter = match how {
            Ended::Value => &self.completed,
            Ended::Error => &self.failed,
            Ended::Cancelled => &self.cancelled,
        };
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds this tally to the counts of `s`.
    pub(crate) fn add_to(&self, s: &mut PoolStats) {
        s.completed += self.completed.load(Ordering::Relaxed);
        s.failed += self.failed.load(Ordering::Relaxed);
        s.cancelled += self.cancelled.load(Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_is_outstanding_less_running() {
        let c = Counters::default();
        c.outstanding.store(5, Ordering::Relaxed);
        c.running.store(2, Ordering::Relaxed);
        c.ended(Ended::Value);
        c.ended(Ended::Error);
        c.ended(Ended::Cancelled);
        let mut s = PoolStats::default();
        c.fill(&mut s);
        assert_eq!((s.queued, s.running), (3, 2));
        assert_eq!((s.completed, s.failed, s.cancelled), (1, 1, 1));
    }

    #[test]
    fn tallies_add_up() {
        let (a, b) = (Tally::default(), Tally::default());
        a.ended(Ended::Value);
        b.ended(Ended::Value);
        b.ended(Ended::Cancelled);
        let mut s = PoolStats::default();
        a.add_to(&mut s);
        b.add_to(&mut s);
        assert_eq!((s.completed, s.failed, s.cancelled), (2, 0, 1));
    }
}
