//! The fleet scenarios on the kinds of Redis production runs (a cluster,
//! TLS, ACL users), shared by `tests/fleet_redis.rs` and
//! `benches/fleet.rs`: the fleet harness of `support/fleet.rs` with a
//! store opened by the caller, counting per user at the simulator.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;
use tower_mpsd::fleet::RedisStore;

use tower::ServiceExt;

use super::fleet::{
    get, limit_in, member_with, pace_limits, run_callers, sim_windows, MemberState, Sent, CALLERS,
    MEMBERS,
};
use super::redis_servers::{Cluster, TlsServer};

/// What the simulator saw of one user in a run.
#[derive(Debug)]
pub struct UserRun {
    pub user: String,
    /// Requests answered 429.
    pub throttled: usize,
    /// Requests admitted (not 429) that arrived within the run, over what
    /// the windows admit in it.
    pub ratio: f64,
}

/// What a shared run did: per user, and the members' stores.
#[derive(Debug)]
pub struct SharedRun {
    pub users: Vec<UserRun>,
    pub ok: usize,
    pub failed: usize,
    /// Times a member's store went from shared to its own state.
    pub fallbacks: u64,
    /// Calls to Redis that failed, all members.
    pub failures: u64,
    /// Members whose store shares at the end.
    pub shared_after: usize,
}

impl SharedRun {
    /// 429s over all users.
    pub fn throttled(&self) -> usize {
        self.users.iter().map(|u| u.throttled).sum()
    }

    /// The lowest user's throughput ratio.
    pub fn ratio(&self) -> f64 {
        self.users
            .iter()
            .map(|u| u.ratio)
            .fold(f64::INFINITY, f64::min)
    }
}

/// A simulator with the scaled-down windows, its base URI and authority.
pub async fn simulator() -> (mpsd_sim::SimHandle, String, String) {
    let sim = mpsd_sim::Simulator::builder()
        .rate_limit(sim_windows())
        .start()
        .await
        .unwrap();
    let base = sim.base_uri();
    let authority = base
        .split("://")
        .nth(1)
        .unwrap_or(&base)
        .trim_end_matches('/')
        .to_owned();
    (sim, base, authority)
}

/// `MEMBERS` members, each with a store from `open`.
pub fn members(open: impl Fn() -> RedisStore) -> Vec<MemberState> {
    (0..MEMBERS)
        .map(|_| member_with(Some(open()), pace_limits()))
        .collect()
}

