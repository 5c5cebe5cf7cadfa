//! The process-pool conformance tests that apply to every launcher (submit,
//! map, cancel, shutdown, crash, panics, environment, stdout, every byte of
//! a frame), run as one suite over `Local`, `Ssh` (two loopback sshds) and
//! `Slurm` (job steps of the allocation the tests run in).
//!
//! The daemons come from `scripts/test-cluster`; see `cluster_common`.
//! Time limits and `shutdown_timeout` end the remote process too.

use std::time::Duration;

use crate::cluster_common::{over, slurm_node, Via};
use crate::process_common::*;
use concurrent_futures::{task, Error};

fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

fn env_var(key: String) -> Option<String> {
    std::env::var(key).ok()
}

fn panics(message: String) -> u32 {
    panic!("{message}")
}

fn chatty(lines: u32) -> u32 {
    for i in 0..lines {
        println!("line {i} of a task that prints\r");
    }
    lines
}

/// Writes this worker's pid to `{dir}/pid-<n>`, then never returns.
fn stuck_with_pid(dir: String) -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let me = std::process::id();
    let _ = std::fs::write(format!("{dir}/pid-{me}-{n}"), b"");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The pid `stuck_with_pid` wrote in `scratch` (the hosts are this machine).
fn stuck_pid(scratch: &Scratch) -> u32 {
    let mut pid = None;
    assert!(within(LONG, || {
        pid = scratch.pids("pid-").first().copied();
        pid.is_some()
    }));
    pid.unwrap_or(0)
}

fn a_time_limit_ends_the_task_and_its_process(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let scratch = Scratch::new("cluster-limit");
        let limit = Duration::from_millis(500);
        let mut fut = pool.submit(task!(stuck_with_pid).time_limit(limit), scratch.dir());
        let pid = stuck_pid(&scratch);
        assert_eq!(fut.result_timeout(LONG), Err(Error::TimeLimit(limit)));
        assert!(
            within(LONG, || !alive(pid)),
            "worker {pid} outlived its limit"
        );
        let mut fut = pool.submit(task!(square), 6);
        assert_eq!(fut.result_timeout(LONG), Ok(36));
    });
}

fn shutdown_timeout_leaves_no_worker(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let scratch = Scratch::new("cluster-shutdown-timeout");
        let mut fut = pool.submit(task!(stuck_with_pid), scratch.dir());
        let pid = stuck_pid(&scratch);
        assert!(!pool.shutdown_timeout(Duration::from_millis(300)));
        assert!(matches!(
            fut.result_timeout(Duration::ZERO),
            Err(Error::BrokenPool(m)) if m.contains("shutdown_timeout")
        ));
        assert!(within(LONG, || !alive(pid)), "worker {pid} is left behind");
    });
}

fn submit_returns_the_value(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let mut fut = pool.submit(task!(square), 7);
        assert_eq!(fut.result_timeout(LONG).expect("square"), 49);
        let mut fut = pool.submit(task!(pow), (3, 4));
        assert_eq!(fut.result_timeout(LONG).expect("pow"), 81);
    });
}

fn map_is_in_input_order(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let expected: Vec<u64> = (0..2000u64).map(|x| x * x).collect();
        let got: Vec<u64> = pool
            .map(task!(square), 0..2000u64)
            .timeout(LONG)
            .collect::<Result<_, _>>()
            .expect("map");
        assert_eq!(got, expected);
        let got: Vec<u64> = pool
            .map(task!(square), (0..50u64).collect::<Vec<_>>())
            .chunksize(3)
            .timeout(LONG)
            .collect::<Result<_, _>>()
            .expect("map chunksize 3");
        assert_eq!(got, expected[..50]);
    });
}

fn cancel_reaches_a_queued_task(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let scratch = Scratch::new("cluster-cancel");
        let gates: Vec<_> = (0..2)
            .map(|_| pool.submit(task!(gate), scratch.dir()))
            .collect();
        scratch.wait_started(1);
        // Beyond what the busy workers may have been sent already.
        let queued: Vec<_> = (0..20).map(|i| pool.submit(task!(square), i)).collect();
        let last = queued.last().expect("queued tasks");
        assert!(
            last.cancel(),
            "a task behind two busy workers is still pending"
        );
        scratch.open();
        for mut g in gates {
            g.result_timeout(LONG).expect("gate");
        }
        let mut cancelled = 0;
        for mut f in queued {
            match f.result_timeout(LONG) {
                Ok(_) => {}
                Err(Error::Cancelled) => cancelled += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(cancelled >= 1);
    });
}

