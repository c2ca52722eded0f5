//! Bundle manifests (`airgap-bundles/*.toml`): one K3s release, per
//! architecture the upstream assets and their URLs. The shipped manifests are
//! embedded in the binary so `edgeimg bundle fetch k3s-v1.36.4+k3s1` works by name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{Arch, BundleError, Role};
use crate::io_error::io_err;

/// Manifests shipped with edgeimg: (file name without `.toml`, text).
pub const SHIPPED: &[(&str, &str)] = &[(
    "k3s-v1.36.4+k3s1",
    include_str!("../../airgap-bundles/k3s-v1.36.4+k3s1.toml"),
)];

/// The name of a bundle's own manifest inside a bundle directory (optional;
/// see [`Manifest::in_dir`]).
pub const DIR_MANIFEST: &str = "bundle.toml";

/// The upstream prefix of shipped manifests, replaced by `--mirror`.
pub const DEFAULT_UPSTREAM: &str = "https://github.com";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    schema: Spanned<u32>,
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    upstream: Option<Spanned<String>>,
    k3s: Component,
    nerdctl: Component,
    arch: BTreeMap<Spanned<String>, ArchFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Component {
    version: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchFile {
    k3s: AssetFile,
    airgap_images: AssetFile,
    k3s_checksums: AssetFile,
    nerdctl: AssetFile,
    nerdctl_full: Option<AssetFile>,
    nerdctl_checksums: AssetFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetFile {
    url: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
}

/// One upstream file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSpec {
    pub role: Role,
    /// The upstream file name (as in the checksum file and a bundle directory).
    pub file: String,
    /// Full upstream URL (before any mirror substitution), if the manifest has one.
    pub url: Option<String>,
    /// A SHA-256 pinned in the manifest itself, if any (lowercase hex).
    pub sha256: Option<String>,
}

/// A validated bundle manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from: a path, or `built-in <name>`.
    pub source: String,
    pub name: String,
    pub description: String,
    /// URL prefix that `--mirror` replaces (default `https://github.com`).
    pub upstream: String,
    pub k3s_version: String,
    pub nerdctl_version: String,
    /// Per architecture, every asset (checksum files included).
    pub arches: BTreeMap<Arch, Vec<AssetSpec>>,
}

