//! The kernel send queues of this process's TCP connections: bytes written and not yet
//! acknowledged by the peer, summed over the connections and the largest. A queue that grows is
//! an endpoint (or a network) reading slower than the fleet writes. Sampled once a second on a
//! thread of its own, started by the first look, from /proc (through the procfs crate: the
//! process's socket inodes, then the TCP tables of its network namespace).

use std::collections::HashSet;
use std::sync::{Mutex, Once};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the queues are sampled.
const EVERY: Duration = Duration::from_secs(1);

/// One look at the send queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SendQueues {
    /// Established TCP connections of this process.
    pub connections: u64,
    /// Bytes in their send queues, all told.
    pub total_bytes: u64,
    /// The longest queue, in bytes.
    pub max_bytes: u64,
}

/// The latest sample (None until the first, or where /proc cannot be read).
pub fn latest() -> Option<SendQueues> {
    static LATEST: Mutex<Option<SendQueues>> = Mutex::new(None);
    static STARTED: Once = Once::new();
    let store = |s| *LATEST.lock().unwrap_or_else(|p| p.into_inner()) = s;
    STARTED.call_once(|| {
        store(sample());
        let spawned = std::thread::Builder::new()
            .name("send-queues".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EVERY);
                    store(sample());
                }
            });
        if let Err(e) = spawned {
            tracing::debug!("send queues not sampled: {e}");
        }
    });
    *LATEST.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the queues now.
pub fn sample() -> Option<SendQueues> {
    use procfs::process::{FDTarget, Process};
    let me = Process::myself().ok()?;
    let sockets: HashSet<u64> = me
        .fd()
        .ok()?
        .filter_map(|fd| match fd.ok()?.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let mut q = SendQueues::default();
    let tables = [me.tcp(), me.tcp6()];
    for entry in tables.into_iter().flatten().flatten() {
        if entry.state != procfs::net::TcpState::Established || !sockets.contains(&entry.inode) {
            continue;
        }
        let bytes = u64::from(entry.tx_queue);
        q.connections += 1;
        q.total_bytes += bytes;
        q.max_bytes = q.max_bytes.max(bytes);
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_peer_that_does_not_read_fills_the_send_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let before = sample().expect("/proc is readable");
        assert!(
            before.connections >= 2,
            "both ends are this process's: {before:?}"
        );
        // The server end never reads: once its receive buffer is full, the rest waits in ours.
        client.set_nonblocking(true).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0usize;
        while written < 64 << 20 {
            match client.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        let after = sample().unwrap();
        assert!(after.max_bytes >= 64 * 1024, "{after:?} after {written} bytes");
        assert!(after.total_bytes >= after.max_bytes);
    }
}
