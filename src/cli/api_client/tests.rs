use super::client;
use crate::http::tls::TlsListener;
use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use rustls_pki_types::PrivateKeyDer;
use std::sync::Arc;
use tokio::net::TcpListener;

/// An HTTPS server on loopback offering `protocols` by ALPN, that answers `/version` with
/// the HTTP version of the request; the URL and the certificate's DER.
async fn server(protocols: &[&[u8]]) -> (String, Vec<u8>) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let der = made.cert.der().clone();
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)
    .unwrap();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener::new(tcp, Arc::new(config)).unwrap();
    let router = Router::new().route(
        "/version",
        get(|request: Request| async move { format!("{:?}", request.version()) }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, der.to_vec())
}

async fn version_spoken(protocols: &[&[u8]]) -> String {
    let (url, ca) = server(protocols).await;
    let mut config = kube::Config::new(url.parse().unwrap());
    config.root_cert = Some(vec![ca]);
    let client = client(config).unwrap();
    let request = http::Request::get("/version").body(Vec::new()).unwrap();
    client.request_text(request).await.unwrap()
}

#[tokio::test]
async fn requests_go_over_http2_when_the_server_offers_it() {
    assert_eq!(version_spoken(&[b"h2", b"http/1.1"]).await, "HTTP/2.0");
}

#[tokio::test]
async fn requests_go_over_http1_when_the_server_offers_only_that() {
    assert_eq!(version_spoken(&[b"http/1.1"]).await, "HTTP/1.1");
}
