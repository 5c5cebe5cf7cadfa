//! Catching panics at the task boundary, with their location.
//!
//! `catch_unwind` hands back only the payload. To also report *where* a task
//! panicked, a panic hook is installed once; while a thread runs a task it
//! records the location in a thread-local instead of printing the panic (the
//! panic reaches the user as [`Error::Panicked`], like an exception stored in
//! a Python future). Panics outside tasks go to the previous hook unchanged.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::Error;

thread_local! {
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    static BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    // The hook cannot be changed from a panicking thread (say, a done-callback
    // run by a `Promise` dropped during unwinding); that one catch then goes
    // without a location rather than aborting the process.
    if std::thread::panicking() {
        return;
    }
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                LOCATION.with(|slot| *slot.borrow_mut() = at);
                BACKTRACE.with(|slot| *slot.borrow_mut() = requested_backtrace());
            } else {
                previous(info);
            }
        }));
    });
}

/// The panicking task's backtrace, when the user asked for backtraces
/// (`RUST_BACKTRACE` or `RUST_LIB_BACKTRACE`, as `std` reads them).
fn requested_backtrace() -> Option<String> {
    let bt = std::backtrace::Backtrace::capture();
    (bt.status() == std::backtrace::BacktraceStatus::Captured).then(|| bt.to_string())
}

/// Runs `f`, turning a panic into [`Error::Panicked`] with its message,
/// location and (when asked for) backtrace.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Error> {
    install_hook();
    let outer = IN_TASK.with(|flag| flag.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    IN_TASK.with(|flag| flag.set(outer));
    result.map_err(|payload| {
        let location = LOCATION.with(|slot| slot.borrow_mut().take());
        let backtrace = BACKTRACE.with(|slot| slot.borrow_mut().take());
        Error::from_panic(payload.as_ref(), location, backtrace)
    })
}

/// Runs a user callback; a panic is reported (a `tracing` error event) and
/// swallowed so that the callbacks after it still run and the calling
/// worker survives.
pub(crate) fn run_callback(what: &str, f: impl FnOnce()) {
    match catch(f) {
        Ok(()) => {}
        Err(Error::Panicked {
            message,
            location: Some(at),
            ..
        }) => report(format_args!("{what} panicked at {at}: {message}")),
        Err(Error::Panicked { message, .. }) => report(format_args!("{what} panicked: {message}")),
        Err(e) => report(format_args!("{what} failed: {e}")),
    }
}

/// Reports a failed callback as an error event: silent unless the
/// application installs a `tracing` subscriber.
fn report(what: std::fmt::Arguments<'_>) {
    tracing::error!(target: "concurrent_futures", "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_reports_message_and_location() {
        let err = catch(|| -> u8 { panic!("boom {}", 7) }).unwrap_err();
        match err {
            Error::Panicked {
                message, location, ..
            } => {
                assert_eq!(message, "boom 7");
                let at = location.expect("location recorded");
                assert!(at.starts_with("src/panic.rs:"), "{at}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(catch(|| 5), Ok(5));
    }
}
