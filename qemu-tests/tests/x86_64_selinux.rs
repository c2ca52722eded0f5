//! VM tests: SELinux images (x86_64, the stand-in K3s bundle), one #[test]
//! per mode, each one build (before the VM lock, one cached base) and one
//! boot. Permissive: every denial the policy would cause is logged, and there
//! must be none at all (the system's own services included). Enforcing: cluster ready, `getenforce`, `semodule
//! -l`, labels from edgeimg_k3s.fc on the EROFS root and the data partition,
//! K3s and the stand-in's real containerd in container_engine_t, the agent in
//! edgeimg_agent_t, and no AVC denial at all (the agent, K3s, containerd,
//! runc, the preloaded container, systemd's services) nor any audit record
//! lost, counted by the guest (journal) and by the test (serial console).

use edgeimg_qemu_tests::*;

struct Built {
    out: tempfile::TempDir,
    image: std::path::PathBuf,
    manifest: serde_json::Value,
}

fn build_image(mode: &str) -> Built {
    let out = tempfile::tempdir().unwrap();
    let (bundle, _) = k3s_bundle("amd64", out.path()).expect("K3s bundle");
    let config = selinux_config("amd64", out.path(), mode).expect("config");
    let report = build(&config, Some("x86_64"), out.path(), Some(&bundle))
        .unwrap_or_else(|e| panic!("build the {mode} SELinux image: {e:#}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    // The image's policy store holds exactly the module the manifest names.
    let installed = installed_module_sha256(&report.image, &manifest, "edgeimg_k3s").unwrap();
    assert_eq!(
        manifest["inputs"]["selinux"]["modules"][0]["sha256"], installed,
        "{manifest}"
    );
    Built {
        out,
        image: report.image,
        manifest,
    }
}

/// Every AVC denial in a boot's serial console log, and whether the kernel
/// dropped any audit record on the way to the console. The self-check's
/// overlay turns printk's rate limit off, so with none dropped the console
/// holds every denial: the host reads them there rather than trusting the
/// guest to report them.
fn console_denials(mode: &str) -> (Vec<String>, bool) {
    let log = std::fs::read_to_string(log_dir().join(format!("x86_64-selinux-{mode}.log")))
        .expect("console log");
    let denials = log
        .lines()
        .filter(|l| l.contains("avc:  denied") && !l.contains("EDGEIMG-AVC"))
        .map(str::to_string)
        .collect();
    let lost = log.contains("audit: printk limit exceeded")
        || log.contains("audit: backlog limit exceeded")
        || log.contains("audit: audit_lost=");
    (denials, lost)
}

fn boot(b: &Built, mode: &str) -> (serde_json::Value, String) {
    let disk = b.out.path().join("disk.raw");
    disk_copy(&b.image, &disk, 4 << 30).unwrap();
    boot_once(
        "x86_64",
        &disk,
        b.out.path(),
        &format!("x86_64-selinux-{mode}.log"),
    )
    .unwrap_or_else(|e| panic!("{mode} boot: {e:#}"))
}

// One test per mode: each builds its image before taking the VM lock (the
// lock serialises boots; holding it through a build would stall the other VM
// tests), and a failure in one mode does not hide the other's result.

/// Permissive: nothing is blocked, so every denial the policy would cause is
/// logged (on the console, and as EDGEIMG-AVC lines from the self-check).
#[test]
fn x86_64_selinux_permissive() {
    let permissive = build_image("permissive");
    let _guard = exclusive();
    let (c, ready) = boot(&permissive, "permissive");
    assert!(ready.contains("edgeimg: cluster ready"), "{ready}");
    assert_eq!(c["selinux"]["getenforce"], "Permissive", "{c}");
    assert_eq!(c["selinux"]["module"], 1, "{c}");
    assert_eq!(
        c["selinux"]["avc_total"], 0,
        "denials in permissive mode: {c}"
    );
    let (denials, lost) = console_denials("permissive");
    assert!(
        !lost,
        "the kernel dropped audit records: the console log is incomplete"
    );
    assert!(
        denials.is_empty(),
        "denials in permissive mode:\n{}",
        denials.join("\n")
    );
}

/// Enforcing: the node and the stand-in's cluster come up, with the labels,
/// domains and no denials the module promises.
#[test]
fn x86_64_selinux_enforcing() {
    let enforcing = build_image("enforcing");
    let _guard = exclusive();
    let (c, ready) = boot(&enforcing, "enforcing");
    let manifest = &enforcing.manifest;
    assert!(ready.contains("edgeimg: cluster ready"), "{ready}");
    let s = &c["selinux"];
    assert_eq!(s["getenforce"], "Enforcing", "{c}");
    assert_eq!(s["module"], 1, "semodule -l lists edgeimg_k3s: {c}");
    // Labels from edgeimg_k3s.fc, on the EROFS root and the data partition.
    let ty = |k: &str| s[k].as_str().unwrap_or_default().to_string();
    assert!(ty("k3s_bin").contains(":container_engine_exec_t:"), "{c}");
    assert!(ty("rancher").contains(":container_var_lib_t:"), "{c}");
    assert!(ty("etc_rancher").contains(":container_config_t:"), "{c}");
    assert!(ty("run_k3s").contains(":container_runtime_t:"), "{c}");
    assert!(ty("agent_bin").contains(":edgeimg_agent_exec_t:"), "{c}");
    assert!(
        ty("agent_state").contains(":edgeimg_agent_var_lib_t:"),
        "{c}"
    );
    assert!(
        ty("var_root").contains(":var_t:"),
        "data partition root labelled: {c}"
    );
    // Domains: the running (stand-in's real) containerd and K3s in the engine
    // domain; every line the agent logged came from its own domain.
    assert!(ty("containerd").contains(":container_engine_t:"), "{c}");
    assert!(ty("k3s_proc").contains(":container_engine_t:"), "{c}");
    let agent = ty("agent_ctx");
    assert!(agent.contains(":edgeimg_agent_t:"), "{c}");
    // No denial at all, and none lost on the way to the journal.
    assert_eq!(
        s["avc_total"], 0,
        "AVC denials (EDGEIMG-AVC lines in the log): {c}"
    );
    assert_eq!(s["audit_lost"], 0, "{c}");
    // The same from the host's side: the console log holds every denial.
    let (denials, lost) = console_denials("enforcing");
    assert!(
        !lost,
        "the kernel dropped audit records: the console log is incomplete"
    );
    assert!(
        denials.is_empty(),
        "denials in enforcing mode:\n{}",
        denials.join("\n")
    );
    // The K3s checks of the plain VM test still hold under enforcing.
    assert!(
        c["k3s"]["hello"]
            .as_str()
            .unwrap()
            .contains("hello from a preloaded image"),
        "{c}"
    );
    assert_eq!(
        c["k3s"]["active"], "k3s",
        "k3s.service must be running: {c}"
    );
    assert_eq!(c["status"]["cluster_ready"], true, "{c}");
    // The manifest records the module and its SHA-256, the one this host
    // compiles for any architecture.
    let own = edgeimg::selinux::compile_own(tempfile::tempdir().unwrap().path()).unwrap();
    assert_eq!(manifest["inputs"]["selinux"]["mode"], "enforcing");
    assert_eq!(
        manifest["inputs"]["selinux"]["modules"][0]["sha256"], own.sha256,
        "{manifest}"
    );
}
