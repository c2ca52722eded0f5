//! Incremental bases: a base whose package list differs from a cached one by
//! one package added and one dropped is made from that cached base (the
//! incremental path, recorded in its metadata), and its tarball matches a
//! bootstrap of the same list from nothing, entry by entry, except for the
//! documented differences (docs/config.md, "Incremental bases").
//!
//! Runs as root (CI does): the incremental path chroots into the copy.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use edgeimg::base::{self, BaseSpec, REQUIRED_PACKAGES};
use edgeimg::progress::Progress;

/// Paths that may differ between an incremental and a from-scratch base, as
/// docs/config.md lists them. Kept in step with that list.
const ALLOWED: &[&str] = &[
    // dpkg's copy of its status file from before its last run: the last run
    // differs (a bootstrap's last dpkg call is not the difference's).
    "./var/lib/dpkg/status-old",
];
/// Paths whose entries must be the same but may come in another order (apt
/// writes its auto-installed marks in the order of its package cache).
const REORDERED: &[&str] = &["./var/lib/apt/extended_states"];

/// The blank-line separated stanzas of a text, sorted.
fn stanzas(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .split("\n\n")
        .map(|s| s.trim_matches('\n').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Every entry of a tarball: path -> (header fields, content digest, xattrs),
/// and the text of the small files (to show how two of them differ).
fn entries(tar: &Path) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut out = BTreeMap::new();
    let mut texts = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let h = e.header().clone();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut xattrs = Vec::new();
        if let Some(ext) = e.pax_extensions().unwrap() {
            for x in ext {
                let x = x.unwrap();
                xattrs.push(format!("{}={:?}", x.key().unwrap(), x.value_bytes()));
            }
        }
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        let digest = edgeimg::artifact::checksums::sha256_bytes(&content);
        if content.len() <= 256 * 1024 {
            if let Ok(t) = String::from_utf8(content.clone()) {
                texts.insert(path.clone(), t);
            }
        }
        let desc = format!(
            "{:?} mode={:o} uid={} gid={} mtime={} link={link:?} dev={:?}/{:?} {digest} {xattrs:?}",
            h.entry_type(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.mtime().unwrap(),
            h.device_major().ok().flatten(),
            h.device_minor().ok().flatten(),
        );
        out.insert(path, desc);
    }
    (out, texts)
}

/// The lines of two texts that only one of them has.
fn line_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let only = |x: &[&str], y: &[&str], mark: &str| {
        x.iter()
            .filter(|l| !y.contains(l))
            .map(|l| format!("  {mark} {l}\n"))
            .collect::<String>()
    };
    format!(
        "{}{}",
        only(&la, &lb, "incremental only:"),
        only(&lb, &la, "from nothing only:")
    )
}

/// Paths present in one tree only or described differently (each printed
/// with both descriptions).
fn differences(a: &Path, b: &Path) -> Vec<String> {
    let ((a, ta), (b, tb)) = (entries(a), entries(b));
    for k in a.keys().chain(b.keys()) {
        if a.get(k) != b.get(k) {
            eprintln!(
                "differs: {k}\n  incremental:  {:?}\n  from nothing: {:?}",
                a.get(k),
                b.get(k)
            );
            if let (Some(x), Some(y)) = (ta.get(k), tb.get(k)) {
                eprint!("{}", line_difference(x, y));
            }
        }
    }
    let mut diff: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    diff.sort();
    diff.dedup();
    diff
}

fn spec(arch: &str, kernel: &str, extra: &str) -> BaseSpec {
    let mut packages: Vec<String> = REQUIRED_PACKAGES.iter().map(|p| p.to_string()).collect();
    packages.push(kernel.into());
    packages.push(extra.into());
    packages.sort();
    BaseSpec {
        suite: "trixie".into(),
        arch: arch.parse().expect("an architecture"),
        mirror: "http://deb.debian.org/debian".into(),
        packages,
        initramfs_modules: vec!["erofs".into()],
        verity: false,
        luks: false,
    }
}

/// Base with `file` (and so libmagic, which goes with it), then with `curl`
/// instead (which Recommends ca-certificates, which a bootstrap does not
/// install): incrementally from the first, and from nothing in a second
/// cache; the two must agree. Then with `dmsetup`, whose initramfs hook and
/// udev rules make the incremental path build a new initrd.
fn one_added_one_dropped(arch: &str, kernel: &str) {
    if !is_root() {
        eprintln!("skipped: the incremental path needs root");
        return;
    }
    // Not quiet: the base steps' notes (which initrd input changed) go to
    // the test's output.
    let progress = Progress::new(false);
    let warm = tempfile::tempdir_in("/var/tmp").unwrap();
    let cold = tempfile::tempdir_in("/var/tmp").unwrap();
    for d in [&warm, &cold] {
        std::fs::create_dir_all(d.path().join("base")).unwrap();
    }
    let before = spec(arch, kernel, "file");
    let after = spec(arch, kernel, "curl");
    let first = base::ensure(&before, warm.path(), false, &progress).unwrap();
    assert_eq!(first.meta.incremental_from, None);

    let t = std::time::Instant::now();
    let incremental = base::ensure(&after, warm.path(), false, &progress).unwrap();
    eprintln!("{arch} incremental: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(
        incremental.meta.incremental_from.as_deref(),
        Some(first.meta.key.as_str()),
        "the incremental path was not taken"
    );
    assert_eq!(incremental.meta.key, after.key());
    // curl and its libraries are not in the initrd and touch none of the
    // trees its hooks read: the cached initrd stays, and the comparison
    // with a bootstrap from nothing below proves that right.
    assert_eq!(
        incremental.meta.initrd_kept,
        Some(true),
        "the initrd was made anew"
    );

    let t = std::time::Instant::now();
    let scratch = base::ensure(&after, cold.path(), false, &progress).unwrap();
    eprintln!("{arch} from nothing: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(scratch.meta.incremental_from, None);

    let diff = differences(&incremental.tar, &scratch.tar);
    let (ta, tb) = (entries(&incremental.tar).1, entries(&scratch.tar).1);
    let unexpected: Vec<&String> = diff
        .iter()
        .filter(|p| !ALLOWED.contains(&p.as_str()))
        .filter(|p| {
            !(REORDERED.contains(&p.as_str())
                && ta.get(*p).map(|t| stanzas(t)) == tb.get(*p).map(|t| stanzas(t))
                && ta.contains_key(*p))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "incremental and from-scratch bases differ beyond the documented list: {unexpected:#?}"
    );
    if diff.is_empty() {
        assert_eq!(incremental.meta.sha256, scratch.meta.sha256);
    }

    // dmsetup brings udev rules and an initramfs hook: a new initrd.
    let with_hook = spec(arch, kernel, "dmsetup");
    let t = std::time::Instant::now();
    let rebuilt = base::ensure(&with_hook, warm.path(), false, &progress).unwrap();
    eprintln!(
        "{arch} incremental, new initrd: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        rebuilt.meta.incremental_from.is_some(),
        "the incremental path was not taken"
    );
    assert_eq!(
        rebuilt.meta.initrd_kept,
        Some(false),
        "the cached initrd was kept"
    );
}

#[test]
fn amd64_one_package_added_one_dropped() {
    one_added_one_dropped("amd64", "linux-image-amd64");
}

#[test]
#[ignore = "arm64 under qemu-user: 10+ minutes"]
fn arm64_one_package_added_one_dropped() {
    one_added_one_dropped("arm64", "linux-image-arm64");
}
