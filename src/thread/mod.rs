//! The thread pool: [`ThreadPoolExecutor`], its builder and worker loop.

mod builder;
pub(crate) mod job;
mod pool;
pub(crate) mod queue;
mod worker;

pub use builder::{InitResult, ThreadPoolBuilder};
pub use pool::ThreadPoolExecutor;
