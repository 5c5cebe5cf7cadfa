//! A started worker as a launcher hands it to the pool: [`Spawned`], and
//! the [`WorkerProcess`] that kills and reaps it.

use std::fmt;
use std::io::{self, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::Error;

/// Controls one started worker: stop it, and learn how it ended.
///
/// The pool calls these from its own threads: [`try_wait`] until the worker
/// has exited (after its output ended), [`kill`] at a time limit or on
/// `kill_workers`, [`terminate`] on `terminate_workers` and when the pool
/// breaks. It drops the value once the worker is reaped.
///
/// [`try_wait`]: WorkerProcess::try_wait
/// [`kill`]: WorkerProcess::kill
/// [`terminate`]: WorkerProcess::terminate
///
/// # Examples
///
/// ```
/// use std::process::{Command, Stdio};
/// use concurrent_futures::launch::{ChildProcess, WorkerProcess};
///
/// let child = Command::new("sleep").arg("10").stdin(Stdio::null()).spawn()?;
/// let mut process = ChildProcess::new(child);
/// assert!(process.pid().is_some());
/// process.kill()?;
/// let status = loop {
///     if let Some(status) = process.try_wait()? { break status; }
///     std::thread::sleep(std::time::Duration::from_millis(5));
/// };
/// assert!(!status.success());
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait WorkerProcess: Send + fmt::Debug {
    /// Stops the worker at once, and whatever it runs: after this, no
    /// task of it may still run anywhere (a remote launcher ends the
    /// remote process too, not just its local client).
    ///
    /// # Errors
    ///
    /// The operating system's refusal.
    fn kill(&mut self) -> io::Result<()>;

    /// Asks the worker to stop (SIGTERM for a local process). The default
    /// is [`kill`](WorkerProcess::kill).
    ///
    /// # Errors
    ///
    /// The operating system's refusal.
    fn terminate(&mut self) -> io::Result<()> {
        self.kill()
    }

    /// The exit status if the worker has exited (and is now reaped), else
    /// `None`. Never blocks.
    ///
    /// # Errors
    ///
    /// The operating system's refusal.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;

    /// The local process id, when the worker is a process on this machine.
    fn pid(&self) -> Option<u32> {
        None
    }

    /// How the worker ended, for error messages, given the status
    /// [`try_wait`](WorkerProcess::try_wait) returned: "exited with code
    /// 3", "was killed by signal SIGKILL (9)" (the default). A launcher
    /// whose status is its client's rather than the worker's says what it
    /// knows instead, for example that the connection was lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::{Command, ExitStatus, Stdio};
    /// use concurrent_futures::launch::{ChildProcess, WorkerProcess};
    ///
    /// let child = Command::new("true").stdin(Stdio::null()).spawn()?;
    /// let process = ChildProcess::new(child);
    /// assert_eq!(process.describe_exit(ExitStatus::from_raw(7 << 8)), "exited with code 7");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn describe_exit(&self, status: ExitStatus) -> String {
        super::exit::describe_exit(status)
    }

    /// The host, when the worker's status is unknown because the link to
    /// its host was lost (the agent was killed, the connection dropped):
    /// its task then fails with [`Error::HostLost`] rather than as a
    /// worker's death. `None` (the default) for a worker whose status is
    /// its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::process::{Command, Stdio};
    /// use concurrent_futures::launch::{ChildProcess, WorkerProcess};
    ///
    /// let child = Command::new("true").stdin(Stdio::null()).spawn()?;
    /// assert_eq!(ChildProcess::new(child).host_lost(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn host_lost(&self) -> Option<String> {
        None
    }

    /// How the crate finds its own host-link workers among the handles a
    /// launcher returns, to serve them from the link's threads. Keep the
    /// default (`None`) in a launcher of your own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::process::{Command, Stdio};
    /// use concurrent_futures::launch::{ChildProcess, WorkerProcess};
    ///
    /// let child = Command::new("true").stdin(Stdio::null()).spawn()?;
    /// assert!(ChildProcess::new(child).as_any_mut().is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(hidden)]
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// A [`WorkerProcess`] that is a child process of this one: the worker
/// itself, or a client (`ssh`, `srun`, `kubectl`) that runs it elsewhere.
///
/// # Examples
///
/// See [`WorkerProcess`].
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Wraps a started child.
    pub fn new(child: Child) -> Self {
        ChildProcess { child }
    }

    /// The child, for a launcher that needs more than the trait.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl WorkerProcess for ChildProcess {
    fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    fn terminate(&mut self) -> io::Result<()> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32)
            .ok_or_else(|| io::Error::other("no pid"))?;
        match self.child.try_wait()? {
            Some(_) => Ok(()), // reaped: the pid may belong to another process now
            None => rustix::process::kill_process(pid, rustix::process::Signal::TERM)
                .map_err(io::Error::from),
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }
}

