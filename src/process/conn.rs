//! One worker process as the pool sees it: a writer thread that feeds it
//! tasks, a reader thread that completes their futures, and what happens
//! when it exits.
//!
//! # Flow control
//!
//! Each worker has a window of tasks in flight (sent, result not back). The
//! window adapts to how fast results come back: about 1 ms of work, between
//! [`MIN_WINDOW`] and [`MAX_WINDOW`] tasks. Tiny tasks are thus pipelined
//! and their frames batched into few writes, while slow tasks stay in the
//! shared queue where any idle worker (and `cancel`) can still reach them.

use std::collections::HashMap;
use std::io::Read;
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;

use super::launcher::{describe_exit, StderrTail};
use super::pool::Shared;
use super::protocol::{
    begin_frame, build_identity, decode_reply, decode_wire, end_frame, read_frame, skip_to_magic,
    Body, Reply, CALL, DECLARE, FLAG_CHUNK, HELLO, INIT, PROTOCOL_VERSION,
};
use crate::launch::WorkerProcess;
use crate::task::{decode, ErasedTask};
use crate::{Error, Promise};

/// Fewest tasks in flight per worker: one running, one waiting in the pipe.
pub(crate) const MIN_WINDOW: usize = 2;
/// Most tasks in flight per worker.
pub(crate) const MAX_WINDOW: usize = 512;
/// The work a window should hold, in time.
const WINDOW_TARGET: Duration = Duration::from_millis(1);
/// Payloads larger than this are written straight from the job.
const BIG_PAYLOAD: usize = 64 * 1024;
/// How long a worker that closed its output may take to exit.
const REAP_GRACE: Duration = Duration::from_secs(2);
/// Batches stop growing at this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// Said of a worker that never started the protocol.
const INIT_HINT: &str = "does its main() call concurrent_futures::init() first?";

/// The pool's side of a future: completes it from the wire.
pub(crate) trait Completion: Send {
    /// Marks the future running; false if it was cancelled (do not send).
    fn set_running(&self) -> bool;
    /// Completes the future from a worker's reply.
    fn finish(self: Box<Self>, reply: Result<&[u8], Error>);
    /// Never sent: cancel (`None`) or fail the future.
    fn abandon(self: Box<Self>, error: Option<Error>);
}

impl<R: DeserializeOwned + Send> Completion for Promise<R> {
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }

    fn finish(self: Box<Self>, reply: Result<&[u8], Error>) {
        let _ = self.complete(reply.and_then(decode::<R>));
    }

    fn abandon(self: Box<Self>, error: Option<Error>) {
        match error {
            None => {
                self.cancel();
            }
            Some(e) => {
                let _ = self.complete(Err(e));
            }
        }
    }
}

/// Counts a job as outstanding while it lives. Drop it before completing
/// the job's future: a caller woken by the completion may submit at once,
/// and a stale count would make the pool start a worker it does not need.
pub(crate) struct Ticket(pub(crate) Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A task waiting in the shared queue.
pub(crate) struct Job {
    pub(crate) entry: &'static dyn ErasedTask,
    pub(crate) chunk: bool,
    pub(crate) payload: Vec<u8>,
    pub(crate) completion: Box<dyn Completion>,
    pub(crate) ticket: Ticket,
}

impl Job {
    pub(crate) fn abandon(self, error: Option<Error>) {
        let Job {
            completion, ticket, ..
        } = self;
        drop(ticket);
        completion.abandon(error);
    }
}

/// The handshake's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    Waiting,
    Done,
    Failed,
}

/// What the writer and the reader of one worker share.
struct Link {
    handshake: Handshake,
    /// Sent tasks whose results have not come back, by sequence number.
    inflight: HashMap<u64, (Box<dyn Completion>, Ticket)>,
    window: usize,
    /// Smoothed time between results while busy, in nanoseconds.
    interval_ns: f64,
    last_result: Option<Instant>,
    sent: usize,
    /// Sent its last task (max_tasks_per_child); will exit when done.
    retiring: bool,
    /// The process is gone (or going); nothing more is sent.
    dead: bool,
    /// Why the pool ended this worker, for the error message.
    fate: Option<String>,
    /// The initializer's verdict (`true`: it succeeded), once judged.
    initialized: Option<bool>,
}

