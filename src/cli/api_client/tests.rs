use super::{Liveness, client, client_checking};
use crate::http::tls::{CertSource, TlsListener, server_config};
use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTPS server on loopback offering `protocols` by ALPN, that answers `/version` with
/// the HTTP version of the request; the URL and the certificate's DER.
async fn server(protocols: &[&[u8]]) -> (String, Vec<u8>) {
    let names = vec!["127.0.0.1".to_string()];
    let (config, resolver) = server_config(&CertSource::SelfSigned { names }).unwrap();
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener::new(tcp, Arc::new(config)).unwrap();
    let router = Router::new().route(
        "/version",
        get(|request: Request| async move { format!("{:?}", request.version()) }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, resolver.certificate().to_vec())
}

fn config(url: &str, ca: Vec<u8>) -> kube::Config {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.root_cert = Some(vec![ca]);
    config
}

async fn version(client: &kube::Client) -> Result<String, kube::Error> {
    let request = http::Request::get("/version").body(Vec::new()).unwrap();
    client.request_text(request).await
}

async fn version_spoken(protocols: &[&[u8]]) -> String {
    let (url, ca) = server(protocols).await;
    version(&client(config(&url, ca)).unwrap()).await.unwrap()
}

#[tokio::test]
async fn requests_go_over_http2_when_the_server_offers_it() {
    assert_eq!(version_spoken(&[b"h2", b"http/1.1"]).await, "HTTP/2.0");
}

#[tokio::test]
async fn requests_go_over_http1_when_the_server_offers_only_that() {
    assert_eq!(version_spoken(&[b"http/1.1"]).await, "HTTP/1.1");
}

/// A TCP relay to `target` on loopback. `freeze` makes the connections it relays so far hold
/// every byte from then on, neither passing nor closing anything: a peer that vanished.
struct Relay {
    url: String,
    frozen: Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Relay {
    async fn to(target: &str) -> Relay {
        let target: SocketAddr = target.trim_start_matches("https://").parse().unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", tcp.local_addr().unwrap());
        let frozen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = tcp.accept().await {
                let server = TcpStream::connect(target).await.unwrap();
                let flag = Arc::new(AtomicBool::new(false));
                connections.lock().unwrap().push(flag.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass_on(client_read, server_write, flag.clone()));
                tokio::spawn(pass_on(server_read, client_write, flag));
            }
        });
        Relay { url, frozen }
    }

    fn freeze(&self) {
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

async fn pass_on(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.load(Ordering::SeqCst) {
            // Held, not closed: keep both ends open for as long as the test runs.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_connection_that_stops_answering_is_given_up_and_the_next_request_opens_another() {
    let (url, ca) = server(&[b"h2", b"http/1.1"]).await;
    let relay = Relay::to(&url).await;
    let liveness = Liveness {
        ping_after: Duration::from_millis(100),
        answer_within: Duration::from_millis(200),
    };
    let client = client_checking(config(&relay.url, ca), liveness).unwrap();
    assert_eq!(version(&client).await.unwrap(), "HTTP/2.0");

    relay.freeze();
    // Without the PINGs this waits for the read timeout (295 s), and so would every other
    // request, all on this one connection.
    let stuck = tokio::time::timeout(Duration::from_secs(10), version(&client))
        .await
        .expect("the request on the silent connection ends once its PING goes unanswered");
    assert!(stuck.is_err(), "{stuck:?}");

    let after = tokio::time::timeout(Duration::from_secs(10), version(&client))
        .await
        .expect("the next request does not wait on the dead connection");
    assert_eq!(after.unwrap(), "HTTP/2.0");
}
