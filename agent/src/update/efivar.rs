//! Reading systemd-boot's EFI variables through efivarfs.

use crate::error::Result;
use crate::fsutil;
use crate::root::Root;

/// systemd-boot's vendor GUID (the Boot Loader Interface).
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// A UTF-16 string variable of the boot loader, `None` when unset.
pub fn loader_string(root: &Root, name: &str) -> Result<Option<String>> {
    let path = root.path(format!("{EFIVARS}/{name}-{LOADER_GUID}"));
    let Some(raw) = fsutil::read_bytes_opt(&path)? else {
        return Ok(None);
    };
    Ok(Some(decode(&raw)))
}

/// efivarfs content: 4 bytes of attributes, then the value (here UTF-16LE,
/// NUL-terminated).
pub fn decode(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .get(4..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_utf16_with_attributes() {
        let mut raw = vec![7, 0, 0, 0];
        for u in "\\loader\\entries\\x+1-1.conf".encode_utf16() {
            raw.extend_from_slice(&u.to_le_bytes());
        }
        raw.extend_from_slice(&[0, 0]);
        assert_eq!(super::decode(&raw), "\\loader\\entries\\x+1-1.conf");
    }
}
