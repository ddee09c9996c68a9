//! Importing another replica's records: how a standby keeps a copy of the leader's chains.
//!
//! An imported record is stored exactly as the leader stored it (same uid, seq, time,
//! `prevHash` and `hash`), and only if it links: its seq is the local chain's next, its
//! `prevHash` is the local chain's last hash (all zeros for seq 1, the checkpoint's hash
//! for a chain that starts at a checkpoint), and its `hash` is what its fields give. The
//! first record that does not link stops the import of its chain; what linked before it is
//! kept. Imports run on the writer thread between append batches, in one transaction per
//! chain, flushed and synced like appends.

use super::append::{Placement, TxResult, conflict, place, read_head, summary_after, validate};
use super::codec;
use super::read::decode_record;
use super::record::{Record, TenantSummary};
use super::retention::{Checkpoint, encode_checkpoint};
use super::writer::Store;
use super::{Journal, JournalError};
use neurallog_migrations::layout::{CHECKPOINTS_TREE, record_key};
use sled::Transactional;
use sled::transaction::{TransactionError, TransactionalTree};

/// What one import of a chain did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Records stored (records this journal already held, the same, are not counted).
    pub records: u64,
    /// Why the import stopped before its end: the first record that does not link.
    pub refused: Option<JournalError>,
}

impl Journal {
    /// Imports `records` (of one chain, in seq order) as they are, durably, stopping at the
    /// first that does not link to the local chain (see the module doc). A chain this
    /// journal does not have yet may start at `start`, the leader's checkpoint of it: its
    /// first record must then link to the checkpoint, which is stored with it.
    pub fn import(
        &self,
        start: Option<Checkpoint>,
        records: Vec<Record>,
    ) -> Result<Imported, JournalError> {
        let (imported, tail) = self
            .writer
            .exclusive(move |store| import_chain(store, start.as_ref(), &records))?;
        if let Some(tail) = &tail {
            self.tails.offer(&tail.uid, Some(tail));
        }
        Ok(imported)
    }
}

/// The outcome inside the transaction: the import and the chain's new last record.
type Outcome = (Imported, Option<Record>);

fn import_chain(
    store: &Store,
    start: Option<&Checkpoint>,
    records: &[Record],
) -> Result<Outcome, JournalError> {
    let checkpoints = store.db.open_tree(CHECKPOINTS_TREE)?;
    let written = (&store.records, &store.tenants, &checkpoints).transaction(
        |(records_tree, tenants, checkpoints)| {
            import_in(records_tree, tenants, checkpoints, start, records)
        },
    );
    let outcome = match written {
        Ok(outcome) => outcome,
        Err(TransactionError::Storage(error)) => return Err(error.into()),
        Err(TransactionError::Abort(never)) => match never {},
    };
    if outcome.0.records > 0 {
        store.flush()?;
    }
    Ok(outcome)
}

fn import_in(
    records_tree: &TransactionalTree,
    tenants: &TransactionalTree,
    checkpoints: &TransactionalTree,
    start: Option<&Checkpoint>,
    records: &[Record],
) -> TxResult<Outcome> {
    let refused = |count, error| {
        Ok((
            Imported {
                records: count,
                refused: Some(error),
            },
            None,
        ))
    };
    let Some(first) = records.first() else {
        return Ok((Imported::default(), None));
    };
    let uid = first.uid.as_str();
    let mut head = match read_head(tenants, uid)? {
        Ok(head) => head,
        Err(error) => return refused(0, error),
    };
    let mut anchor = None;
    if head.is_none() && first.seq != 1 {
        match start {
            Some(checkpoint) if starts_chain(checkpoint, first) => {
                if checkpoints.get(uid.as_bytes())?.is_some() {
                    return refused(0, gap(first, "this replica already has a checkpoint of it"));
                }
                head = Some(head_at(checkpoint));
                anchor = Some(checkpoint);
            }
            _ => {
                return refused(
                    0,
                    gap(
                        first,
                        "this replica has none of the chain before it, and no checkpoint it links to",
                    ),
                );
            }
        }
    }
    let mut count = 0;
    let mut last = None;
    let mut stopped = None;
    for record in records {
        match link(records_tree, head.as_ref(), uid, record)? {
            Ok(Some((value, stored))) => {
                records_tree.insert(record_key(uid, stored.seq), value)?;
                head = Some(summary_after(head.as_ref(), &stored));
                last = Some(stored);
                count += 1;
            }
            Ok(None) => {}
            Err(error) => {
                stopped = Some(error);
                break;
            }
        }
    }
    if count > 0
        && let Some(head) = &head
    {
        tenants.insert(uid.as_bytes(), codec::row_from_summary(head).encode())?;
        if let Some(checkpoint) = anchor {
            checkpoints.insert(uid.as_bytes(), encode_checkpoint(checkpoint))?;
        }
    }
    Ok((
        Imported {
            records: count,
            refused: stopped,
        },
        last,
    ))
}

