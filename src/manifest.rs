//! `manifest.json`: every input of the image with its version and SHA-256, and
//! the resulting layout. Deterministic (no wall-clock time), so two builds of
//! the same inputs give the same manifest.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::artifact::checksums::{sha256_bytes, sha256_file};
use crate::base::BaseMeta;
use crate::disk::Layout;
use crate::plan::Plan;

/// The manifest format this edgeimg writes and the newest it can read.
pub const FORMAT: u32 = 1;

fn format_v1() -> u32 {
    1
}

pub struct Inputs<'a> {
    pub plan: &'a Plan,
    pub config_text: String,
    pub base: &'a BaseMeta,
    pub packages: &'a [(String, String, String)],
    pub kernel: &'a KernelInfo,
    pub agent: &'a [u8],
    pub overlays: &'a [(PathBuf, Vec<(String, String)>)],
    pub layout: &'a Layout,
    pub k3s: Option<&'a crate::k3s_inputs::K3sInputs>,
    pub selinux: Option<&'a crate::selinux::Applied>,
    /// Files edgeimg itself placed into the root (relative paths).
    pub placed: &'a [String],
    pub image: &'a Path,
    pub epoch: u64,
    /// Slot A's command line as written (with verity's root hash).
    pub kernel_cmdline: &'a str,
    pub verity: Option<&'a crate::verity::Verity>,
    /// The fleet keys the boot chain was signed with; `None`: not signed.
    pub secure_boot: Option<&'a crate::config::SecureBoot>,
    /// `[data] encryption = "tpm2"`; `None`: a plain data partition.
    pub data_encryption: Option<&'a crate::config::data::DataEncryption>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelInfo {
    pub version: String,
    pub vmlinuz_sha256: String,
    pub initrd_sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] when written; manifests from before the field read as 1.
    #[serde(default = "format_v1")]
    pub format: u32,
    pub edgeimg_version: String,
    pub name: String,
    pub board: String,
    pub arch: String,
    pub source_date_epoch: u64,
    pub seed: String,
    pub image: ImageInfo,
    pub kernel_cmdline: String,
    /// dm-verity on or off, and slot A's hash tree parameters when on.
    pub verity: VerityInfo,
    /// Whether systemd-boot and the UKIs are signed, and with which db
    /// certificate; absent in manifests from before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBootInfo>,
    /// Whether the device encrypts its data partition; absent in manifests
    /// from before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_encryption: Option<DataEncryptionInfo>,
    pub inputs: InputList,
    pub layout: Layout,
    /// Files edgeimg placed into the root on top of the Debian base, sorted.
    pub placed_files: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SecureBootInfo {
    pub signed: bool,
    /// SHA-256 of the db certificate (PEM file) that signed the boot files:
    /// names the fleet's key without naming where it is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_cert_sha256: Option<String>,
    /// systemd-boot's `secure-boot-enroll` setting on the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enroll: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DataEncryptionInfo {
    /// "none" or "tpm2" (LUKS2 made on the device, sealed to its TPM2).
    pub encryption: String,
    /// With "tpm2": what a device without a TPM2 does ("refuse", "plain").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_tpm: Option<String>,
    /// With "tpm2": SHA-256 of the recovery public key file (PEM), naming
    /// the operator's key without naming where it is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_public_key_sha256: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VerityInfo {
    pub enabled: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub slot_a: Option<crate::verity::Verity>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ImageInfo {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InputList {
    pub config: Named,
    pub base: BaseInput,
    pub kernel: KernelInfo,
    pub agent: Named,
    pub packages: Vec<Package>,
    pub overlays: Vec<OverlayInput>,
    /// The K3s bundle and preloaded images (absent for plain appliances).
    pub k3s: Option<K3sInput>,
    /// SELinux mode and the policy modules installed (absent when disabled).
    pub selinux: Option<SelinuxInput>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SelinuxInput {
    pub mode: String,
    pub policy: String,
    /// Every module edgeimg compiled and installed, with the SHA-256 of its `.pp`.
    pub modules: Vec<crate::selinux::ModuleRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct K3sInput {
    pub bundle: String,
    /// True for edgeimg's labelled test stand-in: NOT K3s.
    pub stand_in: bool,
    pub k3s_version: String,
    pub nerdctl_version: String,
    /// The image's default role, `server` or `agent` (absent in manifests
    /// written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// BuildKit installed (absent in manifests written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildkit: Option<bool>,
    pub assets: Vec<Named>,
    pub preloaded_images: Vec<PreloadedImage>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreloadedImage {
    pub file: String,
    pub sha256: String,
    pub images: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BaseInput {
    pub suite: String,
    pub arch: String,
    pub mirror: String,
    pub cache_key: String,
    pub tarball_sha256: String,
    pub requested_packages: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OverlayInput {
    pub path: String,
    pub files: Vec<OverlayFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OverlayFile {
    pub path: String,
    /// SHA-256 of the placed (rendered) content, or `symlink:<target>`.
    pub sha256: String,
}

impl Manifest {
    /// Reads and checks `path`: refuses a format newer than [`FORMAT`] by name
    /// rather than misreading it.
    pub fn read(path: &Path) -> Result<Manifest> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // The version first, so a newer layout fails on its version, not on
        // whichever field changed.
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "format_v1")]
            format: u32,
        }
        let v: Version = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a manifest (invalid JSON)", path.display()))?;
        if v.format > FORMAT {
            anyhow::bail!(
                "{}: manifest format {} is newer than this edgeimg reads (up to {FORMAT}); use a newer edgeimg",
                path.display(),
                v.format
            );
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid edgeimg manifest", path.display()))
    }

    /// The `manifest.json` beside `image` when it describes that image (its
    /// `image.file` names the image, compressed or not). `Ok(None)` when there
    /// is none or it describes another image.
    pub fn beside(image: &Path) -> Result<Option<(PathBuf, Manifest)>> {
        let path = image.with_file_name("manifest.json");
        if !path.exists() {
            return Ok(None);
        }
        let m = Manifest::read(&path)?;
        let name = image
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let matches = [".zst", ".xz", ".gz"]
            .iter()
            .fold(name == m.image.file, |ok, ext| {
                ok || name.strip_suffix(ext) == Some(m.image.file.as_str())
            });
        Ok(matches.then_some((path, m)))
    }

    pub fn collect(i: Inputs) -> Result<Manifest> {
        let p = i.plan;
        Ok(Manifest {
            format: FORMAT,
            edgeimg_version: crate::VERSION.into(),
            name: p.name.clone(),
            board: p.board.clone(),
            arch: p.arch.to_string(),
            source_date_epoch: i.epoch,
            seed: p.seed.clone(),
            image: ImageInfo {
                file: p.image_file(),
                size: std::fs::metadata(i.image)?.len(),
                sha256: sha256_file(i.image)?,
            },
            kernel_cmdline: i.kernel_cmdline.to_string(),
            verity: VerityInfo {
                enabled: i.verity.is_some(),
                slot_a: i.verity.cloned(),
            },
            secure_boot: Some(match i.secure_boot {
                None => SecureBootInfo {
                    signed: false,
                    db_cert_sha256: None,
                    enroll: None,
                },
                Some(sb) => SecureBootInfo {
                    signed: true,
                    db_cert_sha256: Some(sha256_file(&sb.keys.file("db.crt"))?),
                    enroll: Some(sb.enroll.as_str().to_string()),
                },
            }),
            data_encryption: Some(match i.data_encryption {
                None => DataEncryptionInfo {
                    encryption: "none".into(),
                    no_tpm: None,
                    recovery_public_key_sha256: None,
                },
                Some(e) => DataEncryptionInfo {
                    encryption: "tpm2".into(),
                    no_tpm: Some(e.no_tpm.as_str().into()),
                    recovery_public_key_sha256: Some(sha256_bytes(
                        e.recovery_public_pem.as_bytes(),
                    )),
                },
            }),
            inputs: InputList {
                config: Named {
                    name: p.config_source.clone(),
                    version: String::new(),
                    sha256: sha256_bytes(i.config_text.as_bytes()),
                },
                base: BaseInput {
                    suite: i.base.suite.clone(),
                    arch: i.base.arch.to_string(),
                    mirror: i.base.mirror.clone(),
                    cache_key: i.base.key.clone(),
                    tarball_sha256: i.base.sha256.clone(),
                    requested_packages: p.base.packages.clone(),
                },
                kernel: i.kernel.clone(),
                agent: Named {
                    name: "edgeimg-agent".into(),
                    version: crate::VERSION.into(),
                    sha256: sha256_bytes(i.agent),
                },
                packages: i
                    .packages
                    .iter()
                    .map(|(n, v, a)| Package {
                        name: n.clone(),
                        version: v.clone(),
                        arch: a.clone(),
                    })
                    .collect(),
                k3s: i.k3s.map(k3s_input).transpose()?,
                selinux: i.selinux.map(|s| SelinuxInput {
                    mode: s.mode.as_str().into(),
                    policy: crate::selinux::POLICY_TYPE.into(),
                    modules: s.modules.clone(),
                }),
                overlays: i
                    .overlays
                    .iter()
                    .map(|(o, f)| OverlayInput {
                        path: o.display().to_string(),
                        files: f
                            .iter()
                            .map(|(p, h)| OverlayFile {
                                path: p.clone(),
                                sha256: h.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            },
            layout: i.layout.clone(),
            placed_files: {
                let mut v = i.placed.to_vec();
                v.sort();
                v.dedup();
                v
            },
        })
    }
}

fn k3s_input(k: &crate::k3s_inputs::K3sInputs) -> Result<K3sInput> {
    let b = &k.bundle;
    let mut preloaded_images = Vec::new();
    for (path, archive) in &k.preloaded {
        preloaded_images.push(PreloadedImage {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            // What was checked and copied (the copy refuses other bytes).
            sha256: match &archive.sha256 {
                Some(s) => s.clone(),
                None => sha256_file(path)?,
            },
            images: archive.images.iter().map(|i| i.name.clone()).collect(),
        });
    }
    Ok(K3sInput {
        bundle: b.name.clone(),
        stand_in: k.stand_in,
        k3s_version: b.k3s_version.clone(),
        nerdctl_version: b.nerdctl_version.clone(),
        role: Some(k.role.as_str().to_string()),
        buildkit: Some(k.buildkit),
        assets: b
            .assets()
            .into_iter()
            .map(|a| Named {
                name: a.file.clone(),
                version: a.version.clone(),
                sha256: a.sha256.clone(),
            })
            .collect(),
        preloaded_images,
    })
}
