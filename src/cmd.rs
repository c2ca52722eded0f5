//! The one runner for external tools, and the one table of them: every
//! command goes through [`Cmd`] so a failure names the command line and the
//! tail of its stderr, and a missing tool names its Debian package;
//! `edgeimg doctor` lists [`GROUPS`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use thiserror::Error;

/// A host tool edgeimg calls, with the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
    /// What edgeimg uses it for (shown by `edgeimg doctor`).
    pub purpose: &'static str,
}

pub const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
    purpose: "bootstrap the Debian root filesystem",
};
pub const NEWUIDMAP: Tool = Tool {
    name: "newuidmap",
    package: "uidmap",
    purpose: "user namespaces for mmdebstrap --mode=unshare",
};
pub const TAR: Tool = Tool {
    name: "tar",
    package: "tar",
    purpose: "unpack the cached base root",
};
pub const MKFS_EROFS: Tool = Tool {
    name: "mkfs.erofs",
    package: "erofs-utils",
    purpose: "make the read-only EROFS root",
};
pub const DEPMOD: Tool = Tool {
    name: "depmod",
    package: "kmod",
    purpose: "index the kernel modules kept in the root",
};
pub const MKFS_VFAT: Tool = Tool {
    name: "mkfs.vfat",
    package: "dosfstools",
    purpose: "make the FAT32 boot partition",
};
pub const MCOPY: Tool = Tool {
    name: "mcopy",
    package: "mtools",
    purpose: "fill the boot partition without mounting it",
};
pub const MTYPE: Tool = Tool {
    name: "mtype",
    package: "mtools",
    purpose: "read files on the boot partition (inspect, flash --node)",
};
pub const MMD: Tool = Tool {
    name: "mmd",
    package: "mtools",
    purpose: "make directories on the boot partition",
};
pub const MKE2FS: Tool = Tool {
    name: "mke2fs",
    package: "e2fsprogs",
    purpose: "make the ext4 data partition",
};
pub const DEBUGFS: Tool = Tool {
    name: "debugfs",
    package: "e2fsprogs",
    purpose: "pin the data partition's inode times (reproducible bytes) and write its SELinux labels",
};
pub const QEMU_X86_64: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
    purpose: "boot x86_64 images (edgeimg run, VM tests)",
};
pub const QEMU_AARCH64: Tool = Tool {
    name: "qemu-system-aarch64",
    package: "qemu-system-arm",
    purpose: "boot arm64 images (edgeimg run, VM tests)",
};

pub const FDTPUT: Tool = Tool {
    name: "fdtput",
    package: "device-tree-compiler",
    purpose: "patch a Raspberry Pi DTB for QEMU's raspi4b",
};
pub const FDTGET: Tool = Tool {
    name: "fdtget",
    package: "device-tree-compiler",
    purpose: "read a Raspberry Pi DTB for QEMU's raspi4b",
};
pub const QEMU_AARCH64_STATIC: Tool = Tool {
    name: "qemu-aarch64-static",
    package: "qemu-user-static",
    purpose: "run arm64 programs while bootstrapping an arm64 root on another host",
};
pub const PATCHELF: Tool = Tool {
    name: "patchelf",
    package: "patchelf",
    purpose: "run the host's own dpkg-deb, perl, sed, cp... inside a foreign root while it is bootstrapped",
};

pub const CHECKMODULE: Tool = Tool {
    name: "checkmodule",
    package: "checkpolicy",
    purpose: "compile SELinux policy modules ([selinux] images)",
};
pub const SEMODULE_PACKAGE: Tool = Tool {
    name: "semodule_package",
    package: "semodule-utils",
    purpose: "package compiled SELinux modules with their file contexts",
};
pub const MATCHPATHCON: Tool = Tool {
    name: "matchpathcon",
    package: "selinux-utils",
    purpose: "look up the data partition's SELinux labels in the image's file contexts",
};
pub const CHROOT: Tool = Tool {
    name: "chroot",
    package: "coreutils",
    purpose: "run the image's own semodule on its policy store",
};
pub const VERITYSETUP: Tool = Tool {
    name: "veritysetup",
    package: "cryptsetup-bin",
    purpose: "compute the dm-verity hash tree of the root ([image] verity = true)",
};
pub const UNSHARE: Tool = Tool {
    name: "unshare",
    package: "util-linux",
    purpose: "rootless builds: run the staging steps in a user namespace",
};
pub const NEWGIDMAP: Tool = Tool {
    name: "newgidmap",
    package: "uidmap",
    purpose: "rootless builds: map the sub-gids of the user into its namespace",
};
pub const MDIR: Tool = Tool {
    name: "mdir",
    package: "mtools",
    purpose: "look at the boot partition without mounting it (flash --node)",
};
pub const SSH: Tool = Tool {
    name: "ssh",
    package: "openssh-client",
    purpose: "read a node's k3s.yaml (kubeconfig --ssh)",
};
pub const OPENSSL: Tool = Tool {
    name: "openssl",
    package: "openssl",
    purpose: "make the Secure Boot keys and certificates (keygen --secure-boot); check [data] recovery_public_key",
};
pub const CERT_TO_EFI_SIG_LIST: Tool = Tool {
    name: "cert-to-efi-sig-list",
    package: "efitools",
    purpose: "wrap Secure Boot certificates as EFI signature lists",
};
pub const SIGN_EFI_SIG_LIST: Tool = Tool {
    name: "sign-efi-sig-list",
    package: "efitools",
    purpose: "sign the PK/KEK/db lists a firmware in setup mode enrolls",
};

