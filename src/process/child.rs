//! The child side: what [`init`] runs in a worker process.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::inbox::Inbox;
use super::protocol::{
    begin_result, build_identity, end_result, Frame, FromWorker, ToWorker, PROTOCOL_VERSION,
    WORKER_ENV,
};
use crate::panic::catch;
use crate::task::{ErasedTask, TASKS};
use crate::Error;

/// Enters the worker loop if this process was started as a pool worker;
/// returns at once otherwise.
///
/// Call it first thing in `main`: it is Rust's form of Python's
/// `if __name__ == "__main__":`. A [`ProcessPoolExecutor`] starts its
/// workers by running the current executable again with a marker in the
/// environment; in such a process `init()` serves tasks until the pool
/// closes the pipe and then exits the process, so it never returns.
///
/// [`ProcessPoolExecutor`]: crate::ProcessPoolExecutor
///
/// # Examples
///
/// ```
/// fn double(x: u64) -> u64 { 2 * x }
///
/// fn main() -> Result<(), concurrent_futures::Error> {
///     concurrent_futures::init();
///     let pool = concurrent_futures::ProcessPoolExecutor::new(2)?;
///     let fut = pool.submit(concurrent_futures::task!(double), 21);
///     assert_eq!(fut.result()?, 42);
///     Ok(())
/// }
/// ```
pub fn init() {
    if is_agent_process() {
        name_this_process("agent");
        crate::agent::serve::run();
    }
    if !is_worker_process() {
        return;
    }
    name_this_process("worker");
    let code = match serve_on_a_fresh_thread() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("concurrent-futures worker {}: {e}", std::process::id());
            3
        }
    };
    std::process::exit(code);
}

/// The stack of the thread that runs the tasks: a main thread's usual 8 MiB
/// rather than a spawned thread's 2 MiB, since tasks ran on main before.
const TASK_STACK: usize = 8 << 20;

/// Runs the worker loop on a new thread and waits for it. The thread that
/// called [`init`] may have entered an async runtime (`#[tokio::main]`);
/// tasks run outside it, so a task may build and block on its own runtime
/// (as blocking HTTP clients do) instead of panicking with "Cannot start a
/// runtime from within a runtime".
fn serve_on_a_fresh_thread() -> Result<(), Error> {
    let server = thread::Builder::new()
        .name("concurrent-futures-worker".into())
        .stack_size(TASK_STACK)
        .spawn(serve)
        .map_err(|e| Error::Io(format!("cannot start the worker thread: {e}")))?;
    server
        .join()
        .unwrap_or_else(|_| Err(Error::Io("the worker loop panicked".to_string())))
}

/// Renames the process (its `comm`, what `ps` and `top` show) to
/// `<program>-<role>` (`worker`, `agent`), so a person can tell a worker
/// from its parent: a worker started as `/proc/self/exe` would otherwise
/// show up as `exe`. Best effort, Linux only; `comm` holds 15 bytes.
fn name_this_process(role: &str) {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(std::path::Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = stem.chars().filter(char::is_ascii).take(8).collect();
    let name = if stem.is_empty() {
        format!("cf-{role}")
    } else {
        format!("{stem}-{role}")
    };
    // `/proc/self` is the thread group leader: this names the process even
    // when init() runs on another thread (a test's).
    let _ = std::fs::write("/proc/self/comm", name);
}

/// True in a process started by a [`ProcessPoolExecutor`] (and in anything
/// it starts, since the marker is inherited).
///
/// [`ProcessPoolExecutor`]: crate::ProcessPoolExecutor
pub(crate) fn is_worker_process() -> bool {
    std::env::var_os(WORKER_ENV).is_some_and(|v| v == "1")
}

/// True in a process started as a host agent (`serve.rs` in `src/agent/`):
/// `CONCURRENT_FUTURES_WORKER=agent`. An agent starts its workers without
/// the mark.
pub(crate) fn is_agent_process() -> bool {
    std::env::var_os(WORKER_ENV).is_some_and(|v| v == crate::agent::serve::AGENT_MARK)
}

/// Appends what a worker writes first: [`MAGIC`](super::frame::MAGIC) and
/// its `Hello` (this process's pid and build). An agent writes the same.
///
/// # Errors
///
/// [`Error::Codec`] if it does not encode.
pub(crate) fn hello(buf: &mut Vec<u8>) -> Result<(), Error> {
    FromWorker::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
        build: build_identity(),
    }
    .encode(buf)
}

