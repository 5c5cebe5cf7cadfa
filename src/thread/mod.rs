//! The thread pool: [`ThreadPoolExecutor`], its builder and worker loop.

mod builder;
mod pool;
mod worker;

pub use builder::{InitResult, ThreadPoolBuilder};
pub use pool::ThreadPoolExecutor;
