//! How the store reaches Redis: one node or a cluster, plain TCP or TLS,
//! credentials from the URL or from a rotating source.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{BasicAuth, ClientTlsConfig, Cmd, RedisFuture, RedisResult, TlsCertificates, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, OnceCell};

/// A user name and password (or access token) for Redis's `AUTH`, sent
/// through a [`watch`] channel to
/// [`RedisStoreBuilder::credentials`](super::RedisStoreBuilder::credentials).
/// Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    /// `AUTH username password`. Redis's own user is `"default"` (the one
    /// an access key or a password without a user name logs in as).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which Redis, and how to reach it: what the builder gathered.
#[derive(Clone)]
pub(super) struct Target {
    /// One node's URL, or a cluster's seed nodes.
    pub(super) nodes: Nodes,
    pub(super) timeout: Duration,
    /// PEM certificate authorities that replace the system's roots.
    pub(super) root_cert: Option<Vec<u8>>,
    /// A PEM certificate chain and key for mutual TLS.
    pub(super) client_cert: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) credentials: Option<watch::Receiver<Credentials>>,
}

#[derive(Clone)]
pub(super) enum Nodes {
    Single(String),
    Cluster(Vec<String>),
}

impl Target {
    /// Whether it is a cluster, and the TLS and credential options set,
    /// for `Debug`: never a URL (it may carry a password).
    pub(super) fn describe(&self) -> String {
        let kind = match &self.nodes {
            Nodes::Single(_) => "single".to_owned(),
            Nodes::Cluster(seeds) => format!("cluster of {} seeds", seeds.len()),
        };
        let mut parts = vec![kind];
        if self.root_cert.is_some() {
            parts.push("custom CA".into());
        }
        if self.client_cert.is_some() {
            parts.push("client certificate".into());
        }
        if self.credentials.is_some() {
            parts.push("rotating credentials".into());
        }
        parts.join(", ")
    }

    /// The node's URL, or the cluster's seeds.
    fn urls(&self) -> &[String] {
        match &self.nodes {
            Nodes::Single(url) => std::slice::from_ref(url),
            Nodes::Cluster(seeds) => seeds.as_slice(),
        }
    }

    /// The connection, made lazily: nothing is dialled here, so a process
    /// starts while Redis is down. Needs a tokio runtime.
    pub(super) fn connect(self) -> RedisResult<Connection> {
        if self.urls().iter().any(|url| url.starts_with("rediss://")) {
            install_crypto_provider();
        }
        let certs = self.certificates()?;
        match self.nodes {
            Nodes::Single(url) => {
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(url.as_str(), certs)?,
                    None => redis::Client::open(url.as_str())?,
                };
                // One try per call: the store falls back at once rather
                // than wait for a reconnection, which the manager makes in
                // the background.
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                if let Some(rx) = self.credentials {
                    config = config.set_credentials_provider(WatchCredentials(rx));
                }
                let manager = ConnectionManager::new_lazy_with_config(client, config)?;
                Ok(Connection::Single(manager))
            }
            Nodes::Cluster(seeds) => {
                // The cluster's response timeout has no default: without
                // one a call to a dead master waits for the OS.
                let mut builder = ClusterClient::builder(seeds)
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                if let Some(rx) = self.credentials {
                    builder = builder.set_credentials_provider(WatchCredentials(rx));
                }
                let client = builder.build()?;
                Ok(Connection::Cluster(Arc::new(LazyCluster {
                    client,
                    conn: OnceCell::new(),
                })))
            }
        }
    }

    fn certificates(&self) -> RedisResult<Option<TlsCertificates>> {
        if self.root_cert.is_none() && self.client_cert.is_none() {
            return Ok(None);
        }
        let urls = self.urls();
        if !urls.iter().all(|url| url.starts_with("rediss://")) {
            let what = "TLS certificates are given for rediss:// URLs only";
            return Err((redis::ErrorKind::InvalidClientConfig, what).into());
        }
        // The `redis` crate takes PEM holding no certificate for an empty
        // set of roots, which would refuse every server: say so instead.
        if let Some(pem) = &self.root_cert {
            let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>();
            if !certs.is_ok_and(|certs| !certs.is_empty()) {
                let what = "root_certificates_pem: no PEM certificate";
                return Err((redis::ErrorKind::InvalidClientConfig, what).into());
            }
        }
        Ok(Some(TlsCertificates {
            client_tls: self
                .client_cert
                .clone()
                .map(|(client_cert, client_key)| ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: self.root_cert.clone(),
        }))
    }
}

/// Where the store's listener subscribes to the cooldown announcements:
/// one node at a time (for a cluster, its seeds in turn: `PUBLISH` reaches
/// every node), on a connection of its own, logged in with the latest
/// credentials when they rotate.
#[derive(Clone)]
pub(super) struct Subscriber {
    nodes: Vec<redis::Client>,
    certs: Option<TlsCertificates>,
    credentials: Option<watch::Receiver<Credentials>>,
}

