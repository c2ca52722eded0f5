//! Helpers shared by the integration tests: run the real `edgeimg` binary and
//! the reference tools.

#![allow(dead_code)]

pub mod erofs;
pub mod fleet;
pub mod updates;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn edgeimg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeimg"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs a command, returning its output; panics with stderr if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Names of the files in `dir` that are not hidden.
pub fn visible_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Serialises builds across test threads and binaries (2-core machines).
pub fn exclusive() -> edgeimg::cache::Lock {
    edgeimg::cache::Lock::acquire(&edgeimg::cache::dir().join("vm-tests.lock")).expect("test lock")
}

/// Copies bytes [offset, offset+len) of `img` (a partition) into `dest`.
pub fn extract_range(img: &Path, offset: u64, len: u64, dest: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = std::fs::File::create(dest).unwrap();
    std::io::copy(&mut f.by_ref().take(len), &mut out).unwrap();
}

/// `edgeimg plan --json` for a config, board and `--bundle` directory.
pub fn plan_json(config: &Path, board: &str, bundle: Option<&Path>) -> serde_json::Value {
    let mut c = edgeimg();
    c.args(["plan", "--json", "--board", board, "--config"])
        .arg(config)
        .env_remove("EDGEIMG_K3S_BUNDLE");
    if let Some(b) = bundle {
        c.arg("--bundle").arg(b);
    }
    serde_json::from_str(&ok(&mut c)).expect("plan --json is JSON")
}

/// Every file on a FAT filesystem image, relative to its root (mtools).
pub fn fat_files(fat: &Path) -> Vec<String> {
    let listing = ok(Command::new("mdir")
        .args(["-/", "-b", "-i"])
        .arg(fat)
        .arg("::/"));
    let mut v: Vec<String> = listing
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.trim_start_matches("::/").to_string())
        .collect();
    v.sort();
    v
}

/// The build did what its plan said: the root files it reports placing
/// (manifest.json's `placed_files`, less the overlays' files) are the
/// plan's (with its signing key file when the build was `signed`), and
/// every file on the boot partition matches one of the plan's
/// boot entries (which may hold a `*`) and every entry matches a file.
pub fn assert_build_matches_plan(
    plan: &serde_json::Value,
    manifest: &serde_json::Value,
    boot_fat: &Path,
    signed: bool,
) {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = v
            .as_array()
            .expect("an array")
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect();
        v.sort();
        v
    };
    let overlay_files: Vec<&str> = manifest["inputs"]["overlays"]
        .as_array()
        .map(|os| {
            os.iter()
                .flat_map(|o| o["files"].as_array().into_iter().flatten())
                .filter_map(|f| f["path"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut placed = strings(&manifest["placed_files"]);
    placed.retain(|p| !overlay_files.contains(&p.as_str()));
    let mut planned_root = strings(&plan["files"]);
    if signed {
        planned_root.push(plan["signing_key_file"].as_str().unwrap().to_string());
        planned_root.sort();
    }
    assert_eq!(
        placed, planned_root,
        "placed files (left) differ from the plan's (right)"
    );
    let boot = fat_files(boot_fat);
    let planned = strings(&plan["boot"]["files"]);
    for f in &boot {
        assert!(
            planned.iter().any(|p| edgeimg::boot::matches(p, f)),
            "the boot partition holds {f}, which the plan does not name: {planned:?}"
        );
    }
    for p in &planned {
        assert!(
            boot.iter().any(|f| edgeimg::boot::matches(p, f)),
            "the plan names {p}, which is not on the boot partition: {boot:?}"
        );
    }
}

/// What [`run_measured`] saw: exit status, output, and the child's peak
/// resident set size.
#[allow(dead_code)]
pub struct Measured {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub peak_rss_kib: u64,
}

/// Runs `cmd` under `/usr/bin/time` and reads the command's peak RSS.
/// Measured from a small parent: `ru_maxrss` of a child spawned by this test
/// process would include this process's own peak (it is carried across the
/// fork and exec).
#[allow(dead_code)]
pub fn run_measured(cmd: &mut Command) -> Measured {
    const MARK: &str = "EDGEIMG_TEST_MAXRSS_KIB=";
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg(format!("{MARK}%M"))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(std::process::Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        timed.current_dir(d);
    }
    let o = run(&mut timed);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let peak_rss_kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix(MARK))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{stderr}"));
    Measured {
        // time exits with the command's status.
        success: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr,
        peak_rss_kib,
    }
}

/// Deterministic xorshift bytes from a nonzero seed: incompressible, like a
/// compressed root image or archive.
pub fn noise(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
