//! SSH host keys: the image ships none (they must differ per device); the
//! agent generates [`HOST_KEYS`] on first boot and the builder writes the
//! sshd drop-in that names the same files, so sshd offers exactly those.

/// (ssh-keygen `-t` type, private key path), in the order sshd offers them.
pub const HOST_KEYS: &[(&str, &str)] = &[
    ("ed25519", "/etc/ssh/ssh_host_ed25519_key"),
    ("ecdsa", "/etc/ssh/ssh_host_ecdsa_key"),
];

/// The sshd_config drop-in edgeimg places in images with OpenSSH (Debian's
/// sshd_config includes /etc/ssh/sshd_config.d/*.conf first).
pub const SSHD_DROP_IN: &str = "/etc/ssh/sshd_config.d/50-edgeimg-hostkeys.conf";

/// The drop-in's text: one `HostKey` line per generated key.
pub fn sshd_drop_in() -> String {
    let mut s = String::from(
        "# edgeimg: the host keys first boot generates (edgeimg-agent, ssh-host-keys\n\
         # step). No RSA key: see /usr/lib/edgeimg/README.md.\n",
    );
    for (_, path) in HOST_KEYS {
        s.push_str(&format!("HostKey {path}\n"));
    }
    s
}
