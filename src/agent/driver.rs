//! A host link's driver thread: it serves every pool worker on the link,
//! so that a host costs the pool a few threads whatever its number of
//! workers (the link's reader and the agent's stderr are the others).
//!
//! A worker the pool attached to the link ([`AgentWorker::attach`]) is a
//! [`Rider`]: a state machine the driver polls with whatever output the
//! link's reader took in for it since the last poll. The rider reads its
//! frames from that output, sends its tasks, recalls and closing through
//! the link, and settles its end; it never blocks, and says when it wants
//! to be polled again. The driver polls every rider whenever its bell
//! rings: the link's reader rings it for output, and the pool for
//! anything that would wake a worker's own writer thread.
//!
//! [`AgentWorker::attach`]: super::worker::AgentWorker::attach

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use super::link::Link;
use super::slots::Slot;

/// The output one worker's agent relayed since the rider last looked.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Bytes of its stdout.
    pub(crate) stdout: Vec<u8>,
    /// Its stdout ended (or the link did).
    pub(crate) stdout_end: bool,
    /// Bytes of its stderr.
    pub(crate) stderr: Vec<u8>,
    /// Its stderr ended (or the link did).
    pub(crate) stderr_end: bool,
}

impl Output {
    /// Nothing more will come.
    pub(super) fn ended() -> Output {
        Output {
            stdout_end: true,
            stderr_end: true,
            ..Output::default()
        }
    }
}

/// What a rider's poll did and wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Polled {
    /// It has nothing more to do: the worker ended and is settled.
    pub(crate) done: bool,
    /// It changed something (read or sent), which may let another rider
    /// go on: the driver polls them all again before it rests.
    pub(crate) progress: bool,
    /// Poll it again at this time even if the bell does not ring.
    pub(crate) wake: Option<Instant>,
}

/// A worker driven by its link's driver thread (the pool's side of it is
/// `process/driven.rs`).
pub(crate) trait Rider: Send {
    /// Takes in `output` and does what can be done without blocking on
    /// the worker.
    fn poll(&mut self, output: Output) -> Polled;
}

thread_local! {
    /// True on a link's driver thread.
    static DRIVER: Cell<bool> = const { Cell::new(false) };
}

/// True on a host link's driver thread, which must not wait for what only
/// it can deliver: a launch (it may connect to another host), or a pool's
/// workers to exit.
pub(crate) fn on_driver_thread() -> bool {
    DRIVER.with(Cell::get)
}

/// The driver thread: polls the link's riders until the link has ended
/// and every rider is done.
pub(super) fn drive(link: Arc<Link>) {
    crate::process::mark_io_thread();
    DRIVER.with(|d| d.set(true));
    let mut riders: Vec<(u32, Box<dyn Rider>)> = Vec::new();
    let mut outputs: Vec<Output> = Vec::new();
    loop {
        {
            let mut st = link.state.lock();
            riders.append(&mut st.arriving);
            if riders.is_empty() && link.why_gone(&st).is_some() {
                st.driving = false;
                return;
            }
            outputs.clear();
            outputs.extend(riders.iter().map(|(tag, _)| {
                st.workers
                    .get_mut(tag)
                    .map_or_else(Output::ended, Slot::take_output)
            }));
        }
        let mut wake: Option<Instant> = None;
        let mut progress = false;
        let mut fresh = outputs.drain(..);
        riders.retain_mut(|(_, rider)| {
            let polled = rider.poll(fresh.next().unwrap_or_else(Output::ended));
            progress |= polled.progress;
            if let Some(t) = polled.wake {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            !polled.done
        });
        drop(fresh);
        if !progress {
            link.bell.wait(wake);
        }
    }
}
