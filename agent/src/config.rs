//! Loading the image and node configuration, and other facts about the
//! running boot, from a [`Root`].

use crate::error::{Context, Result};
use crate::fsutil;
use crate::root::Root;
use crate::schema::{IMAGE_CONFIG_PATH, ImageConfig, NODE_CONFIG_RELPATH, NodeConfig};
use std::path::Path;

/// Read the image configuration the builder embedded; it must exist.
pub fn load_image(root: &Root) -> Result<ImageConfig> {
    let path = root.path(IMAGE_CONFIG_PATH);
    ImageConfig::from_json(&fsutil::read(&path)?, &path)
}

/// Read node.toml from the boot partition: from its mount, or straight from
/// the partition when systemd has not mounted it yet (see [`crate::bootpart`]).
/// A missing file, or a boot partition that never shows, means "no node
/// configuration".
pub fn load_node(root: &Root, image: &ImageConfig) -> Result<Option<NodeConfig>> {
    let path = root.path(Path::new(&image.boot_mount).join(NODE_CONFIG_RELPATH));
    let (text, source) = crate::bootpart::read_file(root, &image.boot_mount, NODE_CONFIG_RELPATH)?;
    if let (Some(_), crate::bootpart::Source::Direct { disk }) = (&text, &source) {
        crate::log(format!(
            "read {} from {disk} before it was mounted",
            path.display()
        ));
    }
    match text {
        None => Ok(None),
        Some(text) => NodeConfig::from_toml(&text, &path).map(Some),
    }
}

/// The kernel's id of the current boot (a UUID), or an error naming the file.
pub fn boot_id(root: &Root) -> Result<String> {
    let path = root.path("/proc/sys/kernel/random/boot_id");
    Ok(fsutil::read(&path)?.trim().to_string())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parse a JSON file into `T`, naming the path on error; `None` when missing.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fsutil::read_opt(path)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))
            .map(Some),
    }
}
