//! Release checksum files in `sha256sum` format (`<hex>  <file>`, `<hex> *<file>`),
//! as K3s (`sha256sum-<arch>.txt`) and nerdctl (`SHA256SUMS`) publish them.

use std::collections::BTreeMap;

use super::BundleError;

/// File name (base name) → lowercase SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checksums {
    /// Where the list came from (file name or URL), for messages.
    pub source: String,
    pub sums: BTreeMap<String, String>,
}

impl Checksums {
    pub fn parse(source: &str, text: &str) -> Result<Checksums, BundleError> {
        let mut sums = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || BundleError::ChecksumSyntax {
                file: source.to_string(),
                line: i + 1,
            };
            let (hash, name) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let hash = hash.to_ascii_lowercase();
            let name = name.trim_start().trim_start_matches('*');
            if !super::is_sha256(&hash) || name.is_empty() {
                return Err(bad());
            }
            let base = name.rsplit('/').next().unwrap_or(name);
            sums.insert(base.to_string(), hash);
        }
        Ok(Checksums {
            source: source.to_string(),
            sums,
        })
    }

    /// The SHA-256 listed for `file`.
    pub fn get(&self, file: &str) -> Result<&str, BundleError> {
        self.sums
            .get(file)
            .map(String::as_str)
            .ok_or_else(|| BundleError::NotInChecksums {
                asset: file.to_string(),
                checksums: self.source.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256sum_output() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!("{a}  k3s\n\n{b} *./dist/k3s-airgap-images-amd64.tar.zst\n");
        let c = Checksums::parse("sha256sum-amd64.txt", &text).unwrap();
        assert_eq!(c.get("k3s").unwrap(), a);
        assert_eq!(
            c.get("k3s-airgap-images-amd64.tar.zst").unwrap(),
            "b".repeat(64)
        );
        assert!(
            c.get("k3s-arm64")
                .unwrap_err()
                .to_string()
                .contains("sha256sum-amd64.txt")
        );
    }

    #[test]
    fn rejects_garbage_with_line() {
        let e = Checksums::parse("SHA256SUMS", "\nnot a hash  x\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "SHA256SUMS:2: not a checksum line (`<sha256>  <file>`)");
    }
}
