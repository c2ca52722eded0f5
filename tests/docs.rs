//! Generated documentation: docs/cli.md must match the clap definitions
//! (regenerate with `edgeimg docs --write docs/cli.md`, or run this test with
//! UPDATE_DOCS=1); completions and man pages come from the same definitions.

mod common;
use common::*;

use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn cli_reference_is_current() {
    let path = repo().join("docs/cli.md");
    let want = edgeimg::docgen::cli_reference();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/cli.md is stale: regenerate it with `cargo run -- docs --write docs/cli.md` \
         (or `UPDATE_DOCS=1 cargo test --test docs`)"
    );
    // The binary's check agrees.
    ok(edgeimg().args(["docs", "--check"]).arg(&path));
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), "stale").unwrap();
    let o = run(edgeimg().args(["docs", "--check"]).arg(tmp.path()));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("is stale"));
    // Every subcommand has its section.
    for sub in [
        "build",
        "plan",
        "run",
        "doctor",
        "boards",
        "flash",
        "inspect",
        "node",
        "completions",
        "man",
        "docs",
    ] {
        assert!(
            want.contains(&format!("\n## edgeimg {sub}\n")),
            "no section for {sub}"
        );
    }
}

#[test]
fn completions_come_from_the_clap_definitions() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let s = ok(edgeimg().args(["completions", shell]));
        assert!(
            s.contains("flash") && s.contains("inspect") && s.contains("to-file"),
            "{shell} completion lacks flash/--to-file"
        );
    }
    let bash = ok(edgeimg().args(["completions", "bash"]));
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bash).unwrap();
    ok(std::process::Command::new("bash").arg("-n").arg(f.path()));
}

#[test]
fn man_pages_for_every_subcommand() {
    let d = tempfile::tempdir().unwrap();
    let listed = ok(edgeimg().args(["man", "--out"]).arg(d.path().join("man1")));
    let files = visible_files(&d.path().join("man1"));
    assert!(
        files.contains(&"edgeimg.1".to_string()) && files.contains(&"edgeimg-flash.1".to_string()),
        "{files:?}"
    );
    assert_eq!(listed.lines().count(), files.len());
    let flash = std::fs::read_to_string(d.path().join("man1/edgeimg-flash.1")).unwrap();
    assert!(flash.starts_with(".ie") || flash.contains(".TH"), "{flash}");
    assert!(flash.contains("to\\-file"), "{flash}");
}

#[test]
fn quickstart_only_uses_real_subcommands() {
    let q = std::fs::read_to_string(repo().join("docs/quickstart.md")).unwrap();
    let subs: Vec<String> = {
        use clap::CommandFactory;
        edgeimg::cli::Cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect()
    };
    let mut seen = 0;
    for line in q.lines() {
        let Some(rest) = line.trim_start().strip_prefix("edgeimg ") else {
            continue;
        };
        let sub = rest.split_whitespace().next().unwrap_or("");
        if sub.starts_with('-') {
            continue;
        }
        assert!(
            subs.iter().any(|s| s == sub),
            "docs/quickstart.md uses unknown subcommand {sub:?}: {line}"
        );
        seen += 1;
    }
    assert!(seen >= 5, "quickstart shows too few commands");
}

#[test]
fn the_example_config_plans_when_copied_as_its_comment_says() {
    let text = std::fs::read_to_string(repo().join("examples/edgeimg.toml")).unwrap();
    assert!(
        text.contains("copy to ./edgeimg.toml at the repository's root"),
        "{text}"
    );
    // The repository's root, as far as the example refers to it.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("edgeimg.toml"), &text).unwrap();
    let overlay = d.path().join("overlays/example/etc");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::copy(
        repo().join("overlays/example/etc/motd.j2"),
        overlay.join("motd.j2"),
    )
    .unwrap();
    let plan = ok(edgeimg().arg("plan").current_dir(d.path()));
    assert!(plan.contains("overlays/example"), "{plan}");
}
