//! `edgeimg`: parses the command line and dispatches to the library.

use clap::Parser;
use edgeimg::cli::{Cli, Command};

fn main() {
    // A closed stdout pipe (`edgeimg boards | head -1`) ends the process
    // quietly, as for other command-line tools, instead of a panic in print!.
    // SAFETY: called first in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    edgeimg::logging::init(cli.quiet, cli.verbose);
    let result = match cli.command {
        Command::Build { config, args } => edgeimg::commands::build(config, args, cli.quiet),
        Command::Keygen {
            out,
            secure_boot,
            tuf,
            name,
        } => edgeimg::commands::keygen(&out, secure_boot, tuf, &name, cli.quiet),
        Command::Update(c) => edgeimg::commands::update(c, cli.quiet),
        Command::Publish(a) => edgeimg::commands::publish(a, cli.quiet),
        Command::Plan {
            config,
            bundle,
            json,
        } => edgeimg::commands::plan(config, bundle.as_deref(), json),
        Command::Run {
            image,
            board,
            snapshot,
            memory,
            cpus,
            kvm,
            secure_boot_vars,
            tpm_state,
        } => edgeimg::commands::run(
            &image,
            board.as_deref(),
            snapshot,
            memory,
            cpus,
            kvm,
            secure_boot_vars.as_deref(),
            tpm_state.as_deref(),
        ),
        Command::Doctor {
            board,
            config,
            lock,
            bundle,
            json,
        } => edgeimg::commands::doctor(
            &board,
            config.as_deref(),
            lock.as_deref(),
            bundle.as_deref(),
            json,
            cli.quiet,
        ),
        Command::Boards { json } => edgeimg::commands::boards(json),
        Command::Flash(a) => edgeimg::commands::flash(a, cli.quiet),
        Command::Inspect { image, json } => edgeimg::commands::inspect(&image, json),
        Command::Node(a) => edgeimg::commands::node(a, cli.quiet),
        Command::Kubeconfig(a) => edgeimg::commands::kubeconfig(a, cli.quiet),
        Command::Bundle(c) => edgeimg::commands::bundle(c, cli.quiet),
        Command::Completions { shell } => edgeimg::commands::completions(shell),
        Command::Man { out } => edgeimg::commands::man(&out, cli.quiet),
        Command::Docs { write, check } => {
            edgeimg::commands::docs(write.as_deref(), check.as_deref())
        }
    };
    if let Err(e) = result {
        eprintln!("edgeimg: error: {e:#}");
        std::process::exit(edgeimg::exit::code(&e));
    }
}