/// A record that links, as stored (value and record); `None`: the chain holds it
/// already; an error: it does not link.
type Linked = Result<Option<(Vec<u8>, Record)>, JournalError>;

/// The stored value and record of `record` if it is the next record of the chain whose
/// head is `head`; `None` if the chain already holds it; an error if it does not link.
fn link(
    records_tree: &TransactionalTree,
    head: Option<&TenantSummary>,
    uid: &str,
    record: &Record,
) -> TxResult<Linked> {
    let entry = record.to_new();
    if record.uid != uid {
        return Ok(Err(conflict(&entry, format!("it is not of chain {uid}"))));
    }
    if let Err(error) = validate(&entry) {
        return Ok(Err(error));
    }
    let prev_hash = match place(&entry, head) {
        Ok(Placement::Next { prev_hash }) => prev_hash,
        Ok(Placement::Stored) => return already_stored(records_tree, record),
        Err(error) => return Ok(Err(error)),
    };
    if record.prev_hash != prev_hash {
        return Ok(Err(conflict(
            &entry,
            format!(
                "it does not link: its prevHash is {} but this replica's chain ends with hash {}",
                record.prev_hash.to_hex(),
                prev_hash.to_hex()
            ),
        )));
    }
    let (value, stored) = codec::encode_new(&entry, prev_hash);
    if stored.hash != record.hash {
        return Ok(Err(conflict(
            &entry,
            format!(
                "its hash {} is not the hash of its fields ({})",
                record.hash.to_hex(),
                stored.hash.to_hex()
            ),
        )));
    }
    Ok(Ok(Some((value, stored))))
}

/// `None` if the chain holds `record` already (same hash), else the fork.
fn already_stored(records_tree: &TransactionalTree, record: &Record) -> TxResult<Linked> {
    let key = record_key(&record.uid, record.seq);
    let stored = match records_tree.get(&key)? {
        Some(value) => match decode_record(&key, &value) {
            Ok(stored) => Some(stored.hash),
            Err(error) => return Ok(Err(error)),
        },
        None => None,
    };
    if stored == Some(record.hash) {
        return Ok(Ok(None));
    }
    let held = stored.map_or_else(
        || "no record (compacted)".to_owned(),
        |h| format!("hash {}", h.to_hex()),
    );
    Ok(Err(conflict(
        &record.to_new(),
        format!(
            "the chains forked: this replica holds {held} at this seq, not {}",
            record.hash.to_hex()
        ),
    )))
}

/// Whether `first` continues the chain right after `checkpoint`.
fn starts_chain(checkpoint: &Checkpoint, first: &Record) -> bool {
    checkpoint.uid == first.uid && checkpoint.through.checked_add(1) == Some(first.seq)
}

/// The head of a chain compacted through `checkpoint` and holding nothing after it.
fn head_at(checkpoint: &Checkpoint) -> TenantSummary {
    TenantSummary {
        tenant: checkpoint.tenant.clone(),
        uid: checkpoint.uid.clone(),
        first_time: checkpoint.first_time,
        last_phase: checkpoint.phase,
        last_seq: checkpoint.through,
        last_hash: checkpoint.hash,
        last_time: checkpoint.time,
        deleted: false,
    }
}

