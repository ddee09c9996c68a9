//! LazyFs: a FUSE filesystem that forgets what was not fsynced, for power-loss tests.
//!
//! [`LazyFs::mount`] mirrors a backing directory at a mountpoint. Like a disk's volatile
//! write cache (and in the spirit of Jepsen's LazyFS), file data written through the mount
//! stays in LazyFs's memory until the file is fsynced: reads see it, the backing file does
//! not. `fsync`/`fdatasync` of a file writes that file's cached data (and size changes:
//! truncation, growth) to its backing file and fsyncs the backing file. `close` does not,
//! and neither does `sync_file_range`, which never reaches a FUSE filesystem.
//!
//! [`LazyFs::cut_power`] is the power cut: every unsynced write is discarded at once, and
//! every later operation on the mount fails with EIO. Unmount, mount a new `LazyFs` over the
//! same backing directory (the reboot), and you see what a machine would see after power
//! loss: what was fsynced, and only that.
//!
//! # Metadata
//!
//! - A file or directory created through the mount (`open(O_CREAT)`, `mkdir`) exists in the
//!   backing directory at once, but is removed again at the power cut unless its directory
//!   entry was made durable first: by an fsync of it or of anything below it, or by an fsync
//!   of its directory. An fsync thus persists the entries on the synced file's path, as a
//!   journaling filesystem's commit does in practice; POSIX strictly asks for an fsync of
//!   each new parent directory, which LazyFs does not demand.
//! - Rename, unlink, rmdir, chmod, chown and utimes pass straight through and are durable at
//!   once: LazyFs does not prove that a program orders or syncs those correctly.
//! - `fallocate` is refused (EOPNOTSUPP); hard links, symlinks, special files, extended
//!   attributes and locks held across processes through the filesystem are not supported
//!   (`flock`/`fcntl` locks are kept by the kernel, per mount).
//!
//! The kernel caches nothing: attributes have no TTL and files are opened with
//! `FOPEN_DIRECT_IO`, so every read and write reaches LazyFs. One thread serves the mount.

mod cache;
mod fs;
mod inodes;
mod state;

pub use cache::CachedFile;

use nix::errno::Errno;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A mounted LazyFs. Dropping it unmounts (lazily if the mount stays busy).
pub struct LazyFs {
    session: Option<fuser::BackgroundSession>,
    state: Arc<Mutex<state::State>>,
    mountpoint: PathBuf,
}

impl LazyFs {
    /// Mounts a LazyFs mirroring `backing` (a directory) at `mountpoint` (an empty
    /// directory). Needs /dev/fuse and the right to mount (root, or fusermount).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyFs> {
        let backing = backing.canonicalize()?;
        if !backing.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", backing.display()),
            ));
        }
        let state = Arc::new(Mutex::new(state::State::new(backing)));
        let filesystem = fs::LazyFilesystem {
            state: Arc::clone(&state),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("lazyfs".into()),
            fuser::MountOption::Subtype("lazyfs".into()),
        ];
        let session = fuser::spawn_mount(filesystem, mountpoint, &config)?;
        Ok(LazyFs {
            session: Some(session),
            state,
            mountpoint: mountpoint.to_owned(),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every write not yet fsynced is gone, new directory entries not made
    /// durable are removed, and every later operation on the mount fails with EIO.
    pub fn cut_power(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cut_power();
    }

    /// Unmounts and waits for the filesystem's thread. Unsynced writes are discarded, as
    /// at a power cut: unmounting is not a clean shutdown (fsync first for that). A busy
    /// mount is retried for a few seconds, then detached lazily and reported as EBUSY.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.cut_power();
        match umount_waiting_while_busy(&self.mountpoint) {
            Ok(()) => {}
            // Not root: only fusermount (which mounted it) may unmount it; fuser runs it.
            Err(Errno::EPERM) => return ended_cleanly(session.umount_and_join()),
            Err(Errno::EBUSY) => {
                // A process still has a file open there: detach it now, the kernel
                // finishes the unmount when the last user lets go.
                lazy_unmount(&self.mountpoint)?;
                return Err(Errno::EBUSY.into());
            }
            Err(error) => return Err(error.into()),
        }
        ended_cleanly(session.join())
    }
}

/// The filesystem thread's end after an unmount, with the ways it may see its connection
/// end taken as success: ENODEV, or ECONNABORTED where the kernel marked the torn-down
/// connection aborted (seen on Linux 6.18 now and then, right after a successful umount).
fn ended_cleanly(joined: io::Result<()>) -> io::Result<()> {
    match joined {
        Err(error)
            if matches!(
                error.raw_os_error().map(Errno::from_raw),
                Some(Errno::ENODEV | Errno::ECONNABORTED)
            ) =>
        {
            Ok(())
        }
        ended => ended,
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_now() {
            eprintln!(
                "lazyfs: unmounting {} ({error}); detached it lazily",
                self.mountpoint.display()
            );
        }
    }
}

/// How long an unmount is retried while the mount is busy.
const BUSY_PATIENCE: Duration = Duration::from_secs(5);

/// `umount`, retried for [`BUSY_PATIENCE`] while it says EBUSY: a process that forks
/// (another thread spawning a child) holds copies of every open file until it execs, so
/// files already closed here can keep the mount busy for a moment.
fn umount_waiting_while_busy(mountpoint: &Path) -> Result<(), Errno> {
    let deadline = Instant::now() + BUSY_PATIENCE;
    loop {
        match nix::mount::umount(mountpoint) {
            Err(Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// `umount -l`.
fn lazy_unmount(mountpoint: &Path) -> io::Result<()> {
    nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// The environment variable that turns a test's skip (no FUSE here) into a failure.
pub const REQUIRE_FUSE_ENV: &str = "NEURALLOG_REQUIRE_FUSE";

/// For tests: mounts a LazyFs, or, where FUSE is not available (no /dev/fuse, mounting
/// not permitted), prints one line saying why and returns `None`, so the test can return.
///
/// # Panics
///
/// If mounting fails and `NEURALLOG_REQUIRE_FUSE=1` is set.
pub fn mount_or_skip(test: &str, backing: &Path, mountpoint: &Path) -> Option<LazyFs> {
    let attempt = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))
        .and_then(|_| {
            LazyFs::mount(backing, mountpoint).map_err(|e| match e.kind() {
                // mount(2) said EPERM and fuser's fallback, fusermount, is not installed.
                io::ErrorKind::NotFound => {
                    format!("mounting a FUSE filesystem is not permitted here ({e})")
                }
                _ => format!("cannot mount a FUSE filesystem: {e}"),
            })
        });
    match attempt {
        Ok(fs) => Some(fs),
        Err(why) if std::env::var(REQUIRE_FUSE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {why}, and {REQUIRE_FUSE_ENV}=1 requires FUSE")
        }
        Err(why) => {
            println!("{test}: skipped: {why} (set {REQUIRE_FUSE_ENV}=1 to fail instead)");
            None
        }
    }
}
