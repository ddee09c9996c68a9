//! Where the journal tools read from: the journal directory (read-only, when no operator
//! holds it), the operator's HTTP journal API (`--server URL`), or that API through the
//! Kubernetes API server's service proxy (`--kube-service NS/[https:]NAME[:PORT]`). Every
//! source gives the same [`crate::journal::view`] shapes; rendering is done once, there.
//!
//! The operator's journal API wants a bearer token whose user may `get` `/journal/*`
//! ([`crate::http::access`]). Directly it goes in `Authorization`; through the service
//! proxy, which authenticates the caller with `Authorization` and drops it, it goes in
//! [`PROXIED_TOKEN_HEADER`] (so an auditor needs `services/proxy` on the operator's
//! Service and the journal auditor role, and a token: the kubeconfig's, or --token-file).

use crate::http::access::PROXIED_TOKEN_HEADER;
use crate::journal::view::{
    ExportFilter, History, VerifyOutcome, export_line, export_records, read_history, verify_journal,
};
use crate::journal::{Journal, JournalCopy, Record, TenantSummary, VerifyProgress};
use anyhow::{Context as _, anyhow, bail};
use futures::AsyncReadExt as _;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::Path;

/// The Service the operator's manifests (`deploy/manager/service.yaml`, the Helm chart)
/// create, and its port, which serves TLS.
pub const DEFAULT_SERVICE: &str = "neurallog-system/https:neurallog-operator:8080";

/// A Service addressed through the API server: `NAMESPACE/[SCHEME:]NAME[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    /// `https` or `http`; the API server speaks http when absent.
    pub scheme: Option<String>,
    pub name: String,
    /// A port number or name; the Service's only port when absent.
    pub port: Option<String>,
}

impl std::str::FromStr for ServiceRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage =
            || format!("{text:?} is not NAMESPACE/[https:]NAME[:PORT] (like {DEFAULT_SERVICE})");
        let (namespace, rest) = text.split_once('/').ok_or_else(usage)?;
        let (scheme, rest) = match rest.split_once(':') {
            Some((scheme @ ("https" | "http"), rest)) => (Some(scheme.to_owned()), rest),
            _ => (None, rest),
        };
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (name, Some(port.to_owned())),
            None => (rest, None),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        if !valid(namespace) || !valid(name) || port.as_deref().is_some_and(|p| !valid(p)) {
            return Err(usage());
        }
        Ok(ServiceRef {
            namespace: namespace.to_owned(),
            scheme,
            name: name.to_owned(),
            port,
        })
    }
}

impl ServiceRef {
    /// The API server path that proxies to the Service's root.
    pub fn proxy_path(&self) -> String {
        let port = self
            .port
            .as_deref()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let scheme = self
            .scheme
            .as_deref()
            .map(|s| format!("{s}:"))
            .unwrap_or_default();
        format!(
            "/api/v1/namespaces/{}/services/{scheme}{}{port}/proxy",
            self.namespace, self.name
        )
    }
}

pub enum Source {
    File(Box<JournalCopy>),
    Server {
        http: reqwest::Client,
        base: String,
        token: Option<String>,
    },
    Kube {
        client: kube::Client,
        base: String,
        token: Option<String>,
    },
}

/// How `--server` checks an https operator's certificate.
#[derive(Debug, Clone, Default)]
pub struct ServerTls {
    /// PEM certificates to trust (the operator's own certificate, when self-made).
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate (a self-signed one made at start): for a loopback or
    /// port-forwarded operator only.
    pub insecure_skip_verify: bool,
}

impl Source {
    /// Opens the journal at `path` without writing to it.
    pub fn file(path: &Path) -> anyhow::Result<Source> {
        let journal = Journal::open_read_only(path)?;
        Ok(Source::File(Box::new(journal)))
    }

    /// The operator at `url`, without a token (a loopback operator's plain HTTP).
    pub fn server(url: &str) -> anyhow::Result<Source> {
        Source::server_with(url, None, &ServerTls::default())
    }

