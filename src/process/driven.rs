//! A worker on a host link, served by the link's driver thread instead of
//! a writer, a reader and a stderr thread of its own: the same steps as
//! `writer.rs` and `reader.rs` take (they share them), run as a state
//! machine that never blocks. The driver polls it with the output the
//! link took in for it; it reads the frames, completes the futures, sends
//! what the worker's window has room for, and once the worker's output
//! ended and its exit is known, reports one [`Exit`](super::shared::Exit)
//! to the pool, exactly as a reader thread does.
//!
//! What a thread would wait for, it says when to be polled again: the
//! handshake deadline, a task stranded behind a long one, a lingering
//! worker's grace. Everything that would wake a writer thread (its link's
//! condvar, `Shared::notify_work`) rings the link's bell.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dispatch::Take;
use super::frame::{find_magic, frame_buffered, read_frame};
use super::launcher::relay_stderr_line;
use super::reader::{
    check_hello, closed_in_handshake, failed, greeted, kill, on_frame, try_reap, Ending, Reaped,
    REAP_GRACE,
};
use super::shared::Shared;
use super::worker::Worker;
use super::writer::{handshake_state, poll_step, retire, Handshake, Sender, Step, INIT_HINT};
use crate::agent::{Output, Polled, Rider};
use crate::Error;

/// How long a worker's stderr may trail its exit before the pool settles
/// without the rest (as a stderr thread's `settle_stderr` waits).
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// The most steps one poll of the writer takes before the driver serves
/// the link's other workers (it polls this one again at once).
const STEPS_PER_POLL: usize = 64;

/// Where the writer is.
enum Writing {
    /// Waiting for the handshake, until this deadline (`None`: no limit).
    Handshake(Option<Instant>),
    /// The initializer went out; waiting for its verdict.
    Initializing,
    /// Sending tasks and recalls.
    Running,
    /// The worker's stdin is closed.
    Closed,
}

/// Where the reader is in the worker's output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Magic,
    Hello,
    Frames,
}

/// The worker's end, while it is settled.
struct End {
    ending: Option<Ending>,
    /// When its output ended.
    since: Instant,
    /// It lingered past the grace and was killed.
    lingered: bool,
    /// How it ended, and when that was known.
    reaped: Option<(Reaped, Instant)>,
}

/// A worker as its link's driver serves it.
pub(crate) struct Driven {
    shared: Arc<Shared>,
    worker: Arc<Worker>,
    stdin: Option<Box<dyn Write + Send>>,
    sender: Sender,
    writing: Writing,
    reading: Reading,
    /// Stdout not parsed yet: `stdout[at..]`.
    stdout: Vec<u8>,
    at: usize,
    /// A stderr line not ended yet.
    line: Vec<u8>,
    stderr_ended: bool,
    end: Option<End>,
}

impl Driven {
    /// Serves `worker`, writing to it through `stdin`. The pool counted it
    /// in `driven` (its drop counts it out).
    pub(crate) fn new(
        shared: Arc<Shared>,
        worker: Arc<Worker>,
        stdin: Box<dyn Write + Send>,
    ) -> Driven {
        // A timeout too long to represent means: wait as long as it takes.
        let deadline = Instant::now().checked_add(shared.config.handshake_timeout);
        Driven {
            shared,
            worker,
            stdin: Some(stdin),
            sender: Sender::new(),
            writing: Writing::Handshake(deadline),
            reading: Reading::Magic,
            stdout: Vec::new(),
            at: 0,
            line: Vec::new(),
            stderr_ended: false,
            end: None,
        }
    }

