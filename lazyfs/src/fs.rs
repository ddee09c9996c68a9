//! The FUSE operations: a passthrough to the backing directory, with file data going
//! through [`crate::cache`] and everything failing with EIO after the power cut.

use crate::state::State;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::fs::{self, FileTimes, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attributes and entries are not cached by the kernel: sizes change under it.
const TTL: Duration = Duration::ZERO;

pub struct LazyFilesystem {
    pub state: Arc<Mutex<State>>,
}

type Result<T> = std::result::Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

impl LazyFilesystem {
    /// The state, or EIO after the power cut.
    fn powered(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.powered {
            Ok(state)
        } else {
            Err(Errno::EIO)
        }
    }

    fn attr_of(state: &State, ino: u64) -> Result<FileAttr> {
        let meta = match state.nodes.get(&ino) {
            Some(node) => node.cache.backing().metadata().map_err(errno)?,
            None => fs::symlink_metadata(state.backing_path(ino).map_err(errno)?).map_err(errno)?,
        };
        let mut attr = attr(ino, &meta)?;
        if let Some(node) = state.nodes.get(&ino) {
            attr.size = node.cache.len();
            attr.blocks = attr.size.div_ceil(512);
        }
        Ok(attr)
    }

    fn entry(state: &mut State, path: &Path) -> Result<FileAttr> {
        let ino = state.inodes.number(path);
        Self::attr_of(state, ino)
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr> {
        let mut state = self.powered()?;
        let path = state.child(parent.0, name).map_err(errno)?;
        let full = state.backing.join(&path);
        if let Err(e) = fs::symlink_metadata(&full) {
            return Err(errno(e));
        }
        Self::entry(&mut state, &path)
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr> {
        let mut state = self.powered()?;
        let path = state.backing_path(ino).map_err(errno)?;
        if let Some(mode) = mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777)).map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            state
                .node_mut(ino)
                .map_err(errno)?
                .cache
                .set_len(size)
                .map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(resolve(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(resolve(t));
            }
            fs::File::open(&path)
                .and_then(|f| f.set_times(times))
                .map_err(errno)?;
        }
        Self::attr_of(&state, ino)
    }

    fn do_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64)> {
        let mut state = self.powered()?;
        let path = state.child(parent.0, name).map_err(errno)?;
        let full = state.backing.join(&path);
        let mut options = fs::OpenOptions::new();
        options.write(true).mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let existed = full.exists();
        options.open(&full).map_err(errno)?;
        let ino = state.inodes.number(&path);
        if !existed {
            state.new_entries.insert(ino);
        }
        let handle = state.open(ino).map_err(errno)?;
        if flags & libc::O_TRUNC != 0 {
            state
                .node_mut(ino)
                .map_err(errno)?
                .cache
                .set_len(0)
                .map_err(errno)?;
        }
        Ok((Self::attr_of(&state, ino)?, handle))
    }

    fn do_mkdir(&self, parent: INodeNo, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr> {
        let mut state = self.powered()?;
        let path = state.child(parent.0, name).map_err(errno)?;
        fs::DirBuilder::new()
            .mode(mode & !umask & 0o7777)
            .create(state.backing.join(&path))
            .map_err(errno)?;
        let ino = state.inodes.number(&path);
        state.new_entries.insert(ino);
        Self::attr_of(&state, ino)
    }

    fn do_remove(&self, parent: INodeNo, name: &OsStr, directory: bool) -> Result<()> {
        let mut state = self.powered()?;
        let path = state.child(parent.0, name).map_err(errno)?;
        let full = state.backing.join(&path);
        if directory {
            fs::remove_dir(&full).map_err(errno)?;
        } else {
            fs::remove_file(&full).map_err(errno)?;
        }
        if let Some(ino) = state.inodes.remove(&path) {
            state.forget_path(ino);
        }
        Ok(())
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        if !flags.is_empty() {
            return Err(Errno::EINVAL);
        }
        let mut state = self.powered()?;
        let from = state.child(parent.0, name).map_err(errno)?;
        let to = state.child(newparent.0, newname).map_err(errno)?;
        fs::rename(state.backing.join(&from), state.backing.join(&to)).map_err(errno)?;
        if let Some(replaced) = state.inodes.rename(&from, &to) {
            state.forget_path(replaced);
        }
        Ok(())
    }

    fn do_open(&self, ino: INodeNo) -> Result<u64> {
        let mut state = self.powered()?;
        state.open(ino.0).map_err(errno)
    }

    fn do_read(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>> {
        let state = self.powered()?;
        let node = state.nodes.get(&ino.0).ok_or(Errno::EBADF)?;
        node.cache.read(offset, size).map_err(errno)
    }

    fn do_write(&self, ino: INodeNo, offset: u64, data: &[u8]) -> Result<u32> {
        let mut state = self.powered()?;
        let node = state.nodes.get_mut(&ino.0).ok_or(Errno::EBADF)?;
        node.cache.write(offset, data).map_err(errno)?;
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    fn do_fsync(&self, ino: INodeNo, datasync: bool) -> Result<()> {
        let mut state = self.powered()?;
        if let Some(node) = state.nodes.get_mut(&ino.0) {
            node.cache.sync(datasync).map_err(errno)?;
        }
        state.entries_synced(ino.0, false);
        Ok(())
    }

    fn do_fsyncdir(&self, ino: INodeNo) -> Result<()> {
        let mut state = self.powered()?;
        let path = state.backing_path(ino.0).map_err(errno)?;
        fs::File::open(&path)
            .and_then(|d| d.sync_all())
            .map_err(errno)?;
        state.entries_synced(ino.0, true);
        Ok(())
    }

    fn do_readdir(&self, ino: INodeNo) -> Result<Vec<(u64, FileType, std::ffi::OsString)>> {
        let mut state = self.powered()?;
        let relative = state
            .inodes
            .path(ino.0)
            .map(Path::to_owned)
            .ok_or(Errno::ENOENT)?;
        let parent = relative.parent().map_or(ino.0, |p| state.inodes.number(p));
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        for entry in fs::read_dir(state.backing.join(&relative)).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let child = state.inodes.number(&relative.join(entry.file_name()));
            entries.push((child, kind, entry.file_name()));
        }
        Ok(entries)
    }
}

fn resolve(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
        Err(_) => UNIX_EPOCH,
    }
}

fn attr(ino: u64, meta: &Metadata) -> Result<FileAttr> {
    let kind = FileType::from_std(meta.file_type()).ok_or(Errno::EIO)?;
    Ok(FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: 4096,
        flags: 0,
    })
}

fn reply_empty(reply: ReplyEmpty, result: Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

/// Every handle bypasses the kernel's page cache, so every read and write reaches us.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

impl Filesystem for LazyFilesystem {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.do_lookup(parent, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self
            .powered()
            .and_then(|state| Self::attr_of(&state, ino.0));
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.do_mkdir(parent, name, mode, umask));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_remove(parent, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_remove(parent, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.do_rename(parent, name, newparent, newname, flags),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino) {
            Ok(handle) => reply.opened(FileHandle(handle), OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(parent, name, mode, umask, flags) {
            Ok((attr, handle)) => {
                reply.created(&TTL, &attr, Generation(0), FileHandle(handle), OPEN_FLAGS)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(ino, offset, data) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply_empty(reply, self.powered().map(|_| ()));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.powered().map(|mut state| state.release(fh.0));
        reply_empty(reply, result);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.do_fsync(ino, datasync));
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.powered() {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.do_readdir(ino) {
            Ok(entries) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.do_fsyncdir(ino));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.powered().map(|_| ()));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // Not modelled: callers fall back to writing (posix_fallocate) or do without.
        reply.error(Errno::EOPNOTSUPP);
    }
}
