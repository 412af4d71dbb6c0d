//! The console: one line on stdin is one command, the way Node-RED's inject button worked.

use std::io::BufRead;

use tokio::sync::mpsc;

/// What a line typed on the console asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Enter alone: one event now from the next device in turn.
    InjectNext,
    /// A device id: one event now from that device.
    InjectDevice(String),
    /// `all`: one event now from every device.
    InjectAll,
    /// `q` (or `quit`): stop gracefully.
    Quit,
    /// Anything else; the console prints a hint and carries on.
    Unknown(String),
}

/// The one-line hint printed for a line the console does not understand.
pub const HINT: &str = "console: Enter = one event from the next device, <device id> = one event from that device, all = one from every device, q = stop";

/// Reads one console line. `is_device` says whether a word names a device of this fleet.
pub fn parse(line: &str, is_device: impl Fn(&str) -> bool) -> Command {
    match line.trim() {
        "" => Command::InjectNext,
        "all" => Command::InjectAll,
        "q" | "quit" | "exit" => Command::Quit,
        word if is_device(word) => Command::InjectDevice(word.to_string()),
        word => Command::Unknown(word.to_string()),
    }
}

/// Console lines from stdin, read on a plain thread (stdin has no truly async API): the thread
/// ends at end of input, so a closed or redirected stdin costs nothing and never spins.
pub struct ConsoleLines {
    rx: Option<mpsc::Receiver<String>>,
}

impl ConsoleLines {
    /// Starts reading stdin.
    pub fn spawn() -> ConsoleLines {
        let (tx, rx) = mpsc::channel(16);
        let spawned = std::thread::Builder::new().name("console".into()).spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        ConsoleLines {
            rx: spawned.is_ok().then_some(rx),
        }
    }

    /// The next line; pending forever once stdin has ended.
    pub async fn recv(&mut self) -> Option<String> {
        let line = match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        };
        if line.is_none() {
            self.rx = None;
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let is_dev = |w: &str| w == "freezer2";
        assert_eq!(parse("", is_dev), Command::InjectNext);
        assert_eq!(parse("  \r", is_dev), Command::InjectNext);
        assert_eq!(parse("all", is_dev), Command::InjectAll);
        assert_eq!(parse("q", is_dev), Command::Quit);
        assert_eq!(
            parse("freezer2\r", is_dev),
            Command::InjectDevice("freezer2".into())
        );
        assert_eq!(parse("freezer9", is_dev), Command::Unknown("freezer9".into()));
    }
}
