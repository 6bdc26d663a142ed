//! The fleet on the kinds of Redis production runs, each a real
//! `redis-server` (or several) started here: a Redis Cluster, a TLS-only
//! server (with a CA the test makes, and mutual TLS), ACL users (with a
//! password rotated mid-run), and a cluster whose master is killed. Against
//! the simulator over real TCP in real time (Redis's `TIME` is real time),
//! so they assert counts, never timings.
#![cfg(feature = "redis")]

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/redis_servers.rs"]
mod redis_servers;
#[path = "support/fleet_redis.rs"]
mod scenarios;

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_mpsd::fleet::{Credentials, RedisStore};

use redis_servers as servers;
use scenarios::{members, shared_run, shares_again, simulator};
use servers::{AclServer, Cluster, TlsServer};

/// The lowest share of what the windows admit each user must get: the
/// fleet paces as one rather than refuse; exact figures are the bench's.
const SOME_THROUGHPUT: f64 = 0.8;

/// A store given one node of a cluster: one request for `user`, whose
/// keys live on another node. Whether its calls failed.
async fn one_request_fails(store: RedisStore, base: &str, user: &str) -> bool {
    let member = fleet::member_with(Some(store.clone()), fleet::pace_limits());
    let _ = member.client.oneshot(fleet::get(base, user)).await;
    store.failures() > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_pacing_for_users_on_every_master() {
    let Some(cluster) = Cluster::start(3, 0) else {
        return;
    };
    let got = scenarios::cluster_shared(&cluster, 6.0).await;
    eprintln!("{got:#?}");
    assert_eq!(got.users.len(), 3, "a user on each master");
    for user in &got.users {
        assert_eq!(user.throttled, 0, "{got:#?}");
        assert!(user.ratio >= SOME_THROUGHPUT, "{got:#?}");
    }
    assert_eq!(
        (got.failed, got.failures, got.fallbacks),
        (0, 0, 0),
        "{got:#?}"
    );
    for port in cluster.masters() {
        assert!(cluster.keys_on(port) > 0, "keys on the master of {port}");
    }

    // What the cluster store fixes: one node's URL reaches only its slots.
    let (_sim, base, authority) = simulator().await;
    let users = scenarios::user_per_master(&cluster, &authority);
    let first = cluster.masters()[0];
    let elsewhere = users
        .iter()
        .find(|u| cluster.master_of(&format!("{{{authority} {u}}}")) != first)
        .unwrap();
    let store = RedisStore::open(format!("redis://127.0.0.1:{first}/")).unwrap();
    assert!(one_request_fails(store, &base, elsewhere).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_server_with_a_private_ca_shares() {
    let Some(server) = TlsServer::start(false) else {
        return;
    };
    let got = scenarios::tls_shared(&server, 4.0).await;
    eprintln!("{got:#?}");
    assert_eq!(got.throttled(), 0, "{got:#?}");
    assert!(got.ratio() >= SOME_THROUGHPUT, "{got:#?}");
    assert_eq!(
        (got.failed, got.failures, got.fallbacks),
        (0, 0, 0),
        "{got:#?}"
    );

    // The default roots do not know the test's CA: no sharing.
    let (_sim, base, _) = simulator().await;
    let untrusted = RedisStore::open(server.url()).unwrap();
    assert!(one_request_fails(untrusted, &base, "other").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_cluster_shares() {
    let Some(cluster) = Cluster::start_with(3, 0, true, None) else {
        return;
    };
    let got = scenarios::cluster_shared(&cluster, 4.0).await;
    eprintln!("{got:#?}");
    assert_eq!(got.users.len(), 3, "a user on each master");
    assert_eq!(got.throttled(), 0, "{got:#?}");
    assert!(got.ratio() >= SOME_THROUGHPUT, "{got:#?}");
    assert_eq!(
        (got.failed, got.failures, got.fallbacks),
        (0, 0, 0),
        "{got:#?}"
    );
    for port in cluster.masters() {
        assert!(cluster.keys_on(port) > 0, "keys on the master of {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let Some(server) = TlsServer::start(true) else {
        return;
    };
    let (_sim, base, _) = simulator().await;
    let ca = server.certs.ca.clone();
    let (chain, key) = server.certs.client.clone();
    let with_cert = RedisStore::builder(server.url())
        .root_certificates_pem(ca.clone())
        .client_certificate_pem(chain, key)
        .build()
        .unwrap();
    assert!(!one_request_fails(with_cert.clone(), &base, "a").await);
    assert!(with_cert.is_shared());
    let without = RedisStore::builder(server.url())
        .root_certificates_pem(ca)
        .build()
        .unwrap();
    assert!(one_request_fails(without, &base, "b").await);
}

#[tokio::test]
async fn certificates_that_are_not_pem_or_not_for_tls_are_errors() {
    let not_pem = RedisStore::builder("rediss://127.0.0.1:1/")
        .root_certificates_pem("not a certificate")
        .build();
    assert!(not_pem.is_err());
    let plain = RedisStore::builder("redis://127.0.0.1:1/")
        .root_certificates_pem(servers::Certificates::make().ca)
        .build();
    assert!(plain.is_err(), "certificates for a redis:// URL");
    let plain_cluster = RedisStore::cluster_builder(["redis://127.0.0.1:1/"])
        .root_certificates_pem(servers::Certificates::make().ca)
        .build();
    assert!(plain_cluster.is_err(), "certificates for redis:// seeds");
    let none: [&str; 0] = [];
    assert!(
        RedisStore::open_cluster(none).is_err(),
        "a cluster without seeds"
    );
}

const ACL_USERS: [&str; 1] = ["user fleet on >secret1 ~* &* +@all"];
const ADMIN: Option<(&str, &str)> = Some(servers::ADMIN);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_and_password_in_the_url_share() {
    let Some(server) = AclServer::start(&ACL_USERS) else {
        return;
    };
    let (sim, base, _) = simulator().await;
    let users = ["fleet".to_owned()];
    let url = server.url("fleet", "secret1");
    let members = members(|| RedisStore::open(url.clone()).unwrap());
    let got = shared_run(&sim, &base, &users, &members, 4.0, async {}).await;
    eprintln!("{got:#?}");
    assert_eq!(got.throttled(), 0, "{got:#?}");
    assert!(got.ratio() >= SOME_THROUGHPUT, "{got:#?}");
    assert_eq!(
        (got.failed, got.failures, got.fallbacks),
        (0, 0, 0),
        "{got:#?}"
    );

    let wrong = RedisStore::open(server.url("fleet", "wrong")).unwrap();
    assert!(one_request_fails(wrong, &base, "other").await);
}

/// `AUTH` calls the server has answered.
fn auth_calls(port: u16) -> u64 {
    let stats = servers::text(port, ADMIN, &["INFO", "commandstats"]);
    servers::field(&stats, "cmdstat_auth")
        .and_then(|v| v.strip_prefix("calls=")?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Entries of the server's ACL log (failed logins among them).
fn acl_log_entries(port: u16) -> usize {
    match servers::command(port, ADMIN, &["ACL", "LOG"]) {
        Ok(redis::Value::Array(entries)) => entries.len(),
        other => panic!("ACL LOG answers: {other:?}"),
    }
}

/// Rotates `fleet`'s password to `secret2` on the nodes of `ports` (the
/// old one stops working), then closes its connections, as a managed
/// Redis does when a token expires.
fn rotate_then_disconnect(ports: &[u16], before_disconnecting: impl FnOnce()) {
    for &port in ports {
        let rotate = ["ACL", "SETUSER", "fleet", "resetpass", ">secret2"];
        servers::command(port, ADMIN, &rotate).unwrap();
    }
    before_disconnecting();
    for &port in ports {
        servers::command(port, ADMIN, &["CLIENT", "KILL", "USER", "fleet"]).unwrap();
    }
}

/// Sends the new password on `tx` mid-run, waits until every node of
/// `ports` has had an `AUTH` from each member's live connection, then
/// rotates and disconnects.
async fn rotation(ports: &[u16], tx: &watch::Sender<Credentials>) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: Vec<u64> = ports.iter().map(|&port| auth_calls(port)).collect();
    tokio::task::block_in_place(|| {
        rotate_then_disconnect(ports, || {
            tx.send_replace(Credentials::new("fleet", "secret2"));
            for (&port, before) in ports.iter().zip(before) {
                servers::wait_for("re-authenticated", Duration::from_secs(5), || {
                    auth_calls(port) >= before + fleet::MEMBERS as u64
                });
            }
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_reauthenticate_live_connections() {
    let Some(server) = AclServer::start(&ACL_USERS) else {
        return;
    };
    let port = server.node.port;
    let (sim, base, _) = simulator().await;
    let users = ["fleet".to_owned()];
    let (tx, rx) = watch::channel(Credentials::new("fleet", "secret1"));
    let url = format!("redis://127.0.0.1:{port}/");
    let members = members(|| {
        RedisStore::builder(url.clone())
            .credentials(rx.clone())
            .build()
            .unwrap()
    });
    let ports = [port];
    let rotation = rotation(&ports, &tx);
    let got = shared_run(&sim, &base, &users, &members, 4.0, rotation).await;
    eprintln!("{got:#?}");
    assert_eq!(got.failed, 0, "{got:#?}");
    assert_eq!(acl_log_entries(port), 0, "no login was refused");
    let deadline = Instant::now() + Duration::from_secs(10);
    for member in &members {
        assert!(shares_again(member, &base, "fleet", deadline).await);
    }

    // A password in the URL cannot follow a rotation: once disconnected,
    // its logins are refused and it never shares again.
    servers::command(
        port,
        ADMIN,
        &["ACL", "SETUSER", "fleet", "resetpass", ">secret1"],
    )
    .unwrap();
    let fixed = members_of_url(&server.url("fleet", "secret1"));
    assert!(shares_again(&fixed, &base, "x", Instant::now() + Duration::from_secs(5)).await);
    rotate_then_disconnect(&[port], || {});
    let soon = Instant::now() + Duration::from_secs(3);
    assert!(!shares_again(&fixed, &base, "x", soon).await);
    assert!(acl_log_entries(port) > 0, "its logins were refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_reauthenticate_every_cluster_node() {
    let Some(cluster) = Cluster::start_with(3, 0, false, Some(&ACL_USERS)) else {
        return;
    };
    let ports = cluster.masters();
    let (sim, base, authority) = simulator().await;
    let users = scenarios::user_per_master(&cluster, &authority);
    let (tx, rx) = watch::channel(Credentials::new("fleet", "secret1"));
    let seeds = cluster.seeds();
    let members = members(|| {
        RedisStore::cluster_builder(seeds.clone())
            .credentials(rx.clone())
            .build()
            .unwrap()
    });
    let rotation = rotation(&ports, &tx);
    let got = shared_run(&sim, &base, &users, &members, 4.0, rotation).await;
    eprintln!("{got:#?}");
    assert_eq!(got.failed, 0, "{got:#?}");
    for &port in &ports {
        assert_eq!(acl_log_entries(port), 0, "no login was refused");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for member in &members {
        for user in &users {
            assert!(shares_again(member, &base, user, deadline).await);
        }
    }
}

fn members_of_url(url: &str) -> fleet::MemberState {
    fleet::member_with(Some(RedisStore::open(url).unwrap()), fleet::pace_limits())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_loses_no_request_and_shares_again() {
    let Some(mut cluster) = Cluster::start(3, 1) else {
        return;
    };
    let got = scenarios::cluster_failover(&mut cluster, 6.0, Duration::from_secs(2)).await;
    eprintln!("{got:#?}");
    assert_eq!(got.failed, 0, "{got:#?}");
    assert!(got.ok > 100, "requests kept flowing: {got:#?}");
    assert!(got.failures > 0, "the killed master was felt: {got:#?}");
    assert_eq!(got.shared_after, fleet::MEMBERS, "{got:#?}");
}
