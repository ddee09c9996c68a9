//! The journal's own write-ahead log: one device round trip per batch.
//!
//! sled 0.34 makes a write durable in two round trips (its `flush()` ends with
//! `sync_file_range`, and only the `fdatasync` after it reaches the drive's cache flush,
//! see [`super::durable`]), after a transaction that costs as much CPU again. So the
//! writer thread puts each batch's new record values in this file, with one `pwrite` and
//! one `fdatasync`, and acknowledges the batch then; another thread puts the same records
//! into sled ([`super::apply`]), which writes them in its own time.
//!
//! The log has two halves. When the one being written is full (or appends pause), the
//! writer moves to the other and hands the full one to the checkpoint thread
//! ([`super::checkpoint`]), which makes sled durable ([`super::durable::flush_durably`])
//! once sled holds the half's records, then erases the half. So appends wait for a
//! checkpoint only when the new half fills before the old one is erased. Before retention
//! or an import runs, and on close, the writer waits until both halves are checkpointed.
//!
//! ## Layout
//!
//! The file `wal` in the journal's directory is written once with zeros at its full size
//! and fsynced, so appending a frame changes no metadata and `fdatasync` writes only data.
//! A batch is one frame, starting on a 4 KiB page boundary (so writing it never rewrites a
//! page of an acknowledged frame):
//!
//! | bytes | field |
//! |-------|-------|
//! | 4 | magic `NLW1` |
//! | 4 | payload length (little-endian, as all fields) |
//! | 8 | generation: which run of the log this frame belongs to |
//! | 8 | frame number in its generation, from 1 |
//! | 4 | CRC-32 of the 24 bytes above and the payload |
//! | … | payload: record count (4), then per record its length (4) and stored value |
//!
//! Each half holds one run of frames from its first page: a new generation, frames
//! numbered from 1. Erasing a half zeroes its first page; frames of older generations
//! stay behind and are not read.
//!
//! ## Reading it back
//!
//! A half's run is the frames from its first page that share the first frame's
//! generation and number 1, 2, 3… without a gap. It ends at the first page that does not
//! continue it. A frame whose checksum fails there was being written when the process or
//! the power stopped: its `fdatasync` never returned, so none of its records was
//! acknowledged, and it is ignored. If a frame of the same generation with a later number
//! follows it anywhere in the file, the failed frame had been synced and acknowledged, and
//! the file was damaged afterwards: that is an error, not a tail to drop. The two runs are
//! read in the order of their generations (the older one may not be checkpointed yet).
//!
//! Opening the journal replays the frames read back into sled ([`replay`]), makes sled
//! durable, and clears the log. Replay is idempotent (a record sled holds already is
//! checked, not written again), so frames whose records sled had written anyway, or a
//! replay cut short by another crash, do no harm.

use super::JournalError;
use super::append::summary_after;
use super::apply::Written;
use super::codec;
use super::digest::Digest;
use super::read::decode_summary;
use super::retention::read_checkpoint;
use super::writer::Store;
use neurallog_migrations::layout::{CHECKPOINTS_TREE, display_record_key, record_key};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The log's file in the journal's directory.
pub(super) const WAL_FILE: &str = "wal";
/// Where it is filled with zeros before it becomes [`WAL_FILE`].
const WAL_TEMP: &str = "wal.tmp";
/// Frames start on page boundaries.
const PAGE: u64 = 4096;
const MAGIC: [u8; 4] = *b"NLW1";
const HEADER: usize = 28;
/// Where the checksum sits in the header; it covers the bytes before it and the payload.
const CRC_AT: usize = 24;

/// The log, open for appending.
pub(super) struct Wal {
    file: Arc<File>,
    halves: [Half; 2],
    /// The half frames go to; the other is empty or being checkpointed.
    active: usize,
    /// Where the next frame goes.
    end: u64,
    generation: u64,
    /// The number of the last frame written in this generation.
    frames: u64,
}

/// A byte range of the log that one run of frames fills from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Half {
    start: u64,
    end: u64,
}

impl Half {
    fn len(self) -> u64 {
        self.end - self.start
    }
}

