//! Error kinds that decide the exit code.
//!
//! Everything the user can fix by changing a flag, a file or the config is an [`InputError`]
//! (exit 2). It carries one finished sentence that names the culprit, the cause and the fix, so
//! `main` prints it as is. Anything else that stops a command is a run failure (exit 1).

use std::fmt;

/// Bad input: a flag, file or config value the user must fix. Exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Builds an [`InputError`] wrapped in `anyhow`, for `return Err(input!(...))`.
#[macro_export]
macro_rules! input {
    ($($arg:tt)*) => {
        anyhow::Error::new($crate::error::InputError(format!($($arg)*)))
    };
}

/// Why a file or folder could not be read, in words for the person at the terminal.
pub fn io_cause(e: &std::io::Error, folder: bool) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound if folder => "no such folder".into(),
        K::NotFound => "no such file".into(),
        K::PermissionDenied => "permission denied".into(),
        K::IsADirectory => "it is a folder, not a file".into(),
        K::NotADirectory => "it is a file, not a folder".into(),
        _ => e.to_string(),
    }
}

/// Exit codes shared by every command.
pub mod exit {
    /// The command did what was asked.
    pub const OK: i32 = 0;
    /// The command ran but failed (e.g. no device could connect).
    pub const RUN_FAILED: i32 = 1;
    /// Bad input: fix the flag, file or config named in the message.
    pub const BAD_INPUT: i32 = 2;
    /// The run went through but broke a `--fail-if` threshold.
    pub const THRESHOLD: i32 = 3;
}

/// The exit code for an error that stopped a command.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<InputError>()) {
        exit::BAD_INPUT
    } else {
        exit::RUN_FAILED
    }
}
