//! Host agents: one process per host that starts and relays that host's
//! workers, so that a host with K slots costs the pool one connection
//! (one `ssh`, one `srun` step) instead of K.
//!
//! An agent is this executable run with `CONCURRENT_FUTURES_WORKER=agent`:
//! [`init`](crate::init) serves as one. It answers the pool's handshake
//! like a worker, then starts workers on its host when the pool asks
//! (re-executing its own binary, as [`Local`](crate::launch::Local) does),
//! relays their input and output in frames tagged by worker
//! (`frames.rs`), signals them when the pool asks, and reports each one's
//! exit status. When its link closes, or stays silent too long, it kills
//! its workers and exits.

mod driver;
pub(crate) mod frames;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod hosts;
mod keeper;
mod link;
mod pipe;
pub(crate) mod serve;
mod slots;
mod worker;

pub(crate) use driver::{on_driver_thread, Output, Polled, Rider};
pub(crate) use hosts::HostLinks;
pub(crate) use link::{AgentLink, LinkOptions};
pub(crate) use worker::AgentWorker;

use std::ffi::OsString;
use std::time::Duration;

/// The environment that makes [`init`](crate::init) serve as an agent
/// with `slots` workers, pinging every `ping`, relaying at most `chunk`
/// bytes of output per frame.
pub(crate) fn agent_env(slots: usize, ping: Duration, chunk: usize) -> [(OsString, OsString); 2] {
    [
        (crate::process::WORKER_ENV.into(), serve::AGENT_MARK.into()),
        (
            serve::AGENT_ENV.into(),
            format!(
                "{}={slots},{}={},{}={chunk}",
                serve::SLOTS_KEY,
                serve::PING_KEY,
                ping.as_millis().max(1),
                serve::CHUNK_KEY,
            )
            .into(),
        ),
    ]
}
