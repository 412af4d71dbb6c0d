//! `report merge` and `report show`.

use anyhow::Result;

use crate::cli::ReportCommand;
use crate::error::exit;
use crate::report::{self, merge};

pub fn run(cmd: ReportCommand) -> Result<i32> {
    match cmd {
        ReportCommand::Merge { files, out } => {
            let reports = files
                .iter()
                .map(|f| merge::read(f).map(|r| (f.display().to_string(), r)))
                .collect::<Result<Vec<_>>>()?;
            let merged = merge::merge(reports)?;
            report::write(&merged, out.as_deref().unwrap_or(std::path::Path::new("-")))?;
            eprint!("{}", report::summary(&merged));
            Ok(exit::OK)
        }
        ReportCommand::Show { file, html } => {
            let r = merge::read(&file)?;
            print!("{}", report::summary(&r));
            if let Some(out) = html {
                std::fs::write(&out, report::html::render(&r))
                    .map_err(|e| crate::input!("--html {}: cannot write: {e}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
            Ok(exit::OK)
        }
    }
}
