//! The signed update file: [`format`] (header, payloads, signature),
//! [`keys`] (Ed25519 key files and ids) and [`delta`] (a delta payload of an
//! update repository, and how it is applied to the release a device runs).
//! The builder writes it and runs the
//! device's check on the host; the agent verifies and applies it.

pub mod delta;
pub mod format;
pub mod keys;
pub mod window;

/// Where an image built with `--signing-key` carries the trusted public key.
pub const TRUSTED_KEY_PATH: &str = "/usr/share/edgeimg/update.pub";

/// The generation (version floor) of the running image: `[update]
/// generation` of its config, one decimal number. Images built before the
/// floor existed have no such file: generation 0.
pub const GENERATION_PATH: &str = "/usr/lib/edgeimg/update-generation";

/// The update repository an image pulls from (`[update] repository` of its
/// config): one line, an `http://`, `https://` or `file://` URL or an
/// absolute path.
/// `node.toml`'s `[update] repository` overrides it per node.
pub const REPOSITORY_PATH: &str = "/usr/share/edgeimg/update-repository";

/// The TUF root metadata the image trusts (`[update] trusted_root` of its
/// config, from `edgeimg keygen --tuf`): the start of the chain of trust,
/// on the read-only root.
pub const TRUSTED_ROOT_PATH: &str = "/usr/share/edgeimg/repo-root.json";

/// The certificate authorities an image trusts for an `https://` repository
/// besides the device's own bundle ([`SYSTEM_CA_PATH`]): `[update]
/// ca_certificates` of its config, PEM, on the read-only root.
pub const CA_CERTIFICATES_PATH: &str = "/usr/share/edgeimg/ca-certificates.pem";

/// The device's own certificate authorities, when its image has them.
pub const SYSTEM_CA_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The pull service's policy (`[update] window` of the config), an
/// environment file: `EDGEIMG_UPDATE_WINDOW=HH:MM-HH:MM`.
pub const POLICY_PATH: &str = "/usr/share/edgeimg/update-policy";

/// The filesystem label of a removable medium that carries updates (a
/// repository copy or one update file): the image's udev rule starts
/// `edgeimg-update-usb@<device>.service` for a vfat or ext4 filesystem with
/// this label. The builder writes it into the rule, `edgeimg-agent update
/// usb` names it in its messages.
pub const USB_LABEL: &str = "EDGEUPDATE";

/// Where `edgeimg-agent update usb --device /dev/NAME` mounts the medium
/// (read-only, nosuid, nodev, noexec): `<USB_MOUNT_DIR>/NAME`, under /run.
pub const USB_MOUNT_DIR: &str = "/run/edgeimg/usb";

/// The repository target name of a full update:
/// `<name>-<board>-<generation>-<build id>.update`. `edgeimg publish`
/// names the target so; the device records an update installed from a
/// stick under the same name, so a release whose trial boot failed is
/// known whichever way it came.
pub fn target_name(h: &format::Header) -> String {
    format!(
        "{}-{}-{}-{}.update",
        h.name, h.board, h.generation, h.build_id
    )
}
