//! `ephemera-loadgen`: drives a running server over real WebSockets on loopback and prints one
//! JSON line per run and a human summary. `baseline` serves a bare broadcast relay
//! (tokio-tungstenite, no auth, no parsing): the machine's speed of light for this workload.
//!
//! Each message carries its send time; every receiver records the latency. The generator runs on
//! one thread and reports its own CPU, so a reader knows whether it was the bottleneck.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, Subcommand};
use ephemera_client::{crypto, socket_config, Api};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{io::AsyncBufReadExt as _, net::TcpStream, sync::Semaphore};
use tokio_tungstenite::{
    connect_async_with_config, tungstenite::Message, MaybeTlsStream, WebSocketStream,
};
use tokio_util::sync::CancellationToken;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Parser)]
#[command(
    name = "ephemera-loadgen",
    about = "Load generator and baseline relay for Ephemera"
)]
struct Cli {
    /// The server under test; several (comma-separated) for the nodes of a cluster, which the
    /// members join in turn.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        global = true,
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// The server's PID, to read its CPU time and memory from /proc; one per node of a cluster
    /// (comma-separated), whose figures are added up and also reported each.
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// The PID of the cluster's Redis, whose CPU `fanout` reports beside the nodes'.
    #[arg(long, global = true)]
    redis_pid: Option<u32>,
    /// Talk to a `baseline` relay instead of Ephemera (no rooms to create, no welcome).
    #[arg(long, global = true)]
    baseline: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// C clients in R rooms, S senders at a total M messages/s for D seconds.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        #[arg(long, default_value_t = 10)]
        senders: usize,
        #[arg(long, default_value_t = 150.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Spread the members over P generator processes (one holds one descriptor per member,
        /// and a process may hold only so many); the senders are the first process's first
        /// members, so they take the nodes of a cluster in turn.
        #[arg(long, default_value_t = 1)]
        processes: usize,
    },
    /// One process's share of a several-process `fanout` (started by it, not by hand): joins C
    /// members into the rooms in `LOADGEN_ROOMS`, says so, chats when a line comes on stdin, and
    /// reports what its members saw.
    #[command(hide = true)]
    FanoutPart {
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        part: usize,
        #[arg(long)]
        senders: usize,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        seconds: u64,
    },
    /// C joined connections held for T seconds: server memory per connection. With P processes
    /// the members are spread over P generator processes (each holds one descriptor per member,
    /// and a process may hold only so many), merged into one report.
    Idle {
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        #[arg(long, default_value_t = 50)]
        rooms: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        processes: usize,
    },
    /// One process's share of a several-process `idle` (started by it, not by hand): joins C
    /// members into the rooms given in `LOADGEN_ROOMS`, says so on stdout, and holds them until
    /// its stdin closes, then reports its own CPU.
    #[command(hide = true)]
    IdlePart {
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        part: usize,
    },
    /// Connect and join as fast as possible up to C members in R rooms.
    Ramp {
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// J joins (C handshakes in flight; all at once by default) into a room where M members
    /// chat at a total R messages/s for D seconds; reports the server's CPU per join.
    JoinStorm {
        #[arg(long, default_value_t = 200)]
        members: usize,
        #[arg(long, default_value_t = 500)]
        joins: usize,
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long)]
        concurrency: Option<usize>,
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
    },
    /// One member stops reading while the room chats.
    SlowReader {
        #[arg(long, default_value_t = 20)]
        members: usize,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 16384)]
        bytes: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Serve a bare broadcast relay on --bind.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:9001")]
        bind: String,
    },
}

const ROOM_KEY: &str = "loadgen room key";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// CPU seconds (user + system) and memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStat {
    cpu_s: f64,
    rss_kb: u64,
    hwm_kb: u64,
}

fn proc_stat(pid: &str) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcStat {
        cpu_s: ticks / 100.0,
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
    })
}

struct Target {
    /// The first node creates the rooms; members join the nodes in turn.
    apis: Vec<Api>,
    next: std::sync::atomic::AtomicUsize,
    baseline: bool,
    server_pids: Vec<String>,
    redis_pid: Option<String>,
}

impl Target {
    /// The server's figures; a cluster's nodes added up.
    fn server(&self) -> Option<ProcStat> {
        let mut total: Option<ProcStat> = None;
        for stat in self.nodes() {
            let stat = stat?;
            total = Some(match total {
                None => stat,
                Some(t) => ProcStat {
                    cpu_s: t.cpu_s + stat.cpu_s,
                    rss_kb: t.rss_kb + stat.rss_kb,
                    hwm_kb: t.hwm_kb + stat.hwm_kb,
                },
            });
        }
        total
    }

    /// Each node's figures.
    fn nodes(&self) -> Vec<Option<ProcStat>> {
        self.server_pids.iter().map(|p| proc_stat(p)).collect()
    }

    fn redis(&self) -> Option<ProcStat> {
        self.redis_pid.as_deref().and_then(proc_stat)
    }

    fn api(&self) -> &Api {
        &self.apis[0]
    }

