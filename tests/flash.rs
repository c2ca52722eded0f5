//! `edgeimg flash` and `edgeimg node`: flashing to files and loop devices,
//! the verify pass (with a fault injected in the writer), every refusal.
//!
//! Images here are small synthetic GPT/MBR disks (a FAT32 EDGEBOOT partition
//! made by mkfs.vfat, a partition with scattered data, an empty one) so the
//! tests need no full build. Loop-device tests run as root only and skip
//! otherwise.

mod common;
#[path = "common/synthetic.rs"]
mod synthetic;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{edgeimg, ok, run};
use edgeimg_contract::schema::NodeConfig;

use synthetic::{DATA_AT, MIB, make_image};

fn compress(img: &Path, kind: edgeimg::artifact::Compression) -> PathBuf {
    let out = PathBuf::from(format!("{}.{}", img.display(), kind.extension().unwrap()));
    edgeimg::artifact::compress(img, &out, kind, &|_| {}).unwrap();
    out
}

fn sha(p: &Path) -> String {
    edgeimg::artifact::sha256_file(p).unwrap()
}

fn flash(args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    let mut c = edgeimg();
    c.arg("flash");
    for a in args {
        c.arg(a);
    }
    run(c.stdin(Stdio::null()))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn flash_to_file_writes_only_mapped_ranges_and_verifies() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let want = sha(&img);
    let zst = compress(&img, edgeimg::artifact::Compression::Zstd);
    let xz = compress(&img, edgeimg::artifact::Compression::Xz);
    for src in [&img, &zst, &xz] {
        let t = d.path().join("target.img");
        let o = flash(&[src, &t, &"--to-file", &"--yes"]);
        assert!(o.status.success(), "{}: {}", src.display(), stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("verified"), "{out}");
        assert_eq!(sha(&t), want, "{} flashed differently", src.display());
        // Only mapped blocks were written: the target stays sparse.
        let m = std::fs::metadata(&t).unwrap();
        assert_eq!(m.len(), 64 * MIB);
        assert!(
            m.blocks() * 512 < 48 * MIB,
            "target not sparse: {} bytes allocated",
            m.blocks() * 512
        );
    }
    // An existing, larger file is replaced, not merged into.
    let t = d.path().join("big.img");
    std::fs::write(&t, vec![0xffu8; (70 * MIB) as usize]).unwrap();
    assert!(flash(&[&zst, &t, &"--to-file", &"-y"]).status.success());
    assert_eq!(sha(&t), want);
}

#[test]
fn json_progress_lines_for_scripts() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let t = d.path().join("t.img");
    let o = flash(&[&img, &t, &"--to-file", &"--yes", &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"done"));
    // Machine fields carry data: the path alone, its kind as an enum value.
    assert_eq!(events[0]["target"], t.display().to_string());
    assert_eq!(events[0]["target_kind"], "new_file");
    assert_eq!(events[0]["target_size"], 0);
    for phase in ["write", "verify"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "phase" && e["phase"] == phase),
            "{kinds:?}"
        );
        let last = events
            .iter()
            .rfind(|e| e["event"] == "progress" && e["phase"] == phase)
            .expect("progress line");
        assert_eq!(last["bytes"], last["total"]);
    }
    let done = &events.last().unwrap()["report"];
    assert_eq!(done["image_size"], 64 * MIB);
    assert_eq!(done["written"], done["verified"]);
    // Failures are a JSON line too.
    let o = flash(&[&img, &t, &"--yes", &"--json"]);
    assert!(!o.status.success());
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error");
    assert!(last["message"].as_str().unwrap().contains("--to-file"));
}

#[test]
fn without_a_bmap_the_whole_image_is_written() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "dos");
    let want = sha(&img);
    let zst = compress(&img, edgeimg::artifact::Compression::Zstd);
    std::fs::remove_file(d.path().join("test-dos.img.bmap")).unwrap();
    for src in [&img, &zst] {
        let t = d.path().join("t.img");
        let o = flash(&[src, &t, &"--to-file", &"--yes"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("no bmap"), "{}", stderr(&o));
        assert_eq!(sha(&t), want);
    }
}

