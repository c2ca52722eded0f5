//! VM test: the x86_64 image boots through the real path (OVMF -> systemd-boot
//! -> kernel -> initramfs -> systemd) on a disk larger than the image, twice,
//! as a single K3s server; then a second disk of the SAME image, given an
//! agent node.toml with `edgeimg flash --node`, boots once as a K3s agent.

#[test]
fn x86_64_boots_immutable_and_first_boot_runs_once() {
    let _guard = edgeimg_qemu_tests::exclusive();
    let img = edgeimg_qemu_tests::SelfcheckImage::build("x86_64");
    let first = edgeimg_qemu_tests::check_server_boots(&img);
    // The agent's server URL names the server VM (the VMs are not networked).
    edgeimg_qemu_tests::check_agent_disk(&img, first["hostname"].as_str().unwrap());
}
