//! `edgeimg-agent update delta BASE DELTA OUT [--boot-dir DIR]`: the
//! arguments, and which base the delta is applied to.

use crate::error::Result;
use crate::root::Root;
use crate::update::delta_base::RunningSlot;
use edgeimg_contract::update::delta::{self, DirBase};
use std::path::PathBuf;

/// The parsed arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub base: PathBuf,
    pub delta: PathBuf,
    pub out: PathBuf,
    /// Base payloads at `DIR/<name>` instead of the running slot's files.
    pub boot_dir: Option<PathBuf>,
}

pub fn parse_args(args: &[&str]) -> Result<Args> {
    let mut plain = vec![];
    let mut boot_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--boot-dir" => match it.next() {
                Some(d) if boot_dir.is_none() => boot_dir = Some(PathBuf::from(d)),
                Some(_) => crate::bail!("--boot-dir given twice"),
                None => crate::bail!("--boot-dir needs a directory"),
            },
            o if o.starts_with("--") => crate::bail!("unknown option {o}"),
            p => plain.push(PathBuf::from(p)),
        }
    }
    let [base, delta, out] = <[PathBuf; 3]>::try_from(plain).map_err(|p| {
        crate::Error::msg(format!("expected BASE DELTA OUT, got {} paths", p.len()))
    })?;
    Ok(Args {
        base,
        delta,
        out,
        boot_dir,
    })
}

pub fn run(root: &Root, args: &[&str]) -> Result<()> {
    let a = parse_args(args)?;
    match a.boot_dir {
        Some(dir) => {
            let mut b = DirBase { root: a.base, dir };
            delta::apply_files(&mut b, &a.delta, &a.out)?;
        }
        None => {
            let mut b = RunningSlot::find(root, &a.base)?;
            delta::apply_files(&mut b, &a.delta, &a.out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let a = parse_args(&["s", "d", "o", "--boot-dir", "b"]).unwrap();
        assert_eq!(a.boot_dir, Some(PathBuf::from("b")));
        assert_eq!(a.out, PathBuf::from("o"));
        assert_eq!(parse_args(&["s", "d", "o"]).unwrap().boot_dir, None);
        assert!(parse_args(&["s", "d"]).is_err());
        assert!(parse_args(&["s", "d", "o", "--boot-dir"]).is_err());
        assert!(parse_args(&["s", "d", "o", "--x"]).is_err());
    }
}
