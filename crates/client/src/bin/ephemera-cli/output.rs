//! How events print: a line for people, with everything another member chose escaped, or one
//! JSON object per line (`--json`), as the events serialise.

use std::{io::Write as _, path::Path};

use ephemera_client::{download, terminal, Event};

/// Prints an event; returns an exit code when it ends the only room.
pub fn print_event(event: &Event, json: bool, downloads: &Path) -> Option<u8> {
    let saved = match event {
        Event::File { name, data, .. } => Some(download::save(downloads, name, data)),
        _ => None,
    };
    if json {
        // Every event as it serialises; a file says where it was saved (`null` if it could
        // not be).
        let mut line = serde_json::to_value(event).unwrap_or_default();
        if let Some(saved) = &saved {
            line["path"] = saved.as_ref().ok().map(|p| p.display().to_string()).into();
        }
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
                to,
                text,
                reply_to,
                ttl,
                ..
            } => {
                let private = to.as_ref().map(|to| format!(" → {} (private)", l(to)));
                let reply = reply_to.map(|r| format!(" ↩ #{r}"));
                let ttl = ttl.map(|t| format!(" (disappears {t} s after it was sent)"));
                println!(
                    "[{room} #{seq}] {}{}{}: {}{}",
                    l(from),
                    private.unwrap_or_default(),
                    reply.unwrap_or_default(),
                    terminal::message(text),
                    ttl.unwrap_or_default()
                )
            }
            Event::Reaction {
                room,
                from,
                target,
                emoji,
                on,
                ..
            } => {
                let verb = if *on { "reacted" } else { "took back" };
                println!("[{room}] * {} {verb} {} on #{target}", l(from), l(emoji))
            }
            Event::Edit {
                room,
                from,
                target,
                text,
                ..
            } => println!(
                "[{room} #{target}] {} edited: {}",
                l(from),
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
            Event::Ended { room, reason } => println!("[{room}] * {}", l(&reason.to_string())),
        }
    }
    let _ = std::io::stdout().flush();
    match event {
        Event::Ended { reason, .. } => Some(crate::ended(reason)),
        _ => None,
    }
}
