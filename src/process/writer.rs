//! A worker's writer thread: waits for its handshake, runs its
//! initializer, then sends it tasks from the pool's queue as its window
//! opens.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::MutexGuard;

use super::link::{Fate, Stage};
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

/// The writer thread of one worker. Returning closes the worker's stdin,
/// which tells it to finish what it holds and exit.
pub(crate) fn write_loop(shared: Arc<Shared>, worker: Arc<Worker>, mut out: Box<dyn Write + Send>) {
    mark_io_thread();
    if !await_handshake(&shared, &worker) {
        return;
    }
    let mut declared: HashMap<usize, u32> = HashMap::new();
    let mut batch = Batch {
        buf: Vec::with_capacity(64 * 1024),
        big: Vec::new(),
    };
    if let Some(init) = &shared.config.initializer {
        let id = declare(&mut batch.buf, &mut declared, init.entry);
        let sent = ToWorker::Init { id, arg: &init.arg }
            .encode(&mut batch.buf)
            .is_ok()
            && batch.write(&mut out).is_ok();
        if !sent {
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
                for seq in seqs {
                    // A fixed-size frame: it always encodes.
                    let _ = ToWorker::Recall { seq }.encode(&mut batch.buf);
                }
                if batch.write(&mut out).is_err() {
                    return; // the reader sees the exit and settles what it held
                }
                continue;
            }
            Step::Send(left) => left,
        };
        let Some(jobs) = shared.take_jobs(&worker, left) else {
            // Shut down and nothing is queued: the worker finishes what it
            // holds (recalls may still go out), then its stdin closes.
            let mut link = worker.link.lock();
            if link.stage == Stage::Ready {
                worker.set_stage(&mut link, Stage::Retiring);
            }
            continue;
        };
        if jobs.is_empty() {
            continue; // no room after all, or recalls to send
        }
        let now = Instant::now();
        let mut link = worker.link.lock();
        if link.stage != Stage::Ready {
            drop(link);
            shared.reroute(jobs.into_iter());
            continue;
        }
        for mut job in jobs {
            // A task sent to an idle worker runs now; one sent behind
            // another is held, and pending until it starts.
            let holder = (!link.idle()).then_some(&worker.holder);
            if !job.claim(holder) {
                continue; // cancelled while queued
            }
            let seq = shared.next_seq();
            job.first_seq.get_or_insert(seq);
            let id = declare(&mut batch.buf, &mut declared, job.entry);
            let len = job.payload.bytes().len();
            ToWorker::Call {
                seq,
                id,
                chunk: job.items.is_some(),
                arg: &[],
            }
            .encode_call_header(&mut batch.buf, len);
            if len > BIG_PAYLOAD {
                batch.big.push((batch.buf.len(), job.payload.share()));
            } else {
                batch.buf.extend_from_slice(job.payload.bytes());
            }
            let limit = job.time_limit;
            if link.push(seq, job, now) {
                if let Some(limit) = limit {
                    shared.timer.schedule(now + limit, &worker, seq, limit);
                }
            }
        }
        if max_tasks.is_some_and(|max| link.sent >= max) {
            worker.set_stage(&mut link, Stage::Retiring);
        }
        drop(link);
        if batch.write(&mut out).is_err() {
            return;
        }
    }
}

/// What a writer does next.
enum Step {
    /// Send these recalls.
    Recall(Vec<u64>),
    /// Take tasks from the queue (at most this many, if bounded).
    Send(Option<usize>),
    /// Close the worker's stdin: it finishes what it holds and exits (it
    /// retires or the pool shuts down), or it is gone.
    Close,
}

/// Waits until the worker has room, recalls are to be sent, or the writer
/// is done. A retiring worker's stdin stays open until it answered all it
/// holds, so that what waits behind its running task can still be recalled.
fn next_step(shared: &Shared, worker: &Worker, max_tasks: Option<usize>) -> Step {
    let mut link = worker.link.lock();
    loop {
        let now = Instant::now();
        if link.stranded_at().is_some_and(|t| t <= now) {
            // What waits behind a task that ran long is recalled only when
            // another worker could start it sooner: with every worker busy,
            // a task queued in a pipe loses nothing, and fetching it back
            // would cost a round trip through the pool's threads, which
            // wait for a core while the workers hold every core. (Not the
            // pool's lock under a worker's: the pool's comes first.)
            let free = MutexGuard::unlocked(&mut link, || shared.another_is_free(worker));
            if free {
                link.recall_stranded(Instant::now());
            }
        }
        if !link.to_send.is_empty() {
            return Step::Recall(std::mem::take(&mut link.to_send));
        }
        match link.stage {
            Stage::Ready if link.room(now) > 0 => {
                return Step::Send(max_tasks.map(|max| max.saturating_sub(link.sent)));
            }
            Stage::Ready => {}
            Stage::Retiring if link.held.is_empty() => return Step::Close,
            Stage::Retiring => {}
            _ => return Step::Close,
        }
        // Stranded with no worker free: a worker that runs out of work
        // wakes us (`Shared::take_jobs`).
        match link.stranded_at().filter(|t| *t > now) {
            Some(t) => {
                worker.cond.wait_until(&mut link, t);
            }
            None => worker.cond.wait(&mut link),
        }
    }
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
    while link.stage == Stage::Starting {
        match deadline {
            Some(d) => {
                if worker.cond.wait_until(&mut link, d).timed_out() {
                    break;
                }
            }
            None => worker.cond.wait(&mut link),
        }
    }
    if matches!(link.stage, Stage::Initializing | Stage::Ready) {
        return true;
    }
    let silent = link.stage == Stage::Starting;
    drop(link);
    if silent {
        worker.stop(
            Fate::Failed(format!(
                "did not answer the handshake within {:?}: {INIT_HINT}",
                shared.config.handshake_timeout
            )),
            true,
        );
    }
    false
}
