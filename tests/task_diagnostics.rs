//! What a user sees when `task!` is given a function it cannot register:
//! a small crate that depends on this one is built with cargo, and its
//! compiler output must carry the messages `task!`'s docs promise.
//!
//! `compile_fail` doctests only prove that such code does not compile (on
//! stable, rustdoc does not check their error codes), so the words are
//! checked here. The first run builds the crate's dependencies into
//! `target/task-diagnostics` (about a minute on 2 cores); later runs reuse
//! them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Building the probe crate (dependencies included) must end by then.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// Writes a binary crate with `main_rs` next to this package and builds it;
/// returns the compiler's output. The crate reuses this package's
/// `Cargo.lock`, so it resolves the versions already in use.
fn build_probe(name: &str, main_rs: &str) -> (bool, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("task-diagnostics");
    let dir = target.join(name);
    std::fs::create_dir_all(dir.join("src")).expect("probe dir");
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nconcurrent-futures = {{ path = {root:?} }}\n\n[workspace]\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("probe manifest");
    std::fs::write(dir.join("src").join("main.rs"), main_rs).expect("probe main.rs");
    let lock = root.join("Cargo.lock");
    if lock.exists() {
        std::fs::copy(&lock, dir.join("Cargo.lock")).expect("probe lock");
    }
    let mut child = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--color", "never", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target.join("build"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo starts");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("cargo waits") {
            break status;
        }
        if started.elapsed() > BUILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("building {} took over {BUILD_LIMIT:?}", display(&dir));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().expect("reader").expect("utf-8 output");
    (status.success(), out)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_borrowed_argument_gets_the_crates_error_with_what_to_take() {
    let (ok, out) = build_probe(
        "borrowed_argument",
        r#"
fn shout(s: &str) -> String { s.to_uppercase() }
fn count(data: &[u8], byte: u8) -> usize { data.iter().filter(|&&b| b == byte).count() }
fn main() {
    let _one = concurrent_futures::task!(shout);
    let _two = concurrent_futures::task!(count);
}
"#,
    );
    assert!(!ok, "a task taking &str compiled:\n{out}");
    let ours = "error[E0277]: a task's argument cannot be a reference: \
                it arrives as bytes from another process";
    assert_eq!(out.matches(ours).count(), 2, "{out}");
    assert!(
        out.contains("take `String` for `&str`, `Vec<u8>` for `&[u8]`, `T` for `&T`"),
        "{out}"
    );
    // Ours comes first: the user reads it before rustc's lifetime error.
    let first_error = out.find("error").expect("an error");
    assert_eq!(out[first_error..].find(ours), Some(0), "{out}");
}

#[test]
fn an_owned_argument_compiles() {
    let (ok, out) = build_probe(
        "owned_argument",
        r#"
fn shout(s: String) -> String { s.to_uppercase() }
fn count(data: Vec<u8>, byte: u8) -> usize { data.iter().filter(|&&b| b == byte).count() }
fn main() {
    let _one = concurrent_futures::task!(shout);
    let _two = concurrent_futures::task!(count);
    let _three = concurrent_futures::task!(|(x, n): (u64, u64)| x * n);
}
"#,
    );
    assert!(ok, "{out}");
}

#[test]
fn a_capturing_closure_gets_rustcs_error_on_the_captured_variable() {
    let (ok, out) = build_probe(
        "capturing_closure",
        r#"
fn main() {
    let n = 3u64;
    let _t = concurrent_futures::task!(move |x: u64| x * n);
}
"#,
    );
    assert!(!ok, "a capturing closure compiled:\n{out}");
    assert!(
        out.contains("error[E0435]: attempt to use a non-constant value in a constant"),
        "{out}"
    );
}