    /// Creates `n` rooms with proofs derived from the shared key (PBKDF2 on the blocking pool).
    async fn rooms(&self, n: usize) -> Vec<(String, String)> {
        let tag = crypto::random_key(6);
        let mut rooms = Vec::new();
        let mut derivations = Vec::new();
        for i in 0..n {
            let room = format!("load-{tag}-{i}");
            derivations.push(tokio::task::spawn_blocking(move || {
                let auth = crypto::RoomSecrets::derive(&room, ROOM_KEY).auth_b64();
                (room, auth)
            }));
        }
        for d in derivations {
            // unwrap: a derivation task only fails if it panicked, which PBKDF2 does not.
            #[allow(clippy::unwrap_used)]
            let (id, auth) = d.await.unwrap();
            if !self.baseline {
                if let Err(e) = self
                    .api()
                    .create(Some(&id), &auth, "loadgen admin", false, None)
                    .await
                {
                    eprintln!("creating {id}: {e} (run the server with --creates-per-ip 0)");
                    std::process::exit(1);
                }
            }
            rooms.push((id, auth));
        }
        rooms
    }

    /// Connects and joins; returns the socket once `welcome` is in (at once for the baseline),
    /// and which node it joined.
    async fn join(&self, room: &(String, String), name: &str) -> Result<(Socket, usize), String> {
        let node = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.apis.len();
        let api = &self.apis[node];
        // Browsers disable Nagle on WebSockets; so does the generator.
        let (mut socket, _) =
            connect_async_with_config(api.ws_url(&room.0), Some(socket_config()), true)
                .await
                .map_err(|e| e.to_string())?;
        let join = json!({ "type": "join", "name": name, "auth": room.1 });
        socket
            .send(Message::text(join.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        if self.baseline {
            return Ok((socket, node));
        }
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) if t.contains(r#""type":"welcome""#) => {
                    return Ok((socket, node))
                }
                Some(Ok(Message::Text(t))) if t.contains(r#""type":"error""#) => {
                    return Err(t.to_string())
                }
                Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".into()),
            }
        }
    }
}

/// The send time carried in a relayed frame's body: `"t":<µs>`.
fn sent_at(frame: &str) -> Option<u64> {
    let start = frame.find(r#""t":"#)? + 4;
    let digits = frame[start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    frame[start..start + digits].parse().ok()
}

fn is_relay(frame: &str, baseline: bool) -> bool {
    if baseline {
        frame.contains(r#""type":"send""#)
    } else {
        frame.contains(r#""type":"message""#)
    }
}

/// Latencies in µs, summarised.
fn percentiles(mut lat: Vec<u64>) -> serde_json::Value {
    lat.sort_unstable();
    let at = |q: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * q).round() as usize;
        lat[i] as f64 / 1000.0
    };
    json!({ "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": at(1.0) })
}

/// What a member's reader saw.
#[derive(Default)]
struct Seen {
    /// The node the member is on.
    node: usize,
    latencies: Vec<u64>,
    close: Option<u16>,
}

/// Reads a member's socket until `stop`, recording the latency of each relayed message while
/// `record` is set.
fn spawn_reader(
    mut stream: futures_util::stream::SplitStream<Socket>,
    node: usize,
    baseline: bool,
    record: Arc<AtomicBool>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen {
            node,
            ..Seen::default()
        };
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => break,
                m = stream.next() => m,
            };
            match message {
                Some(Ok(Message::Text(t))) if is_relay(&t, baseline) => {
                    if record.load(Ordering::Relaxed) {
                        if let Some(sent) = sent_at(&t) {
                            seen.latencies.push(now_us().saturating_sub(sent));
                        }
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    seen.close = f.map(|f| u16::from(f.code));
                    break;
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        seen
    })
}

type Sink = futures_util::stream::SplitSink<Socket, Message>;

/// Sends `rate` messages per second, each padded with `padding` bytes, for `seconds`; returns
/// the sink and how many it sent. `phase` (0..1) shifts the first tick by that fraction of a
/// period, so that several senders spread their messages evenly instead of all firing at once
/// (in phase, 100 senders made bursts of 100 messages, and every latency figure measured the
/// burst, not the server).
async fn send_for(
    mut sink: Sink,
    rate: f64,
    seconds: f64,
    padding: usize,
    phase: f64,
) -> (Sink, u64) {
    let pad = "x".repeat(padding);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + period.mul_f64(phase), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    loop {
        // The end cuts a wait short: a sender whose phase puts its last tick past the end would
        // send after the readers of a spread run's other processes have stopped.
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(end) => break,
        }
        let frame = format!(
            r#"{{"type":"send","txn":"{n}","body":{{"t":{},"p":"{pad}"}}}}"#,
            now_us()
        );
        if sink.send(Message::text(frame)).await.is_err() {
            break;
        }
        n += 1;
    }
    (sink, n)
}

struct Member {
    room: usize,
    sink: Sink,
    reader: tokio::task::JoinHandle<Seen>,
}

/// The members, and everything their readers share.
struct Crowd {
    members: Vec<Member>,
    join_latencies: Vec<u64>,
    failed: usize,
    record: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// Joins `clients` members spread over `rooms`, `concurrency` at a time.
async fn join_all(
    target: &Arc<Target>,
    rooms: &Arc<Vec<(String, String)>>,
    clients: usize,
    concurrency: usize,
    prefix: &str,
) -> Crowd {
    let (record, stop) = (Arc::new(AtomicBool::new(false)), CancellationToken::new());
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let (target, rooms, gate, record, stop) = (
            target.clone(),
            rooms.clone(),
            gate.clone(),
            record.clone(),
            stop.clone(),
        );
        let name = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let room = i % rooms.len();
            let started = Instant::now();
            let (socket, node) = target.join(&rooms[room], &name).await?;
            let took = started.elapsed().as_micros() as u64;
            let (sink, stream) = socket.split();
            let reader = spawn_reader(stream, node, target.baseline, record, stop);
            Ok::<_, String>((Member { room, sink, reader }, took))
        }));
    }
    let mut crowd = Crowd {
        members: Vec::new(),
        join_latencies: Vec::new(),
        failed: 0,
        record,
        stop,
    };
    for task in tasks {
        match task.await {
            Ok(Ok((m, took))) => {
                crowd.members.push(m);
                crowd.join_latencies.push(took);
            }
            Ok(Err(e)) => {
                if crowd.failed == 0 {
                    eprintln!("join failed: {e}");
                }
                crowd.failed += 1;
            }
            Err(_) => crowd.failed += 1,
        }
    }
    crowd
}

