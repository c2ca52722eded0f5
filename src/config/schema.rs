//! The operator's `edgeimg.toml`, exactly as written (before merging with the
//! board). Unknown keys are errors: a typo must never be silently ignored.

use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

use super::size::ImageSize;
use crate::artifact::Compression;
pub use edgeimg_contract::schema::User;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub image: ImageSection,
    #[serde(default)]
    pub base: BaseSection,
    #[serde(default)]
    pub users: Vec<User>,
    /// Absent: K3s on with the defaults (it is what the product is for).
    #[serde(default)]
    pub k3s: super::k3s::K3sSection,
    /// Absent: SELinux disabled.
    #[serde(default)]
    pub selinux: super::selinux::SelinuxSection,
    /// Absent: generation 0.
    #[serde(default)]
    pub update: UpdateSection,
    /// Absent: nothing signed.
    #[serde(default)]
    pub secure_boot: SecureBootSection,
    /// Absent: the data partition is plain ext4.
    #[serde(default)]
    pub data: super::data::DataSection,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBootSection {
    /// The fleet's key PREFIX (`edgeimg keygen --secure-boot --out PREFIX`),
    /// relative to the config file.
    pub keys: Option<Spanned<String>>,
    /// systemd-boot's `secure-boot-enroll`.
    #[serde(default)]
    pub enroll: Enroll,
}

/// When systemd-boot enrolls the keys the image carries (loader.conf
/// `secure-boot-enroll`, systemd 252 and later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enroll {
    /// Never: the keys are enrolled by hand.
    Off,
    /// A menu entry the operator picks.
    Manual,
    /// By itself only on machines where that is known safe (virtual machines).
    #[default]
    IfSafe,
    /// By itself on any machine in setup mode (after a 15 s countdown).
    Force,
}

impl Enroll {
    pub fn as_str(self) -> &'static str {
        match self {
            Enroll::Off => "off",
            Enroll::Manual => "manual",
            Enroll::IfSafe => "if-safe",
            Enroll::Force => "force",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    /// The version floor carried in the image and its signed update: a
    /// device refuses an update of a lower generation (docs/updates.md).
    #[serde(default)]
    pub generation: u64,
    /// The update repository devices pull from (`edgeimg publish`'s
    /// directory, served): an `http://`, `https://` or `file://` URL or an
    /// absolute path.
    #[serde(default)]
    pub repository: Option<Spanned<String>>,
    /// Certificate authorities (PEM) an `https://` repository's server may
    /// chain to, besides the device's own bundle; relative to the config file.
    #[serde(default)]
    pub ca_certificates: Option<Spanned<PathBuf>>,
    /// The repository's TUF root metadata (`edgeimg keygen --tuf`), relative
    /// to the config file: what devices trust.
    #[serde(default)]
    pub trusted_root: Option<Spanned<PathBuf>>,
    /// The maintenance window, `HH:MM-HH:MM` UTC: devices download at any
    /// time and install only inside it.
    #[serde(default)]
    pub window: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Output file stem: `<name>-<board>.img`.
    pub name: Spanned<String>,
    /// Default board when `--board` is not given.
    pub board: Option<Spanned<String>>,
    #[serde(default)]
    pub size: ImageSize,
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Hostname pattern rendered by the agent on first boot (node.toml wins).
    #[serde(default = "default_hostname")]
    pub hostname: Spanned<String>,
    /// Seed every identifier (disk GUID, partition and filesystem UUIDs) derives
    /// from; defaults to the image name and board.
    pub seed: Option<String>,
    /// EROFS compression of the root: lz4hc (default, 16 KiB physical
    /// clusters), lz4 (several times faster to make, a few % bigger), lzma
    /// (smallest, slowest to make and read; needs an erofs-utils built with
    /// it: bookworm's 1.5 is not, .ci/setup builds trixie's 1.8.6), or none.
    #[serde(default)]
    pub root_compression: RootCompression,
    /// Directories laid over the root filesystem, relative to this file.
    #[serde(default)]
    pub overlays: Vec<Spanned<String>>,
    /// dm-verity: each root slot carries a hash tree after its EROFS data and
    /// the initramfs opens the root through it (docs/verity.md). Absent means
    /// on; `false` opts out.
    pub verity: Option<Spanned<bool>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSection {
    #[serde(default = "default_suite")]
    pub suite: Spanned<String>,
    #[serde(default = "default_mirror_spanned")]
    pub mirror: Spanned<String>,
    /// Extra Debian packages on top of what edgeimg and the board need.
    #[serde(default)]
    pub packages: Vec<Spanned<String>>,
}

impl Default for BaseSection {
    fn default() -> Self {
        BaseSection {
            suite: default_suite(),
            mirror: default_mirror_spanned(),
            packages: vec![],
        }
    }
}

fn default_compression() -> Compression {
    Compression::Zstd
}
fn default_hostname() -> Spanned<String> {
    Spanned::new(0..0, "edge-{machine_id}".to_string())
}
fn default_suite() -> Spanned<String> {
    Spanned::new(0..0, "trixie".to_string())
}
fn default_mirror_spanned() -> Spanned<String> {
    Spanned::new(0..0, default_mirror())
}
pub fn default_mirror() -> String {
    "http://deb.debian.org/debian".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RootCompression {
    Lz4,
    #[default]
    Lz4hc,
    Lzma,
    None,
}

impl RootCompression {
    /// mkfs.erofs' compression arguments. lz4hc uses 16 KiB physical
    /// clusters: on the trixie root that made mkfs.erofs 1.5 about a third
    /// faster than 4 KiB ones and the root ~4% smaller (64 KiB was slower).
    pub fn mkfs_args(self) -> &'static [&'static str] {
        match self {
            RootCompression::Lz4 => &["-zlz4"],
            RootCompression::Lz4hc => &["-zlz4hc", "-C16384"],
            RootCompression::Lzma => &["-zlzma", "-C65536"],
            RootCompression::None => &[],
        }
    }

    /// The compressor name mkfs.erofs lists as available, if any.
    pub fn compressor(self) -> Option<&'static str> {
        match self {
            RootCompression::Lz4 => Some("lz4"),
            RootCompression::Lz4hc => Some("lz4hc"),
            RootCompression::Lzma => Some("lzma"),
            RootCompression::None => None,
        }
    }
}
