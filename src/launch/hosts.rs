//! The ssh launcher's host table: which hosts are up, how many workers each
//! runs, when a failed host is checked again, and the check itself
//! (`ssh host exit 0`).

use std::io;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::backoff::Backoff;
use super::exit::describe_exit;
use super::remote_stderr::LastWords;
use super::spawned::own_process_group;
use crate::{Error, HostStats};

/// How long a host that failed is left alone: 1 s, doubling to 60 s.
pub(crate) const HOST_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// One host as the launcher knows it.
#[derive(Debug, Default, Clone)]
struct HostState {
    /// As the launcher was given it, for events and `stats()`.
    name: String,
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

/// The hosts' states, in the launcher's order; shared by its clones and
/// by the handles of the workers it started.
#[derive(Debug, Default)]
pub(crate) struct HostTable {
    hosts: Mutex<Vec<HostState>>,
    changed: Condvar,
}

impl HostTable {
    /// A fresh table, one entry per host of `slots` (name, slots).
    pub(crate) fn new(slots: &[(String, usize)]) -> Self {
        let hosts = slots
            .iter()
            .map(|(name, _)| HostState {
                name: name.clone(),
                ..HostState::default()
            })
            .collect();
        HostTable {
            hosts: Mutex::new(hosts),
            changed: Condvar::new(),
        }
    }

    /// One entry per host, in the launcher's order: its live workers,
    /// down while it is left alone after a failure, its last failure.
    pub(crate) fn stats(&self) -> Vec<HostStats> {
        let table = self.hosts.lock();
        table
            .iter()
            .map(|h| {
                let up = !matches!(h.health, Health::Down(_));
                HostStats::new(h.name.clone(), h.live, up, h.error.clone())
            })
            .collect()
    }

