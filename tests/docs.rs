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

/// The keys serde expects where an unknown key was given, from its error
/// ("unknown field `zzz`, expected one of `a`, `b`" / "expected `a` or `b`").
fn expected_keys(err: &str) -> Vec<String> {
    let tail = err
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("no `expected` list in: {err}"));
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The text of docs/config.md from `heading` to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/config.md has no {heading}"));
    let rest = &doc[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn every_config_key_the_parser_accepts_is_in_config_md() {
    let doc = std::fs::read_to_string(repo().join("docs/config.md")).unwrap();
    let d = tempfile::tempdir().unwrap();
    // (config text with an unknown key, the section documenting that table).
    let cases = [
        ("zzz_unknown = 1\n", "# edgeimg.toml reference"),
        ("[image]\nname = \"x\"\nzzz_unknown = 1\n", "## `[image]`"),
        ("[base]\nzzz_unknown = 1\n", "## `[base]`"),
        ("[k3s]\nzzz_unknown = 1\n", "## `[k3s]`"),
        (
            "[k3s.mirrors.r]\nendpoint = []\nzzz_unknown = 1\n",
            "## `[k3s]`",
        ),
        ("[selinux]\nzzz_unknown = 1\n", "## `[selinux]`"),
        ("[update]\nzzz_unknown = 1\n", "## `[update]`"),
        (
            "[[users]]\nname = \"a\"\nzzz_unknown = 1\n",
            "## `[[users]]`",
        ),
    ];
    for (text, heading) in cases {
        let p = d.path().join("e.toml");
        std::fs::write(&p, text).unwrap();
        let o = run(edgeimg().args(["plan", "-c"]).arg(&p));
        let err = String::from_utf8_lossy(&o.stderr);
        let keys = expected_keys(&err);
        assert!(!keys.is_empty(), "{err}");
        // The top level's keys are the tables, each with its own heading.
        let body = if heading.starts_with("# ") {
            doc.as_str()
        } else {
            section(&doc, heading)
        };
        for k in keys {
            assert!(
                body.contains(&format!("`{k}`")) || body.contains(&format!("[{k}]")),
                "docs/config.md ({heading}) does not document `{k}` (the parser accepts it)"
            );
        }
    }
}

#[test]
fn every_node_toml_key_is_in_config_md() {
    let doc = std::fs::read_to_string(repo().join("docs/config.md")).unwrap();
    let body = section(
        &doc,
        "## Per node: `edgeimg/node.toml` on the boot partition",
    );
    for text in [
        "zzz_unknown = 1\n",
        "[[users]]\nname = \"a\"\nzzz_unknown = 1\n",
        "[k3s]\nzzz_unknown = 1\n",
    ] {
        let err = toml::from_str::<edgeimg_contract::schema::NodeConfig>(text)
            .unwrap_err()
            .to_string();
        for k in expected_keys(&err) {
            assert!(
                body.contains(&format!("`{k}`")) || body.contains(&format!("[{k}]")),
                "docs/config.md's node.toml section does not document `{k}`"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_edgeimg_environment_variable_is_in_config_md() {
    let doc = std::fs::read_to_string(repo().join("docs/config.md")).unwrap();
    let env = section(&doc, "## Environment");
    let mut files = vec![repo().join("build.rs")];
    rust_files(&repo().join("src"), &mut files);
    rust_files(&repo().join("agent/src"), &mut files);
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("EDGEIMG_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            seen.insert(name);
        }
    }
    assert!(seen.contains("EDGEIMG_CACHE_DIR"), "{seen:?}");
    for name in seen {
        // `EDGEIMG_AGENT_` is the prefix of EDGEIMG_AGENT_<ARCH>.
        assert!(
            env.contains(&name),
            "docs/config.md's Environment section does not name {name} (read in the source)"
        );
    }
}

#[test]
fn completions_offer_board_names_and_bundle_manifests() {
    for shell in ["bash", "zsh", "fish"] {
        let s = ok(edgeimg().args(["completions", shell]));
        for name in ["x86_64", "rpi4", "pi400", "cm4", "k3s-v1.36.4+k3s1"] {
            assert!(s.contains(name), "{shell} completion lacks {name}");
        }
    }
    // Only for completion: a bad board keeps its own error.
    let o = run(edgeimg().args(["plan", "--board", "nope"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown board `nope`"), "{err}");
}

/// A manifest argument takes a shipped name or a manifest file: bash (run
/// for real) completes both, positional and `--manifest`; zsh and fish offer
/// files beside the names.
#[test]
fn manifest_arguments_complete_names_and_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("c.bash"),
        ok(edgeimg().args(["completions", "bash"])),
    )
    .unwrap();
    std::fs::write(d.path().join("k3s-mine.toml"), "").unwrap();
    for (words, cur, prev) in [
        ("edgeimg bundle fetch k", "k", "fetch"),
        ("edgeimg bundle import dir --manifest k", "k", "--manifest"),
    ] {
        let script = format!(
            "source c.bash; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _edgeimg edgeimg {cur} {prev}; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let got = ok(std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(d.path()));
        let got: Vec<&str> = got.lines().collect();
        assert!(got.contains(&"k3s-v1.36.4+k3s1"), "{words}: {got:?}");
        assert!(got.contains(&"k3s-mine.toml"), "{words}: {got:?}");
    }
    let zsh = ok(edgeimg().args(["completions", "zsh"]));
    assert!(
        zsh.contains(
            r#":_alternative "manifests:manifest:(k3s-v1.36.4+k3s1)" "files:file:_files"'"#
        ),
        "{zsh}"
    );
    let fish = ok(edgeimg().args(["completions", "fish"]));
    let manifest_lines: Vec<&str> = fish.lines().filter(|l| l.contains("-l manifest")).collect();
    assert!(!manifest_lines.is_empty());
    for l in manifest_lines {
        assert!(l.contains(" -F ") && !l.contains(" -f "), "{l}");
    }
}

#[test]
fn man_pages_are_self_contained_with_environment_files_exit_status_examples() {
    let d = tempfile::tempdir().unwrap();
    let quiet = ok(edgeimg().args(["-q", "man", "--out"]).arg(d.path()));
    assert!(quiet.is_empty(), "{quiet}");
    let main = std::fs::read_to_string(d.path().join("edgeimg.1")).unwrap();
    for s in [
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH \"EXIT STATUS\"",
        ".SH EXAMPLES",
        "EDGEIMG_CACHE_DIR",
    ] {
        assert!(main.contains(s), "edgeimg.1 lacks {s}");
    }
    for f in visible_files(d.path()) {
        let page = std::fs::read_to_string(d.path().join(&f)).unwrap();
        assert!(
            page.contains(".SH \"EXIT STATUS\""),
            "{f} lacks EXIT STATUS"
        );
        assert!(
            !page.contains("docs/updates.md") && !page.contains("docs/bundles.md"),
            "{f} points at docs/"
        );
    }
}

/// The command lines (`edgeimg ...`, `cargo run --release -- ...`) in the
/// indented code blocks of README.md and docs/*.md, as argument lists:
/// optional `[...]` groups dropped, `a|b` alternatives taken as `a`, cut at a
/// shell operator or comment.
fn documented_command_lines() -> Vec<(String, Vec<String>)> {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") && !p.ends_with("cli.md") {
            files.push(p);
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Code-block lines, with `\` continuations joined.
        let mut joined: Vec<String> = Vec::new();
        let mut cont = false;
        for l in text.lines() {
            if cont {
                let last = joined.last_mut().unwrap();
                last.push(' ');
                last.push_str(l.trim());
            } else if l.starts_with("    ") {
                joined.push(l.to_string());
            } else {
                continue;
            }
            cont = l.ends_with('\\');
            if cont {
                let last = joined.last_mut().unwrap();
                let n = last.rfind('\\').unwrap();
                last.truncate(n);
            }
        }
        for line in &joined {
            for part in line.split("&&") {
                let part = part.trim();
                let rest = part
                    .strip_prefix("edgeimg ")
                    .or_else(|| part.strip_prefix("cargo run --release -- "))
                    .or_else(|| part.strip_prefix("cargo run -- "));
                let Some(rest) = rest else { continue };
                let mut args = vec!["edgeimg".to_string()];
                let mut in_optional = 0;
                for t in rest.split_whitespace() {
                    if t == "#" || t.starts_with('#') || [";", "|", ">", "2>", "<"].contains(&t) {
                        break;
                    }
                    if t.starts_with('[') {
                        in_optional += 1;
                    }
                    let skip = in_optional > 0;
                    if t.ends_with(']') && in_optional > 0 {
                        in_optional -= 1;
                    }
                    if skip {
                        continue;
                    }
                    let t = t.split('|').next().unwrap().trim_matches('`');
                    args.push(t.to_string());
                }
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                out.push((format!("{name}: {line}"), args));
            }
        }
    }
    out
}

#[test]
fn every_documented_command_line_parses() {
    use clap::Parser;
    use clap::error::ErrorKind;
    let lines = documented_command_lines();
    assert!(lines.len() > 20, "{lines:?}");
    let mut bad = Vec::new();
    for (where_, args) in &lines {
        if let Err(e) = edgeimg::cli::Cli::try_parse_from(args) {
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {}
                _ => bad.push(format!("{where_}\n    {args:?}\n    {}", e.kind())),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "documented commands that do not parse:\n{}",
        bad.join("\n")
    );
}

/// The ```toml blocks of README.md and docs/*.md: (file:line, text).
fn documented_toml_blocks() -> Vec<(String, String)> {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut block: Option<(usize, String)> = None;
        for (i, l) in text.lines().enumerate() {
            match (&mut block, l.trim_end()) {
                (None, "```toml") => block = Some((i + 1, String::new())),
                (Some((start, b)), "```") => {
                    out.push((format!("{}:{start}", f.display()), std::mem::take(b)));
                    block = None;
                }
                (Some((_, b)), _) => {
                    b.push_str(l);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
    }
    out
}

/// Every TOML example in the docs parses; those that are edgeimg.toml
/// fragments (they start with one of its tables) pass the config's own
/// parser and checks, as a file with that fragment (and, if the fragment has
/// none, the one required key, `[image] name`).
#[test]
fn every_documented_toml_snippet_parses() {
    let blocks = documented_toml_blocks();
    assert!(blocks.len() >= 5, "{blocks:?}");
    let config_tables = [
        "[image]",
        "[base]",
        "[k3s]",
        "[selinux]",
        "[update]",
        "[[users]]",
    ];
    let dir = tempfile::tempdir().unwrap();
    // The files the examples name, relative to their config.
    let module = dir.path().join("policy/mysite");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("mysite.te"), "module mysite 1.0;\n").unwrap();
    // updates.md's trusted root: keys/repo-root.json.
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    edgeimg::tuf::keygen(&dir.path().join("keys/repo")).unwrap();
    // Its certificate authorities: keys/fleet-ca.pem.
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    std::fs::write(dir.path().join("keys/fleet-ca.pem"), ca.pem()).unwrap();
    let mut configs = 0;
    for (where_, text) in &blocks {
        if let Err(e) = text.parse::<toml::Table>() {
            panic!("{where_}: not TOML: {e}\n{text}");
        }
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default();
        let first = first.split('#').next().unwrap().trim();
        if config_tables.contains(&first) {
            configs += 1;
            let file = if text.contains("[image]") {
                text.clone()
            } else {
                format!("[image]\nname = \"docs\"\n\n{text}")
            };
            if let Err(e) = edgeimg::config::parse(where_, &file, dir.path(), None) {
                panic!("{where_}: not a valid edgeimg.toml fragment: {e}\n{text}");
            }
        }
    }
    assert!(configs >= 3, "edgeimg.toml examples checked: {configs}");
}
