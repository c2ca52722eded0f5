//! edgeimg-contract: everything the builder (`edgeimg`) and the on-device
//! agent (`edgeimg-agent`) must read and write the same way, defined once.
//!
//! The agent is a small static musl binary, so this crate depends only on
//! crates the agent needs anyway (serde, toml, ed25519, sha2).

pub mod arch;
pub mod bootfs;
pub mod cmdline;
pub mod error;
pub mod fat;
pub mod hex;
pub mod k3s_config;
pub mod partition;
pub mod schema;
pub mod ssh;
pub mod tomlerr;
pub mod update;

pub use error::{Error, Result};
