//! Compile-time checks that the public types can cross threads as promised.
//!
//! Nothing here runs anything: if a type loses an auto trait, this file
//! stops compiling.

use std::cell::Cell;
use std::rc::Rc;

use concurrent_futures::{
    AsCompleted, AsCompletedTimeout, CancelHandle, Error, Future, Map, Promise, ReturnWhen,
    Shutdown, Task, ThreadPoolBuilder, ThreadPoolExecutor,
};

fn send<T: Send>() {}
fn send_sync<T: Send + Sync>() {}
fn unpin<T: Unpin>() {}
fn spawnable<F: std::future::Future + Send + 'static>() {}
fn stream<S: futures::Stream + Send + Unpin>() {}
fn std_error<E: std::error::Error + Send + Sync + Clone + Eq + 'static>() {}

/// `T: Send` but not `Sync`: a `Future<T>` must still be `Send + Sync`.
type SendOnly = Cell<u8>;

#[test]
fn future_is_send_and_sync_when_its_value_is_send() {
    send_sync::<Future<u32>>();
    send_sync::<Future<String>>();
    send_sync::<Future<SendOnly>>();
    send_sync::<&Future<SendOnly>>();
    unpin::<Future<SendOnly>>();
    spawnable::<Future<String>>();
    spawnable::<Future<SendOnly>>();
}

#[test]
fn promise_and_cancel_handle_cross_threads() {
    send::<Promise<u32>>();
    send::<Promise<SendOnly>>();
    send_sync::<CancelHandle>();
}

#[test]
fn iterators_cross_threads() {
    send::<Map<'static, u32>>();
    send::<Map<'static, SendOnly>>();
    send_sync::<AsCompleted<Future<u32>>>();
    send_sync::<AsCompleted<&Future<SendOnly>>>();
    send::<AsCompleted<&mut Future<SendOnly>>>();
    send_sync::<AsCompletedTimeout<Future<u32>>>();
    stream::<AsCompleted<Future<u32>>>();
    stream::<AsCompleted<&Future<SendOnly>>>();
}

#[test]
fn pool_and_options_are_send_and_sync() {
    send_sync::<ThreadPoolExecutor>();
    send_sync::<ThreadPoolBuilder>();
    send_sync::<concurrent_futures::AnyExecutor>();
    send_sync::<Shutdown>();
    send_sync::<ReturnWhen>();
    send_sync::<Task<u64, u64>>();
    send_sync::<Task<(String, Vec<u8>), Option<u32>>>();
}

#[test]
fn error_is_a_shareable_std_error() {
    std_error::<Error>();
    send_sync::<concurrent_futures::Result<u8>>();
}

/// The negative side, by the auto-trait ambiguity trick: `assert_not!(T:
/// Send)` compiles only if `T` is not `Send` (with two candidate impls the
/// call is ambiguous).
macro_rules! assert_not {
    ($t:ty : $tr:path) => {{
        trait AmbiguousIfImpl<A> {
            fn some_item() {}
        }
        impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
        impl<T: ?Sized + $tr> AmbiguousIfImpl<u8> for T {}
        let _ = <$t as AmbiguousIfImpl<_>>::some_item;
    }};
}

#[test]
fn values_that_cannot_cross_threads_keep_their_handles_local() {
    assert_not!(Future<Rc<u8>>: Send);
    assert_not!(Future<Rc<u8>>: Sync);
    assert_not!(Promise<Rc<u8>>: Send);
    assert_not!(Map<'static, Rc<u8>>: Send);
}
