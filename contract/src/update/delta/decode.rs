//! One zstd frame of a delta decoded, with its reference window as the
//! raw-content dictionary, into exactly the bytes its chunk says.

use crate::error::{Error, Result};

/// Decodes one frame into exactly `size` bytes, with `reference` (may be
/// empty) as its raw-content dictionary.
pub(super) fn decode_frame(frame: &[u8], reference: Vec<u8>, size: usize) -> Result<Vec<u8>> {
    use ruzstd::decoding::{Dictionary, FrameDecoder};
    let mut dec = FrameDecoder::new();
    let mut src = frame;
    // A frame compressed against a prefix names no dictionary: the
    // reference is given as a raw-content dictionary (id 1, never on the
    // wire) and forced after the frame header is read.
    let with_ref = !reference.is_empty();
    if with_ref {
        dec.add_dict(Dictionary {
            id: 1,
            fse: Default::default(),
            huf: Default::default(),
            dict_content: reference,
            offset_hist: [1, 4, 8],
        })
        .map_err(|e| Error::msg(format!("{e}")))?;
    }
    // A frame asking for a larger window than a delta uses is refused
    // before any buffer of that size exists.
    dec.set_max_window_size(1 << super::WINDOW_LOG);
    dec.init(&mut src)
        .map_err(|e| Error::msg(format!("zstd frame header: {e}")))?;
    if with_ref {
        dec.force_dict(1).map_err(|e| Error::msg(format!("{e}")))?;
    }
    let mut out = vec![0u8; size];
    let mut done = 0;
    while !dec.is_finished() {
        if done == size {
            // A frame that decodes to more than its chunk says.
            let mut probe = [0u8; 1];
            let (read, n) = dec
                .decode_from_to(src, &mut probe)
                .map_err(|e| Error::msg(format!("{e}")))?;
            src = &src[read..];
            if n > 0 {
                crate::bail!("the frame decodes to more than {size} bytes");
            }
            if read == 0 && !dec.is_finished() {
                crate::bail!("the frame is truncated");
            }
            continue;
        }
        let (read, n) = dec
            .decode_from_to(src, &mut out[done..])
            .map_err(|e| Error::msg(format!("{e}")))?;
        src = &src[read..];
        done += n;
        if read == 0 && n == 0 && !dec.is_finished() {
            crate::bail!("the frame is truncated");
        }
    }
    if done != size {
        crate::bail!("the frame decodes to {done} bytes, not {size}");
    }
    Ok(out)
}