/// One worker process.
pub(crate) struct Worker {
    /// The worker's local pid, if it runs on this machine.
    pub(crate) pid: Option<u32>,
    /// Where it runs (`None`: here), for error messages.
    label: Option<String>,
    child: Mutex<Option<Box<dyn WorkerProcess>>>,
    /// The pid the worker gave in its handshake.
    remote_pid: Mutex<Option<u32>>,
    link: Mutex<Link>,
    cond: Condvar,
    tail: Arc<StderrTail>,
    /// `link.retiring || link.dead`, readable without the lock.
    leaving: std::sync::atomic::AtomicBool,
    /// Copies the worker's stderr; joined once the worker is gone.
    stderr_thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropped when the worker dies, waking its writer.
    stop: Mutex<Option<Sender<()>>>,
}

impl Worker {
    pub(crate) fn new(
        child: Box<dyn WorkerProcess>,
        label: Option<String>,
        tail: Arc<StderrTail>,
        stderr_thread: Option<JoinHandle<()>>,
    ) -> (Arc<Worker>, Receiver<()>) {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let worker = Arc::new(Worker {
            pid: child.pid(),
            label,
            child: Mutex::new(Some(child)),
            remote_pid: Mutex::new(None),
            link: Mutex::new(Link {
                handshake: Handshake::Waiting,
                inflight: HashMap::new(),
                window: MIN_WINDOW,
                interval_ns: 0.0,
                last_result: None,
                sent: 0,
                retiring: false,
                dead: false,
                fate: None,
                initialized: None,
            }),
            cond: Condvar::new(),
            tail,
            leaving: std::sync::atomic::AtomicBool::new(false),
            stderr_thread: Mutex::new(stderr_thread),
            stop: Mutex::new(Some(stop_tx)),
        });
        (worker, stop_rx)
    }

    /// The pool could not start this worker's threads: stop its writer if
    /// it runs, and kill and reap the process.
    pub(crate) fn abandon_start(&self) {
        self.link.lock().dead = true;
        self.leave();
        self.cond.notify_all();
        self.stop.lock().take();
        if let Some(mut child) = self.child.lock().take() {
            let _ = child.kill();
            wait_blocking(child.as_mut());
        }
        self.settle_stderr();
    }

    /// Lets the stderr forwarder drain (at most 200 ms) and joins it; if
    /// something still holds the pipe (a grandchild that inherited it), the
    /// thread is left to end on its own rather than hold up the pool.
    fn settle_stderr(&self) {
        let closed = self.tail.wait_closed(Duration::from_millis(200));
        let handle = self.stderr_thread.lock().take();
        if let (true, Some(h)) = (closed, handle) {
            let _ = h.join();
        }
    }

    /// "worker process 4242" (its pid here, or as it said in its
    /// handshake), with " on node1" for a worker elsewhere.
    pub(crate) fn name(&self) -> String {
        let pid = self
            .pid
            .or(*self.remote_pid.lock())
            .map_or_else(|| "?".to_string(), |p| p.to_string());
        match &self.label {
            Some(l) => format!("worker process {pid} on {l}"),
            None => format!("worker process {pid}"),
        }
    }