impl Target {
    /// The listener's way to Redis; made before [`connect`](Self::connect).
    pub(super) fn subscriber(&self) -> RedisResult<Subscriber> {
        let certs = self.certificates()?;
        let urls = self.urls();
        let nodes = urls
            .iter()
            .map(|url| match &certs {
                Some(certs) => redis::Client::build_with_tls(url.as_str(), certs.clone()),
                None => redis::Client::open(url.as_str()),
            })
            .collect::<RedisResult<_>>()?;
        Ok(Subscriber {
            nodes,
            certs,
            credentials: self.credentials.clone(),
        })
    }
}

impl Subscriber {
    /// A subscriber connection to the node of this `attempt` (counting
    /// from 0, round the seeds).
    pub(super) async fn connect(&self, attempt: usize) -> RedisResult<redis::aio::PubSub> {
        let Some(node) = self.nodes.get(attempt % self.nodes.len().max(1)) else {
            return Err((redis::ErrorKind::InvalidClientConfig, "no node").into());
        };
        let Some(credentials) = &self.credentials else {
            return node.get_async_pubsub().await;
        };
        let current = credentials.borrow().clone();
        let info = node.get_connection_info().clone();
        let login = info
            .redis_settings()
            .clone()
            .set_username(&current.username)
            .set_password(&current.password);
        let info = info.set_redis_settings(login);
        let client = match &self.certs {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone())?,
            None => redis::Client::open(info)?,
        };
        client.get_async_pubsub().await
    }
}

/// Makes ring rustls's process-wide provider unless one is installed.
///
/// The `redis` crate builds its TLS configurations from that default.
/// Left to rustls, it is picked from rustls's crate features, and a tree
/// where something else turns on `aws-lc-rs` beside this crate's `ring`
/// has two, so rustls panics at the first TLS connection. Installing one
/// first avoids that; when the application installed its own, that one
/// stays (the error is that one is already set, which is what we want).
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A connection to one node (a [`ConnectionManager`], which reconnects in
/// the background) or to a cluster (a [`ClusterConnection`], which
/// follows `MOVED`/`ASK` and refreshes the topology itself). Clones share
/// it.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// A cluster connection made on first use: the `redis` crate makes one
/// only by reaching a seed node. Made again after a failed try.
pub(super) struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        let conn = self
            .conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await?;
        Ok(conn.clone())
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            // A cluster has only database 0.
            Self::Cluster(_) => 0,
        }
    }
}

/// The `redis` crate's hook for rotating credentials, fed by a [`watch`]
/// channel: its current value is always there, so the first item comes at
/// once (the crate waits for it before each connection's `AUTH`), and each
/// value sent later re-authenticates every live connection.
struct WatchCredentials(watch::Receiver<Credentials>);

impl redis::StreamingCredentialsProvider for WatchCredentials {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let mut rx = self.0.clone();
        let first = rx.borrow_and_update().clone();
        let later = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let next = rx.borrow_and_update().clone();
            Some((next, rx))
        });
        let all = futures_util::stream::once(async { first }).chain(later);
        Box::pin(all.map(|c| Ok(BasicAuth::new(c.username, c.password))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::StreamingCredentialsProvider as _;

    #[tokio::test]
    async fn the_credentials_stream_starts_with_the_current_value_then_follows() {
        let (tx, rx) = watch::channel(Credentials::new("app", "one"));
        let provider = WatchCredentials(rx);
        tx.send_replace(Credentials::new("app", "two"));
        let mut stream = provider.subscribe();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.username(), first.password()), ("app", "two"));
        tx.send_replace(Credentials::new("app", "three"));
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!(next.password(), "three");
        drop(tx);
        assert!(stream.next().await.is_none(), "ends with its sender");
    }

    #[tokio::test]
    async fn a_store_installs_a_crypto_provider_and_shows_no_url() {
        use crate::fleet::RedisStore;
        let seeds = [
            "rediss://:hunter2@127.0.0.1:1/",
            "rediss://:hunter2@127.0.0.1:2/",
        ];
        let builder = RedisStore::cluster_builder(seeds);
        let store = builder.clone().build().unwrap();
        // Whatever else the tree builds, rustls has a provider to use.
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        let shown = format!("{builder:?} {store:?}");
        assert!(shown.contains("cluster of 2 seeds"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("127.0.0.1"),
            "{shown}"
        );
    }

    #[test]
    fn credentials_never_show_the_password() {
        let shown = format!("{:?}", Credentials::new("app", "hunter2"));
        assert!(
            shown.contains("app") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
