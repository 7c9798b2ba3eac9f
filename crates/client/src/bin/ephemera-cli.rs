//! `ephemera-cli`: rooms, groups and direct messages from a terminal, end-to-end encrypted like
//! the web client. Secrets come from a prompt, a file or the environment, never from argv.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use ephemera_client::{
    crypto, download, terminal, Api, ApiError, Ended, Event, JoinError, RoomClient, SendError,
};
use serde_json::json;
use tokio::{io::AsyncBufReadExt, sync::mpsc};

/// Exit codes, one per way a visit can end (documented in the README).
mod exit {
    pub const FAILURE: u8 = 1;
    pub const CREDENTIALS: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
    pub const NAME_TAKEN: u8 = 5;
    pub const KICKED: u8 = 6;
    pub const DELETED: u8 = 7;
    pub const RATE_LIMITED: u8 = 8;
    pub const UNREACHABLE: u8 = 9;
    pub const REFUSED: u8 = 10;
}

#[derive(Parser)]
#[command(
    name = "ephemera-cli",
    version,
    about = "Ephemera from a terminal: end-to-end encrypted rooms that forget"
)]
struct Cli {
    /// The server's base URL.
    #[arg(
        long,
        env = "EPHEMERA_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// A file holding the room key (otherwise EPHEMERA_ROOM_KEY, otherwise a prompt).
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a room and print its share link.
    Create {
        #[arg(long)]
        room: Option<String>,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        listed: bool,
    },
    /// Delete a room (asks for the admin password, or reads EPHEMERA_ADMIN_PASSWORD).
    Delete { room: String },
    /// Listed rooms and their member counts.
    List,
    /// Chat interactively in one or more rooms.
    Join {
        #[arg(required = true)]
        rooms: Vec<String>,
        #[arg(long)]
        name: String,
        /// Join as admin (asks for the admin password, or reads EPHEMERA_ADMIN_PASSWORD).
        #[arg(long)]
        admin: bool,
        /// Where received files are saved.
        #[arg(long, default_value = "ephemera-downloads")]
        download_dir: PathBuf,
    },
    /// Send one message and exit.
    Send {
        room: String,
        #[arg(long)]
        name: String,
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Print what happens in a room, one line per event.
    Listen {
        room: String,
        #[arg(long)]
        name: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "ephemera-downloads")]
        download_dir: PathBuf,
    },
}

/// A failure with its exit code and a one-line reason.
struct Fail(u8, String);

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        let code = match e.code() {
            None => exit::UNREACHABLE,
            Some("invalid_credentials") => exit::CREDENTIALS,
            Some("room_not_found") => exit::NOT_FOUND,
            Some("rate_limited") => exit::RATE_LIMITED,
            Some(_) => exit::REFUSED,
        };
        Fail(code, e.to_string())
    }
}

impl From<JoinError> for Fail {
    fn from(e: JoinError) -> Self {
        match &e {
            JoinError::Connect(_) => Fail(exit::UNREACHABLE, e.to_string()),
            JoinError::Refused { code, .. } => Fail(code_for(code), e.to_string()),
        }
    }
}

impl From<SendError> for Fail {
    fn from(e: SendError) -> Self {
        Fail(exit::FAILURE, e.to_string())
    }
}

fn code_for(error: &str) -> u8 {
    match error {
        "invalid_credentials" => exit::CREDENTIALS,
        "room_not_found" => exit::NOT_FOUND,
        "name_taken" => exit::NAME_TAKEN,
        "rate_limited" => exit::RATE_LIMITED,
        _ => exit::REFUSED,
    }
}

/// How a room's end reads, and the exit code it gives.
fn ended(reason: &Ended) -> (u8, String) {
    match reason {
        Ended::Kicked { by } => (exit::KICKED, format!("you were removed by {by}")),
        Ended::Deleted => (exit::DELETED, "the room was deleted".into()),
        Ended::Left => (0, "you left".into()),
        Ended::Closed { code, error } => {
            let error = error.as_deref().unwrap_or("closed");
            (
                code_for(error),
                format!("the server closed the connection ({code}, {error})"),
            )
        }
    }
}

fn room_key(cli: &Cli, room: &str) -> Result<String, Fail> {
    if let Some(path) = &cli.key_file {
        let key = std::fs::read_to_string(path)
            .map_err(|e| Fail(exit::FAILURE, format!("{}: {e}", path.display())))?;
        return Ok(key.trim_end_matches(['\n', '\r']).to_owned());
    }
    if let Ok(key) = std::env::var("EPHEMERA_ROOM_KEY") {
        return Ok(key);
    }
    rpassword::prompt_password(format!("Room key for {room}: "))
        .map_err(|e| Fail(exit::FAILURE, format!("cannot read the key: {e}")))
}

