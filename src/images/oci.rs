//! OCI image layout: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`; image
//! indexes may nest (multi-platform images).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::scan::Scan;
use super::{ImageError, ImageRef, Platform};

pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

#[derive(Deserialize, Debug, Clone)]
pub(crate) struct PlatformJson {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestJson {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
pub(crate) struct ConfigJson {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

/// `sha256:<hex>` -> `blobs/sha256/<hex>`; `None` for a malformed digest.
pub(crate) fn blob_path(digest: &str) -> Option<String> {
    let (alg, hex) = digest.split_once(':')?;
    let ok = !alg.is_empty()
        && alg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && !hex.is_empty()
        && hex
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
    ok.then(|| format!("blobs/{alg}/{hex}"))
}

fn bad_json(path: &Path, member: &str, reason: impl ToString) -> ImageError {
    ImageError::BadJson {
        path: path.to_path_buf(),
        member: member.to_string(),
        reason: reason.to_string(),
    }
}

pub(crate) fn parse<'a, T: Deserialize<'a>>(
    path: &Path,
    member: &str,
    bytes: &'a [u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| bad_json(path, member, e))
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    }) || d.platform.as_ref().is_some_and(|p| p.os == "unknown")
}

fn desc_platform(d: &Descriptor) -> Option<Platform> {
    d.platform
        .as_ref()
        .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()))
}

struct Walk<'a> {
    path: &'a Path,
    scan: &'a Scan,
    image: String,
    present: BTreeSet<Platform>,
    absent: BTreeSet<Platform>,
}

