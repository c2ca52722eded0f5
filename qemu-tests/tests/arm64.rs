//! VM test: the generic arm64 image, cross-built on this host, signed for UEFI
//! Secure Boot, boots under `-M virt` through AAVMF (Debian's Secure Boot
//! capable build, no SMM) -> signed systemd-boot -> signed UKI -> kernel ->
//! initramfs -> the root through dm-verity (the default).
//!
//! - Boot 0: AAVMF in setup mode (an empty variable store); systemd-boot
//!   enrolls the image's keys (`enroll` left at `if-safe`) and resets the
//!   machine, before any kernel runs.
//! - Boots 1 and 2: the firmware enforces Secure Boot (the guest reads
//!   SecureBoot=1 from the firmware's own variable), and the usual two-boot
//!   checks hold (first boot runs once, /etc kept, K3s up).
//!
//! Boots 1 and 2 have a software TPM2 (swtpm, one state for both: one
//! machine's TPM) on the only TPM device QEMU's virt machine has,
//! `tpm-tis-device`. The firmware describes it to the kernel (ACPI
//! `MSFT0101`), and the kernel has no TPM: Debian's arm64 kernel has no
//! driver for a TIS TPM (CONFIG_TCG_TIS unset), so this image cannot be
//! built with `[data] encryption = "tpm2"` and tested sealed here
//! (docs/trusted-boot.md, "arm64" under "The data partition"). The test
//! checks that this is still so: once a kernel drives it, the data
//! partition's seal belongs in this test.
//!
//! Its root is lzma-compressed (`[image] root_compression = "lzma"`), the
//! option the other VM tests do not cover (they use the default lz4hc): the
//! trixie arm64 kernel (CONFIG_EROFS_FS_ZIP_LZMA=y) must mount it and run
//! everything from it.

use edgeimg_qemu_tests::{SelfcheckImage, check_server_boots, exclusive};

#[test]
fn arm64_enrolls_secure_boot_keys_boots_signed_and_first_boot_runs_once() {
    let _guard = exclusive();
    let mut img = SelfcheckImage::build_secure_boot("arm64", "root_compression = \"lzma\"");
    img.tpm_state = Some(img.dir.path().join("tpm"));
    let sb = img.root_superblock();
    assert!(
        sb.lines()
            .any(|l| l.starts_with("Filesystem compr_algs:") && l.trim_end().ends_with(" lzma")),
        "the arm64 test image's root is not lzma:\n{sb}"
    );
    let manifest =
        edgeimg::manifest::Manifest::read(&img.dir.path().join("manifest.json")).unwrap();
    let signed = manifest
        .secure_boot
        .expect("the manifest records Secure Boot");
    assert!(signed.signed, "{signed:?}");
    // check_server_boots enrolls first (the vars are set) and asserts the
    // firmware reports Secure Boot on.
    let first = check_server_boots(&img);
    assert_eq!(
        first["tpm_acpi"], 1,
        "the firmware does not describe QEMU's TPM to the guest (ACPI MSFT0101): {first}"
    );
    assert_eq!(
        first["tpm"], "none",
        "the arm64 kernel now drives QEMU's TIS TPM: build this test's image with \
         [data] encryption = \"tpm2\" and assert the seal (docs/trusted-boot.md, \"arm64\"): {first}"
    );
}
