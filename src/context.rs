//! What every build step reads: the options the build was asked for, and
//! the build's context (config, plan, progress, the work directory and the
//! epoch every timestamp is pinned to).

use std::path::{Path, PathBuf};

use crate::artifact::Compression;
use crate::config::Config;
use crate::plan::Plan;
use crate::progress::Progress;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub config: Option<PathBuf>,
    pub board: Option<String>,
    pub out: PathBuf,
    pub refresh: bool,
    pub compression: Option<Compression>,
    pub quiet: bool,
    /// A directory holding the K3s bundle assets (upstream file names).
    pub bundle: Option<PathBuf>,
    /// The bundle lock file (default: edgeimg.lock beside the config).
    pub lock: Option<PathBuf>,
    /// Update signing key: the image trusts its public key.
    pub signing_key: Option<PathBuf>,
    /// Also write the signed update file (needs `signing_key`).
    pub update: bool,
    /// `--secure-boot-keys PREFIX`: replaces `[secure_boot] keys`.
    pub secure_boot_keys: Option<PathBuf>,
}

impl BuildOptions {
    /// The bundle lock this build reads: `--lock`, else edgeimg.lock beside
    /// the config.
    pub fn lock_path(&self, cfg: &Config) -> PathBuf {
        self.lock
            .clone()
            .unwrap_or_else(|| cfg.base_dir.join(crate::bundle::DEFAULT_LOCK))
    }
}

/// One build's context, handed to each step.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub plan: &'a Plan,
    pub opts: &'a BuildOptions,
    pub progress: &'a Progress,
    /// Every timestamp in the image (`SOURCE_DATE_EPOCH`, else the base's).
    pub epoch: u64,
    /// The build's private work directory (the tree, filesystem images).
    pub work: &'a Path,
}

impl Ctx<'_> {
    /// `boards/<name>.toml`: where a board's own values come from, for errors.
    pub fn board_file(&self) -> String {
        format!("boards/{}.toml", self.cfg.board.name)
    }
}

/// `SOURCE_DATE_EPOCH` if set (must be a number).
pub fn source_date_epoch() -> anyhow::Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")),
        Err(_) => Ok(None),
    }
}
