//! SSH public keys as an operator gives them (`edgeimg node --ssh-key` and
//! `--ssh-key-file`, `[[users]] ssh_keys` in edgeimg.toml): each parsed as
//! an authorized_keys entry (options, key type, base64 key, comment) by the
//! ssh-key crate, so a private key or any other text is refused before it
//! reaches a node file or an image. Errors name where the key came from and
//! never repeat it: a pasted private key must not end up in a terminal log.

use std::str::FromStr;

/// Checks one line; `Err` says what is wrong without quoting the line.
pub fn check(line: &str) -> Result<(), String> {
    let line = line.trim();
    if line.contains("PRIVATE KEY") {
        return Err("this is a private key: give the public one (the .pub file beside it)".into());
    }
    if line.is_empty() {
        return Err("it is empty".into());
    }
    if line.len() > MAX_LINE {
        return Err(format!(
            "it is {} bytes, longer than any OpenSSH public key line ({MAX_LINE})",
            line.len()
        ));
    }
    ssh_key::authorized_keys::Entry::from_str(line)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "not an OpenSSH public key line (`TYPE BASE64 [COMMENT]`, e.g. the contents of id_ed25519.pub): {}",
                describe(&e)
            )
        })
}

/// Longer than an RSA-16384 key with options and a comment.
const MAX_LINE: usize = 16 * 1024;

/// The parser's reason in words that do not carry the input.
fn describe(e: &ssh_key::Error) -> &'static str {
    match e {
        ssh_key::Error::AlgorithmUnknown => "unknown key type",
        ssh_key::Error::Encoding(_) => "the key data does not decode",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@x";

    #[test]
    fn public_keys_pass_and_the_rest_is_refused_without_being_quoted() {
        check(ED25519).unwrap();
        check(&format!("from=\"10.0.0.0/8\",no-pty {ED25519}")).unwrap();
        let cases = [
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
            ("hunter2-secret", "not an OpenSSH public key"),
            ("ssh-ed25519 AAAAnotbase64!! x", "not an OpenSSH public key"),
            (
                "ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
                "not an OpenSSH",
            ),
            ("", "empty"),
        ];
        for (input, want) in cases {
            let e = check(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e}");
            if !input.is_empty() {
                assert!(!e.contains(input), "the error quotes the input: {e}");
            }
        }
        assert!(
            check(&"A".repeat(MAX_LINE + 1))
                .unwrap_err()
                .contains("longer")
        );
    }
}