fn admin_password(prompt: &str) -> Result<String, Fail> {
    if let Ok(password) = std::env::var("EPHEMERA_ADMIN_PASSWORD") {
        return Ok(password);
    }
    rpassword::prompt_password(prompt)
        .map_err(|e| Fail(exit::FAILURE, format!("cannot read the password: {e}")))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, reason)) => {
            eprintln!("ephemera-cli: {}", terminal::line(&reason));
            ExitCode::from(code)
        }
    }
}

async fn run(cli: &Cli) -> Result<u8, Fail> {
    let api = Api::new(&cli.server);
    match &cli.command {
        Command::Create {
            room,
            title,
            listed,
        } => create(cli, &api, room.as_deref(), title.as_deref(), *listed).await,
        Command::Delete { room } => {
            api.delete(
                room,
                &admin_password(&format!("Admin password for {room}: "))?,
            )
            .await?;
            println!("Deleted {room}; everyone in it was disconnected.");
            Ok(0)
        }
        Command::List => {
            for room in api.list().await? {
                println!(
                    "{:>5}  {}  {}",
                    room.members,
                    terminal::line(&room.room_id),
                    terminal::line(&room.title.unwrap_or_default())
                );
            }
            Ok(0)
        }
        Command::Send { room, name, text } => {
            let (tx, _rx) = mpsc::unbounded_channel();
            let client =
                RoomClient::join(&api, room, &room_key(cli, room)?, name, None, tx).await?;
            let seq = client.send_text(None, &text.join(" ")).await?;
            client.leave();
            println!("sent #{seq}");
            Ok(0)
        }
        Command::Listen {
            room,
            name,
            json,
            download_dir,
        } => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let _client =
                RoomClient::join(&api, room, &room_key(cli, room)?, name, None, tx).await?;
            if !json {
                println!("listening in {room} as {name}; Ctrl-C to stop");
            }
            while let Some(event) = rx.recv().await {
                if let Some(code) = print_event(&event, *json, download_dir) {
                    return Ok(code);
                }
            }
            Ok(0)
        }
        Command::Join {
            rooms,
            name,
            admin,
            download_dir,
        } => {
            let password = if *admin {
                Some(admin_password("Admin password: ")?)
            } else {
                None
            };
            interactive(cli, &api, rooms, name, password, download_dir).await
        }
    }
}

async fn create(
    cli: &Cli,
    api: &Api,
    room: Option<&str>,
    title: Option<&str>,
    listed: bool,
) -> Result<u8, Fail> {
    let room_id = room.map_or_else(|| crypto::random_key(16), str::to_owned);
    let proposed = crypto::random_key(22);
    let mut key = if cli.key_file.is_some() || std::env::var_os("EPHEMERA_ROOM_KEY").is_some() {
        room_key(cli, &room_id)?
    } else {
        rpassword::prompt_password("Room key (Enter for a random one): ")
            .map_err(|e| Fail(exit::FAILURE, e.to_string()))?
    };
    if key.is_empty() {
        key = proposed;
    }
    if key.chars().count() < 5 {
        return Err(Fail(
            exit::FAILURE,
            "the room key needs at least 5 characters".into(),
        ));
    }
    let password = admin_password("Admin password (8 or more characters): ")?;
    if password == key {
        return Err(Fail(
            exit::FAILURE,
            "the admin password must differ from the room key".into(),
        ));
    }
    let (id, k) = (room_id.clone(), key.clone());
    let auth = tokio::task::spawn_blocking(move || crypto::RoomSecrets::derive(&id, &k).auth_b64())
        .await
        .map_err(|e| Fail(exit::FAILURE, e.to_string()))?;
    let created = api
        .create(Some(&room_id), &auth, &password, listed, title)
        .await?;
    println!(
        "Room {} created. Share this link (the key is after the #):",
        created.room_id
    );
    println!("{}", api.share_link(&created.room_id, &key));
    println!("Nothing said in the room is stored. The admin password cannot be recovered.");
    Ok(0)
}