impl Walk<'_> {
    fn member(&self, d: &Descriptor, what: &str) -> Result<String, ImageError> {
        blob_path(&d.digest).ok_or_else(|| ImageError::Invalid {
            path: self.path.to_path_buf(),
            reason: format!(
                "{}: {what} has a malformed digest {:?}",
                self.image, d.digest
            ),
        })
    }

    /// Present with the descriptor's size? `Ok(false)` if absent.
    fn check_blob(&self, d: &Descriptor, what: &str) -> Result<bool, ImageError> {
        let member = self.member(d, what)?;
        match self.scan.size(&member) {
            None => Ok(false),
            Some(actual) if actual != d.size => Err(ImageError::SizeMismatch {
                path: self.path.to_path_buf(),
                image: self.image.clone(),
                blob: d.digest.clone(),
                expected: d.size,
                actual,
            }),
            Some(_) => Ok(true),
        }
    }

    fn missing(&self, d: &Descriptor, referenced_by: &str) -> ImageError {
        ImageError::MissingBlob {
            path: self.path.to_path_buf(),
            image: self.image.clone(),
            referenced_by: referenced_by.to_string(),
            blob: d.digest.clone(),
        }
    }

    fn json(&self, d: &Descriptor, what: &str) -> Result<&[u8], ImageError> {
        let member = self.member(d, what)?;
        self.scan
            .json(&member)
            .ok_or_else(|| bad_json(self.path, &member, format!("{what} is not a JSON document")))
    }

    /// Walk a manifest or index. `required`: a missing blob is an error (top
    /// level, or a manifest's own config/layers) rather than an absent platform.
    fn walk(
        &mut self,
        d: &Descriptor,
        referenced_by: &str,
        depth: u32,
        required: bool,
    ) -> Result<(), ImageError> {
        if depth > 8 {
            return Err(ImageError::Invalid {
                path: self.path.to_path_buf(),
                reason: format!("{}: image indexes nest more than 8 deep", self.image),
            });
        }
        let attestation = is_attestation(d);
        if !self.check_blob(d, "manifest")? {
            if required {
                return Err(self.missing(d, referenced_by));
            }
            if !attestation && let Some(p) = desc_platform(d) {
                self.absent.insert(p);
            }
            return Ok(());
        }
        let member = self.member(d, "manifest")?;
        let bytes = self.json(d, "manifest")?;
        let value: serde_json::Value = parse(self.path, &member, bytes)?;
        let media = d
            .media_type
            .clone()
            .or_else(|| {
                value
                    .get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let is_index = media.ends_with("image.index.v1+json")
            || media.ends_with("manifest.list.v2+json")
            || (media.is_empty() && value.get("manifests").is_some());
        if is_index {
            let idx: IndexJson = parse(self.path, &member, bytes)?;
            for child in &idx.manifests {
                self.walk(
                    child,
                    &format!("image index {}", d.digest),
                    depth + 1,
                    false,
                )?;
            }
            return Ok(());
        }
        if value.get("config").is_none() {
            return Err(bad_json(
                self.path,
                &member,
                format!("neither an image manifest nor an image index (mediaType {media:?})"),
            ));
        }
        let m: ManifestJson = parse(self.path, &member, bytes)?;
        let by = format!("manifest {}", d.digest);
        // A manifest listed in an index whose own content is missing is an
        // absent platform (not saved), not a corrupt archive.
        let mut complete = true;
        let mut first_missing = None;
        if !self.check_blob(&m.config, "config")? {
            complete = false;
            first_missing.get_or_insert_with(|| self.missing(&m.config, &by));
        }
        for l in &m.layers {
            if !self.check_blob(l, "layer")? {
                complete = false;
                first_missing.get_or_insert_with(|| self.missing(l, &by));
            }
        }
        if !complete {
            if required || depth == 0 {
                return Err(first_missing.expect("set when incomplete"));
            }
            if !attestation && let Some(p) = desc_platform(d) {
                self.absent.insert(p);
            }
            return Ok(());
        }
        if attestation {
            return Ok(());
        }
        let cfg_member = self.member(&m.config, "config")?;
        let cfg: ConfigJson = parse(
            self.path,
            &cfg_member,
            self.json(&m.config, "image config")?,
        )?;
        let platform = match (cfg.os.as_deref(), cfg.architecture.as_deref()) {
            (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => Platform::new(
                os,
                arch,
                cfg.variant
                    .as_deref()
                    .or(d.platform.as_ref().and_then(|p| p.variant.as_deref())),
            ),
            _ => match desc_platform(d) {
                Some(p) => p,
                None => {
                    return Err(ImageError::Invalid {
                        path: self.path.to_path_buf(),
                        reason: format!(
                            "{}: config {} names no os/architecture",
                            self.image, m.config.digest
                        ),
                    });
                }
            },
        };
        self.present.insert(platform);
        Ok(())
    }
}

pub(crate) fn images(path: &Path, scan: &Scan) -> Result<Vec<ImageRef>, ImageError> {
    if let Some(bytes) = scan.json("oci-layout") {
        let l: OciLayout = parse(path, "oci-layout", bytes)?;
        if !l.image_layout_version.starts_with("1.") {
            return Err(ImageError::Invalid {
                path: path.to_path_buf(),
                reason: format!(
                    "oci-layout: unsupported imageLayoutVersion {:?}",
                    l.image_layout_version
                ),
            });
        }
    }
    let bytes = scan
        .json("index.json")
        .ok_or_else(|| bad_json(path, "index.json", "too large to be an index"))?;
    let idx: IndexJson = parse(path, "index.json", bytes)?;
    let mut out: Vec<ImageRef> = Vec::new();
    for d in &idx.manifests {
        let ann = d.annotations.clone().unwrap_or_default();
        let name = ann
            .get(ANNOTATION_CONTAINERD_NAME)
            .or_else(|| ann.get(ANNOTATION_REF_NAME))
            .cloned()
            .unwrap_or_default();
        let mut w = Walk {
            path,
            scan,
            image: if name.is_empty() {
                d.digest.clone()
            } else {
                name.clone()
            },
            present: BTreeSet::new(),
            absent: BTreeSet::new(),
        };
        w.walk(d, "index.json", 0, true)?;
        let platforms: Vec<Platform> = w.present.into_iter().collect();
        let absent = w
            .absent
            .into_iter()
            .filter(|p| !platforms.contains(p))
            .collect();
        out.push(ImageRef {
            name,
            platforms,
            absent_platforms: absent,
            digest: Some(d.digest.clone()),
        });
    }
    Ok(out)
}
