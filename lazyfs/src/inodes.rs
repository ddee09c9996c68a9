//! FUSE inode numbers for the backing directory's paths.
//!
//! Numbers are handed out on first sight of a path and never reused within a mount;
//! they follow renames and are dropped on unlink, so a new file at an old path gets a new
//! number (and a new cache).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The root directory's inode number, fixed by FUSE.
pub const ROOT: u64 = 1;

#[derive(Debug)]
pub struct Inodes {
    paths: HashMap<u64, PathBuf>,
    numbers: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    pub fn new() -> Inodes {
        let mut inodes = Inodes {
            paths: HashMap::new(),
            numbers: HashMap::new(),
            next: ROOT + 1,
        };
        inodes.paths.insert(ROOT, PathBuf::new());
        inodes.numbers.insert(PathBuf::new(), ROOT);
        inodes
    }

    /// The path of `ino`, relative to the backing directory.
    pub fn path(&self, ino: u64) -> Option<&Path> {
        self.paths.get(&ino).map(PathBuf::as_path)
    }

    /// The number of `path` (relative), handing out a new one on first sight.
    pub fn number(&mut self, path: &Path) -> u64 {
        if let Some(ino) = self.numbers.get(path) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.paths.insert(ino, path.to_owned());
        self.numbers.insert(path.to_owned(), ino);
        ino
    }

    /// Forgets `path` (unlinked), returning its number if it had one.
    pub fn remove(&mut self, path: &Path) -> Option<u64> {
        let ino = self.numbers.remove(path)?;
        self.paths.remove(&ino);
        Some(ino)
    }

    /// Moves `from` and everything under it to `to`; returns the number `to` had before,
    /// if any (it was replaced).
    pub fn rename(&mut self, from: &Path, to: &Path) -> Option<u64> {
        let replaced = self.remove(to);
        let moved: Vec<(PathBuf, u64)> = self
            .numbers
            .iter()
            .filter(|(path, _)| path.starts_with(from))
            .map(|(path, ino)| (path.clone(), *ino))
            .collect();
        for (old, ino) in moved {
            let Ok(rest) = old.strip_prefix(from) else {
                continue;
            };
            let new = if rest.as_os_str().is_empty() {
                to.to_owned()
            } else {
                to.join(rest)
            };
            self.numbers.remove(&old);
            self.numbers.insert(new.clone(), ino);
            self.paths.insert(ino, new);
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_renames_and_are_not_reused() {
        let mut inodes = Inodes::new();
        let dir = inodes.number(Path::new("d"));
        let file = inodes.number(Path::new("d/f"));
        assert_eq!(inodes.number(Path::new("d/f")), file);
        assert_eq!(inodes.rename(Path::new("d"), Path::new("e")), None);
        assert_eq!(inodes.path(dir), Some(Path::new("e")));
        assert_eq!(inodes.path(file), Some(Path::new("e/f")));
        assert_eq!(inodes.remove(Path::new("e/f")), Some(file));
        assert_ne!(inodes.number(Path::new("e/f")), file);
    }
}
