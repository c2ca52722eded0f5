//! Signed update files and the A/B slot switch.
//!
//! [`format`] and [`keys`] are shared with the host tool (`edgeimg update
//! verify`, `edgeimg build --update`), so the host and the device run the
//! very same verification. [`apply`] installs an update into the inactive
//! slot; [`health`] decides on a trial boot whether the new slot is good.

pub mod apply;
pub mod efivar;
pub mod format;
pub mod health;
pub mod keys;
pub mod payload;
pub mod rpi;

/// Where an image built with `--signing-key` carries the trusted public key.
pub const TRUSTED_KEY_PATH: &str = "/usr/share/edgeimg/update.pub";

/// The generation (version floor) of the running image: `[update]
/// generation` of its config, one decimal number. Images built before the
/// floor existed have no such file: generation 0.
pub const GENERATION_PATH: &str = "/usr/lib/edgeimg/update-generation";

/// The generation this device runs ([`GENERATION_PATH`] on the read-only root).
pub fn running_generation(root: &crate::Root) -> crate::Result<u64> {
    let path = root.path(GENERATION_PATH);
    match crate::fsutil::read_opt(&path)? {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            crate::Error::msg(format!(
                "{}: {:?} is not a generation number",
                path.display(),
                text.trim()
            ))
        }),
    }
}

/// Boot attempts a new slot gets before the boot loader falls back.
pub const DEFAULT_TRIES: u32 = 3;

/// `update verify FILE` on the device: the trusted key, this board and architecture.
pub fn verify_trusted(root: &crate::Root, file: &std::path::Path) -> crate::Result<()> {
    let image = crate::config::load_image(root)?;
    let key = keys::read_public(&root.path(TRUSTED_KEY_PATH))?;
    let v = format::verify_file(
        file,
        &key,
        &format::Expect {
            board: Some(&image.board),
            arch: Some(&image.arch),
        },
    )?;
    println!(
        "{}: OK: {} build {} generation {} for {} ({}), signed with key {}; this device runs generation {}",
        file.display(),
        v.header.name,
        v.header.build_id,
        v.header.generation,
        v.header.board,
        v.header.arch,
        v.header.key_id,
        running_generation(root)?
    );
    Ok(())
}
