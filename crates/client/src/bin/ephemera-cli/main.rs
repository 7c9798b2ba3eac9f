//! `ephemera-cli`: rooms, groups and direct messages from a terminal, end-to-end encrypted like
//! the web client. Secrets come from a prompt, a file or the environment, never from argv.
//!
//! - `main`: the commands, and the exit codes, which come from the contract's error table.
//! - `output`: how events print, for people or as JSON lines.
//! - `slash`: the interactive `join`, whose `/commands` parse with clap.

mod output;
mod slash;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use ephemera_client::{
    crypto, terminal, Api, ApiError, Ended, JoinError, RoomChoices, RoomClient, SendError,
};
use ephemera_protocol::{domain::RoomId, ErrorCode};
use tokio::sync::mpsc;

/// Exit codes, one per way a visit can end (documented in the README).
mod exit {
    use ephemera_protocol::ErrorCode;

    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const KICKED: u8 = 6;
    pub const DELETED: u8 = 7;
    pub const UNREACHABLE: u8 = 9;
    pub const REFUSED: u8 = 10;

    /// The exit code of a refusal, from its error code; codes this build does not know are
    /// refusals all the same.
    pub fn for_code(code: Option<ErrorCode>) -> u8 {
        match code {
            Some(ErrorCode::InvalidCredentials) => 3,
            Some(ErrorCode::RoomNotFound) => 4,
            Some(ErrorCode::NameTaken) => 5,
            Some(ErrorCode::RateLimited) => 8,
            _ => REFUSED,
        }
    }
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
        /// How the room ends: 1h, 1d, 7d or 30d after its creation, or `empty` (when its last
        /// member has left). Default: 30 days after the last join.
        #[arg(long, value_parser = ["1h", "1d", "7d", "30d", "empty"])]
        lifetime: Option<String>,
        /// At most this many members (2 or more).
        #[arg(long, value_parser = clap::value_parser!(u32).range(2..))]
        max_members: Option<u32>,
        /// Members may not take back what they said.
        #[arg(long)]
        no_unsend: bool,
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
    /// Send one message to one room or several (`send ROOM… TEXT`: the last argument is the
    /// text), and exit. With several rooms, give their keys in a --key-file of `ROOM KEY` lines.
    Send {
        #[arg(required = true, num_args = 1.., value_name = "ROOM… TEXT")]
        args: Vec<String>,
        #[arg(long)]
        name: String,
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
        let code = match &e {
            ApiError::BadUrl(_) => exit::USAGE,
            ApiError::Unreachable(_) => exit::UNREACHABLE,
            ApiError::Refused { code, .. } => exit::for_code(ErrorCode::parse(code)),
        };
        Fail(code, e.to_string())
    }
}

impl From<JoinError> for Fail {
    fn from(e: JoinError) -> Self {
        match &e {
            JoinError::Connect(_) => Fail(exit::UNREACHABLE, e.to_string()),
            JoinError::Refused { .. } => Fail(exit::for_code(e.error_code()), e.to_string()),
        }
    }
}

impl From<SendError> for Fail {
    fn from(e: SendError) -> Self {
        Fail(exit::FAILURE, e.to_string())
    }
}

/// The exit code a room's end gives.
fn ended(reason: &Ended) -> u8 {
    match reason {
        Ended::Kicked { .. } => exit::KICKED,
        Ended::Deleted | Ended::Expired => exit::DELETED,
        Ended::Left => 0,
        Ended::Closed { .. } => exit::for_code(reason.error_code()),
    }
}

/// A room's key: from `--key-file` (a line `ROOM KEY` for that room, or else a file of one
/// line, the key of every room), `EPHEMERA_ROOM_KEY`, or a prompt.
pub(crate) fn room_key(cli: &Cli, room: &str) -> Result<String, Fail> {
    if let Some(path) = &cli.key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Fail(exit::FAILURE, format!("{}: {e}", path.display())))?;
        return key_in(&text, room).ok_or_else(|| {
            Fail(
                exit::FAILURE,
                format!("{}: no line for room {room}", path.display()),
            )
        });
    }
    if let Ok(key) = std::env::var("EPHEMERA_ROOM_KEY") {
        return Ok(key);
    }
    rpassword::prompt_password(format!("Room key for {room}: "))
        .map_err(|e| Fail(exit::FAILURE, format!("cannot read the key: {e}")))
}

