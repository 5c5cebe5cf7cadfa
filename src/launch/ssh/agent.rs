//! How [`Ssh`] reaches a host: one connection and one host agent per
//! host, opened when the host's first worker starts and shared by all its
//! workers; at most [`fanout`](Ssh::fanout) connection attempts at once;
//! a handshake the host refuses is tried again after a jittered pause.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::super::client::spawn_client;
use super::super::remote_stderr::{LastWords, RemoteEnd, RemoteStderr};
use super::super::ship::{remote_command, Program, Progress, SharedStdin, ShipReader};
use super::super::ssh_process::SshProcess;
use super::super::{Spawned, WorkerSpec};
use super::Ssh;
use crate::agent::frames::MAX_DATA;
use crate::agent::{agent_env, AgentLink, HostLinks, LinkOptions};
use crate::launch::backoff::Backoff;
use crate::Error;

/// Tries of a connection whose handshake the host refused.
const REFUSED_TRIES: u32 = 8;
/// The pause before another try: 50 ms doubling to 2 s, each jittered
/// between half and all of it.
const REFUSED_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
/// How long a host's link stays open without workers.
const LINGER: Duration = Duration::from_secs(1);

/// The launcher's links, one per host index, and the fanout's count.
#[derive(Debug, Default)]
pub(crate) struct Links {
    hosts: HostLinks,
    /// Connection attempts in flight.
    connecting: Mutex<usize>,
    connected: Condvar,
}

/// A place in the fanout: the attempt counts until dropped.
struct Permit<'a>(&'a Links);

impl Links {
    fn permit(&self, fanout: usize) -> Permit<'_> {
        let mut n = self.connecting.lock();
        while *n >= fanout.max(1) {
            self.connected.wait(&mut n);
        }
        *n += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.connecting.lock() -= 1;
        self.0.connected.notify_one();
    }
}

impl Ssh {
    /// Starts a worker on host `i` (its slot already counted in the host
    /// table), through the host's link, opening it if need be.
    pub(super) fn start_on(
        &self,
        i: usize,
        spec: &WorkerSpec,
        program: &Program,
    ) -> Result<Spawned, Error> {
        let env: Vec<(Vec<u8>, Vec<u8>)> = self
            .worker_env(spec)
            .into_iter()
            .map(|(k, v)| (k.into_encoded_bytes(), v.into_encoded_bytes()))
            .collect();
        let args: Vec<Vec<u8>> = spec.args().map(|a| a.as_bytes().to_vec()).collect();
        let table = Arc::clone(&self.state.hosts);
        self.state.links.hosts.start(
            i,
            || self.connect(i, spec, program),
            &args,
            &env,
            Box::new(move || table.release(i)),
        )
    }

    /// Opens a link to host `i`: runs the agent there (shipping the
    /// program if asked) and waits for its handshake. A handshake the host
    /// refuses (ssh gives up before the remote command runs, as sshd's
    /// `MaxStartups` makes it do under a burst of logins) is tried again.
    fn connect(&self, i: usize, spec: &WorkerSpec, program: &Program) -> Result<AgentLink, Error> {
        let (host, slots) = (&self.hosts[i].0, self.hosts[i].1);
        let table = &self.state.hosts;
        let mut tries = 0;
        loop {
            tries += 1;
            let permit = self.state.links.permit(self.fanout);
            let outcome = self.open_agent(i, spec, program, slots);
            drop(permit);
            match outcome {
                Ok(link) => {
                    table.record(i, Ok(true));
                    return Ok(link);
                }
                Err((e, refused)) if refused && tries < REFUSED_TRIES => {
                    let pause = jitter(REFUSED_BACKOFF.after(tries));
                    tracing::debug!(target: "concurrent_futures", host = %host, tries, error = %e, "handshake refused; trying again");
                    std::thread::sleep(pause);
                }
                Err((e, _)) => {
                    table.record(i, Err(e.to_string()));
                    return Err(e);
                }
            }
        }
    }

    /// One try at starting the agent on host `i`. The flag says the host
    /// refused the connection before running anything.
    fn open_agent(
        &self,
        i: usize,
        spec: &WorkerSpec,
        program: &Program,
        slots: usize,
    ) -> Result<AgentLink, (Error, bool)> {
        let host = self.hosts[i].0.clone();
        let mut env = self.worker_env(spec);
        env.retain(|(k, _)| k != crate::process::WORKER_ENV);
        env.extend(agent_env(slots, self.keepalive, MAX_DATA));
        let mut cmd = self.command(&host);
        cmd.arg(remote_command(
            program,
            self.worker_arg0()
                .map(|_| crate::launch::local::labelled_arg0("agent"))
                .as_deref(),
            env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())),
            spec.args(),
        ));
        let child = spawn_client(cmd).map_err(|e| {
            let e = Error::Io(format!(
                "cannot start {} for {host}: {e}",
                self.ssh.to_string_lossy()
            ));
            (e, false)
        })?;
        let spawned = Spawned::from_child(child, Some(host.clone())).map_err(|e| (e, false))?;
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
        let end = Arc::new(RemoteEnd::default());
        let stdout = ShipReader::new(
            stdout,
            program.clone(),
            host.clone(),
            stdin.clone(),
            Arc::clone(&progress),
        );
        let stderr = stderr.map(|inner| {
            Box::new(RemoteStderr::new(
                inner,
                Arc::clone(&words),
                Arc::clone(&end),
            )) as Box<dyn std::io::Read + Send>
        });
        let spawned = Spawned {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr,
            process: Box::new(SshProcess {
                client: process,
                host_name: host.clone(),
                words: Arc::clone(&words),
                end: Arc::clone(&end),
                killed: false,
                exited: None,
            }),
            label,
        };
        let options = LinkOptions {
            ping: self.keepalive,
            handshake: self.check_timeout,
            linger: LINGER,
        };
        let started = Arc::clone(&progress);
        // A link lost after its agent answered has the host checked again
        // (`ssh host exit 0`) before the next link goes there.
        let table = Arc::clone(&self.state.hosts);
        let on_lost = Box::new(move || table.suspect(i));
        AgentLink::open(spawned, host, options, on_lost, &move || {
            started.started.load(Ordering::Acquire)
        })
        .map_err(|e| {
            // Nothing ran there: ssh gave up during its own handshake.
            let refused = !progress.started.load(Ordering::Acquire)
                && end.status().is_none()
                && words.last_line().is_some_and(|w| refusal(&w));
            (e, refused)
        })
    }
}

/// ssh's words for a host that dropped the connection during the key
/// exchange (sshd's `MaxStartups`, a connection limit).
fn refusal(words: &str) -> bool {
    [
        "kex_exchange_identification",
        "Connection closed by remote host",
        "Connection reset by peer",
        "ssh_exchange_identification",
    ]
    .iter()
    .any(|w| words.contains(w))
}

/// Somewhere between half and all of `pause`, so that pools that were
/// refused together do not all come back at once.
fn jitter(pause: Duration) -> Duration {
    static TRIES: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()).rotate_left(17)
        ^ TRIES
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
    // One round of splitmix64: the low bits of the clock alone repeat.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let nanos = z ^ (z >> 31);
    let half = pause / 2;
    half + Duration::from_nanos(nanos % (half.as_nanos() as u64).max(1))
}