fn own_cpu() -> f64 {
    proc_stat("self").map_or(0.0, |p| p.cpu_s)
}

fn report(scenario: &str, mut line: serde_json::Value, summary: String) {
    line["scenario"] = json!(scenario);
    println!("{line}");
    eprintln!("{summary}");
}

/// The members' sending halves, which keep their sockets open: a run reads the server before it
/// lets them go, so that its figures do not count the members' leaving.
type Held = Vec<Sink>;

/// Senders among the members send at `rate` in total; the others only read. Returns per-room
/// counts of messages sent, the latencies every reader saw and the readers' close codes, how
/// long the sending took, and the members' sockets, still open.
async fn chat(
    crowd: Crowd,
    senders: usize,
    rate: f64,
    seconds: f64,
    padding: usize,
    settle: Duration,
) -> (HashMap<usize, u64>, Vec<Seen>, f64, Held) {
    crowd.record.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut sending = Vec::new();
    let mut readers = Vec::new();
    let mut quiet_sinks = Vec::new();
    for (i, m) in crowd.members.into_iter().enumerate() {
        readers.push(m.reader);
        if i < senders {
            let room = m.room;
            let share = rate / senders as f64;
            sending.push(tokio::spawn(async move {
                let phase = i as f64 / senders as f64;
                let (sink, n) = send_for(m.sink, share, seconds, padding, phase).await;
                (room, n, sink)
            }));
        } else {
            quiet_sinks.push(m.sink);
        }
    }
    let mut per_room = HashMap::new();
    let mut sinks = Vec::new();
    for s in sending {
        if let Ok((room, n, sink)) = s.await {
            *per_room.entry(room).or_insert(0) += n;
            sinks.push(sink);
        }
    }
    // A part of a spread run without senders reads for as long as the others send.
    tokio::time::sleep_until((started + Duration::from_secs_f64(seconds)).into()).await;
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    crowd.stop.cancel();
    let mut seen = Vec::new();
    for r in readers {
        seen.push(r.await.unwrap_or_default());
    }
    sinks.extend(quiet_sinks);
    (per_room, seen, elapsed, sinks)
}

fn cpu_delta(a: Option<ProcStat>, b: Option<ProcStat>) -> Option<f64> {
    Some(b?.cpu_s - a?.cpu_s)
}

/// What a `fanout`'s members saw, in a form the processes of a spread run add up: messages sent
/// and members per room, and the latencies the members of each node saw.
#[derive(Default, Serialize, Deserialize)]
struct Outcome {
    sent: HashMap<usize, u64>,
    sizes: HashMap<usize, u64>,
    latencies: Vec<Vec<u64>>,
    failed: usize,
    elapsed: f64,
    generator_cpu_s: f64,
}

impl Outcome {
    fn joined(crowd: &Crowd) -> Self {
        let mut sizes = HashMap::new();
        for m in &crowd.members {
            *sizes.entry(m.room).or_default() += 1;
        }
        Self {
            sizes,
            failed: crowd.failed,
            ..Self::default()
        }
    }

    fn chatted(sent: HashMap<usize, u64>, seen: Vec<Seen>, elapsed: f64, cpu: f64) -> Self {
        let mut latencies: Vec<Vec<u64>> = Vec::new();
        for s in seen {
            if latencies.len() <= s.node {
                latencies.resize_with(s.node + 1, Vec::new);
            }
            latencies[s.node].extend(s.latencies);
        }
        Self {
            sent,
            latencies,
            elapsed,
            generator_cpu_s: cpu,
            ..Self::default()
        }
    }