    /// The operator at `url`, sent `token` as `Authorization: Bearer`.
    pub fn server_with(
        url: &str,
        token: Option<String>,
        tls: &ServerTls,
    ) -> anyhow::Result<Source> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--server {url:?} must be an http:// or https:// URL");
        }
        let mut builder =
            reqwest::Client::builder().danger_accept_invalid_certs(tls.insecure_skip_verify);
        if let Some(file) = &tls.ca_file {
            let pem = std::fs::read(file)
                .with_context(|| format!("cannot read the CA file {}", file.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not PEM certificates", file.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        Ok(Source::Server {
            http,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The operator's Service through the API server, `token` in [`PROXIED_TOKEN_HEADER`].
    pub fn kube(client: kube::Client, service: &ServiceRef, token: Option<String>) -> Source {
        Source::Kube {
            client,
            base: service.proxy_path(),
            token,
        }
    }

    pub async fn tenants(&self) -> anyhow::Result<Vec<TenantSummary>> {
        match self {
            Source::File(journal) => Ok(journal.tenants()?),
            _ => self.get_json("/journal/tenants").await,
        }
    }

    pub async fn history(&self, name: &str, uid: Option<&str>) -> anyhow::Result<History> {
        let found = match self {
            Source::File(journal) => read_history(journal, name, uid)?,
            _ => {
                let mut path = format!("/journal/tenants/{}", encode(name));
                if let Some(uid) = uid {
                    path.push_str(&format!("?uid={}", encode(uid)));
                }
                return self.get_json(&path).await;
            }
        };
        found.ok_or_else(|| match uid {
            Some(uid) => anyhow!("the journal has no chain {uid} of tenant {name}"),
            None => anyhow!("the journal has no tenant {name}"),
        })
    }

    /// Writes the selected records as JSON Lines to `out`, as they are read; returns how
    /// many lines were written.
    pub async fn export(
        &self,
        filter: &ExportFilter,
        out: &mut impl Write,
        mut on_line: impl FnMut(u64),
    ) -> anyhow::Result<u64> {
        let mut lines = 0;
        match self {
            Source::File(journal) => {
                for record in export_records(journal, filter)? {
                    out.write_all(export_line(&record?).as_bytes())?;
                    lines += 1;
                    on_line(lines);
                }
            }
            _ => {
                let path = format!("/journal/export{}", export_query(filter));
                self.get_stream(&path, &mut |chunk| {
                    out.write_all(chunk)?;
                    lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                    on_line(lines);
                    Ok(())
                })
                .await?;
            }
        }
        out.flush()?;
        Ok(lines)
    }

    pub async fn verify(
        &self,
        on_progress: impl FnMut(&VerifyProgress),
    ) -> anyhow::Result<VerifyOutcome> {
        match self {
            Source::File(journal) => Ok(verify_journal(journal, on_progress)?),
            _ => self.get_json("/journal/verify").await,
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut body = Vec::new();
        self.get_stream(path, &mut |chunk| {
            body.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "{} answered {path} with something that is not the journal API's JSON",
                self.describe()
            )
        })
    }

    /// GETs `path` from the API, handing each chunk of the body to `sink`.
    async fn get_stream(
        &self,
        path: &str,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        match self {
            Source::File(_) => bail!("the journal file is read directly, not over HTTP"),
            Source::Server { http, base, token } => {
                let url = format!("{base}{path}");
                let mut request = http.get(&url);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let mut response = request
                    .send()
                    .await
                    .with_context(|| format!("cannot reach the operator at {url}"))?;
                let status = response.status();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    bail!(
                        "the operator answered {url} with {status}: {}{}",
                        text.trim(),
                        access_hint(status.as_u16(), token.is_some())
                    );
                }
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .with_context(|| format!("reading {url} failed"))?
                {
                    sink(&chunk)?;
                }
            }
            Source::Kube {
                client,
                base,
                token,
            } => {
                let url = format!("{base}{path}");
                let mut request = ::http::Request::get(&url);
                if let Some(token) = token {
                    request = request.header(PROXIED_TOKEN_HEADER, format!("Bearer {token}"));
                }
                let request = request
                    .body(Vec::new())
                    .with_context(|| format!("invalid request path {url}"))?;
                let mut body = client.request_stream(request).await.map_err(|e| {
                    let code = match &e {
                        kube::Error::Api(status) => status.code,
                        _ => 0,
                    };
                    anyhow!(
                        "the API server's proxy to the operator ({url}) failed: {e}{}",
                        access_hint(code, token.is_some())
                    )
                })?;
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let read = body
                        .read(&mut buffer)
                        .await
                        .with_context(|| format!("reading {url} failed"))?;
                    if read == 0 {
                        break;
                    }
                    sink(&buffer[..read])?;
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self {
            Source::File(journal) => journal.original().display().to_string(),
            Source::Server { base, .. } => base.clone(),
            Source::Kube { base, .. } => format!("the API server proxy {base}"),
        }
    }
}

/// What to do about a 401 or 403.
fn access_hint(code: u16, sent_token: bool) -> &'static str {
    match code {
        401 if !sent_token => {
            "\n(the journal API wants a bearer token: your kubeconfig gives none; pass --token-file FILE, e.g. a file holding `kubectl create token NAME`)"
        }
        401 => "\n(the token was refused: expired or not a token of this cluster)",
        403 => {
            "\n(reading the journal takes the ClusterRole neurallog-journal-auditor for the token's user, and `get` on the operator Service's proxy, the Role neurallog-journal-reader)"
        }
        _ => "",
    }
}

fn export_query(filter: &ExportFilter) -> String {
    let mut params = Vec::new();
    if let Some(tenant) = &filter.tenant {
        params.push(format!("tenant={}", encode(tenant)));
    }
    if let Some(since) = &filter.since {
        params.push(format!("since={}", encode(&format_time_exact(since))));
    }
    if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    }
}

/// Sub-second precision matters for `since`: records may be milliseconds apart.
fn format_time_exact(time: &chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The records of one chain, for replay: the same from every source.
pub async fn chain_records(
    source: &Source,
    name: &str,
    uid: Option<&str>,
) -> anyhow::Result<(History, Vec<Record>)> {
    let mut history = source.history(name, uid).await?;
    let records = std::mem::take(&mut history.records);
    Ok((history, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_refs_parse_and_build_the_proxy_path() {
        let service: ServiceRef = DEFAULT_SERVICE.parse().unwrap();
        assert_eq!(
            service.proxy_path(),
            "/api/v1/namespaces/neurallog-system/services/https:neurallog-operator:8080/proxy"
        );
        let service: ServiceRef = "ops/journal:8080".parse().unwrap();
        assert_eq!(
            service.proxy_path(),
            "/api/v1/namespaces/ops/services/journal:8080/proxy"
        );
        let service: ServiceRef = "ops/journal".parse().unwrap();
        assert_eq!(
            service.proxy_path(),
            "/api/v1/namespaces/ops/services/journal/proxy"
        );
        for bad in [
            "",
            "ops",
            "/x",
            "ops/",
            "ops/x:",
            "Ops/x",
            "ops/x/y",
            "ops/https:",
            "ops/ftp:x:1",
        ] {
            assert!(bad.parse::<ServiceRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_encoded() {
        let filter = ExportFilter {
            tenant: Some("a b".into()),
            since: Some(crate::journal::view::parse_time("2025-01-02T03:04:05.5+00:00").unwrap()),
        };
        assert_eq!(
            export_query(&filter),
            "?tenant=a%20b&since=2025-01-02T03%3A04%3A05.500Z"
        );
        assert_eq!(export_query(&ExportFilter::default()), "");
    }

    /// A request's path and its proxied token header.
    type SeenRequest = (String, Option<String>);

    /// A kube client whose API server answers each request with `answer(path)`.
    fn fake_api_server(
        answer: impl Fn(&str) -> (u16, String) + Send + 'static,
    ) -> (kube::Client, tokio::task::JoinHandle<Vec<SeenRequest>>) {
        use kube::client::Body;
        let (service, mut handle) =
            tower_test::mock::pair::<::http::Request<Body>, ::http::Response<Body>>();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let path = request.uri().to_string();
                let token = request
                    .headers()
                    .get(PROXIED_TOKEN_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let (status, body) = answer(&path);
                seen.push((path, token));
                let response = ::http::Response::builder()
                    .status(status)
                    .body(Body::from(body.into_bytes()))
                    .unwrap();
                respond.send_response(response);
            }
            seen
        });
        (kube::Client::new(service, "default"), server)
    }

    #[tokio::test]
    async fn the_kube_source_goes_through_the_service_proxy() {
        let (client, server) = fake_api_server(|path| {
            if path.ends_with("/journal/export?tenant=acme") {
                (200, "{\"a\":1}\n{\"a\":2}\n".into())
            } else {
                (200, "[]".into())
            }
        });
        let source = Source::kube(
            client,
            &DEFAULT_SERVICE.parse().unwrap(),
            Some("tok".into()),
        );
        assert!(source.tenants().await.unwrap().is_empty());
        let mut out = Vec::new();
        let filter = ExportFilter {
            tenant: Some("acme".into()),
            since: None,
        };
        assert_eq!(source.export(&filter, &mut out, |_| {}).await.unwrap(), 2);
        drop(source);
        let proxy =
            "/api/v1/namespaces/neurallog-system/services/https:neurallog-operator:8080/proxy";
        assert_eq!(
            server.await.unwrap(),
            [
                (
                    format!("{proxy}/journal/tenants"),
                    Some("Bearer tok".to_string())
                ),
                (
                    format!("{proxy}/journal/export?tenant=acme"),
                    Some("Bearer tok".to_string())
                )
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_proxy_request_says_why() {
        let (client, _server) = fake_api_server(|_| (503, crate::journal::api::NOT_LEADER.into()));
        let source = Source::kube(client, &"ops/journal:http".parse().unwrap(), None);
        let error = source.verify(|_| {}).await.unwrap_err().to_string();
        assert!(
            error.contains("services/journal:http/proxy/journal/verify"),
            "{error}"
        );
        assert!(error.contains("not the leader"), "{error}");
    }

    #[tokio::test]
    async fn a_refusal_of_the_operator_says_which_role_or_token_is_missing() {
        let (client, _server) = fake_api_server(|_| (401, "a bearer token is required".into()));
        let source = Source::kube(client, &DEFAULT_SERVICE.parse().unwrap(), None);
        let error = source.tenants().await.unwrap_err().to_string();
        assert!(error.contains("pass --token-file"), "{error}");
        let (client, _server) = fake_api_server(|_| (403, "user \"x\" may not get".into()));
        let source = Source::kube(client, &DEFAULT_SERVICE.parse().unwrap(), Some("t".into()));
        let error = source.tenants().await.unwrap_err().to_string();
        assert!(
            error.contains("may not get") && error.contains("neurallog-journal-auditor"),
            "{error}"
        );
    }

    #[test]
    fn server_urls_must_be_http() {
        assert!(Source::server("localhost:8080").is_err());
        assert!(Source::server("http://127.0.0.1:8080/").is_ok());
    }
}
