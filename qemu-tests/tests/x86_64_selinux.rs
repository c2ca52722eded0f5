//! VM tests: SELinux images (x86_64, the stand-in K3s bundle), one #[test]
//! per mode, each one build (before the VM lock, one cached base).
//! Permissive (one boot): every denial the policy would cause is logged, and
//! there must be none at all (the system's own services included).
//! Enforcing (two boots of one medium: first boot, then a plain one):
//! cluster ready, `getenforce`, `semodule -l`, labels from edgeimg_k3s.fc on
//! the EROFS root and the data partition, K3s and the stand-in's real
//! containerd in container_engine_t, the agent in edgeimg_agent_t, and no AVC
//! denial at all (the agent, K3s, containerd, runc, the preloaded container,
//! systemd's services) nor any audit record lost in either boot, counted by
//! the guest (journal) and by the test (serial console).

use edgeimg_qemu_tests::selinux::SelinuxImage;
use edgeimg_qemu_tests::*;

/// Permissive: nothing is blocked, so every denial the policy would cause is
/// logged (on the console, and as EDGEIMG-AVC lines from the self-check).
#[test]
fn x86_64_selinux_permissive() {
    let img = SelinuxImage::build("x86_64", "permissive");
    let _guard = exclusive();
    let (c, ready) = img.boot(1);
    assert!(ready.contains("edgeimg: cluster ready"), "{ready}");
    assert_eq!(c["selinux"]["getenforce"], "Permissive", "{c}");
    assert_eq!(c["selinux"]["module"], 1, "{c}");
    img.assert_no_denial(1, &c);
}

/// Enforcing: the node and the stand-in's cluster come up, with the labels,
/// domains and no denials the module promises, on the first boot and on the
/// next (the data partition as the first boot left it).
#[test]
fn x86_64_selinux_enforcing() {
    let img = SelinuxImage::build("x86_64", "enforcing");
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
    assert!(
        img.manifest["kernel_cmdline"]
            .as_str()
            .unwrap()
            .contains("security=selinux selinux=1 enforcing=1"),
        "{}",
        img.manifest
    );
}