impl Manifest {
    /// A shipped manifest by name (`k3s-v1.36.4+k3s1`), else a manifest file.
    /// Anything with a `/` or ending in `.toml` is a path.
    pub fn find(name_or_path: &str) -> Result<Manifest, BundleError> {
        let is_path = name_or_path.contains('/') || name_or_path.ends_with(".toml");
        if !is_path && let Some((n, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            return Manifest::parse(&format!("built-in {n}"), text);
        }
        let p = Path::new(name_or_path);
        if is_path || p.is_file() {
            return Manifest::load(p);
        }
        Err(BundleError::UnknownManifest {
            name: name_or_path.to_string(),
            known: shipped_names().join(", "),
        })
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, BundleError> {
        let text = std::fs::read_to_string(path).map_err(io_err("cannot read manifest", path))?;
        Manifest::parse(&path.display().to_string(), &text)
    }

    /// The manifest a build uses: a `--bundle DIR`'s own `bundle.toml` when
    /// it carries one, else `name` (a shipped manifest or a path).
    pub fn for_build(name: &str, bundle_dir: Option<&Path>) -> Result<Manifest, BundleError> {
        if let Some(m) = bundle_dir.map(Manifest::in_dir).transpose()?.flatten() {
            return Ok(m);
        }
        Manifest::find(name)
    }

    /// `DIR/bundle.toml` when a bundle directory carries its own manifest.
    pub fn in_dir(dir: &Path) -> Result<Option<Manifest>, BundleError> {
        let p = dir.join(DIR_MANIFEST);
        if p.is_file() {
            Manifest::load(&p).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Parses and validates manifest text; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Manifest, BundleError> {
        let f: ManifestFile = toml::from_str(text).map_err(|e| toml_error(source, text, &e))?;
        let invalid = |span: std::ops::Range<usize>, key: &str, message: String| {
            BundleError::ManifestInvalid {
                file: source.to_string(),
                line: line_of(text, span.start),
                key: key.to_string(),
                message,
            }
        };
        if *f.schema.get_ref() != 1 {
            return Err(invalid(
                f.schema.span(),
                "schema",
                format!(
                    "unsupported schema {} (this edgeimg reads 1)",
                    f.schema.get_ref()
                ),
            ));
        }
        let name = f.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        {
            return Err(invalid(
                f.name.span(),
                "name",
                format!("`{name}` must be letters, digits, '-', '_', '.' or '+'"),
            ));
        }
        for (key, v) in [
            ("k3s.version", &f.k3s.version),
            ("nerdctl.version", &f.nerdctl.version),
        ] {
            if v.get_ref().trim().is_empty() {
                return Err(invalid(v.span(), key, "must not be empty".into()));
            }
        }
        let upstream = match &f.upstream {
            Some(u) => {
                let s = u.get_ref().trim_end_matches('/').to_string();
                if !(s.starts_with("https://") || s.starts_with("http://")) {
                    return Err(invalid(
                        u.span(),
                        "upstream",
                        format!("`{s}` is not an http(s) URL"),
                    ));
                }
                s
            }
            None => DEFAULT_UPSTREAM.to_string(),
        };
        let mut arches = BTreeMap::new();
        for (arch_key, a) in &f.arch {
            let arch: Arch = arch_key.get_ref().parse().map_err(|_| {
                invalid(
                    arch_key.span(),
                    &format!("arch.{}", arch_key.get_ref()),
                    "unknown architecture (amd64 or arm64)".into(),
                )
            })?;
            let mut assets = Vec::new();
            let entries: [(Role, Option<&AssetFile>); 6] = [
                (Role::K3s, Some(&a.k3s)),
                (Role::AirgapImages, Some(&a.airgap_images)),
                (Role::K3sChecksums, Some(&a.k3s_checksums)),
                (Role::Nerdctl, Some(&a.nerdctl)),
                (Role::NerdctlFull, a.nerdctl_full.as_ref()),
                (Role::NerdctlChecksums, Some(&a.nerdctl_checksums)),
            ];
            for (role, asset) in entries {
                let Some(asset) = asset else { continue };
                let key = format!("arch.{arch}.{}", role.key());
                let url = match &asset.url {
                    Some(u) => {
                        let s = u.get_ref().clone();
                        if !s.starts_with(&format!("{upstream}/")) {
                            return Err(invalid(
                                u.span(),
                                &format!("{key}.url"),
                                format!("`{s}` does not start with upstream `{upstream}/`"),
                            ));
                        }
                        Some(s)
                    }
                    None => None,
                };
                let file = match (&asset.file, &url) {
                    (Some(f), _) => f.get_ref().clone(),
                    (None, Some(u)) => u.rsplit('/').next().unwrap_or_default().to_string(),
                    (None, None) => {
                        return Err(invalid(
                            arch_key.span(),
                            &key,
                            "needs `url` or `file`".into(),
                        ));
                    }
                };
                if file.is_empty()
                    || file.contains('/')
                    || file.contains('%')
                    || file.starts_with('.')
                {
                    let span = asset
                        .file
                        .as_ref()
                        .map(|f| f.span())
                        .or(asset.url.as_ref().map(|u| u.span()))
                        .unwrap_or(arch_key.span());
                    return Err(invalid(
                        span,
                        &format!("{key}.file"),
                        format!("`{file}` is not a plain file name (set `file` explicitly)"),
                    ));
                }
                let sha256 = match &asset.sha256 {
                    Some(h) => {
                        let v = h.get_ref().to_ascii_lowercase();
                        if !super::is_sha256(&v) {
                            return Err(invalid(
                                h.span(),
                                &format!("{key}.sha256"),
                                format!("`{}` is not a SHA-256 (64 hex digits)", h.get_ref()),
                            ));
                        }
                        Some(v)
                    }
                    None => None,
                };
                assets.push(AssetSpec {
                    role,
                    file,
                    url,
                    sha256,
                });
            }
            arches.insert(arch, assets);
        }
        if arches.is_empty() {
            return Err(BundleError::ManifestInvalid {
                file: source.to_string(),
                line: 1,
                key: "arch".into(),
                message: "no [arch.<amd64|arm64>] table".into(),
            });
        }
        Ok(Manifest {
            source: source.to_string(),
            name,
            description: f.description,
            upstream,
            k3s_version: f.k3s.version.into_inner(),
            nerdctl_version: f.nerdctl.version.into_inner(),
            arches,
        })
    }

    /// The assets of one architecture.
    pub fn assets(&self, arch: Arch) -> Result<&[AssetSpec], BundleError> {
        self.arches
            .get(&arch)
            .map(Vec::as_slice)
            .ok_or_else(|| BundleError::ArchNotInManifest {
                manifest: self.source.clone(),
                arch,
                known: self
                    .arches
                    .keys()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The asset of `role` for `arch`, if the manifest has it.
    pub fn asset(&self, arch: Arch, role: Role) -> Result<Option<&AssetSpec>, BundleError> {
        Ok(self.assets(arch)?.iter().find(|a| a.role == role))
    }

    /// The assets a bundle needs: everything but `nerdctl_full` unless `buildkit`.
    pub fn required(&self, arch: Arch, buildkit: bool) -> Result<Vec<&AssetSpec>, BundleError> {
        let assets = self.assets(arch)?;
        if buildkit && !assets.iter().any(|a| a.role == Role::NerdctlFull) {
            return Err(BundleError::ManifestInvalid {
                file: self.source.clone(),
                line: 1,
                key: format!("arch.{arch}.nerdctl_full"),
                message: "BuildKit was asked for but the manifest has no nerdctl_full asset".into(),
            });
        }
        Ok(assets
            .iter()
            .filter(|a| buildkit || a.role != Role::NerdctlFull)
            .collect())
    }

    /// The version of the component an asset belongs to.
    pub fn version_of(&self, role: Role) -> &str {
        match role {
            Role::K3s | Role::AirgapImages | Role::K3sChecksums => &self.k3s_version,
            Role::Nerdctl | Role::NerdctlFull | Role::NerdctlChecksums => &self.nerdctl_version,
        }
    }

    /// The URL to download `asset` from: its manifest URL with `upstream`
    /// replaced by `mirror` when one is given.
    pub fn url_for(&self, asset: &AssetSpec, mirror: Option<&str>) -> Option<String> {
        let url = asset.url.as_ref()?;
        Some(match mirror {
            Some(m) => format!("{}{}", m.trim_end_matches('/'), &url[self.upstream.len()..]),
            None => url.clone(),
        })
    }
}

/// Names of the shipped manifests.
pub fn shipped_names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// Every shipped manifest, parsed.
pub fn shipped() -> Result<Vec<Manifest>, BundleError> {
    SHIPPED
        .iter()
        .map(|(n, t)| Manifest::parse(&format!("built-in {n}"), t))
        .collect()
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A TOML error as `file:line: key `k`: message`.
pub(crate) fn toml_error(source: &str, text: &str, e: &toml::de::Error) -> BundleError {
    let (line, key) = match e.span() {
        Some(span) => {
            let line = line_of(text, span.start);
            let line_text = text.lines().nth(line - 1).unwrap_or_default().trim();
            let key = if line_text.starts_with('[') {
                line_text
                    .trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_string()
            } else {
                line_text
                    .split('=')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            (line, key)
        }
        None => (1, String::new()),
    };
    BundleError::ManifestInvalid {
        file: source.to_string(),
        line,
        key,
        message: edgeimg_contract::tomlerr::message(text, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_manifests_parse_and_name_their_file() {
        for (n, _) in SHIPPED {
            let m = Manifest::find(n).unwrap();
            assert_eq!(&m.name, n);
            for arch in [Arch::Amd64, Arch::Arm64] {
                let assets = m.assets(arch).unwrap();
                assert_eq!(assets.len(), 6, "{n} {arch}");
                for a in assets {
                    let url = a.url.as_deref().unwrap();
                    assert!(url.ends_with(&format!("/{}", a.file)), "{url}");
                    assert!(url.starts_with("https://github.com/"));
                }
            }
        }
    }

    #[test]
    fn k3s_manifest_has_upstream_names() {
        let m = Manifest::find("k3s-v1.36.4+k3s1").unwrap();
        let f = |arch, role| m.asset(arch, role).unwrap().unwrap().file.clone();
        assert_eq!(f(Arch::Amd64, Role::K3s), "k3s");
        assert_eq!(f(Arch::Arm64, Role::K3s), "k3s-arm64");
        assert_eq!(
            f(Arch::Arm64, Role::AirgapImages),
            "k3s-airgap-images-arm64.tar.zst"
        );
        assert_eq!(f(Arch::Amd64, Role::K3sChecksums), "sha256sum-amd64.txt");
        assert_eq!(
            f(Arch::Amd64, Role::Nerdctl),
            "nerdctl-2.1.6-linux-amd64.tar.gz"
        );
        assert_eq!(
            f(Arch::Arm64, Role::NerdctlFull),
            "nerdctl-full-2.1.6-linux-arm64.tar.gz"
        );
        assert_eq!(f(Arch::Amd64, Role::NerdctlChecksums), "SHA256SUMS");
        assert_eq!(m.k3s_version, "v1.36.4+k3s1");
        let k3s = m.asset(Arch::Amd64, Role::K3s).unwrap().unwrap();
        assert_eq!(
            m.url_for(k3s, Some("http://127.0.0.1:8080/")).unwrap(),
            "http://127.0.0.1:8080/k3s-io/k3s/releases/download/v1.36.4%2Bk3s1/k3s"
        );
        assert_eq!(m.required(Arch::Amd64, false).unwrap().len(), 5);
        assert_eq!(m.required(Arch::Amd64, true).unwrap().len(), 6);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = SHIPPED[0]
            .1
            .replace("[nerdctl]\nversion", "[nerdctl]\nversoin");
        let e = Manifest::parse("x.toml", &text).unwrap_err().to_string();
        let line = text.lines().position(|l| l.starts_with("versoin")).unwrap() + 1;
        assert!(
            e.starts_with(&format!("x.toml:{line}: key `versoin`")),
            "{e}"
        );
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let text = SHIPPED[0].1.replacen(
            "{ url = \"https://github.com/k3s-io",
            "{ sha256 = \"xyz\", url = \"https://github.com/k3s-io",
            1,
        );
        let e = Manifest::parse("x.toml", &text).unwrap_err().to_string();
        assert!(
            e.contains("key `arch.amd64.k3s.sha256`") && e.contains("`xyz` is not a SHA-256"),
            "{e}"
        );
        let text = SHIPPED[0].1.replacen(
            "https://github.com/containerd",
            "https://example.com/containerd",
            1,
        );
        let e = Manifest::parse("x.toml", &text).unwrap_err().to_string();
        assert!(
            e.contains("key `arch.amd64.nerdctl.url`")
                && e.contains("does not start with upstream"),
            "{e}"
        );
        let text = SHIPPED[0].1.replace("[arch.arm64]", "[arch.riscv64]");
        let e = Manifest::parse("x.toml", &text).unwrap_err().to_string();
        assert!(e.contains("key `arch.riscv64`"), "{e}");
    }

    #[test]
    fn unknown_name_lists_shipped() {
        let e = Manifest::find("k3s-v0.0.0").unwrap_err().to_string();
        assert!(e.contains("k3s-v1.36.4+k3s1"), "{e}");
    }
}
