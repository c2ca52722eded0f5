//! The data partition: an ext4 holding the image's /var, marked seeded
//! (`populate`, see data_seed.rs; with SELinux a labelled copy). It starts
//! small; first boot grows it to the medium.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::{self, Cmd};
use crate::ids::Uuid;

pub fn make(
    out: &Path,
    size: u64,
    label: &str,
    uuid: Uuid,
    hash_seed: Uuid,
    epoch: u64,
    populate: Option<&Path>,
) -> Result<()> {
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.set_len(size)?;
    drop(f);
    Cmd::new(cmd::MKE2FS)
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", label])
        .arg("-U")
        .arg(uuid.to_string())
        // hash_seed and the faked clock make the bytes reproducible; resize_inode
        // reserve lets first boot grow it far online.
        .arg("-E")
        .arg(format!(
            "hash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0"
        ))
        .args(populate.map(|d| format!("-d{}", d.display())))
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .run()
        .context("making the ext4 data filesystem failed")?;
    Ok(())
}
