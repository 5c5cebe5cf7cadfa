//! [`Ssh`]: workers on other machines, through the system's `ssh` client.

use std::ffi::OsString;
use std::fmt;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::hosts::{check, HostTable};
use super::ship::{content_key, Program};
use super::{Launcher, Spawned, WorkerSpec};
use crate::{Error, HostStats};

/// The variables of this process that reach ssh workers unless
/// [`forward_env`](Ssh::forward_env) adds more: panics keep their
/// backtraces and logs their filter, as in local workers.
///
/// # Examples
///
/// ```
/// assert!(concurrent_futures::launch::FORWARDED_ENV.contains(&"RUST_BACKTRACE"));
/// ```
pub const FORWARDED_ENV: [&str; 2] = ["RUST_BACKTRACE", "RUST_LOG"];

/// Connection attempts in flight at once, unless [`fanout`](Ssh::fanout)
/// says otherwise.
const DEFAULT_FANOUT: usize = 16;
/// How often an idle link is pinged, unless
/// [`keepalive`](Ssh::keepalive) says otherwise.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);

/// Runs workers on other machines through the system's `ssh` client, so
/// `~/.ssh/config`, agents, `ProxyJump` and `ControlMaster` all apply.
///
/// Each host gets one ssh connection, opened with its first worker, which
/// runs a host agent there (this executable again, served by
/// [`init`](crate::init)): the agent starts the host's workers and relays
/// their frames, tagged by worker, over that one connection. A host with 64
/// slots is one connection and one login, within sshd's stock limits
/// (`MaxStartups`, `MaxSessions`). `ssh` runs in batch mode (`-o
/// BatchMode=yes`: it never prompts) without a terminal (`-T`).
///
/// # Hosts and slots
///
/// [`host`](Ssh::host) adds a host and how many workers it takes; the
/// pool's `max_workers` defaults to the sum of the slots. A worker goes to
/// the reachable host with the most free slots. [`fanout`](Ssh::fanout)
/// bounds the connections being opened at once; a handshake the host drops
/// is tried again after a jittered pause. A link without workers closes
/// after a second.
///
/// # The worker program
///
/// By default this executable is shipped to each host once, over its
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
/// Before its first link goes to a host, the launcher checks the host
/// with `ssh host exit 0` (all hosts at once). A host that cannot be
/// reached, or whose agent fails before it starts, is left alone for a
/// while (1 s, doubling up to 60 s), then checked again; errors name the
/// host and carry ssh's own message. A worker that dies there is reported
/// by the agent with its own status. When a link is lost (the connection
/// drops, the agent dies, or the link is silent for 6
/// [`keepalive`](Ssh::keepalive) intervals), the tasks that ran there fail
/// with [`Error::HostLost`], and the agent, seeing its link end, kills its
/// workers and exits, even in the middle of a task. Killing a worker
/// (a time limit, `kill_workers`) signals it through its agent.
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
    forward: Vec<OsString>,
    fanout: usize,
    keepalive: Duration,
    state: Arc<State>,
}

mod agent;

/// What the launcher learns at run time, shared by its clones.
#[derive(Default)]
struct State {
    hosts: Arc<HostTable>,
    /// One link per host, each to the host's agent.
    links: agent::Links,
    /// The local program to ship: path, size, content key.
    shipment: OnceLock<Result<(OsString, u64, String), Error>>,
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
            forward: FORWARDED_ENV.iter().map(OsString::from).collect(),
            fanout: DEFAULT_FANOUT,
            keepalive: DEFAULT_KEEPALIVE,
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
        self.state = Arc::new(State {
            hosts: Arc::new(HostTable::new(&self.hosts)),
            ..State::default()
        });
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

