//! How a process ended, in words: the one description that error messages
//! use for workers, their clients (`ssh`, `srun`) and host checks.

use std::process::ExitStatus;

/// "exited with code 3", "was killed by signal SIGKILL (9)".
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        return describe_signal(sig, status.core_dumped());
    }
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => format!("ended with {status}"),
    }
}

/// "was killed by signal SIGKILL (9)", with ", core dumped" if it did.
pub(crate) fn describe_signal(sig: i32, core_dumped: bool) -> String {
    let core = if core_dumped { ", core dumped" } else { "" };
    format!("was killed by signal {} ({sig}{core})", signal_name(sig))
}

#[cfg(not(target_os = "linux"))]
fn signal_name(_sig: i32) -> &'static str {
    "signal"
}

/// Linux's numbering.
#[cfg(target_os = "linux")]
fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "unknown signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    #[cfg(target_os = "linux")]
    fn codes_and_signals_read_the_same_everywhere() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(7 << 8)),
            "exited with code 7"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "was killed by signal SIGKILL (9)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(6 | 0x80)),
            "was killed by signal SIGABRT (6, core dumped)"
        );
    }
}
