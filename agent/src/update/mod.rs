//! Signed update files and the A/B slot switch.
//!
//! [`format`] and [`keys`] come from the contract crate, shared with the host
//! tool (`edgeimg update verify`, `edgeimg build --update`), so the host and
//! the device run the very same verification. [`apply`] installs an update into the inactive
//! slot; [`health`] decides on a trial boot whether the new slot is good.

pub mod apply;
pub mod delta_base;
pub mod delta_cmd;
pub mod download;
pub mod efivar;
pub mod health;
pub mod payload;
pub mod pull;
pub mod rpi;
pub mod state;
pub mod stream;
pub mod tuf_client;
pub mod usb;

// The file format and keys are the builder's too: they live in the contract.
pub use edgeimg_contract::update::{GENERATION_PATH, TRUSTED_KEY_PATH, format, keys, window};

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
