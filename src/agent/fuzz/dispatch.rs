//! The `agent_dispatch` fuzz target: the agent's dispatch over arbitrary
//! pool frames, against a fake host that records what it was asked, and
//! the seeds that start the fuzzer.

use std::collections::HashMap;

use super::messages::AgentRequest;
use crate::agent::frames::{FromAgent, ToAgent};
use crate::agent::serve::{dispatch, Host};
use crate::process::frame::read_frame;

/// The slots of the fake host [`agent_side`] dispatches against.
const FAKE_SLOTS: usize = 2;

/// A worker of the fake host.
#[derive(Debug)]
struct FakeWorker {
    pid: u32,
    /// Its stdin is open.
    open: bool,
}

/// A host that starts no process: it records what it is asked, and a
/// worker it is asked to signal dies and is reaped at once.
#[derive(Debug, Default)]
pub(crate) struct Fake {
    workers: HashMap<u32, FakeWorker>,
    next_pid: u32,
    /// Every call, in order, for the tests to read.
    pub(crate) calls: Vec<String>,
}

impl Host for Fake {
    fn live(&self) -> usize {
        self.workers.len()
    }

    fn holds(&self, tag: u32) -> bool {
        self.workers.contains_key(&tag)
    }

    fn start(
        &mut self,
        tag: u32,
        args: Vec<Vec<u8>>,
        _env: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u32, String> {
        self.calls.push(format!("start {tag}"));
        if args.iter().any(|a| a == b"fail") {
            return Err("the fake refuses `fail`".to_string());
        }
        self.next_pid += 1;
        let pid = 1000 + self.next_pid;
        self.workers.insert(tag, FakeWorker { pid, open: true });
        Ok(pid)
    }

    fn feed(&mut self, tag: u32, bytes: &[u8]) {
        match self.workers.get(&tag) {
            Some(w) if w.open => self.calls.push(format!("feed {tag} {}", bytes.len())),
            _ => self.calls.push(format!("drop {tag}")),
        }
    }

    fn close(&mut self, tag: u32) {
        if let Some(w) = self.workers.get_mut(&tag) {
            w.open = false;
            self.calls.push(format!("close {tag}"));
        }
    }

    fn signal(&mut self, tag: u32, signal: u8) {
        if let Some(w) = self.workers.remove(&tag) {
            self.calls.push(format!("signal {tag} {signal} {}", w.pid));
        }
    }
}

impl Fake {
    /// A worker that exits on its own (and is reaped).
    #[cfg(test)]
    pub(crate) fn exit(&mut self, tag: u32) {
        self.workers.remove(&tag);
    }
}

/// Runs the agent's dispatch over `data` as the pool's frames, against a
/// fake host of 2 slots, until the input ends or a frame is refused.
/// Returns how many answers it wrote.
///
/// # Errors
///
/// A broken invariant: more live workers than slots, a `Spawn` without
/// exactly one answer for its tag (or an answer to another frame), a
/// `Started` for a worker the host did not start, an answer the pool
/// would refuse, or a frame refused other than a `Spawn` of a live tag.
pub fn agent_side(data: &[u8]) -> Result<usize, String> {
    let mut host = Fake::default();
    let mut r = data;
    let mut answers = 0;
    while let Ok(Some(frame)) = read_frame(&mut r) {
        let Ok(message) = ToAgent::decode(&frame) else {
            break; // the agent exits
        };
        let spawn = match &message {
            ToAgent::Spawn { tag, .. } => Some((*tag, host.holds(*tag))),
            _ => None,
        };
        let started = host.next_pid;
        let answer = match dispatch(message, FAKE_SLOTS, &mut host) {
            Ok(answer) => answer,
            Err(_) if matches!(spawn, Some((_, true))) && host.next_pid == started => {
                break; // the agent exits
            }
            Err(e) => return Err(format!("refused a frame it must take: {e}")),
        };
        if host.live() > FAKE_SLOTS {
            return Err(format!(
                "{} workers live in {FAKE_SLOTS} slots",
                host.live()
            ));
        }
        let Some(answer) = answer else {
            if spawn.is_some() {
                return Err("a spawn without an answer".to_string());
            }
            continue;
        };
        let (Some((tag, _)), Some(answered)) = (spawn, answered_tag(&answer)) else {
            return Err(format!("an answer to no spawn: {answer:?}"));
        };
        if tag != answered {
            return Err(format!("a spawn of {tag} answered for {answered}"));
        }
        match answer {
            FromAgent::Started { pid, .. }
                if host.next_pid == started
                    || host.workers.get(&tag).map(|w| w.pid) != Some(pid) =>
            {
                return Err(format!(
                    "started {tag} as {pid}, which the host did not start"
                ));
            }
            FromAgent::SpawnFailed { .. } if host.next_pid != started => {
                return Err(format!("a spawn of {tag} failed after the host started it"));
            }
            _ => {}
        }
        let mut buf = Vec::new();
        answer.encode(&mut buf).map_err(|e| e.to_string())?;
        let read = read_frame(&mut &buf[..]).map_err(|e| e.to_string())?;
        let decoded = read.as_ref().map(FromAgent::decode);
        if !matches!(&decoded, Some(Ok(d)) if *d == answer) {
            return Err(format!("{answer:?} reads back as {decoded:?}"));
        }
        answers += 1;
    }
    Ok(answers)
}

/// The tag of a spawn's answer.
fn answered_tag(answer: &FromAgent<'_>) -> Option<u32> {
    match answer {
        FromAgent::Started { tag, .. } | FromAgent::SpawnFailed { tag, .. } => Some(*tag),
        _ => None,
    }
}
/// Well-formed pool frames for the `agent_dispatch` fuzz target: starting
/// points for the fuzzer, replayed by the corpus test.
pub fn agent_seeds() -> Vec<Vec<u8>> {
    let spawn = |tag: u32, arg: &str| {
        AgentRequest::Spawn {
            tag,
            args: vec![arg.to_string(), "--exact".to_string()],
            env: vec![("CONCURRENT_FUTURES_WORKER".to_string(), "1".to_string())],
        }
        .encode()
    };
    let data = |tag: u32, bytes: &[u8]| {
        AgentRequest::Data {
            tag,
            bytes: bytes.to_vec(),
        }
        .encode()
    };
    let close = |tag| AgentRequest::Close { tag }.encode();
    let kill = |tag| AgentRequest::Signal { tag, kill: true }.encode();
    let term = |tag| AgentRequest::Signal { tag, kill: false }.encode();
    let ping = AgentRequest::Ping.encode();
    vec![
        // A worker's whole life.
        [
            spawn(1, "entry"),
            data(1, b"abc"),
            close(1),
            data(1, b"late"),
            ping.clone(),
        ]
        .concat(),
        // Two slots: the third spawn is refused until one is reaped.
        [
            spawn(1, "a"),
            spawn(2, "b"),
            spawn(3, "c"),
            kill(1),
            spawn(3, "c"),
            term(2),
            data(9, b"to nobody"),
        ]
        .concat(),
        // A failed start, then a spawn of a live tag (a protocol error).
        [
            spawn(1, "fail"),
            spawn(2, "ok"),
            spawn(2, "again"),
            ping.clone(),
        ]
        .concat(),
        // A signal nobody takes, and a bad one.
        [kill(5), ping, vec![6, 0, 0, 0, 0x13, 1, 0, 0, 0, 2]].concat(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_dispatch_cleanly_and_answer_every_spawn() {
        let answers: Vec<usize> = agent_seeds()
            .iter()
            .map(|s| agent_side(s).unwrap())
            .collect();
        // 1; 3 + 1 after a kill; a failure, a start, then the agent exits; none.
        assert_eq!(answers, [1, 4, 2, 0]);
    }

    #[test]
    fn every_prefix_of_a_seed_is_handled() {
        for seed in agent_seeds() {
            for cut in 0..seed.len() {
                agent_side(&seed[..cut]).unwrap();
            }
        }
    }
}