/// `members` send for every user of `users` from `CALLERS` callers each
/// per user, for `secs`; `during` runs beside them (a failover, a
/// rotation).
pub async fn shared_run(
    sim: &mpsd_sim::SimHandle,
    base: &str,
    users: &[String],
    members: &[MemberState],
    secs: f64,
    during: impl std::future::Future<Output = ()>,
) -> SharedRun {
    let stores: Vec<&RedisStore> = members.iter().filter_map(|m| m.store.as_ref()).collect();
    let run = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let sends = members.iter().map(|m| {
        run_callers(
            &m.client,
            base,
            users,
            CALLERS * users.len(),
            t0 + run,
            Duration::ZERO,
        )
    });
    let (sent, ()) = tokio::join!(futures_util::future::join_all(sends), during);
    let sent = sent.into_iter().fold(Sent::default(), |mut all, s| {
        all.ok += s.ok;
        all.failed += s.failed;
        all
    });
    let log = sim.log();
    let users = users
        .iter()
        .map(|user| {
            let mine = || log.iter().filter(|e| e.user.as_deref() == Some(user));
            let throttled = mine()
                .filter(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
                .count();
            let admitted = mine()
                .filter(|e| e.status != StatusCode::TOO_MANY_REQUESTS && e.at < t0 + run)
                .count();
            UserRun {
                user: user.clone(),
                throttled,
                ratio: admitted as f64 / limit_in(run) as f64,
            }
        })
        .collect();
    SharedRun {
        users,
        ok: sent.ok,
        failed: sent.failed,
        fallbacks: stores.iter().map(|s| s.fallbacks()).sum(),
        failures: stores.iter().map(|s| s.failures()).sum(),
        shared_after: stores.iter().filter(|s| s.is_shared()).count(),
    }
}

/// One user per master of `cluster`, each of whose keys (the pace key of
/// `authority` and the user) live on that master.
pub fn user_per_master(cluster: &Cluster, authority: &str) -> Vec<String> {
    cluster
        .masters()
        .into_iter()
        .map(|port| {
            (0..10_000)
                .map(|i| format!("u{i}"))
                .find(|user| cluster.master_of(&format!("{{{authority} {user}}}")) == port)
                .expect("a user on each master")
        })
        .collect()
}

/// A store on `cluster`, with every node's URL as a seed (and its CA when
/// it serves TLS).
pub fn cluster_store(cluster: &Cluster) -> impl Fn() -> RedisStore {
    let seeds = cluster.seeds();
    let ca = cluster.certs.as_ref().map(|c| c.ca.clone());
    move || {
        let mut builder = RedisStore::cluster_builder(seeds.clone());
        if let Some(ca) = &ca {
            builder = builder.root_certificates_pem(ca.clone());
        }
        builder.build().expect("cluster seeds")
    }
}

/// Users on each master of `cluster`, for `secs`, sharing through it.
pub async fn cluster_shared(cluster: &Cluster, secs: f64) -> SharedRun {
    let (sim, base, authority) = simulator().await;
    let users = user_per_master(cluster, &authority);
    let members = members(cluster_store(cluster));
    shared_run(&sim, &base, &users, &members, secs, async {}).await
}

/// One user for `secs`, sharing through the TLS-only `server`, whose CA
/// the stores are given.
pub async fn tls_shared(server: &TlsServer, secs: f64) -> SharedRun {
    let (sim, base, _) = simulator().await;
    let (url, ca) = (server.url(), server.certs.ca.clone());
    let members = members(|| {
        RedisStore::builder(url.clone())
            .root_certificates_pem(ca.clone())
            .build()
            .expect("a rediss:// URL and a PEM CA")
    });
    let users = ["fleet".to_owned()];
    shared_run(&sim, &base, &users, &members, secs, async {}).await
}

/// Users on each master of `cluster` (masters with a replica each) for
/// `secs`; `kill_after` into the run, the master of the first user is
/// killed by its PID. After the run, each member sends for that user, one
/// request at a time, until its store shares again (within 30 s): then
/// `shared_after` counts the members that do.
pub async fn cluster_failover(cluster: &mut Cluster, secs: f64, kill_after: Duration) -> SharedRun {
    let (sim, base, authority) = simulator().await;
    let users = user_per_master(cluster, &authority);
    let victim = cluster.master_of(&format!("{{{authority} {}}}", users[0]));
    let members = members(cluster_store(cluster));
    let node = cluster.node_mut(victim);
    let kill = async move {
        tokio::time::sleep(kill_after).await;
        node.kill();
    };
    let mut got = shared_run(&sim, &base, &users, &members, secs, kill).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    got.shared_after = 0;
    for member in &members {
        if shares_again(member, &base, &users[0], deadline).await {
            got.shared_after += 1;
        }
    }
    got
}

/// Sends for `user` through `member`, one request at a time, until a
/// request's calls to Redis all answer and the store shares (the flag
/// alone may come from a call for another user's slot), or until
/// `deadline`: whether it shares.
pub async fn shares_again(member: &MemberState, base: &str, user: &str, deadline: Instant) -> bool {
    let store = member.store.as_ref().expect("a store");
    while Instant::now() < deadline {
        let failures = store.failures();
        let _ = member.client.clone().oneshot(get(base, user)).await;
        if store.is_shared() && store.failures() == failures {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
