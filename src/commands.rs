//! One function per subcommand; `main.rs` only dispatches here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::artifact::Compression;
use crate::cli::{CompressArg, ConfigArgs};
use crate::config::{self, board};
use crate::pipeline::{self, BuildOptions};

pub fn build(c: ConfigArgs, out: PathBuf, refresh: bool, compress: Option<CompressArg>, quiet: bool) -> Result<()> {
    let compression = compress.map(|c| match c {
        CompressArg::Zstd => Compression::Zstd,
        CompressArg::Xz => Compression::Xz,
        CompressArg::None => Compression::None,
    });
    let report = pipeline::build(&BuildOptions { config: c.config, board: c.board, out, refresh, compression, quiet })?;
    if !quiet {
        for o in &report.outputs {
            println!("{}", o.display());
        }
    }
    Ok(())
}

pub fn plan(c: ConfigArgs, json: bool) -> Result<()> {
    let cfg = config::load(c.config.as_deref(), c.board.as_deref())?;
    let plan = crate::plan::make(&cfg);
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{plan}");
    }
    Ok(())
}

/// The board of an image: `--board`, else manifest.json beside it, else the
/// `-<board>.img` suffix of its name.
pub fn board_of_image(image: &Path, board: Option<&str>) -> Result<board::Board> {
    if let Some(b) = board {
        return Ok(board::load(b)?);
    }
    let manifest = image.with_file_name("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", manifest.display()))?;
        let file_matches = v["image"]["file"].as_str() == image.file_name().and_then(|n| n.to_str());
        if let (true, Some(b)) = (file_matches, v["board"].as_str()) {
            return Ok(board::load(b)?);
        }
    }
    let stem = image.file_name().and_then(|n| n.to_str()).unwrap_or_default().trim_end_matches(".img");
    for name in board::names() {
        if stem.ends_with(&format!("-{name}")) {
            return Ok(board::load(name)?);
        }
    }
    anyhow::bail!("cannot tell the board of {}; pass --board ({})", image.display(), board::names().join(", "))
}

pub fn run(image: &Path, board: Option<&str>, snapshot: bool, memory: u32, cpus: u32, kvm: bool) -> Result<()> {
    if !image.is_file() {
        anyhow::bail!("{} is not an image file", image.display());
    }
    let b = board_of_image(image, board)?;
    let work = tempfile::tempdir()?;
    let mut vm = crate::qemu::Vm::new(&b.qemu, image, work.path())?;
    vm.snapshot = snapshot;
    vm.memory_mib = memory;
    vm.cpus = cpus;
    vm.kvm |= kvm;
    eprintln!("edgeimg: booting {} as {} ({}, {}); quit with Ctrl-A x", image.display(), b.name, b.qemu.machine, if vm.kvm { "KVM" } else { "TCG" });
    let status = vm.run_interactive()?;
    if !status.success() {
        anyhow::bail!("{} exited with {status}", b.qemu.binary);
    }
    Ok(())
}

pub fn doctor(boards: &[String]) -> Result<()> {
    let boards = crate::doctor::boards_for(boards)?;
    let checks = crate::doctor::checks(&boards);
    let mut missing = Vec::new();
    for c in &checks {
        match &c.found {
            Some(p) => println!("ok       {:<40} {}", c.what, p),
            None => {
                println!("MISSING  {:<40} package {} ({})", c.what, c.package, c.purpose);
                missing.push(c.package.clone());
            }
        }
    }
    if missing.is_empty() {
        println!("all tools for {} present", boards.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", "));
        Ok(())
    } else {
        missing.sort();
        missing.dedup();
        anyhow::bail!("missing tools; install with: apt-get install {} (QEMU and firmware from bookworm-backports on bookworm)", missing.join(" "))
    }
}

pub fn boards() -> Result<()> {
    println!("{:<10} {:<6} {:<6} {:<26} {:<10} description", "board", "arch", "table", "firmware", "qemu");
    for name in board::names() {
        let b = board::load(name)?;
        println!(
            "{:<10} {:<6} {:<6} {:<26} {:<10} {}",
            b.name,
            b.arch,
            format!("{:?}", b.partition_table).to_lowercase(),
            b.firmware.describe(),
            b.qemu.machine,
            b.description
        );
    }
    Ok(())
}
