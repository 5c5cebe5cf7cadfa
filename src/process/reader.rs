//! A worker's reader thread: reads its handshake and answers, completes
//! their futures, and when the output ends reaps the worker and reports
//! one [`Exit`] to the pool, which decides what happens next.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::Frame;
use super::link::Sent;
use super::link::{Fate, Stage};
use super::protocol::{build_identity, read_frame, skip_to_magic, FromWorker, PROTOCOL_VERSION};
use super::shared::{Exit, Shared};
use super::worker::{mark_io_thread, Worker};
use super::writer::INIT_HINT;
use crate::Error;

/// How long a worker that closed its output may take to exit.
pub(crate) const REAP_GRACE: Duration = Duration::from_secs(2);

/// The reader thread of one worker.
pub(crate) fn read_loop(shared: Arc<Shared>, worker: Arc<Worker>, stdout: Box<dyn Read + Send>) {
    mark_io_thread();
    let outcome = read_until_exit(&shared, &worker, stdout);
    if let Err(e) = outcome {
        failed(&worker, &e);
    }
    let ending = Ending::begin(&worker);
    let reaped = reap(&worker);
    worker.settle_stderr();
    shared.worker_exited(&worker, ending.exit(&worker, reaped));
}

/// The worker's output broke the protocol: it is stopped. Recorded unless
/// the pool already ended it (a kill makes the stream end mid-frame); a
/// worker that broke the protocol may still be running.
pub(crate) fn failed(worker: &Worker, e: &Error) {
    worker.stop(Fate::Failed(e.to_string()), true);
}

fn read_until_exit(
    shared: &Arc<Shared>,
    worker: &Arc<Worker>,
    stdout: Box<dyn Read + Send>,
) -> Result<(), Error> {
    let mut r = BufReader::with_capacity(256 * 1024, stdout);
    let pid = handshake(&mut r, "worker")?;
    greeted(shared, worker, pid);
    while let Some(frame) = read_frame(&mut r)? {
        on_frame(shared, worker, &frame)?;
    }
    Ok(())
}

/// The worker answered the handshake with `pid`.
pub(crate) fn greeted(shared: &Shared, worker: &Worker, pid: u32) {
    let next = if shared.config.initializer.is_some() {
        Stage::Initializing
    } else {
        Stage::Ready
    };
    {
        let mut link = worker.link.lock();
        link.hello_pid = Some(pid);
        worker.set_stage(&mut link, next);
    }
    tracing::info!(target: "concurrent_futures", host = super::shared::host_of(worker), pid, "worker started");
    if next == Stage::Ready {
        // Not under the link's lock: the pool's lock comes first.
        shared.worker_ready();
    }
}

/// One frame from the worker after its handshake: an answer, a recall's
/// answer or the initializer's verdict.
///
/// # Errors
///
/// [`Error::Protocol`] for a frame the worker may not send now.
pub(crate) fn on_frame(
    shared: &Arc<Shared>,
    worker: &Arc<Worker>,
    frame: &Frame,
) -> Result<(), Error> {
    match FromWorker::decode(frame)? {
        FromWorker::Hello { .. } => {
            return Err(Error::Protocol("a second handshake".to_string()));
        }
        FromWorker::Result {
            seq,
            run_ns,
            outcome,
        } => {
            let now = Instant::now();
            let (done, next) = {
                let mut link = worker.link.lock();
                let Some(done) = link.pop(seq, run_ns, now) else {
                    let known = link.held.iter().any(|s| s.seq == seq);
                    return Err(Error::Protocol(match link.held.front() {
                        Some(front) if known => format!(
                            "a result for task {seq} out of order (expected task {})",
                            front.seq
                        ),
                        _ => format!("a result for unknown task {seq}"),
                    }));
                };
                worker.notify();
                (done, link.front_limit())
            };
            if let (Some(limit), Some(start)) = (done.job.time_limit, done.started_at) {
                shared.timer.cancel(start + limit, done.seq);
            }
            if let Some((seq, limit, start)) = next {
                shared.timer.schedule(start + limit, worker, seq, limit);
            }
            shared.answered(worker);
            done.job.finish(outcome);
        }
        FromWorker::Recalled { seq, given_back } => {
            let recalled = {
                let mut link = worker.link.lock();
                let recalled = link.recalled(seq, given_back, Instant::now())?;
                worker.notify();
                recalled
            };
            if let Some((seq, limit, start)) = recalled.now_running {
                shared.timer.schedule(start + limit, worker, seq, limit);
            }
            let cancel = recalled.cancelled.is_some();
            let requeued = recalled.requeue.is_some();
            if cancel || requeued {
                shared.recalled(recalled.cancelled, recalled.requeue);
                worker.given_back(cancel, requeued);
            }
        }
        FromWorker::InitDone(outcome) => {
            let verdict = match outcome {
                Ok(bytes) => match &shared.config.initializer {
                    Some(init) => (init.judge)(bytes),
                    None => Ok(()),
                },
                Err(e) => Err(e.to_string()),
            };
            let failed = verdict.as_ref().err().cloned();
            {
                let mut link = worker.link.lock();
                if link.stage == Stage::Initializing {
                    let next = if failed.is_some() {
                        Stage::Retiring
                    } else {
                        Stage::Ready
                    };
                    worker.set_stage(&mut link, next);
                }
            }
            match failed {
                Some(why) => shared.break_pool(format!("the initializer failed: {why}")),
                None => shared.worker_ready(),
            }
        }
    }
    Ok(())
}