/// Moves the protocol off fds 0 and 1: returns private copies and points
/// fd 0 at /dev/null and fd 1 at stderr, so tasks cannot touch the pipe.
pub(crate) fn take_stdio() -> Result<(OwnedFd, OwnedFd), Error> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| Error::Io(format!("dup: {e}")))
    };
    let input = dup(std::io::stdin().as_fd())?;
    let output = dup(std::io::stdout().as_fd())?;
    let null = File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null).map_err(|e| Error::Io(format!("dup2 stdin: {e}")))?;
    rustix::stdio::dup2_stdout(std::io::stderr().as_fd())
        .map_err(|e| Error::Io(format!("dup2 stdout: {e}")))?;
    Ok((input, output))
}

/// How often a worker checks that the pool process still lives.
const PARENT_POLL: Duration = Duration::from_millis(50);

/// A task known under the id the pool gave it.
type Declared = Result<&'static dyn ErasedTask, Error>;

fn serve() -> Result<(), Error> {
    let (input, output) = take_stdio()?;
    let out = Arc::new(Mutex::new(File::from(output)));
    let mut greeting = Vec::new();
    hello(&mut greeting)?;
    out.lock().write_all(&greeting)?;
    watch_parent(rustix::process::getppid());
    // The task thread runs the frames in order, and writes each answer
    // before it takes the next frame. So when this process dies, the pool
    // has every answer it wrote, and only the first task without an answer
    // can have started: the pool may send the others to another worker
    // without running anything twice. While a task runs, a second thread
    // reads on, so that a `Recall` is answered mid-task (`inbox.rs`).
    let input = BufReader::with_capacity(256 * 1024, File::from(input));
    let inbox = Arc::new(Inbox::new(Some(input)));
    let (watcher, watch_out) = (Arc::clone(&inbox), Arc::clone(&out));
    thread::Builder::new()
        .name("concurrent-futures-inbox".into())
        .spawn(move || watcher.watch(&mut |answer| watch_out.lock().write_all(answer)))
        .map_err(|e| Error::Io(format!("cannot start the worker's reader: {e}")))?;
    run_frames(
        &Registry::load(),
        || inbox.next(&mut |answer| out.lock().write_all(answer)),
        |frame| out.lock().write_all(frame),
    )
}

/// Exits the worker at once (even mid-task) when the pool process is gone,
/// so that a killed pool leaves no orphans. The end of input alone cannot
/// tell: the pool also closes it on purpose (shutdown, retirement) and then
/// waits for the results of the tasks already sent. A thread checks every
/// [`PARENT_POLL`] whether we were re-parented.
fn watch_parent(parent: Option<rustix::process::Pid>) {
    let orphaned = move || rustix::process::getppid() != parent;
    let watch = move || loop {
        if orphaned() {
            std::process::exit(1);
        }
        thread::sleep(PARENT_POLL);
    };
    let spawned = thread::Builder::new()
        .name("concurrent-futures-watch".into())
        .spawn(watch);
    if spawned.is_err() && orphaned() {
        std::process::exit(1);
    }
}

