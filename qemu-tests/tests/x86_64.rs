//! VM test: the x86_64 image boots through the real path (OVMF -> systemd-boot
//! -> kernel -> initramfs -> systemd) on a disk larger than the image, twice,
//! as a single K3s server; then a second disk of the SAME image, given an
//! agent node.toml with `edgeimg flash --node`, boots once as a K3s agent.
//!
//! The image seals its data partition to a TPM2 (`[data] encryption =
//! "tpm2"`) with `no_tpm = "plain"`, and none of these VMs has a TPM2: each
//! of the three boots proves the fallback (the console says the data
//! partition stays unencrypted, /var is the plain ext4 partition itself, the
//! node gets ready). The TPM2 path is proven in x86_64_secure_boot.rs.

use std::process::Command;

#[test]
fn x86_64_boots_immutable_and_first_boot_runs_once() {
    let _guard = edgeimg_qemu_tests::exclusive();
    let dir = tempfile::tempdir().unwrap();
    // The operator's recovery key: required with encryption, never used here.
    let key = dir.path().join("recovery.key");
    let public = dir.path().join("recovery.pub");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        vec!["pkey", "-pubout", "-in", key.to_str().unwrap(), "-out"],
    ] {
        let path = if args[0] == "genpkey" { &key } else { &public };
        let o = Command::new("openssl")
            .args(&args)
            .arg(path)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {o:?}");
    }
    let sections = format!(
        "\n[data]\nencryption = \"tpm2\"\nno_tpm = \"plain\"\nrecovery_public_key = {:?}\n",
        public.display().to_string()
    );
    let img = edgeimg_qemu_tests::SelfcheckImage::build_with_sections(dir, "x86_64", &sections);
    assert_eq!(img.data_unlock_without_tpm(), "plain");
    let first = edgeimg_qemu_tests::check_server_boots(&img);
    // The agent's server URL names the server VM (the VMs are not networked).
    edgeimg_qemu_tests::check_agent_disk(&img, first["hostname"].as_str().unwrap());
}
