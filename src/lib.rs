//! Python's `concurrent.futures`, done properly in Rust.
#![forbid(unsafe_code)]

mod error;
mod executor;
mod future;
mod map;
mod panic;
mod process;
mod task;
mod thread;
mod wait;

pub use error::{Error, Result};
pub use executor::{Executor, Shutdown};
pub use future::{CancelHandle, Future, Promise};
pub use map::Map;
pub use process::{init, ProcessPoolBuilder, ProcessPoolExecutor};
pub use task::{Single, Spread, Task, TaskFn};
pub use thread::{InitResult, ThreadPoolBuilder, ThreadPoolExecutor};
pub use wait::{as_completed, wait, AsCompleted, AsCompletedTimeout, AsFuture, ReturnWhen};

#[doc(hidden)]
pub mod __private {
    pub use crate::task::{linkme, ErasedTask, TaskEntry, TASKS};
}
