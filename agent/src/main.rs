//! edgeimg-agent: argument parsing and dispatch only; the work is in the library.

use edgeimg_agent::{AGENT_VERSION, Root, firstboot, ready, status, update};
use std::process::ExitCode;

const USAGE: &str = "\
usage: edgeimg-agent <command>

commands:
  firstboot        one-time device setup (grow /var, machine-id, hostname,
                   SSH host keys, users, K3s config and unit); a no-op once
                   it has completed
  ready            mark this boot ready and print `edgeimg: node ready`; with
                   K3s, wait for the node to report Ready and print
                   `edgeimg: cluster ready`
  status [--json]  report readiness; exit 0 when ready (with K3s: and the
                   cluster), 1 otherwise
  update apply FILE [--tries N] [--allow-downgrade]
                   verify a signed update (signature, board, architecture,
                   every hash) before writing anything, install it into the
                   inactive root slot and make it the next boot, with N
                   tries (default 3) before falling back to this slot.
                   Refused during a trial boot the health check has not
                   confirmed, and for an update whose generation is older
                   than this image's unless --allow-downgrade is given
  update verify FILE
                   verify an update against this image's trusted key only
  update delta BASE DELTA OUT [--boot-dir DIR]
                   rebuild the update file OUT from a delta payload of a
                   repository, the root image BASE (the running slot) and
                   the running slot's boot files (kernel, initrd, Pi boot
                   files), or with --boot-dir each base payload at
                   DIR/<payload name>; every base file and chunk is
                   checked, OUT appears only complete. Then
                   `update apply OUT` verifies and installs it as usual
  update check     ask the update repository (TUF metadata verified against
                   the image's trusted root) for a newer update of this
                   board; print it
  update pull [--window HH:MM-HH:MM] [--reboot]
                   check, download the update (resuming an interrupted
                   download), verify it against the signed length and
                   SHA-256, and install it as `update apply` does; with a
                   maintenance window (UTC; default $EDGEIMG_UPDATE_WINDOW)
                   install only inside it; --reboot reboots into the trial
  update usb MOUNTPOINT [--reboot]
  update usb --device /dev/NAME [--reboot]
                   install from a removable medium (filesystem label
                   @USB_LABEL@): its repository/ copy as `update pull` would
                   (no maintenance window), or its one top-level *.update
                   file as `update apply` would, if newer than this image;
                   --device mounts it read-only under /run/edgeimg/usb
                   first; --reboot reboots into the trial when installed.
                   Prints `edgeimg: usb update: installed|nothing to
                   install|refused: ...`
  update status    print the update status (JSON)
  update health    on a trial boot of a new slot: mark it good when the node
                   is ready, else exit 1 (the unit then reboots)

options:
  -h, --help       show this help
  -V, --version    show the version
";

/// The usage text with the update medium's label filled in.
fn usage() -> String {
    USAGE.replace("@USB_LABEL@", update::usb::USB_LABEL)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = Root::host();
    let result = match args.as_slice() {
        ["-h" | "--help" | "help"] => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        ["-V" | "--version"] => {
            println!("edgeimg-agent {AGENT_VERSION}");
            return ExitCode::SUCCESS;
        }
        ["firstboot"] => firstboot::run(&root),
        ["ready"] => ready::run(&root),
        ["status"] | ["status", "--json"] => {
            return match status::run(&root, args.len() == 2) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("edgeimg-agent: status: {e}");
                    ExitCode::from(2)
                }
            };
        }
        ["update", "apply", rest @ ..] => update::apply::parse_args(rest)
            .and_then(|(file, opts)| update::apply::run(&root, &file, &opts)),
        ["update", "verify", file] => update::verify_trusted(&root, file.as_ref()),
        ["update", "delta", rest @ ..] => update::delta_cmd::run(&root, rest),
        ["update", "check"] => {
            update::pull::run(&root, update::pull::Mode::Check, &Default::default())
        }
        ["update", "pull", rest @ ..] => update::pull::parse_args(rest)
            .and_then(|o| update::pull::run(&root, update::pull::Mode::Pull, &o)),
        // `update usb` prints its outcome line, the reason included.
        ["update", "usb", rest @ ..] => match update::usb::parse_args(rest) {
            Ok((source, o)) => {
                return match update::usb::run(&root, &source, &o) {
                    Ok(_) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::from(1),
                };
            }
            Err(e) => Err(e),
        },
        ["update", "status"] => update::pull::print_status(&root),
        ["update", "health"] => match update::health::run(&root) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        _ => {
            eprint!(
                "edgeimg-agent: unrecognized arguments: {args:?}\n\n{}",
                usage()
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "edgeimg-agent: {} failed: {e}",
                args[..args.len().min(2)].join(" ")
            );
            ExitCode::from(1)
        }
    }
}