/// Prints an event; returns an exit code when it ends the only room.
fn print_event(event: &Event, json: bool, downloads: &Path) -> Option<u8> {
    let saved = match event {
        Event::File { name, data, .. } => Some(download::save(downloads, name, data)),
        _ => None,
    };
    if json {
        let line = match event {
            Event::Message {
                room,
                seq,
                ts,
                from,
                to,
                text,
            } => {
                json!({ "type": "message", "room": room, "seq": seq, "ts": ts, "from": from, "to": to, "text": text })
            }
            Event::File {
                room,
                seq,
                ts,
                from,
                to,
                name,
                mime,
                data,
            } => json!({
                "type": "file", "room": room, "seq": seq, "ts": ts, "from": from, "to": to, "name": name, "mime": mime,
                "size": data.len(), "path": saved.as_ref().and_then(|s| s.as_ref().ok()).map(|p| p.display().to_string()),
            }),
            Event::Undecryptable { room, seq, from } => {
                json!({ "type": "undecryptable", "room": room, "seq": seq, "from": from })
            }
            Event::Bot { room, event, text } => {
                json!({ "type": "bot", "room": room, "event": event, "text": text })
            }
            Event::Unsent { room, seq, by } => {
                json!({ "type": "unsent", "room": room, "seq": seq, "by": by })
            }
            Event::Typing { room, from, active } => {
                json!({ "type": "typing", "room": room, "from": from, "active": active })
            }
            Event::Read { room, from, seq } => {
                json!({ "type": "read", "room": room, "from": from, "seq": seq })
            }
            Event::Notice {
                room,
                code,
                message,
            } => json!({ "type": "error", "room": room, "code": code, "message": message }),
            Event::Reconnecting { room } => json!({ "type": "reconnecting", "room": room }),
            Event::Reconnected { room } => json!({ "type": "reconnected", "room": room }),
            Event::Ended { room, reason } => {
                json!({ "type": "ended", "room": room, "reason": ended(reason).1 })
            }
        };
        println!("{}", terminal::json(&line));
    } else {
        // Everything another member chose (names, texts, file names, the bot's words, which
        // carry names) is escaped before it reaches the terminal.
        let l = terminal::line;
        match event {
            Event::Message {
                room,
                seq,
                from,
                to: None,
                text,
                ..
            } => println!("[{room} #{seq}] {}: {}", l(from), terminal::message(text)),
            Event::Message {
                room,
                seq,
                from,
                to: Some(to),
                text,
                ..
            } => println!(
                "[{room} #{seq}] {} → {} (private): {}",
                l(from),
                l(to),
                terminal::message(text)
            ),
            Event::File {
                room,
                seq,
                from,
                name,
                data,
                ..
            } => match &saved {
                Some(Ok(path)) => println!(
                    "[{room} #{seq}] {} sent {} ({} bytes), saved to {}",
                    l(from),
                    l(name),
                    data.len(),
                    l(&path.display().to_string())
                ),
                _ => println!(
                    "[{room} #{seq}] {} sent {} ({} bytes), which could not be saved",
                    l(from),
                    l(name),
                    data.len()
                ),
            },
            Event::Undecryptable { room, seq, from } => {
                println!(
                    "[{room} #{seq}] {}: ⚠ a message that does not decrypt",
                    l(from)
                )
            }
            Event::Bot { room, text, .. } => println!("[{room}] * {}", l(text)),
            Event::Unsent { room, seq, by } => {
                println!("[{room}] * message #{seq} was unsent by {}", l(by))
            }
            Event::Typing { .. } | Event::Read { .. } => {}
            Event::Notice { room, message, .. } => println!("[{room}] ! {}", l(message)),
            Event::Reconnecting { room } => println!("[{room}] * connection lost; reconnecting…"),
            Event::Reconnected { room } => println!("[{room}] * reconnected"),
            Event::Ended { room, reason } => println!("[{room}] * {}", l(&ended(reason).1)),
        }
    }
    let _ = std::io::stdout().flush();
    match event {
        Event::Ended { reason, .. } => Some(ended(reason).0),
        _ => None,
    }
}

const HELP: &str = "\
Plain text goes to the current room. Commands:
  /send ROOM TEXT     to another room you are in
  /dm NAME TEXT       a private message in the current room
  /file PATH          a file to the current room
  /dmfile NAME PATH   a file to one member
  /join ROOM          join another room (it becomes current)
  /switch ROOM        make another room current
  /leave              leave the current room
  /who                members of the current room
  /list               listed rooms and member counts
  /unsend SEQ         take back a message of yours
  /kick NAME          remove a member (admins)
  /delete             delete the current room (admins)
  /help, /quit";

struct Rooms {
    open: BTreeMap<String, RoomClient>,
    current: Option<String>,
}

impl Rooms {
    fn current(&self) -> Result<&RoomClient, String> {
        self.current
            .as_ref()
            .and_then(|r| self.open.get(r))
            .ok_or_else(|| "you are in no room; /join one".to_owned())
    }
}

