//! VM test: the Raspberry Pi 4 image under QEMU's raspi4b. QEMU cannot run the
//! Pi firmware, so the harness boots the kernel, initrd, DTB and cmdline.txt
//! from the card's own boot partition (DTB copy patched for QEMU), with the
//! card on the SD slot and the root found by PARTUUID, twice.

#[test]
fn rpi4_boots_immutable_and_first_boot_runs_once() {
    edgeimg_qemu_tests::check_two_boots("rpi4");
}
