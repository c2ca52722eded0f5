//! Command-line definitions (clap). Nothing else in the crate defines flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "edgeimg",
    version,
    about = "Build immutable, air-gapped edge OS images that boot into a ready node",
    long_about = None,
    after_help = EXIT_STATUS
)]
pub struct Cli {
    /// No progress, notes or warnings, in every command: only errors, and what a command exists to show (plan, inspect, boards, --json).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// More logging on stderr (repeat for more); coloured only on a terminal and without NO_COLOR.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The help heading of the options every command takes.
pub const GLOBAL: &str = "Global options";

/// The exit codes, shown in `--help` and the man pages.
pub const EXIT_STATUS: &str = "Exit status:\n  \
0  success\n  \
1  refused or failed (a check did not pass, a build or write failed)\n  \
2  usage error (unknown flag, missing argument)\n  \
3  an input file named on the command line could not be read (the config, an image to inspect, an update or key to verify)\n\n\
-o/--out is always a path: each command's help says whether a file, a directory or a file-name prefix.";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    Zstd,
    Xz,
    None,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Board to build for (default: image.board in the config). See `edgeimg boards`.
    #[arg(long)]
    pub board: Option<String>,
    /// Configuration file (default: ./edgeimg.toml, else the built-in default).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Verify an update file as a device would (signature, board, architecture,
    /// length, every payload's SHA-256); exit 1 with the reason if refused,
    /// 3 if the file or the key cannot be read.
    Verify {
        /// The .update file.
        file: PathBuf,
        /// The public key (PREFIX.pub) the devices trust.
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
        /// Refuse an update that is not for this board.
        #[arg(long)]
        board: Option<String>,
        /// Refuse an update that is not for this architecture (amd64, arm64).
        #[arg(long)]
        arch: Option<String>,
        /// Machine-readable output; a refused update prints `"verified": false` and the error too.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The .update file (out/<name>-<board>.update); not with --refresh-timestamp.
    #[arg(required_unless_present = "refresh_timestamp")]
    pub file: Option<PathBuf>,
    /// The repository directory (made if missing).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Key prefix of `edgeimg keygen --tuf` (PREFIX-targets.key, ...).
    #[arg(long, value_name = "PREFIX")]
    pub keys: PathBuf,
    /// The update signing public key (PREFIX.pub of `edgeimg keygen`) the devices trust.
    #[arg(
        long,
        value_name = "PUB",
        required_unless_present = "refresh_timestamp"
    )]
    pub update_key: Option<PathBuf>,
    /// Make delta payloads from this many previous releases of the board.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub deltas: usize,
    /// Validity of the targets and snapshot metadata: 90d, 12h, or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "90d")]
    pub expires: String,
    /// Validity of the timestamp metadata (refresh it before then).
    #[arg(long, value_name = "WHEN", default_value = "7d")]
    pub timestamp_expires: String,
    /// Only re-sign the snapshot and timestamp of every board in the repository.
    #[arg(long, conflicts_with_all = ["file", "update_key"])]
    pub refresh_timestamp: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the image: out/<name>-<board>.img plus .zst/.xz, .bmap, manifest.json, SHA256SUMS.
    Build {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        args: BuildArgs,
    },
    /// Make an ed25519 update signing key pair: PREFIX.key (mode 0600) and PREFIX.pub;
    /// or, with --secure-boot, a fleet's Secure Boot keys; or, with --tuf, an update repository's keys.
    ///
    /// --secure-boot writes PREFIX-{PK,KEK,db}.{key,crt,esl,auth} and
    /// PREFIX-owner.guid: RSA-2048 keys (0600), self-signed certificates,
    /// EFI signature lists, and the lists signed for enrollment by a
    /// firmware in setup mode (PK and KEK signed by PK, db by KEK).
    ///
    /// --tuf writes PREFIX-{root,targets,snapshot,timestamp}.key (ed25519,
    /// PEM PKCS#8, 0600) and PREFIX-root.json: The Update Framework root
    /// metadata naming the four keys, signed by the root key, valid for a
    /// year. Keep the root key offline; `edgeimg publish` needs the other three.
    Keygen {
        /// Path prefix of the files (PREFIX.key, PREFIX.pub); existing files are never overwritten.
        #[arg(long, short = 'o', value_name = "PREFIX")]
        out: PathBuf,
        /// Make the Secure Boot key hierarchy (PK, KEK, db) instead of an update key.
        #[arg(long)]
        secure_boot: bool,
        /// Make the keys and root metadata of an update repository (for `edgeimg publish`).
        #[arg(long, conflicts_with = "secure_boot")]
        tuf: bool,
        /// Common name in the Secure Boot certificates ("NAME PK", "NAME KEK", "NAME db").
        #[arg(
            long,
            value_name = "NAME",
            requires = "secure_boot",
            default_value = "edgeimg fleet"
        )]
        name: String,
    },
    /// Signed update files: check one as a device would.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Add a signed update to a static update repository (The Update Framework).
    ///
    /// The update is verified with --update-key first, then added to
    /// DIR/<board>/ with delta payloads from the previous --deltas releases
    /// of its board, and new targets, snapshot and timestamp metadata signed
    /// with the keys of `edgeimg keygen --tuf`. The directory is static
    /// files: serve it with any web server or object store. Publishing the
    /// same update again changes nothing; a publish that fails leaves the
    /// repository as it was. --refresh-timestamp only re-signs the snapshot
    /// and timestamp of every board (run it before the timestamp expires).
    Publish(PublishArgs),
    /// Print the resolved plan (packages, partitions, UUIDs, files) without building.
    Plan {
        #[command(flatten)]
        config: ConfigArgs,
        /// The K3s bundle directory the build will be given (`build --bundle DIR`).
        #[arg(long, value_name = "DIR", env = "EDGEIMG_K3S_BUNDLE")]
        bundle: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Boot an image in QEMU with its serial console on this terminal (Ctrl-A x quits).
    Run {
        /// The .img to boot (written to unless --snapshot).
        image: PathBuf,
        /// Board of the image (default: from manifest.json beside it or the file name).
        #[arg(long)]
        board: Option<String>,
        /// Discard every write the guest makes.
        #[arg(long)]
        snapshot: bool,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// Guest CPUs.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// Use KVM instead of TCG (also EDGEIMG_QEMU_KVM=1).
        #[arg(long)]
        kvm: bool,
        /// Boot the board's Secure Boot firmware with this variable store
        /// (created in setup mode when missing, kept so that keys enrolled on
        /// one run are there on the next).
        #[arg(long, value_name = "FILE")]
        secure_boot_vars: Option<PathBuf>,
        /// Give the guest a software TPM2 (swtpm) whose state is kept in
        /// this directory (created when missing): the same directory is the
        /// same TPM on the next run ([data] encryption = "tpm2").
        #[arg(long, value_name = "DIR")]
        tpm_state: Option<PathBuf>,
    },
    /// Check the host for every tool the boards need, and say how to install what is missing.
    Doctor {
        /// Only check for these boards (default: all).
        #[arg(long)]
        board: Vec<String>,
        /// The configuration whose K3s bundle and lock to check, as for `edgeimg build -c FILE`.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Bundle lock file (default: edgeimg.lock beside the config).
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
        /// Check this K3s bundle directory (as `build --bundle DIR` uses it) instead of the cache.
        #[arg(long, value_name = "DIR", env = "EDGEIMG_K3S_BUNDLE")]
        bundle: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the boards edgeimg can build for.
    Boards {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write an image to an SD card, USB stick or disk (only mapped blocks), then verify it.
    #[command(
        long_about = "Write an image (.img, .img.zst or .img.xz) to an SD card, USB stick or disk.\n\n\
Decompresses as it streams, writes only the blocks the .bmap beside the image maps, syncs, then \
reads every written range back and checks its SHA-256. Refuses a device that is mounted (or any \
of its partitions is), the disk holding / or /boot, a partition, a target smaller than the image, \
and a regular file unless --to-file is given. Without --yes it shows the device's model, size \
and partitions and asks."
    )]
    Flash(FlashArgs),
    /// Show an image's partition table, filesystems, board, K3s, images, SELinux mode and inputs.
    Inspect {
        /// The image (.img, .img.zst or .img.xz; manifest.json beside it adds board and inputs), or a flashed card's block device (read-only: its partitions, filesystems and node file, never the node file's secrets).
        image: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write a per-node node.toml (hostname, users, SSH keys) for `flash --node`.
    Node(NodeArgs),
    /// Merge a K3s server node's kubeconfig (/etc/rancher/k3s/k3s.yaml) into yours, for kubectl from here.
    #[command(
        long_about = "Merge a K3s server node's kubeconfig (/etc/rancher/k3s/k3s.yaml) into yours, for kubectl from here.\n\n\
Reads the file from a copy (--from) or over SSH (--ssh USER@HOST runs the system `ssh -o BatchMode=yes \
USER@HOST sudo -n cat /etc/rancher/k3s/k3s.yaml`, without sudo for root). Replaces the loopback host of \
its server URL (https://127.0.0.1:6443) with --server (default: the SSH host), names its cluster, user \
and context after the node (--name, default: that host), and merges them into the first path of \
$KUBECONFIG, else ~/.kube/config (created 0600 in a 0700 directory if missing). Only entries of the \
same name are replaced; current-context is kept unless there is none or --use is given. The file is \
replaced atomically, keeping its mode. Credentials are never printed."
    )]
    Kubeconfig(KubeconfigArgs),
    /// K3s air-gap bundles: fetch, export, verify, import and list (cache and lock file).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Print a shell completion script (e.g. `edgeimg completions bash > /etc/bash_completion.d/edgeimg`).
    Completions {
        /// Shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (edgeimg.1 and edgeimg-<command>.1) into a directory.
    Man {
        /// Directory (a path to a directory) to write the pages into (created if missing).
        #[arg(long, short = 'o', value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the generated command-line reference (docs/cli.md), or write/check it.
    Docs {
        /// Write the reference to this file (the repository keeps it in docs/cli.md).
        #[arg(long, conflicts_with = "check")]
        write: Option<PathBuf>,
        /// Fail if this file differs from the generated reference.
        #[arg(long)]
        check: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct FlashArgs {
    /// Image to write: .img, .img.zst or .img.xz.
    pub image: PathBuf,
    /// Target block device (/dev/sdX, /dev/mmcblkN), or a file with --to-file.
    pub target: PathBuf,
    /// Allow the target to be a regular file (created if missing, replaced if present).
    #[arg(long)]
    pub to_file: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Put this node.toml on the flashed boot partition as edgeimg/node.toml (validated first; see `edgeimg node`).
    #[arg(long, value_name = "NODE_TOML")]
    pub node: Option<PathBuf>,
    /// Block map to use (default: IMAGE's .bmap beside it, e.g. x.img.bmap for x.img.zst).
    #[arg(long, conflicts_with = "no_bmap")]
    pub bmap: Option<PathBuf>,
    /// Ignore any bmap and write every byte of the image.
    #[arg(long)]
    pub no_bmap: bool,
    /// Progress and the result as JSON lines on stdout (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Hostname of this node (overrides the image's hostname pattern).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Add a login user NAME (repeatable).
    #[arg(long = "user", value_name = "NAME")]
    pub users: Vec<String>,
    /// Supplementary groups of a user, as USER:GROUP[,GROUP...] (repeatable).
    #[arg(long = "group", value_name = "USER:GROUPS")]
    pub groups: Vec<String>,
    /// An SSH public key line for a user, as USER:KEY (repeatable).
    #[arg(long = "ssh-key", value_name = "USER:KEY")]
    pub ssh_keys: Vec<String>,
    /// An authorized_keys file for a user, as USER:PATH (repeatable).
    #[arg(long = "ssh-key-file", value_name = "USER:PATH")]
    pub ssh_key_files: Vec<String>,
    /// Login shell of a user, as USER:SHELL.
    #[arg(long = "shell", value_name = "USER:SHELL")]
    pub shells: Vec<String>,
    /// K3s role of this node: server or agent.
    #[arg(long, value_parser = ["server", "agent"])]
    pub role: Option<String>,
    /// URL of the K3s server to join, e.g. https://10.0.0.1:6443.
    #[arg(long)]
    pub server: Option<String>,
    /// Start a new cluster (the first server).
    #[arg(long)]
    pub cluster_init: bool,
    /// Read the K3s join token from this file ("-" for stdin); default: $EDGEIMG_K3S_TOKEN.
    /// Never passed as a flag value, so it stays out of shell history and `ps`.
    #[arg(long, value_name = "PATH")]
    pub token_from: Option<PathBuf>,
    /// A K3s node label key=value (repeatable).
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    pub node_labels: Vec<String>,
    /// A K3s node taint key=value:Effect (repeatable).
    #[arg(long = "node-taint", value_name = "TAINT")]
    pub node_taints: Vec<String>,
    /// File (a path to a file) to write, mode 0600, instead of stdout (required when a token is set).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// After writing --out, print what it holds as JSON on stdout (a token as `true`, never its value).
    #[arg(long, requires = "out")]
    pub json: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from", "ssh"])))]
pub struct KubeconfigArgs {
    /// A copy of the node's /etc/rancher/k3s/k3s.yaml.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Read it over SSH from this server node (key or agent authentication; no prompts).
    #[arg(long, value_name = "USER@HOST")]
    pub ssh: Option<String>,
    /// An ssh option for --ssh, e.g. Port=2222 or StrictHostKeyChecking=accept-new (repeatable).
    #[arg(long = "ssh-option", value_name = "OPTION", requires = "ssh")]
    pub ssh_options: Vec<String>,
    /// Node name or address for the server URL (default: the SSH host; required with --from
    /// when the file names only 127.0.0.1).
    #[arg(long, value_name = "NAME|ADDR")]
    pub server: Option<String>,
    /// Name of the merged cluster, user and context (default: the server's host).
    #[arg(long)]
    pub name: Option<String>,
    /// Make the merged context the current one.
    #[arg(long = "use")]
    pub use_context: bool,
    /// Port of the server URL (default: the file's, 6443 for K3s), for an API server
    /// reached through a forwarded or proxied port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
}

/// Architecture of a K3s bundle.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BundleArch {
    #[value(alias = "x86_64")]
    Amd64,
    #[value(alias = "aarch64")]
    Arm64,
}

/// Which lock file a `bundle` command reads and writes: the one `build` reads.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Lock file (default: edgeimg.lock beside the config `build` reads: in the
    /// directory of -c FILE, else the current directory).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// The configuration file whose lock to use, as for `edgeimg build -c FILE`.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Download a bundle's assets (resuming partial downloads), verify them against the release
    /// checksum files, store them in the cache and record their SHA-256 in the lock file.
    Fetch {
        /// A shipped manifest's name (see `edgeimg bundle list`) or a manifest file.
        manifest: String,
        /// Architecture to fetch.
        #[arg(long, value_enum)]
        arch: BundleArch,
        /// Also fetch the nerdctl-full archive (BuildKit).
        #[arg(long)]
        buildkit: bool,
        #[command(flatten)]
        lock: LockArgs,
        /// Download from this mirror instead of https://github.com (same path layout as the release pages).
        #[arg(long, env = "EDGEIMG_BUNDLE_MIRROR", value_name = "URL")]
        mirror: Option<String>,
    },
    /// Import assets carried in by hand (upstream file names, checksum files beside them) into the cache and the lock.
    ///
    /// A directory written by `edgeimg bundle export` (or any directory with a
    /// bundle.toml) names its manifest and architecture itself: `bundle import DIR`.
    Import {
        /// Directory holding the assets and the release checksum files.
        dir: PathBuf,
        /// A shipped manifest's name or a manifest file (default: DIR/bundle.toml).
        #[arg(long)]
        manifest: Option<String>,
        /// Architecture of the assets (default: every architecture of the manifest whose files are in DIR).
        #[arg(long, value_enum)]
        arch: Option<BundleArch>,
        /// Require the nerdctl-full archive (BuildKit); without it, it is imported when present.
        #[arg(long)]
        buildkit: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Write a cached bundle into a new directory to carry to an air-gapped host:
    /// the files under their upstream names and a bundle.toml pinning each SHA-256.
    Export {
        /// A shipped manifest's name or a manifest file (as given to `bundle fetch`).
        manifest: String,
        /// Architecture to export.
        #[arg(long, value_enum)]
        arch: BundleArch,
        /// Directory (a path to a new directory) to create; written under a temporary name, then renamed.
        #[arg(long, short = 'o', value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Without DIR: re-hash every file the lock records against the cache. With DIR: check a
    /// carried bundle directory offline (every file present, regular, hashing to its manifest's
    /// and checksum files' SHA-256 and to the lock's when it names the bundle, k3s built for the
    /// architecture) without importing it.
    Verify {
        /// A bundle directory (from `bundle export`, or upstream assets with their checksum files).
        dir: Option<PathBuf>,
        /// With DIR: the manifest (default: DIR/bundle.toml).
        #[arg(long, requires = "dir")]
        manifest: Option<String>,
        /// With DIR: the architecture (default: every one whose files are in DIR).
        #[arg(long, value_enum, requires = "dir")]
        arch: Option<BundleArch>,
        #[command(flatten)]
        lock: LockArgs,
        /// Machine-readable output; a failed verification prints `"verified": false` and the error too.
        #[arg(long)]
        json: bool,
    },
    /// List the shipped bundle manifests and the cached bundles.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// The flags of `edgeimg build` besides the config selection.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Output directory (a path to a directory, created if missing).
    #[arg(long, short = 'o', default_value = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Rebuild the cached base root filesystem instead of reusing it.
    #[arg(long)]
    pub refresh: bool,
    /// Compression of the distributable copy (overrides image.compression).
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Directory holding the K3s bundle's assets under their upstream names
    /// (instead of the cache filled by `edgeimg bundle fetch`/`import`).
    #[arg(long, value_name = "DIR", env = "EDGEIMG_K3S_BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Bundle lock file (default: edgeimg.lock beside the config).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Update signing key (PREFIX.key from `edgeimg keygen`): the image trusts
    /// its public key for updates (/usr/share/edgeimg/update.pub).
    #[arg(long, value_name = "KEY")]
    pub signing_key: Option<PathBuf>,
    /// Also write out/<name>-<board>.update: the signed update to this image
    /// (root, kernel, initrd, boot files), for `edgeimg-agent update apply`.
    #[arg(long, requires = "signing_key")]
    pub update: bool,
    /// Secure Boot keys (PREFIX from `edgeimg keygen --secure-boot`): sign
    /// systemd-boot and the kernel images; replaces `[secure_boot] keys`.
    #[arg(long, value_name = "PREFIX")]
    pub secure_boot_keys: Option<PathBuf>,
}
