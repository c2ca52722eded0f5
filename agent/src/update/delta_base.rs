//! The base of a delta on a device: the release its running slot holds. The
//! root image is the running slot's partition (given on the command line);
//! every boot payload is where `update apply` (or the builder, for slot A)
//! put it for that slot: on systemd-boot boards `edgeimg/<slot>/vmlinuz`
//! and `initrd.img` on the ESP; on the Pi the slot's OS files in its
//! `os_prefix` directory and the firmware both slots share at the top level.

use crate::error::Result;
use crate::root::Root;
use crate::update::apply::{boot_partition, running_slot};
use crate::update::format::{BOOT_PREFIX, INITRD, ROOT, VMLINUZ};
use crate::update::rpi;
use edgeimg_contract::partition::{Slot, boot_files};
use edgeimg_contract::update::delta::{Base, Source};
use std::path::{Path, PathBuf};

pub struct RunningSlot {
    pub root_image: PathBuf,
    /// The mounted boot partition.
    pub esp: PathBuf,
    pub pi: bool,
    pub slot: Slot,
}

impl RunningSlot {
    /// This device's running slot, its root image at `root_image`.
    pub fn find(root: &Root, root_image: &Path) -> Result<RunningSlot> {
        let image = crate::config::load_image(root)?;
        let cmdline = crate::fsutil::read(&root.path("/proc/cmdline"))?;
        let slot = running_slot(&cmdline)?;
        let (esp, pi) = boot_partition(root, &image)?;
        Ok(RunningSlot {
            root_image: root_image.to_path_buf(),
            esp,
            pi,
            slot,
        })
    }

    /// Where the running slot keeps payload `name` (a plain name, checked
    /// by the delta's header).
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        if name == ROOT {
            return Ok(self.root_image.clone());
        }
        let rel = match (self.pi, name) {
            (false, VMLINUZ) => boot_files::kernel(self.slot),
            (false, INITRD) => boot_files::initrd(self.slot),
            (true, _) => match name.strip_prefix(BOOT_PREFIX) {
                Some(rel) if rpi::shared(rel) => rel.to_string(),
                Some(rel) => format!("{}{rel}", rpi::prefix(self.slot)),
                None => crate::bail!("a Raspberry Pi keeps no payload {name:?}"),
            },
            (false, _) => crate::bail!("a systemd-boot board keeps no payload {name:?}"),
        };
        Ok(self.esp.join(rel))
    }
}

impl Base for RunningSlot {
    fn open(&mut self, name: &str) -> Result<Source> {
        Source::file(&self.path(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_payloads_are_found_where_the_slot_keeps_them() {
        let s = |pi, slot| RunningSlot {
            root_image: "/dev/sda2".into(),
            esp: "/boot/efi".into(),
            pi,
            slot,
        };
        let p = |r: &RunningSlot, n: &str| r.path(n).unwrap().display().to_string();
        assert_eq!(p(&s(false, Slot::A), ROOT), "/dev/sda2");
        assert_eq!(
            p(&s(false, Slot::B), VMLINUZ),
            "/boot/efi/edgeimg/b/vmlinuz"
        );
        assert_eq!(
            p(&s(false, Slot::A), INITRD),
            "/boot/efi/edgeimg/a/initrd.img"
        );
        assert_eq!(p(&s(true, Slot::A), "boot/vmlinuz"), "/boot/efi/vmlinuz");
        assert_eq!(
            p(&s(true, Slot::B), "boot/overlays/x.dtbo"),
            "/boot/efi/b/overlays/x.dtbo"
        );
        // The firmware is shared: the top level whatever the slot.
        assert_eq!(
            p(&s(true, Slot::B), "boot/start4.elf"),
            "/boot/efi/start4.elf"
        );
        assert!(s(false, Slot::A).path("boot/vmlinuz").is_err());
        assert!(s(true, Slot::A).path("vmlinuz").is_err());
    }
}
