//! The resolved plan of a build: every package, identifier, partition and file,
//! computed from the configuration alone (pure data; `edgeimg plan` prints it).

use std::path::Path;

use serde::Serialize;

use crate::base::{BaseSpec, REQUIRED_PACKAGES};
use crate::config::board::{Board, Firmware, PartitionTable};
use crate::config::{Config, ImageSize};
use crate::disk::layout;
pub use crate::ids::Ids;
use edgeimg_contract::arch::Arch;
use edgeimg_contract::cmdline as kcmd;
use edgeimg_contract::partition::Slot;

#[derive(Debug, Clone, Serialize)]
pub struct PartitionPlan {
    pub number: u32,
    pub label: &'static str,
    pub fs: &'static str,
    pub size: String,
    pub part_uuid: String,
    pub role: &'static str,
}

/// What the board's firmware reads from the boot partition.
#[derive(Debug, Clone, Serialize)]
pub struct BootPlan {
    /// How the firmware finds the kernel (e.g. "UEFI -> systemd-boot").
    pub firmware: &'static str,
    /// Files on the boot partition, as the build names them.
    pub files: Vec<String>,
}

/// The K3s part of the image.
#[derive(Debug, Clone, Serialize)]
pub struct K3sPlan {
    /// The bundle manifest's name (a shipped one, a path, or `--bundle DIR`'s).
    pub bundle: String,
    /// K3s version from the bundle's manifest; `None` when it cannot be read.
    pub version: Option<String>,
    /// True when the bundle's manifest says it is edgeimg's labelled test
    /// stand-in (not K3s); the build checks the binary itself again.
    pub stand_in: Option<bool>,
    pub role: String,
    pub cluster_init: bool,
    /// nerdctl, wired to K3s' containerd, is in every K3s image.
    pub nerdctl: bool,
    pub buildkit: bool,
    /// Image archives preloaded beside the bundle's air-gap images.
    pub preloaded_images: Vec<String>,
    /// Packaged components turned off (`--disable`).
    pub disabled: Vec<String>,
}

/// SELinux, when the image has it.
#[derive(Debug, Clone, Serialize)]
pub struct SelinuxPlan {
    pub mode: String,
    /// Policy modules installed: edgeimg's own, then the config's.
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub board: String,
    pub arch: Arch,
    pub config_source: String,
    pub seed: String,
    pub base: BaseSpec,
    pub ids: Ids,
    pub partition_table: String,
    pub image_size: String,
    pub partitions: Vec<PartitionPlan>,
    pub kernel_cmdline: String,
    pub compression: String,
    pub hostname_pattern: String,
    pub users: Vec<String>,
    pub overlays: Vec<String>,
    pub boot: BootPlan,
    /// `None`: a plain appliance without K3s.
    pub k3s: Option<K3sPlan>,
    pub selinux: Option<SelinuxPlan>,
    /// The root is opened through dm-verity.
    pub verity: bool,
    /// How the boot chain is signed: "not signed", or the signing and
    /// enrollment in words.
    pub secure_boot: String,
    /// The data partition's encryption in words ("none: plain ext4", ...).
    pub data_encryption: String,
    /// Files edgeimg itself places into the root (overlays come on top), as
    /// the build reports them in manifest.json's `placed_files`.
    pub files: Vec<String>,
    /// Placed as well when the build signs updates (`--signing-key`).
    pub signing_key_file: String,
    pub outputs: Vec<String>,
}

impl Plan {
    pub fn image_file(&self) -> String {
        format!("{}-{}.img", self.name, self.board)
    }
}

/// Slot A's kernel command line. With verity, `verity` gives the root hash
/// and hash offset once the build knows them (the plan shows placeholders).
pub fn kernel_cmdline(config: &Config, ids: &Ids, verity: Option<(&str, u64)>) -> String {
    slot_cmdline(config, ids, verity, Slot::A)
}

