//! The HTTPS client of the demo, as a user builds one: hyper-util over
//! hyper-rustls, trusting the simulator's self-signed certificate.
//!
//! The tests and the loopback bench include this file too, so the client
//! they measure is the one the demo shows.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use mpsd_sim::SimHandle;
use tower_mpsd::BoxError;

/// A hyper-util client over HTTPS, as a user builds one.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that trusts `sim`'s certificate only and offers, by ALPN,
/// `http/1.1` alone or (`h2`) both `h2` and `http/1.1`.
pub fn https_client(sim: &SimHandle, h2: bool) -> Result<HttpsClient, BoxError> {
    let roots = sim.root_store().ok_or("the simulator serves plain HTTP")?;
    let ring = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(ring)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    // Small writes go out at once: with Nagle's algorithm an HTTP/2
    // request's HEADERS and DATA frames wait out the server's delayed ACK.
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = if h2 {
        https.enable_all_versions().wrap_connector(tcp)
    } else {
        https.enable_http1().wrap_connector(tcp)
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
