//! Configuration: the operator's `edgeimg.toml` merged with the board file into
//! one validated [`Config`]. Pure: reads files, runs nothing.

pub mod board;
pub mod data;
pub mod k3s;
pub mod schema;
pub mod selinux;
pub mod size;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::artifact::Compression;
pub use board::Board;
use schema::{ConfigFile, User};
pub use size::{Bytes, ImageSize};

/// The configuration used when no `edgeimg.toml` exists.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");
/// Debian suites edgeimg knows how to build.
pub const SUITES: &[&str] = &["trixie", "bookworm"];
/// Placeholders the agent understands in the hostname pattern.
pub const HOSTNAME_PLACEHOLDERS: &[&str] = &["name", "board", "machine_id", "mac", "serial"];

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The OS's cause is in the message, not `source()`, so `{:#}` prints it once.
    #[error("cannot read {file}: {cause}")]
    Read { file: String, cause: std::io::Error },
    #[error("{file}: {message}")]
    Toml { file: String, message: String },
    /// A TOML parse error, `file:line:column: message`, redacted (no source
    /// snippet, no secret value).
    #[error("{file}:{detail}")]
    TomlSyntax { file: String, detail: String },
    #[error("{}unknown board `{name}` (known boards: {known})", at.as_deref().map(|a| format!("{a}: ")).unwrap_or_default())]
    UnknownBoard {
        name: String,
        known: String,
        at: Option<String>,
    },
    #[error("{file}{}: key `{key}`: {message}", at_line(*line))]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// Everything a build needs to know, merged and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or "built-in default").
    pub source: String,
    /// Directory relative paths in the config are resolved against.
    pub base_dir: PathBuf,
    pub name: String,
    pub board: Board,
    pub size: ImageSize,
    pub compression: Compression,
    pub root_compression: schema::RootCompression,
    pub hostname_pattern: String,
    pub seed: String,
    pub suite: String,
    pub mirror: String,
    pub extra_packages: Vec<String>,
    pub users: Vec<User>,
    pub overlays: Vec<PathBuf>,
    /// None: `[k3s] enabled = false`, a plain immutable appliance.
    pub k3s: Option<k3s::K3sConfig>,
    /// None: `[selinux] mode = "disabled"` (the default).
    pub selinux: Option<selinux::SelinuxConfig>,
    /// `[image] verity` (default true): the root is opened through dm-verity.
    pub verity: bool,
    /// `[update] generation`: the version floor (docs/updates.md).
    pub update_generation: u64,
    /// `[update] repository` and `trusted_root`: where devices pull
    /// updates from, and the TUF root they trust (resolved path).
    pub update_repository: Option<UpdateRepository>,
    /// `[secure_boot]`: None without keys (nothing signed).
    pub secure_boot: Option<SecureBoot>,
    /// `[data] encryption = "tpm2"`: None for a plain ext4 data partition.
    pub data_encryption: Option<data::DataEncryption>,
}

/// The directory a config's relative paths (overlays, images, the lock) are
/// resolved against: the config file's directory, else `.` for
/// `./edgeimg.toml` or the built-in default. [`load`] uses the same rule.
pub fn base_dir(path: Option<&Path>) -> PathBuf {
    match path {
        Some(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => PathBuf::from("."),
    }
}

/// The bundle lock beside the config `build` would read (`-c FILE`, else
/// `./edgeimg.toml` or the built-in default): `edgeimg.lock` in
/// [`base_dir`]. `build` and every `bundle` command read and write this one
/// unless given `--lock`.
pub fn lock_path(config: Option<&Path>) -> PathBuf {
    let dir = base_dir(config);
    if dir.as_os_str().is_empty() || dir == Path::new(".") {
        PathBuf::from(crate::bundle::DEFAULT_LOCK)
    } else {
        dir.join(crate::bundle::DEFAULT_LOCK)
    }
}

/// Loads `path` (or the embedded default when `path` is None and
/// `./edgeimg.toml` does not exist), then merges the board.
pub fn load(path: Option<&Path>, board_override: Option<&str>) -> Result<Config, ConfigError> {
    let (source, text, base_dir) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|cause| ConfigError::Read {
                file: p.display().to_string(),
                cause,
            })?;
            (p.display().to_string(), text, base_dir(Some(p)))
        }
        None if Path::new("edgeimg.toml").exists() => {
            return load(Some(Path::new("edgeimg.toml")), board_override);
        }
        None => (
            "built-in default".to_string(),
            DEFAULT_CONFIG.to_string(),
            base_dir(None),
        ),
    };
    parse(&source, &text, &base_dir, board_override)
}