/// The two halves of a log of `len` bytes: the first ends on the page boundary nearest
/// the middle (a log under two pages has only a first half).
fn halves_of(len: u64) -> [Half; 2] {
    let split = (len / PAGE / 2) * PAGE;
    let split = if split == 0 { len } else { split };
    [
        Half {
            start: 0,
            end: split,
        },
        Half {
            start: split,
            end: len,
        },
    ]
}

/// A frame read back: the stored record values of one batch.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame {
    pub number: u64,
    pub values: Vec<Vec<u8>>,
}

/// What reading the log found.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// The frames of both halves, the older run's first.
    pub frames: Vec<Frame>,
    /// The newest generation read (0 if none).
    pub generation: u64,
}

/// Erases a retired half once sled holds its records durably, from another thread than
/// the writer's.
pub(super) struct Eraser {
    file: Arc<File>,
    starts: [u64; 2],
}

impl Eraser {
    /// Zeroes the first page of `half` and syncs it: the half holds no run any more, and
    /// a header found there later is the next run's own (see [`Wal::clear`]).
    pub(super) fn erase(&self, half: usize) -> io::Result<()> {
        self.file
            .write_all_at(&[0u8; PAGE as usize], self.starts[half])?;
        self.file.sync_data()
    }
}

impl Wal {
    /// Opens the log of the journal at `root`, (re)creating it (filled and synced, its
    /// directory entry synced) if it is missing or not `bytes` long (rounded down to whole
    /// pages, at least two). Call only once what it held is durable in sled; frames may be
    /// appended once it is [`Wal::clear`]ed. `after` is a generation the next one must
    /// exceed (the one just read back).
    pub(super) fn open(root: &Path, after: u64, bytes: u64) -> io::Result<Wal> {
        let capacity = (bytes / PAGE).max(2) * PAGE;
        let path = root.join(WAL_FILE);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(file) if file.metadata()?.len() == capacity => file,
            Ok(_) => create(root, capacity)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(root, capacity)?,
            Err(e) => return Err(e),
        };
        Ok(Wal {
            file: Arc::new(file),
            halves: halves_of(capacity),
            active: 0,
            end: 0,
            generation: after,
            frames: 0,
        })
    }

    /// Whether a frame of `records` fits after what the active half holds.
    pub(super) fn fits(&self, records: &[Written]) -> bool {
        self.end.saturating_add(frame_len(&values_of(records))) <= self.halves[self.active].end
    }

    /// Whether a frame of `records` fits in the other half once the log moves to it.
    pub(super) fn fits_after_rotating(&self, records: &[Written]) -> bool {
        frame_len(&values_of(records)) <= self.halves[self.other_half()].len()
    }

    /// Whether the active half holds no frame.
    pub(super) fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// The half [`Wal::rotate`] moves to.
    pub(super) fn other_half(&self) -> usize {
        1 - self.active
    }

    /// A handle that erases halves from another thread.
    pub(super) fn eraser(&self) -> Eraser {
        Eraser {
            file: self.file.clone(),
            starts: [self.halves[0].start, self.halves[1].start],
        }
    }

    /// Writes `records` as the next frame and waits until it is on stable storage
    /// (`fdatasync`). The caller checked [`Wal::fits`]. On an error the frame may be half
    /// written: the writer then writes nothing more until the journal is reopened, so no
    /// later frame of this generation follows a frame that was not acknowledged.
    pub(super) fn append(&mut self, records: &[Written]) -> io::Result<()> {
        let frame = encode(self.generation, self.frames + 1, &values_of(records))?;
        self.file.write_all_at(&frame, self.end)?;
        self.file.sync_data()?;
        self.end += frame.len() as u64;
        self.frames += 1;
        Ok(())
    }

    /// Moves appends to the other half, which must be erased, with a new generation, and
    /// returns the half it retires: that one must be checkpointed and erased before the
    /// log moves back to it.
    pub(super) fn rotate(&mut self) -> usize {
        let retired = self.active;
        self.active = self.other_half();
        self.start_generation();
        retired
    }

    /// Empties the log: zeroes the first page of each half and syncs that, then starts a
    /// new generation in the first half. Only once everything it held is durable in sled.
    /// The sync comes before the new generation's first frame is written, so a header on
    /// a half's first page is that frame's own (which is how [`parse`] tells a torn first
    /// frame from a damaged one).
    pub(super) fn clear(&mut self) -> io::Result<()> {
        for half in self.halves {
            if half.len() > 0 {
                self.file.write_all_at(&[0u8; PAGE as usize], half.start)?;
            }
        }
        self.file.sync_data()?;
        self.active = 0;
        self.start_generation();
        Ok(())
    }

    fn start_generation(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.generation = now.max(self.generation.saturating_add(1));
        self.end = self.halves[self.active].start;
        self.frames = 0;
    }
}

