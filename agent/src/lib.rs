//! edgeimg-agent: the first-boot and readiness agent of edgeimg images.
//!
//! The binary (`src/main.rs`) only parses arguments; every subcommand is a
//! function here so tests can run the
//! whole flow against a temporary [`root::Root`].

// What the builder reads and writes the same way lives in the contract crate;
// re-exported so the agent's modules name it as before.
pub use edgeimg_contract::{bail, error, hex, schema, tomlerr};

pub mod bootpart;
pub mod config;
pub mod firstboot;
pub mod fsutil;
pub mod grow;
pub mod hostname;
pub mod k3s;
pub mod machine_id;
pub mod ready;
pub mod root;
pub mod scrub;
pub mod sshkeys;
pub mod status;
pub mod timefmt;
pub mod update;
pub mod users;

#[cfg(test)]
mod flow_tests;

pub use error::{Error, Result};
pub use root::Root;

/// Version of the agent, recorded in the first-boot stamp.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Log a line on stderr. systemd units route it to the journal and console;
/// no logging crate, to keep the static binary small.
pub fn log(msg: impl std::fmt::Display) {
    eprintln!("edgeimg-agent: {msg}");
}
