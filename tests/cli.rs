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
            && out.contains("root=/dev/mapper/edgeimg-root")
            && out.contains("verity     on"),
        "{out}"
    );
    let json = ok(edgeimg().args(["plan", "--json"]).current_dir(d.path()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let root = v["ids"]["root_a_partuuid"].as_str().unwrap();
    assert!(
        v["kernel_cmdline"]
            .as_str()
            .unwrap()
            .contains(&format!("edgeimg.verity.dev=PARTUUID={root}"))
    );
}

#[test]
fn verity_false_opts_out_of_the_verity_root() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("edgeimg.toml"),
        "[image]\nname = \"x\"\nverity = false\n",
    )
    .unwrap();
    let out = ok(edgeimg().arg("plan").current_dir(d.path()));
    assert!(
        out.contains("verity     off") && out.contains("root=PARTUUID="),
        "{out}"
    );
    let json = ok(edgeimg().args(["plan", "--json"]).current_dir(d.path()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["verity"], false, "{v}");
    assert!(
        !v["base"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "cryptsetup-bin"),
        "{v}"
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
    // The secure boot column: proven on x86_64 and arm64, none on the Pi.
    let row = |b: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(b))
            .unwrap_or_else(|| panic!("no {b} row: {out}"))
            .to_string()
    };
    assert!(row("x86_64").contains("signed UKI, fleet keys  "), "{out}");
    assert!(
        row("arm64").contains("signed UKI, fleet keys") && !row("arm64").contains("untested"),
        "{out}"
    );
    assert!(
        row("rpi4").contains("none: verity + signed updates"),
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

fn json_of(args: &[&str], cwd: &std::path::Path) -> serde_json::Value {
    let o = run(edgeimg().args(args).current_dir(cwd));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
}

#[test]
fn json_on_boards_doctor_and_node() {
    let d = tempfile::tempdir().unwrap();
    let v = json_of(&["boards", "--json"], d.path());
    let x86 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "x86_64")
        .unwrap();
    assert_eq!(x86["arch"], "amd64");
    assert_eq!(x86["partition_table"], "gpt");
    assert_eq!(x86["secure_boot"], "signed UKI, fleet keys");

    // doctor --json: data fields, and a K3s bundle check whose fix is a command.
    let v = json_of(&["doctor", "--board", "x86_64", "--json"], d.path());
    assert_eq!(v["ready"], false, "no bundle is cached here");
    let k3s = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"].as_str().unwrap().starts_with("K3s bundle"))
        .expect("a K3s bundle check");
    assert_eq!(k3s["ok"], false);
    assert!(
        k3s["fix"]
            .as_str()
            .unwrap()
            .contains("edgeimg bundle fetch k3s-v1.36.4+k3s1 --arch amd64"),
        "{k3s}"
    );

    // node --json: what was written, the token as `true`, never its value.
    let o = run(edgeimg()
        .args([
            "node",
            "--hostname",
            "edge-01",
            "--role",
            "agent",
            "--server",
            "https://10.0.0.1:6443",
            "-o",
            "n.toml",
            "--json",
        ])
        .env("EDGEIMG_K3S_TOKEN", "K10secret-token-value")
        .current_dir(d.path()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("K10secret"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["written"], "n.toml");
    assert!(
        out.contains("edge-01") && out.contains("\"token\": true"),
        "{out}"
    );
}

#[test]
fn doctor_names_the_k3s_bundle_and_the_command_that_fixes_it() {
    let d = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["doctor", "--board", "x86_64"])
        .env("EDGEIMG_CACHE_DIR", d.path().join("cache"))
        .current_dir(d.path()));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    let line = text
        .lines()
        .find(|l| l.contains("K3s bundle k3s-v1.36.4+k3s1 (amd64)"))
        .unwrap_or_else(|| panic!("no K3s bundle line:\n{text}"));
    assert!(
        line.starts_with("MISSING")
            && line.contains("edgeimg bundle fetch k3s-v1.36.4+k3s1 --arch amd64"),
        "{line}"
    );
    // A lock that does not parse is named.
    std::fs::write(d.path().join("edgeimg.lock"), "lock_version = [\n").unwrap();
    let o = run(edgeimg()
        .args(["doctor", "--board", "x86_64"])
        .env("EDGEIMG_CACHE_DIR", d.path().join("cache"))
        .current_dir(d.path()));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("MISSING  bundle lock edgeimg.lock"), "{text}");
    // A plain appliance needs no bundle.
    let c = d.path().join("plain.toml");
    std::fs::write(&c, "[image]\nname = \"x\"\n\n[k3s]\nenabled = false\n").unwrap();
    let o = run(edgeimg()
        .args(["doctor", "--board", "x86_64", "-c", "plain.toml"])
        .current_dir(d.path()));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("K3s bundle"));
}

