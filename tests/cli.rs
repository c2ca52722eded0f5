//! Bad input through the real binary: one clear error, non-zero exit, and no
//! output under a final name. These run before any bootstrap, so they are fast.

mod common;
use common::*;

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("edgeimg.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn fails_with(args: &[&str], cwd: &std::path::Path, needles: &[&str]) -> String {
    let o = run(edgeimg().args(args).current_dir(cwd));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} should fail; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr of {args:?} lacks `{n}`:\n{err}");
    }
    assert_eq!(
        err.matches("error:").count(),
        1,
        "one error, not several:\n{err}"
    );
    err
}

#[test]
fn malformed_toml_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    write_config(d.path(), "[image]\nname = \"x\"\nsize = \n");
    fails_with(&["build", "--out", "out"], d.path(), &["edgeimg.toml:3:"]);
    assert!(visible_files(&d.path().join("out")).is_empty());
}

#[test]
fn unknown_key_names_key_and_line() {
    let d = tempfile::tempdir().unwrap();
    write_config(
        d.path(),
        "[image]\nname = \"x\"\n\n[base]\nsuite = \"trixie\"\npackagez = [\"vim\"]\n",
    );
    fails_with(
        &["build", "--out", "out"],
        d.path(),
        &["edgeimg.toml", ":6:", "packagez"],
    );
    assert!(visible_files(&d.path().join("out")).is_empty());
}

#[test]
fn wrong_type_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    write_config(
        d.path(),
        "[image]\nname = \"x\"\noverlays = \"not-a-list\"\n",
    );
    fails_with(&["plan"], d.path(), &["edgeimg.toml", ":3:", "overlays"]);
}

#[test]
fn unknown_board_lists_the_known_ones() {
    let d = tempfile::tempdir().unwrap();
    fails_with(
        &["build", "--board", "vax", "--out", "out"],
        d.path(),
        &["unknown board `vax`", "x86_64", "--board"],
    );
    write_config(d.path(), "[image]\nname = \"x\"\nboard = \"pdp11\"\n");
    fails_with(&["plan"], d.path(), &["edgeimg.toml:3", "pdp11"]);
}

#[test]
fn missing_host_tool_names_tool_and_package() {
    // A PATH with every tool but mkfs.erofs.
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for t in edgeimg::cmd::BUILD_TOOLS
        .iter()
        .filter(|t| t.name != "mkfs.erofs")
    {
        let real = edgeimg::cmd::which(t.name)
            .unwrap_or_else(|| panic!("{} must be installed for this test", t.name));
        std::os::unix::fs::symlink(real, bin.join(t.name)).unwrap();
    }
    let o = run(edgeimg()
        .args(["build", "--out", "out"])
        .current_dir(d.path())
        .env("PATH", &bin));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("mkfs.erofs") && err.contains("erofs-utils"),
        "{err}"
    );
    assert!(visible_files(&d.path().join("out")).is_empty());
}

#[test]
fn unwritable_output_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    // Even root cannot create directories in /proc.
    fails_with(
        &["build", "--out", "/proc/edgeimg-out"],
        d.path(),
        &["/proc/edgeimg-out"],
    );
    // A file where the directory should be.
    std::fs::write(d.path().join("afile"), "x").unwrap();
    fails_with(&["build", "--out", "afile/out"], d.path(), &["afile/out"]);
}

#[test]
fn bad_values_name_key_and_line() {
    let d = tempfile::tempdir().unwrap();
    write_config(d.path(), "[image]\nname = \"x\"\nsize = \"12 parsecs\"\n");
    fails_with(&["plan"], d.path(), &["edgeimg.toml", ":3:", "12 parsecs"]);
    write_config(
        d.path(),
        "[image]\nname = \"x\"\noverlays = [\"missing-dir\"]\n",
    );
    fails_with(
        &["plan"],
        d.path(),
        &["edgeimg.toml:3", "image.overlays", "missing-dir"],
    );
}

