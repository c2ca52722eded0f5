//! Exit codes (listed in `--help` and the man pages): 0 success, 1 refused
//! or failed, 2 usage (clap), 3 an input file named on the command line
//! could not be read (the config, an image to inspect, an update or key).

use std::path::PathBuf;

pub const FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const UNREADABLE: i32 = 3;

/// An input file the command was given cannot be opened (exit 3). The OS's
/// cause is in the message, not `source()`, so it is printed once.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {cause}", path.display())]
pub struct Unreadable {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

/// The exit code of a failed command.
pub fn code(e: &anyhow::Error) -> i32 {
    let config_unreadable = |c: &(dyn std::error::Error + 'static)| {
        matches!(
            c.downcast_ref::<crate::config::ConfigError>(),
            Some(crate::config::ConfigError::Read { .. })
        )
    };
    if e.chain()
        .any(|c| c.is::<Unreadable>() || config_unreadable(c))
    {
        UNREADABLE
    } else {
        FAILED
    }
}