/// 1-based line of a byte offset, for messages.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `:LINE` for a known line (1-based), nothing for 0 (unknown).
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

/// The 1-based line of the `n`-th (0-based) line of `text` that starts
/// with `prefix` (after indentation); 0 when there is none.
fn nth_line_starting(text: &str, prefix: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(prefix))
        .nth(n)
        .map_or(0, |(i, _)| i + 1)
}

/// The first line at or after `from` (1-based) that holds `needle`'s first
/// word-free stretch (a key's base64, say).
fn line_containing(text: &str, from: usize, needle: &str) -> Option<usize> {
    let probe = needle.split_whitespace().max_by_key(|w| w.len())?;
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(probe))
        .map(|(i, _)| i + 1)
}

/// How a step of [`parse`] reports a bad value: its span in the text, the
/// key, the message.
type Invalid<'a> = dyn Fn(std::ops::Range<usize>, &str, String) -> ConfigError + 'a;

pub fn parse(
    source: &str,
    text: &str,
    base_dir: &Path,
    board_override: Option<&str>,
) -> Result<Config, ConfigError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::TomlSyntax {
        file: source.to_string(),
        detail: edgeimg_contract::tomlerr::describe(text, &e),
    })?;
    let invalid = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
        file: source.to_string(),
        line: line_of(text, span.start),
        key: key.to_string(),
        message,
    };

    let name = image_name(&file, &invalid)?;
    let mut board = load_board(source, text, &file, board_override)?;

    let suite = file.base.suite.get_ref().clone();
    if !SUITES.contains(&suite.as_str()) {
        return Err(invalid(
            file.base.suite.span(),
            "base.suite",
            format!(
                "unsupported suite `{suite}` (supported: {})",
                SUITES.join(", ")
            ),
        ));
    }

    validate_mirror(file.base.mirror.get_ref())
        .map_err(|m| invalid(file.base.mirror.span(), "base.mirror", m))?;
    let pattern = file.image.hostname.get_ref().clone();
    validate_hostname_pattern(&pattern)
        .map_err(|m| invalid(file.image.hostname.span(), "image.hostname", m))?;

    let extra_packages = package_names(&file, &invalid)?;
    check_users(source, text, &file.users)?;
    let overlays = overlay_dirs(&file, base_dir, &invalid)?;
    let update_repository = update_repository(&file, base_dir, &invalid)?;
    let k3s = k3s::validate(&file.k3s, base_dir, &invalid)?;
    let selinux = selinux::validate(&file.selinux, base_dir, &invalid)?;

    let verity = file.image.verity.as_ref().is_none_or(|v| *v.get_ref());
    if verity {
        // The initramfs loads it (and so the board's module trimming keeps it).
        board.initramfs_modules.push(VERITY_MODULE.to_string());
    }

    let secure_boot = secure_boot(&file.secure_boot, &board, base_dir, &invalid)?;
    let data_encryption = data::validate(&file.data, &board, base_dir, &invalid)?;
    if data_encryption.is_some() {
        // The initramfs opens the data partition through dm-crypt.
        board
            .initramfs_modules
            .extend(luks_modules(board.arch).iter().map(|m| m.to_string()));
    }

    let seed = file
        .image
        .seed
        .clone()
        .unwrap_or_else(|| format!("{name}/{}", board.name));
    Ok(Config {
        source: source.to_string(),
        base_dir: base_dir.to_path_buf(),
        name,
        board,
        size: file.image.size,
        compression: file.image.compression,
        root_compression: file.image.root_compression,
        hostname_pattern: pattern,
        seed,
        suite,
        mirror: file.base.mirror.get_ref().clone(),
        extra_packages,
        users: file.users.clone(),
        overlays,
        k3s,
        selinux,
        verity,
        update_generation: file.update.generation,
        update_repository,
        secure_boot,
        data_encryption,
    })
}

