//! What a reconcile pass can fail with, and the stable reason each failure reports.

use super::JOURNAL_UNWRITABLE;
use crate::auth::AuthError;
use crate::journal::JournalError;
use crate::render::RenderError;
use std::fmt::Debug;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("writing {object}: {source}")]
    Write {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("journal: {0}")]
    Journal(#[source] JournalError),
    #[error("Auth service: {0}")]
    Auth(#[source] AuthError),
    #[error("cannot render: {0}")]
    Render(#[source] RenderError),
    #[error("cannot serialize: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("the journal task failed: {0}")]
    Join(String),
    #[error("the Tenant has no uid")]
    MissingUid,
    #[error("{0}")]
    Retention(#[source] super::volume_retention::RetentionRefused),
}

impl Error {
    /// A write the API server refused for what it holds (it would refuse it again).
    pub fn is_refused_write(&self) -> bool {
        self.reason() == "WriteRefused"
    }

    /// A stable reason for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Error::Kube(_) => "KubernetesApi",
            Error::Write { source, .. } => match source {
                kube::Error::Api(e) if e.code == 409 => "Conflict",
                kube::Error::Api(e) if (400..500).contains(&e.code) && e.code != 429 => {
                    "WriteRefused"
                }
                _ => "WriteFailed",
            },
            Error::Journal(e) if e.is_storage_failure() => JOURNAL_UNWRITABLE,
            Error::Journal(JournalError::Unavailable { .. }) => JOURNAL_UNWRITABLE,
            Error::Journal(_) | Error::Join(_) => "JournalUnavailable",
            Error::Auth(e) => e.reason(),
            Error::Render(_) => "RenderFailed",
            Error::Serialize(_) => "Serialize",
            Error::MissingUid => "MissingUid",
            Error::Retention(_) => "RetentionRefused",
        }
    }
}

pub(super) fn source_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