/// Reads the log of the journal at `root` (nothing if it has none).
pub(super) fn read(root: &Path) -> io::Result<Recovered> {
    match std::fs::read(root.join(WAL_FILE)) {
        Ok(bytes) => parse(&bytes).map_err(|detail| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{WAL_FILE}: {detail}"))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Recovered::default()),
        Err(e) => Err(e),
    }
}

/// Creates the log filled with zeros, synced, under its final name, and syncs the
/// directory: afterwards appending to it needs no metadata write.
fn create(root: &Path, capacity: u64) -> io::Result<File> {
    let temp = root.join(WAL_TEMP);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < capacity {
        let len = zeros.len().min((capacity - at) as usize);
        file.write_all_at(&zeros[..len], at)?;
        at += len as u64;
    }
    file.sync_all()?;
    std::fs::rename(&temp, root.join(WAL_FILE))?;
    File::open(root)?.sync_all()?;
    Ok(file)
}

fn values_of(records: &[Written]) -> Vec<&[u8]> {
    records.iter().map(|r| r.value.as_slice()).collect()
}

/// The bytes a frame of `values` takes, its padding to a page included.
fn frame_len<V: AsRef<[u8]>>(values: &[V]) -> u64 {
    let payload: u64 = 4 + values
        .iter()
        .map(|v| 4 + v.as_ref().len() as u64)
        .sum::<u64>();
    (HEADER as u64 + payload).div_ceil(PAGE) * PAGE
}

/// `values` as frame `number` of `generation`, padded with zeros to a whole page.
fn encode<V: AsRef<[u8]>>(generation: u64, number: u64, values: &[V]) -> io::Result<Vec<u8>> {
    let too_large = || io::Error::other("a batch too large for the write-ahead log");
    let total = usize::try_from(frame_len(values)).map_err(|_| too_large())?;
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&generation.to_le_bytes());
    frame.extend_from_slice(&number.to_le_bytes());
    frame.extend_from_slice(&[0; 4]);
    let count = u32::try_from(values.len()).map_err(|_| too_large())?;
    frame.extend_from_slice(&count.to_le_bytes());
    for value in values {
        let value = value.as_ref();
        let len = u32::try_from(value.len()).map_err(|_| too_large())?;
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(value);
    }
    let payload = u32::try_from(frame.len() - HEADER).map_err(|_| too_large())?;
    frame[4..8].copy_from_slice(&payload.to_le_bytes());
    let crc = checksum(&frame[..CRC_AT], &frame[HEADER..]);
    frame[CRC_AT..HEADER].copy_from_slice(&crc.to_le_bytes());
    frame.resize(total, 0);
    Ok(frame)
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.finalize()
}

/// A frame's header as read, before its checksum is checked.
struct Header {
    generation: u64,
    number: u64,
    payload_len: usize,
    crc: u32,
}

fn header_at(bytes: &[u8], at: usize) -> Option<Header> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    if header[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[i..i + 4]);
        u32::from_le_bytes(b)
    };
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Some(Header {
        payload_len: u32_at(4) as usize,
        generation: u64_at(8),
        number: u64_at(16),
        crc: u32_at(CRC_AT),
    })
}

/// The frame at `at` if its checksum holds: its header and payload.
fn frame_at(bytes: &[u8], at: usize) -> Option<(Header, &[u8])> {
    let header = header_at(bytes, at)?;
    let start = at + HEADER;
    let payload = bytes.get(start..start.checked_add(header.payload_len)?)?;
    (checksum(&bytes[at..at + CRC_AT], payload) == header.crc).then_some((header, payload))
}