pub const OBJCOPY: Tool = Tool {
    name: "objcopy",
    package: "binutils",
    purpose: "assemble x86_64 Unified Kernel Images (Secure Boot builds)",
};
pub const OBJCOPY_AARCH64: Tool = Tool {
    name: "aarch64-linux-gnu-objcopy",
    package: "binutils-aarch64-linux-gnu",
    purpose: "assemble arm64 Unified Kernel Images (Secure Boot builds)",
};
pub const SBSIGN: Tool = Tool {
    name: "sbsign",
    package: "sbsigntool",
    purpose: "sign systemd-boot and the kernel images with the db key",
};

/// What an image with `[selinux]` on needs on top of [`BUILD_TOOLS`].
/// (The root is labelled by mkfs.erofs itself: `fs::erofs::check_file_contexts`.)
pub const SELINUX_TOOLS: &[Tool] = &[CHECKMODULE, SEMODULE_PACKAGE, MATCHPATHCON, DEBUGFS, CHROOT];

/// What bootstrapping a base needs (only on a cache miss).
pub const BOOTSTRAP_TOOLS: &[Tool] = &[MMDEBSTRAP, NEWUIDMAP];
/// What every build needs after the base, whatever the board.
pub const STAGE_TOOLS: &[Tool] = &[
    TAR, MKFS_EROFS, DEPMOD, MKFS_VFAT, MCOPY, MMD, MKE2FS, DEBUGFS,
];
/// Both: the tools every build needs from scratch.
pub const BUILD_TOOLS: &[Tool] = &[
    MMDEBSTRAP, NEWUIDMAP, TAR, MKFS_EROFS, DEPMOD, MKFS_VFAT, MCOPY, MMD, MKE2FS, DEBUGFS,
];
/// What making a base for another architecture needs on top (a cache miss).
pub const FOREIGN_TOOLS: &[Tool] = &[QEMU_AARCH64_STATIC, PATCHELF];
/// What an image with `[image] verity = true` needs on top.
pub const VERITY_TOOLS: &[Tool] = &[VERITYSETUP];
/// What an unprivileged build needs on top (mmdebstrap's own newuidmap is a
/// build tool).
pub const ROOTLESS_TOOLS: &[Tool] = &[UNSHARE, NEWGIDMAP];
/// What `keygen --secure-boot` runs.
pub const SECURE_BOOT_TOOLS: &[Tool] = &[OPENSSL, CERT_TO_EFI_SIG_LIST, SIGN_EFI_SIG_LIST];
/// What a build with Secure Boot keys runs on top (the arm64 objcopy only
/// for arm64 boards: the host's own binutils reads no aarch64 PE files).
pub const SIGNED_BOOT_TOOLS: &[Tool] = &[OBJCOPY, OBJCOPY_AARCH64, SBSIGN];
/// What a build with `[data] encryption = "tpm2"` runs (the recovery public
/// key's check), and what the VM tests give the guest as its TPM2.
pub const SWTPM: Tool = Tool {
    name: "swtpm",
    package: "swtpm",
    purpose: "a software TPM2 for VM tests of [data] encryption = \"tpm2\"",
};
pub const DATA_ENCRYPTION_TOOLS: &[Tool] = &[OPENSSL, SWTPM];
/// What the commands after a build run (flash, inspect, kubeconfig).
pub const DEVICE_TOOLS: &[Tool] = &[MTYPE, MDIR, SSH];

/// Every fixed tool, by what needs it: `edgeimg doctor`'s table. (Each
/// board's QEMU and firmware come from its board file.)
pub const GROUPS: &[(&str, &[Tool])] = &[
    ("build", BUILD_TOOLS),
    ("[selinux]", SELINUX_TOOLS),
    ("verity", VERITY_TOOLS),
    ("base for another architecture", FOREIGN_TOOLS),
    ("rootless", ROOTLESS_TOOLS),
    ("keygen --secure-boot", SECURE_BOOT_TOOLS),
    ("build with Secure Boot keys", SIGNED_BOOT_TOOLS),
    ("[data] encryption (swtpm: VM tests)", DATA_ENCRYPTION_TOOLS),
    ("flash, inspect, kubeconfig", DEVICE_TOOLS),
];

impl Tool {
    /// A tool named at run time (from a board file). Board files are loaded a
    /// handful of times per process, so leaking these few strings is fine.
    pub fn owned(name: &str, package: &str, purpose: &'static str) -> Tool {
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        Tool {
            name: leak(name),
            package: leak(package),
            purpose,
        }
    }
}