    /// True once it took its last task (max_tasks_per_child).
    pub(crate) fn retiring(&self) -> bool {
        // Read on every submit: an atomic, not the link's lock, which the
        // writer and reader take all the time.
        self.leaving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the worker as taking no more tasks (retiring or dead); called
    /// with the link's lock held, next to the flag it mirrors.
    fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Sends a signal, recording why for the error message.
    pub(crate) fn signal(&self, fate: &str, kill: bool) {
        {
            let mut link = self.link.lock();
            if link.fate.is_none() {
                link.fate = Some(fate.to_string());
            }
        }
        let mut child = self.child.lock();
        if let Some(c) = child.as_mut() {
            let _ = if kill { c.kill() } else { c.terminate() };
        }
    }
}

/// The writer thread: handshake wait, initializer, then batches of tasks.
pub(crate) fn write_loop(
    shared: Arc<Shared>,
    worker: Arc<Worker>,
    stdin: Box<dyn Write + Send>,
    stop: Receiver<()>,
) {
    let mut out = stdin;
    if !await_handshake(&shared, &worker) {
        return;
    }
    let mut declared: HashMap<usize, u32> = HashMap::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    if let Some(init) = &shared.config.initializer {
        declare(&mut buf, &mut declared, init.entry);
        let start = begin_frame(&mut buf, INIT);
        buf.extend_from_slice(&declared[&entry_key(init.entry)].to_le_bytes());
        buf.extend_from_slice(&init.arg);
        if end_frame(&mut buf, start).is_err() || out.write_all(&buf).is_err() {
            return;
        }
        buf.clear();
        // No task goes out before the verdict: after a failed initializer
        // nothing may run (the pool is broken, as in Python).
        let mut link = worker.link.lock();
        while link.initialized.is_none() && !link.dead {
            worker.cond.wait(&mut link);
        }
        if link.dead || link.initialized != Some(true) {
            return;
        }
    }
    let max_tasks = shared.config.max_tasks_per_child;
    loop {
        // Wait for room in the window.
        let room = {
            let mut link = worker.link.lock();
            while !link.dead && link.inflight.len() >= link.window {
                worker.cond.wait(&mut link);
            }
            if link.dead {
                return;
            }
            let mut room = link.window - link.inflight.len();
            if let Some(max) = max_tasks {
                room = room.min(max - link.sent);
            }
            room
        };
        let first = select! {
            recv(shared.jobs) -> job => match job {
                Ok(job) => job,
                Err(_) => return, // shut down and drained
            },
            recv(stop) -> _ => return,
        };
        let mut batch = vec![first];
        let mut bytes = batch[0].payload.len();
        while batch.len() < room && bytes < BATCH_BYTES {
            match shared.jobs.try_recv() {
                Ok(job) => {
                    bytes += job.payload.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        // Register under the lock, write without it.
        let mut to_write = Vec::with_capacity(batch.len());
        let retire;
        {
            let mut link = worker.link.lock();
            if link.dead {
                drop(link);
                shared.reroute(batch);
                return;
            }
            for job in batch {
                if !job.completion.set_running() {
                    continue; // cancelled while queued
                }
                let seq = shared.next_seq();
                let id = declare(&mut buf, &mut declared, job.entry);
                link.inflight.insert(seq, (job.completion, job.ticket));
                link.sent += 1;
                to_write.push((seq, id, job.chunk, job.payload));
            }
            retire = max_tasks.is_some_and(|max| link.sent >= max);
            if retire {
                link.retiring = true;
                worker.leave();
            }
        }
        for (seq, id, chunk, payload) in to_write {
            let start = begin_frame(&mut buf, CALL);
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&id.to_le_bytes());
            buf.push(if chunk { FLAG_CHUNK } else { 0 });
            let len = buf.len() - start - 4 + payload.len();
            buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
            if payload.len() > BIG_PAYLOAD {
                if out.write_all(&buf).is_err() || out.write_all(&payload).is_err() {
                    return;
                }
                buf.clear();
            } else {
                buf.extend_from_slice(&payload);
            }
        }
        if !buf.is_empty() {
            if out.write_all(&buf).is_err() {
                return; // the reader sees the exit and fails what is in flight
            }
            buf.clear();
        }
        if retire {
            return; // closing stdin lets the worker finish and exit
        }
    }
}

fn entry_key(entry: &'static dyn ErasedTask) -> usize {
    entry as *const dyn ErasedTask as *const () as usize
}

/// Appends a DECLARE frame the first time a task goes to this worker.
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
    let start = begin_frame(buf, DECLARE);
    buf.extend_from_slice(&id.to_le_bytes());
    if let Ok(body) = postcard::to_stdvec(&(entry.name(), entry.signature())) {
        buf.extend_from_slice(&body);
    }
    // Names are short; the frame is far below the limit.
    let _ = end_frame(buf, start);
    id
}

/// Waits for the reader to finish the handshake; kills a silent worker.
fn await_handshake(shared: &Shared, worker: &Worker) -> bool {
    // A timeout too long to represent means: wait as long as it takes.
    let deadline = Instant::now().checked_add(shared.config.handshake_timeout);
    let mut link = worker.link.lock();
    while link.handshake == Handshake::Waiting && !link.dead {
        match deadline {
            Some(d) => {
                if worker.cond.wait_until(&mut link, d).timed_out() {
                    break;
                }
            }
            None => worker.cond.wait(&mut link),
        }
    }
    if link.handshake == Handshake::Done && !link.dead {
        return true;
    }
    let silent = link.handshake == Handshake::Waiting;
    drop(link);
    if silent {
        worker.signal(
            &format!(
                "did not answer the handshake within {:?}: {INIT_HINT}",
                shared.config.handshake_timeout
            ),
            true,
        );
    }
    false
}

/// The reader thread: handshake, then results until the worker exits.
pub(crate) fn read_loop(shared: Arc<Shared>, worker: Arc<Worker>, stdout: Box<dyn Read + Send>) {
    read_until_exit(&shared, &worker, stdout);
    on_exit(&shared, &worker);
}

fn read_until_exit(shared: &Shared, worker: &Worker, stdout: Box<dyn Read + Send>) {
    let mut r = BufReader::with_capacity(256 * 1024, stdout);
    let outcome = handshake(&mut r).and_then(|pid| {
        *worker.remote_pid.lock() = Some(pid);
        {
            let mut link = worker.link.lock();
            link.handshake = Handshake::Done;
        }
        worker.cond.notify_all();
        read_results(shared, worker, &mut r)
    });
    if let Err(e) = &outcome {
        let mut link = worker.link.lock();
        if link.handshake == Handshake::Waiting {
            link.handshake = Handshake::Failed;
        }
        if link.fate.is_none() {
            link.fate = Some(e.to_string());
        }
        drop(link);
        // A worker that broke the protocol may still be running.
        worker.signal("broke the protocol", true);
    }
}

/// Reads the worker's handshake; generic so that the fuzz targets can run it.
pub(crate) fn handshake(r: &mut impl BufRead) -> Result<u32, Error> {
    // A worker whose main() does not start with init() runs the program
    // instead: it exits (often refused a pool of its own) or prints.
    skip_to_magic(r).map_err(|e| match e {
        Error::Protocol(detail) => Error::Protocol(format!("{detail}: {INIT_HINT}")),
        other => other,
    })?;
    let frame = read_frame(r)?.ok_or_else(|| {
        Error::Protocol("the worker closed its output during the handshake".into())
    })?;
    if frame.kind != HELLO {
        return Err(Error::Protocol(format!(
            "expected the handshake, got frame kind {:#x}",
            frame.kind
        )));
    }
    let mut body = Body::new(&frame.body);
    let version = body.u32("protocol version")?;
    if version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "the worker speaks protocol version {version}, this pool {PROTOCOL_VERSION}"
        )));
    }
    let pid = body.u32("pid")?;
    let build: String = decode_wire(body.rest(), "build identity")?;
    let ours = build_identity();
    if build != ours {
        return Err(Error::Protocol(format!(
            "the worker is another build ({build}); this pool is {ours}"
        )));
    }
    Ok(pid)
}