    fn merge(&mut self, other: Self) {
        for (room, n) in other.sent {
            *self.sent.entry(room).or_default() += n;
        }
        for (room, n) in other.sizes {
            *self.sizes.entry(room).or_default() += n;
        }
        if self.latencies.len() < other.latencies.len() {
            self.latencies.resize_with(other.latencies.len(), Vec::new);
        }
        for (mine, theirs) in self.latencies.iter_mut().zip(other.latencies) {
            mine.extend(theirs);
        }
        self.failed += other.failed;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.generator_cpu_s += other.generator_cpu_s;
    }
}

/// The server's nodes and Redis, read at one moment.
struct Snapshot {
    nodes: Vec<Option<ProcStat>>,
    redis: Option<ProcStat>,
}

impl Snapshot {
    fn take(target: &Target) -> Self {
        Self {
            nodes: target.nodes(),
            redis: target.redis(),
        }
    }
}

/// A `fanout`'s parameters, as given.
#[derive(Clone, Copy)]
struct Fanout {
    clients: usize,
    rooms: usize,
    senders: usize,
    rate: f64,
    seconds: u64,
    processes: usize,
}

async fn fanout(target: Arc<Target>, run: Fanout) {
    let room_list = Arc::new(target.rooms(run.rooms).await);
    let crowd = join_all(&target, &room_list, run.clients, 256, "m").await;
    let mut outcome = Outcome::joined(&crowd);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, gen0) = (Snapshot::take(&target), own_cpu());
    let (sent, seen, elapsed, held) = chat(
        crowd,
        run.senders,
        run.rate,
        run.seconds as f64,
        0,
        Duration::from_secs(2),
    )
    .await;
    let after = Snapshot::take(&target);
    drop(held);
    outcome.merge(Outcome::chatted(sent, seen, elapsed, own_cpu() - gen0));
    report_fanout(&target, run, outcome, &before, &after);
}