/// The kernel command line that boots `slot`: its partition as the root (or
/// as the verity device), `edgeimg.slot=`. Slot B's is only built for the
/// signed UKI a Secure Boot update carries; without Secure Boot the device
/// derives it from slot A's.
pub fn slot_cmdline(config: &Config, ids: &Ids, verity: Option<(&str, u64)>, slot: Slot) -> String {
    let partuuid = match slot {
        Slot::A => &ids.root_a_partuuid,
        Slot::B => &ids.root_b_partuuid,
    };
    let root = match (config.verity, verity) {
        (false, _) => vec![format!("root=PARTUUID={partuuid}")],
        (true, Some((hash, offset))) => {
            crate::verity::cmdline_params(partuuid, hash, &offset.to_string())
        }
        (true, None) => crate::verity::cmdline_params(partuuid, "<root-hash>", "<bytes>"),
    };
    let mut parts = root;
    parts.extend([
        "rootfstype=erofs".into(),
        "ro".into(),
        format!("{}=PARTUUID={}", kcmd::DATA, ids.data_partuuid),
        format!("{}={slot}", kcmd::SLOT),
        // Partitions are mounted by edgeimg, never guessed from their types.
        "systemd.gpt_auto=0".into(),
        "panic=10".into(),
    ]);
    if let Some(se) = &config.selinux {
        // Debian's kernel lists AppArmor first: name SELinux as the major LSM.
        parts.extend(["security=selinux".into(), "selinux=1".into()]);
        parts.push(format!(
            "enforcing={}",
            u8::from(se.mode == crate::config::selinux::SelinuxMode::Enforcing)
        ));
    }
    parts.extend(config.board.consoles.iter().map(|c| format!("console={c}")));
    parts.join(" ")
}