/// The log in `bytes` (see the module's doc), or what is wrong with it.
pub(super) fn parse(bytes: &[u8]) -> Result<Recovered, String> {
    let mut runs = Vec::new();
    for half in halves_of(bytes.len() as u64) {
        if half.len() > 0 {
            runs.push(parse_run(bytes, half.start as usize)?);
        }
    }
    runs.sort_by_key(|run| run.generation);
    let mut recovered = Recovered::default();
    for run in runs {
        recovered.generation = recovered.generation.max(run.generation);
        recovered.frames.extend(run.frames);
    }
    Ok(recovered)
}

/// The run of frames that starts at `start` (a half's first page).
fn parse_run(bytes: &[u8], start: usize) -> Result<Recovered, String> {
    let page = PAGE as usize;
    let mut recovered = Recovered::default();
    let mut at = start;
    while let Some((header, payload)) = frame_at(bytes, at) {
        let number = recovered.frames.len() as u64 + 1;
        if header.number != number || (number > 1 && header.generation != recovered.generation) {
            break;
        }
        let values = decode_payload(payload)
            .map_err(|detail| format!("frame {number} at byte {at}: {detail}"))?;
        recovered.generation = header.generation;
        recovered.frames.push(Frame { number, values });
        at += (HEADER + header.payload_len).div_ceil(page) * page;
    }
    // The run's generation; for a first frame that fails, the one its header claims (the
    // page was zeroed and synced before it was written, so a header there is its own). A
    // whole frame there that is not a first one belongs to a run that started elsewhere
    // (a log written before it had halves): it starts no run here.
    let generation = if recovered.frames.is_empty() {
        match header_at(bytes, at) {
            Some(_) if frame_at(bytes, at).is_some() => return Ok(recovered),
            Some(header) => header.generation,
            None => return Ok(recovered),
        }
    } else {
        recovered.generation
    };
    // Nothing of this generation may follow the end: a later frame means the frame at
    // the end had been synced (and acknowledged) and was damaged since.
    let next = recovered.frames.len() as u64 + 1;
    let mut later_at = at + page;
    while later_at < bytes.len() {
        if let Some((later, _)) = frame_at(bytes, later_at)
            && later.generation == generation
            && later.number > next
        {
            return Err(format!(
                "frame {next} at byte {at} is damaged or missing, but frame {} of the same run follows at byte {later_at}: frames that were acknowledged are lost",
                later.number
            ));
        }
        later_at += page;
    }
    Ok(recovered)
}

fn decode_payload(payload: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut rest = payload;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err(format!(
                "payload truncated: {n} bytes needed, {} left",
                rest.len()
            ));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let read_u32 = |b: &[u8]| {
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        u32::from_le_bytes(a) as usize
    };
    let count = read_u32(take(4)?);
    let mut values = Vec::with_capacity(count.min(payload.len() / 4));
    for _ in 0..count {
        let len = read_u32(take(4)?);
        values.push(take(len)?.to_vec());
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last record", rest.len()));
    }
    Ok(values)
}

/// Applies the log's frames to sled, in order, and returns how many records it inserted.
/// A record sled lacks must continue its chain (its seq next, its `prevHash` the chain's
/// last hash, its own hash right) and is inserted with the chain's new summary; one sled
/// holds must be stored with the same bytes, or compacted away by retention. So replaying
/// twice, or replaying frames sled had already written, changes nothing.
pub(super) fn replay(store: &Store, frames: &[Frame]) -> Result<u64, JournalError> {
    let checkpoints = store.db.open_tree(CHECKPOINTS_TREE)?;
    let mut inserted = 0;
    for frame in frames {
        for value in &frame.values {
            if replay_record(store, &checkpoints, frame.number, value)? {
                inserted += 1;
            }
        }
    }
    Ok(inserted)
}