/// `fanout` over several generator processes: this one creates the rooms, starts the parts,
/// tells them all to chat at once when every member has joined, and reads the server.
async fn fanout_spread(target: Arc<Target>, server: &str, run: Fanout) {
    let room_list = target.rooms(run.rooms).await;
    let parts = spawn_parts(
        server,
        &room_list,
        run.clients,
        run.processes,
        |part, share| {
            let senders = if part == 0 { run.senders } else { 0 };
            let mut args = vec![
                "fanout-part".into(),
                format!("--clients={share}"),
                format!("--part={part}"),
                format!("--senders={senders}"),
                format!("--rate={}", run.rate),
                format!("--seconds={}", run.seconds),
            ];
            if target.baseline {
                args.insert(0, "--baseline".into());
            }
            args
        },
    );
    let mut parts = match parts {
        Ok(parts) => parts,
        Err(e) => return eprintln!("fanout: {e}"),
    };
    let mut outcome = Outcome::default();
    for part in &mut parts {
        outcome.merge(part.outcome().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Snapshot::take(&target);
    // The first part holds the senders: it starts last, when every other part is reading.
    for part in parts.iter_mut().rev() {
        part.go().await;
    }
    for part in &mut parts {
        outcome.merge(part.outcome().await);
    }
    let after = Snapshot::take(&target);
    for part in parts {
        part.end().await;
    }
    report_fanout(&target, run, outcome, &before, &after);
}

/// One part of [`fanout_spread`].
async fn fanout_part(target: Arc<Target>, run: Fanout, part: usize) {
    let Some(rooms) = rooms_from_env() else {
        return eprintln!("fanout-part: no rooms in LOADGEN_ROOMS");
    };
    let crowd = join_all(&target, &rooms, run.clients, 256, &format!("p{part}-")).await;
    // Recording from now: another part's first message may come before this part's "go".
    crowd.record.store(true, Ordering::Relaxed);
    println!("{}", json!(Outcome::joined(&crowd)));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let _ = stdin.next_line().await;
    let gen0 = own_cpu();
    let (sent, seen, elapsed, held) = chat(
        crowd,
        run.senders,
        run.rate,
        run.seconds as f64,
        0,
        Duration::from_secs(2),
    )
    .await;
    let outcome = Outcome::chatted(sent, seen, elapsed, own_cpu() - gen0);
    println!("{}", json!(outcome));
    // Held until the parent has read the server.
    while let Ok(Some(_)) = stdin.next_line().await {}
    drop(held);
}

fn report_fanout(
    target: &Target,
    run: Fanout,
    outcome: Outcome,
    before: &Snapshot,
    after: &Snapshot,
) {
    let Fanout {
        clients,
        rooms,
        senders,
        rate,
        seconds,
        processes,
    } = run;
    let node_cpu: Vec<Option<f64>> = before
        .nodes
        .iter()
        .zip(&after.nodes)
        .map(|(a, b)| cpu_delta(*a, *b))
        .collect();
    let server_cpu: Option<f64> = if node_cpu.is_empty() {
        None
    } else {
        node_cpu.iter().copied().sum()
    };
    let redis_cpu = cpu_delta(before.redis, after.redis);
    let sent: u64 = outcome.sent.values().sum();
    let expected: u64 = outcome
        .sent
        .iter()
        .map(|(r, n)| n * outcome.sizes.get(r).copied().unwrap_or(0))
        .sum();
    let received: u64 = outcome.latencies.iter().map(|l| l.len() as u64).sum();
    let per_delivery =
        |cpu: Option<f64>, deliveries: u64| cpu.map(|c| c * 1e6 / deliveries.max(1) as f64);
    let nodes: Vec<serde_json::Value> = outcome
        .latencies
        .iter()
        .enumerate()
        .map(|(i, lat)| {
            let cpu = node_cpu.get(i).copied().flatten();
            json!({
                "received": lat.len(), "latency": percentiles(lat.clone()), "cpu_s": cpu,
                "cpu_us_per_delivery": per_delivery(cpu, lat.len() as u64),
            })
        })
        .collect();
    let server_delivery = per_delivery(server_cpu, received);
    let latency = percentiles(outcome.latencies.into_iter().flatten().collect());
    let elapsed = outcome.elapsed.max(f64::EPSILON);
    let summary = format!(
        "fanout{}: {clients} clients in {rooms} rooms, {senders} senders, {rate} msg/s for {seconds} s: {received}/{expected} delivered ({} lost), {:.0} deliveries/s; latency p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; server CPU {}; generator CPU {:.2} s",
        if target.baseline { " (baseline)" } else { "" },
        expected.saturating_sub(received),
        received as f64 / elapsed,
        latency["p50_ms"], latency["p99_ms"], latency["p999_ms"], latency["max_ms"],
        server_delivery.map_or("n/a".into(), |u| format!("{u:.2} µs per delivery")),
        outcome.generator_cpu_s,
    );
    let peak_rss: Option<u64> = after.nodes.iter().map(|n| n.map(|s| s.hwm_kb)).sum();
    let line = json!({
        "baseline": target.baseline, "clients": clients, "rooms": rooms, "senders": senders, "rate": rate,
        "seconds": seconds, "processes": processes, "join_failures": outcome.failed, "sent": sent,
        "expected": expected, "received": received, "loss": expected.saturating_sub(received),
        "deliveries_per_s": received as f64 / elapsed, "latency": latency,
        "server_cpu_s": server_cpu, "server_cpu_us_per_delivery": server_delivery,
        "server_peak_rss_kb": peak_rss, "generator_cpu_s": outcome.generator_cpu_s,
        "node_cpu_s": node_cpu, "nodes": nodes, "redis_cpu_s": redis_cpu,
    });
    report("fanout", line, summary);
}

/// The rooms a part joins, from its parent.
fn rooms_from_env() -> Option<Arc<Vec<(String, String)>>> {
    let rooms: Vec<(String, String)> = std::env::var("LOADGEN_ROOMS")
        .ok()
        .and_then(|r| serde_json::from_str(&r).ok())?;
    (!rooms.is_empty()).then(|| Arc::new(rooms))
}

/// A generator process started by this one; it speaks one JSON line per step.
struct Part {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Part {
    async fn said(&mut self) -> serde_json::Value {
        self.lines
            .next_line()
            .await
            .ok()
            .flatten()
            .and_then(|l| serde_json::from_str(&l).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    async fn outcome(&mut self) -> Outcome {
        serde_json::from_value(self.said().await).unwrap_or_default()
    }

    /// The next step: a line on its stdin.
    async fn go(&mut self) {
        use tokio::io::AsyncWriteExt as _;
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n").await;
            let _ = stdin.flush().await;
        }
    }

    /// Closes its stdin (its last step) and waits for it to end.
    async fn end(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().await;
    }
}

/// Starts `processes` parts, sharing `clients` members out and handing each the rooms; `args`
/// gives a part's subcommand from its number and share.
fn spawn_parts(
    server: &str,
    rooms: &[(String, String)],
    clients: usize,
    processes: usize,
    args: impl Fn(usize, usize) -> Vec<String>,
) -> Result<Vec<Part>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut parts = Vec::new();
    for part in 0..processes {
        let share = clients / processes + usize::from(part < clients % processes);
        let mut child = tokio::process::Command::new(&exe)
            .arg(format!("--server={server}"))
            .args(args(part, share))
            .env("LOADGEN_ROOMS", json!(rooms).to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting part {part}: {e}"))?;
        let out = child.stdout.take().ok_or("a part without stdout")?;
        parts.push(Part {
            child,
            lines: tokio::io::BufReader::new(out).lines(),
        });
    }
    Ok(parts)
}

/// `idle` over several generator processes: this one creates the rooms and reads the server,
/// the parts join and hold the members and report their own CPU.
async fn idle_spread(
    target: Arc<Target>,
    server: &str,
    clients: usize,
    rooms: usize,
    seconds: u64,
    processes: usize,
) {
    let room_list = target.rooms(rooms).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.server();
    let parts = spawn_parts(server, &room_list, clients, processes, |part, share| {
        vec![
            "idle-part".into(),
            format!("--clients={share}"),
            format!("--part={part}"),
        ]
    });
    let mut parts = match parts {
        Ok(parts) => parts,
        Err(e) => return eprintln!("idle: {e}"),
    };
    let (mut joined, mut failed) = (0, 0);
    for part in &mut parts {
        let said = part.said().await;
        joined += said["joined"].as_u64().unwrap_or(0);
        failed += said["failed"].as_u64().unwrap_or(0);
    }
    let holding = target.server();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = target.server();
    let mut generator_cpu = Vec::new();
    for mut part in parts {
        part.go().await;
        let said = part.said().await;
        generator_cpu.push(said["generator_cpu_s"].as_f64().unwrap_or(f64::NAN));
        part.end().await;
    }
    let per_conn = before
        .zip(after)
        .map(|(a, b)| b.rss_kb.saturating_sub(a.rss_kb) as f64 * 1024.0 / joined.max(1) as f64);
    let idle_cpu = cpu_delta(holding, after).map(|cpu| cpu * 100.0 / seconds.max(1) as f64);
    let summary = format!(
        "idle: {joined} joined connections from {processes} processes held {seconds} s; {} bytes per connection; idle CPU {} % of a core",
        per_conn.map_or("n/a".into(), |b| format!("{b:.0}")),
        idle_cpu.map_or("n/a".into(), |c| format!("{c:.2}")),
    );
    let line = json!({
        "baseline": target.baseline, "clients": clients, "rooms": rooms, "processes": processes,
        "joined": joined, "join_failures": failed,
        "server_rss_before_kb": before.map(|s| s.rss_kb), "server_rss_after_kb": after.map(|s| s.rss_kb),
        "bytes_per_connection": per_conn, "idle_cpu_percent": idle_cpu,
        "generator_cpu_s": generator_cpu,
    });
    report("idle", line, summary);
}

/// One part of [`idle_spread`].
async fn idle_part(target: Arc<Target>, clients: usize, part: usize) {
    let Some(rooms) = rooms_from_env() else {
        return eprintln!("idle-part: no rooms in LOADGEN_ROOMS");
    };
    let crowd = join_all(&target, &rooms, clients, 256, &format!("p{part}-")).await;
    println!(
        "{}",
        json!({ "joined": crowd.members.len(), "failed": crowd.failed })
    );
    // Held until the parent says so.
    let _ = tokio::io::BufReader::new(tokio::io::stdin())
        .lines()
        .next_line()
        .await;
    println!("{}", json!({ "generator_cpu_s": own_cpu() }));
    drop(crowd);
}

async fn idle(target: Arc<Target>, clients: usize, rooms: usize, seconds: u64) {
    let room_list = Arc::new(target.rooms(rooms).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.server();
    let crowd = join_all(&target, &room_list, clients, 256, "i").await;
    let holding = target.server();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = target.server();
    // The server's CPU while it only held the sockets (its heartbeat pings every 20 s included
    // when the hold is longer), in percent of one core.
    let idle_cpu = cpu_delta(holding, after).map(|cpu| cpu * 100.0 / seconds.max(1) as f64);
    let joined = crowd.members.len();
    let per_conn = match (before, after) {
        (Some(a), Some(b)) => {
            Some((b.rss_kb.saturating_sub(a.rss_kb) as f64) * 1024.0 / joined.max(1) as f64)
        }
        _ => None,
    };
    let summary = format!(
        "idle: {joined} joined connections held {seconds} s; server RSS {} → {} KiB: {} bytes per connection; idle CPU {} % of a core",
        before.map_or(0, |s| s.rss_kb), after.map_or(0, |s| s.rss_kb), per_conn.map_or("n/a".into(), |b| format!("{b:.0}")),
        idle_cpu.map_or("n/a".into(), |c| format!("{c:.2}")),
    );
    let line = json!({
        "baseline": target.baseline, "clients": clients, "rooms": rooms, "joined": joined, "join_failures": crowd.failed,
        "server_rss_before_kb": before.map(|s| s.rss_kb), "server_rss_after_kb": after.map(|s| s.rss_kb),
        "bytes_per_connection": per_conn, "idle_cpu_percent": idle_cpu,
    });
    report("idle", line, summary);
}

async fn ramp(target: Arc<Target>, clients: usize, rooms: usize, concurrency: usize) {
    let room_list = Arc::new(target.rooms(rooms).await);
    let (server0, gen0, started) = (target.server(), own_cpu(), Instant::now());
    let crowd = join_all(&target, &room_list, clients, concurrency, "r").await;
    let elapsed = started.elapsed().as_secs_f64();
    let (server1, gen1) = (target.server(), own_cpu());
    let joined = crowd.members.len();
    let latency = percentiles(crowd.join_latencies);
    let summary = format!(
        "ramp: {joined} joins into {rooms} rooms in {elapsed:.2} s: {:.0} joins/s; join latency p50 {} ms, p99 {} ms, max {} ms; {} failed; server CPU {:.2} s; generator CPU {:.2} s",
        joined as f64 / elapsed, latency["p50_ms"], latency["p99_ms"], latency["max_ms"], crowd.failed,
        cpu_delta(server0, server1).unwrap_or(0.0), gen1 - gen0,
    );
    let line = json!({
        "baseline": target.baseline, "clients": clients, "rooms": rooms, "joined": joined, "join_failures": crowd.failed,
        "joins_per_s": joined as f64 / elapsed, "join_latency": latency, "server_cpu_s": cpu_delta(server0, server1),
        "generator_cpu_s": gen1 - gen0,
    });
    report("ramp", line, summary);
}

/// What a join storm does: `joins` newcomers, `concurrency` at a time, into a room where
/// `members` chat at `rate` for `seconds`.
struct Storm {
    members: usize,
    joins: usize,
    rate: f64,
    concurrency: usize,
    seconds: f64,
}

async fn join_storm(target: Arc<Target>, storm: Storm) {
    let Storm {
        members,
        joins,
        rate,
        concurrency,
        seconds,
    } = storm;
    let room_list = Arc::new(target.rooms(1).await);
    let crowd = join_all(&target, &room_list, members, 256, "e").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The storm runs on a thread and runtime of its own: 500 handshakes at once on the thread
    // that reads the members' messages would delay the reading, and the latency measured would
    // be the generator's, not the server's. Its runtime lives until the chat is over, so the
    // newcomers stay in the room.
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    let (over_tx, over_rx) = tokio::sync::oneshot::channel::<()>();
    let storm = {
        let (target, rooms) = (target.clone(), room_list.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let started = Instant::now();
                let cpu_before = target.server().map(|s| s.cpu_s);
                let mut crowd = join_all(&target, &rooms, joins, concurrency, "s").await;
                let took = started.elapsed().as_secs_f64();
                let cpu = cpu_before.zip(target.server()).map(|(b, a)| a.cpu_s - b);
                let _ = result_tx.send((
                    crowd.members.len(),
                    crowd.failed,
                    took,
                    percentiles(std::mem::take(&mut crowd.join_latencies)),
                    cpu,
                ));
                let _ = over_rx.await;
            });
        })
    };
    let senders = 10.min(members);
    let chatting = tokio::spawn(chat(
        crowd,
        senders,
        rate,
        seconds,
        0,
        Duration::from_secs(1),
    ));
    let Ok((joined, failed, took, join_latency, cpu)) = result_rx.await else {
        return eprintln!("join-storm: the storm's thread could not start a runtime");
    };
    let chatted = chatting.await;
    let _ = over_tx.send(());
    let _ = storm.join();
    let Ok((_, seen, _, _)) = chatted else {
        return;
    };
    let lat: Vec<u64> = seen.into_iter().flat_map(|s| s.latencies).collect();
    let latency = percentiles(lat);
    // The server's CPU while the storm lasted, per join (the members' chat included, a few
    // thousand deliveries a second at most).
    let cpu_per_join_us = cpu.map(|cpu| cpu * 1e6 / joined.max(1) as f64);
    let summary = format!(
        "join-storm: {joined} joins, {concurrency} at a time ({failed} failed) in {took:.2} s = {:.0} joins/s (p99 {} ms, server CPU {} µs each) while {members} members chat at {rate} msg/s: their p99 {} ms, max {} ms",
        joined as f64 / took, join_latency["p99_ms"],
        cpu_per_join_us.map_or("?".into(), |us| format!("{us:.0}")),
        latency["p99_ms"], latency["max_ms"],
    );
    let line = json!({
        "members": members, "joins": joins, "concurrency": concurrency, "joined": joined, "join_failures": failed,
        "joins_per_s": joined as f64 / took, "join_latency": join_latency, "member_latency": latency,
        "server_cpu_per_join_us": cpu_per_join_us,
    });
    report("join-storm", line, summary);
}

async fn slow_reader(target: Arc<Target>, members: usize, rate: f64, bytes: usize, seconds: u64) {
    let room_list = Arc::new(target.rooms(1).await);
    let crowd = join_all(&target, &room_list, members, 64, "o").await;
    let slow_socket = match target.join(&room_list[0], "slow").await {
        Ok((s, _)) => s,
        Err(e) => return eprintln!("slow member could not join: {e}"),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.server();
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (target, peak) = (target.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                if let Some(s) = target.server() {
                    peak.fetch_max(s.rss_kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let others = crowd.members.len() as u64;
    let (per_room, seen, _, _) = chat(
        crowd,
        2,
        rate,
        seconds as f64,
        bytes,
        Duration::from_secs(2),
    )
    .await;
    sampler.abort();
    let sent: u64 = per_room.values().sum();
    let received: u64 = seen.iter().map(|s| s.latencies.len() as u64).sum();
    let expected = sent * others;
    // Now read the slow member's socket: its backlog, then (if it was cut off) the close.
    let mut close = None;
    let mut got = 0u64;
    let (_, mut stream) = slow_socket.split();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        match m {
            Message::Text(_) => got += 1,
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    let growth_kb = before.map(|b| peak.load(Ordering::Relaxed).saturating_sub(b.rss_kb));
    let summary = format!(
        "slow-reader: {members} members, {rate} msg/s of {bytes} bytes for {seconds} s ({sent} sent): others got {received}/{expected} ({} lost); the slow member read {got} and then {}; server RSS growth {} KiB",
        expected.saturating_sub(received),
        close.map_or("no close".into(), |c| format!("close {c}")),
        growth_kb.map_or("n/a".into(), |g| g.to_string()),
    );
    let line = json!({
        "members": members, "rate": rate, "bytes": bytes, "seconds": seconds, "sent": sent, "expected": expected,
        "received": received, "loss": expected.saturating_sub(received), "slow_close": close, "slow_read": got,
        "server_rss_growth_kb": growth_kb,
    });
    report("slow-reader", line, summary);
}

/// The bare relay: every text frame goes to every socket on the same path. Nothing is parsed.
/// tungstenite's callback type fixes the error type; it is never returned here.
#[allow(clippy::result_large_err)]
async fn serve_baseline(bind: &str) -> std::io::Result<()> {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    type Peers =
        Arc<Mutex<HashMap<String, Vec<(u64, tokio::sync::mpsc::UnboundedSender<Message>)>>>>;
    let listener = tokio::net::TcpListener::bind(bind).await?;
    eprintln!("baseline relay on {}", listener.local_addr()?);
    let rooms: Peers = Arc::default();
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (rooms, id) = (rooms.clone(), ids.fetch_add(1, Ordering::Relaxed));
        tokio::spawn(async move {
            let mut path = String::new();
            // Chat-sized buffers, like the clients': the relay is the machine's speed of light,
            // not tungstenite's 128 KiB default.
            let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(
                tcp,
                |req: &Request, resp: Response| {
                    path = req.uri().path().to_owned();
                    Ok(resp)
                },
                Some(socket_config()),
            )
            .await
            else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
            rooms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(path.clone())
                .or_default()
                .push((id, tx));
            // Everything queued goes out in one write, as a good relay does.
            let writer = tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if sink.feed(m).await.is_err() {
                        break;
                    }
                    while let Ok(m) = rx.try_recv() {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    let peers = rooms.lock().unwrap_or_else(|e| e.into_inner());
                    for (_, peer) in peers.get(&path).into_iter().flatten() {
                        let _ = peer.send(Message::Text(text.clone()));
                    }
                }
            }
            rooms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(path)
                .or_default()
                .retain(|(i, _)| *i != id);
            writer.abort();
        });
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let scenario = cli.scenario.clone();
    if let Scenario::Baseline { bind } = &scenario {
        // The relay gets the cores the server would get.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build();
        return match runtime.map(|rt| rt.block_on(serve_baseline(bind))) {
            Ok(Ok(())) => std::process::ExitCode::SUCCESS,
            Ok(Err(e)) | Err(e) => {
                eprintln!("baseline: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // One thread for the generator, so its CPU figure is easy to read.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let apis = match cli
        .server
        .iter()
        .map(|s| Api::new(s))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(apis) if !apis.is_empty() => apis,
        Ok(_) => {
            eprintln!("--server: at least one");
            return std::process::ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let target = Arc::new(Target {
        apis,
        next: std::sync::atomic::AtomicUsize::new(0),
        baseline: cli.baseline,
        server_pids: cli.server_pid.iter().map(u32::to_string).collect(),
        redis_pid: cli.redis_pid.map(|p| p.to_string()),
    });
    runtime.block_on(async move {
        match scenario {
            Scenario::Fanout {
                clients,
                rooms,
                senders,
                rate,
                seconds,
                processes,
            } => {
                let run = Fanout {
                    clients,
                    rooms,
                    senders,
                    rate,
                    seconds,
                    processes: processes.max(1),
                };
                if run.processes == 1 {
                    fanout(target, run).await
                } else {
                    fanout_spread(target, &cli.server.join(","), run).await
                }
            }
            Scenario::FanoutPart {
                clients,
                part,
                senders,
                rate,
                seconds,
            } => {
                let run = Fanout {
                    clients,
                    rooms: 0,
                    senders,
                    rate,
                    seconds,
                    processes: 1,
                };
                fanout_part(target, run, part).await
            }
            Scenario::Idle {
                clients,
                rooms,
                seconds,
                processes: 0 | 1,
            } => idle(target, clients, rooms, seconds).await,
            Scenario::Idle {
                clients,
                rooms,
                seconds,
                processes,
            } => {
                idle_spread(
                    target,
                    &cli.server.join(","),
                    clients,
                    rooms,
                    seconds,
                    processes,
                )
                .await
            }
            Scenario::IdlePart { clients, part } => idle_part(target, clients, part).await,
            Scenario::Ramp {
                clients,
                rooms,
                concurrency,
            } => ramp(target, clients, rooms, concurrency).await,
            Scenario::JoinStorm {
                members,
                joins,
                rate,
                concurrency,
                seconds,
            } => {
                let storm = Storm {
                    members,
                    joins,
                    rate,
                    concurrency: concurrency.unwrap_or(joins).max(1),
                    seconds,
                };
                join_storm(target, storm).await
            }
            Scenario::SlowReader {
                members,
                rate,
                bytes,
                seconds,
            } => slow_reader(target, members, rate, bytes, seconds).await,
            Scenario::Baseline { .. } => {}
        }
    });
    std::process::ExitCode::SUCCESS
}