/// The plan of `config`; `bundle` is a `--bundle DIR` that replaces the
/// config's bundle, as for `edgeimg build`.
pub fn make(config: &Config, bundle: Option<&Path>) -> Plan {
    let board = &config.board;
    let mut packages: Vec<String> = REQUIRED_PACKAGES.iter().map(|s| s.to_string()).collect();
    packages.push(board.kernel_package.clone());
    packages.extend(board.packages.iter().cloned());
    packages.extend(config.extra_packages.iter().cloned());
    // Only when on: images without SELinux keep their cached base.
    if config.selinux.is_some() {
        packages.extend(
            crate::config::selinux::PACKAGES
                .iter()
                .map(|s| s.to_string()),
        );
    }
    // Likewise for verity (the initramfs copies veritysetup from cryptsetup-bin).
    if config.verity {
        packages.extend(crate::verity::PACKAGES.iter().map(|s| s.to_string()));
    }
    // Likewise for the encrypted data partition (its first boot runs them).
    if config.data_encryption.is_some() {
        packages.extend(crate::luks::PACKAGES.iter().map(|s| s.to_string()));
    }
    packages.sort();
    packages.dedup();
    let base = BaseSpec {
        suite: config.suite.clone(),
        arch: board.arch,
        mirror: config.mirror.clone(),
        packages,
        initramfs_modules: board.initramfs_modules.clone(),
        verity: config.verity,
        luks: config.data_encryption.is_some(),
    };
    let ids = Ids::derive(&config.seed, board.partition_table == PartitionTable::Mbr);
    let slot = if config.verity {
        "auto (root size + hash tree + 25%, at least +64 MiB)"
    } else {
        "auto (root size + 25%, at least +64 MiB)"
    }
    .to_string();
    let data = match config.size {
        ImageSize::Auto => format!(
            "{} (grows to the medium on first boot)",
            board.partitions.data
        ),
        ImageSize::Fixed(_) => "rest of the image (grows to the medium on first boot)".into(),
    };
    let partitions = layout::PARTITIONS
        .iter()
        .map(|p| {
            let (size, part_uuid, what) = match p.role {
                layout::Role::Boot => (
                    board.partitions.boot.to_string(),
                    &ids.boot_partuuid,
                    match board.firmware {
                        Firmware::Uefi => "boot (ESP)",
                        Firmware::Rpi => "boot (Pi firmware)",
                    },
                ),
                layout::Role::RootA => (slot.clone(), &ids.root_a_partuuid, "root, slot A"),
                layout::Role::RootB => {
                    (slot.clone(), &ids.root_b_partuuid, "root, slot B (updates)")
                }
                layout::Role::Data => (data.clone(), &ids.data_partuuid, "/var, /etc upper layer"),
            };
            PartitionPlan {
                number: p.number,
                label: p.label,
                fs: p.fs,
                size,
                part_uuid: part_uuid.clone(),
                role: what,
            }
        })
        .collect();
    let k3s = config.k3s.as_ref().map(|k| k3s_plan(k, board.arch, bundle));
    let name = format!("{}-{}", config.name, board.name);
    let mut outputs = vec![format!("{name}.img")];
    if let Some(ext) = config.compression.extension() {
        outputs.push(format!("{name}.img.{ext}"));
    }
    outputs.extend([
        format!("{name}.img.bmap"),
        "manifest.json".into(),
        "SHA256SUMS".into(),
    ]);
    Plan {
        name: config.name.clone(),
        board: board.name.clone(),
        arch: board.arch,
        config_source: config.source.clone(),
        seed: config.seed.clone(),
        base,
        kernel_cmdline: kernel_cmdline(config, &ids, None),
        ids,
        partition_table: format!("{:?}", board.partition_table).to_lowercase(),
        image_size: config.size.to_string(),
        partitions,
        compression: format!("{:?}", config.compression).to_lowercase(),
        hostname_pattern: config.hostname_pattern.clone(),
        users: config
            .users
            .iter()
            .map(|u| {
                let n = u.ssh_keys.len();
                format!("{} ({n} key{})", u.name, if n == 1 { "" } else { "s" })
            })
            .collect(),
        overlays: config
            .overlays
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        boot: boot_plan(board, config.secure_boot.as_ref()),
        k3s: k3s.as_ref().map(|(p, _)| p.clone()),
        selinux: config.selinux.as_ref().map(|se| SelinuxPlan {
            mode: format!("{:?}", se.mode).to_lowercase(),
            modules: std::iter::once(crate::config::selinux::OWN_MODULE.to_string())
                .chain(se.modules.iter().map(|m| {
                    m.file_stem()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                }))
                .collect(),
        }),
        verity: config.verity,
        secure_boot: match &config.secure_boot {
            None => "not signed".to_string(),
            Some(sb) => format!(
                "signed (systemd-boot and a UKI per slot, db key {}; enroll {})",
                sb.keys.file("db.key").display(),
                sb.enroll.as_str()
            ),
        },
        data_encryption: data_encryption(config.data_encryption.as_ref()),
        files: {
            let mut files = root_files(
                k3s.as_ref().map(|(_, f)| f.as_slice()),
                config.update_repository.as_ref(),
            );
            if config.data_encryption.is_some() {
                files.extend([
                    crate::luks::CONF.to_string(),
                    crate::luks::PUBLIC_KEY.to_string(),
                ]);
            }
            files
        },
        signing_key_file: edgeimg_contract::update::TRUSTED_KEY_PATH
            .trim_start_matches('/')
            .to_string(),
        outputs,
    }
}

/// The data partition's encryption as `plan` and `inspect` say it.
pub fn data_encryption(e: Option<&crate::config::data::DataEncryption>) -> String {
    match e {
        None => "none (plain ext4)".into(),
        Some(e) => format!(
            "tpm2: LUKS2 made on the device's first boot, key sealed to its TPM2 (PCR 7); without a TPM2: {}; recovery key wrapped to {}",
            e.no_tpm.as_str(),
            e.recovery_public_key.display()
        ),
    }
}

/// The boot partition's files, as `boot::uefi` and `boot::rpi` name them.
fn boot_plan(board: &Board, secure_boot: Option<&crate::config::SecureBoot>) -> BootPlan {
    match (board.firmware, &board.rpi) {
        (Firmware::Rpi, Some(rpi)) => BootPlan {
            firmware: board.firmware.describe(),
            files: crate::boot::rpi::planned_files(rpi),
        },
        _ => BootPlan {
            firmware: board.firmware.describe(),
            files: crate::boot::uefi::planned_files(board.rust_arch(), secure_boot),
        },
    }
}

