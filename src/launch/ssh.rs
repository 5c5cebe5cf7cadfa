//! [`Ssh`]: workers on other machines, through the system's `ssh` client.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::client::spawn_client;
use super::ship::{
    content_key, describe, remote_command, LastWords, Program, Progress, SharedStdin, ShipReader,
    Tee,
};
use super::spawned::own_process_group;
use super::{Launcher, Spawned, WorkerProcess, WorkerSpec};
use crate::Error;

/// Runs workers on other machines through the system's `ssh` client, so
/// `~/.ssh/config`, agents, `ProxyJump` and `ControlMaster` all apply.
///
/// Each worker is one ssh connection whose stdin and stdout carry the
/// pool's protocol unchanged. `ssh` runs in batch mode (`-o BatchMode=yes`:
/// it never prompts) without a terminal (`-T`).
///
/// # Hosts and slots
///
/// [`host`](Ssh::host) adds a host and how many workers it takes; the
/// pool's `max_workers` defaults to the sum of the slots. A worker goes to
/// the reachable host with the most free slots.
///
/// # The worker program
///
/// By default this executable is shipped to each host over the worker's own
/// connection, into `${XDG_CACHE_HOME:-~/.cache}/concurrent-futures/` under
/// a name made of a hash of its bytes, so the next pool (of the same build)
/// finds it there and copies nothing. The copy is written to a temporary
/// file and renamed into place, so pools shipping at once do not break each
/// other. [`remote_program`](Ssh::remote_program) names a program already
/// on the hosts (a shared filesystem) instead. Either way the pool's
/// handshake refuses a worker of another build.
///
/// # Failures
///
/// Before its first worker goes to a host, the launcher checks the host
/// with `ssh host exit 0` (all hosts at once). A host that cannot be
/// reached, or whose worker fails before it starts, is left alone for a
/// while (1 s, doubling up to 60 s), then checked again; errors name the
/// host and carry ssh's own message. When a connection drops, the remote
/// worker's parent (the ssh session) ends and the worker exits, even in
/// the middle of a task. Killing a worker ends its `ssh` client, which ends
/// the remote worker the same way.
///
/// # Examples
///
/// ```
/// use concurrent_futures::launch::{Launcher, Ssh};
/// use concurrent_futures::ProcessPoolExecutor;
///
/// let ssh = Ssh::new().host("node1", 8).host("node2", 8).ssh_args(["-F", "cluster.conf"]);
/// assert_eq!(ssh.default_workers(), Some(16));
/// let pool = ProcessPoolExecutor::builder().launcher(ssh).build()?; // nothing connects yet
/// assert_eq!(pool.max_workers(), 16);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
#[derive(Clone)]
pub struct Ssh {
    hosts: Vec<(String, usize)>,
    ssh: OsString,
    ssh_args: Vec<OsString>,
    program: Option<OsString>,
    remote_program: Option<String>,
    cache_dir: Option<String>,
    check_timeout: Duration,
    state: Arc<State>,
}

/// What the launcher learns at run time, shared by its clones.
#[derive(Default)]
struct State {
    hosts: Mutex<Vec<HostState>>,
    changed: Condvar,
    /// The local program to ship: path, size, content key.
    shipment: OnceLock<Result<(OsString, u64, String), Error>>,
}

/// One host as the launcher knows it.
#[derive(Debug, Default, Clone)]
struct HostState {
    /// Workers started there and not yet dropped by the pool.
    live: usize,
    health: Health,
    /// Failures in a row (the backoff's exponent).
    failures: u32,
    /// The last failure, for error messages.
    error: Option<String>,
}

/// Whether a host can take workers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Never checked, or due for another check.
    #[default]
    Unknown,
    /// `ssh host exit 0` is running.
    Checking,
    /// The last check or worker start succeeded.
    Up,
    /// Failed; left alone until then.
    Down(Instant),
}

/// The first pause after a failure; it doubles with each failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest pause.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How long a host that failed `failures` times in a row is left alone.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

impl Ssh {
    /// No hosts yet; add them with [`host`](Ssh::host).
    pub fn new() -> Self {
        Ssh {
            hosts: Vec::new(),
            ssh: OsString::from("ssh"),
            ssh_args: Vec::new(),
            program: None,
            remote_program: None,
            cache_dir: None,
            check_timeout: Duration::from_secs(30),
            state: Arc::new(State::default()),
        }
    }