#[test]
fn a_corrupted_write_is_caught_by_the_verify_pass() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let t = d.path().join("t.img");
    let at = DATA_AT + 1000;
    let o = run(edgeimg()
        .args(["flash", "--to-file", "--yes"])
        .arg(&img)
        .arg(&t)
        .env("EDGEIMG_FLASH_CORRUPT_AT", at.to_string()));
    assert!(!o.status.success(), "corruption not caught");
    let e = stderr(&o);
    assert!(
        e.contains("verify failed on") && e.contains(&t.display().to_string()),
        "{e}"
    );
    // The message names the range holding the flipped byte.
    let range = e
        .split("first: bytes ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect(&e);
    let (s, end) = range.split_once("..").unwrap();
    let (s, end): (u64, u64) = (s.parse().unwrap(), end.parse().unwrap());
    assert!(s <= at && at < end, "{range} does not hold {at}: {e}");
    assert!(e.contains("1 of "), "{e}");
}

#[test]
fn a_damaged_image_is_caught_against_its_bmap() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"X", DATA_AT + 5).unwrap();
    let t = d.path().join("t.img");
    let o = flash(&[&img, &t, &"--to-file", &"--yes"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&img.display().to_string()) && e.contains("bmap says"),
        "{e}"
    );
    // A bmap of another size is refused before anything is written.
    let other = d.path().join("other.img");
    std::fs::copy(&img, &other).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&other)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let t2 = d.path().join("t2.img");
    let o = flash(&[
        &other,
        &t2,
        &"--to-file",
        &"--yes",
        &"--bmap",
        &d.path().join("test-gpt.img.bmap"),
    ]);
    assert!(stderr(&o).contains("different builds"), "{}", stderr(&o));
    assert!(!t2.exists());
}

