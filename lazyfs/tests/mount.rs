//! LazyFs mounted for real: what survives a power cut.

// A test file: its helpers may unwrap (clippy.toml only covers `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use neurallog_lazyfs::{LazyFs, mount_or_skip};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

struct Dirs {
    _root: tempfile::TempDir,
    backing: std::path::PathBuf,
    mnt: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let backing = root.path().join("backing");
    let mnt = root.path().join("mnt");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mnt).unwrap();
    Dirs {
        _root: root,
        backing,
        mnt,
    }
}

fn write_file(path: &Path, data: &[u8], sync: bool) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
    if sync {
        f.sync_all().unwrap();
    }
}

fn reboot(fs: LazyFs, d: &Dirs) -> Option<LazyFs> {
    fs.cut_power();
    fs.unmount().unwrap();
    mount_or_skip("reboot", &d.backing, &d.mnt)
}

#[test]
fn only_fsynced_data_survives_a_power_cut() {
    let d = dirs();
    let Some(fs) = mount_or_skip("only_fsynced_data_survives_a_power_cut", &d.backing, &d.mnt)
    else {
        return;
    };
    write_file(&d.mnt.join("synced"), b"durable", true);
    write_file(&d.mnt.join("synced"), b"DUR", false); // overwrite, not synced
    write_file(&d.mnt.join("unsynced"), b"lost", false);
    fs::create_dir(d.mnt.join("dir")).unwrap();
    write_file(&d.mnt.join("dir/deep"), b"deep", true);
    // Reads see the cache.
    assert_eq!(fs::read(d.mnt.join("synced")).unwrap(), b"DURable");
    assert_eq!(fs::read(d.mnt.join("unsynced")).unwrap(), b"lost");
    // The backing files see only what was synced.
    assert_eq!(fs::read(d.backing.join("synced")).unwrap(), b"durable");
    assert_eq!(fs::read(d.backing.join("unsynced")).unwrap(), b"");

    fs.cut_power();
    let err = fs::read(d.mnt.join("synced")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");

    let Some(fs) = reboot(fs, &d) else { return };
    assert_eq!(fs::read(d.mnt.join("synced")).unwrap(), b"durable");
    // Never synced, nor its directory: its entry is gone too.
    assert_eq!(
        fs::metadata(d.mnt.join("unsynced")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The fsync of dir/deep made dir's entry durable as well.
    assert_eq!(fs::read(d.mnt.join("dir/deep")).unwrap(), b"deep");
    fs.unmount().unwrap();
}

#[test]
fn a_directory_fsync_keeps_new_entries_but_not_their_data() {
    let d = dirs();
    let Some(fs) = mount_or_skip(
        "a_directory_fsync_keeps_new_entries_but_not_their_data",
        &d.backing,
        &d.mnt,
    ) else {
        return;
    };
    write_file(&d.mnt.join("f"), b"data", false);
    fs::File::open(&d.mnt).unwrap().sync_all().unwrap();
    let Some(fs) = reboot(fs, &d) else { return };
    assert_eq!(fs::read(d.mnt.join("f")).unwrap(), b"");
    fs.unmount().unwrap();
}

#[test]
fn truncation_and_rename_through_the_mount() {
    let d = dirs();
    let Some(fs) = mount_or_skip(
        "truncation_and_rename_through_the_mount",
        &d.backing,
        &d.mnt,
    ) else {
        return;
    };
    write_file(&d.mnt.join("a"), b"0123456789", true);
    let f = OpenOptions::new()
        .write(true)
        .open(d.mnt.join("a"))
        .unwrap();
    f.set_len(4).unwrap();
    assert_eq!(fs::read(d.mnt.join("a")).unwrap(), b"0123");
    fs::rename(d.mnt.join("a"), d.mnt.join("b")).unwrap();
    assert_eq!(fs::read(d.mnt.join("b")).unwrap(), b"0123");
    drop(f);
    // The rename passed through; the truncation was not synced.
    let Some(fs) = reboot(fs, &d) else { return };
    assert_eq!(fs::read(d.mnt.join("b")).unwrap(), b"0123456789");
    fs.unmount().unwrap();
}