    /// Adds a host (anything `ssh` accepts: a name from `~/.ssh/config`,
    /// `user@host`, an address) that runs at most `slots` workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::{Launcher, Ssh};
    /// assert_eq!(Ssh::new().host("gpu1", 4).host("me@gpu2", 2).default_workers(), Some(6));
    /// ```
    #[must_use]
    pub fn host(mut self, host: impl Into<String>, slots: usize) -> Self {
        self.hosts.push((host.into(), slots));
        self.state = Arc::new(State::for_hosts(self.hosts.len()));
        self
    }

    /// Arguments for `ssh`, before the host: options such as
    /// `["-F", "cluster.conf"]` or `["-o", "ControlMaster=auto"]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).ssh_args(["-o", "ControlPersist=60", "-p", "2222"]);
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn ssh_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.ssh_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The ssh client to run (default: `ssh` from `PATH`).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).ssh_program("/usr/bin/ssh");
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn ssh_program(mut self, program: impl Into<OsString>) -> Self {
        self.ssh = program.into();
        self
    }

    /// Ships `program` (a local file) instead of this executable. Its
    /// `main` must call [`init`](crate::init) first.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).program("target/release/my-worker");
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn program(mut self, program: impl Into<OsString>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Runs the program at `path` on each host (a shared filesystem, or a
    /// copy installed beforehand) and ships nothing. A path starting with
    /// `~/` is taken from the remote home directory.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).remote_program("/shared/bin/my-app");
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn remote_program(mut self, path: impl Into<String>) -> Self {
        self.remote_program = Some(path.into());
        self
    }

    /// Where shipped programs are kept on the hosts (default:
    /// `${XDG_CACHE_HOME:-~/.cache}/concurrent-futures`). A path starting
    /// with `~/` is taken from the remote home directory.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).cache_dir("/scratch/me/workers");
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn cache_dir(mut self, dir: impl Into<String>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// How long checking a host (`ssh host exit 0`) may take before the
    /// host counts as unreachable (default 30 s; `ConnectTimeout` in the
    /// ssh config usually ends it sooner).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).check_timeout(Duration::from_secs(5));
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// An `ssh` command for `host` with our options and the user's.
    fn command(&self, host: &str) -> Command {
        let mut cmd = Command::new(&self.ssh);
        // The user's options come first: for ssh, the first value wins.
        cmd.args(&self.ssh_args)
            .args(["-o", "BatchMode=yes", "-T", "-e", "none", "--", host]);
        cmd
    }

    /// The program to run, shipping it if need be.
    fn program_for(&self) -> Result<Program, Error> {
        if let Some(path) = &self.remote_program {
            return Ok(Program::Remote(path.clone()));
        }
        let shipment = self.state.shipment.get_or_init(|| {
            let local = match &self.program {
                Some(p) => p.clone(),
                None => super::local::this_executable()?,
            };
            let (size, key) = content_key(&local)?;
            Ok((local, size, key))
        });
        let (local, size, key) = shipment.clone()?;
        Ok(Program::Ship {
            local,
            size,
            key,
            dir: self.cache_dir.clone(),
        })
    }

    /// Refuses a host list that can take no worker (no hosts, or a host
    /// with 0 slots).
    fn check_hosts(&self) -> Result<(), Error> {
        if self.hosts.is_empty() {
            return Err(Error::InvalidArgument(
                "an ssh launcher needs at least one host".to_string(),
            ));
        }
        if let Some((host, _)) = self.hosts.iter().find(|(_, slots)| *slots == 0) {
            return Err(Error::InvalidArgument(format!(
                "ssh host {host} has 0 slots"
            )));
        }
        Ok(())
    }

    /// Picks a host for one more worker and counts it there; checks hosts
    /// that are due, waiting only when no host is known to be up.
    fn choose(&self) -> Result<usize, Error> {
        let deadline = Instant::now() + self.check_timeout + Duration::from_secs(1);
        let mut table = self.state.hosts.lock();
        loop {
            let now = Instant::now();
            for (i, h) in table.iter_mut().enumerate() {
                if matches!(h.health, Health::Down(until) if now >= until) {
                    h.health = Health::Unknown;
                }
                if h.health == Health::Unknown {
                    h.health = match self.spawn_check(i) {
                        Ok(()) => Health::Checking,
                        Err(e) => {
                            h.failures += 1;
                            h.error = Some(e);
                            Health::Down(now + backoff(h.failures))
                        }
                    };
                }
            }
            // The up host with the most free slots (then the fewest live);
            // never one whose slots are all taken, even while others are
            // still being checked.
            let best = table
                .iter()
                .enumerate()
                .filter(|(i, h)| h.health == Health::Up && h.live < self.hosts[*i].1)
                .max_by_key(|(i, h)| {
                    let slots = self.hosts[*i].1;
                    (slots.saturating_sub(h.live), std::cmp::Reverse(h.live))
                })
                .map(|(i, _)| i);
            if let Some(i) = best {
                table[i].live += 1;
                return Ok(i);
            }
            let checking = table.iter().any(|h| h.health == Health::Checking);
            if !checking
                || self
                    .state
                    .changed
                    .wait_until(&mut table, deadline)
                    .timed_out()
            {
                if checking {
                    continue; // one last look; the checks time out on their own
                }
                return Err(Error::Io(self.all_down(&table)));
            }
        }
    }

    /// "no ssh host can take a worker: down: ssh: connect to host ...".
    fn all_down(&self, table: &[HostState]) -> String {
        let now = Instant::now();
        let mut out = String::from("no ssh host can take a worker");
        for ((host, _), h) in self.hosts.iter().zip(table) {
            out.push_str(&format!(
                "; {host}: {}",
                h.error.as_deref().unwrap_or("unreachable")
            ));
            if let Health::Down(until) = h.health {
                out.push_str(&format!(
                    " (next try in {:.1}s)",
                    until.saturating_duration_since(now).as_secs_f64()
                ));
            }
        }
        out
    }

    /// Checks host `i` with `ssh host exit 0` in a thread of its own.
    fn spawn_check(&self, i: usize) -> Result<(), String> {
        let mut cmd = self.command(&self.hosts[i].0);
        cmd.arg("exit 0");
        let state = Arc::clone(&self.state);
        let host = self.hosts[i].0.clone();
        let timeout = self.check_timeout;
        std::thread::Builder::new()
            .name("concurrent-futures-ssh-check".to_string())
            .spawn(move || {
                let verdict = check(cmd, &host, timeout);
                state.record(i, verdict.map(|()| false));
            })
            .map(drop)
            .map_err(|e| format!("cannot start a thread to check the host: {e}"))
    }
}

/// Runs one host check; `Err` holds ssh's own message. Out of the
/// terminal's process group, as the clients are: a Ctrl-C that the
/// program catches must not fail the check and take the host out.
fn check(mut cmd: Command, host: &str, timeout: Duration) -> Result<(), String> {
    own_process_group(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd.get_program().to_string_lossy()))?;
    let words = Arc::new(LastWords::default());
    let reader = child.stderr.take().map(|stderr| {
        let words = Arc::clone(&words);
        std::thread::spawn(move || {
            let mut tee = Tee {
                inner: stderr,
                words,
            };
            let _ = io::copy(&mut tee, &mut io::sink());
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    if let Some(r) = reader {
        let _ = r.join();
    }
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "{} (ssh {})",
            words
                .last_line()
                .unwrap_or_else(|| format!("cannot reach {host}")),
            describe(s)
        )),
        None => Err(format!("no answer from {host} within {timeout:?}")),
    }
}

impl State {
    /// A fresh table, one entry per host (in the launcher's order).
    fn for_hosts(n: usize) -> Self {
        State {
            hosts: Mutex::new(vec![HostState::default(); n]),
            ..State::default()
        }
    }

    /// Records a check or a worker start: `Ok(true)` up, `Err` down.
    fn record(&self, i: usize, outcome: Result<bool, String>) {
        let mut table = self.hosts.lock();
        if let Some(h) = table.get_mut(i) {
            match outcome {
                Ok(started) => {
                    h.health = Health::Up;
                    if started {
                        h.failures = 0;
                    }
                }
                Err(e) => {
                    h.failures += 1;
                    h.health = Health::Down(Instant::now() + backoff(h.failures));
                    h.error = Some(e);
                }
            }
        }
        drop(table);
        self.changed.notify_all();
    }

    /// A worker's connection ended with ssh's own error (code 255) after
    /// it started: check the host again before the next worker goes there.
    fn suspect(&self, i: usize) {
        let mut table = self.hosts.lock();
        if let Some(h) = table.get_mut(i) {
            if h.health == Health::Up {
                h.health = Health::Unknown;
            }
        }
    }

    fn release(&self, i: usize) {
        let mut table = self.hosts.lock();
        if let Some(h) = table.get_mut(i) {
            h.live = h.live.saturating_sub(1);
        }
    }
}

impl Default for Ssh {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Ssh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ssh")
            .field("hosts", &self.hosts)
            .field("ssh", &self.ssh)
            .field("ssh_args", &self.ssh_args)
            .field("program", &self.program)
            .field("remote_program", &self.remote_program)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl Launcher for Ssh {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        // Before program_for, which reads the whole program to hash it.
        self.check_hosts()?;
        let program = self.program_for()?;
        let i = self.choose()?;
        let host = self.hosts[i].0.clone();
        let mut cmd = self.command(&host);
        cmd.arg(remote_command(&program, spec.env(), spec.args()));
        let fail = |e: Error| {
            self.state.release(i);
            self.state.record(i, Err(e.to_string()));
            e
        };
        let child = spawn_client(cmd)
            .map_err(|e| {
                Error::Io(format!(
                    "cannot start {} for {host}: {e}",
                    self.ssh.to_string_lossy()
                ))
            })
            .map_err(fail)?;
        let spawned = Spawned::from_child(child, Some(host.clone())).map_err(fail)?;
        let Spawned {
            stdin,
            stdout,
            stderr,
            process,
            label,
        } = spawned;
        let stdin = SharedStdin(Arc::new(Mutex::new(Some(stdin))));
        let progress = Arc::new(Progress::default());
        let words = Arc::new(LastWords::default());
        let stdout = ShipReader::new(stdout, program, host, stdin.clone(), Arc::clone(&progress));
        Ok(Spawned {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr: stderr.map(|inner| {
                Box::new(Tee {
                    inner,
                    words: Arc::clone(&words),
                }) as Box<dyn io::Read + Send>
            }),
            process: Box::new(SshProcess {
                client: process,
                host: i,
                state: Arc::clone(&self.state),
                progress,
                words,
                killed: false,
                ended: false,
            }),
            label,
        })
    }

    fn default_workers(&self) -> Option<usize> {
        let slots: usize = self.hosts.iter().map(|(_, s)| s).sum();
        (slots > 0).then_some(slots)
    }
}

/// One worker's ssh client; tells the launcher how the host fared.
struct SshProcess {
    client: Box<dyn WorkerProcess>,
    host: usize,
    state: Arc<State>,
    progress: Arc<Progress>,
    words: Arc<LastWords>,
    /// Ended on purpose (kill, terminate): not the host's fault.
    killed: bool,
    /// Its exit was already recorded.
    ended: bool,
}

impl fmt::Debug for SshProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshProcess")
            .field("client", &self.client)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl SshProcess {
    fn ended(&mut self, status: ExitStatus) {
        if std::mem::replace(&mut self.ended, true) || self.killed {
            return;
        }
        let started = self.progress.started.load(Ordering::Acquire);
        if !started {
            let words = self.words.last_line().unwrap_or_default();
            self.state.record(
                self.host,
                Err(format!("{words} (ssh {})", describe(status))),
            );
        } else if status.code() == Some(255) {
            self.state.suspect(self.host);
        } else {
            self.state.record(self.host, Ok(true));
        }
    }
}

impl WorkerProcess for SshProcess {
    fn kill(&mut self) -> io::Result<()> {
        self.killed = true;
        self.client.kill()
    }

    fn terminate(&mut self) -> io::Result<()> {
        self.killed = true;
        self.client.terminate()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.client.try_wait()?;
        if let Some(s) = status {
            self.ended(s);
        }
        Ok(status)
    }
}

impl Drop for SshProcess {
    fn drop(&mut self) {
        self.state.release(self.host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(7), Duration::from_secs(60));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn slots_add_up() {
        let ssh = Ssh::new().host("a", 3).host("b", 5);
        assert_eq!(ssh.default_workers(), Some(8));
        assert_eq!(Ssh::new().default_workers(), None);
    }

    #[test]
    fn no_hosts_is_an_invalid_argument() {
        let err = Ssh::new().launch(&WorkerSpec::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "starts a process, which Miri cannot")]
    fn an_unreachable_host_is_named_with_ssh_s_message() {
        // A client that fails as ssh does, without any network.
        let ssh = Ssh::new()
            .host("nowhere", 1)
            .ssh_program("sh")
            .ssh_args([
                "-c",
                "echo 'ssh: connect to host nowhere: Connection refused' >&2; exit 255",
            ])
            .remote_program("/bin/true");
        let err = ssh.launch(&WorkerSpec::new()).unwrap_err().to_string();
        assert!(
            err.contains("nowhere: ssh: connect to host nowhere: Connection refused"),
            "{err}"
        );
        assert!(err.contains("next try in"), "{err}");
        // Within the backoff the host is not tried again.
        let started = Instant::now();
        let again = ssh.launch(&WorkerSpec::new()).unwrap_err().to_string();
        assert!(again.contains("Connection refused"), "{again}");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
