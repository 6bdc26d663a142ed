//! Real `redis-server` processes of the kinds production runs, for
//! `tests/fleet_redis.rs` and `benches/fleet.rs`: a node with TLS only or
//! with ACL users, and clusters (masters, with or without a replica each)
//! made with `redis-cli --cluster create`. Each is stopped by its PID when
//! dropped; its files live in a directory of its own, removed with it.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The real-time scenarios run one at a time in a process, rather than
/// load each other's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A scenario that failed (and poisoned the lock) is no reason to fail
    // the next.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `redis-server` and `redis-cli` are here. When not: `false`
/// with a line on stderr saying how to install them, unless `CI=true`,
/// where that panics.
pub fn available() -> bool {
    let missing: Vec<&str> = ["redis-server", "redis-cli"]
        .into_iter()
        .filter(|bin| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let how = "install them with `apt-get install -y redis-server redis-tools`";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} missing: {how}", missing.join(" and "));
    }
    eprintln!("SKIPPED: {} missing; {how}", missing.join(" and "));
    false
}

/// A free loopback port below 55535 whose cluster bus port (+10000) is
/// free too.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        if port < 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair below 55535");
}

/// A directory of its own under the system's temporary directory.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "tower-mpsd-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        Self(path)
    }

    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("a file in the temporary directory");
        path.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `redis-server` process, without persistence.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
}

impl Node {
    fn spawn(port: u16, dir: &Path, extra: &[String]) -> Self {
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ]
        .map(String::from)
        .to_vec();
        args.push(dir.display().to_string());
        args.extend_from_slice(extra);
        if !extra.iter().any(|a| a == "--port") {
            args.extend(["--port".into(), port.to_string()]);
        }
        let mut node = Self {
            child: None,
            port,
            args,
        };
        node.start();
        node
    }

    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    /// The process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process by its PID, as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `check` holds, trying every 20 ms, at most `within`
/// (counted in tries: this runs outside the runtime's clock).
pub fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let step = Duration::from_millis(20);
    for _ in 0..=within.as_millis() / step.as_millis() {
        if check() {
            return;
        }
        std::thread::sleep(step);
    }
    panic!("{what} within {within:?}");
}

/// Runs one command on a node over plain TCP (as `redis-cli` does), as
/// `user` when given: its reply, or the error.
pub fn command(
    port: u16,
    auth: Option<(&str, &str)>,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let url = match auth {
        Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    };
    query(&redis::Client::open(url)?, args)
}

/// Runs one command on a TLS-only node whose certificate `ca` signed, as
/// `user` when given.
pub fn tls_command(
    port: u16,
    auth: Option<(&str, &str)>,
    ca: &str,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.as_bytes().to_vec()),
    };
    let url = match auth {
        Some((user, password)) => format!("rediss://{user}:{password}@127.0.0.1:{port}/"),
        None => format!("rediss://127.0.0.1:{port}/"),
    };
    query(&redis::Client::build_with_tls(url, certs)?, args)
}

fn query(client: &redis::Client, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn)
}

/// A command's bulk string reply, or `""` on an error.
pub fn text(port: u16, auth: Option<(&str, &str)>, args: &[&str]) -> String {
    as_text(command(port, auth, args))
}

