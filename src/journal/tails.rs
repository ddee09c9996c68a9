//! The last record of each chain this handle has read or appended, in memory: every
//! reconcile reads its tenant's tail, and a reopened journal must still hold every tail
//! this handle saw (see [`super::Journal::lost_acknowledged`]).

use super::digest::Digest;
use super::record::Record;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// A chain tail a journal handle saw: (uid, seq, hash).
pub type Acknowledged = (String, u64, Digest);

/// uid -> the chain's last record (`None`: no record yet).
#[derive(Default)]
pub(super) struct Tails(Mutex<HashMap<String, Option<Record>>>);

impl Tails {
    pub(super) fn get(&self, uid: &str) -> Option<Option<Record>> {
        self.lock().get(uid).cloned()
    }

    /// Records `tail` as the chain's tail unless a later one is known: a read that raced
    /// with an append never moves a tail back.
    pub(super) fn offer(&self, uid: &str, tail: Option<&Record>) {
        keep_later(self.lock().entry(uid.to_owned()).or_insert(None), tail);
    }

    /// [`Tails::offer`] for each of `records`, under one lock.
    pub(super) fn offer_all<'a>(&self, records: impl Iterator<Item = &'a Record>) {
        let mut tails = self.lock();
        for record in records {
            keep_later(
                tails.entry(record.uid.clone()).or_insert(None),
                Some(record),
            );
        }
    }

    pub(super) fn seen(&self) -> Vec<Acknowledged> {
        self.lock()
            .iter()
            .filter_map(|(uid, tail)| tail.as_ref().map(|r| (uid.clone(), r.seq, r.hash)))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Option<Record>>> {
        // Each update replaces one entry whole: a panic cannot leave one half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Replaces `known` with `tail` unless `known` is later.
fn keep_later(known: &mut Option<Record>, tail: Option<&Record>) {
    let seq = |r: Option<&Record>| r.map_or(0, |r| r.seq);
    if seq(tail) >= seq(known.as_ref()) {
        *known = tail.cloned();
    }
}
