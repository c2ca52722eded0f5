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