fn gap(first: &Record, why: &str) -> JournalError {
    conflict(
        &first.to_new(),
        format!("a gap: the import starts at seq {}, but {why}", first.seq),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Retention;
    use crate::journal::testing::{TO_RUNNING, lifecycle, next_after, open_temp, t0};

    const UID: &str = "uid-1";

    /// A leader's journal holding one provisioned chain.
    fn leader() -> (tempfile::TempDir, Journal) {
        let (dir, journal) = open_temp();
        for entry in lifecycle("acme", UID, t0(), &TO_RUNNING) {
            journal.append(entry).unwrap();
        }
        (dir, journal)
    }

    fn chain(journal: &Journal) -> Vec<Record> {
        journal.history(UID).collect::<Result<_, _>>().unwrap()
    }

    fn seqs(journal: &Journal) -> Vec<u64> {
        chain(journal).iter().map(|r| r.seq).collect()
    }

    fn assert_refused(imported: &Imported, why: &str) {
        let refusal = refusal(imported);
        assert!(
            refusal.contains(why),
            "refused for {refusal:?}, not {why:?}"
        );
    }

    fn refusal(imported: &Imported) -> String {
        imported
            .refused
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn imported_records_are_stored_as_the_leader_stored_them_and_appends_continue() {
        let (_l, leader) = leader();
        let records = chain(&leader);
        assert_eq!(records.len(), 4);
        let (_f, follower) = open_temp();
        let first = follower.import(None, records[..2].to_vec()).unwrap();
        assert_eq!((first.records, refusal(&first)), (2, String::new()));
        let rest = follower.import(None, records[2..].to_vec()).unwrap();
        assert_eq!(rest.records, 2);
        assert_eq!(chain(&follower), records);
        assert_eq!(follower.tenant(UID).unwrap(), leader.tenant(UID).unwrap());
        assert!(follower.verify().unwrap().is_ok());

        // Importing what is there already stores nothing and is no refusal.
        let again = follower.import(None, records.clone()).unwrap();
        assert_eq!((again.records, refusal(&again)), (0, String::new()));

        // After a takeover the copy's chain goes on where the leader's ended.
        let next = leader.append(next_after(&records[3])).unwrap();
        let continued = follower.append(next_after(&records[3])).unwrap();
        assert_eq!(continued.seq, 5);
        assert_eq!(continued.prev_hash, records[3].hash);
        assert_eq!(continued.hash, next.hash);
        // The imported tail was cached, as an append's is.
        assert_eq!(follower.cached_last(UID), Some(Some(continued)));
    }

    #[test]
    fn a_record_that_does_not_link_is_refused_and_nothing_after_it_is_imported() {
        let (_l, leader) = leader();
        let records = chain(&leader);
        let (_f, follower) = open_temp();
        follower.import(None, records[..2].to_vec()).unwrap();

        // A changed field: the record's hash is no longer its fields'.
        let mut changed = records[2].clone();
        changed.message.push('!');
        let imported = follower
            .import(None, vec![changed, records[3].clone()])
            .unwrap();
        assert_eq!(imported.records, 0);
        assert_refused(&imported, "is not the hash of its fields");
        assert_eq!(seqs(&follower), [1, 2]);

        // A record of another history of the chain (a fork): its prevHash is not our tail's.
        let (_o, other) = open_temp();
        for entry in lifecycle("acme", UID, t0() + chrono::Duration::hours(1), &TO_RUNNING) {
            other.append(entry).unwrap();
        }
        let forked = chain(&other)[2].clone();
        let imported = follower.import(None, vec![forked]).unwrap();
        assert_eq!(imported.records, 0);
        assert_refused(&imported, "does not link");
        assert_eq!(seqs(&follower), [1, 2]);

        // What links before the first bad record is kept.
        let mut broken = records[3].clone();
        broken.prev_hash = crate::journal::Digest::ZERO;
        let imported = follower
            .import(None, vec![records[2].clone(), broken])
            .unwrap();
        assert_eq!(imported.records, 1);
        assert_refused(&imported, "does not link");
        assert_eq!(seqs(&follower), [1, 2, 3]);
        assert!(follower.verify().unwrap().is_ok());

        // A different record at a seq we hold is the fork too.
        let imported = follower.import(None, chain(&other)[..1].to_vec()).unwrap();
        assert_refused(&imported, "forked");
    }

    #[test]
    fn a_gap_is_refused() {
        let (_l, leader) = leader();
        let records = chain(&leader);
        let (_f, follower) = open_temp();
        let imported = follower.import(None, records[2..].to_vec()).unwrap();
        assert_eq!(imported.records, 0);
        assert_refused(&imported, "a gap");
        assert_eq!(follower.tenant(UID).unwrap(), None);

        follower.import(None, records[..1].to_vec()).unwrap();
        let imported = follower.import(None, records[2..].to_vec()).unwrap();
        assert_eq!(imported.records, 0);
        assert_refused(&imported, "skips ahead");
        assert_eq!(seqs(&follower), [1]);
    }

    #[test]
    fn a_chain_the_leader_compacted_starts_at_its_checkpoint() {
        let (_l, leader) = leader();
        let retention = Retention {
            keep_records: 1,
            keep_for: chrono::Duration::days(1),
            archive: None,
        };
        leader
            .compact(retention, t0() + chrono::Duration::days(30))
            .unwrap();
        let checkpoint = leader.checkpoint(UID).unwrap().expect("a checkpoint");
        assert_eq!(checkpoint.through, 3);
        let kept = chain(&leader);
        assert_eq!(kept.len(), 1);

        // A checkpoint the record does not link to is refused, and not stored.
        let (_f, follower) = open_temp();
        let mut wrong = checkpoint.clone();
        wrong.hash = crate::journal::Digest::ZERO;
        let imported = follower.import(Some(wrong), kept.clone()).unwrap();
        assert_eq!(imported.records, 0);
        assert_refused(&imported, "does not link");
        assert_eq!(follower.checkpoint(UID).unwrap(), None);
        assert_eq!(follower.tenant(UID).unwrap(), None);

        // Without one, the chain's first kept record is a gap.
        let imported = follower.import(None, kept.clone()).unwrap();
        assert_refused(&imported, "a gap");

        let imported = follower
            .import(Some(checkpoint.clone()), kept.clone())
            .unwrap();
        assert_eq!((imported.records, refusal(&imported)), (1, String::new()));
        assert_eq!(follower.checkpoint(UID).unwrap(), Some(checkpoint));
        assert_eq!(chain(&follower), kept);
        assert_eq!(follower.tenant(UID).unwrap(), leader.tenant(UID).unwrap());
        assert!(follower.verify().unwrap().is_ok());
    }
}
