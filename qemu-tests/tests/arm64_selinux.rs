//! arm64 SELinux image: the policy is arch-independent, so an arm64 image must
//! carry byte-for-byte the module an x86_64 one does (the one this host
//! compiles from selinux-policies/edgeimg-k3s).
//!
//! Ignored by default: an arm64 base with the SELinux packages is a fresh
//! qemu-user bootstrap (11-15+ minutes) that CI's time budget does not hold.
//! Run it with `cargo test -p edgeimg-qemu-tests --test arm64_selinux -- --ignored`.
//! It builds (does not boot) the image: the module installed in its policy
//! store (read from the data partition) and the manifest's record must both
//! equal the host-compiled module, which x86_64_selinux asserts for x86_64.

use edgeimg_qemu_tests::*;

#[test]
#[ignore = "bootstraps an arm64 SELinux base through qemu-user (11-15+ min)"]
fn arm64_selinux_image_carries_the_same_module() {
    // No VM lock: nothing boots.
    let out = tempfile::tempdir().unwrap();
    let config = out.path().join("edgeimg.toml");
    std::fs::write(
        &config,
        "[image]\nname = \"searm\"\nboard = \"arm64\"\n\n[k3s]\nenabled = false\n\n[selinux]\nmode = \"enforcing\"\n",
    )
    .unwrap();
    let report = build(&config, Some("arm64"), out.path(), None)
        .unwrap_or_else(|e| panic!("build the arm64 SELinux image: {e:#}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["arch"], "arm64");
    let own = edgeimg::selinux::compile_own(tempfile::tempdir().unwrap().path()).unwrap();
    let installed = installed_module_sha256(&report.image, &manifest, "edgeimg_k3s").unwrap();
    assert_eq!(installed, own.sha256, "arm64 image's installed module");
    assert_eq!(
        manifest["inputs"]["selinux"]["modules"][0]["sha256"], own.sha256,
        "{manifest}"
    );
    assert!(
        manifest["kernel_cmdline"]
            .as_str()
            .unwrap()
            .contains("security=selinux selinux=1 enforcing=1"),
        "{manifest}"
    );
}
