//! HTTPS: a self-signed certificate made when the simulator starts, and
//! ALPN offering `h2` before `http/1.1`, as MPSD's front ends do.
//!
//! The certificate names `localhost` and `127.0.0.1`; a client trusts it
//! through [`SimHandle::root_store`](crate::SimHandle::root_store) (or
//! [`certificate_der`](crate::SimHandle::certificate_der)) and nothing else.

use std::io;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// *ring*'s crypto provider, named here rather than taken from the
/// process default, so that the simulator works whichever providers its
/// user's build enables. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange, which a test double on loopback does not
/// need; *ring* keeps the build to a C compiler.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> CryptoProvider {
    ring::default_provider()
}

/// The simulator's certificate and the acceptor that presents it.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) certificate: CertificateDer<'static>,
}

impl Tls {
    /// A fresh key pair and certificate (ECDSA P-256, made in well under a
    /// millisecond, so every simulator gets its own).
    pub(crate) fn new() -> io::Result<Self> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
        let certificate = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .map_err(io::Error::other)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }
}
