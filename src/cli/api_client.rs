//! The operator's client of the Kubernetes API: kube's own stack (base URI, credentials,
//! extra headers, retries of 429, 503 and 504), over a connection that speaks HTTP/2 when
//! the API server offers it.
//!
//! kube's default client offers only HTTP/1.1, where every request in flight and every
//! watch holds a TLS connection of its own: the operator's 15 watches and 16 concurrent
//! passes kept about 30, and each response woke that connection's own task. Over HTTP/2
//! they are streams of one connection (as client-go's are).

use anyhow::Context as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use std::time::Duration;
use tower::ServiceBuilder;
use tower::retry::RetryLayer;

/// How a connection is found dead: a PING after this much silence, and no answer to it in
/// time closes the connection (what client-go does, with the same figures). One connection
/// carries everything, so one that a vanished peer left half-open must not hold every
/// request until the read timeout (295 s) ends it; the next request opens a new one.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    ping_after: Duration,
    answer_within: Duration,
}

const LIVENESS: Liveness = Liveness {
    ping_after: Duration::from_secs(30),
    answer_within: Duration::from_secs(15),
};

/// A client for `config` that negotiates HTTP/2 (falling back to HTTP/1.1).
pub(crate) fn client(config: kube::Config) -> anyhow::Result<kube::Client> {
    client_checking(config, LIVENESS)
}

fn client_checking(config: kube::Config, liveness: Liveness) -> anyhow::Result<kube::Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = config
        .rustls_client_config()
        .context("cannot set up TLS for the API server")?;
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls_pki_types::ServerName::try_from(name.clone())
            .with_context(|| format!("invalid TLS server name {name:?} in the kubeconfig"))?;
        builder =
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut connector =
        hyper_timeout::TimeoutConnector::new(builder.enable_all_versions().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(liveness.ping_after)
            .http2_keep_alive_timeout(liveness.answer_within)
            .http2_keep_alive_while_idle(true)
            .build(connector);

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests;
