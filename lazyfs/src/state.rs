//! What a mounted LazyFs knows: inode numbers, open files with their caches, and which
//! directory entries were created since they were last made durable.

use crate::cache::CachedFile;
use crate::inodes::Inodes;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A regular file that is open, or was written and not synced since.
#[derive(Debug)]
pub struct Node {
    pub cache: CachedFile,
    /// Open FUSE handles on it.
    pub open: usize,
}

#[derive(Debug)]
pub struct State {
    pub backing: PathBuf,
    /// False after the power cut: every operation fails with EIO.
    pub powered: bool,
    pub inodes: Inodes,
    pub nodes: HashMap<u64, Node>,
    /// Open handle to inode.
    pub handles: HashMap<u64, u64>,
    next_handle: u64,
    /// Files and directories created (or made by mkdir) in this mount whose directory
    /// entry is not durable yet: no fsync of them, or below them, or of their directory.
    pub new_entries: HashSet<u64>,
}

impl State {
    pub fn new(backing: PathBuf) -> State {
        State {
            backing,
            powered: true,
            inodes: Inodes::new(),
            nodes: HashMap::new(),
            handles: HashMap::new(),
            next_handle: 1,
            new_entries: HashSet::new(),
        }
    }

    /// The backing path of `ino`.
    pub fn backing_path(&self, ino: u64) -> io::Result<PathBuf> {
        let relative = self
            .inodes
            .path(ino)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Ok(self.backing.join(relative))
    }

    /// The relative path of `name` in directory `parent`.
    pub fn child(&self, parent: u64, name: &std::ffi::OsStr) -> io::Result<PathBuf> {
        let dir = self
            .inodes
            .path(parent)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Ok(dir.join(name))
    }

    /// Opens a handle on regular file `ino`, caching its writes from now on.
    pub fn open(&mut self, ino: u64) -> io::Result<u64> {
        if !self.nodes.contains_key(&ino) {
            let file = open_backing(&self.backing_path(ino)?)?;
            let cache = CachedFile::new(file)?;
            self.nodes.insert(ino, Node { cache, open: 0 });
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open += 1;
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(handle, ino);
        Ok(handle)
    }

    /// Closes `handle`; a clean file with no handles left leaves the cache.
    pub fn release(&mut self, handle: u64) {
        let Some(ino) = self.handles.remove(&handle) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 && !node.cache.is_dirty() {
                self.nodes.remove(&ino);
            }
        }
    }

    /// The cached file behind `ino`, opening it if it has no node (for truncate by path).
    pub fn node_mut(&mut self, ino: u64) -> io::Result<&mut Node> {
        if !self.nodes.contains_key(&ino) {
            let file = open_backing(&self.backing_path(ino)?)?;
            let cache = CachedFile::new(file)?;
            self.nodes.insert(ino, Node { cache, open: 0 });
        }
        self.nodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
    }

    /// Forgets an unlinked or replaced inode unless a handle still holds it.
    pub fn forget_path(&mut self, ino: u64) {
        self.new_entries.remove(&ino);
        if self.nodes.get(&ino).is_some_and(|n| n.open == 0) {
            self.nodes.remove(&ino);
        }
    }

    /// An fsync of `ino` makes the directory entries on its path durable (as a journaling
    /// filesystem's commit would), and, for a directory, the entries in it.
    pub fn entries_synced(&mut self, ino: u64, directory: bool) {
        let Some(path) = self.inodes.path(ino).map(Path::to_owned) else {
            return;
        };
        let mut durable: Vec<u64> = Vec::new();
        for ancestor in path.ancestors() {
            durable.push(self.inodes.number(ancestor));
        }
        if directory {
            for new in &self.new_entries {
                if self.inodes.path(*new).and_then(Path::parent) == Some(path.as_path()) {
                    durable.push(*new);
                }
            }
        }
        for ino in durable {
            self.new_entries.remove(&ino);
        }
    }

    /// The power cut: unsynced data is dropped, new entries that were not made durable
    /// are removed from the backing directory, and everything after fails.
    pub fn cut_power(&mut self) {
        self.powered = false;
        self.nodes.clear();
        self.handles.clear();
        let mut lost: Vec<PathBuf> = self
            .new_entries
            .drain()
            .filter_map(|ino| self.inodes.path(ino).map(|p| self.backing.join(p)))
            .collect();
        // Deepest first, so a lost directory's lost children go before it.
        lost.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in lost {
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(e) => Err(e),
            };
            if let Err(error) = removed
                && error.kind() != io::ErrorKind::NotFound
            {
                eprintln!(
                    "lazyfs: removing {} at the power cut: {error}",
                    path.display()
                );
            }
        }
    }
}

/// Opens a backing file for reading and writing (we may need to write it at a sync
/// whatever the handle's mode), or for reading only where writing is refused.
fn open_backing(path: &Path) -> io::Result<File> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => Ok(file),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EROFS) =>
        {
            File::open(path)
        }
        Err(e) => Err(e),
    }
}