fn shutdown_finishes_submitted_work(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let futs: Vec<_> = (0..30).map(|_| pool.submit(task!(sleep_ms), 5)).collect();
        pool.shutdown();
        for mut f in futs {
            assert!(f.done());
            f.result_timeout(LONG)
                .expect("a task submitted before shutdown");
        }
        let mut late = pool.submit(task!(square), 1);
        assert_eq!(late.result_timeout(LONG), Err(Error::Shutdown));
    });
}

fn crash_names_the_worker(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let mut fut = pool.submit(task!(exit_with), 7);
        let err = fut.result_timeout(LONG).expect_err("the worker exits");
        let Error::BrokenPool(reason) = &err else {
            panic!("{err}")
        };
        assert!(reason.contains("exited with code 7"), "{reason}");
        match via {
            Via::Local => {}
            Via::Ssh => assert!(reason.contains(" on node"), "{reason}"),
            Via::Slurm => assert!(
                reason.contains(&format!(" on {}", slurm_node())),
                "{reason}"
            ),
        }
    });
}

fn panic_keeps_its_message(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        let mut fut = pool.submit(task!(panics), "boom over the wire".to_string());
        match fut.result_timeout(LONG) {
            Err(Error::Panicked { message, .. }) => assert_eq!(message, "boom over the wire"),
            other => panic!("{other:?}"),
        }
        let mut fut = pool.submit(task!(square), 3);
        assert_eq!(fut.result_timeout(LONG), Ok(9));
    });
}

fn env_reaches_the_worker(via: Via) {
    over(via, move |b| {
        let pool = b
            .env("CF_CLUSTER_MARK", "it's \"here\" $HOME")
            .build()
            .expect("pool");
        let mut fut = pool.submit(task!(env_var), "CF_CLUSTER_MARK".to_string());
        assert_eq!(
            fut.result_timeout(LONG).expect("env"),
            Some("it's \"here\" $HOME".to_string())
        );
    });
}

fn every_byte_of_a_frame_survives(via: Via) {
    over(via, move |b| {
        let pool = b.build().expect("pool");
        // Every byte value, line ends and terminal control characters, and
        // 0xff runs that look like 4 GiB length prefixes; then 4 MiB of it.
        let mut pattern: Vec<u8> = (0..=255u8).collect();
        pattern.extend_from_slice(b"\r\n\n\r\x03\x04\x1a\x11\x13\x00\xff\xff\xff\xff\xff\xff");
        let big: Vec<u8> = pattern.iter().copied().cycle().take(4 << 20).collect();
        for bytes in [pattern, big] {
            let mut fut = pool.submit(task!(echo), bytes.clone());
            assert!(
                fut.result_timeout(LONG).expect("echo") == bytes,
                "bytes changed in transit"
            );
        }
        let mut fut = pool.submit(task!(chatty), 1000);
        assert_eq!(fut.result_timeout(LONG), Ok(1000));
    });
}

fn short_tasks_do_not_wait_behind_a_long_one(via: Via) {
    over(via, |b| {
        let pool = b.build().expect("a pool");
        short_tasks_after_a_burst_run_beside_a_long_one(&pool);
    });
}

#[test]
fn short_tasks_do_not_wait_behind_a_long_one_on_a_host_of_two_slots() {
    crate::cluster_common::over_ssh(|config| {
        let pool = builder()
            .max_workers(2)
            .launcher(crate::cluster_common::ssh(&config, &[("node1", 2)]))
            .build()
            .expect("a pool");
        short_tasks_after_a_burst_run_beside_a_long_one(&pool);
    });
}

/// One module per launcher, each running every test above under its own
/// name (`Ssh::submit_returns_the_value`).
macro_rules! suite {
    ([$($via:ident),*], $tests:tt) => {$(
        suite!(@one $via $tests);
    )*};
    (@one $via:ident [$($test:ident),* $(,)?]) => {
        #[allow(non_snake_case)]
        mod $via {
            use super::*;
            $(
                #[test]
                fn $test() {
                    super::$test(Via::$via)
                }
            )*
        }
    };
}

suite!(
    [Local, Ssh, Slurm],
    [
        submit_returns_the_value,
        map_is_in_input_order,
        cancel_reaches_a_queued_task,
        shutdown_finishes_submitted_work,
        crash_names_the_worker,
        panic_keeps_its_message,
        env_reaches_the_worker,
        every_byte_of_a_frame_survives,
        a_time_limit_ends_the_task_and_its_process,
        shutdown_timeout_leaves_no_worker,
        short_tasks_do_not_wait_behind_a_long_one,
    ]
);
