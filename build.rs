//! Builds the first-boot agent as static musl binaries for every image
//! architecture and hands their paths to the library (`src/agents.rs`), so one
//! `edgeimg` binary carries everything it puts into an image.
//!
//! A nested cargo with its own target directory avoids the outer build's lock.
//! `EDGEIMG_AGENT_<ARCH>` (x86_64, aarch64) may point at a prebuilt agent instead.

use std::path::PathBuf;
use std::process::Command;

const TARGETS: &[(&str, &str)] = &[
    ("x86_64", "x86_64-unknown-linux-musl"),
    ("aarch64", "aarch64-unknown-linux-musl"),
];

/// The C compiler of each target for `aws-lc-sys` (the cryptography under
/// the agent's TUF client, `tough`): Debian's musl-gcc (musl-tools) and the
/// aarch64 cross compiler (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross),
/// which `.ci/setup` installs. `CC_<triple>` set by the caller wins.
const C_COMPILERS: &[(&str, &str)] = &[
    ("x86_64-unknown-linux-musl", "musl-gcc"),
    ("aarch64-unknown-linux-musl", "aarch64-linux-gnu-gcc"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=agent/src");
    println!("cargo:rerun-if-changed=agent/Cargo.toml");
    println!("cargo:rerun-if-changed=agent/units");
    // The agent links the contract crate: a change there changes the agent.
    println!("cargo:rerun-if-changed=contract/src");
    println!("cargo:rerun-if-changed=contract/Cargo.toml");
    for (arch, _) in TARGETS {
        println!(
            "cargo:rerun-if-env-changed=EDGEIMG_AGENT_{}",
            arch.to_uppercase()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out_dir.join("agent-target");
    for (arch, triple) in TARGETS {
        let dest = out_dir.join(format!("edgeimg-agent-{arch}"));
        if let Ok(prebuilt) = std::env::var(format!("EDGEIMG_AGENT_{}", arch.to_uppercase())) {
            let _ = std::fs::remove_file(&dest);
            std::fs::copy(&prebuilt, &dest)
                .unwrap_or_else(|e| panic!("cannot copy EDGEIMG_AGENT_{arch}={prebuilt}: {e}"));
            continue;
        }
        let mut cmd = Command::new(&cargo);
        // Only keep the environment a plain cargo invocation would see.
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_MAKEFLAGS")
                || k == "RUSTFLAGS"
                || k == "RUSTC_WRAPPER"
            {
                cmd.env_remove(&k);
            }
        }
        let linker_var = format!(
            "CARGO_TARGET_{}_LINKER",
            triple.to_uppercase().replace('-', "_")
        );
        let cc_var = format!("CC_{}", triple.replace('-', "_"));
        println!("cargo:rerun-if-env-changed={cc_var}");
        if std::env::var_os(&cc_var).is_none()
            && let Some((_, cc)) = C_COMPILERS.iter().find(|(t, _)| t == triple)
        {
            cmd.env(&cc_var, cc);
        }
        let status = cmd
            .current_dir(&manifest_dir)
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "edgeimg-agent",
                "--target",
                triple,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .args([
                "--config",
                "profile.release.opt-level=\"s\"",
                "--config",
                "profile.release.strip=true",
                "--config",
                "profile.release.panic=\"abort\"",
            ])
            // musl's self-contained CRT: rust-lld links it (the C objects of
            // aws-lc-sys included) without a C cross linker.
            .env(linker_var, "rust-lld")
            .status()
            .expect("cannot run cargo to build the agent");
        if !status.success() {
            panic!(
                "building edgeimg-agent for {triple} failed; is the target installed? run `rustup target add {triple}` (or set EDGEIMG_AGENT_{} to a prebuilt agent)",
                arch.to_uppercase()
            );
        }
        let built = target_dir
            .join(triple)
            .join("release")
            .join("edgeimg-agent");
        // A new file, never a write into the old one: target directories copied
        // with hard links (cp -al) would otherwise share one inode, and this
        // build would replace the agent inside every copy.
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    }
}
