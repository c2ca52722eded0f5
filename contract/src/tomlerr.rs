//! One redaction for every TOML error, on the host and on the device.
//!
//! The toml crate's `Display` quotes the offending source line, so a typo on a
//! `token = ...` line would print the join token. [`describe`] reports only
//! `line:column: message` and scrubs any quoted value that follows a secret
//! key from the message itself.

/// Keys whose values never appear in a message: `token`, `password`, anything
/// ending in `_key`, `_token`, `_password` or `secret`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.trim().trim_matches('"').to_ascii_lowercase();
    let k = k.rsplit('.').next().unwrap_or(&k);
    k == "token"
        || k == "password"
        || k == "passwd"
        || k.contains("secret")
        || k.ends_with("_key")
        || k.ends_with("_token")
        || k.ends_with("_password")
        || k.ends_with("-key")
        || k.ends_with("-token")
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// `line:column: message` (or just the message when the error has no span),
/// one line, never a source snippet and never a secret value: when the error
/// points into a line assigning a secret key, the message is replaced by a
/// generic one (the toml crate's messages can quote the value).
pub fn describe(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            let line_text = text.lines().nth(line - 1).unwrap_or_default();
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.len() <= 64 && !k.contains(char::is_control));
            match key {
                Some(k) => format!("{line}:{col}: key `{k}`: {}", message(text, e)),
                None => format!("{line}:{col}: {}", message(text, e)),
            }
        }
        None => format!(" {}", message(text, e)),
    }
}

/// The redacted message alone (no position), one line.
pub fn message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace(['\n', '\r'], " ");
    if let Some(span) = e.span() {
        let (line, _) = line_col(text, span.start);
        let line_text = text.lines().nth(line - 1).unwrap_or_default();
        if let Some((key, _)) = line_text.split_once('=')
            && is_secret_key(key)
        {
            return format!(
                "invalid value for secret key `{}` (value not shown)",
                key.trim()
            );
        }
    }
    scrub(text, &message)
}

/// Drops from `message` any value assigned to a secret key anywhere in `text`
/// (serde messages such as "invalid type" may quote it).
fn scrub(text: &str, message: &str) -> String {
    let mut out = message.to_string();
    for l in text.lines() {
        if let Some((key, value)) = l.split_once('=')
            && is_secret_key(key)
        {
            let v = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
            if v.len() >= 4 && out.contains(v) {
                out = out.replace(v, "<redacted>");
            }
        }
    }
    out
}

/// `file:line:column: message` for an error while parsing `text` read from
/// `file` (`file: message` when the error has no position).
pub fn format(file: &str, text: &str, e: &toml::de::Error) -> String {
    format!("{file}:{}", describe(text, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_on_token_line_hides_the_token() {
        let text = "hostname = \"a\"\ntoken = \"K10SECRETSECRET\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        let m = format("node.toml", text, &e);
        assert!(!m.contains("K10SECRETSECRET"), "{m}");
        assert!(m.starts_with("node.toml:2:"), "{m}");
        assert!(!m.contains('\n'), "{m}");
    }

    #[test]
    fn type_error_on_secret_key_hides_the_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            token: u32,
        }
        let text = "token = \"K10SECRETSECRET\"\n";
        let e = toml::from_str::<T>(text).unwrap_err();
        let m = format("f", text, &e);
        assert!(!m.contains("K10SECRETSECRET"), "{m}");
        assert!(m.starts_with("f:1:"), "{m}");
    }

    #[test]
    fn other_errors_keep_line_column_and_message() {
        let text = "a = 1\nb = = 2\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        let m = format("f", text, &e);
        assert!(m.starts_with("f:2:"), "{m}");
        assert!(!m.contains('|'), "no snippet: {m}");
    }

    #[test]
    fn secret_keys() {
        for k in [
            "token",
            "ssh_key",
            "password",
            "agent_token",
            "client-secret",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["hostname", "role", "keys"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