fn as_text(reply: redis::RedisResult<redis::Value>) -> String {
    match reply {
        Ok(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(redis::Value::SimpleString(s)) => s,
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        _ => String::new(),
    }
}

/// A field of an `INFO`-style reply (`name:value` lines).
pub fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The ACL user the tests administer a server with (`ACL SETUSER`,
/// `CLIENT KILL`), in every ACL file made here.
pub const ADMIN: (&str, &str) = ("admin", "adminpw");

/// An ACL file: `user default off`, the admin, and `users` (lines such as
/// `user app on >secret ~* &* +@all`).
fn acl_file(dir: &Dir, users: &[&str]) -> String {
    let mut acl = format!(
        "user default off\nuser {} on >{} ~* &* +@all\n",
        ADMIN.0, ADMIN.1
    );
    for line in users {
        acl.push_str(line);
        acl.push('\n');
    }
    dir.file("users.acl", acl)
}

/// A node with ACL users from an ACL file: `user default off`, the
/// [`ADMIN`] and the given lines.
pub struct AclServer {
    pub node: Node,
    _dir: Dir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl AclServer {
    /// `users` are ACL file lines (`user app on >secret ~* &* +@all`).
    pub fn start(users: &[&str]) -> Option<Self> {
        if !available() {
            return None;
        }
        let guard = one_at_a_time();
        let dir = Dir::new("acl");
        let file = acl_file(&dir, users);
        let port = free_port();
        let node = Node::spawn(port, &dir.0, &["--aclfile".into(), file]);
        wait_for("the ACL server answers", Duration::from_secs(5), || {
            // Without a user, the default user is off: NOAUTH, which is
            // an answer all the same.
            matches!(
                command(port, None, &["PING"]),
                Err(e) if e.kind() == redis::ErrorKind::AuthenticationFailed
                    || e.code() == Some("NOAUTH")
            )
        });
        Some(Self {
            node,
            _dir: dir,
            _one_at_a_time: guard,
        })
    }

    /// The URL of `user` with `password`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}/", self.node.port)
    }
}

/// The certificates of a TLS server: a certificate authority, the
/// server's certificate for `127.0.0.1` and `localhost`, and a client
/// certificate, all PEM, made by rcgen.
pub struct Certificates {
    pub ca: String,
    pub server: (String, String),
    pub client: (String, String),
}

impl Certificates {
    pub fn make() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tower-mpsd test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        Self {
            server: leaf(vec!["127.0.0.1".into(), "localhost".into()], "redis"),
            client: leaf(vec!["fleet-member".into()], "fleet-member"),
            ca: ca.pem(),
        }
    }

    /// The server's certificate, its key and the CA, written to `dir`, as
    /// `redis-server`'s arguments.
    fn server_args(&self, dir: &Dir) -> [String; 6] {
        [
            "--tls-cert-file".into(),
            dir.file("server.crt", &self.server.0),
            "--tls-key-file".into(),
            dir.file("server.key", &self.server.1),
            "--tls-ca-cert-file".into(),
            dir.file("ca.crt", &self.ca),
        ]
    }
}

/// A node serving TLS only (`--port 0 --tls-port P`), with a certificate
/// signed by [`Certificates::ca`].
pub struct TlsServer {
    pub node: Node,
    pub certs: Certificates,
    _dir: Dir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl TlsServer {
    /// With `mutual`, clients must present a certificate signed by the CA.
    pub fn start(mutual: bool) -> Option<Self> {
        if !available() {
            return None;
        }
        let guard = one_at_a_time();
        let dir = Dir::new("tls");
        let certs = Certificates::make();
        let port = free_port();
        let mut args = vec![
            "--port".to_owned(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-auth-clients".into(),
            (if mutual { "yes" } else { "no" }).into(),
        ];
        args.extend(certs.server_args(&dir));
        let node = Node::spawn(port, &dir.0, &args);
        // Listening is enough: the tests themselves speak TLS to it.
        wait_for("the TLS server listens", Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Self {
            node,
            certs,
            _dir: dir,
            _one_at_a_time: guard,
        })
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.node.port)
    }
}

/// A Redis Cluster on loopback: `masters` masters, each with `replicas`
/// replicas, made with `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// With TLS only (clients, the cluster bus and replication): the
    /// certificates.
    pub certs: Option<Certificates>,
    /// Whether the nodes have ACL users: then commands go as [`ADMIN`].
    admin: bool,
    _dir: Dir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// How long a node may be unreachable before the cluster fails it over:
/// low, so a failover takes about a second or two, not Redis's default 15.
pub const NODE_TIMEOUT_MS: u64 = 1000;

impl Cluster {
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        Self::start_with(masters, replicas, false, None)
    }

    /// With `tls`, every node serves TLS only, on the cluster bus and for
    /// replication too, with a certificate signed by the cluster's CA.
    /// With `acl` (ACL file lines), every node has those users, the
    /// [`ADMIN`] and `user default off` (then without replicas: they
    /// would need a user of their own).
    pub fn start_with(
        masters: usize,
        replicas: usize,
        tls: bool,
        acl: Option<&[&str]>,
    ) -> Option<Self> {
        if !available() {
            return None;
        }
        let guard = one_at_a_time();
        let dir = Dir::new("cluster");
        let certs = tls.then(Certificates::make);
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(certs) = &certs {
            tls_args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(Into::into));
            tls_args.extend(["--tls-auth-clients".into(), "no".into()]);
            tls_args.extend(certs.server_args(&dir));
        }
        if let Some(users) = acl {
            tls_args.extend(["--aclfile".into(), acl_file(&dir, users)]);
        }
        let nodes: Vec<Node> = (0..masters * (1 + replicas))
            .map(|_| {
                let port = free_port();
                let mut args = vec![
                    "--cluster-enabled".to_owned(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".into(),
                    NODE_TIMEOUT_MS.to_string(),
                    // A replica of an idle master hears from it only every
                    // `repl-ping-replica-period` (10 s), which with so low
                    // a node timeout makes its data look too old to take
                    // over: 0 lets it always try, as the test wants.
                    "--cluster-replica-validity-factor".into(),
                    "0".into(),
                    // A replica's first sync starts at once, not after
                    // the default 5 s wait for more replicas.
                    "--repl-diskless-sync-delay".into(),
                    "0".into(),
                ];
                if tls {
                    args.extend([
                        "--port".into(),
                        "0".into(),
                        "--tls-port".into(),
                        port.to_string(),
                    ]);
                }
                args.extend(tls_args.iter().cloned());
                Node::spawn(port, &dir.0, &args)
            })
            .collect();
        let cluster = Self {
            nodes,
            certs,
            admin: acl.is_some(),
            _dir: dir,
            _one_at_a_time: guard,
        };
        // Bounds on a hang rather than timings: on a loaded machine (the
        // whole suite at once) a node can take seconds to start and a new
        // cluster tens of seconds to agree.
        for node in &cluster.nodes {
            wait_for("a cluster node answers", Duration::from_secs(20), || {
                cluster.text(node.port, &["PING"]) == "PONG"
            });
        }
        let mut create = Command::new("redis-cli");
        if cluster.admin {
            // The password through the environment: on the command line
            // redis-cli warns that it may be seen.
            create
                .args(["--user", ADMIN.0])
                .env("REDISCLI_AUTH", ADMIN.1);
        }
        if let Some(certs) = &cluster.certs {
            create.args([
                "--tls",
                "--cacert",
                &cluster._dir.file("cli-ca.crt", &certs.ca),
            ]);
        }
        let status = create
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        cluster.wait_ok(Duration::from_secs(60));
        let want = replicas.to_string();
        // A replica's first sync on a loaded machine can take a while:
        // a minute, as a bound on a hang rather than a timing.
        for port in cluster.masters() {
            wait_for(
                &format!("master {port} has its replicas"),
                Duration::from_secs(60),
                || {
                    let info = cluster.text(port, &["INFO", "replication"]);
                    field(&info, "connected_slaves").as_deref() == Some(want.as_str())
                },
            );
        }
        Some(cluster)
    }

    /// Runs one command on the node of `port`, over TLS when the cluster
    /// has it.
    pub fn command(&self, port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let auth = self.admin.then_some(ADMIN);
        match &self.certs {
            Some(certs) => tls_command(port, auth, &certs.ca, args),
            None => command(port, auth, args),
        }
    }

    fn text(&self, port: u16, args: &[&str]) -> String {
        as_text(self.command(port, args))
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_for("cluster_state:ok", within, || {
                let info = self.text(node.port, &["CLUSTER", "INFO"]);
                field(&info, "cluster_state").as_deref() == Some("ok")
            });
        }
    }

    /// The seed URLs: every node's.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let scheme = if self.certs.is_some() {
                    "rediss"
                } else {
                    "redis"
                };
                format!("{scheme}://127.0.0.1:{}/", n.port)
            })
            .collect()
    }

    /// The ports of the masters, as a live node sees them, by their first
    /// slot.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<(i64, u16)> = self
            .slot_ranges()
            .into_iter()
            .map(|(s, _, p)| (s, p))
            .collect();
        masters.sort_unstable();
        masters.dedup_by_key(|(_, p)| *p);
        masters.into_iter().map(|(_, p)| p).collect()
    }

    /// `(first slot, last slot, master port)` per range, from `CLUSTER
    /// SLOTS` asked of a live node.
    fn slot_ranges(&self) -> Vec<(i64, i64, u16)> {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let Ok(redis::Value::Array(ranges)) = self.command(live.port, &["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS answers");
        };
        ranges
            .iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else {
                    panic!("a slot range is an array");
                };
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(i) => *i,
                    _ => panic!("a slot number"),
                };
                let redis::Value::Array(master) = &parts[2] else {
                    panic!("a master is an array");
                };
                let port = u16::try_from(int(&master[1])).unwrap();
                (int(&parts[0]), int(&parts[1]), port)
            })
            .collect()
    }

    /// The master port holding `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let Ok(redis::Value::Int(slot)) = self.command(live.port, &["CLUSTER", "KEYSLOT", key])
        else {
            panic!("CLUSTER KEYSLOT answers");
        };
        self.slot_ranges()
            .into_iter()
            .find(|&(first, last, _)| (first..=last).contains(&slot))
            .map(|(_, _, port)| port)
            .expect("every slot is served")
    }

    /// The node on `port`.
    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node on that port")
    }

    /// Keys stored on the node of `port`.
    pub fn keys_on(&self, port: u16) -> i64 {
        match self.command(port, &["DBSIZE"]) {
            Ok(redis::Value::Int(n)) => n,
            _ => 0,
        }
    }
}
