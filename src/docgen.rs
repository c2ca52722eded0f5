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

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut c = Cli::command();
    clap_complete::generate(shell, &mut c, "edgeimg", out);
}

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
        clap_mangen::Man::new(cmd).render(&mut buf)?;
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
