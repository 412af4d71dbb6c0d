//! The console: one line on stdin is one command, the way Node-RED's inject button worked.

use std::io::BufRead;

use tokio::sync::mpsc;

use crate::freezer::Action;

/// What a line typed on the console asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Enter alone: one event now from the next device in turn.
    InjectNext,
    /// A device id: one event now from that device.
    InjectDevice(String),
    /// `all`: one event now from every device.
    InjectAll,
    /// `door freezer3`, `defrost all`, `fail freezer2`, `fix freezer2`, `setpoint freezer2 -25`:
    /// do this to one device (`Some(id)`) or every device (`None`).
    Act { action: Action, device: Option<String> },
    /// A verb used wrongly: what to type instead.
    Misused(String),
    /// `q` (or `quit`): stop gracefully.
    Quit,
    /// Anything else; the console prints a hint and carries on.
    Unknown(String),
}

/// The one-line hint printed for a line the console does not understand.
pub const HINT: &str = "console: Enter = one event from the next device, <device id> = one event from that device, all = one from every device, door|defrost|fail|fix <id|all>, setpoint <id|all> <°C>, q = stop";

/// The verbs that act on a freezer.
const VERBS: [&str; 5] = ["door", "defrost", "fail", "fix", "setpoint"];

/// Reads one console line. `is_device` says whether a word names a device of this fleet.
pub fn parse(line: &str, is_device: impl Fn(&str) -> bool) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => Command::InjectNext,
        ["all"] => Command::InjectAll,
        ["q" | "quit" | "exit"] => Command::Quit,
        [word] if is_device(word) => Command::InjectDevice(word.to_string()),
        [verb, rest @ ..] if VERBS.contains(verb) => parse_action(verb, rest, is_device),
        _ => Command::Unknown(line.trim().to_string()),
    }
}

fn parse_action(verb: &str, rest: &[&str], is_device: impl Fn(&str) -> bool) -> Command {
    let usage = if verb == "setpoint" {
        "setpoint <device id|all> <°C>, e.g. setpoint freezer2 -25".to_string()
    } else {
        format!("{verb} <device id|all>, e.g. {verb} freezer2")
    };
    let (target, value) = match (verb, rest) {
        ("setpoint", [target, value]) => match value.parse::<f64>() {
            Ok(v) if v.is_finite() => (*target, Some(v)),
            _ => return Command::Misused(format!("'{value}' is not a temperature; {usage}")),
        },
        ("setpoint", _) => return Command::Misused(usage),
        (_, [target]) => (*target, None),
        _ => return Command::Misused(usage),
    };
    let device = match target {
        "all" => None,
        id if is_device(id) => Some(id.to_string()),
        id => return Command::Misused(format!("'{id}' is not a device of this fleet; {usage}")),
    };
    match Action::parse(verb, value) {
        Ok(action) => Command::Act { action, device },
        Err(why) => Command::Misused(why),
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

    #[test]
    fn parses_the_freezer_verbs() {
        let is_dev = |w: &str| w == "freezer2" || w == "freezer3";
        assert_eq!(
            parse("door freezer3", is_dev),
            Command::Act {
                action: Action::Door,
                device: Some("freezer3".into())
            }
        );
        assert_eq!(
            parse(" defrost all ", is_dev),
            Command::Act {
                action: Action::Defrost,
                device: None
            }
        );
        assert_eq!(
            parse("setpoint freezer2 -25", is_dev),
            Command::Act {
                action: Action::Setpoint(-25.0),
                device: Some("freezer2".into())
            }
        );
        for (line, says) in [
            ("fail", "fail <device id|all>"),
            ("fix freezer9", "'freezer9' is not a device of this fleet"),
            ("setpoint freezer2", "setpoint <device id|all> <°C>"),
            ("setpoint freezer2 cold", "'cold' is not a temperature"),
        ] {
            match parse(line, is_dev) {
                Command::Misused(m) => assert!(m.contains(says), "{line}: {m}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }
}
