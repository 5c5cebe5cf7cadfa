//! loom models of a writer's wake-up in the process pool's queue: a writer
//! that waits in [`Shared::take_jobs`] because its worker holds a task
//! (another worker is free, so a busy one takes nothing) must be woken
//! when the reader takes the answer off that task ([`Shared::answered`]):
//! its worker is then free and its share of the queue grows. The same for
//! a host link's driver, which polls ([`Shared::poll_jobs`]) and waits for
//! its bell instead. loom runs every interleaving of the writer's look at
//! the queue and the reader's answer, and reports a writer nobody wakes as
//! a deadlock.
//!
//! Built only with `--cfg loom` (the pool's queue and the workers' links
//! use `crate::sync`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib loom_model -- --nocapture
//! ```

use std::io;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loom::thread;

use super::bell::Bell;
use super::builder::Config;
use super::dispatch::Take;
use super::job::{Job, Payload, Place, Ticket};
use super::launcher::StderrTail;
use super::link::Stage;
use super::shared::Shared;
use super::worker::Worker;
use crate::launch::{Local, WorkerProcess, WorkerSpec};
use crate::stats::Counters;
use crate::task::ErasedTask;
use crate::{Error, Promise};

/// A task that is never run: the model only moves jobs around.
struct Nothing;

impl ErasedTask for Nothing {
    fn name(&self) -> String {
        "nothing".to_string()
    }
    fn signature(&self) -> String {
        String::new()
    }
    fn invoke(&self, _arg: &[u8], _out: &mut Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
    fn invoke_chunk(&self, _args: &[u8], _out: &mut Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
}

static NOTHING: Nothing = Nothing;

/// A worker process that never ends: the model has no processes.
#[derive(Debug)]
struct NoProcess;

impl WorkerProcess for NoProcess {
    fn kill(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        Ok(None)
    }
}

fn config() -> Config {
    Config {
        max_workers: 2,
        max_tasks_per_child: None,
        initializer: None,
        launcher: Arc::new(Local::new()),
        spec: WorkerSpec::new(),
        handshake_timeout: Duration::from_secs(10),
        restart_workers: false,
        task_time_limit: None,
        task_retries: 0,
        launch_apart: false,
    }
}

fn job(counters: &Arc<Counters>, n: u64) -> Job {
    let (promise, _future) = Promise::<u64>::holdable();
    Job {
        entry: &NOTHING,
        items: None,
        payload: Payload::Inline(Vec::new()),
        time_limit: None,
        completion: Box::new(promise),
        ticket: Ticket::new(counters),
        first_seq: None,
        retries_left: 0,
        tries: Vec::new(),
        place: Place::Submit(n),
    }
}

fn worker(bell: Option<Arc<Bell>>) -> Arc<Worker> {
    Worker::new(
        Box::new(NoProcess),
        None,
        Arc::new(StderrTail::default()),
        None,
        bell,
    )
}

/// How the model's writer waits for work.
#[derive(Clone, Copy)]
enum Writer {
    /// A worker's writer thread: `take_jobs`.
    Thread,
    /// A host link's driver: `poll_jobs`, then its bell.
    Driver,
}

/// Runs the model for `writer`: a busy worker's writer waits for the one
/// queued job while another worker starts; the reader answers its task.
fn model(name: &str, writer: Writer) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    loom::model(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(config(), |_| {}));
        let bell = matches!(writer, Writer::Driver).then(|| Arc::new(Bell::default()));
        if let Some(bell) = &bell {
            shared.add_bell(bell);
        }
        let (busy, starting) = (worker(bell.clone()), worker(None));
        {
            let mut link = busy.link.lock();
            busy.set_stage(&mut link, Stage::Ready);
            // One task answered first, as if its round trip took 10 s: the
            // window opens to two, and no task counts as long in the model
            // (loom has no clock; the real one must not decide anything).
            let t0 = Instant::now();
            link.push(0, job(&shared.counters, 0), t0);
            let _ = link.pop(0, 1_000, t0 + Duration::from_secs(10));
            // The task it runs now.
            link.push(1, job(&shared.counters, 1), t0);
            assert!(link.room(Instant::now()) > 0);
        }
        {
            // `starting` is still starting: free, so the busy worker takes
            // nothing of the one queued job while it holds a task.
            let mut st = shared.state.lock();
            st.workers.push(Arc::clone(&busy));
            st.workers.push(Arc::clone(&starting));
            st.queue.push_back(job(&shared.counters, 2));
        }
        let writer = {
            let (shared, busy) = (Arc::clone(&shared), Arc::clone(&busy));
            thread::spawn(move || match (writer, bell) {
                (Writer::Driver, Some(bell)) => loop {
                    match shared.poll_jobs(&busy, None) {
                        Take::Jobs(jobs) => break jobs,
                        // No clock in the model: a wait is until rung.
                        Take::Wait(_) => bell.wait(None),
                    }
                },
                _ => shared.take_jobs(&busy, None),
            })
        };
        let reader = {
            let (shared, busy) = (Arc::clone(&shared), Arc::clone(&busy));
            thread::spawn(move || {
                let answered = {
                    let mut link = busy.link.lock();
                    let answered = link.pop(1, 1_000, Instant::now());
                    busy.notify();
                    answered
                };
                shared.answered(&busy);
                answered.map(|sent| sent.seq)
            })
        };
        assert_eq!(reader.join().expect("reader"), Some(1));
        let taken = writer.join().expect("writer").expect("jobs");
        assert_eq!(taken.len(), 1, "the writer took the queued job");
        assert!(shared.state.lock().queue.is_empty());
    });
    let n = runs.load(Ordering::Relaxed);
    eprintln!("loom model {name}: {n} interleavings");
    assert!(n > 1, "{name}: the model never branched");
}

#[test]
fn a_writer_whose_worker_is_answered_takes_its_share() {
    model("take_jobs/answered", Writer::Thread);
}

#[test]
fn a_link_driver_whose_worker_is_answered_takes_its_share() {
    model("poll_jobs/answered/bell", Writer::Driver);
}