    /// Picks a host of `slots` (name, slots) for one more worker and
    /// counts it there; starts the checks that are due with `check` (which
    /// reports through [`record`](Self::record)), waiting only when no
    /// host is known to be up, at most `wait`.
    pub(crate) fn choose(
        &self,
        slots: &[(String, usize)],
        wait: Duration,
        check: &dyn Fn(usize) -> Result<(), String>,
    ) -> Result<usize, Error> {
        // A wait too long to represent means: as long as the checks take.
        let deadline = Instant::now().checked_add(wait);
        let mut last_look = false;
        let mut table = self.hosts.lock();
        loop {
            let now = Instant::now();
            for (i, h) in table.iter_mut().enumerate() {
                if matches!(h.health, Health::Down(until) if now >= until) {
                    h.health = Health::Unknown;
                }
                if h.health == Health::Unknown {
                    h.health = match check(i) {
                        Ok(()) => Health::Checking,
                        Err(e) => {
                            h.failures += 1;
                            let delay = HOST_BACKOFF.after(h.failures);
                            host_down(&h.name, &e, delay);
                            h.error = Some(e);
                            Health::Down(now + delay)
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
                .filter(|(i, h)| h.health == Health::Up && h.live < slots[*i].1)
                .max_by_key(|(i, h)| {
                    (
                        slots[*i].1.saturating_sub(h.live),
                        std::cmp::Reverse(h.live),
                    )
                })
                .map(|(i, _)| i);
            if let Some(i) = best {
                table[i].live += 1;
                return Ok(i);
            }
            let checking = table.iter().any(|h| h.health == Health::Checking);
            if !checking || last_look {
                return Err(Error::Io(all_down(slots, &table)));
            }
            // At the deadline, one last look (the checks time out on their
            // own); never a loop of looks, which would spin.
            last_look = match deadline {
                Some(d) => self.changed.wait_until(&mut table, d).timed_out(),
                None => {
                    self.changed.wait(&mut table);
                    false
                }
            };
        }
    }

    /// Records a check or a worker start: `Ok(true)` a worker started,
    /// `Ok(false)` a check passed, `Err` the host failed.
    pub(crate) fn record(&self, i: usize, outcome: Result<bool, String>) {
        let mut table = self.hosts.lock();
        if let Some(h) = table.get_mut(i) {
            match outcome {
                Ok(started) => {
                    if h.health != Health::Up {
                        tracing::info!(target: "concurrent_futures", host = %h.name, "host up");
                    }
                    h.health = Health::Up;
                    if started {
                        h.failures = 0;
                    }
                }
                Err(e) => {
                    h.failures += 1;
                    let delay = HOST_BACKOFF.after(h.failures);
                    host_down(&h.name, &e, delay);
                    h.health = Health::Down(Instant::now() + delay);
                    h.error = Some(e);
                }
            }
        }
        drop(table);
        self.changed.notify_all();
    }

    /// The host's link was lost after its agent answered (the connection
    /// dropped, the agent died, the link went silent): check the host
    /// again before the next link goes there.
    pub(crate) fn suspect(&self, i: usize) {
        let mut table = self.hosts.lock();
        if let Some(h) = table.get_mut(i) {
            if h.health == Health::Up {
                tracing::info!(target: "concurrent_futures", host = %h.name, "the link to the host was lost; checking the host again before its next link");
                h.health = Health::Unknown;
            }
        }
    }

    /// A worker on host `i` is gone: its slot is free.
    pub(crate) fn release(&self, i: usize) {
        let mut table = self.hosts.lock();
        if let Some(h) = table.get_mut(i) {
            h.live = h.live.saturating_sub(1);
        }
    }
}

/// A host is left alone for `delay` after `error`.
fn host_down(host: &str, error: &str, delay: Duration) {
    let delay_ms = delay.as_millis() as u64;
    tracing::warn!(target: "concurrent_futures", host, error, delay_ms, "host down; backing off");
}

/// Why no host can take a worker, and what happens next: nothing retries
/// by itself; a later launch (the next submit) checks a host again once
/// its pause is over.
fn all_down(slots: &[(String, usize)], table: &[HostState]) -> String {
    let now = Instant::now();
    let mut out = String::from("no ssh host can take a worker");
    for ((host, _), h) in slots.iter().zip(table) {
        out.push_str(&format!(
            "; {host}: {}",
            h.error.as_deref().unwrap_or("unreachable")
        ));
        if let Health::Down(until) = h.health {
            let left = until.saturating_duration_since(now).as_secs_f64();
            out.push_str(&format!(
                " (not tried again for {left:.1}s: a submit after that checks it again)"
            ));
        }
    }
    out.push_str("; the tasks waiting for a worker fail now");
    out
}

/// How long a host check's stderr may trail its exit.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// Runs one host check; `Err` holds ssh's own message. Out of the
/// terminal's process group, as the clients are: a Ctrl-C that the
/// program catches must not fail the check and take the host out.
pub(crate) fn check(mut cmd: Command, host: &str, timeout: Duration) -> Result<(), String> {
    own_process_group(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd.get_program().to_string_lossy()))?;
    let words = Arc::new(LastWords::default());
    // The reader says when it is done; it is not joined: a process the
    // client left behind may hold its stderr open long after it exited.
    let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
    let reading = child.stderr.take().map(|mut stderr| {
        let words = Arc::clone(&words);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = io::Read::read(&mut stderr, &mut buf) {
                words.push(&buf[..n]);
            }
            let _ = done_tx.send(());
        })
    });
    let deadline = Instant::now().checked_add(timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if deadline.map_or(true, |d| Instant::now() < d) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    if reading.is_some() {
        // Its last words come right after its exit; what holds the stream
        // beyond that is not waited for.
        let _ = done.recv_timeout(STDERR_GRACE);
    }
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "{} (ssh {})",
            words
                .last_line()
                .unwrap_or_else(|| format!("cannot reach {host}")),
            describe_exit(s)
        )),
        None => Err(format!("no answer from {host} within {timeout:?}")),
    }
}
