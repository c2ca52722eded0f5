//! The resolved plan of a build: every package, identifier, partition and file,
//! computed from the configuration alone (pure data; `edgeimg plan` prints it).

use serde::Serialize;

use crate::base::{BaseSpec, REQUIRED_PACKAGES};
use crate::config::board::PartitionTable;
use crate::config::{Config, ImageSize};
use crate::disk::layout;
use crate::ids::{self, Uuid};

/// Identifiers, all derived from the seed.
#[derive(Debug, Clone, Serialize)]
pub struct Ids {
    pub disk_guid: Uuid,
    /// MBR disk signature (MBR boards only), as 8 hex digits.
    pub mbr_disk_id: Option<String>,
    pub boot_partuuid: String,
    pub root_a_partuuid: String,
    pub root_b_partuuid: String,
    pub data_partuuid: String,
    pub root_a_fs_uuid: Uuid,
    pub data_fs_uuid: Uuid,
    pub data_hash_seed: Uuid,
    pub boot_volume_id: String,
}

impl Ids {
    pub fn derive(seed: &str, table: PartitionTable) -> Ids {
        let disk_id = (table == PartitionTable::Mbr).then(|| ids::mbr_disk_id(seed));
        let part = |n: usize| layout::partuuid(seed, disk_id, n as u32 + 1, layout::LABELS[n]);
        Ids {
            disk_guid: Uuid::derive(seed, "disk"),
            mbr_disk_id: disk_id.map(|d| format!("{d:08x}")),
            boot_partuuid: part(0),
            root_a_partuuid: part(1),
            root_b_partuuid: part(2),
            data_partuuid: part(3),
            root_a_fs_uuid: Uuid::derive(seed, "fs/root-a"),
            data_fs_uuid: Uuid::derive(seed, "fs/data"),
            data_hash_seed: Uuid::derive(seed, "fs/data/hash-seed"),
            boot_volume_id: format!("{:08X}", ids::fat_volume_id(seed)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionPlan {
    pub number: u32,
    pub label: &'static str,
    pub fs: &'static str,
    pub size: String,
    pub part_uuid: String,
    pub role: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub board: String,
    pub arch: String,
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
    /// Files edgeimg itself places into the root (overlays come on top).
    pub files: Vec<String>,
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
    let root = match (config.verity, verity) {
        (false, _) => vec![format!("root=PARTUUID={}", ids.root_a_partuuid)],
        (true, Some((hash, offset))) => {
            crate::verity::cmdline_params(&ids.root_a_partuuid, hash, &offset.to_string())
        }
        (true, None) => {
            crate::verity::cmdline_params(&ids.root_a_partuuid, "<root-hash>", "<bytes>")
        }
    };
    let mut parts = root;
    parts.extend([
        "rootfstype=erofs".into(),
        "ro".into(),
        format!("edgeimg.data=PARTUUID={}", ids.data_partuuid),
        "edgeimg.slot=a".into(),
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

pub fn make(config: &Config) -> Plan {
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
    packages.sort();
    packages.dedup();
    let base = BaseSpec {
        suite: config.suite.clone(),
        arch: board.arch.clone(),
        mirror: config.mirror.clone(),
        packages,
        initramfs_modules: board.initramfs_modules.clone(),
        verity: config.verity,
    };
    let ids = Ids::derive(&config.seed, board.partition_table);
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
        .enumerate()
        .map(|(i, &(label, role, fs))| {
            let (size, part_uuid, what) = match role {
                layout::Role::Boot => (
                    board.partitions.boot.to_string(),
                    &ids.boot_partuuid,
                    "boot (ESP)",
                ),
                layout::Role::RootA => (slot.clone(), &ids.root_a_partuuid, "root, slot A"),
                layout::Role::RootB => {
                    (slot.clone(), &ids.root_b_partuuid, "root, slot B (updates)")
                }
                layout::Role::Data => (data.clone(), &ids.data_partuuid, "/var, /etc upper layer"),
            };
            PartitionPlan {
                number: i as u32 + 1,
                label,
                fs,
                size,
                part_uuid: part_uuid.clone(),
                role: what,
            }
        })
        .collect();
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
        arch: board.arch.clone(),
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
            .map(|u| format!("{} ({} keys)", u.name, u.ssh_keys.len()))
            .collect(),
        overlays: config
            .overlays
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        files: vec![
            "/usr/lib/edgeimg/edgeimg-agent".into(),
            "/usr/lib/edgeimg/image.json".into(),
            edgeimg_agent::update::GENERATION_PATH.into(),
            "/usr/lib/systemd/system/edgeimg-firstboot.service".into(),
            "/usr/lib/systemd/system/edgeimg-ready.service".into(),
            "/etc/fstab".into(),
            "/etc/systemd/network/80-edgeimg-dhcp.network".into(),
            edgeimg_agent::sshkeys::SSHD_DROP_IN.into(),
            "boot: EFI/BOOT, loader/, edgeimg/a/{vmlinuz,initrd.img}, edgeimg/node.toml.example"
                .into(),
        ],
        outputs,
    }
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
                "disk       {} table, size {}, disk id {id}",
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
        writeln!(f, "cmdline    {}", self.kernel_cmdline)?;
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
        writeln!(f, "files")?;
        for x in &self.files {
            writeln!(f, "  {x}")?;
        }
        writeln!(f, "outputs    {}", self.outputs.join(", "))
    }
}