/// Where devices pull updates from and the TUF root they trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRepository {
    pub url: String,
    pub trusted_root: PathBuf,
    /// `[update] ca_certificates`: a PEM bundle of certificate authorities
    /// for an `https://` repository (checked to hold certificates).
    pub ca_certificates: Option<PathBuf>,
    /// `[update] window`, as written (checked).
    pub window: Option<String>,
}

/// `[update] repository` and `trusted_root`: both or neither; the URL as
/// the device will check it, the root file read as TUF root metadata now,
/// not on the first device that pulls.
fn update_repository(
    file: &ConfigFile,
    base_dir: &Path,
    invalid: &Invalid,
) -> Result<Option<UpdateRepository>, ConfigError> {
    let u = &file.update;
    let (url, root) = match (&u.repository, &u.trusted_root) {
        (None, None) => {
            if let Some(c) = &u.ca_certificates {
                return Err(invalid(
                    c.span(),
                    "update.ca_certificates",
                    "needs update.repository (the authorities verify its server)".into(),
                ));
            }
            return match &u.window {
                Some(w) => Err(invalid(
                    w.span(),
                    "update.window",
                    "needs update.repository (a window applies to pulled updates)".into(),
                )),
                None => Ok(None),
            };
        }
        (Some(r), None) => {
            return Err(invalid(
                r.span(),
                "update.repository",
                "needs update.trusted_root too (the repository's root.json from `edgeimg keygen --tuf`)".into(),
            ));
        }
        (None, Some(t)) => {
            return Err(invalid(
                t.span(),
                "update.trusted_root",
                "needs update.repository too".into(),
            ));
        }
        (Some(r), Some(t)) => (r, t),
    };
    edgeimg_contract::schema::validate_repository(url.get_ref())
        .map_err(|e| invalid(url.span(), "update.repository", e.to_string()))?;
    let path = base_dir.join(t_path(root));
    let text = std::fs::read(&path).map_err(|e| {
        invalid(
            root.span(),
            "update.trusted_root",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    serde_json::from_slice::<tough::schema::Signed<tough::schema::Root>>(&text).map_err(|e| {
        invalid(
            root.span(),
            "update.trusted_root",
            format!("{} is not TUF root metadata: {e}", path.display()),
        )
    })?;
    let ca_certificates = match &u.ca_certificates {
        None => None,
        Some(c) => {
            let path = base_dir.join(t_path(c));
            let text = std::fs::read(&path).map_err(|e| {
                invalid(
                    c.span(),
                    "update.ca_certificates",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let certs = pem::parse_many(&text)
                .map_err(|e| e.to_string())
                .and_then(
                    |v| match v.iter().filter(|p| p.tag() == "CERTIFICATE").count() {
                        0 => Err("no CERTIFICATE block".to_string()),
                        _ => Ok(()),
                    },
                );
            certs.map_err(|e| {
                invalid(
                    c.span(),
                    "update.ca_certificates",
                    format!("{} is not a PEM certificate bundle: {e}", path.display()),
                )
            })?;
            Some(path)
        }
    };
    let window = match &u.window {
        None => None,
        Some(w) => {
            edgeimg_contract::update::window::Window::parse(w.get_ref())
                .map_err(|e| invalid(w.span(), "update.window", e.to_string()))?;
            Some(w.get_ref().clone())
        }
    };
    Ok(Some(UpdateRepository {
        url: url.get_ref().clone(),
        trusted_root: path,
        ca_certificates,
        window,
    }))
}

fn t_path(p: &toml::Spanned<PathBuf>) -> &Path {
    p.get_ref()
}

/// `image.name`: it becomes a file name.
fn image_name(file: &ConfigFile, invalid: &Invalid) -> Result<String, ConfigError> {
    let name = file.image.name.get_ref().clone();
    if name.len() > 64 {
        return Err(invalid(
            file.image.name.span(),
            "image.name",
            format!(
                "is {} characters long; at most 64 (it becomes a file name)",
                name.len()
            ),
        ));
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Err(invalid(
            file.image.name.span(),
            "image.name",
            format!("`{name}` must be letters, digits, '-', '_' or '.' (it becomes a file name)"),
        ));
    }
    Ok(name)
}

/// The board `--board` or `image.board` names (x86_64 by default); an
/// unknown one is reported where it was named.
fn load_board(
    source: &str,
    text: &str,
    file: &ConfigFile,
    board_override: Option<&str>,
) -> Result<Board, ConfigError> {
    let board_name = match (board_override, &file.image.board) {
        (Some(b), _) => b.to_string(),
        (None, Some(b)) => b.get_ref().clone(),
        (None, None) => "x86_64".to_string(),
    };
    board::load(&board_name).map_err(|e| match (e, board_override, &file.image.board) {
        (ConfigError::UnknownBoard { name, known, .. }, None, Some(b)) => {
            ConfigError::UnknownBoard {
                name,
                known,
                at: Some(format!(
                    "{source}:{}: key `image.board`",
                    line_of(text, b.span().start)
                )),
            }
        }
        (ConfigError::UnknownBoard { name, known, .. }, Some(_), _) => ConfigError::UnknownBoard {
            name,
            known,
            at: Some("--board".into()),
        },
        (e, _, _) => e,
    })
}

/// `base.packages`, each a Debian package name.
fn package_names(file: &ConfigFile, invalid: &Invalid) -> Result<Vec<String>, ConfigError> {
    let mut extra_packages = Vec::new();
    for p in &file.base.packages {
        let n = p.get_ref();
        let ok = n.len() >= 2
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !ok {
            return Err(invalid(
                p.span(),
                "base.packages",
                format!("`{n}` is not a Debian package name"),
            ));
        }
        extra_packages.push(n.clone());
    }
    Ok(extra_packages)
}

/// Each `[[users]]` entry and its SSH keys.
fn check_users(source: &str, text: &str, users: &[User]) -> Result<(), ConfigError> {
    for (i, u) in users.iter().enumerate() {
        // [[users]] entries carry no spans: the line of the i-th header,
        // and of the key's own text after it.
        let header = nth_line_starting(text, "[[users]]", i);
        u.validate().map_err(|m| ConfigError::Invalid {
            file: source.to_string(),
            line: header,
            key: format!("users[{i}]"),
            message: m.to_string(),
        })?;
        for (k, key) in u.ssh_keys.iter().enumerate() {
            crate::ssh_pubkey::check(key).map_err(|message| ConfigError::Invalid {
                file: source.to_string(),
                line: line_containing(text, header, key).unwrap_or(header),
                key: format!("users[{i}].ssh_keys[{k}]"),
                message,
            })?;
        }
    }
    Ok(())
}

/// `image.overlays`, relative to the config file, each a directory.
fn overlay_dirs(
    file: &ConfigFile,
    base_dir: &Path,
    invalid: &Invalid,
) -> Result<Vec<PathBuf>, ConfigError> {
    let mut overlays = Vec::new();
    for o in &file.image.overlays {
        let p = base_dir.join(o.get_ref());
        if !p.is_dir() {
            return Err(invalid(
                o.span(),
                "image.overlays",
                format!(
                    "`{}` is not a directory (resolved to {})",
                    o.get_ref(),
                    p.display()
                ),
            ));
        }
        overlays.push(p);
    }
    Ok(overlays)
}

/// `[secure_boot]`: keys relative to the config file, on a board with UEFI
/// Secure Boot.
fn secure_boot(
    section: &schema::SecureBootSection,
    board: &Board,
    base_dir: &Path,
    invalid: &Invalid,
) -> Result<Option<SecureBoot>, ConfigError> {
    let Some(k) = &section.keys else {
        return Ok(None);
    };
    if let Some(why) = no_secure_boot(board) {
        return Err(invalid(k.span(), "secure_boot.keys", why));
    }
    Ok(Some(SecureBoot {
        keys: crate::secure_boot::sign::FleetKeys {
            prefix: base_dir.join(k.get_ref()),
        },
        enroll: section.enroll,
    }))
}

/// Why `board` cannot be signed for Secure Boot; `None` when it can. For
/// `[secure_boot] keys` and `build --secure-boot-keys` alike.
fn no_secure_boot(board: &Board) -> Option<String> {
    (board.firmware != board::Firmware::Uefi).then(|| {
        format!(
            "board `{}` has no UEFI Secure Boot (its firmware boots unsigned); it gets dm-verity and signed updates only",
            board.name
        )
    })
}

/// A build signed for UEFI Secure Boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureBoot {
    pub keys: crate::secure_boot::sign::FleetKeys,
    pub enroll: schema::Enroll,
}

impl Config {
    /// `build --secure-boot-keys PREFIX` (relative to the working
    /// directory, as any command-line path): replaces `[secure_boot] keys`,
    /// keeping its `enroll`.
    pub fn set_secure_boot_keys(&mut self, prefix: &Path) -> anyhow::Result<()> {
        if let Some(why) = no_secure_boot(&self.board) {
            anyhow::bail!(why);
        }
        let enroll = self
            .secure_boot
            .as_ref()
            .map(|s| s.enroll)
            .unwrap_or_default();
        self.secure_boot = Some(SecureBoot {
            keys: crate::secure_boot::sign::FleetKeys {
                prefix: prefix.to_path_buf(),
            },
            enroll,
        });
        Ok(())
    }
}

/// The kernel modules an encrypted data partition needs in the initramfs:
/// dm-crypt and LUKS2's default cipher (aes-xts-plain64; generic AES is
/// built into Debian's kernels, the CPU's faster AES code is a module), and
/// the kernel's crypto API for user space (algif_skcipher), through which
/// cryptsetup encrypts the data when it converts the partition offline.
///
/// The CPU's AES: AES-NI on x86 (aesni-intel); on arm64 the ARMv8 Crypto
/// Extensions (aes-ce-blk, with aes-ce-cipher), or NEON bit-sliced AES
/// (aes-neon-bs, with aes-neon-blk) on cores without them, such as the
/// Raspberry Pi 4's Cortex-A72. The crypto API loads the fastest one the
/// CPU runs when dm-crypt asks for xts(aes) (their `crypto-xts(aes)`
/// aliases), so they only need to be in the initramfs.
///
/// No TPM driver is named: Debian's kernels build in the TPM core and the
/// CRB driver (tpm_crb, ACPI TPM2 devices: most UEFI arm64 servers, x86
/// firmware TPMs); x86's TIS driver is built in too. Debian's arm64 kernel
/// has no TIS driver at all (CONFIG_TCG_TIS unset; docs/trusted-boot.md).
pub fn luks_modules(arch: edgeimg_contract::arch::Arch) -> &'static [&'static str] {
    match arch {
        edgeimg_contract::arch::Arch::Amd64 => {
            &["dm-crypt", "xts", "algif_skcipher", "aesni-intel"]
        }
        edgeimg_contract::arch::Arch::Arm64 => &[
            "dm-crypt",
            "xts",
            "algif_skcipher",
            "aes-ce-blk",
            "aes-neon-bs",
        ],
    }
}

/// The kernel module a verity root needs in the initramfs.
pub const VERITY_MODULE: &str = "dm-verity";

/// Room for every placeholder around a 63-byte hostname.
const MAX_HOSTNAME_PATTERN: usize = 128;

/// A Debian mirror URL for mmdebstrap (and apt in the base): http(s) or
/// file, one line of printable ASCII, bounded; anything else would be passed
/// on to mmdebstrap's command line and the base's sources.list.
pub fn validate_mirror(m: &str) -> Result<(), String> {
    const MAX: usize = 512;
    if m.len() > MAX {
        return Err(format!(
            "the mirror URL is {} bytes; at most {MAX}",
            m.len()
        ));
    }
    if let Some(c) = m.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the mirror URL contains {:?}; give one URL without spaces or control characters",
            c
        ));
    }
    let scheme_ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|s| m.starts_with(s) && m.len() > s.len());
    if !scheme_ok {
        return Err(format!("`{m}` is not an http://, https:// or file:/// URL"));
    }
    Ok(())
}

