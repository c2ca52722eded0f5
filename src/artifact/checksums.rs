//! SHA-256 of files and the `SHA256SUMS` list.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{ArtifactError, Result, io_err};

/// Streaming SHA-256 of a file, lowercase hex. Bounded memory (1 MiB buffer)
/// because images are gigabytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(io_err("open for SHA-256", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read for SHA-256", path)(e).into()),
        };
        hasher.update(&buf[..n]);
    }
    // sha2 0.11 digests do not implement LowerHex; hex::encode does.
    Ok(hex::encode(hasher.finalize()))
}

pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes `<hex>  <name>\n` lines (GNU coreutils text format, two spaces),
/// sorted by name so the file is deterministic, for the files `names` in `dir`.
/// `cd dir && sha256sum -c SHA256SUMS` verifies it.
pub fn write_sha256sums(dir: &Path, names: &[&str], out: &mut impl Write) -> Result<()> {
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for name in sorted {
        // A newline or backslash would need coreutils' escaped format; a path
        // separator would break "names relative to dir". Neither occurs in our
        // artifact names, so refuse rather than write a list that lies.
        if name.is_empty() || name.contains(['\n', '\\', '/']) {
            return Err(ArtifactError::Invalid {
                op: "list in SHA256SUMS",
                path: dir.join(name),
                msg: "name must be a plain file name without newline or backslash".into(),
            });
        }
        let sum = sha256_file(&dir.join(name))?;
        writeln!(out, "{sum}  {name}")
            .map_err(io_err("write SHA256SUMS entry for", &dir.join(name)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            sha256_bytes(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
