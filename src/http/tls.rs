//! TLS for the operator's endpoints: a certificate and key from PEM files (read again when
//! they change, e.g. a renewed Secret), or, when none is given, a self-signed certificate
//! made at start.

use anyhow::{Context as _, anyhow};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How often the certificate files are checked for a change.
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;

/// Where the server's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Made at start for these DNS names and IP addresses.
    SelfSigned {
        names: Vec<String>,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate in force; replaced whole when the files change.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

impl CertResolver {
    fn replace(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
    }

    #[cfg(test)]
    pub(crate) fn certificate(&self) -> CertificateDer<'static> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cert[0]
            .clone()
    }
}

/// Reads a PEM certificate chain and its private key, checking they belong together.
pub fn load_pem(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("{} holds no PEM certificate", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    certified(chain, private)
        .with_context(|| format!("{} and {} do not fit", cert.display(), key.display()))
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<CertifiedKey> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| anyhow!("the key is not the certificate's: {e}"))?;
    Ok(certified)
}

/// A self-signed certificate for `names` (IP addresses become IP SANs).
pub fn self_signed(names: &[String]) -> anyhow::Result<CertifiedKey> {
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .context("cannot make a self-signed certificate")?;
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| anyhow!("the generated key: {e}"))?;
    certified(vec![made.cert.der().clone()], key)
}

/// The rustls configuration, and the resolver to reload.
pub fn server_config(
    source: &CertSource,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<CertResolver>)> {
    let key = match source {
        CertSource::Files { cert, key } => load_pem(cert, key)?,
        CertSource::SelfSigned { names } => self_signed(names)?,
    };
    let resolver = Arc::new(CertResolver {
        current: RwLock::new(Arc::new(key)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    // Only HTTP/1.1 is offered: the kubelet's probes and the API server's proxy were tested
    // against it. (hyper-util is now built with HTTP/2 for the operator's API client, so
    // axum could serve h2 too; offering it here is left untested and off.)
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), resolver))
}

/// The files' modification times, to notice a change.
fn modified(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Some((time(cert)?, time(key)?))
}

/// Watches the certificate files and swaps in the new pair once both load and fit; a pair
/// that does not is logged and the previous certificate kept.
pub struct Reloader {
    cert: PathBuf,
    key: PathBuf,
    seen: Option<(SystemTime, SystemTime)>,
    resolver: Arc<CertResolver>,
}

impl Reloader {
    pub fn new(cert: PathBuf, key: PathBuf, resolver: Arc<CertResolver>) -> Reloader {
        let seen = modified(&cert, &key);
        Reloader {
            cert,
            key,
            seen,
            resolver,
        }
    }

    /// Reloads if the files changed; true when a new certificate is in force.
    pub fn check(&mut self) -> bool {
        let now = modified(&self.cert, &self.key);
        if now.is_none() || now == self.seen {
            return false;
        }
        match load_pem(&self.cert, &self.key) {
            Ok(key) => {
                self.seen = now;
                self.resolver.replace(key);
                tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                true
            }
            Err(error) => {
                // Not marked seen: a Secret update may land the two files one at a time.
                tracing::warn!(
                    error = format!("{error:#}"),
                    "keeping the previous TLS certificate"
                );
                false
            }
        }
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check();
        }
    }
}

/// Accepted connections after their TLS handshake, for `axum::serve`. Handshakes run on
/// tasks of their own (bounded, with a timeout), so a slow client delays no other.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (done, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    drop(slot);
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (only when the runtime shuts down): nothing comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> CertificateDer<'static> {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.join("tls.crt"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), made.signing_key.serialize_pem()).unwrap();
        made.cert.der().clone()
    }

    #[test]
    fn changed_files_are_reloaded_and_a_bad_pair_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = write_pair(dir.path(), "first.example");
        let (_, resolver) = server_config(&CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap();
        assert_eq!(resolver.certificate(), first);
        let mut reloader = Reloader::new(cert.clone(), key.clone(), resolver.clone());
        assert!(!reloader.check(), "unchanged files are not read again");

        // mtime granularity: make the change visible whatever the filesystem.
        std::thread::sleep(Duration::from_millis(20));
        let second = write_pair(dir.path(), "second.example");
        let later = SystemTime::now() + Duration::from_secs(2);
        for path in [&cert, &key] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(reloader.check());
        assert_eq!(resolver.certificate(), second);

        // A key that is not the certificate's is refused; the served one stays.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&key)
            .unwrap()
            .set_modified(later + Duration::from_secs(2))
            .unwrap();
        assert!(!reloader.check());
        assert_eq!(resolver.certificate(), second);
    }

    #[test]
    fn missing_or_mismatched_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let error = load_pem(&dir.path().join("none.crt"), &dir.path().join("none.key"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot read the TLS certificate"), "{error}");
        write_pair(dir.path(), "a.example");
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other.key"), other.serialize_pem()).unwrap();
        let error = format!(
            "{:#}",
            load_pem(&dir.path().join("tls.crt"), &dir.path().join("other.key")).unwrap_err()
        );
        assert!(error.contains("do not fit"), "{error}");
    }

    #[test]
    fn a_self_signed_certificate_is_made_for_names_and_addresses() {
        let key = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(key.cert.len(), 1);
    }
}
