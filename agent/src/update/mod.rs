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
pub mod rpi;

/// Where an image built with `--signing-key` carries the trusted public key.
pub const TRUSTED_KEY_PATH: &str = "/usr/share/edgeimg/update.pub";

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
        "{}: OK: {} build {} for {} ({}), signed with key {}",
        file.display(),
        v.header.name,
        v.header.build_id,
        v.header.board,
        v.header.arch,
        v.header.key_id
    );
    Ok(())
}
