//! Waits on watches, not on polls: a phase is over when `expected` objects matching a
//! label selector satisfy a condition at once.

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Resolves with the instant the `expected`-th object satisfied `done`.
pub async fn until_all<K>(
    what: String,
    api: Api<K>,
    selector: String,
    expected: usize,
    timeout: Duration,
    done: impl Fn(&K) -> bool,
) -> anyhow::Result<Instant>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let stream = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    let mut satisfied = HashSet::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    while satisfied.len() < expected {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else {
                    anyhow::bail!("the watch of {what} ended");
                };
                let object = match event {
                    Ok(object) => object,
                    Err(e) => {
                        eprintln!("bench: watch of {what}: {e} (retrying)");
                        continue;
                    }
                };
                if done(&object) {
                    satisfied.insert(object.name_any());
                } else {
                    satisfied.remove(&object.name_any());
                }
            }
            _ = progress.tick() => eprintln!("bench: {what}: {}/{expected}", satisfied.len()),
            () = tokio::time::sleep_until(deadline) => anyhow::bail!(
                "timed out after {timeout:?}: only {}/{expected} {what}",
                satisfied.len()
            ),
        }
    }
    Ok(Instant::now())
}
