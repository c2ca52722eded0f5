//! Iterating a tar stream's members with bounded name headers.
//!
//! The `tar` crate reads a GNU long-name/long-link member or a PAX extended
//! header whole into memory before the member it describes, whatever size
//! its header claims: a few KiB of compressed archive can ask for gigabytes.
//! Here the archive is read in raw mode and those headers are handled by
//! hand, each refused above [`MAX_EXTENSION`] bytes.

use std::io::Read;

/// The most a long name, long link or PAX header may hold. Real ones hold a
/// path (at most 4096 bytes on Linux) and a few attributes.
pub const MAX_EXTENSION: u64 = 64 * 1024;

/// One member as [`for_each`] hands it over, with the long name / link from
/// the headers before it applied.
pub struct Member {
    pub name: String,
    pub link: Option<String>,
    pub kind: tar::EntryType,
    pub size: u64,
}

/// What the callback wants next.
pub enum Flow {
    Continue,
    Stop,
}

/// Why iterating failed: the archive itself, or the callback.
#[derive(Debug)]
pub enum Error<E> {
    Archive(String),
    Callback(E),
}

/// Values of `path` and `linkpath` in a PAX extended header.
fn pax_paths(data: &[u8]) -> (Option<String>, Option<String>) {
    let (mut path, mut link) = (None, None);
    let mut rest = data;
    // Records are "<len> <key>=<value>\n", len counting the whole record.
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&l| l > sp && l <= rest.len())
        else {
            break;
        };
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            let v = String::from_utf8_lossy(&rec[eq + 1..]).into_owned();
            match &rec[..eq] {
                b"path" => path = Some(v),
                b"linkpath" => link = Some(v),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    (path, link)
}

fn nul_trimmed(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
}

/// Calls `f` for every member of the tar stream `r` (long names applied,
/// name headers bounded). The entry is the member's data.
pub fn for_each<R: Read, E>(
    r: R,
    mut f: impl FnMut(&Member, &mut tar::Entry<'_, R>) -> Result<Flow, E>,
) -> Result<(), Error<E>> {
    let mut archive = tar::Archive::new(r);
    let entries = archive
        .entries()
        .map_err(|e| Error::Archive(format!("not a tar archive: {e}")))?
        .raw(true);
    // What the extension headers before a member set for it.
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut pax: (Option<String>, Option<String>) = (None, None);
    for (i, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| Error::Archive(format!("after {i} members: {e}")))?;
        let kind = entry.header().entry_type();
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| Error::Archive(format!("member {i}: bad size: {e}")))?;
        let is_ext = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if is_ext {
            if size > MAX_EXTENSION {
                return Err(Error::Archive(format!(
                    "member {i}: a {size}-byte name or PAX header (more than {} KiB): refused",
                    MAX_EXTENSION / 1024
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(MAX_EXTENSION)
                .read_to_end(&mut data)
                .map_err(|e| Error::Archive(format!("member {i}: {e}")))?;
            if kind.is_gnu_longname() {
                long_name = Some(nul_trimmed(&data));
            } else if kind.is_gnu_longlink() {
                long_link = Some(nul_trimmed(&data));
            } else if kind.is_pax_local_extensions() {
                pax = pax_paths(&data);
            }
            continue;
        }
        let name =
            pax.0.take().or(long_name.take()).unwrap_or_else(|| {
                String::from_utf8_lossy(&entry.header().path_bytes()).into_owned()
            });
        let link = pax.1.take().or(long_link.take()).or_else(|| {
            entry
                .header()
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        });
        let m = Member {
            name,
            link,
            kind,
            size,
        };
        match f(&m, &mut entry).map_err(Error::Callback)? {
            Flow::Continue => {}
            Flow::Stop => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    #[test]
    fn long_names_apply_and_huge_ones_are_refused_unread() {
        // A GNU long name applied to the member after it.
        let long = "d/".repeat(80) + "file";
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let mut names = vec![];
        for_each::<_, ()>(&data[..], |m, _| {
            names.push(m.name.clone());
            Ok(Flow::Continue)
        })
        .unwrap();
        assert_eq!(names, [long]);

        // A long-name header claiming 1 GiB: refused from its header alone.
        let mut data = header("././@LongLink", tar::EntryType::GNULongName, 1 << 30)
            .as_bytes()
            .to_vec();
        data.extend_from_slice(&[0u8; 4096]);
        let e = for_each::<_, ()>(&data[..], |_, _| Ok(Flow::Continue)).unwrap_err();
        match e {
            Error::Archive(m) => assert!(m.contains("1073741824-byte name or PAX header"), "{m}"),
            Error::Callback(()) => panic!(),
        }
        assert_eq!(
            pax_paths(b"20 path=a/b/c/d/e/f\n14 linkpath=x\n"),
            (Some("a/b/c/d/e/f".into()), Some("x".into()))
        );
    }

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        n: std::rc::Rc<std::cell::Cell<u64>>,
    }
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let k = self.inner.read(buf)?;
            self.n.set(self.n.get() + k as u64);
            Ok(k)
        }
    }

    /// A long-name or PAX header backed by a real 1 GiB of data (the `tar`
    /// crate would read all of it into memory): refused after its header,
    /// with under 1 MiB of the stream read.
    #[test]
    fn a_gigabyte_name_header_is_refused_after_reading_its_header_only() {
        for kind in [
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
            tar::EntryType::XHeader,
        ] {
            let h = header("././@LongLink", kind, 1 << 30);
            let n = std::rc::Rc::new(std::cell::Cell::new(0));
            let r = Counting {
                inner: std::io::Read::chain(
                    h.as_bytes().as_slice(),
                    std::io::repeat(b'a').take(1 << 30),
                ),
                n: n.clone(),
            };
            assert!(for_each::<_, ()>(r, |_, _| Ok(Flow::Continue)).is_err());
            assert!(n.get() < 1 << 20, "{kind:?}: read {} bytes", n.get());
        }
    }
}
