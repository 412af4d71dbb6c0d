//! The open-files limit: each connected device holds one socket.

/// File descriptors kept for everything but device connections.
const SPARE_FDS: u64 = 16;

/// Raises the open-files soft limit to the hard limit, and says how many devices fit when the
/// fleet comes near it.
pub fn raise_open_files_limit(devices: usize) {
    #[cfg(unix)]
    {
        let limit = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("could not raise the open-files limit: {e}");
                return;
            }
        };
        let fits = limit.saturating_sub(SPARE_FDS);
        if devices as u64 > fits {
            tracing::warn!(
                "the open-files limit is {limit}: about {fits} devices can connect, not {devices}; raise the \
                 hard limit (ulimit -Hn, or LimitNOFILE= for a service)"
            );
        } else if devices as u64 * 10 > fits * 9 {
            tracing::info!("the open-files limit is {limit}: room for about {fits} devices");
        }
    }
    #[cfg(not(unix))]
    let _ = devices;
}