#[test]
fn refuses_a_regular_file_without_to_file() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let t = d.path().join("precious.dat");
    std::fs::write(&t, b"keep me").unwrap();
    let o = flash(&[&img, &t, &"--yes"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("precious.dat: it is a regular file; pass --to-file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&t).unwrap(), b"keep me");
    // Nor a directory, a character device, or the image itself.
    let o = flash(&[&img, &d.path(), &"--yes", &"--to-file"]);
    assert!(stderr(&o).contains("a directory"), "{}", stderr(&o));
    let o = flash(&[&img, &"/dev/null", &"--yes"]);
    assert!(stderr(&o).contains("a character device"), "{}", stderr(&o));
    let o = flash(&[&img, &img, &"--yes", &"--to-file"]);
    assert!(
        stderr(&o).contains("it is the image being flashed"),
        "{}",
        stderr(&o)
    );
    let o = flash(&[&img, &"/dev/edgeimg-no-such-disk", &"--yes"]);
    assert!(stderr(&o).contains("no such device"), "{}", stderr(&o));
}

#[test]
fn asks_before_writing_and_no_means_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let t = d.path().join("t.img");
    std::fs::write(&t, b"old").unwrap();
    // `edgeimg flash --to-file IMG T` with `answer` typed at its prompt.
    let flash_answering = |answer: &str| {
        let mut child = edgeimg()
            .args(["flash", "--to-file"])
            .arg(&img)
            .arg(&t)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    for answer in ["no\n", "", "yess\n"] {
        let o = flash_answering(answer);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(
            e.contains("Continue? Type yes") && e.contains("not confirmed: nothing was written"),
            "{e}"
        );
        assert!(e.contains("64 MiB") && e.contains("mapped"), "{e}");
        assert_eq!(std::fs::read(&t).unwrap(), b"old");
    }
    let o = flash_answering("yes\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha(&t), sha(&img));
}

fn mtype(disk: &Path, offset: u64, path: &str) -> String {
    ok(Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", disk.display()))
        .arg(format!("::{path}")))
}

#[test]
fn node_file_goes_onto_the_flashed_boot_partition() {
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys.pub");
    std::fs::write(&keys, "# team keys\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMJTy1J2eXbIGzzT/RSVqyHTxS+tyrSMeTEhQPu2n/uD ops@laptop\n\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCXyGVYbUUWdUz/ufgvBCLSty573NiQHnHoV+8z7YFgvUa9faAsnkcJtmUuyEBkcNOx+S8So/IYzyuqJfC/XrJdeZugNas79bgD/xsVf+bH2nrQa8TrJMc7vcWGi7NmgzMKUll6sYSh7QkymTFw2m7kFh6FpoPiJeIRapKe5V+/vQ== ops@desk\n").unwrap();
    let node = d.path().join("node.toml");
    ok(edgeimg()
        .args([
            "node",
            "--hostname",
            "edge-0042",
            "--user",
            "ops",
            "--group",
            "ops:sudo,adm",
            "--ssh-key-file",
        ])
        .arg(format!("ops:{}", keys.display()))
        .args(["--ssh-key", "deploy:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIICNrNDBmVFpi9ZAOW5JHk6KHrNETrrdltqKBhDetXUt deploy@ci", "-o"])
        .arg(&node));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&node).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written = NodeConfig::from_toml(&std::fs::read_to_string(&node).unwrap(), &node).unwrap();
    assert_eq!(written.hostname.as_deref(), Some("edge-0042"));
    assert_eq!(written.users[0].ssh_keys.len(), 2);
    assert_eq!(written.users[1].name, "deploy");
    // Refuses to clobber without --force.
    let o = run(edgeimg().args(["node", "--hostname", "x", "-o"]).arg(&node));
    assert!(
        stderr(&o).contains("exists; pass --force"),
        "{}",
        stderr(&o)
    );

    for table in ["gpt", "dos"] {
        let img = make_image(d.path(), table);
        let t = d.path().join(format!("card-{table}.img"));
        let o = flash(&[&img, &t, &"--to-file", &"--yes", &"--node", &node]);
        assert!(o.status.success(), "{table}: {}", stderr(&o));
        let back = mtype(&t, MIB, "edgeimg/node.toml");
        assert_eq!(
            NodeConfig::from_toml(&back, Path::new("node.toml")).unwrap(),
            written,
            "{table}"
        );
        // The rest of the boot partition is intact and the FAT is clean.
        assert_eq!(
            mtype(&t, MIB, "hello.txt"),
            "hello from the boot partition\n"
        );
        let part = d.path().join("p1.fat");
        let data = std::fs::read(&t).unwrap();
        std::fs::write(&part, &data[MIB as usize..(41 * MIB) as usize]).unwrap();
        ok(Command::new("fsck.vfat").arg("-n").arg(&part));
        // inspect sees it.
        let out = ok(edgeimg().arg("inspect").arg(&t));
        assert!(
            out.contains("hostname edge-0042") && out.contains("ops, deploy"),
            "{out}"
        );
        // Flashing again over a card that already has edgeimg/ works (mmd skipped).
        let o = flash(&[
            &t,
            &d.path().join("again.img"),
            &"--to-file",
            &"--yes",
            &"--node",
            &node,
            &"--no-bmap",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn an_invalid_node_file_is_refused_before_writing_and_secrets_are_not_printed() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let node = d.path().join("node.toml");
    std::fs::write(
        &node,
        "hostname = \"edge-1\"\ntoken = \"K10SECRET-abcdef::server:0123456789\"\n",
    )
    .unwrap();
    let t = d.path().join("t.img");
    let o = flash(&[&img, &t, &"--to-file", &"--yes", &"--node", &node]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("node.toml") && e.contains("token"), "{e}");
    assert!(
        !e.contains("K10SECRET") && !String::from_utf8_lossy(&o.stdout).contains("K10SECRET"),
        "secret printed: {e}"
    );
    assert!(!t.exists(), "target written despite an invalid node file");
    std::fs::write(&node, "hostname = \"Not_Valid\"\n").unwrap();
    let o = flash(&[&img, &t, &"--to-file", &"--yes", &"--node", &node]);
    assert!(stderr(&o).contains("Not_Valid"), "{}", stderr(&o));
    assert!(!t.exists());
}

// ---- loop devices (root only) ----

struct Loop {
    dev: String,
    mounts: Vec<PathBuf>,
}

impl Loop {
    fn new(file: &Path) -> Option<Loop> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: loop devices need root");
            return None;
        }
        let o = Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file)
            .output()
            .ok()?;
        if !o.status.success() {
            eprintln!(
                "skipping: losetup failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        // --partscan alone does not always create the partition devices here; add them explicitly.
        let _ = Command::new("partx")
            .args(["-a", &dev])
            .stderr(Stdio::null())
            .status();
        Some(Loop {
            dev,
            mounts: vec![],
        })
    }

    fn part(&self, n: u32) -> String {
        let p = format!("{}p{n}", self.dev);
        for _ in 0..50 {
            if Path::new(&p).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        p
    }

    fn mount(&mut self, dev: &str, at: &Path) {
        ok(Command::new("mount").arg(dev).arg(at));
        self.mounts.push(at.to_path_buf());
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            let _ = Command::new("umount").arg(&m).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn backing(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

#[test]
fn flash_to_a_loop_device_verifies_and_places_the_node_file() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let zst = compress(&img, edgeimg::artifact::Compression::Zstd);
    let back = backing(d.path(), "disk", 80 * MIB);
    // Old content everywhere: unmapped blocks may keep it, mapped ones must not.
    std::fs::write(&back, vec![0xa5u8; (80 * MIB) as usize]).unwrap();
    let Some(lo) = Loop::new(&back) else { return };
    let node = d.path().join("node.toml");
    std::fs::write(&node, "hostname = \"loop-node\"\n").unwrap();
    let o = flash(&[&zst, &lo.dev, &"--yes", &"--node", &node]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dev = Path::new(&lo.dev);
    let back_cfg = mtype(dev, MIB, "edgeimg/node.toml");
    assert_eq!(
        NodeConfig::from_toml(&back_cfg, Path::new("n"))
            .unwrap()
            .hostname
            .as_deref(),
        Some("loop-node")
    );
    // Every mapped range of the image is on the device.
    let bmap = edgeimg::flash::bmap::Bmap::read(&d.path().join("test-gpt.img.bmap")).unwrap();
    let (i, l) = (
        std::fs::File::open(&img).unwrap(),
        std::fs::File::open(dev).unwrap(),
    );
    for (s, e) in bmap.byte_ranges() {
        if !(MIB..41 * MIB).contains(&s) {
            // (the boot partition changed: the node file was added)
            let (mut a, mut b) = (vec![0u8; (e - s) as usize], vec![0u8; (e - s) as usize]);
            i.read_exact_at(&mut a, s).unwrap();
            l.read_exact_at(&mut b, s).unwrap();
            assert!(a == b, "range {s}..{e} differs on {}", lo.dev);
        }
    }
}

#[test]
fn refuses_a_mounted_device_a_partition_and_a_system_disk() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    // A "card" that already holds an image, with its boot partition mounted.
    let card = d.path().join("card.img");
    std::fs::copy(&img, &card).unwrap();
    let Some(mut lo) = Loop::new(&card) else {
        return;
    };
    // (This kernel may lack vfat: mount an ext4 made on partition 2.)
    let p1 = lo.part(2);
    ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&p1));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    lo.mount(&p1, &mnt);
    let before = sha(&card);

    let o = flash(&[&img, &lo.dev, &"--yes"]);
    let e = stderr(&o);
    assert!(!o.status.success());
    let p1_name = p1.trim_start_matches("/dev/");
    assert!(
        e.contains(&format!("refusing to write to {}", lo.dev))
            && e.contains(&format!("/dev/{p1_name} is mounted at {}", mnt.display())),
        "{e}"
    );

    let o = flash(&[&img, &p1, &"--yes"]);
    assert!(
        stderr(&o).contains(&format!("is partition {p1_name} of {}", lo.dev)),
        "{}",
        stderr(&o)
    );

    // The same loop device treated as if it held /boot (test-only knob that can only add mount points).
    let o = run(edgeimg()
        .args(["flash", "--yes"])
        .arg(&img)
        .arg(&lo.dev)
        .env("EDGEIMG_FLASH_EXTRA_SYSTEM_MOUNTS", &mnt));
    assert!(
        stderr(&o).contains(&format!("it holds {}", mnt.display()))
            && stderr(&o).contains("this machine's own disk"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha(&card), before, "a refused flash wrote to the card");
}

#[test]
fn refuses_a_device_smaller_than_the_image() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let small = backing(d.path(), "small", 32 * MIB);
    let Some(lo) = Loop::new(&small) else { return };
    let o = flash(&[&img, &lo.dev, &"--yes"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&lo.dev) && e.contains("it is 32 MiB but the image needs 64 MiB"),
        "{e}"
    );
    // Compressed without a bmap the size is only known while writing: still refused, by the write.
    let zst = compress(&img, edgeimg::artifact::Compression::Zstd);
    std::fs::remove_file(d.path().join("test-gpt.img.bmap")).unwrap();
    let o = flash(&[&zst, &lo.dev, &"--yes"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("smaller than the image"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_disk_holding_root_is_refused_by_the_checks() {
    // Library-level (no write can happen): the real device behind `/`.
    let src = String::from_utf8(
        Command::new("findmnt")
            .args(["-n", "-o", "SOURCE", "/"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let src = src.trim();
    if !src.starts_with("/dev/") {
        eprintln!("skipping: / is on {src}, not a block device");
        return;
    }
    use edgeimg::flash::device::{HostView, Refusal, check_target, probe};
    let host = HostView::current();
    let mut t = probe(Path::new(src), &host).unwrap();
    if let Some(disk) = t.parent.clone() {
        t = probe(&PathBuf::from(format!("/dev/{disk}")), &host).unwrap();
    }
    let e = check_target(&t, false, Path::new("/nonexistent.img"), &host).unwrap_err();
    assert!(
        matches!(&e, Refusal::SystemDisk { mountpoint, .. } if mountpoint == "/"),
        "{e}"
    );
}

#[test]
fn k3s_role_server_and_token_travel_in_the_node_file_without_being_printed() {
    let d = tempfile::tempdir().unwrap();
    let secret = "K10b7e3f5a9c1d0e2f4::server:5f2c8a9d1e3b";
    let tok = d.path().join("token");
    std::fs::write(&tok, format!("{secret}\n")).unwrap();
    let node = d.path().join("edge-7.toml");
    let o = run(edgeimg()
        .args([
            "node",
            "--hostname",
            "edge-7",
            "--role",
            "agent",
            "--server",
            "https://10.0.0.1:6443",
            "--node-label",
            "site=berlin",
            "--token-from",
        ])
        .arg(&tok)
        .arg("-o")
        .arg(&node));
    assert!(o.status.success(), "{}", stderr(&o));
    let all =
        |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));
    assert!(!all(&o).contains(secret));
    let cfg = NodeConfig::from_toml(&std::fs::read_to_string(&node).unwrap(), &node).unwrap();
    let k = cfg.k3s.clone().unwrap();
    assert_eq!(
        (k.server.as_deref(), k.token.as_deref()),
        (Some("https://10.0.0.1:6443"), Some(secret))
    );
    // To stdout with a token: refused. From the environment: same file.
    let o = run(edgeimg()
        .args(["node", "--role", "agent"])
        .env("EDGEIMG_K3S_TOKEN", secret));
    assert!(
        !o.status.success() && stderr(&o).contains("--out") && !all(&o).contains(secret),
        "{}",
        all(&o)
    );

    let img = make_image(d.path(), "gpt");
    let t = d.path().join("card.img");
    let o = flash(&[&img, &t, &"--to-file", &"--yes", &"--node", &node]);
    assert!(
        o.status.success() && !all(&o).contains(secret),
        "{}",
        all(&o)
    );
    let back = NodeConfig::from_toml(&mtype(&t, MIB, "edgeimg/node.toml"), Path::new("n")).unwrap();
    assert_eq!(back, cfg);
    let o = run(edgeimg().arg("inspect").arg(&t));
    let out = all(&o);
    assert!(
        out.contains("k3s role agent, server https://10.0.0.1:6443, token set (not shown)"),
        "{out}"
    );
    assert!(!out.contains(secret));
    let o = run(edgeimg().args(["inspect", "--json"]).arg(&t));
    assert!(!all(&o).contains(secret));
}

/// Every file in `dir` (names only), to show nothing stray was left.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn to_file_with_a_node_is_0600_and_a_failed_flash_leaves_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let node = d.path().join("node.toml");
    std::fs::write(&node, "hostname = \"edge-1\"\n[k3s]\nserver = \"https://10.0.0.1:6443\"\ntoken = \"K10secret::server:abc\"\n").unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let t = out.join("card.img");
    let o = flash(&[&img, &t, &"--to-file", &"--yes", &"--node", &node]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(&t).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an image holding a join token must be 0600");
    assert_eq!(names_in(&out), ["card.img"]);
    // Without a node file an image holds no secret: 0644.
    let plain = out.join("plain.img");
    assert!(
        flash(&[&img, &plain, &"--to-file", &"--yes"])
            .status
            .success()
    );
    assert_eq!(
        std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // A flash that fails verification leaves neither a partial target nor a
    // temporary file; an existing target keeps its old content.
    let failed = out.join("failed.img");
    let o = run(edgeimg()
        .args(["flash", "--to-file", "--yes"])
        .arg(&img)
        .arg(&failed)
        .env("EDGEIMG_FLASH_CORRUPT_AT", (DATA_AT + 10).to_string())
        .stdin(Stdio::null()));
    assert!(!o.status.success());
    assert!(!failed.exists(), "a failed flash left {}", failed.display());
    std::fs::write(&failed, b"old").unwrap();
    let o = run(edgeimg()
        .args(["flash", "--to-file", "--yes"])
        .arg(&img)
        .arg(&failed)
        .env("EDGEIMG_FLASH_CORRUPT_AT", (DATA_AT + 10).to_string())
        .stdin(Stdio::null()));
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&failed).unwrap(), b"old");
    assert_eq!(names_in(&out), ["card.img", "failed.img", "plain.img"]);
}

#[test]
fn to_file_with_at_at_in_the_name_puts_the_node_file_in_that_file() {
    let d = tempfile::tempdir().unwrap();
    let img = make_image(d.path(), "gpt");
    let node = d.path().join("node.toml");
    std::fs::write(&node, "hostname = \"edge-at\"\n").unwrap();
    // mtools reads `X@@N` as file X at offset N: with the target named
    // `decoy@@1048576.img` a naive `-i TARGET@@OFF` addresses `decoy`.
    let dir = d.path().join("dir@@1");
    std::fs::create_dir(&dir).unwrap();
    let decoy = dir.join("decoy");
    std::fs::copy(&img, &decoy).unwrap();
    let before = sha(&decoy);
    let t = dir.join(format!("decoy@@{MIB}.img"));
    let o = flash(&[&img, &t, &"--to-file", &"--yes", &"--node", &node]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha(&decoy), before, "the node file went into another file");
    let plain = d.path().join("check.img");
    std::fs::copy(&t, &plain).unwrap();
    let back = mtype(&plain, MIB, "edgeimg/node.toml");
    assert!(back.contains("edge-at"), "{back}");
    assert_eq!(names_in(&dir).len(), 2);
}
