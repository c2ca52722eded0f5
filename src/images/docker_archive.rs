//! docker-archive: `manifest.json` = `[{"Config": ..., "RepoTags": [...], "Layers": [...]}]`
//! with paths into the tar (`<id>.json` + `<id>/layer.tar` from older Docker,
//! `blobs/sha256/<hex>` from Docker 25+ and nerdctl).

use std::path::Path;

use serde::Deserialize;

use super::oci::{ConfigJson, parse};
use super::scan::{Scan, normalize};
use super::{ImageError, ImageRef, Platform, normalize_reference};

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

pub(crate) fn images(path: &Path, scan: &Scan) -> Result<Vec<ImageRef>, ImageError> {
    let bytes = scan
        .json("manifest.json")
        .ok_or_else(|| ImageError::BadJson {
            path: path.to_path_buf(),
            member: "manifest.json".into(),
            reason: "too large to be a docker-archive manifest".into(),
        })?;
    let entries: Vec<Entry> = parse(path, "manifest.json", bytes)?;
    let mut out = Vec::new();
    for e in &entries {
        let tags = e.repo_tags.clone().unwrap_or_default();
        let label = tags
            .first()
            .cloned()
            .unwrap_or_else(|| format!("(untagged, config {})", e.config));
        let missing = |blob: &str| ImageError::MissingBlob {
            path: path.to_path_buf(),
            image: label.clone(),
            referenced_by: "manifest.json".into(),
            blob: blob.to_string(),
        };
        let config = normalize(&e.config);
        if !scan.exists(&config) {
            return Err(missing(&e.config));
        }
        for l in &e.layers {
            if !scan.exists(&normalize(l)) {
                return Err(missing(l));
            }
        }
        let cfg_bytes = scan.json(&config).ok_or_else(|| ImageError::BadJson {
            path: path.to_path_buf(),
            member: e.config.clone(),
            reason: "the image config is not a JSON document".into(),
        })?;
        let cfg: ConfigJson = parse(path, &e.config, cfg_bytes)?;
        let platform = match (cfg.os.as_deref(), cfg.architecture.as_deref()) {
            (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
                Platform::new(os, arch, cfg.variant.as_deref())
            }
            _ => {
                return Err(ImageError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("{label}: config {} names no os/architecture", e.config),
                });
            }
        };
        let image = |name: String| ImageRef {
            name,
            platforms: vec![platform.clone()],
            absent_platforms: vec![],
            digest: None,
        };
        if tags.is_empty() {
            out.push(image(String::new()));
        }
        for t in tags {
            // containerd's archive importer normalises RepoTags the same way.
            out.push(image(normalize_reference(&t)));
        }
    }
    Ok(out)
}
