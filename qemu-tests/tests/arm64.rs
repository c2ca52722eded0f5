//! VM test: the generic arm64 image, cross-built on this host, boots under
//! `-M virt` through AAVMF -> systemd-boot -> kernel -> initramfs, twice.

#[test]
fn arm64_boots_immutable_and_first_boot_runs_once() {
    edgeimg_qemu_tests::check_two_boots("arm64");
}
