//! Reads extended attributes out of an EROFS image file, unprivileged: no
//! mount, no kernel module. erofs-utils 1.5's dump.erofs does not print
//! xattrs, so the tests read them from the on-disk format directly
//! (Documentation/filesystems/erofs.rst, include/erofs_fs.h): superblock,
//! inodes (compact/extended), their inline and shared xattrs, and
//! uncompressed directories (mkfs.erofs never compresses those).

use std::collections::BTreeMap;

const SUPER_OFFSET: usize = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
/// EROFS_XATTR_INDEX_SECURITY: names in the "security." namespace.
const INDEX_SECURITY: u8 = 6;

pub struct Erofs {
    img: Vec<u8>,
    blksz: usize,
    meta: usize,
    xattr: usize,
    root_nid: u64,
}

struct Inode {
    mode: u16,
    size: u64,
    layout: u16,
    raw_blkaddr: usize,
    /// Offset of the inline xattr body, its size, and where inline data starts.
    xattr_at: usize,
    xattr_size: usize,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

impl Erofs {
    pub fn open(img: Vec<u8>) -> Erofs {
        let sb = &img[SUPER_OFFSET..];
        assert_eq!(u32_at(sb, 0), MAGIC, "not an EROFS image");
        let blksz = 1usize << sb[12];
        Erofs {
            blksz,
            root_nid: u16_at(sb, 14) as u64,
            meta: u32_at(sb, 40) as usize * blksz,
            xattr: u32_at(sb, 44) as usize * blksz,
            img,
        }
    }

    fn inode(&self, nid: u64) -> Inode {
        let at = self.meta + nid as usize * 32;
        let b = &self.img[at..];
        let format = u16_at(b, 0);
        let extended = format & 1 == 1;
        let icount = u16_at(b, 2) as usize;
        let isize = if extended { 64 } else { 32 };
        Inode {
            mode: u16_at(b, 4),
            size: if extended {
                u64_at(b, 8)
            } else {
                u32_at(b, 8) as u64
            },
            layout: (format >> 1) & 7,
            raw_blkaddr: u32_at(b, 16) as usize,
            xattr_at: at + isize,
            xattr_size: if icount == 0 {
                0
            } else {
                12 + 4 * (icount - 1)
            },
        }
    }

    /// The inode's data (directories only: flat plain or flat inline).
    fn data(&self, ino: &Inode) -> Vec<u8> {
        let size = ino.size as usize;
        if size == 0 {
            return Vec::new();
        }
        match ino.layout {
            0 => {
                let at = ino.raw_blkaddr * self.blksz;
                self.img[at..at + size].to_vec()
            }
            2 => {
                // All blocks but the last at raw_blkaddr; the tail follows
                // the inode and its xattrs.
                let nblocks = size.div_ceil(self.blksz);
                let head = (nblocks.saturating_sub(1)) * self.blksz;
                let mut v = Vec::with_capacity(size);
                if head > 0 {
                    let at = ino.raw_blkaddr * self.blksz;
                    v.extend_from_slice(&self.img[at..at + head]);
                }
                let tail = ino.xattr_at + ino.xattr_size;
                v.extend_from_slice(&self.img[tail..tail + (size - head)]);
                v
            }
            l => panic!("unsupported directory data layout {l}"),
        }
    }

    fn dir_entries(&self, ino: &Inode) -> Vec<(String, u64)> {
        let data = self.data(ino);
        let mut out = Vec::new();
        for chunk in data.chunks(self.blksz) {
            let count = u16_at(chunk, 8) as usize / 12;
            for i in 0..count {
                let nid = u64_at(chunk, i * 12);
                let start = u16_at(chunk, i * 12 + 8) as usize;
                let end = if i + 1 < count {
                    u16_at(chunk, (i + 1) * 12 + 8) as usize
                } else {
                    chunk.len()
                };
                let raw = &chunk[start..end];
                let raw = raw.split(|&c| c == 0).next().unwrap();
                let name = String::from_utf8_lossy(raw).into_owned();
                if name != "." && name != ".." {
                    out.push((name, nid));
                }
            }
        }
        out
    }

    /// One xattr entry at `at`: (index, name, value, size with padding).
    fn entry(&self, at: usize) -> (u8, Vec<u8>, Vec<u8>, usize) {
        let b = &self.img[at..];
        let (nlen, index, vlen) = (b[0] as usize, b[1], u16_at(b, 2) as usize);
        let name = b[4..4 + nlen].to_vec();
        let value = b[4 + nlen..4 + nlen + vlen].to_vec();
        (index, name, value, (4 + nlen + vlen).div_ceil(4) * 4)
    }

    /// The inode's `security.<name>` value, inline or shared.
    fn security_xattr(&self, ino: &Inode, name: &str) -> Option<Vec<u8>> {
        if ino.xattr_size == 0 {
            return None;
        }
        let shared = self.img[ino.xattr_at + 4] as usize;
        let mut found = None;
        for i in 0..shared {
            let id = u32_at(&self.img, ino.xattr_at + 12 + 4 * i) as usize;
            let (idx, n, v, _) = self.entry(self.xattr + id * 4);
            if idx == INDEX_SECURITY && n == name.as_bytes() {
                found = Some(v);
            }
        }
        let mut at = ino.xattr_at + 12 + 4 * shared;
        let end = ino.xattr_at + ino.xattr_size;
        while at < end {
            let (idx, n, v, len) = self.entry(at);
            if idx == INDEX_SECURITY && n == name.as_bytes() {
                found = Some(v);
            }
            at += len;
        }
        found
    }

    fn lookup(&self, path: &str) -> Option<Inode> {
        let mut nid = self.root_nid;
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let dir = self.inode(nid);
            assert_eq!(
                dir.mode & S_IFMT,
                S_IFDIR,
                "{path}: {comp} under a non-directory"
            );
            nid = self
                .dir_entries(&dir)
                .into_iter()
                .find(|(n, _)| n == comp)?
                .1;
        }
        Some(self.inode(nid))
    }

    /// `security.selinux` of `path` (absolute in the image), without the
    /// trailing NUL some writers store; `None` when the path or label is absent.
    pub fn selinux_label(&self, path: &str) -> Option<String> {
        let ino = self.lookup(path)?;
        let v = self.security_xattr(&ino, "selinux")?;
        let v = v.strip_suffix(&[0]).unwrap_or(&v);
        Some(String::from_utf8_lossy(v).into_owned())
    }

    /// Every path's `security.selinux` (`None` for unlabelled), depth first.
    pub fn all_labels(&self) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![("/".to_string(), self.root_nid)];
        while let Some((path, nid)) = todo.pop() {
            let ino = self.inode(nid);
            let label = self.security_xattr(&ino, "selinux").map(|v| {
                let v = v.strip_suffix(&[0]).unwrap_or(&v);
                String::from_utf8_lossy(v).into_owned()
            });
            if ino.mode & S_IFMT == S_IFDIR {
                for (n, child) in self.dir_entries(&ino) {
                    let p = if path == "/" {
                        format!("/{n}")
                    } else {
                        format!("{path}/{n}")
                    };
                    todo.push((p, child));
                }
            }
            out.insert(path, label);
        }
        out
    }
}