    /// Also passes these variables of this process, when set, to the
    /// workers (after [`FORWARDED_ENV`], which always travel). A value
    /// given with the pool builder's `env` wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).forward_env(["MY_APP_CONFIG", "TZ"]);
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn forward_env<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.forward.extend(names.into_iter().map(Into::into));
        self
    }

    /// At most `n` connection attempts in flight at once, across hosts
    /// (default 16; at least 1). Each host takes one connection whatever
    /// its slots; a pool over many hosts opens them `n` at a time, as
    /// pdsh and MPI's Hydra do.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 64).host("node2", 64).fanout(8);
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn fanout(mut self, n: usize) -> Self {
        self.fanout = n.max(1);
        self
    }

    /// How often each side of an idle link says it is alive (default
    /// 10 s; at least 1 ms, at most a day). A link silent for 6 intervals is lost: its running tasks
    /// fail with [`Error::HostLost`], and the agent, hearing nothing
    /// either, kills the host's workers and exits. This catches what the
    /// end of a stream never reports: a half-open TCP connection, a host
    /// that froze.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::launch::Ssh;
    /// let ssh = Ssh::new().host("node1", 8).keepalive(Duration::from_secs(2));
    /// # let _ = ssh;
    /// ```
    #[must_use]
    pub fn keepalive(mut self, interval: Duration) -> Self {
        // Within a millisecond and a day: the agent counts in whole
        // milliseconds, and a day of silence is as good as never.
        self.keepalive = interval.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self
    }

    /// The worker's environment: the forwarded variables of this process
    /// that are set, then the spec's (which win).
    fn worker_env<'a>(&'a self, spec: &'a WorkerSpec) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = self
            .forward
            .iter()
            .filter(|name| !spec.env().any(|(k, _)| k == name.as_os_str()))
            .filter_map(|name| Some((name.clone(), std::env::var_os(name)?)))
            .collect();
        env.extend(spec.env().map(|(k, v)| (k.to_owned(), v.to_owned())));
        env
    }

    /// The `argv[0]` of a worker that is this executable, as for local
    /// workers; `None` for another program (it keeps its own).
    fn worker_arg0(&self) -> Option<OsString> {
        (self.program.is_none() && self.remote_program.is_none()).then(super::local::worker_arg0)
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

    /// Checks host `i` with `ssh host exit 0` in a thread of its own.
    fn spawn_check(&self, i: usize) -> Result<(), String> {
        let mut cmd = self.command(&self.hosts[i].0);
        cmd.arg("exit 0");
        let table = Arc::clone(&self.state.hosts);
        let host = self.hosts[i].0.clone();
        let timeout = self.check_timeout;
        std::thread::Builder::new()
            .name("concurrent-futures-ssh-check".to_string())
            .spawn(move || {
                let verdict = check(cmd, &host, timeout);
                table.record(i, verdict.map(|()| false));
            })
            .map(drop)
            .map_err(|e| format!("cannot start a thread to check the host: {e}"))
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
            .field("forward_env", &self.forward)
            .finish_non_exhaustive()
    }
}

impl Launcher for Ssh {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        // Before program_for, which reads the whole program to hash it.
        self.check_hosts()?;
        let program = self.program_for()?;
        let wait = self.check_timeout.saturating_add(Duration::from_secs(1));
        let i = self
            .state
            .hosts
            .choose(&self.hosts, wait, &|i| self.spawn_check(i))?;
        self.start_on(i, spec, &program)
    }

    fn default_workers(&self) -> Option<usize> {
        let slots: usize = self.hosts.iter().map(|(_, s)| s).sum();
        (slots > 0).then_some(slots)
    }

    /// One entry per host, in the order they were added: its live
    /// workers, down while it is left alone after a failure, and its last
    /// failure.
    fn hosts(&self) -> Vec<HostStats> {
        self.state.hosts.stats()
    }

    fn reruns_this_executable(&self) -> bool {
        self.program.is_none() && self.remote_program.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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
        assert!(err.contains("a submit after that checks it again"), "{err}");
        assert!(!err.contains("next try"), "{err}");
        // Within the backoff the host is not tried again.
        let started = Instant::now();
        let again = ssh.launch(&WorkerSpec::new()).unwrap_err().to_string();
        assert!(again.contains("Connection refused"), "{again}");
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
