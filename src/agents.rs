//! The first-boot agent binaries and units embedded in edgeimg (built by build.rs).

use edgeimg_contract::arch::Arch;

pub const AGENT_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/edgeimg-agent-x86_64"));
pub const AGENT_AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/edgeimg-agent-aarch64"));

pub const FIRSTBOOT_UNIT: &str = include_str!("../agent/units/edgeimg-firstboot.service");
pub const READY_UNIT: &str = include_str!("../agent/units/edgeimg-ready.service");
pub const UPDATE_HEALTH_UNIT: &str = include_str!("../agent/units/edgeimg-update-health.service");
pub const UPDATE_PULL_UNIT: &str = include_str!("../agent/units/edgeimg-update-pull.service");
pub const UPDATE_PULL_TIMER: &str = include_str!("../agent/units/edgeimg-update-pull.timer");
pub const UPDATE_USB_UNIT: &str = include_str!("../agent/units/edgeimg-update-usb@.service");
pub const UPDATE_USB_RULE: &str = include_str!("../agent/units/90-edgeimg-update-usb.rules");
/// Where the USB update rule goes in the image.
pub const UPDATE_USB_RULE_PATH: &str = "usr/lib/udev/rules.d/90-edgeimg-update-usb.rules";
/// The agent's README, placed beside it (the units' Documentation= points there).
pub const README: &str = include_str!("../agent/README.md");

/// Where the agent lives in the image.
pub const AGENT_PATH: &str = "usr/lib/edgeimg/edgeimg-agent";

/// The static agent for an architecture (Debian or Rust name; x86_64 when
/// the name is none edgeimg knows, which board validation already refused).
pub fn binary(arch: &str) -> &'static [u8] {
    match Arch::from_name(arch) {
        Some(Arch::Arm64) => AGENT_AARCH64,
        _ => AGENT_X86_64,
    }
}

/// A unit or rule as placed in the image: `@USB_LABEL@` becomes the label
/// of update media ([`edgeimg_contract::update::USB_LABEL`], the one place
/// it is written down).
pub fn render(text: &str) -> String {
    text.replace("@USB_LABEL@", edgeimg_contract::update::USB_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The USB update rule as placed passes `udevadm verify` (syntax and
    /// style; systemd 254 or later) where the host has one; bookworm's
    /// udev (252) has no `verify`, and then this only says so.
    #[test]
    fn the_usb_update_rule_passes_udevadm_verify_where_available() {
        let d = tempfile::tempdir().unwrap();
        let rule = d.path().join("90-edgeimg-update-usb.rules");
        std::fs::write(&rule, render(UPDATE_USB_RULE)).unwrap();
        let o = match std::process::Command::new("udevadm")
            .arg("verify")
            .arg(&rule)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("no udevadm ({e}): rule not verified");
                return;
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if text.to_lowercase().contains("unknown command") {
            eprintln!("udevadm has no verify: rule not verified");
            return;
        }
        assert!(o.status.success(), "{text}");
    }
}
