//! Moving a verified update's payloads to where they go: a slot device, or
//! a file on the boot partition. Each copy re-hashes what it reads, so a file
//! changed after verification is never installed. The source is the update
//! file, or (a pulled update) the update as it was streamed: its root image
//! in the slot, everything else in a small file on the data partition.

use crate::error::{Context, Result};
use crate::fsutil;
use crate::update::format::{self, Verified};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Copies payload `name` from `f` to `out`, re-hashing on the way (the file
/// could change after verification), and returns nothing but errors.
pub(crate) fn copy_payload(
    f: &mut (impl Read + Seek),
    v: &Verified,
    name: &str,
    out: &mut impl Write,
) -> Result<()> {
    let p = v.header.payload(name)?;
    f.seek(SeekFrom::Start(v.offset(p))).context("seek")?;
    let got = format::sha256_of(f, p.size, |b| out.write_all(b).context("writing"))?;
    if got != p.sha256 {
        crate::bail!("payload {name} changed while it was being installed");
    }
    Ok(())
}

/// Writes payload `name` to `dest` on the boot partition: a temporary file
/// beside it, synced, then renamed over it (FAT renames are atomic enough
/// that a power cut leaves the old or the new file, never half of one).
pub(crate) fn write_boot_file(
    f: &mut (impl Read + Seek),
    v: &Verified,
    name: &str,
    dest: &Path,
) -> Result<()> {
    let dir = dest.parent().expect("has a parent");
    fsutil::mkdir_p(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        dest.file_name().unwrap().to_string_lossy()
    ));
    // A leftover from an interrupted apply is removed, then the file is
    // created O_EXCL|O_NOFOLLOW: never opened through whatever is there.
    let _ = std::fs::remove_file(&tmp);
    let mut out = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| tmp.display().to_string())?
    };
    copy_payload(f, v, name, &mut out).with_context(|| tmp.display().to_string())?;
    out.sync_all().with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, dest).with_context(|| dest.display().to_string())?;
    fsutil::sync_dir(dir)
}
