//! `edgeimg doctor`: every host tool the chosen boards need, found or not, with
//! the package that provides it.

use std::path::Path;

use crate::cmd::{self, Tool};
use crate::config::board::{self, Board};

#[derive(Debug, Clone)]
pub struct Check {
    pub what: String,
    pub package: String,
    pub purpose: String,
    pub found: Option<String>,
}

pub fn checks(boards: &[Board]) -> Vec<Check> {
    let mut out: Vec<Check> = cmd::BUILD_TOOLS.iter().map(tool_check).collect();
    for b in boards {
        let q = Tool { name: leak(&b.qemu.binary), package: leak(&b.qemu.package), purpose: "boot images (edgeimg run, VM tests)" };
        if !out.iter().any(|c| c.what == q.name) {
            out.push(tool_check(&q));
        }
        for f in [&b.qemu.firmware_code, &b.qemu.firmware_vars] {
            if !out.iter().any(|c| &c.what == f) {
                out.push(Check {
                    what: f.clone(),
                    package: b.qemu.firmware_package.clone(),
                    purpose: format!("UEFI firmware for {} VMs", b.name),
                    found: Path::new(f).exists().then(|| f.clone()),
                });
            }
        }
    }
    out
}

fn tool_check(t: &Tool) -> Check {
    Check {
        what: t.name.to_string(),
        package: t.package.to_string(),
        purpose: t.purpose.to_string(),
        found: cmd::which(t.name).map(|p| p.display().to_string()),
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

pub fn boards_for(names: &[String]) -> anyhow::Result<Vec<Board>> {
    let names: Vec<String> = if names.is_empty() { board::names().into_iter().map(String::from).collect() } else { names.to_vec() };
    names.iter().map(|n| board::load(n).map_err(Into::into)).collect()
}
