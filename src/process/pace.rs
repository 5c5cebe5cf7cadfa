//! How fast a worker answers, which sizes its window: how many tasks it
//! is sent ahead of the one it runs.

use std::time::{Duration, Instant};

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

/// How fast the worker answers: sizes its window.
#[derive(Debug)]
pub(crate) struct Pace {
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
    pub(crate) fn long_ns(&self) -> f64 {
        (PIPELINE_RATIO * self.rtt_ns.max(MIN_RTT.as_nanos() as f64))
            .max(SHORT_FLOOR.as_nanos() as f64)
    }

    /// One task while it is long; else the running one plus enough to
    /// keep the worker busy while the pool answers: a round trip's worth,
    /// and at least [`WINDOW_TARGET`]'s. No more than that: every task in
    /// a window is bound to this worker, and at the end of a burst an idle
    /// worker could have run it.
    pub(crate) fn window(&self) -> usize {
        if self.task_ns == 0.0 || self.task_ns >= self.long_ns() {
            return 1;
        }
        let task = self.task_ns.max(1.0);
        let ahead = self.rtt_ns.max(WINDOW_TARGET.as_nanos() as f64);
        (((ahead / task).ceil() + 1.0) as usize)
            .clamp(2, MAX_WINDOW)
            .min(self.cap)
    }

    /// A task is sent at `now`, to an `idle` worker or not. After an idle
    /// spell the next tasks may be of another kind, and the way to the
    /// worker may have changed: start again from a window of one.
    pub(crate) fn sent(&mut self, idle: bool, now: Instant) {
        if idle
            && self
                .last_activity
                .is_some_and(|t| now.duration_since(t) > IDLE_SPELL)
        {
            *self = Pace::default();
        }
        self.last_activity = Some(now);
    }

    /// A task answered at `now` after running `run_ns`; `rtt_sample` if it
    /// was sent to an idle worker at that time (its answer time less its
    /// run time is a round trip).
    pub(crate) fn answered(&mut self, run_ns: u64, rtt_sample: Option<Instant>, now: Instant) {
        let run = run_ns as f64;
        self.task_ns = Pace::smooth(self.task_ns, run);
        self.cap = (self.cap * 2).min(MAX_WINDOW);
        if let Some(sent_at) = rtt_sample {
            let rtt = (now.duration_since(sent_at).as_nanos() as f64 - run).max(1.0);
            self.rtt_ns = if self.rtt_ns == 0.0 {
                rtt
            } else {
                self.rtt_ns.min(rtt)
            };
        }
        self.last_activity = Some(now);
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
