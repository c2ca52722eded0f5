//! SELinux VM tests' shared parts: the image (the self-check image with
//! `[selinux]` and the test-only module), its boots, and the denials the
//! serial console holds.

use std::path::PathBuf;

use crate::*;

/// A built SELinux self-check image and its manifest.
pub struct SelinuxImage {
    pub board: String,
    pub mode: String,
    pub out: tempfile::TempDir,
    pub image: PathBuf,
    pub manifest: serde_json::Value,
    /// A medium larger than the image, booted by [`SelinuxImage::boot`]
    /// (made on the first boot, kept for the next).
    disk: PathBuf,
}

impl SelinuxImage {
    /// Builds the `mode` SELinux image for `board` (call before taking the
    /// VM lock) and checks that its policy store holds exactly the module
    /// the manifest names, which is the one this host compiles (the policy is
    /// the same for every architecture).
    pub fn build(board: &str, mode: &str) -> SelinuxImage {
        let arch = edgeimg::config::board::load(board).unwrap().arch;
        let out = tempfile::tempdir().unwrap();
        let (bundle, _) = k3s_bundle(arch.debian(), out.path()).expect("K3s bundle");
        let config = selinux_config(arch.debian(), out.path(), mode).expect("config");
        let report = build(&config, Some(board), out.path(), Some(&bundle))
            .unwrap_or_else(|e| panic!("build the {board} {mode} SELinux image: {e:#}"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap())
                .unwrap();
        let installed = installed_module_sha256(&report.image, &manifest, "edgeimg_k3s").unwrap();
        assert_eq!(
            manifest["inputs"]["selinux"]["modules"][0]["sha256"], installed,
            "{manifest}"
        );
        let own = edgeimg::selinux::compile_own(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(installed, own.sha256, "{board} image's installed module");
        assert_eq!(manifest["inputs"]["selinux"]["mode"], mode, "{manifest}");
        let disk = out.path().join("disk.raw");
        SelinuxImage {
            board: board.to_string(),
            mode: mode.to_string(),
            out,
            image: report.image,
            manifest,
            disk,
        }
    }

    /// Boot number `n` (1, 2...) of the image's medium: the self-check and
    /// the agent's cluster line. Its console log is `console_log(n)`.
    pub fn boot(&self, n: u32) -> (serde_json::Value, String) {
        if n == 1 {
            disk_copy(&self.image, &self.disk, 4 << 30).unwrap();
        }
        boot_once_redoing_a_stall(
            &self.board,
            &self.disk,
            None,
            None,
            self.out.path(),
            &self.log_name(n),
        )
        .unwrap_or_else(|e| {
            // A denial is the likeliest reason a boot under enforcing
            // fails: name them rather than only the symptom.
            let log = std::fs::read_to_string(log_dir().join(self.log_name(n)));
            let (denials, _) = denials_in(&log.unwrap_or_default());
            panic!(
                "{} {} boot {n}: {e:#}\ndenials on the console:\n{}",
                self.board,
                self.mode,
                denials.join("\n")
            )
        })
    }

    fn log_name(&self, n: u32) -> String {
        let boot = if n == 1 {
            String::new()
        } else {
            format!("-boot{n}")
        };
        format!("{}-selinux-{}{boot}.log", self.board, self.mode)
    }

    /// Every AVC denial in boot `n`'s serial console log, and whether the
    /// kernel dropped any audit record on the way to the console. The
    /// self-check's overlay turns printk's rate limit off, so with none
    /// dropped the console holds every denial: the host reads them there
    /// rather than trusting the guest to report them.
    pub fn console_denials(&self, n: u32) -> (Vec<String>, bool) {
        let log = std::fs::read_to_string(log_dir().join(self.log_name(n))).expect("console log");
        denials_in(&log)
    }

    /// Boot `n` logged no denial at all, counted by the guest (journal) and
    /// by the host (console), and lost no audit record.
    pub fn assert_no_denial(&self, n: u32, c: &serde_json::Value) {
        let what = format!("{} {} boot {n}", self.board, self.mode);
        assert_eq!(
            c["selinux"]["avc_total"], 0,
            "{what}: AVC denials (EDGEIMG-AVC lines in the log): {c}"
        );
        assert_eq!(c["selinux"]["audit_lost"], 0, "{what}: {c}");
        let (denials, lost) = self.console_denials(n);
        assert!(
            !lost,
            "{what}: the kernel dropped audit records: the console log is incomplete"
        );
        assert!(
            denials.is_empty(),
            "{what}: denials on the console:\n{}",
            denials.join("\n")
        );
    }

    /// Enforcing: the labels from edgeimg_k3s.fc on the EROFS root and the
    /// data partition, K3s (the stand-in's real containerd) in the engine
    /// domain and the agent in its own.
    pub fn assert_enforcing_labels_and_domains(&self, c: &serde_json::Value) {
        let s = &c["selinux"];
        assert_eq!(s["getenforce"], "Enforcing", "{c}");
        assert_eq!(s["module"], 1, "semodule -l lists edgeimg_k3s: {c}");
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
        assert!(ty("containerd").contains(":container_engine_t:"), "{c}");
        assert!(ty("k3s_proc").contains(":container_engine_t:"), "{c}");
        assert!(ty("agent_ctx").contains(":edgeimg_agent_t:"), "{c}");
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
    }
}

/// The AVC denials a console log holds (the kernel's own lines, not the
/// self-check's `EDGEIMG-AVC` copies) and whether it says audit records were
/// dropped.
fn denials_in(log: &str) -> (Vec<String>, bool) {
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