    /// Copies stderr to ours line by line, keeping the tail.
    fn relay_stderr(&mut self, bytes: &[u8], ended: bool) {
        if self.stderr_ended {
            return;
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&rest[..=nl]);
            relay_stderr_line(&self.worker.tail, &self.line);
            self.line.clear();
            rest = &rest[nl + 1..];
        }
        self.line.extend_from_slice(rest);
        if ended {
            if !self.line.is_empty() {
                relay_stderr_line(&self.worker.tail, &self.line);
                self.line.clear();
            }
            self.worker.tail.close();
            self.stderr_ended = true;
        }
    }

    /// Takes in stdout bytes.
    fn take_stdout(&mut self, bytes: Vec<u8>) {
        if self.at == self.stdout.len() {
            self.stdout = bytes;
            self.at = 0;
        } else {
            if self.at > self.stdout.len() / 2 {
                self.stdout.drain(..self.at);
                self.at = 0;
            }
            self.stdout.extend_from_slice(&bytes);
        }
    }

    /// Reads what whole frames the stdout holds; true once it ended.
    fn read(&mut self, closed: bool) -> Result<bool, Error> {
        loop {
            let buf = &self.stdout[self.at..];
            if self.reading == Reading::Magic {
                let found = find_magic(buf, closed)
                    .map_err(|e| Error::Protocol(format!("{e}: {INIT_HINT}")))?;
                match found {
                    Some(n) => {
                        self.at += n;
                        self.reading = Reading::Hello;
                        continue;
                    }
                    None => return Ok(false),
                }
            }
            if !frame_buffered(buf) {
                if !closed {
                    return Ok(false);
                }
                if buf.is_empty() {
                    if self.reading == Reading::Hello {
                        return Err(closed_in_handshake("worker"));
                    }
                    return Ok(true);
                }
                // Cut short: `read_frame` says how.
            }
            let mut r = buf;
            let frame = read_frame(&mut r)?.ok_or_else(|| closed_in_handshake("worker"))?;
            self.at += buf.len() - r.len();
            if self.reading == Reading::Hello {
                let pid = check_hello(&frame, "worker")?;
                greeted(&self.shared, &self.worker, pid);
                self.reading = Reading::Frames;
            } else {
                on_frame(&self.shared, &self.worker, &frame)?;
            }
        }
    }

    /// The worker's output ended: it is gone; settle it once reaped.
    fn output_ended(&mut self) {
        self.stdout = Vec::new();
        self.at = 0;
        self.end = Some(End {
            ending: Some(Ending::begin(&self.worker)),
            since: Instant::now(),
            lingered: false,
            reaped: None,
        });
    }

    /// Closes the worker's stdin: it finishes what it holds and exits.
    fn close(&mut self) {
        self.stdin = None;
        self.writing = Writing::Closed;
    }

    /// Sends what can be sent; when to be polled again.
    fn write(&mut self, progress: &mut bool) -> Option<Instant> {
        let (shared, worker) = (Arc::clone(&self.shared), Arc::clone(&self.worker));
        for _ in 0..STEPS_PER_POLL {
            let out = self.stdin.as_mut()?;
            match self.writing {
                Writing::Closed => return None,
                Writing::Handshake(deadline) => {
                    match handshake_state(&shared, &worker, worker.link.lock(), deadline) {
                        Handshake::Waiting(_) => return deadline,
                        Handshake::Failed => self.close(),
                        Handshake::Done if !self.sender.init(&shared, out) => self.close(),
                        Handshake::Done if shared.config.initializer.is_some() => {
                            self.writing = Writing::Initializing;
                        }
                        Handshake::Done => self.writing = Writing::Running,
                    }
                }
                Writing::Initializing => {
                    // No task goes out before the verdict: after a failed
                    // initializer nothing may run.
                    let stage = worker.link.lock().stage;
                    match stage {
                        super::link::Stage::Initializing => return None,
                        super::link::Stage::Ready => self.writing = Writing::Running,
                        _ => self.close(),
                    }
                }
                Writing::Running => {
                    let max_tasks = shared.config.max_tasks_per_child;
                    let step = poll_step(&shared, &worker, &mut worker.link.lock(), max_tasks);
                    match step {
                        Err(wake) => return wake,
                        Ok(Step::Close) => self.close(),
                        Ok(Step::Recall(seqs)) => {
                            if !self.sender.recalls(seqs, out) {
                                self.close();
                            }
                        }
                        Ok(Step::Send(left)) => match shared.poll_jobs(&worker, left) {
                            Take::Wait(wake) => return wake,
                            // Shut down and nothing is queued: the worker
                            // finishes what it holds, then its stdin closes.
                            Take::Jobs(None) => retire(&worker),
                            Take::Jobs(Some(jobs)) if jobs.is_empty() => {}
                            Take::Jobs(Some(jobs)) => {
                                if !self.sender.jobs(&shared, &worker, jobs, out) {
                                    self.close();
                                }
                            }
                        },
                    }
                }
            }
            *progress = true;
        }
        // Others on the link get their turn; this one goes on at once.
        Some(Instant::now())
    }

    /// Settles the worker once its output ended: reaps it (killing it if
    /// it lingers), lets its stderr drain, and reports its exit. True once
    /// reported.
    fn settle(&mut self, wake: &mut Option<Instant>) -> bool {
        let Some(end) = &mut self.end else {
            return false;
        };
        let now = Instant::now();
        let reaped_at = match &end.reaped {
            Some((_, at)) => *at,
            None => match try_reap(&self.worker, end.lingered) {
                Some(reaped) => {
                    end.reaped = Some((reaped, now));
                    now
                }
                None => {
                    if end.lingered {
                        // The kill's answer rings the bell.
                        return false;
                    }
                    let grace = end.since + REAP_GRACE;
                    if now >= grace {
                        end.lingered = true;
                        kill(&self.worker);
                    } else {
                        *wake = Some(wake.map_or(grace, |w| w.min(grace)));
                    }
                    return false;
                }
            },
        };
        // As a stderr thread is given time to drain after the exit.
        let drained = reaped_at + STDERR_GRACE;
        if !self.stderr_ended && now < drained {
            *wake = Some(wake.map_or(drained, |w| w.min(drained)));
            return false;
        }
        let (ending, reaped) = (end.ending.take(), end.reaped.take());
        self.close();
        if let (Some(ending), Some((reaped, _))) = (ending, reaped) {
            let exit = ending.exit(&self.worker, reaped);
            self.shared.worker_exited(&self.worker, exit);
        }
        true
    }
}

impl Drop for Driven {
    /// Settled (or never served): a shutdown waits for no more of it.
    fn drop(&mut self) {
        self.shared.driven_done();
    }
}

impl Rider for Driven {
    fn poll(&mut self, output: Output) -> Polled {
        let Output {
            stdout,
            stdout_end,
            stderr,
            stderr_end,
        } = output;
        self.relay_stderr(&stderr, stderr_end);
        let mut progress = false;
        // Until its output ended (or broke the protocol).
        if self.end.is_none() {
            if !stdout.is_empty() {
                self.take_stdout(stdout);
                progress = true;
            }
            match self.read(stdout_end) {
                Ok(false) => {}
                Ok(true) => self.output_ended(),
                Err(e) => {
                    failed(&self.worker, &e);
                    self.output_ended();
                }
            }
        }
        let mut wake = self.write(&mut progress);
        let done = self.settle(&mut wake);
        Polled {
            done,
            progress: progress || done,
            wake,
        }
    }
}
