//! Updates from a removable medium: the agent's `update usb` on a "stick"
//! (a directory) holding a copy of a repository made by `edgeimg publish`,
//! or one update file, installed into a fake device (its slot, sysfs and
//! ESP under a temporary root), as `edgeimg-update-usb@.service` runs it.

mod common;
use common::fleet::*;
use common::*;

use edgeimg_agent::Root;
use edgeimg_agent::update::state::Status;
use edgeimg_agent::update::usb::{self, Options, Outcome, Source};
use std::path::Path;

/// The image's own repository (the network): unreachable at a stick's site.
const UNREACHABLE: &str = "http://127.0.0.1:9/";

/// Nothing reached slot B or the ESP.
fn untouched(root: &Root) {
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert!(slot.iter().all(|&b| b == 0), "slot b was written");
    let entries: Vec<_> = std::fs::read_dir(root.path("/boot/efi/loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["edgeimg-1-a.conf"]);
    assert!(!root.path("/boot/efi/edgeimg/b").exists());
}

fn installed(root: &Root, want: &[u8]) {
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert_eq!(&slot[..want.len()], want);
    assert!(
        std::fs::read_dir(root.path("/boot/efi/loader/entries"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with("-b+3.conf"))
    );
}

/// No symbolic links in `dir`: a repository copies onto a FAT stick as it
/// is (`cp -r`), and a stick with links is refused.
fn no_links(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        assert!(!t.is_symlink(), "{}", e.path().display());
        if t.is_dir() {
            no_links(&e.path());
        }
    }
}

/// A stick holding `edgeimg publish`'s repository as `repository/`.
fn repo_stick(f: &Fleet) -> tempfile::TempDir {
    no_links(&f.repo);
    let s = tempfile::tempdir().unwrap();
    copy_tree(&f.repo, &s.path().join("repository"));
    s
}

/// A stick holding the update files given, at its top level.
fn file_stick(files: &[&Path]) -> tempfile::TempDir {
    let s = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(f, s.path().join(f.file_name().unwrap())).unwrap();
    }
    s
}

fn usb(root: &Root, stick: &Path, reboot: bool) -> edgeimg_agent::Result<Outcome> {
    usb::run(
        root,
        &Source::Mount(stick.to_path_buf()),
        &Options { reboot },
    )
}

#[test]
fn a_repository_copy_installs_the_newest_update_and_reboots() {
    let f = fleet();
    let v3 = noise(120_000, 3);
    f.publish(2, &noise(100_000, 2));
    f.publish(3, &v3);
    let stick = repo_stick(&f);
    let (_d, root) = device(&f, 1, UNREACHABLE);
    let o = usb(&root, stick.path(), true).unwrap();
    assert_eq!(
        o,
        Outcome::Installed {
            name: "t-x86_64-3-0000000000000003.update".into(),
            generation: 3
        }
    );
    installed(&root, &v3);
    assert_eq!(root.skipped_commands(), ["systemctl reboot"]);
    let st = Status::load(&root).unwrap();
    let p = st.pending.unwrap();
    assert_eq!((p.target.as_str(), p.slot.as_str()), (o_name(&o), "b"));
    // The pull's datastore now trusts this copy's metadata: an older copy
    // (a replay) would be refused like over the network.
    assert!(
        root.path(edgeimg_agent::update::tuf_client::DATASTORE)
            .join("timestamp.json")
            .exists()
    );
}

fn o_name(o: &Outcome) -> &str {
    match o {
        Outcome::Installed { name, .. } => name,
        Outcome::Nothing(_) => "",
    }
}

#[test]
fn a_repository_copy_with_nothing_newer_installs_nothing() {
    let f = fleet();
    f.publish(2, &noise(100_000, 2));
    let stick = repo_stick(&f);
    let (_d, root) = device(&f, 2, UNREACHABLE);
    let o = usb(&root, stick.path(), true).unwrap();
    assert!(
        matches!(&o, Outcome::Nothing(w) if w.contains("nothing newer than generation 2")),
        "{o:?}"
    );
    untouched(&root);
    assert!(root.skipped_commands().is_empty(), "no reboot");
}

#[test]
fn an_expired_repository_copy_is_refused_and_nothing_written() {
    let f = fleet();
    f.publish(2, &noise(100_000, 2));
    f.expire_timestamp();
    let stick = repo_stick(&f);
    let (_d, root) = device(&f, 1, UNREACHABLE);
    let e = usb(&root, stick.path(), true).unwrap_err().to_string();
    assert!(
        e.contains("does not verify") && e.to_lowercase().contains("expired"),
        "{e}"
    );
    untouched(&root);
    assert!(root.skipped_commands().is_empty());
    // Recorded in the status like a pull's error.
    assert_eq!(
        Status::load(&root).unwrap().last_error.as_deref(),
        Some(e.as_str())
    );
}

#[test]
fn a_single_update_file_installs_once() {
    let f = fleet();
    let v2 = noise(90_000, 2);
    let u = f.update(2, &v2);
    let stick = file_stick(&[&u]);
    let (_d, root) = device(&f, 1, UNREACHABLE);
    let o = usb(&root, stick.path(), false).unwrap();
    let name = "t-x86_64-2-0000000000000002.update";
    assert_eq!(
        o,
        Outcome::Installed {
            name: name.into(),
            generation: 2
        }
    );
    installed(&root, &v2);
    assert!(root.skipped_commands().is_empty(), "no --reboot, no reboot");
    let p = Status::load(&root).unwrap().pending.unwrap();
    assert_eq!((p.target.as_str(), p.generation), (name, 2));

    // The stick is still in at the next boot, which is the trial boot of
    // slot B running generation 2: nothing to install.
    std::fs::write(root.path("/proc/sys/kernel/random/boot_id"), "boot-2\n").unwrap();
    std::fs::write(
        root.path("/proc/cmdline"),
        "root=PARTUUID=pu-3 ro edgeimg.data=PARTUUID=pu-4 edgeimg.slot=b\n",
    )
    .unwrap();
    std::fs::write(root.path(edgeimg_contract::update::GENERATION_PATH), "2\n").unwrap();
    let o = usb(&root, stick.path(), true).unwrap();
    assert!(
        matches!(&o, Outcome::Nothing(w) if w.contains("the generation this device runs")),
        "{o:?}"
    );
    assert!(root.skipped_commands().is_empty());
    assert_eq!(Status::load(&root).unwrap().pending, None, "settled");
}

#[test]
fn a_release_whose_trial_boot_failed_is_not_installed_again() {
    let f = fleet();
    let u = f.update(2, &noise(90_000, 2));
    let stick = file_stick(&[&u]);
    let (_d, root) = device(&f, 1, UNREACHABLE);
    usb(&root, stick.path(), true).unwrap();
    // Back on slot A (generation 1) after a reboot: the trial failed.
    std::fs::write(root.path("/proc/sys/kernel/random/boot_id"), "boot-2\n").unwrap();
    std::fs::write(root.path("/dev/vda3"), vec![0u8; SLOT]).unwrap();
    let e = usb(&root, stick.path(), true).unwrap_err().to_string();
    assert!(e.contains("its trial boot failed on this device"), "{e}");
    let st = Status::load(&root).unwrap();
    assert_eq!(st.failed, ["t-x86_64-2-0000000000000002.update"]);
    let slot = std::fs::read(root.path("/dev/vda3")).unwrap();
    assert!(slot.iter().all(|&b| b == 0), "not written again");
    assert_eq!(
        root.skipped_commands(),
        ["systemctl reboot"],
        "the first run's only"
    );
}

#[test]
fn an_older_update_file_is_refused_and_nothing_written() {
    let f = fleet();
    let u = f.update(2, &noise(90_000, 2));
    let stick = file_stick(&[&u]);
    let (_d, root) = device(&f, 3, UNREACHABLE);
    let e = usb(&root, stick.path(), true).unwrap_err().to_string();
    assert!(e.contains("refusing to downgrade"), "{e}");
    untouched(&root);
    assert!(root.skipped_commands().is_empty());
}

#[test]
fn a_file_for_another_board_or_signed_by_another_key_is_refused() {
    let f = fleet();
    let sub = f.dir.join("pi");
    std::fs::create_dir_all(&sub).unwrap();
    let pi = updates::make_update(&sub, &f.update_key, "rpi4", "arm64", 2, b"r", "p");
    let (other_key, _) = updates::keygen(&f.dir, "other");
    let sub = f.dir.join("other");
    std::fs::create_dir_all(&sub).unwrap();
    let other = updates::make_update(&sub, &other_key, "x86_64", "amd64", 2, b"r", "o");
    for (u, want) in [(&pi, "for board rpi4"), (&other, "bad signature")] {
        let stick = file_stick(&[u]);
        let (_d, root) = device(&f, 1, UNREACHABLE);
        let e = usb(&root, stick.path(), true).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        untouched(&root);
    }
}

#[test]
fn links_off_the_stick_and_ambiguous_sticks_are_refused_before_anything_is_read() {
    let f = fleet();
    f.publish(2, &noise(100_000, 2));
    let u = f.update(3, &noise(90_000, 3));
    let (_d, root) = device(&f, 1, UNREACHABLE);

    // A metadata file of the copy links to the fleet's own repository.
    let stick = repo_stick(&f);
    let ts = stick
        .path()
        .join("repository/x86_64/metadata/timestamp.json");
    std::fs::remove_file(&ts).unwrap();
    std::os::unix::fs::symlink(f.metadata().join("timestamp.json"), &ts).unwrap();
    let e = usb(&root, stick.path(), true).unwrap_err().to_string();
    assert!(e.contains("timestamp.json is a symbolic link"), "{e}");

    // The update file a link to one elsewhere.
    let stick = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&u, stick.path().join("x.update")).unwrap();
    let e = usb(&root, stick.path(), true).unwrap_err().to_string();
    assert!(e.contains("x.update is a symbolic link"), "{e}");

    // Both a copy and a file; two files.
    let stick = repo_stick(&f);
    std::fs::copy(&u, stick.path().join("x.update")).unwrap();
    let e = usb(&root, stick.path(), true).unwrap_err().to_string();
    assert!(e.contains("both a repository copy"), "{e}");
    let stick = file_stick(&[&u]);
    std::fs::copy(&u, stick.path().join("y.update")).unwrap();
    let e = usb(&root, stick.path(), true).unwrap_err().to_string();
    assert!(e.contains("2 update files"), "{e}");

    untouched(&root);
    assert!(root.skipped_commands().is_empty());
    assert!(
        !root
            .path(edgeimg_agent::update::tuf_client::DATASTORE)
            .exists(),
        "no metadata was read"
    );
    assert!(
        !root
            .path(edgeimg_agent::update::state::STATUS_PATH)
            .exists(),
        "nothing recorded"
    );
}

