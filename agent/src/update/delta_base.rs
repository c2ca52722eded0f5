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

    fn sha(b: &[u8]) -> String {
        use sha2::Digest;
        edgeimg_contract::hex::hex(&sha2::Sha256::digest(b))
    }

    /// A delta whose every chunk is a copy of one of `payloads` (the base
    /// release), in order, and the output it makes: what a delta of
    /// unchanged payloads is, without a zstd encoder.
    fn copy_delta(payloads: &[(&str, &[u8])]) -> (Vec<u8>, Vec<u8>) {
        let mut target = vec![];
        let mut base = vec![];
        let mut chunks = vec![];
        for (i, (name, bytes)) in payloads.iter().enumerate() {
            base.push(serde_json::json!({"name": name, "size": bytes.len(), "sha256": sha(bytes)}));
            chunks.push(
                serde_json::json!({"size": bytes.len(), "frame": 0, "sha256": sha(bytes),
                "from": i, "ref_offset": 0, "ref_size": bytes.len()}),
            );
            target.extend_from_slice(bytes);
        }
        let json = serde_json::to_vec(&serde_json::json!({"base": base,
            "target_size": target.len(), "target_sha256": sha(&target), "chunks": chunks}))
        .unwrap();
        let mut d = b"EDGEDLT\0".to_vec();
        d.extend_from_slice(&2u32.to_le_bytes());
        d.extend_from_slice(&(json.len() as u32).to_le_bytes());
        d.extend_from_slice(&json);
        (d, target)
    }

    /// A device running slot B: its root image, its boot files where
    /// `update apply` put them, slot A's (other bytes) beside them.
    fn device(pi: bool, files: &[(&str, &[u8])]) -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path().join("root"));
        let w = |p: &str, s: &[u8]| {
            let p = root.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(
            crate::schema::IMAGE_CONFIG_PATH,
            br#"{"name":"edge","board":"x86_64","arch":"amd64","edgeimg_version":"0","hostname_pattern":"e"}"#,
        );
        w("/proc/cmdline", b"root=PARTUUID=pu-3 ro edgeimg.slot=b\n");
        if pi {
            w("/boot/efi/config.txt", b"os_prefix=b/\n");
        } else {
            w("/boot/efi/loader/loader.conf", b"default edgeimg-*\n");
        }
        for (p, b) in files {
            w(p, b);
        }
        (d, root)
    }

    fn run_delta(root: &Root, delta: &[u8], out: &Path) -> Result<()> {
        let dp = root.path("/var/tmp/u.delta");
        std::fs::create_dir_all(dp.parent().unwrap()).unwrap();
        std::fs::write(&dp, delta).unwrap();
        let base = root.path("/dev/vda3");
        crate::update::delta_cmd::run(
            root,
            &[
                base.to_str().unwrap(),
                dp.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        )
    }

    fn nothing_at(out: &Path) {
        let mut part = out.as_os_str().to_owned();
        part.push(".part");
        assert!(
            !out.exists() && !Path::new(&part).exists(),
            "output left at {out:?}"
        );
    }

    #[test]
    fn the_running_slots_boot_files_are_the_base_and_a_flipped_byte_is_refused() {
        let kernel = vec![0x4b; 100_000];
        let initrd = vec![0x49; 70_000];
        let (d, root) = device(
            false,
            &[
                ("/dev/vda3", &[0x52; 8192]),
                ("/boot/efi/edgeimg/b/vmlinuz", &kernel),
                ("/boot/efi/edgeimg/b/initrd.img", &initrd),
                ("/boot/efi/edgeimg/a/vmlinuz", b"slot a's kernel"),
                ("/boot/efi/edgeimg/a/initrd.img", b"slot a's initrd"),
            ],
        );
        let (delta, target) =
            copy_delta(&[(ROOT, &[0x52; 8192]), (VMLINUZ, &kernel), (INITRD, &initrd)]);
        let out = d.path().join("u.update");
        run_delta(&root, &delta, &out).unwrap();
        assert!(std::fs::read(&out).unwrap() == target);
        std::fs::remove_file(&out).unwrap();

        // One byte of the running slot's kernel flipped: refused naming it.
        let k = root.path("/boot/efi/edgeimg/b/vmlinuz");
        let mut bad = kernel.clone();
        bad[54_321] ^= 1;
        std::fs::write(&k, &bad).unwrap();
        let e = run_delta(&root, &delta, &out).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{} is not the base's vmlinuz", k.display())),
            "{e}"
        );
        nothing_at(&out);
        // No initrd at all: the path it looked for is named.
        std::fs::write(&k, &kernel).unwrap();
        let i = root.path("/boot/efi/edgeimg/b/initrd.img");
        std::fs::remove_file(&i).unwrap();
        let e = run_delta(&root, &delta, &out).unwrap_err().to_string();
        assert!(e.contains(&i.display().to_string()), "{e}");
        nothing_at(&out);
    }

    #[test]
    fn on_a_pi_the_slots_os_files_and_the_shared_firmware_are_the_base() {
        let dtb = vec![0x44; 30_000];
        let firmware = vec![0x46; 50_000];
        let (d, root) = device(
            true,
            &[
                ("/dev/vda3", &[0x52; 4096]),
                ("/boot/efi/b/bcm2711-rpi-4-b.dtb", &dtb),
                ("/boot/efi/bcm2711-rpi-4-b.dtb", b"slot a's dtb"),
                ("/boot/efi/start4.elf", &firmware),
            ],
        );
        let (delta, target) = copy_delta(&[
            ("boot/bcm2711-rpi-4-b.dtb", &dtb),
            ("boot/start4.elf", &firmware),
        ]);
        let out = d.path().join("u.update");
        run_delta(&root, &delta, &out).unwrap();
        assert!(std::fs::read(&out).unwrap() == target);
        std::fs::remove_file(&out).unwrap();
        let mut bad = firmware.clone();
        bad[0] ^= 0x80;
        std::fs::write(root.path("/boot/efi/start4.elf"), &bad).unwrap();
        let e = run_delta(&root, &delta, &out).unwrap_err().to_string();
        assert!(
            e.contains("start4.elf is not the base's boot/start4.elf"),
            "{e}"
        );
        nothing_at(&out);
    }
}
