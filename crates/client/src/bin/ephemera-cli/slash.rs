//! The interactive `join`: plain lines go to the current room, `/commands` parse with clap.
//!
//! A command's last argument takes the rest of the line as typed (spaces and leading dashes
//! included), so that `/send ROOM TEXT` sends the text exactly and `/file PATH` takes a path
//! with spaces.

use std::{collections::BTreeMap, path::Path, path::PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ephemera_client::{terminal, Api, Event, RoomClient, SendError};
use tokio::{io::AsyncBufReadExt, sync::mpsc};

use crate::{output::print_event, room_key, Cli, Fail};

#[derive(Parser)]
#[command(
    name = "",
    no_binary_name = true,
    disable_help_flag = true,
    disable_help_subcommand = true,
    help_template = "Plain text goes to the current room. Commands:\n{subcommands}"
)]
struct Line {
    #[command(subcommand)]
    command: Slash,
}

#[derive(Debug, Subcommand)]
enum Slash {
    /// A message to another room you are in.
    Send {
        room: String,
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// A private message in the current room.
    Dm {
        name: String,
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// Answer a message of the current room (`/reply 4 TEXT`).
    Reply {
        #[arg(value_parser = parse_seq)]
        seq: u64,
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// React to a message of the current room (`/react 4 👍`).
    React {
        #[arg(value_parser = parse_seq)]
        seq: u64,
        emoji: String,
    },
    /// Take back a reaction.
    Unreact {
        #[arg(value_parser = parse_seq)]
        seq: u64,
        emoji: String,
    },
    /// New text for a message of yours (`/edit 4 TEXT`).
    Edit {
        #[arg(value_parser = parse_seq)]
        seq: u64,
        #[arg(allow_hyphen_values = true)]
        text: String,
    },
    /// A file to the current room.
    File {
        #[arg(allow_hyphen_values = true)]
        path: PathBuf,
    },
    /// A file to one member.
    Dmfile {
        name: String,
        #[arg(allow_hyphen_values = true)]
        path: PathBuf,
    },
    /// Join another room (it becomes current).
    Join { room: String },
    /// Make another room current.
    Switch { room: String },
    /// Leave the current room.
    Leave,
    /// Members of the current room.
    Who,
    /// The safety code of your private messages with a member, to compare out of band.
    Verify { name: String },
    /// Listed rooms and member counts.
    List,
    /// Take back a message of yours (`/unsend 4` or `/unsend #4`).
    Unsend {
        #[arg(value_parser = parse_seq)]
        seq: u64,
    },
    /// Remove a member (admins).
    Kick { name: String },
    /// Stop new members from joining (admins).
    Lock,
    /// Let new members join again (admins).
    Unlock,
    /// Make a member an admin for as long as it stays (admins).
    Admin { name: String },
    /// Delete the current room (admins).
    Delete,
    /// This list.
    Help,
    /// Leave every room and quit.
    #[command(alias = "exit")]
    Quit,
}

fn parse_seq(text: &str) -> Result<u64, String> {
    text.trim_start_matches('#')
        .parse()
        .map_err(|_| "a message number, as in /unsend 4".to_owned())
}

fn command() -> clap::Command {
    Line::command().mut_subcommands(|sub| sub.disable_help_flag(true))
}

/// Parses what follows the `/`: the verb, then as many words as the command has arguments,
/// the last one taking the rest of the line.
fn parse(text: &str) -> Result<Slash, String> {
    let command = command();
    let text = text.trim();
    let (verb, mut rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let positionals = command
        .find_subcommand(verb)
        .map_or(0, |sub| sub.get_positionals().count());
    let mut words = vec![verb.to_owned()];
    for i in 0..positionals {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let word = if i + 1 == positionals {
            std::mem::take(&mut rest)
        } else {
            let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            rest = tail;
            word
        };
        words.push(word.trim_end().to_owned());
    }
    if !rest.trim().is_empty() {
        words.push(rest.trim().to_owned());
    }
    let matches = command
        .try_get_matches_from(words)
        .map_err(|e| e.render().to_string().trim_end().to_owned())?;
    Line::from_arg_matches(&matches)
        .map(|line| line.command)
        .map_err(|e| e.to_string())
}

fn help() -> String {
    command().render_help().to_string()
}

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

pub async fn interactive(
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
    let session = Session {
        cli,
        api,
        name,
        password: password.as_deref(),
        events: &tx,
    };
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                match session.run(&mut rooms, &line).await {
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
    let leaving = std::mem::take(&mut rooms.open)
        .into_values()
        .map(|client| client.leave_and_wait(std::time::Duration::from_secs(2)));
    futures_util::future::join_all(leaving).await;
    Ok(last_code)
}

/// What a command needs besides the rooms.
struct Session<'a> {
    cli: &'a Cli,
    api: &'a Api,
    name: &'a str,
    password: Option<&'a str>,
    events: &'a mpsc::UnboundedSender<Event>,
}

impl Session<'_> {
    /// Runs one line of input; `Ok(true)` quits.
    async fn run(&self, rooms: &mut Rooms, line: &str) -> Result<bool, String> {
        let err = |e: SendError| e.to_string();
        let Some(command) = line.strip_prefix('/') else {
            if !line.trim().is_empty() {
                rooms.current()?.send_text(None, line).await.map_err(err)?;
            }
            return Ok(false);
        };
        match parse(command)? {
            Slash::Quit => return Ok(true),
            Slash::Help => println!("{}", help()),
            Slash::Send { room, text } => {
                let client = rooms
                    .open
                    .get(&room)
                    .ok_or(format!("you are not in {room}"))?;
                client.send_text(None, &text).await.map_err(err)?;
            }
            Slash::Dm { name, text } => {
                rooms
                    .current()?
                    .send_text(Some(&name), &text)
                    .await
                    .map_err(err)?;
            }
            Slash::Reply { seq, text } => {
                rooms.current()?.send_reply(seq, &text).await.map_err(err)?;
            }
            Slash::React { seq, emoji } => {
                rooms
                    .current()?
                    .react(seq, &emoji, true)
                    .await
                    .map_err(err)?;
            }
            Slash::Unreact { seq, emoji } => {
                rooms
                    .current()?
                    .react(seq, &emoji, false)
                    .await
                    .map_err(err)?;
            }
            Slash::Edit { seq, text } => {
                rooms.current()?.edit(seq, &text).await.map_err(err)?;
            }
            Slash::File { path } => self.send_file(rooms, None, &path).await?,
            Slash::Dmfile { name, path } => self.send_file(rooms, Some(&name), &path).await?,
            Slash::Join { room } => {
                let key = room_key(self.cli, &room).map_err(|Fail(_, m)| m)?;
                let client = RoomClient::join(
                    self.api,
                    &room,
                    &key,
                    self.name,
                    self.password,
                    self.events.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
                println!(
                    "[{room}] joined as {}; room key fingerprint {}",
                    client.name(),
                    client.fingerprint()
                );
                rooms.open.insert(room.clone(), client);
                rooms.current = Some(room);
            }
            Slash::Switch { room } => {
                if !rooms.open.contains_key(&room) {
                    return Err(format!("you are not in {room}"));
                }
                println!("* current room: {room}");
                rooms.current = Some(room);
            }
            Slash::Leave => rooms.current()?.leave(),
            Slash::Who => {
                let current = rooms.current()?;
                let members = current.members();
                for m in &members {
                    let name = terminal::line(&m.name);
                    println!("  {name}{}", if m.admin { " (admin)" } else { "" });
                }
                let count = current.member_count();
                if count > members.len() {
                    println!(
                        "  … and others: {count} members in all (a crowd's list is not sent whole)"
                    );
                }
            }
            Slash::Verify { name } => {
                let code = rooms.current()?.safety_code(&name).ok_or_else(|| {
                    format!("{} is not here with a DM key", terminal::line(&name))
                })?;
                println!(
                    "* safety code with {}: {code}\n  read it to them by phone or in person: the same digits on both sides mean nobody stands between you",
                    terminal::line(&name)
                );
            }
            Slash::List => {
                for room in self.api.list().await.map_err(|e| e.to_string())? {
                    println!(
                        "  {:>5}  {}  {}",
                        room.members,
                        terminal::line(&room.room_id),
                        terminal::line(&room.title.unwrap_or_default())
                    );
                }
            }
            Slash::Unsend { seq } => rooms.current()?.unsend(seq).map_err(err)?,
            Slash::Kick { name } => rooms.current()?.kick(&name).map_err(err)?,
            Slash::Lock => rooms.current()?.set_locked(true).map_err(err)?,
            Slash::Unlock => rooms.current()?.set_locked(false).map_err(err)?,
            Slash::Admin { name } => rooms.current()?.make_admin(&name).map_err(err)?,
            Slash::Delete => rooms.current()?.delete_room().map_err(err)?,
        }
        Ok(false)
    }

    async fn send_file(&self, rooms: &Rooms, to: Option<&str>, path: &Path) -> Result<(), String> {
        let data = tokio::fs::read(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let mime = mime_guess::from_path(path)
            .first_or_octet_stream()
            .to_string();
        let seqs = rooms
            .current()?
            .send_file(to, file_name, &mime, &data)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "* sent {file_name} ({} bytes in {} chunks)",
            data.len(),
            seqs.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_argument_takes_the_rest_of_the_line_as_typed() {
        match parse("send  lobby   hello   -world  ").unwrap() {
            Slash::Send { room, text } => {
                assert_eq!((room.as_str(), text.as_str()), ("lobby", "hello   -world"))
            }
            _ => panic!(),
        }
        match parse("file my notes.pdf").unwrap() {
            Slash::File { path } => assert_eq!(path, PathBuf::from("my notes.pdf")),
            _ => panic!(),
        }
        assert!(matches!(
            parse("unsend #4").unwrap(),
            Slash::Unsend { seq: 4 }
        ));
        match parse("reply #4 sure -- why not").unwrap() {
            Slash::Reply { seq, text } => assert_eq!((seq, text.as_str()), (4, "sure -- why not")),
            _ => panic!(),
        }
        assert!(matches!(
            parse("react 4 👍").unwrap(),
            Slash::React { seq: 4, .. }
        ));
        assert!(matches!(parse("exit").unwrap(), Slash::Quit));
        assert!(matches!(parse("who").unwrap(), Slash::Who));
    }

    #[test]
    fn mistakes_are_told_with_the_usage() {
        assert!(parse("send lobby").unwrap_err().contains("Usage"));
        assert!(parse("unsend four").unwrap_err().contains("/unsend 4"));
        assert!(parse("nope").is_err());
        assert!(parse("who extra").is_err());
        assert!(help().contains("dmfile"));
    }
}
