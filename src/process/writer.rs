//! A worker's writer thread: waits for its handshake, runs its
//! initializer, then sends it tasks from the pool's queue as its window
//! opens.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use crate::sync::MutexGuard;

use super::job::Job;
use super::link::{Fate, Link, Stage};
use super::protocol::ToWorker;
use super::shared::Shared;
use super::worker::{mark_io_thread, Worker};
use crate::task::ErasedTask;

/// Arguments larger than this are written straight from where they lie.
const BIG_PAYLOAD: usize = 64 * 1024;
/// Said of a worker that never started the protocol.
pub(crate) const INIT_HINT: &str = "does its main() call concurrent_futures::init() first?";

/// The frames of one batch: `buf` in order, with big arguments written
/// between its pieces.
struct Batch {
    buf: Vec<u8>,
    /// (offset in `buf`, argument) for each big argument.
    big: Vec<(usize, Arc<Vec<u8>>)>,
}

impl Batch {
    fn write(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut from = 0;
        for (at, arg) in self.big.drain(..) {
            out.write_all(&self.buf[from..at])?;
            out.write_all(&arg)?;
            from = at;
        }
        out.write_all(&self.buf[from..])?;
        self.buf.clear();
        Ok(())
    }
}

/// What a worker's writer keeps between batches: the tasks it declared
/// to the worker, and the batch buffer. The writer thread
/// ([`write_loop`]) and a host link's driver (`driven.rs`) both send
/// through it.
pub(crate) struct Sender {
    declared: HashMap<usize, u32>,
    batch: Batch,
}

impl Sender {
    pub(crate) fn new() -> Self {
        Sender {
            declared: HashMap::new(),
            batch: Batch {
                buf: Vec::with_capacity(64 * 1024),
                big: Vec::new(),
            },
        }
    }

    /// Sends the pool's initializer, if it has one; false if the worker's
    /// stdin failed.
    pub(crate) fn init(&mut self, shared: &Shared, out: &mut dyn Write) -> bool {
        let Some(init) = &shared.config.initializer else {
            return true;
        };
        let id = declare(&mut self.batch.buf, &mut self.declared, init.entry);
        ToWorker::Init { id, arg: &init.arg }
            .encode(&mut self.batch.buf)
            .is_ok()
            && self.batch.write(out).is_ok()
    }

    /// Sends recalls; false if the worker's stdin failed (its reader sees
    /// the exit and settles what it held).
    pub(crate) fn recalls(&mut self, seqs: Vec<u64>, out: &mut dyn Write) -> bool {
        for seq in seqs {
            // A fixed-size frame: it always encodes.
            let _ = ToWorker::Recall { seq }.encode(&mut self.batch.buf);
        }
        self.batch.write(out).is_ok()
    }

    /// Sends `jobs` (taken from the queue) to `worker`, or puts them back
    /// if it stopped taking tasks meanwhile; false if its stdin failed.
    pub(crate) fn jobs(
        &mut self,
        shared: &Arc<Shared>,
        worker: &Arc<Worker>,
        jobs: Vec<Job>,
        out: &mut dyn Write,
    ) -> bool {
        let now = Instant::now();
        let mut link = worker.link.lock();
        if link.stage != Stage::Ready {
            drop(link);
            shared.reroute(jobs.into_iter());
            return true;
        }
        let buf = &mut self.batch.buf;
        for mut job in jobs {
            // A task sent to an idle worker runs now; one sent behind
            // another is held, and pending until it starts.
            let holder = (!link.idle()).then_some(&worker.holder);
            if !job.claim(holder) {
                continue; // cancelled while queued
            }
            let seq = shared.next_seq();
            job.first_seq.get_or_insert(seq);
            let id = declare(buf, &mut self.declared, job.entry);
            let len = job.payload.bytes().len();
            ToWorker::Call {
                seq,
                id,
                chunk: job.items.is_some(),
                arg: &[],
            }
            .encode_call_header(buf, len);
            if len > BIG_PAYLOAD {
                self.batch.big.push((buf.len(), job.payload.share()));
            } else {
                buf.extend_from_slice(job.payload.bytes());
            }
            let limit = job.time_limit;
            if link.push(seq, job, now) {
                if let Some(limit) = limit {
                    shared.timer.schedule(now + limit, worker, seq, limit);
                }
            }
        }
        if shared
            .config
            .max_tasks_per_child
            .is_some_and(|max| link.sent >= max)
        {
            worker.set_stage(&mut link, Stage::Retiring);
        }
        drop(link);
        self.batch.write(out).is_ok()
    }
}

/// The writer thread of one worker. Returning closes the worker's stdin,
/// which tells it to finish what it holds and exit.
pub(crate) fn write_loop(shared: Arc<Shared>, worker: Arc<Worker>, mut out: Box<dyn Write + Send>) {
    mark_io_thread();
    if !await_handshake(&shared, &worker) {
        return;
    }
    let mut sender = Sender::new();
    if shared.config.initializer.is_some() {
        if !sender.init(&shared, &mut out) {
            return;
        }
        // No task goes out before the verdict: after a failed initializer
        // nothing may run (the pool is broken, as in Python).
        let mut link = worker.link.lock();
        while link.stage == Stage::Initializing {
            worker.cond.wait(&mut link);
        }
        if link.stage != Stage::Ready {
            return;
        }
    }
    let max_tasks = shared.config.max_tasks_per_child;
    loop {
        let left = match next_step(&shared, &worker, max_tasks) {
            Step::Close => return,
            Step::Recall(seqs) => {
                if !sender.recalls(seqs, &mut out) {
                    return;
                }
                continue;
            }
            Step::Send(left) => left,
        };
        let Some(jobs) = shared.take_jobs(&worker, left) else {
            // Shut down and nothing is queued: the worker finishes what it
            // holds (recalls may still go out), then its stdin closes.
            retire(&worker);
            continue;
        };
        if jobs.is_empty() {
            continue; // no room after all, or recalls to send
        }
        if !sender.jobs(&shared, &worker, jobs, &mut out) {
            return;
        }
    }
}

