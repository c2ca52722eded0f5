//! edgeimg: builds immutable edge OS images (README.md and docs/ describe the
//! pipeline); each module below is one stage or one concern.

pub mod agents;
pub mod artifact;
pub mod base;
pub mod boot;
pub mod bundle;
pub mod cache;
pub mod cli;
pub mod cmd;
pub mod commands;
pub mod config;
pub mod context;
pub mod disk;
pub mod docgen;
pub mod doctor;
pub mod exit;
pub mod flash;
pub mod fs;
pub mod ids;
pub mod image_read;
pub mod images;
pub mod inspect;
pub mod io_error;
pub mod k3s_inputs;
pub mod kubeconfig;
pub mod logging;
pub mod luks;
pub mod manifest;
pub mod new_file;
pub mod node;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod publish;
pub mod qemu;
pub mod read_full;
pub mod rootless;
pub mod secure_boot;
pub mod selinux;
pub mod sparse;
pub mod ssh_pubkey;
pub mod stage;
pub mod tar_members;
pub mod tuf;
pub mod update;
pub mod verity;

/// edgeimg's version, recorded in every image and manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
