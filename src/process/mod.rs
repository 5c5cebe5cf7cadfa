//! The process pool: [`ProcessPoolExecutor`], its wire protocol, the worker
//! side ([`init`]) and how it starts workers.
//!
//! # The life of a task
//!
//! 1. `submit` encodes the argument into a [`job::Job`] and queues it
//!    (`pool.rs` → `shared.rs`, `Shared::enqueue`), starting a worker if
//!    the running ones cannot take it (`spawn.rs`, `launcher.rs` →
//!    [`crate::launch`]; under `Ssh` and `Slurm` the worker is started by
//!    its host's agent, through the host's link: [`crate::agent`]).
//! 2. A worker's writer thread takes it from the queue when that worker has
//!    room in its window (`pace.rs`), records it as held and sends a `Call`
//!    frame (`writer.rs`, `link.rs`, `protocol.rs`). Sent to an idle worker
//!    it runs; sent behind another it is held, pending, and can be
//!    recalled until it starts (`worker.rs`).
//! 3. The worker process reads frames as they arrive and answers recalls
//!    at once (`inbox.rs`); it runs the calls in order and writes each
//!    `Result` before it takes the next (`child.rs`).
//! 4. The worker's reader thread matches the answer to the front of what
//!    the worker holds, completes the future and opens the window
//!    (`reader.rs`); a time limit is armed while the task runs
//!    (`timer.rs`).
//! 5. When a worker's output ends, its reader reports one exit to the pool,
//!    which fails the task that ran and either breaks the pool or sends
//!    the tasks that never started to another worker (`shared.rs`).

mod bell;
mod builder;
mod child;
mod dispatch;
mod driven;
pub(crate) mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod inbox;
mod job;
mod launcher;
mod link;
#[cfg(all(test, loom))]
mod loom_model;
mod pace;
mod pool;
mod protocol;
mod reader;
mod shared;
mod spawn;
mod stats;
mod timer;
mod worker;
mod writer;

pub(crate) use bell::Bell;
pub use builder::ProcessPoolBuilder;
pub use child::init;
pub(crate) use child::{hello, take_stdio};
pub use pool::ProcessPoolExecutor;
pub(crate) use protocol::WORKER_ENV;
pub(crate) use reader::handshake;
pub(crate) use worker::mark_io_thread;
pub(crate) use writer::INIT_HINT;