#[derive(Debug, Error)]
pub enum CmdError {
    #[error("missing host tool `{}` (Debian package: {}); install it with `apt-get install {}` or see `edgeimg doctor`", .0.name, .0.package, .0.package)]
    Missing(Tool),
    #[error("could not start `{cmdline}`: {source}")]
    Spawn {
        cmdline: String,
        source: std::io::Error,
    },
    #[error("`{cmdline}` failed ({status}){}", stderr_tail(.stderr))]
    Failed {
        cmdline: String,
        status: String,
        stderr: String,
    },
}

fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(15)..];
    format!(":\n  {}", tail.join("\n  "))
}

/// Finds `name` on PATH, then in the sbin directories: mke2fs and mkfs.vfat
/// live there, and an unprivileged user's PATH on Debian does not name them.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Fails with one error naming the first missing tool and its package.
pub fn require(tools: &[Tool]) -> Result<(), CmdError> {
    match tools.iter().find(|t| which(t.name).is_none()) {
        Some(t) => Err(CmdError::Missing(*t)),
        None => Ok(()),
    }
}

/// A command line under construction, tied to the tool it runs.
pub struct Cmd {
    tool: Tool,
    cmd: Command,
}

impl Cmd {
    pub fn new(tool: Tool) -> Self {
        // The resolved path, so tools found only in sbin run too.
        let program = which(tool.name).unwrap_or_else(|| PathBuf::from(tool.name));
        Cmd {
            tool,
            cmd: Command::new(program),
        }
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, a: I) -> Self {
        self.cmd.args(a);
        self
    }
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(d);
        self
    }

    pub fn cmdline(&self) -> String {
        let mut s = self.tool.name.to_string();
        for a in self.cmd.get_args() {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.contains(' ') || a.is_empty() {
                s.push_str(&format!("'{a}'"));
            } else {
                s.push_str(&a);
            }
        }
        s
    }

    /// Refuses a tool that is not installed; else logs and returns the command
    /// line (for errors).
    fn prepare(&self) -> Result<String, CmdError> {
        if which(self.tool.name).is_none() {
            return Err(CmdError::Missing(self.tool));
        }
        let cmdline = self.cmdline();
        tracing::debug!("running {cmdline}");
        Ok(cmdline)
    }

    /// Runs to completion, capturing output, whatever the exit status: for
    /// questions whose answer is in the output (`--help`, `-V`).
    pub fn probe(mut self) -> Result<Output, CmdError> {
        let cmdline = self.prepare()?;
        self.cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| CmdError::Spawn { cmdline, source })
    }

    /// Runs with this process's stdin, stdout and stderr (a terminal session,
    /// or a child whose exit code becomes ours) and returns its status.
    pub fn status(mut self) -> Result<std::process::ExitStatus, CmdError> {
        let cmdline = self.prepare()?;
        self.cmd
            .status()
            .map_err(|source| CmdError::Spawn { cmdline, source })
    }

    /// The checked, logged command for a caller that drives the process
    /// itself (a VM whose console it reads while it runs), with its command
    /// line for errors.
    pub fn into_std(self) -> Result<(Command, String), CmdError> {
        let cmdline = self.prepare()?;
        Ok((self.cmd, cmdline))
    }

    /// Runs to completion, capturing output; non-zero exit is an error carrying stderr.
    pub fn run(mut self) -> Result<Output, CmdError> {
        let cmdline = self.prepare()?;
        let out = self
            .cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| CmdError::Spawn {
                cmdline: cmdline.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(CmdError::Failed {
                cmdline,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(out)
    }

    /// Runs with stderr streamed line by line to `on_line` (for progress of long
    /// tools like mmdebstrap); the tail is kept for the error.
    pub fn run_streaming(mut self, on_line: &mut dyn FnMut(&str)) -> Result<(), CmdError> {
        use std::io::{BufRead, BufReader};
        let cmdline = self.prepare()?;
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CmdError::Spawn {
                cmdline: cmdline.clone(),
                source,
            })?;
        let mut tail: std::collections::VecDeque<String> = Default::default();
        let stderr = child.stderr.take().expect("piped");
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            on_line(&line);
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        let status = child.wait().map_err(|source| CmdError::Spawn {
            cmdline: cmdline.clone(),
            source,
        })?;
        if !status.success() {
            return Err(CmdError::Failed {
                cmdline,
                status: status.to_string(),
                stderr: tail.into_iter().collect::<Vec<_>>().join("\n"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_package() {
        let t = Tool {
            name: "edgeimg-no-such-tool",
            package: "no-such-pkg",
            purpose: "test",
        };
        let e = Cmd::new(t).run().unwrap_err().to_string();
        assert!(
            e.contains("edgeimg-no-such-tool") && e.contains("no-such-pkg"),
            "{e}"
        );
    }

    #[test]
    fn failure_carries_stderr_tail() {
        let t = Tool {
            name: "sh",
            package: "dash",
            purpose: "test",
        };
        let e = Cmd::new(t)
            .args(["-c", "echo boom >&2; exit 3"])
            .run()
            .unwrap_err()
            .to_string();
        assert!(e.contains("boom") && e.contains("sh -c"), "{e}");
    }
}