/// Runs the frames `next_frame` gives, in order, until it gives `None`;
/// hands each answer to `emit` before reading the next frame.
pub(crate) fn run_frames(
    registry: &Registry,
    mut next_frame: impl FnMut() -> Result<Option<Frame>, Error>,
    mut emit: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), Error> {
    let mut declared: HashMap<u32, Declared> = HashMap::new();
    let mut out = Vec::with_capacity(64);
    while let Some(frame) = next_frame()? {
        out.clear();
        let mut last = false;
        match ToWorker::decode(&frame)? {
            ToWorker::Declare {
                id,
                name,
                signature,
            } => {
                declared.insert(id, registry.find(&name, &signature));
                continue;
            }
            ToWorker::Call {
                seq,
                id,
                chunk,
                arg,
            } => {
                let start = begin_result(&mut out, seq);
                let began = Instant::now();
                let outcome = match declared.get(&id) {
                    None => Err(Error::Protocol(format!("a call of undeclared task {id}"))),
                    Some(Err(e)) => Err(e.clone()),
                    Some(Ok(task)) => catch(|| {
                        if chunk {
                            task.invoke_chunk(arg, &mut out)
                        } else {
                            task.invoke(arg, &mut out)
                        }
                    })
                    .and_then(|r| r),
                };
                let run_ns = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let ended = outcome.and_then(|()| {
                    end_result(&mut out, start, run_ns, true).map_err(|_| {
                        Error::Codec("the result exceeds the frame size limit".to_string())
                    })
                });
                if let Err(e) = ended {
                    // Written afresh: a result that failed to serialize
                    // may have left `out` empty or cut short.
                    out.clear();
                    FromWorker::Result {
                        seq,
                        run_ns,
                        outcome: Err(e),
                    }
                    .encode(&mut out)?;
                }
            }
            ToWorker::Recall { seq } => {
                // Recalls are answered as they arrive (`Inbox::deliver`);
                // one that reaches the task thread found nothing queued.
                FromWorker::Recalled {
                    seq,
                    given_back: false,
                }
                .encode(&mut out)?;
            }
            ToWorker::Init { id, arg } => {
                let mut value = Vec::new();
                let outcome = match declared.get(&id) {
                    None => Err(Error::Protocol(format!(
                        "an initializer of undeclared task {id}"
                    ))),
                    Some(Err(e)) => Err(e.clone()),
                    // The pool decodes the initializer's result and decides.
                    Some(Ok(task)) => catch(|| task.invoke(arg, &mut value)).and_then(|r| r),
                };
                // After a failed initializer the pool is broken; nothing
                // more will be asked.
                last = outcome.is_err();
                FromWorker::InitDone(outcome.map(|()| &value[..])).encode(&mut out)?;
            }
        }
        if emit(&out).is_err() || last {
            return Ok(()); // the pool is gone, or has nothing more to ask
        }
    }
    Ok(())
}

/// The tasks a worker knows, by name.
pub(crate) struct Registry {
    by_name: HashMap<String, Vec<&'static dyn ErasedTask>>,
}

impl Registry {
    /// The tasks this binary registered with `task!`.
    fn load() -> Self {
        Self::of(TASKS.iter().copied())
    }

    /// A registry of `tasks`.
    pub(crate) fn of(tasks: impl IntoIterator<Item = &'static dyn ErasedTask>) -> Self {
        let mut by_name: HashMap<String, Vec<&'static dyn ErasedTask>> = HashMap::new();
        for task in tasks {
            by_name.entry(task.name()).or_default().push(task);
        }
        Registry { by_name }
    }

    fn find(&self, name: &str, signature: &str) -> Declared {
        let Some(candidates) = self.by_name.get(name) else {
            return Err(Error::TaskNotFound(format!(
                "{name} (the worker binary does not name it with task!)"
            )));
        };
        candidates
            .iter()
            .copied()
            .find(|t| t.signature() == signature)
            .ok_or_else(|| {
                Error::TaskNotFound(format!(
                    "{name} with signature {signature} (the worker has {})",
                    candidates[0].signature()
                ))
            })
    }
}