/// The K3s plan and the root files K3s adds. The bundle's manifest is read
/// as the build reads it (`--bundle DIR`'s own, else the config's name);
/// when it cannot be, version and air-gap file stay unknown and the build
/// will say why.
fn k3s_plan(
    k: &crate::config::k3s::K3sConfig,
    arch: Arch,
    bundle_dir: Option<&Path>,
) -> (K3sPlan, Vec<String>) {
    let manifest = crate::bundle::Manifest::for_build(&k.bundle, bundle_dir).ok();
    let airgap = manifest.as_ref().and_then(|m| {
        m.arches
            .get(&arch)?
            .iter()
            .find(|a| a.role == crate::bundle::Role::AirgapImages)
            .map(|a| a.file.clone())
    });
    let preloaded: Vec<String> = k
        .images
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let files = crate::stage::k3s::planned(
        k.registries_yaml.is_some(),
        k.buildkit,
        airgap.as_deref(),
        &preloaded,
    );
    let plan = K3sPlan {
        bundle: manifest
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| k.bundle.clone()),
        version: manifest.as_ref().map(|m| m.k3s_version.clone()),
        stand_in: manifest
            .as_ref()
            .map(|m| m.description.contains(crate::k3s_inputs::STAND_IN_LABEL)),
        role: k.settings.role.as_str().to_string(),
        cluster_init: k.settings.cluster_init,
        nerdctl: true,
        buildkit: k.buildkit,
        preloaded_images: k.images.iter().map(|p| p.display().to_string()).collect(),
        disabled: k.settings.disable.clone(),
    };
    (plan, files)
}

/// Every root file the build reports placing, in its order: the system
/// step's, the version floor, K3s', and the update stamps (which an overlay
/// replacing an input of ldconfig, sysusers, hwdb or the journal catalog
/// leaves out: the build says so).
fn root_files(
    k3s: Option<&[String]>,
    repository: Option<&crate::config::UpdateRepository>,
) -> Vec<String> {
    let mut v = crate::stage::system::planned();
    if let Some(r) = repository {
        v.push(edgeimg_contract::update::REPOSITORY_PATH[1..].to_string());
        v.push(edgeimg_contract::update::TRUSTED_ROOT_PATH[1..].to_string());
        if r.ca_certificates.is_some() {
            v.push(edgeimg_contract::update::CA_CERTIFICATES_PATH[1..].to_string());
        }
        if r.window.is_some() {
            v.push(edgeimg_contract::update::POLICY_PATH[1..].to_string());
        }
    }
    v.push(
        edgeimg_contract::update::GENERATION_PATH
            .trim_start_matches('/')
            .to_string(),
    );
    v.extend(k3s.unwrap_or_default().iter().cloned());
    v.extend(
        crate::stage::update_stamps::STAMPS
            .iter()
            .map(|s| s.to_string()),
    );
    v
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "image      {} for board {} ({})",
            self.name, self.board, self.arch
        )?;
        writeln!(f, "config     {}", self.config_source)?;
        writeln!(f, "seed       {}", self.seed)?;
        writeln!(
            f,
            "base       Debian {} {} from {}",
            self.base.suite, self.base.arch, self.base.mirror
        )?;
        writeln!(f, "packages   {}", self.base.packages.join(" "))?;
        match &self.ids.mbr_disk_id {
            Some(id) => writeln!(
                f,
                "disk       {} table, size {}, disk id {id:08x}",
                self.partition_table, self.image_size
            )?,
            None => writeln!(
                f,
                "disk       {} table, size {}, disk GUID {}",
                self.partition_table, self.image_size, self.ids.disk_guid
            )?,
        }
        for p in &self.partitions {
            writeln!(
                f,
                "  {} {:<15} {:<6} {:<44} {}  {}",
                p.number, p.label, p.fs, p.size, p.part_uuid, p.role
            )?;
        }
        writeln!(f, "boot       {}", self.boot.firmware)?;
        for x in &self.boot.files {
            writeln!(f, "  {x}")?;
        }
        writeln!(f, "cmdline    {}", self.kernel_cmdline)?;
        writeln!(
            f,
            "verity     {}",
            if self.verity {
                "on (root opened through dm-verity)"
            } else {
                "off"
            }
        )?;
        writeln!(f, "secure boot {}", self.secure_boot)?;
        writeln!(f, "data enc   {}", self.data_encryption)?;
        match &self.selinux {
            Some(se) => writeln!(
                f,
                "selinux    {} (modules: {})",
                se.mode,
                se.modules.join(", ")
            )?,
            None => writeln!(f, "selinux    off")?,
        }
        match &self.k3s {
            Some(k) => write!(f, "{k}")?,
            None => writeln!(f, "k3s        off (a plain appliance)")?,
        }
        writeln!(f, "hostname   {}", self.hostname_pattern)?;
        writeln!(
            f,
            "users      {}",
            if self.users.is_empty() {
                "(none)".into()
            } else {
                self.users.join(", ")
            }
        )?;
        writeln!(
            f,
            "overlays   {}",
            if self.overlays.is_empty() {
                "(none)".into()
            } else {
                self.overlays.join(", ")
            }
        )?;
        writeln!(f, "files      placed in the root by edgeimg")?;
        for x in &self.files {
            writeln!(f, "  /{x}")?;
        }
        writeln!(f, "  /{} (with --signing-key)", self.signing_key_file)?;
        writeln!(f, "outputs    {}", self.outputs.join(", "))
    }
}

