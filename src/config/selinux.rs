//! The `[selinux]` section of edgeimg.toml: the mode the image boots in and
//! extra policy modules built and installed beside edgeimg's own.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SelinuxMode {
    Enforcing,
    Permissive,
    #[default]
    Disabled,
}

impl SelinuxMode {
    /// The value of SELINUX= in /etc/selinux/config.
    pub fn as_str(self) -> &'static str {
        match self {
            SelinuxMode::Enforcing => "enforcing",
            SelinuxMode::Permissive => "permissive",
            SelinuxMode::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelinuxSection {
    #[serde(default)]
    pub mode: SelinuxMode,
    /// Extra policy modules: a `.te` file (with an optional `.fc` beside it)
    /// or a directory holding one, relative to the config file.
    #[serde(default)]
    pub modules: Vec<Spanned<String>>,
}

/// The validated SELinux part of a [`super::Config`] (None when disabled).
#[derive(Debug, Clone)]
pub struct SelinuxConfig {
    pub mode: SelinuxMode,
    /// Extra modules' `.te` files, in config order (edgeimg's own comes first).
    pub modules: Vec<PathBuf>,
}

/// edgeimg's own module (selinux-policies/edgeimg-k3s/): a config may not
/// name a module of its own the same.
pub const OWN_MODULE: &str = "edgeimg_k3s";

/// Packages an image with SELinux on needs on top of the base.
pub const PACKAGES: &[&str] = &["selinux-policy-default", "policycoreutils", "selinux-utils"];

/// Resolves a module entry to its `.te` file: the file itself, or the single
/// `.te` in a directory.
pub fn resolve_module(p: &Path) -> Result<PathBuf, String> {
    if p.is_file() {
        return if p.extension().is_some_and(|e| e == "te") {
            Ok(p.to_path_buf())
        } else {
            Err("is not a .te file".into())
        };
    }
    if p.is_dir() {
        let mut te: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("cannot read it: {e}"))?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|f| f.extension().is_some_and(|e| e == "te"))
            .collect();
        te.sort();
        return match te.len() {
            1 => Ok(te.remove(0)),
            0 => Err("holds no .te file".into()),
            n => Err(format!("holds {n} .te files (one module per directory)")),
        };
    }
    Err("does not exist".into())
}

pub fn validate(
    s: &SelinuxSection,
    base_dir: &Path,
    invalid: &dyn Fn(std::ops::Range<usize>, &str, String) -> super::ConfigError,
) -> Result<Option<SelinuxConfig>, super::ConfigError> {
    if s.mode == SelinuxMode::Disabled {
        if let Some(m) = s.modules.first() {
            return Err(invalid(
                m.span(),
                "selinux.modules",
                "modules are listed but selinux.mode is \"disabled\" (set it to \"enforcing\" or \"permissive\")".into(),
            ));
        }
        return Ok(None);
    }
    let mut modules = Vec::new();
    for m in &s.modules {
        let p = base_dir.join(m.get_ref());
        let te = resolve_module(&p).map_err(|why| {
            invalid(
                m.span(),
                "selinux.modules",
                format!("`{}` {why} (resolved to {})", m.get_ref(), p.display()),
            )
        })?;
        let name = te.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if name == OWN_MODULE
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                m.span(),
                "selinux.modules",
                format!(
                    "`{}`: module name `{name}` is reserved or not letters, digits, '_', '-'",
                    m.get_ref()
                ),
            ));
        }
        modules.push(te);
    }
    Ok(Some(SelinuxConfig {
        mode: s.mode,
        modules,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_a_te_file_or_a_directory_with_one() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("mysite");
        std::fs::create_dir(&dir).unwrap();
        assert!(resolve_module(&dir).unwrap_err().contains("no .te"));
        std::fs::write(dir.join("mysite.te"), "module mysite 1.0;\n").unwrap();
        std::fs::write(dir.join("mysite.fc"), "").unwrap();
        assert_eq!(resolve_module(&dir).unwrap(), dir.join("mysite.te"));
        assert_eq!(
            resolve_module(&dir.join("mysite.te")).unwrap(),
            dir.join("mysite.te")
        );
        assert!(
            resolve_module(&dir.join("mysite.fc"))
                .unwrap_err()
                .contains("not a .te")
        );
        std::fs::write(dir.join("other.te"), "").unwrap();
        assert!(resolve_module(&dir).unwrap_err().contains("2 .te files"));
    }

    #[test]
    fn the_own_module_name_is_reserved() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("edgeimg_k3s.te"), "").unwrap();
        let text = "[image]\nname = \"x\"\n\n[selinux]\nmode = \"permissive\"\nmodules = [\"edgeimg_k3s.te\"]\n";
        let e = crate::config::parse("edgeimg.toml", text, d.path(), None).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
    }
}
