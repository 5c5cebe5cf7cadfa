//! The hosts the cluster examples take on their command line:
//! `node1:4 node2:4` (slots after the colon, 1 without), and `-F file` for
//! an ssh config. Shared by `cluster.rs` and `monitor.rs`.

use concurrent_futures::launch::Ssh;
use concurrent_futures::Error;

/// The `Ssh` launcher `args` describe, or `None` when there are none.
pub(crate) fn ssh_from_args(args: &[String]) -> Result<Option<Ssh>, Error> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut ssh = Ssh::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "-F" {
            let file = words
                .next()
                .ok_or_else(|| Error::InvalidArgument("-F needs a file".into()))?;
            ssh = ssh.ssh_args(["-F", file]);
            continue;
        }
        let (host, slots) = word.rsplit_once(':').unwrap_or((word, "1"));
        let slots = slots
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("bad slots in {word}")))?;
        ssh = ssh.host(host, slots);
    }
    Ok(Some(ssh))
}
