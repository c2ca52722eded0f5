//! VM test: the x86_64 image boots through the real path (OVMF -> systemd-boot
//! -> kernel -> initramfs -> systemd) on a disk larger than the image, twice.

#[test]
fn x86_64_boots_immutable_and_first_boot_runs_once() {
    edgeimg_qemu_tests::check_two_boots("x86_64");
}
