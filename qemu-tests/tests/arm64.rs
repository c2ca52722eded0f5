//! VM test: the generic arm64 image, cross-built on this host, boots under
//! `-M virt` through AAVMF -> systemd-boot -> kernel -> initramfs, twice.
//! Its root is lzma-compressed (`[image] root_compression = "lzma"`), the
//! option the other VM tests do not cover (they use the default lz4hc): the
//! trixie arm64 kernel (CONFIG_EROFS_FS_ZIP_LZMA=y) must mount it and run
//! everything from it.

use edgeimg_qemu_tests::{SelfcheckImage, check_server_boots, exclusive};

#[test]
fn arm64_boots_immutable_and_first_boot_runs_once() {
    let _guard = exclusive();
    let img = SelfcheckImage::build_with("arm64", "root_compression = \"lzma\"");
    let sb = img.root_superblock();
    assert!(
        sb.lines()
            .any(|l| l.starts_with("Filesystem compr_algs:") && l.trim_end().ends_with(" lzma")),
        "the arm64 test image's root is not lzma:\n{sb}"
    );
    check_server_boots(&img);
}
