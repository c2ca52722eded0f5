//! What goes onto the boot partition, per firmware path.

pub mod rpi;
pub mod uefi;

/// The node file's path on the boot partition, and an example beside it.
pub const NODE_EXAMPLE: &str = "# edgeimg per-node settings, read once by the first-boot agent.\n\
# Copy this file to node.toml (same folder) on any PC after flashing, and edit.\n\
# Every key is optional.\n\
\n\
# hostname = \"edge-01\"\n\
\n\
# [[users]]\n\
# name = \"ops\"\n\
# groups = [\"sudo\"]\n\
# ssh_keys = [\"ssh-ed25519 AAAA... ops@example\"]\n";