fn replay_record(
    store: &Store,
    checkpoints: &sled::Tree,
    frame: u64,
    value: &[u8],
) -> Result<bool, JournalError> {
    let damaged = |key: String, detail: String| JournalError::Corrupt {
        tree: WAL_FILE,
        key,
        detail: format!("frame {frame}: {detail}"),
    };
    let record = codec::decode_record(value)
        .map_err(|e| damaged("(undecodable record)".into(), e.to_string()))?;
    let key = record_key(&record.uid, record.seq);
    let shown = display_record_key(&key);
    let (body, hash) =
        codec::split_value(value).map_err(|e| damaged(shown.clone(), e.to_string()))?;
    if Digest::of(body) != hash {
        return Err(damaged(
            shown,
            "the record's hash does not match its content".into(),
        ));
    }
    let head = match store.tenants.get(record.uid.as_bytes())? {
        Some(row) => Some(decode_summary(record.uid.as_bytes(), &row)?),
        None => None,
    };
    let next = head.as_ref().map_or(1, |h| h.last_seq.saturating_add(1));
    if record.seq < next {
        return match store.records.get(&key)? {
            Some(stored) if stored == value => Ok(false),
            Some(_) => Err(damaged(
                shown,
                "the journal stores a different record at this seq".into(),
            )),
            None => match read_checkpoint(checkpoints, &record.uid)? {
                Some(checkpoint) if checkpoint.through >= record.seq => Ok(false),
                _ => Err(damaged(
                    shown,
                    "the chain counts this record, but the journal neither holds it nor compacted it".into(),
                )),
            },
        };
    }
    if record.seq > next {
        return Err(damaged(
            shown,
            format!("the chain's next seq is {next}: records before this one are missing"),
        ));
    }
    let last_hash = head.as_ref().map_or(Digest::ZERO, |h| h.last_hash);
    if record.prev_hash != last_hash {
        return Err(damaged(
            shown,
            "its prevHash is not the hash of the chain's last record".into(),
        ));
    }
    let summary = summary_after(head.as_ref(), &record);
    store.records.insert(key, value)?;
    store.tenants.insert(
        record.uid.as_bytes(),
        codec::row_from_summary(&summary).encode(),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::{open_temp, sample_entry};
    use crate::journal::{Journal, JournalError, Record};
    use std::sync::mpsc;

    const GENERATION: u64 = 7;

    fn values(frame: u64) -> Vec<Vec<u8>> {
        (0..frame + 1)
            .map(|i| format!("frame {frame} record {i}").into_bytes())
            .collect()
    }

    /// A log of `pages` zeroed pages with frames 1..=`count` of `generation`; returns the
    /// bytes and each frame's offset.
    fn log_with(pages: usize, generation: u64, count: u64) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = vec![0u8; pages * PAGE as usize];
        let mut offsets = Vec::new();
        let mut at = 0;
        for number in 1..=count {
            let frame = encode(generation, number, &values(number)).unwrap();
            bytes[at..at + frame.len()].copy_from_slice(&frame);
            offsets.push(at);
            at += frame.len();
        }
        (bytes, offsets)
    }

    fn numbers(recovered: &Recovered) -> Vec<u64> {
        recovered.frames.iter().map(|f| f.number).collect()
    }

    #[test]
    fn frames_read_back_in_order_with_their_records() {
        let (bytes, _) = log_with(8, GENERATION, 3);
        let recovered = parse(&bytes).unwrap();
        assert_eq!(recovered.generation, GENERATION);
        assert_eq!(numbers(&recovered), [1, 2, 3]);
        assert_eq!(recovered.frames[2].values, values(3));
    }

    #[test]
    fn an_empty_or_zeroed_log_holds_nothing() {
        assert!(parse(&[]).unwrap().frames.is_empty());
        assert!(
            parse(&vec![0u8; 4 * PAGE as usize])
                .unwrap()
                .frames
                .is_empty()
        );
    }

    #[test]
    fn a_torn_last_frame_is_an_unacknowledged_tail_and_ignored() {
        let (mut bytes, offsets) = log_with(8, GENERATION, 3);
        // The last frame's payload only partly written: its checksum fails.
        let last = offsets[2];
        bytes[last + HEADER + 10..last + PAGE as usize].fill(0);
        let recovered = parse(&bytes).unwrap();
        assert_eq!(numbers(&recovered), [1, 2]);
    }

    #[test]
    fn a_checksum_mismatch_in_the_last_frame_is_ignored() {
        let (mut bytes, offsets) = log_with(8, GENERATION, 3);
        bytes[offsets[2] + HEADER + 3] ^= 0x40;
        assert_eq!(numbers(&parse(&bytes).unwrap()), [1, 2]);
        // So is a last frame whose header says it runs past the end of the file.
        let (mut bytes, offsets) = log_with(3, GENERATION, 3);
        bytes[offsets[2] + 4..offsets[2] + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(numbers(&parse(&bytes).unwrap()), [1, 2]);
    }

    #[test]
    fn a_checksum_mismatch_in_the_middle_is_an_error() {
        let (mut bytes, offsets) = log_with(8, GENERATION, 3);
        bytes[offsets[1] + HEADER + 3] ^= 0x40;
        let error = parse(&bytes).unwrap_err();
        assert!(
            error.contains("frame 2 at byte 4096 is damaged")
                && error.contains("frame 3 of the same run follows"),
            "{error}"
        );
        // The first frame too: the page was zeroed and synced before it was written.
        let (mut bytes, _) = log_with(8, GENERATION, 2);
        bytes[HEADER + 3] ^= 0x40;
        let error = parse(&bytes).unwrap_err();
        assert!(error.contains("frame 1 at byte 0 is damaged"), "{error}");
    }

    #[test]
    fn both_halves_are_read_the_older_run_first() {
        // Eight pages: halves at pages 0 and 4. The newer run is in the first half.
        let (mut bytes, _) = log_with(8, GENERATION + 1, 2);
        let (older, _) = log_with(4, GENERATION, 3);
        bytes[4 * PAGE as usize..].copy_from_slice(&older);
        let recovered = parse(&bytes).unwrap();
        assert_eq!(recovered.generation, GENERATION + 1);
        assert_eq!(numbers(&recovered), [1, 2, 3, 1, 2]);
        assert_eq!(recovered.frames[3].values, values(1));
        // Damage inside the second half's run is found as in the first's.
        bytes[5 * PAGE as usize + HEADER + 3] ^= 0x40;
        let error = parse(&bytes).unwrap_err();
        assert!(
            error.contains("frame 2 at byte 20480 is damaged"),
            "{error}"
        );
    }

    #[test]
    fn a_run_written_before_the_log_had_halves_is_read_once_across_the_middle() {
        let (bytes, _) = log_with(4, GENERATION, 4);
        let recovered = parse(&bytes).unwrap();
        assert_eq!(numbers(&recovered), [1, 2, 3, 4]);
    }

    #[test]
    fn older_generations_behind_the_run_are_not_read() {
        // An older run of four frames, then a new run of two written over its start.
        let (mut bytes, offsets) = log_with(8, GENERATION, 4);
        let (newer, _) = log_with(2, GENERATION + 1, 2);
        bytes[..newer.len()].copy_from_slice(&newer);
        let recovered = parse(&bytes).unwrap();
        assert_eq!(recovered.generation, GENERATION + 1);
        assert_eq!(numbers(&recovered), [1, 2]);
        // A torn first frame of a new run over a zeroed first page: nothing, no error.
        bytes[..PAGE as usize].fill(0);
        let frame = encode(GENERATION + 2, 1, &values(1)).unwrap();
        bytes[..HEADER].copy_from_slice(&frame[..HEADER]);
        assert!(parse(&bytes).unwrap().frames.is_empty());
        assert!(offsets.len() == 4);
    }

    /// The journal's log file, read while the journal is open.
    fn read_log(journal: &Journal) -> Recovered {
        read(journal.path()).unwrap()
    }

    #[test]
    fn an_acknowledged_append_is_in_the_log_and_a_closed_journal_has_an_empty_log() {
        let (dir, journal) = open_temp();
        let record = journal.append(sample_entry("acme", "uid-1", 1)).unwrap();
        let recovered = read_log(&journal);
        assert_eq!(recovered.frames.len(), 1);
        let value = &recovered.frames[0].values[0];
        assert_eq!(codec::decode_record(value).unwrap(), record);
        drop(journal);
        assert!(read(&dir.path().join("journal")).unwrap().frames.is_empty());
    }

    /// A journal at `path` whose log holds `pages` pages (a single append takes one), in
    /// two halves.
    fn with_log_pages(path: &Path, pages: u64) -> Journal {
        let options = crate::journal::Options {
            log_bytes: pages * PAGE,
            ..Default::default()
        };
        Journal::open_with(path, options).unwrap()
    }

    #[test]
    fn a_full_log_is_checkpointed_and_every_record_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = with_log_pages(&path, 2);
        let records: Vec<Record> = (1..=9)
            .map(|seq| journal.append(sample_entry("acme", "uid-1", seq)).unwrap())
            .collect();
        // Nine frames went through a log that holds two.
        let log = read(&path).unwrap();
        assert!((1..=2).contains(&log.frames.len()), "{log:?}");
        let newest = log.frames.last().unwrap().values.last().unwrap();
        assert_eq!(
            &codec::decode_record(newest).unwrap(),
            records.last().unwrap()
        );
        for record in &records {
            assert_eq!(
                journal.record("uid-1", record.seq).unwrap().as_ref(),
                Some(record)
            );
        }
        assert!(journal.verify().unwrap().is_ok());
        drop(journal);
        let reopened = with_log_pages(&path, 2);
        assert_eq!(reopened.tenant("uid-1").unwrap().unwrap().last_seq, 9);
    }

    #[test]
    fn appends_go_on_in_the_other_half_while_a_checkpoint_is_stalled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Arc::new(with_log_pages(&path, 4));
        journal.writer.hold_checkpoints(true);
        let records: Vec<Record> = (1..=4)
            .map(|seq| journal.append(sample_entry("acme", "uid-1", seq)).unwrap())
            .collect();
        // Seq 3 and 4 were acknowledged in the second half while the first, full, waited
        // for its checkpoint: the log holds all four, the first half's run first.
        let log = read(&path).unwrap();
        let logged: Vec<Record> = log
            .frames
            .iter()
            .flat_map(|frame| &frame.values)
            .map(|value| codec::decode_record(value).unwrap())
            .collect();
        assert_eq!(logged, records);
        // The next append needs the first half back: it waits for that checkpoint.
        let (done, acknowledged) = mpsc::channel();
        let appending = journal.clone();
        std::thread::spawn(move || {
            let _ = done.send(appending.append(sample_entry("acme", "uid-1", 5)));
        });
        assert!(
            acknowledged
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "an append went into a half that was not checkpointed"
        );
        journal.writer.hold_checkpoints(false);
        let fifth = acknowledged
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the append waited past the checkpoint")
            .unwrap();
        assert_eq!(fifth.seq, 5);
        assert!(journal.verify().unwrap().is_ok());
    }

    #[test]
    fn a_log_with_both_halves_full_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = with_log_pages(&path, 4);
        journal.writer.hold_checkpoints(true);
        let records: Vec<Record> = (1..=4)
            .map(|seq| journal.append(sample_entry("acme", "uid-1", seq)).unwrap())
            .collect();
        let log = std::fs::read(path.join(WAL_FILE)).unwrap();
        journal.writer.hold_checkpoints(false);
        drop(journal);
        // A journal that holds none of it, given that log: the second half's records
        // continue the first's only if the first is replayed first.
        let empty = dir.path().join("empty");
        drop(Journal::open(&empty).unwrap());
        std::fs::write(empty.join(WAL_FILE), log).unwrap();
        let journal = Journal::open(&empty).unwrap();
        for record in &records {
            assert_eq!(
                journal.record("uid-1", record.seq).unwrap().as_ref(),
                Some(record)
            );
        }
        assert!(journal.verify().unwrap().is_ok());
    }

    #[test]
    fn a_pause_in_appends_checkpoints_the_log() {
        let (dir, journal) = open_temp();
        let path = dir.path().join("journal");
        journal.append(sample_entry("acme", "uid-1", 1)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !read(&path).unwrap().frames.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was not checkpointed within 20 s of the last append"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Checkpointed: sled holds the record, and appends go on.
        assert_eq!(journal.tenant("uid-1").unwrap().unwrap().last_seq, 1);
        journal.append(sample_entry("acme", "uid-1", 2)).unwrap();
    }

    #[test]
    fn a_record_larger_than_half_the_log_is_made_durable_in_sled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = with_log_pages(&path, 2);
        journal.append(sample_entry("acme", "uid-1", 1)).unwrap();
        let mut large = sample_entry("acme", "uid-1", 2);
        large.message = "x".repeat(3 * PAGE as usize);
        let stored = journal.append(large).unwrap();
        let logged: Vec<u64> = read(&path)
            .unwrap()
            .frames
            .iter()
            .flat_map(|frame| &frame.values)
            .map(|value| codec::decode_record(value).unwrap().seq)
            .collect();
        assert!(
            logged.iter().all(|&seq| seq == 1),
            "the log holds {logged:?}"
        );
        assert_eq!(journal.record("uid-1", 2).unwrap(), Some(stored.clone()));
        // The chain goes on through the log.
        journal.append(sample_entry("acme", "uid-1", 3)).unwrap();
        drop(journal);
        let reopened = with_log_pages(&path, 2);
        assert_eq!(reopened.record("uid-1", 2).unwrap(), Some(stored));
        assert!(reopened.verify().unwrap().is_ok());
    }

    /// A journal whose sled lost what its log holds: `uid-1` seq 1..=2 in sled, the log
    /// holding seq 3..=4 as another journal with the same first records wrote them.
    fn sled_behind_its_log() -> (tempfile::TempDir, std::path::PathBuf, Vec<Record>) {
        let (dir, journal) = open_temp();
        for seq in 1..=2 {
            journal.append(sample_entry("acme", "uid-1", seq)).unwrap();
        }
        let path = journal.path().to_owned();
        drop(journal);
        let behind = dir.path().join("behind");
        copy_dir(&path, &behind);
        let journal = Journal::open(&path).unwrap();
        let later: Vec<Record> = (3..=4)
            .map(|seq| journal.append(sample_entry("acme", "uid-1", seq)).unwrap())
            .collect();
        let log = std::fs::read(path.join(WAL_FILE)).unwrap();
        drop(journal);
        std::fs::write(behind.join(WAL_FILE), log).unwrap();
        (dir, behind, later)
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn opening_replays_acknowledged_records_sled_lost_then_clears_the_log() {
        let (_dir, behind, later) = sled_behind_its_log();
        let journal = Journal::open(&behind).unwrap();
        assert_eq!(journal.tenant("uid-1").unwrap().unwrap().last_seq, 4);
        for record in &later {
            assert_eq!(
                journal.record("uid-1", record.seq).unwrap().as_ref(),
                Some(record)
            );
        }
        assert!(journal.verify().unwrap().is_ok());
        assert!(
            read_log(&journal).frames.is_empty(),
            "replayed, then cleared"
        );
        // The chain goes on from the replayed records.
        journal.append(sample_entry("acme", "uid-1", 5)).unwrap();
    }

    #[test]
    fn replaying_records_sled_already_holds_changes_nothing() {
        let (_dir, behind, _) = sled_behind_its_log();
        let log = std::fs::read(behind.join(WAL_FILE)).unwrap();
        drop(Journal::open(&behind).unwrap());
        // The same log again, over a sled that holds all of it.
        std::fs::write(behind.join(WAL_FILE), &log).unwrap();
        let journal = Journal::open(&behind).unwrap();
        assert_eq!(journal.tenant("uid-1").unwrap().unwrap().last_seq, 4);
        assert!(journal.verify().unwrap().is_ok());
    }

    #[test]
    fn a_logged_record_that_does_not_continue_its_chain_is_refused() {
        let (_dir, behind, _) = sled_behind_its_log();
        // Only the frame's second record (seq 4): seq 3 is missing.
        let log = std::fs::read(behind.join(WAL_FILE)).unwrap();
        let recovered = parse(&log).unwrap();
        let frame = encode(recovered.generation, 1, &recovered.frames[1].values).unwrap();
        std::fs::write(behind.join(WAL_FILE), frame).unwrap();
        let error = Journal::open(&behind).err().expect("the log skips seq 3");
        assert!(
            matches!(&error, JournalError::Corrupt { tree: WAL_FILE, .. })
                && error.to_string().contains("next seq is 3"),
            "{error}"
        );
    }

    #[test]
    fn a_damaged_log_fails_the_open_as_damage() {
        let (_dir, behind, _) = sled_behind_its_log();
        let mut log = std::fs::read(behind.join(WAL_FILE)).unwrap();
        log[HEADER + 3] ^= 0x40;
        std::fs::write(behind.join(WAL_FILE), log).unwrap();
        let error = Journal::open(&behind)
            .err()
            .expect("frame 1 is damaged, frame 2 follows");
        assert!(
            error.to_string().contains("frame 1 at byte 0 is damaged"),
            "{error}"
        );
    }
}
