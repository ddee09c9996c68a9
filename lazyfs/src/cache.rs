//! One file's written-but-not-synced state, kept in memory over its backing file.
//!
//! A [`CachedFile`] is what a disk's volatile write cache holds for one file: the bytes
//! written since the last sync (as coalesced extents) and the size the file has since
//! then. Reads see those over the backing file. [`CachedFile::sync`] writes them to the
//! backing file and fsyncs it; dropping a `CachedFile` without syncing is a power cut for
//! that file: the backing file keeps what was last synced, nothing more.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A backing file and what was written to it, not yet synced.
#[derive(Debug)]
pub struct CachedFile {
    file: File,
    /// The backing file's length at the last sync (or when opened).
    synced_len: u64,
    /// The file's length as its users see it.
    len: u64,
    /// Backing bytes at or past this offset were truncated away since the last sync: they
    /// read as zeros even where the file has grown back over them.
    visible_backing: u64,
    /// Unsynced writes: offset to bytes, non-overlapping and not touching each other.
    extents: BTreeMap<u64, Vec<u8>>,
}

impl CachedFile {
    /// Caches writes to `file` (opened for reading and writing) from now on.
    pub fn new(file: File) -> io::Result<CachedFile> {
        let synced_len = file.metadata()?.len();
        Ok(CachedFile {
            file,
            synced_len,
            len: synced_len,
            visible_backing: synced_len,
            extents: BTreeMap::new(),
        })
    }

    /// The file's length as its users see it.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether anything written or truncated is not synced yet.
    pub fn is_dirty(&self) -> bool {
        !self.extents.is_empty()
            || self.len != self.synced_len
            || self.visible_backing < self.synced_len
    }

    /// The backing file, for its metadata.
    pub fn backing(&self) -> &File {
        &self.file
    }

    /// Up to `size` bytes from `offset`, as the file's users see them.
    pub fn read(&self, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let end = self.len.min(offset.saturating_add(u64::from(size)));
        let mut buf = vec![0u8; to_usize(end - offset)?];
        let backing_end = end.min(self.visible_backing).min(self.synced_len);
        if backing_end > offset {
            let part = &mut buf[..to_usize(backing_end - offset)?];
            read_full_at(&self.file, part, offset)?;
        }
        for (&start, data) in self.overlapping(offset, end) {
            let data_end = start + data.len() as u64;
            let from = start.max(offset);
            let to = data_end.min(end);
            let dst = &mut buf[to_usize(from - offset)?..to_usize(to - offset)?];
            dst.copy_from_slice(&data[to_usize(from - start)?..to_usize(to - start)?]);
        }
        Ok(buf)
    }

    /// Writes `data` at `offset`, in memory only.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        // Merge every extent that overlaps or touches the new one into one buffer.
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .filter(|(start, bytes)| **start + bytes.len() as u64 >= offset)
            .map(|(start, _)| *start)
            .collect();
        let mut start = offset;
        let mut merged_end = end;
        for s in &touching {
            let len = self.extents.get(s).map_or(0, |b| b.len() as u64);
            start = start.min(*s);
            merged_end = merged_end.max(s + len);
        }
        let mut merged = vec![0u8; to_usize(merged_end - start)?];
        for s in touching {
            if let Some(bytes) = self.extents.remove(&s) {
                let at = to_usize(s - start)?;
                merged[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        let at = to_usize(offset - start)?;
        merged[at..at + data.len()].copy_from_slice(data);
        self.extents.insert(start, merged);
        self.len = self.len.max(end);
        Ok(())
    }

    /// Truncates or extends the file to `len`, in memory only.
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        if len < self.len {
            let cut: Vec<u64> = self
                .extents
                .range(..)
                .filter(|(s, b)| **s + b.len() as u64 > len)
                .map(|(s, _)| *s)
                .collect();
            for s in cut {
                if s >= len {
                    self.extents.remove(&s);
                } else if let Some(bytes) = self.extents.get_mut(&s) {
                    bytes.truncate(to_usize(len - s)?);
                }
            }
        }
        self.visible_backing = self.visible_backing.min(len);
        self.len = len;
        Ok(())
    }

    /// Writes what is cached to the backing file and fsyncs it (`fdatasync` if
    /// `data_only`). On an error the cache keeps everything, so a retry writes it again.
    pub fn sync(&mut self, data_only: bool) -> io::Result<()> {
        if self.visible_backing < self.synced_len {
            self.file.set_len(self.visible_backing)?;
        }
        for (start, bytes) in &self.extents {
            self.file.write_all_at(bytes, *start)?;
        }
        if self.file.metadata()?.len() != self.len {
            self.file.set_len(self.len)?;
        }
        if data_only {
            self.file.sync_data()?;
        } else {
            self.file.sync_all()?;
        }
        self.extents.clear();
        self.synced_len = self.len;
        self.visible_backing = self.len;
        Ok(())
    }

    fn overlapping(&self, offset: u64, end: u64) -> impl Iterator<Item = (&u64, &Vec<u8>)> {
        self.extents
            .range(..end)
            .filter(move |(start, bytes)| **start + bytes.len() as u64 > offset)
    }
}

/// Reads `buf.len()` bytes at `offset`, zero-filling past the backing file's end.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::path::Path;

