//! Documentation generated from the clap definitions (`src/cli/mod.rs`):
//! shell completions, man pages, and the Markdown CLI reference `docs/cli.md`
//! (`edgeimg docs --write docs/cli.md`; `tests/docs.rs` fails when it is stale).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// Help is rendered at this width so the reference does not depend on the
/// terminal it was generated in.
const WIDTH: usize = 100;

fn command() -> clap::Command {
    let mut c = Cli::command().term_width(WIDTH).max_term_width(WIDTH);
    c.build();
    c
}

/// Writes the completion script for `shell` to `out`: `--board` completes
/// the board names and a bundle command's manifest the shipped manifests.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut c = with_value_hints(Cli::command());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut c, "edgeimg", &mut script);
    let script = String::from_utf8_lossy(&script);
    let names = crate::bundle::manifest::shipped_names().join(" ");
    let _ = out.write_all(manifests_or_files(shell, &script, &names).as_bytes());
}

/// A manifest argument takes a shipped manifest's name or a manifest file,
/// but clap's generators offer only the listed values: each shell's script
/// is changed where it completes `names` to offer files too.
fn manifests_or_files(shell: clap_complete::Shell, script: &str, names: &str) -> String {
    use clap_complete::Shell;
    match shell {
        Shell::Bash => {
            // An option's values, and a positional's (listed among `opts`).
            let option = format!("COMPREPLY=($(compgen -W \"{names}\" -- \"${{cur}}\"))");
            let mut out = String::new();
            let mut positional = false;
            for line in script.replace(
                &option,
                &format!("COMPREPLY=($(compgen -W \"{names}\" -- \"${{cur}}\") $(compgen -f -- \"${{cur}}\"))"),
            ).lines() {
                let t = line.trim_start();
                if t.starts_with("opts=") {
                    positional = t.ends_with(&format!(" {names}\""));
                }
                if positional && t == "COMPREPLY=( $(compgen -W \"${opts}\" -- \"${cur}\") )" {
                    out.push_str(&line.replace(
                        "-- \"${cur}\") )",
                        "-- \"${cur}\") $(compgen -f -- \"${cur}\") )",
                    ));
                    positional = false;
                } else {
                    out.push_str(line);
                }
                out.push('\n');
            }
            out
        }
        Shell::Zsh => script.replace(
            &format!(":({names})'"),
            &format!(":_alternative \"manifests:manifest:({names})\" \"files:file:_files\"'"),
        ),
        Shell::Fish => script.replace(
            &format!("-r -f -a \"{}", names.replace(' ', "\t''\n")),
            &format!("-r -F -a \"{}", names.replace(' ', "\t''\n")),
        ),
        _ => script.to_string(),
    }
}

/// `c` with the known values of `--board` and of a bundle manifest attached
/// for completion only (parsing keeps its own, clearer errors for a bad value).
fn with_value_hints(c: clap::Command) -> clap::Command {
    let boards: Vec<&'static str> = crate::config::board::names().to_vec();
    let manifests = crate::bundle::manifest::shipped_names();
    let subs: Vec<String> = c
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut c = c;
    for name in subs {
        c = c.mut_subcommand(&name, |s| hint(s, &boards, &manifests));
    }
    c
}