#[test]
fn quiet_quiets_doctor_and_keygen() {
    let d = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["-q", "doctor", "--board", "x86_64"])
        .current_dir(d.path()));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Not ready (no bundle): the error alone says what to do.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("edgeimg bundle fetch"), "{err}");
    let o = run(edgeimg()
        .args(["keygen", "-q", "--out", "fleet"])
        .current_dir(d.path()));
    assert!(o.status.success() && o.stdout.is_empty());
    assert!(d.path().join("fleet.key").is_file());
}

#[test]
fn no_colour_codes_in_a_pipe_or_with_no_color() {
    let d = tempfile::tempdir().unwrap();
    let o = run(edgeimg()
        .args(["-vv", "doctor", "--board", "x86_64"])
        .current_dir(d.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("DEBUG"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe:\n{err:?}");
    // On a terminal (script(1) gives one): colour, unless NO_COLOR is set.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_edgeimg");
    let on_tty = |no_color: bool| {
        let mut c = std::process::Command::new("script");
        c.args([
            "-qec",
            &format!("{bin} -vv doctor --board x86_64"),
            "/dev/null",
        ])
        .current_dir(d.path());
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
    };
    assert!(on_tty(false).contains('\u{1b}'));
    assert!(!on_tty(true).contains('\u{1b}'));
}

#[test]
fn global_options_are_listed_apart_and_exit_codes_documented() {
    let d = tempfile::tempdir().unwrap();
    let help = ok(edgeimg().args(["build", "--help"]).current_dir(d.path()));
    let (own, global) = help
        .split_once("Global options:")
        .expect("a Global options heading");
    assert!(
        !own.contains("--quiet") && !own.contains("--verbose"),
        "{help}"
    );
    assert!(
        global.contains("--quiet") && global.contains("--verbose"),
        "{help}"
    );
    let top = ok(edgeimg().arg("--help").current_dir(d.path()));
    for s in ["Exit status:", "1  refused", "2  usage", "3  an input file"] {
        assert!(top.contains(s), "{top}");
    }
    // 2: usage.
    let o = run(edgeimg().args(["boards", "--nope"]).current_dir(d.path()));
    assert_eq!(o.status.code(), Some(2));
}

/// Runs edgeimg with `args` in `dir`: its exit code and stderr.
fn exit_of(args: &[&str], dir: &std::path::Path) -> (Option<i32>, String) {
    let o = run(edgeimg().args(args).current_dir(dir));
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn update_verify_of_a_missing_file_exits_3_a_refusal_1() {
    let d = tempfile::tempdir().unwrap();
    ok(edgeimg()
        .args(["keygen", "--out", "k"])
        .current_dir(d.path()));
    let (code, err) = exit_of(
        &["update", "verify", "missing.update", "--key", "k.pub"],
        d.path(),
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("missing.update"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    std::fs::write(d.path().join("junk.update"), b"not an update file at all").unwrap();
    let (code, err) = exit_of(
        &["update", "verify", "junk.update", "--key", "k.pub"],
        d.path(),
    );
    assert_eq!(code, Some(1), "{err}");
}

/// A missing config or image exits 3 like a missing update file; a config
/// that reads but is wrong exits 1.
#[test]
fn a_missing_config_or_image_exits_3() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        &["plan", "-c", "nope.toml"][..],
        &["inspect", "nope.img"][..],
    ] {
        let (code, err) = exit_of(args, d.path());
        assert_eq!(code, Some(3), "{args:?}: {err}");
        assert!(err.contains("nope."), "{err}");
    }
    std::fs::write(d.path().join("bad.toml"), "[image]\nname = 7\n").unwrap();
    let (code, err) = exit_of(&["plan", "-c", "bad.toml"], d.path());
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn an_os_error_is_printed_once() {
    let d = tempfile::tempdir().unwrap();
    let err = fails_with(&["plan", "-c", "nope.toml"], d.path(), &["nope.toml"]);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert_eq!(err.matches("nope.toml").count(), 1, "{err}");
}

#[test]
fn flash_to_a_directory_says_what_it_is_once() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("x.img"), vec![0u8; 4096]).unwrap();
    std::fs::create_dir(d.path().join("adir")).unwrap();
    let o = run(edgeimg()
        .args(["flash", "x.img", "adir", "--no-bmap", "-y"])
        .current_dir(d.path()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("it is a directory, not a block device or a regular file")
            && !err.contains("neither"),
        "{err}"
    );
}
