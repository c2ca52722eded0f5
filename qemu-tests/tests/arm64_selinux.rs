//! VM test: an arm64 SELinux image in enforcing mode (the stand-in K3s
//! bundle), booted twice on one medium. The policy is arch-independent, so
//! the image carries byte-for-byte the module an x86_64 one does; on arm64
//! too the node comes up with the module's labels and domains and no AVC
//! denial at all, in the first boot and the next. Its base is the arm64
//! self-check base plus the SELinux packages: an incremental install on the
//! base the arm64 VM test bootstraps.

use edgeimg_qemu_tests::selinux::SelinuxImage;
use edgeimg_qemu_tests::*;

#[test]
fn arm64_selinux_enforcing() {
    let img = SelinuxImage::build("arm64", "enforcing");
    assert_eq!(img.manifest["arch"], "arm64");
    let _guard = exclusive();
    for n in [1, 2] {
        let (c, ready) = img.boot(n);
        assert!(
            ready.contains("edgeimg: cluster ready"),
            "boot {n}: {ready}"
        );
        assert_eq!(c["status"]["boots"], n, "{c}");
        img.assert_enforcing_labels_and_domains(&c);
        img.assert_no_denial(n, &c);
    }
}