    fn open(path: &Path) -> CachedFile {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        CachedFile::new(file).unwrap()
    }

    #[test]
    fn reads_see_unsynced_writes_over_the_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut f = open(&path);
        f.write(3, b"abc").unwrap();
        f.write(8, b"XYZW").unwrap();
        assert_eq!(f.len(), 12);
        assert_eq!(f.read(0, 100).unwrap(), b"012abc67XYZW");
        assert_eq!(f.read(4, 3).unwrap(), b"bc6");
        assert_eq!(f.read(12, 10).unwrap(), b"");
        // Nothing reached the backing file.
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
    }

    #[test]
    fn overlapping_and_touching_writes_coalesce() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = open(&dir.path().join("f"));
        f.write(10, b"bbbb").unwrap();
        f.write(0, b"aaaa").unwrap();
        f.write(4, b"cccccc").unwrap();
        f.write(12, b"dddd").unwrap();
        assert_eq!(f.extents.len(), 1);
        assert_eq!(f.read(0, 100).unwrap(), b"aaaaccccccbbdddd");
    }

    #[test]
    fn written_but_not_synced_data_is_gone_after_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = open(&path);
        f.write(0, b"synced").unwrap();
        f.sync(true).unwrap();
        f.write(6, b" and lost").unwrap();
        f.write(0, b"SYNCED").unwrap();
        assert_eq!(f.read(0, 100).unwrap(), b"SYNCED and lost");
        drop(f); // the power cut
        assert_eq!(std::fs::read(&path).unwrap(), b"synced");
    }

    #[test]
    fn synced_data_survives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = open(&path);
        f.write(0, b"hello").unwrap();
        f.write(100, b"world").unwrap();
        f.sync(false).unwrap();
        assert!(!f.is_dirty());
        drop(f);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 105);
        assert_eq!(&on_disk[..5], b"hello");
        assert!(on_disk[5..100].iter().all(|b| *b == 0));
        assert_eq!(&on_disk[100..], b"world");
        let reopened = open(&path);
        assert_eq!(reopened.read(0, 200).unwrap(), on_disk);
    }

    #[test]
    fn truncation_is_cached_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut f = open(&path);
        f.set_len(4).unwrap();
        f.write(6, b"xy").unwrap();
        // The truncated-away backing bytes read as zeros, not as the old "45".
        assert_eq!(f.read(0, 100).unwrap(), b"0123\0\0xy");
        assert!(f.is_dirty());
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");

        let mut f = open(&path);
        f.set_len(4).unwrap();
        f.write(6, b"xy").unwrap();
        f.sync(true).unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), b"0123\0\0xy");
    }

    #[test]
    fn truncation_trims_unsynced_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = open(&dir.path().join("f"));
        f.write(0, b"abcdefgh").unwrap();
        f.set_len(3).unwrap();
        f.set_len(6).unwrap();
        assert_eq!(f.read(0, 100).unwrap(), b"abc\0\0\0");
    }
}