/// A started worker: its stdin (frames to it), stdout (frames from it),
/// stderr (forwarded to ours and quoted in errors), control, and a label.
///
/// # Examples
///
/// ```
/// use std::process::Command;
/// use concurrent_futures::launch::Spawned;
///
/// let spawned = Spawned::spawn(Command::new("true"), Some("here".to_string()))?;
/// assert_eq!(spawned.label.as_deref(), Some("here"));
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub struct Spawned {
    /// The worker's input.
    pub stdin: Box<dyn Write + Send>,
    /// The worker's output.
    pub stdout: Box<dyn Read + Send>,
    /// The worker's diagnostics, if the launcher can read them.
    pub stderr: Option<Box<dyn Read + Send>>,
    /// Kills and reaps it.
    pub process: Box<dyn WorkerProcess>,
    /// Where it runs, for error messages (`"node1"`); `None` for this
    /// machine.
    pub label: Option<String>,
}

impl Spawned {
    /// Spawns `command` with its three streams piped, in a process group
    /// of its own.
    ///
    /// A terminal sends Ctrl-C (SIGINT), `Ctrl-\` (SIGQUIT) and Ctrl-Z to
    /// its whole foreground process group: in ours, the worker (or the
    /// client that runs it elsewhere) would die with the running task,
    /// even when this program catches SIGINT to stop gracefully. In a group
    /// of its own it hears none of them; the pool ends it (a local worker
    /// also exits by itself when this process dies).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the program when it cannot be started.
    pub fn spawn(mut command: Command, label: Option<String>) -> Result<Spawned, Error> {
        let child = own_process_group(pipe_stdio(&mut command))
            .spawn()
            .map_err(|e| {
                Error::Io(format!(
                    "cannot start worker process {}{}: {e}",
                    command.get_program().to_string_lossy(),
                    label
                        .as_deref()
                        .map(|l| format!(" for {l}"))
                        .unwrap_or_default()
                ))
            })?;
        Self::from_child(child, label)
    }

    /// Takes a child whose stdin and stdout (and, if it has one, stderr)
    /// are pipes. Start it in a process group of its own (see
    /// [`spawn`](Spawned::spawn)), or the terminal's Ctrl-C reaches it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if stdin or stdout is not piped; the child is then
    /// killed and reaped.
    pub fn from_child(mut child: Child, label: Option<String>) -> Result<Spawned, Error> {
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Io("a worker process has no stdio pipes".to_string()));
        };
        grow_pipe(&stdin);
        grow_pipe(&stdout);
        let stderr = child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>);
        Ok(Spawned {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr,
            process: Box::new(ChildProcess::new(child)),
            label,
        })
    }
}

impl fmt::Debug for Spawned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned")
            .field("process", &self.process)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Pipes `command`'s stdin, stdout and stderr, as a worker's must be.
pub(crate) fn pipe_stdio(command: &mut Command) -> &mut Command {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

/// Puts `command`'s process in a new process group (its own pid), out of
/// the terminal's foreground group, so that Ctrl-C and `Ctrl-\` reach this
/// program only (see [`Spawned::spawn`]).
pub(crate) fn own_process_group(command: &mut Command) -> &mut Command {
    std::os::unix::process::CommandExt::process_group(command, 0)
}

/// The pipe size asked for on Linux, for large arguments.
const PIPE_SIZE: usize = 1 << 20;

#[cfg(target_os = "linux")]
fn grow_pipe(fd: &impl std::os::fd::AsFd) {
    // Best effort: a larger pipe means fewer wake-ups for big arguments.
    let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_SIZE);
}

#[cfg(not(target_os = "linux"))]
fn grow_pipe(_fd: &impl std::os::fd::AsFd) {
    let _ = PIPE_SIZE;
}