/// Joins `room` as `name`, says `text` and leaves; the message's `seq`.
async fn send_one(cli: &Cli, api: &Api, room: &str, name: &str, text: &str) -> Result<u64, Fail> {
    let (tx, _rx) = mpsc::unbounded_channel();
    let client = RoomClient::join(api, room, &room_key(cli, room)?, name, None, tx).await?;
    let seq = client.send_text(None, text).await?;
    client.leave_and_wait(Duration::from_secs(2)).await;
    Ok(seq)
}

/// The key for `room` in a key file's text.
fn key_in(text: &str, room: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let listed = lines.iter().find_map(|line| {
        let (id, key) = line.split_once(char::is_whitespace)?;
        (id == room).then(|| key.trim().to_owned())
    });
    match (listed, lines.as_slice()) {
        (Some(key), _) => Some(key),
        (None, [only]) => Some(only.trim_end_matches('\r').to_owned()),
        (None, _) => None,
    }
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
    let api = Api::new(&cli.server)?;
    match &cli.command {
        Command::Create {
            room,
            title,
            listed,
            lifetime,
            max_members,
            no_unsend,
        } => {
            let choices = RoomChoices {
                lifetime: lifetime.clone(),
                max_members: *max_members,
                unsend: no_unsend.then_some(false),
            };
            let listing = (title.as_deref(), *listed);
            create(cli, &api, room.as_deref(), listing, &choices).await
        }
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
        Command::Send { args, name } => {
            let Some((text, rooms)) = args.split_last().filter(|(_, rooms)| !rooms.is_empty())
            else {
                return Err(Fail(
                    exit::USAGE,
                    "send ROOM… TEXT: at least one room, then the text (quoted)".into(),
                ));
            };
            // Every room, each in its own visit; a room that fails does not stop the others,
            // and the exit code is the first failure's.
            let mut first_failure = None;
            for room in rooms {
                match send_one(cli, &api, room, name, text).await {
                    Ok(seq) if rooms.len() == 1 => println!("sent #{seq}"),
                    Ok(seq) => println!("sent #{seq} to {room}"),
                    Err(Fail(code, reason)) => {
                        eprintln!("ephemera-cli: {room}: {}", terminal::line(&reason));
                        first_failure.get_or_insert(code);
                    }
                }
            }
            Ok(first_failure.unwrap_or(0))
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
                if let Some(code) = output::print_event(&event, *json, download_dir) {
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
            slash::interactive(cli, &api, rooms, name, password, download_dir).await
        }
    }
}

async fn create(
    cli: &Cli,
    api: &Api,
    room: Option<&str>,
    (title, listed): (Option<&str>, bool),
    choices: &RoomChoices,
) -> Result<u8, Fail> {
    let room_id = room.map_or_else(|| RoomId::random().as_ref().to_owned(), str::to_owned);
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
        .create_with(Some(&room_id), &auth, &password, listed, title, choices)
        .await?;
    println!(
        "Room {} created. Share this link (the key is after the #):",
        created.room_id
    );
    println!("{}", api.share_link(&created.room_id, &key));
    let options = &created.options;
    match options.lifetime {
        ephemera_protocol::RoomLifetime::Fixed => {
            println!("It ends at {} whoever is in it.", created.expires_at)
        }
        ephemera_protocol::RoomLifetime::Empty => {
            println!("It vanishes when its last member has left.")
        }
        ephemera_protocol::RoomLifetime::Rolling => {}
    }
    if options.max_members > 0 {
        println!("At most {} members.", options.max_members);
    }
    if !options.unsend {
        println!("Members cannot take back what they say.");
    }
    println!("Nothing said in the room is stored. The admin password cannot be recovered.");
    Ok(0)
}
