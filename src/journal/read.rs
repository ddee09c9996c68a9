//! Reading records and chain summaries. Reads decode but do not check hashes; that is
//! [`Journal::verify`]'s job.

use super::codec;
use super::record::{Record, TenantSummary};
use super::{Journal, JournalError};
use neurallog_migrations::layout::{
    KEY_SEPARATOR, RECORDS_TREE, TENANTS_TREE, chain_prefix, display_record_key,
};
use neurallog_migrations::summary::TenantSummaryRow;

/// Records in key order (by uid, then seq), decoded as they are read.
pub struct RecordIter {
    inner: Option<sled::Iter>,
    /// Why reading could not start, yielded first.
    failed: Option<JournalError>,
}

impl RecordIter {
    fn over(inner: Option<sled::Iter>) -> RecordIter {
        RecordIter {
            inner,
            failed: None,
        }
    }

    fn failed(error: JournalError) -> RecordIter {
        RecordIter {
            inner: None,
            failed: Some(error),
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.failed.take() {
            return Some(Err(error));
        }
        let item = self.inner.as_mut()?.next()?;
        Some(
            item.map_err(JournalError::from)
                .and_then(|(key, value)| decode_record(&key, &value)),
        )
    }
}

impl DoubleEndedIterator for RecordIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.failed.take() {
            return Some(Err(error));
        }
        let item = self.inner.as_mut()?.next_back()?;
        Some(
            item.map_err(JournalError::from)
                .and_then(|(key, value)| decode_record(&key, &value)),
        )
    }
}

impl Journal {
    /// The last record of the chain `uid` (from memory once this handle has read or
    /// appended it).
    pub fn last(&self, uid: &str) -> Result<Option<Record>, JournalError> {
        if let Some(tail) = self.tails.get(uid) {
            return Ok(tail);
        }
        let tail = self.history(uid).next_back().transpose()?;
        self.tails.offer(uid, tail.as_ref());
        Ok(tail)
    }

    /// The chain `uid`, in seq order, streamed.
    pub fn history(&self, uid: &str) -> RecordIter {
        match self.settled() {
            Ok(()) => RecordIter::over(self.chain_entries(uid)),
            Err(error) => RecordIter::failed(error),
        }
    }

    /// The raw entries of the chain `uid`; `None` for a uid no chain can have (its prefix
    /// could match another chain's keys).
    pub(super) fn chain_entries(&self, uid: &str) -> Option<sled::Iter> {
        let possible = !uid.is_empty() && !uid.as_bytes().contains(&KEY_SEPARATOR);
        possible.then(|| self.records.scan_prefix(chain_prefix(uid)))
    }

    /// Every record of every chain, by uid then seq, streamed (for export).
    pub fn records(&self) -> RecordIter {
        match self.settled() {
            Ok(()) => RecordIter::over(Some(self.records.iter())),
            Err(error) => RecordIter::failed(error),
        }
    }

    /// The summary of the chain `uid`.
    pub fn tenant(&self, uid: &str) -> Result<Option<TenantSummary>, JournalError> {
        self.settled()?;
        match self.tenants.get(uid.as_bytes())? {
            Some(bytes) => decode_summary(uid.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every chain's summary, by tenant name, then oldest chain first.
    pub fn tenants(&self) -> Result<Vec<TenantSummary>, JournalError> {
        self.settled()?;
        let mut summaries = self
            .tenants
            .iter()
            .map(|item| {
                let (key, value) = item?;
                decode_summary(&key, &value)
            })
            .collect::<Result<Vec<_>, _>>()?;
        summaries.sort_by(|a, b| {
            (&a.tenant, a.first_time, &a.uid).cmp(&(&b.tenant, b.first_time, &b.uid))
        });
        Ok(summaries)
    }

    /// The uids of every chain of the tenant `name`, newest chain (by first record time)
    /// last.
    pub fn find_uids(&self, name: &str) -> Result<Vec<String>, JournalError> {
        Ok(self
            .tenants()?
            .into_iter()
            .filter(|summary| summary.tenant == name)
            .map(|summary| summary.uid)
            .collect())
    }
}

pub(super) fn decode_record(key: &[u8], value: &[u8]) -> Result<Record, JournalError> {
    codec::decode_record(value).map_err(|e| JournalError::Corrupt {
        tree: RECORDS_TREE,
        key: display_record_key(key),
        detail: e.to_string(),
    })
}

pub(super) fn decode_summary(key: &[u8], value: &[u8]) -> Result<TenantSummary, JournalError> {
    TenantSummaryRow::decode(value)
        .and_then(codec::summary_from_row)
        .map_err(|e| JournalError::Corrupt {
            tree: TENANTS_TREE,
            key: String::from_utf8_lossy(key).into_owned(),
            detail: e.to_string(),
        })
}