async fn interactive(
    cli: &Cli,
    api: &Api,
    names: &[String],
    name: &str,
    password: Option<String>,
    downloads: &Path,
) -> Result<u8, Fail> {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut rooms = Rooms {
        open: BTreeMap::new(),
        current: None,
    };
    for room in names {
        let client = RoomClient::join(
            api,
            room,
            &room_key(cli, room)?,
            name,
            password.as_deref(),
            tx.clone(),
        )
        .await?;
        println!(
            "[{room}] joined as {}; room key fingerprint {}",
            client.name(),
            client.fingerprint()
        );
        rooms.current = Some(room.clone());
        rooms.open.insert(room.clone(), client);
    }
    println!(
        "current room: {}. /help lists the commands.",
        rooms.current.as_deref().unwrap_or("-")
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut last_code = 0;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                match command(cli, api, &mut rooms, &line, name, password.as_deref(), &tx).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(message) => println!("! {}", terminal::line(&message)),
                }
            }
            Some(event) = events.recv() => {
                if let Some(code) = print_event(&event, false, downloads) {
                    if let Event::Ended { room, .. } = &event {
                        rooms.open.remove(room);
                        if rooms.current.as_ref() == Some(room) {
                            rooms.current = rooms.open.keys().next().cloned();
                        }
                    }
                    last_code = code;
                    if rooms.open.is_empty() {
                        return Ok(last_code);
                    }
                }
            }
        }
    }
    for client in rooms.open.values() {
        client.leave();
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(last_code)
}

fn split_two(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.trim_start();
    let (a, b) = rest.split_once(char::is_whitespace)?;
    Some((a, b.trim_start()))
}

/// Runs one line of input; `Ok(true)` quits.
async fn command(
    cli: &Cli,
    api: &Api,
    rooms: &mut Rooms,
    line: &str,
    name: &str,
    password: Option<&str>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<bool, String> {
    let err = |e: SendError| e.to_string();
    let Some(command) = line.strip_prefix('/') else {
        if !line.trim().is_empty() {
            rooms.current()?.send_text(None, line).await.map_err(err)?;
        }
        return Ok(false);
    };
    let (verb, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    match verb {
        "quit" | "exit" => return Ok(true),
        "help" => println!("{HELP}"),
        "send" => {
            let (room, text) = split_two(rest).ok_or("usage: /send ROOM TEXT")?;
            let client = rooms
                .open
                .get(room)
                .ok_or(format!("you are not in {room}"))?;
            client.send_text(None, text).await.map_err(err)?;
        }
        "dm" => {
            let (to, text) = split_two(rest).ok_or("usage: /dm NAME TEXT")?;
            rooms
                .current()?
                .send_text(Some(to), text)
                .await
                .map_err(err)?;
        }
        "file" | "dmfile" => {
            let (to, path) = if verb == "dmfile" {
                let (to, path) = split_two(rest).ok_or("usage: /dmfile NAME PATH")?;
                (Some(to), path)
            } else {
                (None, rest.trim())
            };
            let data = tokio::fs::read(path)
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let file_name = Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file");
            let mime = mime_guess::from_path(path)
                .first_or_octet_stream()
                .to_string();
            let seqs = rooms
                .current()?
                .send_file(to, file_name, &mime, &data)
                .await
                .map_err(err)?;
            println!(
                "* sent {file_name} ({} bytes in {} chunks)",
                data.len(),
                seqs.len()
            );
        }
        "join" => {
            let room = rest.trim();
            if room.is_empty() {
                return Err("usage: /join ROOM".into());
            }
            let key = room_key(cli, room).map_err(|Fail(_, m)| m)?;
            let client = RoomClient::join(api, room, &key, name, password, events.clone())
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "[{room}] joined as {}; room key fingerprint {}",
                client.name(),
                client.fingerprint()
            );
            rooms.open.insert(room.to_owned(), client);
            rooms.current = Some(room.to_owned());
        }
        "switch" => {
            let room = rest.trim();
            if !rooms.open.contains_key(room) {
                return Err(format!("you are not in {room}"));
            }
            rooms.current = Some(room.to_owned());
            println!("* current room: {room}");
        }
        "leave" => {
            let current = rooms.current()?;
            current.leave();
        }
        "who" => {
            let current = rooms.current()?;
            for m in current.members() {
                let fp = current
                    .dm_fingerprint(&m.name)
                    .map(|f| format!("  DM key {f}"))
                    .unwrap_or_default();
                let name = terminal::line(&m.name);
                println!("  {name}{}{fp}", if m.admin { " (admin)" } else { "" });
            }
        }
        "list" => {
            for room in api.list().await.map_err(|e| e.to_string())? {
                println!(
                    "  {:>5}  {}  {}",
                    room.members,
                    terminal::line(&room.room_id),
                    terminal::line(&room.title.unwrap_or_default())
                );
            }
        }
        "unsend" => {
            let seq = rest
                .trim()
                .trim_start_matches('#')
                .parse()
                .map_err(|_| "usage: /unsend SEQ")?;
            rooms.current()?.unsend(seq).map_err(err)?;
        }
        "kick" => rooms.current()?.kick(rest.trim()).map_err(err)?,
        "delete" => rooms.current()?.delete_room().map_err(err)?,
        other => return Err(format!("unknown command /{other}; /help lists them")),
    }
    Ok(false)
}