impl std::fmt::Display for K3sPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.version.as_deref().unwrap_or("version unknown");
        let kind = match self.stand_in {
            Some(true) => " — STAND-IN bundle for tests, not K3s",
            Some(false) => "",
            None => " (manifest not found: the build will say why)",
        };
        writeln!(f, "k3s        bundle {} ({version}){kind}", self.bundle)?;
        writeln!(
            f,
            "           role {}{}; nerdctl{}",
            self.role,
            if self.cluster_init {
                " (cluster-init)"
            } else {
                ""
            },
            if self.buildkit { ", BuildKit" } else { "" }
        )?;
        if !self.disabled.is_empty() {
            writeln!(f, "           disabled: {}", self.disabled.join(", "))?;
        }
        if self.preloaded_images.is_empty() {
            writeln!(f, "           preloaded images: none")
        } else {
            writeln!(
                f,
                "           preloaded images: {}",
                self.preloaded_images.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, board: &str) -> Plan {
        let cfg =
            crate::config::parse("edgeimg.toml", text, std::path::Path::new("."), Some(board))
                .unwrap();
        make(&cfg, None)
    }

    #[test]
    fn each_firmware_gets_its_own_boot_files() {
        let pi = plan("[image]\nname = \"x\"\n", "rpi4");
        assert_eq!(pi.boot.firmware, Firmware::Rpi.describe());
        assert!(pi.boot.files.iter().any(|f| f == "start4*.elf"));
        assert!(pi.boot.files.iter().any(|f| f == "cmdline.txt"));
        assert!(!pi.boot.files.iter().any(|f| f.contains("EFI")));
        assert_eq!(pi.partitions[0].role, "boot (Pi firmware)");
        let text = pi.to_string();
        // (systemd-boot-efi is among rpi4's packages, not its boot files.)
        assert!(!text.contains("ESP") && !text.contains("EFI/"), "{text}");

        let pc = plan("[image]\nname = \"x\"\n", "x86_64");
        assert!(pc.boot.files.iter().any(|f| f == "EFI/BOOT/BOOTX64.EFI"));
        assert!(
            pc.boot
                .files
                .iter()
                .any(|f| f == "loader/entries/edgeimg-1-a.conf")
        );
        assert_eq!(pc.partitions[0].role, "boot (ESP)");
        let arm = plan("[image]\nname = \"x\"\n", "arm64");
        assert!(arm.boot.files.iter().any(|f| f == "EFI/BOOT/BOOTAA64.EFI"));
    }

    #[test]
    fn each_slot_has_its_own_command_line() {
        let cfg = crate::config::parse(
            "edgeimg.toml",
            "[image]\nname = \"x\"\nverity = true\n",
            std::path::Path::new("."),
            Some("x86_64"),
        )
        .unwrap();
        let ids = make(&cfg, None).ids;
        let a = slot_cmdline(&cfg, &ids, Some(("ab12", 8192)), Slot::A);
        let b = slot_cmdline(&cfg, &ids, Some(("ab12", 8192)), Slot::B);
        assert_eq!(a, kernel_cmdline(&cfg, &ids, Some(("ab12", 8192))));
        let dev = |slot: &str| format!("edgeimg.verity.dev=PARTUUID={slot}");
        assert!(
            a.contains(&dev(&ids.root_a_partuuid)) && a.contains("edgeimg.slot=a"),
            "{a}"
        );
        assert!(
            b.contains(&dev(&ids.root_b_partuuid)) && b.contains("edgeimg.slot=b"),
            "{b}"
        );
        // The same root (hash and offset) and the same data partition.
        assert_eq!(
            a.replace(&ids.root_a_partuuid, "P")
                .replace("slot=a", "slot=S"),
            b.replace(&ids.root_b_partuuid, "P")
                .replace("slot=b", "slot=S")
        );
    }

    #[test]
    fn k3s_selinux_and_verity_show_in_the_plan() {
        let off = plan("[image]\nname = \"x\"\n[k3s]\nenabled = false\n", "x86_64");
        assert!(off.k3s.is_none());
        assert!(!off.files.iter().any(|f| f.contains("k3s")));
        assert!(off.to_string().contains("k3s        off"));

        let on = plan(
            "[image]\nname = \"x\"\nverity = true\n[k3s]\nrole = \"agent\"\nserver = \"https://10.0.0.1:6443\"\nbuildkit = true\n[selinux]\nmode = \"enforcing\"\n",
            "arm64",
        );
        let k = on.k3s.as_ref().unwrap();
        assert_eq!(k.bundle, crate::config::k3s::DEFAULT_BUNDLE);
        assert_eq!(k.stand_in, Some(false));
        assert_eq!(k.role, "agent");
        assert!(k.buildkit && k.nerdctl);
        for f in [
            "usr/local/bin/k3s",
            "usr/local/bin/buildkitd",
            "usr/lib/edgeimg/k3s-images/k3s-airgap-images-arm64.tar.zst",
        ] {
            assert!(on.files.iter().any(|x| x == f), "{f}: {:?}", on.files);
        }
        let text = on.to_string();
        for line in [
            "k3s        bundle k3s-v1.36.4+k3s1 (v1.36.4+k3s1)",
            "role agent; nerdctl, BuildKit",
            "selinux    enforcing (modules: edgeimg_k3s)",
            "verity     on",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
    }

    /// `[data] encryption` shows in the plan: its line, the packages and
    /// initramfs modules the device's first boot needs, the root's files.
    #[test]
    fn data_encryption_shows_in_the_plan() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("r.pub"),
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let parse =
            |text: &str| crate::config::parse("edgeimg.toml", text, d.path(), None).unwrap();
        let off = make(
            &parse("[image]\nname = \"x\"\n[k3s]\nenabled = false\n"),
            None,
        );
        assert!(off.to_string().contains("data enc   none (plain ext4)"));
        assert!(!off.base.luks);
        let on = make(
            &parse(
                "[image]\nname = \"x\"\n[k3s]\nenabled = false\n[data]\nencryption = \"tpm2\"\nrecovery_public_key = \"r.pub\"\n",
            ),
            None,
        );
        assert!(on.base.luks);
        assert!(
            on.to_string()
                .contains("data enc   tpm2: LUKS2 made on the device's first boot")
        );
        for p in crate::luks::PACKAGES {
            assert!(on.base.packages.iter().any(|x| x == p), "{p}");
        }
        assert!(
            on.base
                .initramfs_modules
                .iter()
                .any(|m| m == "algif_skcipher")
        );
        for f in [crate::luks::CONF, crate::luks::PUBLIC_KEY] {
            assert!(on.files.iter().any(|x| x == f), "{f}");
        }
        // Only the encryption changes the base's key.
        assert_ne!(on.base.key(), off.base.key());
    }
}