#[test]
fn plan_without_config_uses_the_embedded_default() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(edgeimg().arg("plan").current_dir(d.path()));
    assert!(
        out.contains("built-in default")
            && out.contains("edgeimg-root-a")
            && out.contains("root=PARTUUID="),
        "{out}"
    );
    let json = ok(edgeimg().args(["plan", "--json"]).current_dir(d.path()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let root = v["ids"]["root_a_partuuid"].as_str().unwrap();
    assert!(
        v["kernel_cmdline"]
            .as_str()
            .unwrap()
            .contains(&format!("root=PARTUUID={root}"))
    );
}

#[test]
fn boards_and_doctor_list_x86_64() {
    let d = tempfile::tempdir().unwrap();
    let out = ok(edgeimg().arg("boards").current_dir(d.path()));
    assert!(
        out.contains("x86_64") && out.contains("gpt") && out.contains("q35"),
        "{out}"
    );
    let o = run(edgeimg()
        .arg("doctor")
        .current_dir(d.path())
        .env("PATH", "/nonexistent"));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(
        text.contains("MISSING  mkfs.erofs") && text.contains("erofs-utils"),
        "{text}"
    );
    // Each check once (debugfs is both a build and an SELinux tool), every
    // row's status and name columns aligned.
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        names.len(),
        unique.len(),
        "a check is listed twice:\n{text}"
    );
    for l in text
        .lines()
        .filter(|l| l.starts_with("MISSING") || l.starts_with("ok "))
    {
        assert!(
            l.len() > 50 && l.as_bytes()[49] == b' ',
            "misaligned row: {l}"
        );
    }
}

#[test]
fn bad_selinux_module_fails_with_the_compilers_line() {
    // Compiled before any bootstrap: the error is immediate, from checkmodule.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("mypolicy.te"),
        "module mypolicy 1.0;\nrequire { type bin_t; }\nallow bin_t bin_t:file { read }\nnot policy\n",
    )
    .unwrap();
    write_config(
        d.path(),
        "[image]\nname = \"x\"\n\n[k3s]\nenabled = false\n\n[selinux]\nmode = \"enforcing\"\nmodules = [\"mypolicy.te\"]\n",
    );
    let err = fails_with(
        &["build", "--out", "out"],
        d.path(),
        &["mypolicy.te", "does not compile", "checkmodule"],
    );
    // checkmodule's own message: file:line:ERROR (the missing ';' shows on line 4).
    assert!(
        err.contains("mypolicy.te:4:ERROR") || err.contains("mypolicy.te:3:ERROR"),
        "{err}"
    );
    assert!(visible_files(&d.path().join("out")).is_empty());
}

#[test]
fn selinux_config_errors_name_key_and_line() {
    let d = tempfile::tempdir().unwrap();
    write_config(
        d.path(),
        "[image]\nname = \"x\"\n\n[selinux]\nmode = \"strict\"\n",
    );
    fails_with(&["plan"], d.path(), &["edgeimg.toml", ":5:", "strict"]);
    write_config(
        d.path(),
        "[image]\nname = \"x\"\n\n[selinux]\nmode = \"enforcing\"\nmodules = [\"nope.te\"]\n",
    );
    fails_with(
        &["plan"],
        d.path(),
        &[
            "edgeimg.toml:6",
            "selinux.modules",
            "nope.te",
            "does not exist",
        ],
    );
    write_config(
        d.path(),
        "[image]\nname = \"x\"\n\n[selinux]\nmodules = [\"x.te\"]\n",
    );
    fails_with(
        &["plan"],
        d.path(),
        &["edgeimg.toml:5", "selinux.modules", "disabled"],
    );
}

#[test]
fn selinux_plan_adds_packages_and_kernel_arguments() {
    let d = tempfile::tempdir().unwrap();
    write_config(
        d.path(),
        "[image]\nname = \"x\"\n\n[selinux]\nmode = \"enforcing\"\n",
    );
    let o = run(edgeimg().args(["plan"]).current_dir(d.path()));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    for p in ["selinux-policy-default", "policycoreutils", "selinux-utils"] {
        assert!(out.contains(p), "plan lacks {p}:\n{out}");
    }
    assert!(
        out.contains("security=selinux selinux=1 enforcing=1"),
        "{out}"
    );
    write_config(d.path(), "[image]\nname = \"x\"\n");
    let o = run(edgeimg().args(["plan"]).current_dir(d.path()));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains("selinux-policy")
            && !out.contains("security=selinux")
            && out.contains("selinux    off"),
        "SELinux off by default:\n{out}"
    );
}
