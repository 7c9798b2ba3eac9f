//! A real server on a random loopback port, real WebSocket clients, and a real MongoDB-protocol
//! server when a test needs one.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use ephemera::{state::AppState, Application, Config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{
        client::IntoClientRequest,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// Settings for tests: cheap argon2, one worker, a private data directory.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::defaults();
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir.to_owned();
    config.static_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static");
    config.argon2_memory_kib = 1024;
    config.argon2_iterations = 1;
    config.workers = 1;
    config.pepper = Some("test pepper".into());
    config
}

/// What a client needs to reach a server, in this process or another; the request helpers.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub ws_base: String,
    pub http: reqwest::Client,
}

impl Client {
    /// A client of the server at `addr` (`127.0.0.1:PORT`).
    pub fn new(addr: &str) -> Self {
        Self {
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            http: reqwest::Client::new(),
        }
    }
}

/// A server in this process; its requests go through the [`Client`] it dereferences to.
pub struct TestApp {
    pub client: Client,
    pub state: AppState,
    /// Where `/metrics` is served when it has an address of its own (`--metrics-bind`).
    pub metrics_port: Option<u16>,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(data_dir.path());
    tweak(&mut config);
    // A server stopped just before (a restart test) may still be letting go of the store file.
    let mut tries = 0;
    let app = loop {
        match Application::build(config.clone()).await {
            Ok(app) => break app,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("server starts: {e}"),
        }
    };
    let port = app.port();
    let metrics_port = app.metrics_port();
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        client: Client::new(&format!("127.0.0.1:{port}")),
        state,
        metrics_port,
        data_dir,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// The `ephemera-cli` binary of this build. It belongs to another package of the workspace, so
/// Cargo gives no `CARGO_BIN_EXE_` for it: it sits beside the test binary's folder, built by
/// `cargo test --workspace` (which `scripts/test` runs).
pub fn cli_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/api-… → target/<profile>/ephemera-cli
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("ephemera-cli");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p ephemera-client` (scripts/test does)",
        path.display()
    );
    path
}

/// A random proof, as a client would derive from a room key.
pub fn random_auth() -> String {
    ephemera::domain::encode_b64url(&rand::random::<[u8; 32]>())
}

pub const ADMIN_PASSWORD: &str = "admin password 1";

/// A room made through the API.
#[derive(Clone)]
pub struct Room {
    pub id: String,
    pub auth: String,
}

impl std::ops::Deref for TestApp {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Client {
    pub async fn post_room(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/rooms", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(&self, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/rooms", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Creates a room with a fresh random ID and proof.
    pub async fn room(&self) -> Room {
        self.room_with(json!({})).await
    }

    /// Creates a room; `extra` adds or overrides fields of the request.
    pub async fn room_with(&self, extra: Value) -> Room {
        let auth = random_auth();
        let mut body = json!({ "auth": auth, "admin_password": ADMIN_PASSWORD });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = self.post_room(&body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let created: Value = response.json().await.unwrap();
        Room {
            id: created["room_id"].as_str().unwrap().to_owned(),
            auth: body["auth"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn delete_room(&self, room_id: &str, password: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}/api/rooms/{room_id}", self.base))
            .json(&json!({ "admin_password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// A raw socket on `/ws/{room_id}`, before any frame.
    pub async fn connect(&self, room_id: &str) -> Ws {
        Ws::connect(&format!("{}/ws/{room_id}", self.ws_base), None)
            .await
            .unwrap()
    }

    /// Joins as `name` and returns the socket and its `welcome`; the bot's greeting is read too.
    pub async fn join(&self, room: &Room, name: &str) -> (Ws, Value) {
        self.join_with(room, json!({ "name": name })).await
    }

    pub async fn join_with(&self, room: &Room, extra: Value) -> (Ws, Value) {
        let mut ws = self.connect(&room.id).await;
        let mut frame = json!({ "type": "join", "auth": room.auth });
        for (k, v) in extra.as_object().unwrap() {
            frame[k] = v.clone();
        }
        ws.send_json(&frame).await;
        let welcome = ws.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let greeting = ws.recv().await;
        assert_eq!(greeting["type"], "bot", "{greeting}");
        assert_eq!(greeting["event"], "welcome", "{greeting}");
        (ws, welcome)
    }

    /// Joins as admin.
    pub async fn join_admin(&self, room: &Room, name: &str) -> (Ws, Value) {
        self.join_with(
            room,
            json!({ "name": name, "admin_password": ADMIN_PASSWORD }),
        )
        .await
    }
}

impl TestApp {
    /// Stops the server and lets go of everything that holds its store open, keeping the data
    /// folder for a server started after it (a restart).
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        self.stop().await;
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap())
    }

    /// Stops the server as SIGTERM would.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A WebSocket client that answers pings itself and reads JSON frames.
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(
        url: &str,
        origin: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let headers: Vec<_> = origin.map(|o| ("Origin", o)).into_iter().collect();
        Self::connect_with(url, &headers).await
    }

    /// Connects with extra request headers.
    pub async fn connect_with(
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let (inner, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { inner })
    }

    pub async fn send_text(&mut self, text: &str) {
        self.inner.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next text frame, raw; panics on anything else or after [`WAIT`].
    pub async fn recv_text(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).unwrap()
    }

    /// Reads frames until one of type `kind`; returns it.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until the server closes; returns the close code and every text frame before it.
    pub async fn closed(&mut self) -> (u16, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .expect("a close in time");
            match next {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    return (u16::from(code), frames)
                }
                Some(Ok(Message::Close(None))) => return (1005, frames),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before a close: {e}; frames {frames:?}"),
                None => panic!("socket ended without a close; frames {frames:?}"),
            }
        }
    }

    /// Reads until a `welcome` (code 0) or a close (its code), with the frames before it.
    pub async fn closed_or_welcome(&mut self) -> (u16, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .expect("a welcome or a close in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["type"] == "welcome" {
                        return (0, frames);
                    }
                    frames.push(frame);
                }
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    return (u16::from(code), frames)
                }
                Some(Ok(_)) => continue,
                other => panic!("{other:?}; frames {frames:?}"),
            }
        }
    }

    /// Expects an `error` frame with `code` and then a close with `close`.
    pub async fn refused(&mut self, code: &str, close: u16) -> Value {
        let (got, frames) = self.closed().await;
        let error = frames
            .iter()
            .find(|f| f["type"] == "error")
            .unwrap_or_else(|| panic!("no error frame before close {got}: {frames:?}"))
            .clone();
        assert_eq!(error["code"], code, "{frames:?}");
        assert_eq!(got, close, "{frames:?}");
        error
    }

    /// Asserts that nothing but pings arrives for `quiet`.
    pub async fn silent_for(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.inner.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Says goodbye: a close with 1000.
    pub async fn close(self) {
        self.close_with(CloseCode::Normal).await;
    }

    /// Closes with `code`, as a browser closes with 1001 when its page reloads.
    pub async fn close_with(mut self, code: CloseCode) {
        let _ = self
            .inner
            .close(Some(CloseFrame {
                code,
                reason: "".into(),
            }))
            .await;
    }
}

/// A SecantusDB server (MongoDB wire protocol) on a free loopback port, stopped on drop.
pub struct MongoServer {
    child: Child,
    pub port: u16,
    pub uri: String,
}

impl MongoServer {
    pub fn start() -> Self {
        Self::start_at(0)
    }

    /// On `port` (0 for any free one), so that a test can stop it and start it again where the
    /// server expects it. Its data lives in memory: a restart starts empty.
    pub fn start_at(port: u16) -> Self {
        let python = std::env::var("EPHEMERA_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-mongo/bin/python")
            });
        assert!(
            python.exists(),
            "the MongoDB tests need SecantusDB: run scripts/test, which installs it into \
             .venv-mongo (python3 -m venv .venv-mongo && .venv-mongo/bin/pip install \
             secantusdb==0.7.0b3), or set EPHEMERA_TEST_PYTHON to a python that has it"
        );
        let mut child = Command::new(&python)
            .args([
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--storage-path",
                ":memory:",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("SecantusDB starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.split("listening on ").nth(1) {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("SecantusDB says where it listens");
        Self {
            child,
            port: addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(port),
            uri: format!("mongodb://{addr}/?directConnection=true"),
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client frame, masked as RFC 6455 requires, with any header the test wants: `declared` is
/// the payload length the header claims, which may differ from the bytes that follow.
pub fn raw_frame(first: u8, declared: u64, payload: &[u8]) -> Vec<u8> {
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let mut out = vec![first];
    match declared {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// A whole text frame from a client.
pub fn text_frame(text: &str) -> Vec<u8> {
    raw_frame(0x81, text.len() as u64, text.as_bytes())
}

/// A WebSocket over a bare TCP stream, for tests that send what no WebSocket library would.
pub struct Raw {
    pub stream: TcpStream,
    /// Bytes read after the 101 that no test has looked at yet.
    pub pending: Vec<u8>,
}

impl Client {
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// Upgrades `/ws/{room_id}` over a bare TCP stream.
    pub async fn raw(&self, room_id: &str) -> Raw {
        Raw::upgrade(&self.addr(), room_id, &[]).await
    }
}

impl Raw {
    /// Upgrades with extra request headers; panics unless the answer is a 101.
    pub async fn upgrade(addr: &str, room_id: &str, headers: &[(&str, &str)]) -> Self {
        Self::upgrade_sending(addr, room_id, headers, &[]).await
    }

    /// Upgrades, sending `early` in the same write as the request, before the 101 is back.
    pub async fn upgrade_sending(
        addr: &str,
        room_id: &str,
        headers: &[(&str, &str)],
        early: &[u8],
    ) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let mut request = format!(
            "GET /ws/{room_id} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
        .into_bytes();
        request.extend_from_slice(early);
        stream.write_all(&request).await.unwrap();
        let mut read = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the response");
            read.extend_from_slice(&chunk[..n]);
            if let Some(i) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        assert!(
            read.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&read)
        );
        Self {
            stream,
            pending: read[end..].to_vec(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        self.stream.write_all(bytes).await
    }

    /// Sends a `join` and reads up to the `welcome`.
    pub async fn join(&mut self, room: &Room, name: &str) {
        let join = json!({ "type": "join", "auth": room.auth, "name": name }).to_string();
        self.send(&text_frame(&join)).await.unwrap();
        loop {
            match self.next_frame().await {
                Some(ServerFrame::Text(text)) if text.contains("\"welcome\"") => return,
                Some(_) => continue,
                None => panic!("no welcome"),
            }
        }
    }

    /// The next frame the server sends, or `None` at the end of the stream (or a reset).
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
        use tokio::io::AsyncReadExt as _;
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.pending) {
                self.pending.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.pending.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// A frame from the server, as a raw test client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    Text(String),
    Ping,
    Pong(Vec<u8>),
    Close(u16),
    Other(u8),
}

/// The close code among the server frames in `bytes`, and the text frames before it.
pub fn frames_in(mut bytes: &[u8]) -> (Option<u16>, Vec<String>) {
    let mut texts = Vec::new();
    while let Some((frame, used)) = parse_server_frame(bytes) {
        bytes = &bytes[used..];
        match frame {
            ServerFrame::Close(code) => return (Some(code), texts),
            ServerFrame::Text(text) => texts.push(text),
            _ => {}
        }
    }
    (None, texts)
}

/// One unmasked server frame off the front of `buf`, and how many bytes it took.
fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    let [first, second, ..] = *buf else {
        return None;
    };
    let (len, at) = match second & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    let frame = match first & 0x0F {
        1 => ServerFrame::Text(String::from_utf8_lossy(payload).into_owned()),
        8 if payload.len() >= 2 => ServerFrame::Close(u16::from_be_bytes([payload[0], payload[1]])),
        8 => ServerFrame::Close(1005),
        9 => ServerFrame::Ping,
        10 => ServerFrame::Pong(payload.to_vec()),
        other => ServerFrame::Other(other),
    };
    Some((frame, at + len))
}

/// The server binary (`ephemera`) on a free loopback port, with the test settings, its stderr
/// kept: for what only a process shows (a panic, a signal, a crash and a restart).
pub struct BinaryServer {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub base: String,
    stderr: std::sync::Arc<Mutex<String>>,
}

impl BinaryServer {
    pub fn start(data_dir: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_logging(data_dir, extra, "warn,ephemera::startup=info")
    }

    /// The same, with `RUST_LOG` set to `filter`.
    pub fn start_logging(data_dir: &std::path::Path, extra: &[&str], filter: &str) -> Self {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_ephemera")),
            data_dir,
            extra,
            filter,
        )
    }

    /// The same as `start`, in a process whose open-file limit (soft and hard) is `limit`.
    pub fn start_with_file_limit(data_dir: &std::path::Path, extra: &[&str], limit: u64) -> Self {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_ephemera"));
        Self::spawn(shell, data_dir, extra, "warn,ephemera::startup=info")
    }

    fn spawn(
        mut command: Command,
        data_dir: &std::path::Path,
        extra: &[&str],
        filter: &str,
    ) -> Self {
        let mut child = command
            .args([
                "--bind",
                "127.0.0.1:0",
                "--argon2-memory-kib",
                "1024",
                "--argon2-iterations",
                "1",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", filter)
            .env_remove("MONGODB_URI")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let kept = std::sync::Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = kept.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(port) = line.split("listening on port ").nth(1) {
                    let _ = tx.send(port.trim().to_owned());
                }
                let mut kept = sink.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server says its port");
        Self {
            child,
            base: format!("127.0.0.1:{port}"),
            stderr: kept,
        }
    }

    /// A client of this server.
    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits up to `limit` for the process to exit; its status.
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real `redis-server` on a free loopback port, with persistence off, stopped on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_at(port)
    }

    /// On `port`, so that a test can stop it and start it again where the nodes expect it.
    pub fn start_at(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--slowlog-max-len", "0"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the cluster tests need a real Redis: install it with \
                     'apt-get install -y redis-server' (scripts/test does) ({e})"
                )
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What `redis-cli` prints for `args`.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_as(None, args)
    }

    fn cli_as(&self, password: Option<&str>, args: &[&str]) -> String {
        let mut cli = Command::new("redis-cli");
        cli.args(["-p", &self.port.to_string()]);
        if let Some(password) = password {
            cli.args(["-a", password, "--no-auth-warning"]);
        }
        let out = cli.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key Redis holds, with what it holds, as `redis-cli` prints them.
    pub fn dump(&self) -> String {
        let mut dump = String::new();
        for key in self.cli(&["--scan"]).lines() {
            dump.push_str(key);
            dump.push('\n');
            dump.push_str(&self.cli(&["dump", key]));
        }
        dump
    }

    /// Cuts the nodes off a Redis that keeps running with its keys, as a network partition
    /// would: it asks for a password they do not have, and drops their connections.
    pub fn partition(&self) {
        self.cli(&["config", "set", "requirepass", PARTITION_PASSWORD]);
        let authed = Some(PARTITION_PASSWORD);
        self.cli_as(authed, &["client", "kill", "type", "normal"]);
        self.cli_as(authed, &["client", "kill", "type", "pubsub"]);
    }

    /// Ends a [`RedisServer::partition`]: the nodes get back in by themselves.
    pub fn heal(&self) {
        self.cli_as(
            Some(PARTITION_PASSWORD),
            &["config", "set", "requirepass", ""],
        );
    }
}

const PARTITION_PASSWORD: &str = "partitioned";

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node of a cluster: MongoDB and Redis shared with its other nodes.
pub async fn spawn_node(mongo: &MongoServer, redis: &RedisServer, db: &str) -> TestApp {
    spawn_node_with(mongo, redis, db, |_| {}).await
}

/// [`spawn_node`] with `tweak` applied to its configuration.
pub async fn spawn_node_with(
    mongo: &MongoServer,
    redis: &RedisServer,
    db: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let (uri, url, db) = (mongo.uri.clone(), redis.url.clone(), db.to_owned());
    spawn_app_with(move |c| {
        c.mongodb_uri = Some(uri);
        c.mongodb_db = db;
        c.redis_url = Some(url);
        tweak(c);
    })
    .await
}
