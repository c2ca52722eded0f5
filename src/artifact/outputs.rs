//! The artifacts step of a build: beside the raw image, its compressed copy
//! (the config's compression), its bmap, and at the end `SHA256SUMS` over
//! every output, all in the build's staging directory.

use std::path::Path;

use anyhow::Result;

use crate::context::Ctx;

/// The compressed copy and the bmap of `img` (`size` bytes, for progress),
/// written into `dir`; returns their names.
pub fn write_image_artifacts(ctx: &Ctx, img: &Path, size: u64, dir: &Path) -> Result<Vec<String>> {
    let img_name = ctx.plan.image_file();
    let mut names = Vec::new();
    let compression = ctx.cfg.compression;
    if let Some(ext) = compression.extension() {
        let name = format!("{img_name}.{ext}");
        ctx.progress.timed(
            || {
                let bar = ctx.progress.bytes(&format!("compress {ext}"), size);
                super::compress::compress(img, &dir.join(&name), compression, &|n| {
                    bar.set_position(n)
                })?;
                bar.finish_and_clear();
                anyhow::Ok(())
            },
            |_| format!("artifact: {name}"),
        )?;
        names.push(name);
    }
    let bmap_name = format!("{img_name}.bmap");
    let mut bmap = std::fs::File::create(dir.join(&bmap_name))?;
    super::bmap::write_bmap(img, &mut bmap)?;
    names.push(bmap_name);
    Ok(names)
}

/// `SHA256SUMS` over `names` in `dir`; returns its name.
pub fn write_sums_file(dir: &Path, names: &[String]) -> Result<String> {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut sums = std::fs::File::create(dir.join("SHA256SUMS"))?;
    super::checksums::write_sha256sums(dir, &refs, &mut sums)?;
    Ok("SHA256SUMS".into())
}