fn hint(
    mut s: clap::Command,
    boards: &[&'static str],
    manifests: &[&'static str],
) -> clap::Command {
    let has = |s: &clap::Command, id: &str| s.get_arguments().any(|a| a.get_id() == id);
    if has(&s, "board") {
        let b = boards.to_vec();
        s = s.mut_arg("board", |a| {
            a.value_parser(clap::builder::PossibleValuesParser::new(b))
        });
    }
    if has(&s, "manifest") {
        let m = manifests.to_vec();
        s = s.mut_arg("manifest", |a| {
            a.value_parser(clap::builder::PossibleValuesParser::new(m))
        });
    }
    let subs: Vec<String> = s
        .get_subcommands()
        .map(|x| x.get_name().to_string())
        .collect();
    for name in subs {
        s = s.mut_subcommand(&name, |x| hint(x, boards, manifests));
    }
    s
}

/// Sections every man page ends with: the pages are self-contained (an
/// installed system has no docs/ directory).
const MAN_EXIT_STATUS: &str = ".SH \"EXIT STATUS\"
.TP
0
success
.TP
1
refused or failed (a check did not pass, a build or write failed)
.TP
2
usage error (unknown flag, missing argument)
.TP
3
an input file named on the command line could not be read (the config, an image to inspect, an update or key to verify)
";

/// ENVIRONMENT, FILES and EXAMPLES of edgeimg(1).
const MAN_MAIN: &str = ".SH ENVIRONMENT
.TP
EDGEIMG_CACHE_DIR
cache directory (base roots, bundles); default $XDG_CACHE_HOME/edgeimg, else ~/.cache/edgeimg
.TP
EDGEIMG_K3S_BUNDLE
a K3s bundle directory, as build \\-\\-bundle DIR
.TP
EDGEIMG_BUNDLE_MIRROR
a mirror of the release pages, as bundle fetch \\-\\-mirror URL
.TP
EDGEIMG_K3S_TOKEN
the join token edgeimg node writes when no \\-\\-token\\-from is given
.TP
EDGEIMG_QEMU_KVM=1
edgeimg run uses KVM instead of TCG
.TP
EDGEIMG_FLASH_EXTRA_SYSTEM_MOUNTS
more mount points (colon\\-separated) whose disk flash refuses
.TP
SOURCE_DATE_EPOCH
timestamp of every file in the image
.TP
NO_COLOR
no colour in log output (there is none off a terminal)
.TP
RUST_LOG
logging filter
.SH FILES
.TP
edgeimg.toml
the configuration build reads (or \\-c FILE); without one, a built\\-in default K3s node
.TP
edgeimg.lock
the K3s bundle lock, beside the configuration; every bundle command and build use the same one
.TP
~/.cache/edgeimg/bundles
the content\\-addressed bundle cache
.TP
out/
build outputs: NAME\\-BOARD.img, .img.zst, .img.bmap, manifest.json, SHA256SUMS
.SH EXAMPLES
.nf
edgeimg bundle fetch k3s\\-v1.36.4+k3s1 \\-\\-arch amd64
edgeimg build
edgeimg bundle export k3s\\-v1.36.4+k3s1 \\-\\-arch arm64 \\-\\-out carried
edgeimg bundle verify carried && edgeimg bundle import carried
edgeimg node \\-\\-hostname edge\\-01 \\-o edge\\-01.toml
edgeimg flash out/edgeimg\\-x86_64.img.zst /dev/sdX \\-\\-node edge\\-01.toml
.fi
";

/// Visible subcommands, in definition order (no `help`).
fn subcommands(c: &clap::Command) -> Vec<clap::Command> {
    c.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect()
}

/// Writes `edgeimg.1` and one `edgeimg-<subcommand>.1` per subcommand into
/// `dir` (created if missing); returns the files written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let c = command();
    let mut out = Vec::new();
    let mut write = |name: String, cmd: clap::Command| -> std::io::Result<()> {
        let mut buf = Vec::new();
        let main = name == "edgeimg";
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        if main {
            buf.extend_from_slice(MAN_MAIN.as_bytes());
        }
        buf.extend_from_slice(MAN_EXIT_STATUS.as_bytes());
        let p = dir.join(format!("{name}.1"));
        std::fs::write(&p, buf)?;
        out.push(p);
        Ok(())
    };
    write("edgeimg".into(), c.clone())?;
    let mut cmds = Vec::new();
    all_commands(&c, "edgeimg", &mut cmds);
    for (full, s) in cmds {
        let name = full.replace(' ', "-");
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        write(name, s.name(leaked).version(crate::VERSION))?;
    }
    Ok(out)
}

/// Every visible command below `c`, depth first, with its full name
/// (`edgeimg bundle fetch`).
fn all_commands(c: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
    for s in subcommands(c) {
        let name = format!("{prefix} {}", s.get_name());
        out.push((name.clone(), s.clone()));
        all_commands(&s, &name, out);
    }
}

/// The Markdown CLI reference: every command's `--help`.
pub fn cli_reference() -> String {
    let mut c = command();
    let mut s = String::new();
    s.push_str("# Command-line reference\n\n");
    s.push_str(
        "<!-- Generated from src/cli/mod.rs by `edgeimg docs --write docs/cli.md`; do not edit by hand.\n     \
         tests/docs.rs fails when this file is stale. -->\n\n",
    );
    s.push_str("Every command's `--help`. Shell completions: `edgeimg completions bash|zsh|fish`;\nman pages: `edgeimg man --out DIR`.\n\n");
    let mut cmds = Vec::new();
    all_commands(&c, "edgeimg", &mut cmds);
    for (n, _) in &cmds {
        let depth = n.matches(' ').count() - 1;
        s.push_str(&format!(
            "{}- [`{n}`](#{})\n",
            "  ".repeat(depth),
            n.replace(' ', "-")
        ));
    }
    s.push_str("\n## edgeimg\n\n```text\n");
    s.push_str(c.render_long_help().to_string().trim_end());
    s.push_str("\n```\n");
    for (n, _) in &cmds {
        let mut sub = &mut c;
        for part in n.split(' ').skip(1) {
            sub = sub.find_subcommand_mut(part).expect("listed");
        }
        s.push_str(&format!("\n## {n}\n\n```text\n"));
        s.push_str(sub.render_long_help().to_string().trim_end());
        s.push_str("\n```\n");
    }
    s
}
