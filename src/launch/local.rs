//! [`Local`]: workers on this machine, the default launcher.

use std::ffi::OsString;
use std::process::Command;

use super::{Launcher, Spawned, WorkerSpec};
use crate::Error;

/// Runs workers on this machine: this executable again (the default), or
/// another program built with the same version of this crate.
///
/// [`ProcessPoolBuilder::worker_command`](crate::ProcessPoolBuilder::worker_command)
/// is `launcher(Local::program(p))`.
///
/// # Examples
///
/// ```
/// use concurrent_futures::launch::Local;
/// use concurrent_futures::ProcessPoolExecutor;
///
/// let pool = ProcessPoolExecutor::builder().launcher(Local::new()).max_workers(2).build()?;
/// assert_eq!(pool.max_workers(), 2);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// `None`: this executable.
    program: Option<OsString>,
}

impl Local {
    /// Workers that are this executable, run again.
    pub fn new() -> Self {
        Local { program: None }
    }

    /// Workers that are `program`. Its `main` must call
    /// [`init`](crate::init) first and name every task the pool sends with
    /// [`task!`](crate::task!).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Local;
    /// let launcher = Local::program("/usr/local/bin/my-worker");
    /// # let _ = launcher;
    /// ```
    pub fn program(program: impl Into<OsString>) -> Self {
        Local {
            program: Some(program.into()),
        }
    }
}

impl Launcher for Local {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        let mut command = match &self.program {
            Some(p) => Command::new(p),
            None => {
                let mut command = Command::new(this_executable()?);
                std::os::unix::process::CommandExt::arg0(&mut command, worker_arg0());
                command
            }
        };
        command.args(spec.args()).envs(spec.env());
        Spawned::spawn(command, None)
    }

    fn reruns_this_executable(&self) -> bool {
        self.program.is_none()
    }
}

/// This process's executable. On Linux `/proc/self/exe` names the very file
/// we run even if it was replaced on disk since (a rebuild), so workers
/// always match the pool.
pub(crate) fn this_executable() -> Result<OsString, Error> {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.as_os_str().to_owned());
    }
    current_executable()
}

/// This process's executable by its path (`std::env::current_exe`).
pub(crate) fn current_executable() -> Result<OsString, Error> {
    std::env::current_exe()
        .map(|p| p.into_os_string())
        .map_err(|e| Error::Io(format!("cannot find the current executable: {e}")))
}

/// The `argv[0]` of a worker that re-runs this executable: this process's
/// own, marked, so that `ps` tells the worker from its parent (the program
/// itself is `/proc/self/exe`, which `ps` would show).
pub(crate) fn worker_arg0() -> OsString {
    labelled_arg0("worker")
}

/// This process's `argv[0]` marked with `role` (`worker`, `agent`): an
/// agent's mark is replaced, not added to, in the workers it starts.
pub(crate) fn labelled_arg0(role: &str) -> OsString {
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("concurrent-futures"));
    let mut bytes = arg0.into_encoded_bytes();
    if let Some(at) = bytes
        .windows(MARK.len())
        .rposition(|w| w == MARK.as_bytes())
    {
        bytes.truncate(at);
    }
    let mut arg0 = <OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes);
    arg0.push(format!("{MARK}{role})"));
    arg0
}

/// What precedes the role in a marked `argv[0]`.
const MARK: &str = " (concurrent-futures ";