/// Checks `{placeholder}` names and the literal characters of a hostname pattern.
pub fn validate_hostname_pattern(p: &str) -> Result<(), String> {
    // A hostname is at most 64 bytes; a pattern far longer is a mistake,
    // and is not repeated back.
    if p.len() > MAX_HOSTNAME_PATTERN {
        return Err(format!(
            "the hostname pattern is {} bytes; at most {MAX_HOSTNAME_PATTERN}",
            p.len()
        ));
    }
    let mut rest = p;
    let mut literal = String::new();
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("`{p}` has an unclosed `{{`"))?
            + open;
        let name = &rest[open + 1..close];
        if !HOSTNAME_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{name}}}` in `{p}` (known: {})",
                HOSTNAME_PLACEHOLDERS.join(", ")
            ));
        }
        rest = &rest[close + 1..];
    }
    literal.push_str(rest);
    if let Some(c) = literal
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "`{p}` contains `{c}`; hostnames allow letters, digits and '-'"
        ));
    }
    if p.is_empty() {
        return Err("the hostname pattern is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse("edgeimg.toml", text, Path::new("."), None)
    }

    #[test]
    fn mirror_and_hostname_pattern_are_bounded_and_checked() {
        let ok = p("[image]\nname = \"x\"\n[base]\nmirror = \"https://mirror.example/debian\"\n")
            .unwrap();
        assert_eq!(ok.mirror, "https://mirror.example/debian");
        for (m, want) in [
            ("ftp://x/debian", "not an http"),
            ("http://a/debian\\nmalicious", "control"),
            ("http://a b/debian", "' '"),
            ("--option", "not an http"),
        ] {
            let e = p(&format!(
                "[image]\nname = \"x\"\n[base]\nmirror = \"{m}\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(":4:") && e.contains("base.mirror") && e.contains(want),
                "{m}: {e}"
            );
        }
        let long = format!("http://{}", "a".repeat(600));
        let e = p(&format!(
            "[image]\nname = \"x\"\n[base]\nmirror = \"{long}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 512") && !e.contains(&long), "{e}");
        let pattern = "a".repeat(5000);
        let e = p(&format!(
            "[image]\nname = \"x\"\nhostname = \"{pattern}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 128") && !e.contains(&pattern), "{e}");
    }

    #[test]
    fn default_config_parses() {
        let c = p(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.board.name, "x86_64");
        assert_eq!(c.suite, "trixie");
        assert_eq!(c.size, ImageSize::Auto);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = p("[image]\nname = \"x\"\ncolour = \"blue\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("edgeimg.toml") && e.contains("edgeimg.toml:3:") && e.contains("colour"),
            "{e}"
        );
    }

    #[test]
    fn verity_is_on_by_default_and_adds_its_module_and_packages_only_when_on() {
        let off = p("[image]\nname = \"x\"\nverity = false\n").unwrap();
        assert!(!off.verity);
        assert!(
            !off.board
                .initramfs_modules
                .contains(&VERITY_MODULE.to_string())
        );
        let on = p("[image]\nname = \"x\"\n").unwrap();
        assert!(on.verity, "dm-verity is the default");
        assert!(p("[image]\nname = \"x\"\nverity = true\n").unwrap().verity);
        assert!(
            on.board
                .initramfs_modules
                .contains(&VERITY_MODULE.to_string())
        );
        let (poff, pon) = (crate::plan::make(&off, None), crate::plan::make(&on, None));
        assert!(!poff.base.packages.contains(&"cryptsetup-bin".to_string()));
        assert!(pon.base.packages.contains(&"cryptsetup-bin".to_string()));
        assert!(poff.kernel_cmdline.starts_with("root=PARTUUID="));
        assert!(
            pon.kernel_cmdline
                .starts_with("root=/dev/mapper/edgeimg-root edgeimg.verity=")
                && pon.kernel_cmdline.contains(&format!(
                    "edgeimg.verity.dev=PARTUUID={}",
                    pon.ids.root_a_partuuid
                )),
            "{}",
            pon.kernel_cmdline
        );
        let e = p("[image]\nname = \"x\"\nverity = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3:") && e.contains("verity"), "{e}");
    }

    #[test]
    fn update_repository_needs_a_trusted_root_that_is_tuf_root_metadata() {
        let d = tempfile::tempdir().unwrap();
        crate::tuf::keygen(&d.path().join("repo")).unwrap();
        std::fs::write(d.path().join("not-root.json"), "{}").unwrap();
        let q = |u: &str| {
            parse(
                "edgeimg.toml",
                &format!("[image]\nname = \"x\"\n[update]\n{u}"),
                d.path(),
                None,
            )
        };
        let c = q("repository = \"http://10.0.0.1/fleet\"\ntrusted_root = \"repo-root.json\"\nwindow = \"23:00-02:00\"\n").unwrap();
        let r = c.update_repository.unwrap();
        assert_eq!(r.url, "http://10.0.0.1/fleet");
        assert_eq!(r.trusted_root, d.path().join("repo-root.json"));
        assert_eq!(r.window.as_deref(), Some("23:00-02:00"));
        assert_eq!(r.ca_certificates, None);
        assert!(q("").unwrap().update_repository.is_none());
        std::fs::write(
            d.path().join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let c = q("repository = \"https://10.0.0.1/fleet\"\ntrusted_root = \"repo-root.json\"\nca_certificates = \"ca.pem\"\n").unwrap();
        let r = c.update_repository.unwrap();
        assert_eq!(r.url, "https://10.0.0.1/fleet");
        assert_eq!(r.ca_certificates, Some(d.path().join("ca.pem")));
        for (bad, says) in [
            ("repository = \"http://h/\"\n", "needs update.trusted_root"),
            (
                "trusted_root = \"repo-root.json\"\n",
                "needs update.repository",
            ),
            ("window = \"01:00-02:00\"\n", "needs update.repository"),
            ("ca_certificates = \"ca.pem\"\n", "needs update.repository"),
            (
                "repository = \"https://h/\"\ntrusted_root = \"repo-root.json\"\nca_certificates = \"not-root.json\"\n",
                "is not a PEM certificate bundle",
            ),
            (
                "repository = \"https://h/\"\ntrusted_root = \"repo-root.json\"\nca_certificates = \"missing.pem\"\n",
                "cannot read",
            ),
            (
                "repository = \"ftp://h/\"\ntrusted_root = \"repo-root.json\"\n",
                "expected an http://",
            ),
            (
                "repository = \"http://h/\"\ntrusted_root = \"missing.json\"\n",
                "cannot read",
            ),
            (
                "repository = \"http://h/\"\ntrusted_root = \"not-root.json\"\n",
                "is not TUF root metadata",
            ),
            (
                "repository = \"http://h/\"\ntrusted_root = \"repo-root.json\"\nwindow = \"1-2\"\n",
                "HH:MM-HH:MM",
            ),
        ] {
            let e = q(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn update_generation_defaults_to_zero() {
        assert_eq!(p("[image]\nname = \"x\"\n").unwrap().update_generation, 0);
        let c = p("[image]\nname = \"x\"\n[update]\ngeneration = 7\n").unwrap();
        assert_eq!(c.update_generation, 7);
        let e = p("[image]\nname = \"x\"\n[update]\ngeneration = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":4:") && e.contains("generation"), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = p("[image]\nname = 5\n").unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("name"), "{e}");
    }

    #[test]
    fn bad_size_names_line() {
        let e = p("[image]\nname = \"x\"\nsize = \"4Q\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3:") && e.contains("4Q"), "{e}");
    }

    #[test]
    fn secure_boot_keys_are_refused_on_a_board_without_uefi_secure_boot() {
        let text = "[image]\nname = \"x\"\nboard = \"rpi4\"\n\n[secure_boot]\nkeys = \"k/fleet\"\n";
        let e = p(text).unwrap_err().to_string();
        assert!(
            e.contains("secure_boot.keys") && e.contains("board `rpi4` has no UEFI Secure Boot"),
            "{e}"
        );
        // The command line's keys: the same refusal; a UEFI board takes them.
        let mut rpi = p("[image]\nname = \"x\"\nboard = \"rpi4\"\n").unwrap();
        let e = rpi.set_secure_boot_keys(Path::new("k/fleet")).unwrap_err();
        assert!(
            e.to_string()
                .contains("board `rpi4` has no UEFI Secure Boot"),
            "{e}"
        );
        let mut pc = p("[image]\nname = \"x\"\n").unwrap();
        pc.set_secure_boot_keys(Path::new("k/fleet")).unwrap();
        assert_eq!(pc.secure_boot.unwrap().keys.prefix, Path::new("k/fleet"));
        let with_keys = p("[image]\nname = \"x\"\n\n[secure_boot]\nkeys = \"k/fleet\"\n").unwrap();
        assert_eq!(
            with_keys.secure_boot.unwrap().keys.prefix,
            Path::new("./k/fleet")
        );
    }

    #[test]
    fn unknown_board_lists_known() {
        let e = p("[image]\nname = \"x\"\nboard = \"vax\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("edgeimg.toml:3") && e.contains("vax") && e.contains("x86_64"),
            "{e}"
        );
        let e = parse("f", "[image]\nname=\"x\"\n", Path::new("."), Some("pdp11"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--board") && e.contains("pdp11"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = p("[image]\nname = \"x\"\nhostname = \"n-{foo}\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":3") && e.contains("image.hostname") && e.contains("{foo}"),
            "{e}"
        );
        let e = p("[image]\nname = \"x\"\n[base]\nsuite = \"sid2\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":4") && e.contains("base.suite"), "{e}");
        let e = p("[image]\nname = \"x\"\n[base]\npackages = [\"Bad Pkg\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("base.packages") && e.contains("Bad Pkg"), "{e}");
        let e = p("[image]\nname = \"../x\"\n").unwrap_err().to_string();
        assert!(e.contains("image.name"), "{e}");
        let e = p("[image]\nname = \"x\"\ncompression = \"rar\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3:") && e.contains("rar"), "{e}");
    }

    #[test]
    fn malformed_toml_is_an_error() {
        let e = p("[image\nname = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("edgeimg.toml") && e.contains(":1:"), "{e}");
    }
}
