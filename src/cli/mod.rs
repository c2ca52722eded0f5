//! Command-line definitions (clap). Nothing else in the crate defines flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "edgeimg", version, about = "Build immutable, air-gapped edge OS images that boot into a ready node", long_about = None)]
pub struct Cli {
    /// Only print errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    Zstd,
    Xz,
    None,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Board to build for (default: image.board in the config). See `edgeimg boards`.
    #[arg(long)]
    pub board: Option<String>,
    /// Configuration file (default: ./edgeimg.toml, else the built-in default).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the image: out/<name>-<board>.img plus .zst/.xz, .bmap, manifest.json, SHA256SUMS.
    Build {
        #[command(flatten)]
        config: ConfigArgs,
        /// Output directory.
        #[arg(long, short = 'o', default_value = "out")]
        out: PathBuf,
        /// Rebuild the cached base root filesystem instead of reusing it.
        #[arg(long)]
        refresh: bool,
        /// Compression of the distributable copy (overrides image.compression).
        #[arg(long, value_enum)]
        compress: Option<CompressArg>,
    },
    /// Print the resolved plan (packages, partitions, UUIDs, files) without building.
    Plan {
        #[command(flatten)]
        config: ConfigArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Boot an image in QEMU with its serial console on this terminal (Ctrl-A x quits).
    Run {
        /// The .img to boot (written to unless --snapshot).
        image: PathBuf,
        /// Board of the image (default: from manifest.json beside it or the file name).
        #[arg(long)]
        board: Option<String>,
        /// Discard every write the guest makes.
        #[arg(long)]
        snapshot: bool,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// Guest CPUs.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// Use KVM instead of TCG (also EDGEIMG_QEMU_KVM=1).
        #[arg(long)]
        kvm: bool,
    },
    /// Check the host for every tool the boards need, and say how to install what is missing.
    Doctor {
        /// Only check for these boards (default: all).
        #[arg(long)]
        board: Vec<String>,
    },
    /// List the boards edgeimg can build for.
    Boards,
}
