//! The bot: the server's own voice. It greets a newcomer and tells the others who joined, left or
//! was removed; in a crowd, how many came and went in the last second.
//!
//! The hub words each notice here while it holds the room's lock and queues it at once, so a
//! notice is serialised once for the whole room, reaches every member in the order the room saw
//! the events, goes only to the members present when it happened (a later joiner has the news in
//! its `welcome`), and a newcomer's join notice comes before anything the newcomer says.

use bytestring::ByteString;

use crate::protocol::{now_ms, BotEvent, MemberView, ServerFrame, Wire};

fn members_phrase(count: usize) -> String {
    match count {
        1 => "1 member here".to_owned(),
        n => format!("{} members here", thousands(n)),
    }
}

/// 12345 as "12,345".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// To the newcomer only, right after its `welcome`.
pub fn greeting(name: &str, count: usize) -> ByteString {
    let text = format!(
        "Welcome, {name}. {}. Nothing said here is stored: messages vanish when you leave.",
        members_phrase(count)
    );
    notice(BotEvent::Welcome, None, None, count, &text)
}

/// To everyone else: who joined, with the member object their lists need.
pub fn joined(member: MemberView<'_>, count: usize) -> ByteString {
    let text = format!("{} joined. {}.", member.name, members_phrase(count));
    notice(BotEvent::Join, Some(member), None, count, &text)
}

pub fn left(name: &str, count: usize) -> ByteString {
    let text = format!("{name} left. {}.", members_phrase(count));
    notice(BotEvent::Leave, None, Some(name), count, &text)
}

pub fn kicked(name: &str, by: &str, count: usize) -> ByteString {
    let text = format!("{name} was removed by {by}. {}.", members_phrase(count));
    notice(BotEvent::Kick, None, Some(name), count, &text)
}

/// To everyone: an admin locked or unlocked the room.
pub fn locked(by: &str, locked: bool, count: usize) -> ByteString {
    let (event, text) = if locked {
        (
            BotEvent::Lock,
            format!("{by} locked the room: nobody new can join."),
        )
    } else {
        (
            BotEvent::Unlock,
            format!("{by} unlocked the room: people can join again."),
        )
    };
    notice(event, None, Some(by), count, &text)
}

/// To everyone: `member` is an admin now, made one by `by`.
pub fn made_admin(member: MemberView<'_>, by: &str, count: usize) -> ByteString {
    let text = format!("{} is now an admin (made one by {by}).", member.name);
    notice(BotEvent::Admin, Some(member), Some(by), count, &text)
}

/// To everyone in a crowd, once a second while people come and go.
pub fn summary(joined: usize, left: usize, count: usize) -> ByteString {
    let what = match (joined, left) {
        (0, left) => format!("{} left", thousands(left)),
        (joined, 0) => format!("{} joined", thousands(joined)),
        (joined, left) => format!("{} joined, {} left", thousands(joined), thousands(left)),
    };
    let text = format!("{what}. {}.", members_phrase(count));
    ServerFrame::Bot {
        event: BotEvent::Summary,
        member: None,
        name: None,
        joined: Some(joined),
        left: Some(left),
        members: count,
        text: text.into(),
        ts: now_ms(),
    }
    .wire()
}

fn notice(
    event: BotEvent,
    member: Option<MemberView<'_>>,
    name: Option<&str>,
    members: usize,
    text: &str,
) -> ByteString {
    ServerFrame::Bot {
        event,
        member,
        name: name.map(Into::into),
        joined: None,
        left: None,
        members,
        text: text.into(),
        ts: now_ms(),
    }
    .wire()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_carry_the_event_the_count_and_the_words() {
        let ada = MemberView {
            name: "ada".into(),
            admin: false,
            pubkey: None,
        };
        let frame: serde_json::Value = serde_json::from_str(&joined(ada, 2)).unwrap();
        assert_eq!(frame["type"], "bot");
        assert_eq!(frame["event"], "join");
        assert_eq!(frame["member"]["name"], "ada");
        assert_eq!(frame["members"], 2);
        assert_eq!(frame["text"], "ada joined. 2 members here.");
        let frame: serde_json::Value = serde_json::from_str(&kicked("bo", "ada", 1)).unwrap();
        assert_eq!(frame["event"], "kick");
        assert_eq!(frame["name"], "bo");
        assert_eq!(frame["text"], "bo was removed by ada. 1 member here.");
        let frame: serde_json::Value = serde_json::from_str(&greeting("bo", 1)).unwrap();
        assert_eq!(frame["event"], "welcome");
        assert!(frame.get("member").is_none() && frame.get("name").is_none());
        assert!(frame.get("joined").is_none() && frame.get("left").is_none());
    }

    #[test]
    fn a_summary_counts_who_came_and_went() {
        let frame: serde_json::Value = serde_json::from_str(&summary(1200, 3, 10_000)).unwrap();
        assert_eq!(frame["event"], "summary");
        assert_eq!(
            (frame["joined"].as_u64(), frame["left"].as_u64()),
            (Some(1200), Some(3))
        );
        assert_eq!(frame["members"], 10_000);
        assert_eq!(frame["text"], "1,200 joined, 3 left. 10,000 members here.");
        let frame: serde_json::Value = serde_json::from_str(&summary(0, 2, 999)).unwrap();
        assert_eq!(frame["text"], "2 left. 999 members here.");
        let frame: serde_json::Value = serde_json::from_str(&summary(5, 0, 1_000_000)).unwrap();
        assert_eq!(frame["text"], "5 joined. 1,000,000 members here.");
    }
}