/// The pool shuts down and nothing is queued: `worker` takes no more.
pub(crate) fn retire(worker: &Worker) {
    let mut link = worker.link.lock();
    if link.stage == Stage::Ready {
        worker.set_stage(&mut link, Stage::Retiring);
    }
}

/// What a writer does next.
pub(crate) enum Step {
    /// Send these recalls.
    Recall(Vec<u64>),
    /// Take tasks from the queue (at most this many, if bounded).
    Send(Option<usize>),
    /// Close the worker's stdin: it finishes what it holds and exits (it
    /// retires or the pool shuts down), or it is gone.
    Close,
}

/// Waits until the worker has room, recalls are to be sent, or the writer
/// is done.
fn next_step(shared: &Shared, worker: &Worker, max_tasks: Option<usize>) -> Step {
    let mut link = worker.link.lock();
    loop {
        match poll_step(shared, worker, &mut link, max_tasks) {
            Ok(step) => return step,
            Err(Some(t)) => {
                worker.cond.wait_until(&mut link, t);
            }
            Err(None) => worker.cond.wait(&mut link),
        }
    }
}

/// What the writer of `worker` does next, if it can tell now; else when
/// to look again (`None`: when woken). A retiring worker's stdin stays
/// open until it answered all it holds, so that what waits behind its
/// running task can still be recalled.
pub(crate) fn poll_step(
    shared: &Shared,
    worker: &Worker,
    link: &mut MutexGuard<'_, Link>,
    max_tasks: Option<usize>,
) -> Result<Step, Option<Instant>> {
    let now = Instant::now();
    if link.stranded_at().is_some_and(|t| t <= now) {
        // What waits behind a task that ran long is recalled only when
        // another worker could start it sooner: with every worker busy, a
        // task queued in a pipe loses nothing, and fetching it back would
        // cost a round trip through the pool's threads, which wait for a
        // core while the workers hold every core. (Not the pool's lock
        // under a worker's: the pool's comes first.)
        let free = MutexGuard::unlocked(link, || shared.another_is_free(worker));
        if free {
            link.recall_stranded(Instant::now());
        }
    }
    if !link.to_send.is_empty() {
        return Ok(Step::Recall(std::mem::take(&mut link.to_send)));
    }
    match link.stage {
        Stage::Ready if link.room(now) > 0 => {
            return Ok(Step::Send(
                max_tasks.map(|max| max.saturating_sub(link.sent)),
            ));
        }
        Stage::Ready => {}
        Stage::Retiring if link.held.is_empty() => return Ok(Step::Close),
        Stage::Retiring => {}
        _ => return Ok(Step::Close),
    }
    // Stranded with no worker free: a worker that runs out of work wakes
    // us (`Shared::take_jobs`).
    Err(link.stranded_at().filter(|t| *t > now))
}

fn entry_key(entry: &'static dyn ErasedTask) -> usize {
    entry as *const dyn ErasedTask as *const () as usize
}

/// Appends a `Declare` the first time a task goes to this worker.
fn declare(
    buf: &mut Vec<u8>,
    declared: &mut HashMap<usize, u32>,
    entry: &'static dyn ErasedTask,
) -> u32 {
    let key = entry_key(entry);
    if let Some(id) = declared.get(&key) {
        return *id;
    }
    let id = declared.len() as u32;
    declared.insert(key, id);
    // Names are short: far below the frame limit.
    let _ = ToWorker::Declare {
        id,
        name: entry.name(),
        signature: entry.signature(),
    }
    .encode(buf);
    id
}

/// Waits for the reader to finish the handshake; kills a silent worker.
fn await_handshake(shared: &Shared, worker: &Worker) -> bool {
    // A timeout too long to represent means: wait as long as it takes.
    let deadline = Instant::now().checked_add(shared.config.handshake_timeout);
    let mut link = worker.link.lock();
    loop {
        match handshake_state(shared, worker, link, deadline) {
            Handshake::Waiting(guard) => {
                link = guard;
                match deadline {
                    Some(d) => {
                        worker.cond.wait_until(&mut link, d);
                    }
                    None => worker.cond.wait(&mut link),
                }
            }
            Handshake::Done => return true,
            Handshake::Failed => return false,
        }
    }
}

/// Where a worker's handshake stands, for its writer.
pub(crate) enum Handshake<'a> {
    /// Not yet: the lock, to wait on.
    Waiting(MutexGuard<'a, Link>),
    /// Done: send it work.
    Done,
    /// It ended, or was silent past `deadline` and is killed.
    Failed,
}

/// Looks at `worker`'s handshake (`link` is its lock); kills it if it is
/// still silent at `deadline`.
pub(crate) fn handshake_state<'a>(
    shared: &Shared,
    worker: &Worker,
    link: MutexGuard<'a, Link>,
    deadline: Option<Instant>,
) -> Handshake<'a> {
    match link.stage {
        Stage::Initializing | Stage::Ready => return Handshake::Done,
        Stage::Starting if deadline.map_or(true, |d| Instant::now() < d) => {
            return Handshake::Waiting(link);
        }
        Stage::Starting => {}
        Stage::Retiring | Stage::Gone => return Handshake::Failed,
    }
    drop(link);
    worker.stop(
        Fate::Failed(format!(
            "did not answer the handshake within {:?}: {INIT_HINT}",
            shared.config.handshake_timeout
        )),
        true,
    );
    Handshake::Failed
}