/// The embedded static agent runs `update usb` as the unit does (here on a
/// mount point): its outcome lines and exit codes.
#[test]
fn the_static_agent_prints_one_outcome_line() {
    let f = fleet();
    f.publish(2, &noise(50_000, 2));
    let (_d, root) = device(&f, 2, UNREACHABLE);
    copy_tree(&f.repo, &root.path("/stick/repository"));
    let agent = root.path("/edgeimg-agent");
    std::fs::write(&agent, edgeimg::agents::AGENT_X86_64).unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agent_run = |args: &[&str]| {
        run(std::process::Command::new("unshare")
            .args(["--map-root-user", "--root"])
            .arg(root.prefix())
            .arg("/edgeimg-agent")
            .args(args))
    };
    let o = agent_run(&["update", "usb", "/stick", "--reboot"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.lines().any(|l| l
            == "edgeimg: usb update: nothing to install: the repository copy offers nothing newer than generation 2 for this device"),
        "{out}"
    );
    let u = f.update(3, b"r");
    std::fs::copy(&u, root.path("/stick/x.update")).unwrap();
    let o = agent_run(&["update", "usb", "/stick"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.lines().any(|l| l
            .starts_with("edgeimg: usb update: refused: the medium holds both a repository copy")),
        "{out}"
    );
}
