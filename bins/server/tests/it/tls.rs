//! `wss://` served directly with rustls, and certificate reload on SIGHUP.

use std::process::Command;
use std::sync::Arc;

use futures_util::SinkExt;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::*;

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn connect_wss(server: &Server, ca_pem: &str, user: &str) -> Result<Wss, String> {
    let tcp = TcpStream::connect(server.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector(ca_pem)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("wss://localhost:{}/ws/projects/p", server.addr.port());
    let mut request = url.into_client_request().unwrap();
    let bearer = format!("Bearer {}", token(user, &["p"]));
    request
        .headers_mut()
        .insert("authorization", HeaderValue::from_str(&bearer).unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

#[tokio::test]
async fn wss_is_served_and_certificates_reload_on_sighup() {
    let dir = TempDir::new();
    let (cert, key) = self_signed();
    let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let server = Server::start_with_server_keys(
        "127.0.0.1:0",
        &format!("tls_cert_file = {cert_path:?}\ntls_key_file = {key_path:?}"),
        "",
    );

    let mut a = connect_wss(&server, &cert, "a")
        .await
        .expect("wss with the test CA");
    assert_eq!(recv_json(&mut a).await["type"], "welcome");
    let mut b = connect_wss(&server, &cert, "b").await.unwrap();
    assert_eq!(recv_json(&mut b).await["type"], "welcome");
    a.send(Message::text(
        json!({"type": "publish", "data": "over tls"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(recv_message(&mut b).await["data"], "over tls");

    // A plain ws:// client on the TLS port fails at once instead of hanging.
    let plain = try_connect(&server.url("p"), Some(&token("c", &["p"]))).await;
    assert!(plain.is_err(), "plain WebSocket over a TLS port must fail");

    // A renewed certificate (a new key pair), then SIGHUP: new handshakes use it; the open
    // connections stay.
    let (cert2, key2) = self_signed();
    std::fs::write(&cert_path, &cert2).unwrap();
    std::fs::write(&key_path, &key2).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    server
        .wait_for_log("the reload", |l| l.contains("tls certificate reloaded"))
        .await;
    let Err(err) = connect_wss(&server, &cert, "d").await else {
        panic!("the old CA no longer matches the served certificate");
    };
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
    let mut c = connect_wss(&server, &cert2, "c")
        .await
        .expect("the new certificate is served");
    assert_eq!(recv_json(&mut c).await["type"], "welcome");
    a.send(Message::text(
        json!({"type": "publish", "data": "still here"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(recv_message(&mut b).await["data"], "still here");
}