fn read_results(shared: &Shared, worker: &Worker, r: &mut impl BufRead) -> Result<(), Error> {
    while let Some(frame) = read_frame(r)? {
        match decode_reply(&frame)? {
            Reply::Result { seq, outcome } => {
                let entry = {
                    let mut link = worker.link.lock();
                    let entry = link.inflight.remove(&seq);
                    adapt_window(&mut link);
                    entry
                };
                worker.cond.notify_all();
                let Some((completion, ticket)) = entry else {
                    return Err(Error::Protocol(format!("a result for unknown task {seq}")));
                };
                drop(ticket);
                completion.finish(outcome);
            }
            Reply::InitDone(outcome) => {
                let verdict = match outcome {
                    Ok(bytes) => match &shared.config.initializer {
                        Some(init) => (init.judge)(bytes),
                        None => Ok(()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                let succeeded = verdict.is_ok();
                if let Err(why) = verdict {
                    shared.break_pool(format!("the initializer failed: {why}"));
                }
                worker.link.lock().initialized = Some(succeeded);
                worker.cond.notify_all();
            }
        }
    }
    Ok(())
}

/// Sizes the window to about [`WINDOW_TARGET`] of work.
fn adapt_window(link: &mut Link) {
    let now = Instant::now();
    if let Some(last) = link.last_result {
        let dt = now.duration_since(last).as_nanos() as f64;
        link.interval_ns = if link.interval_ns == 0.0 {
            dt
        } else {
            0.8 * link.interval_ns + 0.2 * dt
        };
        let fit = WINDOW_TARGET.as_nanos() as f64 / link.interval_ns.max(1.0);
        link.window = (fit as usize).clamp(MIN_WINDOW, MAX_WINDOW);
    }
    if link.inflight.is_empty() {
        // Idle: the next burst may be of other tasks; learn it afresh.
        link.last_result = None;
        link.interval_ns = 0.0;
        link.window = MIN_WINDOW;
    } else {
        link.last_result = Some(now);
    }
}

/// The worker's output ended: reap it, and fail what it held.
///
/// A worker that never became ready (no handshake, or its initializer did
/// not finish) breaks the pool even under `restart_workers`: a replacement
/// would fail the same way, so restarting would start processes without
/// end while the queued futures, and a waiting `shutdown`, never finish.
fn on_exit(shared: &Arc<Shared>, worker: &Worker) {
    let (inflight, fate, retiring, stage) = {
        let mut link = worker.link.lock();
        link.dead = true;
        worker.leave();
        let stage = if link.handshake != Handshake::Done {
            Some("")
        } else if shared.config.initializer.is_some() && link.initialized.is_none() {
            Some("the initializer failed: ")
        } else {
            None
        };
        (
            std::mem::take(&mut link.inflight),
            link.fate.take(),
            link.retiring,
            stage,
        )
    };
    worker.cond.notify_all();
    worker.stop.lock().take();
    let (exit, lingered) = reap(worker);
    worker.settle_stderr();
    let fate = match fate {
        None if lingered => Some(format!(
            "it closed its output but did not exit within {REAP_GRACE:?}"
        )),
        fate => fate,
    };
    let clean = exit.is_some_and(|s| s.success()) && inflight.is_empty() && fate.is_none();
    if clean && (retiring || shared.is_closing()) {
        shared.worker_gone(worker, None, true);
        return;
    }
    let how = exit.map_or_else(|| "ended".to_string(), describe_exit);
    let mut reason = format!("{}{} {how}", stage.unwrap_or(""), worker.name());
    if let Some(f) = fate {
        reason.push_str(&format!(" ({f})"));
    }
    if !inflight.is_empty() {
        reason.push_str(&format!(" while running {} task(s)", inflight.len()));
    }
    reason.push_str(&worker.tail.quote());
    let error = shared.worker_gone(worker, Some(reason), stage.is_none());
    for (_, (completion, ticket)) in inflight {
        drop(ticket);
        completion.finish(Err(error.clone()));
    }
}

/// Waits for the worker process to exit; one that closed its output but
/// lingers is killed after a grace period (then the flag is true). No
/// zombie is left behind.
fn reap(worker: &Worker) -> (Option<std::process::ExitStatus>, bool) {
    let deadline = Instant::now() + REAP_GRACE;
    let mut pause = Duration::from_micros(100);
    loop {
        let mut guard = worker.child.lock();
        let Some(child) = guard.as_mut() else {
            return (None, false);
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                *guard = None;
                return (Some(status), false);
            }
            Ok(None) if Instant::now() < deadline => {}
            Ok(None) => {
                let _ = child.kill();
                let status = wait_blocking(child.as_mut());
                *guard = None;
                return (status, true);
            }
            Err(_) => {
                *guard = None;
                return (None, false);
            }
        }
        drop(guard);
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Waits for a killed worker to be reaped.
fn wait_blocking(process: &mut dyn WorkerProcess) -> Option<std::process::ExitStatus> {
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
