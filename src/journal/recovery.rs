//! Opening the journal at start-up, and replacing it when it is damaged.
//!
//! Damage is whatever makes the journal untrustworthy: sled cannot read it, `verify` finds
//! a broken chain, or a Tenant's status points at a record the journal no longer has (sled
//! silently drops a torn or corrupted tail, so only the cluster still shows that it
//! existed). A damaged journal is moved aside and kept, never repaired in place, and a new
//! journal starts with a [`RecoveryMark`] pointing at it.

pub mod mark;

use crate::journal::{Journal, JournalError, Options, RecoveryMark};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// What a Tenant's status says about its journal chain.
#[derive(Clone, Debug)]
pub struct StatusPosition {
    pub tenant: String,
    pub uid: String,
    pub sequence: u64,
    pub hash: String,
    /// The chain label the status was written under (`None`: an original journal).
    pub chain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the journal at {} is damaged ({reason}) and could not be moved to {}: {source}", from.display(), to.display())]
    Move {
        from: PathBuf,
        to: PathBuf,
        reason: String,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the journal at `path`; a damaged one is moved aside and replaced by a new one.
pub fn open_or_replace(
    path: &Path,
    statuses: &[StatusPosition],
    now: DateTime<Utc>,
) -> Result<Journal, RecoveryError> {
    open_or_replace_with(path, Options::default(), statuses, now)
}

/// [`open_or_replace`], opening with `options`.
pub fn open_or_replace_with(
    path: &Path,
    options: Options,
    statuses: &[StatusPosition],
    now: DateTime<Utc>,
) -> Result<Journal, RecoveryError> {
    let (reason, replaced) = match Journal::open_with(path, options) {
        Ok(journal) => match damage(&journal, statuses)? {
            None => return Ok(journal),
            Some(reason) => (reason, journal.recovery()?),
        },
        Err(error) if is_damage(&error) => (error.to_string(), None),
        Err(error) => return Err(error.into()),
    };
    let earlier = earlier_chains(replaced.as_ref(), statuses);
    replace(path, options, reason, now, earlier)
}

/// Every chain the new journal's history replaces: the damaged journal's own and those it
/// replaced, and each chain a Tenant's status names now (the new journal tells those
/// tenants of the recovery; their statuses move to its chain as they are reconciled).
fn earlier_chains(
    replaced: Option<&RecoveryMark>,
    statuses: &[StatusPosition],
) -> Vec<Option<String>> {
    let mut chains: Vec<Option<String>> = match replaced {
        Some(mark) => {
            let mut chains = mark.earlier_chains.clone();
            chains.push(Some(mark.chain_label()));
            chains
        }
        None => vec![None],
    };
    for status in statuses {
        if !chains.contains(&status.chain) {
            chains.push(status.chain.clone());
        }
    }
    chains
}

/// Errors that mean the bytes are bad, not that the journal is busy, too new or unreachable.
fn is_damage(error: &JournalError) -> bool {
    match error {
        JournalError::Open { source, .. } | JournalError::Storage(source) => match source {
            sled::Error::Corruption { .. } => true,
            sled::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        },
        JournalError::Corrupt { .. } | JournalError::Migration { .. } => true,
        _ => false,
    }
}

/// Why the open journal cannot be trusted, if it cannot.
fn damage(journal: &Journal, statuses: &[StatusPosition]) -> Result<Option<String>, JournalError> {
    let report = journal.verify()?;
    if let Some(problem) = report.first_problem {
        return Ok(Some(format!("verify: {problem}")));
    }
    let mark = journal.recovery()?;
    let chain = mark.as_ref().map(RecoveryMark::chain_label);
    for status in statuses {
        if status.chain != chain {
            // A chain this journal replaced is history; any other is a fork: the status
            // was written from a journal this one never was (another replica's, a
            // restored backup), so this journal cannot vouch for it.
            if mark
                .as_ref()
                .is_some_and(|m| m.knows(status.chain.as_deref()))
            {
                continue;
            }
            return Ok(Some(format!(
                "Tenant {} shows journal record {} of chain {}, which this journal ({}) neither holds nor replaced",
                status.tenant,
                status.sequence,
                chain_name(status.chain.as_deref()),
                chain_name(chain.as_deref()),
            )));
        }
        // A status is written only after its record is durable: a missing record was lost
        // (an emptied journal volume loses every record, and is damage too).
        let lost = match journal.record(&status.uid, status.sequence)? {
            None => format!(
                "Tenant {} shows journal record {} but the journal ends at {}: its tail was lost",
                status.tenant,
                status.sequence,
                journal.last(&status.uid)?.map_or(0, |r| r.seq)
            ),
            Some(record) if record.hash.to_hex() != status.hash => format!(
                "Tenant {} shows journal record {} with hash {} but the journal holds {}",
                status.tenant,
                status.sequence,
                status.hash,
                record.hash.to_hex()
            ),
            Some(_) => continue,
        };
        return Ok(Some(lost));
    }
    Ok(None)
}

/// How logs and reasons name a chain.
fn chain_name(chain: Option<&str>) -> String {
    chain.map_or_else(|| "original".to_owned(), |c| format!("{c:?}"))
}

fn replace(
    path: &Path,
    options: Options,
    reason: String,
    now: DateTime<Utc>,
    earlier_chains: Vec<Option<String>>,
) -> Result<Journal, RecoveryError> {
    let moved_to = aside(path, now);
    std::fs::rename(path, &moved_to).map_err(|source| RecoveryError::Move {
        from: path.to_owned(),
        to: moved_to.clone(),
        reason: reason.clone(),
        source,
    })?;
    let journal = Journal::open_with(path, options)?;
    let chain = (1..)
        .map(|n| RecoveryMark::label_at(now, n))
        .find(|label| !earlier_chains.contains(&Some(label.clone())));
    let mark = RecoveryMark {
        moved_to: moved_to.display().to_string(),
        reason,
        at: now,
        chain,
        earlier_chains,
    };
    journal.mark_recovery(&mark)?;
    tracing::error!(
        moved_to = %mark.moved_to,
        reason = %mark.reason,
        "the journal was damaged: moved it aside (kept) and started a new one"
    );
    Ok(journal)
}

/// `<path>.damaged-<UTC time>` next to the journal, with `-<n>` if a journal damaged in
/// the same second is there already.
fn aside(path: &Path, now: DateTime<Utc>) -> PathBuf {
    let stamp = now.format("%Y%m%dT%H%M%SZ");
    let named = |n: u32| {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".damaged-{stamp}"));
        if n > 1 {
            name.push(format!("-{n}"));
        }
        path.with_file_name(name)
    };
    (1..)
        .map(named)
        .find(|candidate| !candidate.exists())
        .unwrap_or_else(|| named(0))
}

#[cfg(test)]
mod tests;