/// Reads the handshake of a `peer` ("worker", "agent on node1"); returns
/// the pid it gave. Generic so that the fuzz targets can run it.
pub(crate) fn handshake(r: &mut impl BufRead, peer: &str) -> Result<u32, Error> {
    // A worker whose main() does not start with init() runs the program
    // instead: it exits (often refused a pool of its own) or prints.
    skip_to_magic(r).map_err(|e| match e {
        Error::Protocol(detail) => Error::Protocol(format!("{detail}: {INIT_HINT}")),
        other => other,
    })?;
    let frame = read_frame(r)?.ok_or_else(|| closed_in_handshake(peer))?;
    check_hello(&frame, peer)
}

/// A `peer` that sent the magic but closed its output before its
/// handshake frame.
pub(crate) fn closed_in_handshake(peer: &str) -> Error {
    Error::Protocol(format!("the {peer} closed its output during the handshake"))
}

/// The pid in a `peer`'s handshake frame, if it speaks this build's
/// protocol.
///
/// # Errors
///
/// [`Error::Protocol`] for another frame, another version or build.
pub(crate) fn check_hello(frame: &Frame, peer: &str) -> Result<u32, Error> {
    let FromWorker::Hello {
        version,
        pid,
        build,
    } = FromWorker::decode_hello(frame)?
    else {
        return Err(Error::Protocol("expected the handshake".to_string()));
    };
    if version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "the {peer} speaks protocol version {version}, this pool {PROTOCOL_VERSION}"
        )));
    }
    let ours = build_identity();
    if build != ours {
        return Err(Error::Protocol(format!(
            "the {peer} is another build ({build}); this pool is {ours}"
        )));
    }
    Ok(pid)
}

/// What a worker held when its output ended, until it is reaped.
pub(crate) struct Ending {
    held: VecDeque<Sent>,
    fate: Option<Fate>,
    was: Stage,
}

impl Ending {
    /// The worker's output ended: it is gone, and what it held is taken.
    pub(crate) fn begin(worker: &Worker) -> Ending {
        let mut link = worker.link.lock();
        let was = link.stage;
        worker.set_stage(&mut link, Stage::Gone);
        Ending {
            held: std::mem::take(&mut link.held),
            fate: link.fate.take(),
            was,
        }
    }

    /// Its end, described for the pool, once it is `reaped`.
    pub(crate) fn exit(self, worker: &Worker, reaped: Reaped) -> Exit {
        let Ending { held, fate, was } = self;
        let Reaped {
            status,
            how,
            lingered,
            lost,
        } = reaped;
        let fate = match fate {
            None if lingered => Some(Fate::Failed(format!(
                "it closed its output but did not exit within {REAP_GRACE:?}"
            ))),
            fate => fate,
        };
        let clean = status.is_some_and(|s| s.success()) && held.is_empty() && fate.is_none();
        // Only a pool with an initializer has workers in `Initializing`.
        let stage = if was == Stage::Initializing {
            "the initializer failed: "
        } else {
            ""
        };
        let how = how.unwrap_or_else(|| "ended".to_string());
        let mut reason = format!("{stage}{} {how}", worker.name());
        match &fate {
            Some(Fate::Stopped(why) | Fate::Failed(why)) => {
                let _ = write!(reason, " ({why})");
            }
            Some(Fate::TimeLimit { limit, .. }) => {
                let _ = write!(reason, " (its task ran past the time limit of {limit:?})");
            }
            None => {}
        }
        let tail = worker.tail.quote();
        let others = match held.front() {
            Some(front) => format!(
                "{reason} while running another task ({}){tail}",
                front.job.place
            ),
            None => format!("{reason}{tail}"),
        };
        if !held.is_empty() {
            reason.push_str(" while running a task");
        }
        reason.push_str(&tail);
        Exit {
            held,
            fate,
            was,
            clean,
            reason,
            others,
            status: how,
            lost,
        }
    }
}

/// How a worker process ended, as [`reap`] found it.
pub(crate) struct Reaped {
    status: Option<ExitStatus>,
    /// Its launcher's words for it.
    how: Option<String>,
    /// It closed its output but lingered, and was killed.
    lingered: bool,
    /// The link to its host died first.
    lost: bool,
}

/// Waits for the worker process to exit; one that closed its output but
/// lingers is killed after [`REAP_GRACE`]. No zombie is left behind.
fn reap(worker: &Worker) -> Reaped {
    let deadline = Instant::now() + REAP_GRACE;
    let mut pause = Duration::from_micros(100);
    let mut lingered = false;
    loop {
        if let Some(reaped) = try_reap(worker, lingered) {
            return reaped;
        }
        if !lingered && Instant::now() >= deadline {
            lingered = true;
            kill(worker);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kills a worker that closed its output but lingers past [`REAP_GRACE`].
pub(crate) fn kill(worker: &Worker) {
    if let Some(process) = worker.process.lock().as_mut() {
        let _ = process.kill();
    }
}

/// The worker's end if it has exited (it is reaped then, and its handle
/// dropped), with how it ended; `None` while it runs. `lingered`: it was
/// killed for lingering.
pub(crate) fn try_reap(worker: &Worker, lingered: bool) -> Option<Reaped> {
    let mut guard = worker.process.lock();
    let Some(process) = guard.as_mut() else {
        return Some(Reaped {
            status: None,
            how: None,
            lingered,
            lost: false,
        });
    };
    let reaped = match process.try_wait() {
        Ok(Some(status)) => Reaped {
            status: Some(status),
            how: Some(process.describe_exit(status)),
            lingered,
            lost: process.host_lost().is_some(),
        },
        Ok(None) => return None,
        Err(_) => Reaped {
            status: None,
            how: None,
            lingered,
            lost: false,
        },
    };
    // Dropped outside the lock: a handle may say goodbye to its launcher.
    let process = guard.take();
    drop(guard);
    drop(process);
    Some(reaped)
}
