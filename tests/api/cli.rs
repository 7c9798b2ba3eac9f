//! The CLI client: through the library API its binary uses (four and more clients at once), and
//! as the real `ephemera-cli` process for the script commands and exit codes.

use std::time::Duration;

use ephemera_client::{crypto, Api, Ended, Event, RoomClient};
use serde_json::json;
use tokio::sync::mpsc;

use crate::helpers::*;

const KEY: &str = "a shared room key";

/// How long a test waits for the CLI process: a debug build derives the room key (600,000
/// PBKDF2 iterations) in seconds, more on a busy machine.
const CLI_WAIT: Duration = Duration::from_secs(60);

/// A room made the way the CLI makes one: the proof derived from a real room key.
async fn keyed_room(app: &TestApp, listed: bool) -> String {
    // Never starts with '-', which the CLI's command line would take for a flag.
    let room_id = ephemera::domain::RoomId::random().as_ref().to_owned();
    let (id, key) = (room_id.clone(), KEY.to_owned());
    let auth =
        tokio::task::spawn_blocking(move || crypto::RoomSecrets::derive(&id, &key).auth_b64())
            .await
            .unwrap();
    Api::new(&app.base)
        .unwrap()
        .create(Some(&room_id), &auth, ADMIN_PASSWORD, listed, None)
        .await
        .unwrap();
    room_id
}

/// A line reader over a CLI's standard output.
type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// `ephemera-cli listen` in `room` as `name`, with `extra` arguments: the process (killed when
/// dropped) and the lines it prints.
fn listen(server: &str, room: &str, name: &str, extra: &[&str]) -> (tokio::process::Child, Lines) {
    let mut child = tokio::process::Command::new(cli_exe())
        .args(["--server", server, "listen", room, "--name", name])
        .args(extra)
        .env("EPHEMERA_ROOM_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    (child, lines)
}

struct Client {
    room: RoomClient,
    events: mpsc::UnboundedReceiver<Event>,
}

async fn client(app: &TestApp, room_id: &str, name: &str) -> Client {
    let (tx, events) = mpsc::unbounded_channel();
    let room = RoomClient::join(&Api::new(&app.base).unwrap(), room_id, KEY, name, None, tx)
        .await
        .unwrap();
    Client { room, events }
}

impl Client {
    /// The next event that `pick` accepts.
    async fn next<T>(&mut self, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("an event in time")
                .expect("the room is open");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    }

    async fn text(&mut self) -> (String, Option<String>, String, String) {
        self.next(|e| match e {
            Event::Message {
                room,
                from,
                to,
                text,
                ..
            } => Some((room, to, from, text)),
            _ => None,
        })
        .await
    }

    /// Asserts that no message or file arrives for a while.
    async fn quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            assert!(
                !matches!(event, Event::Message { .. } | Event::File { .. }),
                "{event:?}"
            );
        }
    }
}

#[tokio::test]
async fn four_clients_share_messages_dms_and_files() {
    let app = spawn_app().await;
    let room = keyed_room(&app, false).await;
    let mut ann = client(&app, &room, "ann").await;
    let mut bo = client(&app, &room, "bo").await;
    let mut cy = client(&app, &room, "cy").await;
    let mut di = client(&app, &room, "di").await;
    assert_eq!(di.room.members().len(), 4);
    assert_eq!(ann.room.fingerprint(), di.room.fingerprint());

    ann.room.send_text(None, "hello, all of you").await.unwrap();
    for c in [&mut ann, &mut bo, &mut cy, &mut di] {
        assert_eq!(
            c.text().await,
            (room.clone(), None, "ann".into(), "hello, all of you".into())
        );
    }

    bo.room.send_text(Some("cy"), "just for cy").await.unwrap();
    for c in [&mut bo, &mut cy] {
        assert_eq!(
            c.text().await,
            (
                room.clone(),
                Some("cy".into()),
                "bo".into(),
                "just for cy".into()
            )
        );
    }
    ann.quiet().await;
    di.quiet().await;
    let code = bo.room.safety_code("cy").expect("cy is here with a DM key");
    assert_eq!(Some(code), cy.room.safety_code("bo"));
    assert_eq!(bo.room.safety_code("nobody"), None);

    // A file of three and a bit chunks, every byte value, byte for byte.
    let data: Vec<u8> = (0..(3 * 128 * 1024 + 777))
        .map(|i| (i * 31 % 256) as u8)
        .collect();
    let seqs = di
        .room
        .send_file(None, "../../blob.bin", "application/octet-stream", &data)
        .await
        .unwrap();
    assert_eq!(seqs.len(), 4);
    for c in [&mut ann, &mut bo, &mut cy] {
        let (name, got) = c
            .next(|e| match e {
                Event::File {
                    name, data, from, ..
                } if from == "di" => Some((name, data)),
                _ => None,
            })
            .await;
        assert_eq!(name, "../../blob.bin");
        assert!(got == data, "the file differs");
        let dir = tempfile::tempdir().unwrap();
        let saved = ephemera_client::download::save(dir.path(), &name, &got).unwrap();
        assert_eq!(saved, dir.path().join("blob.bin"));
    }

    // A private file.
    cy.room
        .send_file(Some("ann"), "note.txt", "text/plain", b"for ann")
        .await
        .unwrap();
    let got = ann
        .next(|e| match e {
            Event::File {
                to: Some(to), data, ..
            } if to == "ann" => Some(data),
            _ => None,
        })
        .await;
    assert_eq!(got, b"for ann");
    bo.quiet().await;

    // Unsend, by its author.
    let seq = ann.room.send_text(None, "oops").await.unwrap();
    ann.room.unsend(seq).unwrap();
    let (unsent, by) = bo
        .next(|e| match e {
            Event::Unsent { seq, by, .. } => Some((seq, by)),
            _ => None,
        })
        .await;
    assert_eq!((unsent, by.as_str()), (seq, "ann"));
}

#[tokio::test]
async fn the_lobby_shows_member_counts() {
    let app = spawn_app().await;
    let room = keyed_room(&app, true).await;
    let _a = client(&app, &room, "a").await;
    let _b = client(&app, &room, "b").await;
    let _c = client(&app, &room, "c").await;
    let listed = Api::new(&app.base).unwrap().list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].room_id.as_str(), listed[0].members),
        (room.as_str(), 3)
    );
}

#[tokio::test]
async fn one_client_in_two_rooms_hears_both() {
    let app = spawn_app().await;
    let first = keyed_room(&app, false).await;
    let second = keyed_room(&app, false).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let api = Api::new(&app.base).unwrap();
    let _in_first = RoomClient::join(&api, &first, KEY, "both", None, tx.clone())
        .await
        .unwrap();
    let _in_second = RoomClient::join(&api, &second, KEY, "both", None, tx)
        .await
        .unwrap();
    let a = client(&app, &first, "a").await;
    let b = client(&app, &second, "b").await;
    a.room.send_text(None, "in the first").await.unwrap();
    b.room.send_text(None, "in the second").await.unwrap();
    let mut heard = Vec::new();
    while heard.len() < 2 {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Message { room, text, .. } => heard.push((room, text)),
            _ => continue,
        }
    }
    heard.sort();
    let mut expected = vec![
        (first, "in the first".to_owned()),
        (second, "in the second".to_owned()),
    ];
    expected.sort();
    assert_eq!(heard, expected);
}

#[tokio::test]
async fn a_kick_and_a_delete_end_the_room_for_the_client() {
    let app = spawn_app().await;
    let room = keyed_room(&app, false).await;
    let (tx, mut admin_events) = mpsc::unbounded_channel();
    let admin = RoomClient::join(
        &Api::new(&app.base).unwrap(),
        &room,
        KEY,
        "admin",
        Some(ADMIN_PASSWORD),
        tx,
    )
    .await
    .unwrap();
    assert!(admin.is_admin());
    let mut kicked = client(&app, &room, "kicked").await;
    let mut stays = client(&app, &room, "stays").await;
    admin.kick("kicked").unwrap();
    let reason = kicked
        .next(|e| match e {
            Event::Ended { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, Ended::Kicked { by: "admin".into() });
    admin.delete_room().unwrap();
    let reason = stays
        .next(|e| match e {
            Event::Ended { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, Ended::Deleted);
    let reason = loop {
        if let Event::Ended { reason, .. } = tokio::time::timeout(WAIT, admin_events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            break reason;
        }
    };
    assert_eq!(reason, Ended::Deleted);
}

/// The binary, run without blocking the test's runtime (the server under test shares it).
fn cli() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(cli_exe());
    command
        .env_remove("EPHEMERA_ROOM_KEY")
        .env_remove("EPHEMERA_ADMIN_PASSWORD");
    command
}

/// A teacher's announcement to three rooms in one step: `send ROOM… TEXT`, each room's key from
/// a key file of `ROOM KEY` lines; ten members across the rooms hear it once each.
#[tokio::test]
async fn one_send_reaches_three_rooms_with_their_own_keys() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let mut rooms = Vec::new();
    for i in 0..3 {
        let id = format!("class-{i}");
        let key = format!("key of class {i}");
        let (derive_id, derive_key) = (id.clone(), key.clone());
        let auth = tokio::task::spawn_blocking(move || {
            crypto::RoomSecrets::derive(&derive_id, &derive_key).auth_b64()
        })
        .await
        .unwrap();
        Api::new(&app.base)
            .unwrap()
            .create(Some(&id), &auth, ADMIN_PASSWORD, false, None)
            .await
            .unwrap();
        lines.push_str(&format!("{id} {key}\n"));
        rooms.push((id, key));
    }
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, lines).unwrap();
    let mut students = Vec::new();
    for n in 0..10 {
        let (id, key) = &rooms[n % 3];
        let (tx, rx) = mpsc::unbounded_channel();
        let api = Api::new(&app.base).unwrap();
        let client = RoomClient::join(&api, id, key, &format!("student{n}"), None, tx)
            .await
            .unwrap();
        students.push((client, rx));
    }
    let sent = cli()
        .args([
            "--server", &app.base, "send", "class-0", "class-1", "class-2",
        ])
        .args(["--name", "teacher", "Exam moved to Friday"])
        .arg("--key-file")
        .arg(&key_file)
        .output()
        .await
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    let stdout = String::from_utf8(sent.stdout).unwrap();
    for i in 0..3 {
        assert!(stdout.contains(&format!("to class-{i}")), "{stdout}");
    }
    for (_client, rx) in &mut students {
        let heard = tokio::time::timeout(CLI_WAIT, async {
            loop {
                match rx.recv().await {
                    Some(Event::Message { text, from, .. }) if from == "teacher" => break text,
                    Some(_) => continue,
                    None => panic!("the room ended"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(heard, "Exam moved to Friday");
    }
}

/// `ephemera-cli create` sets the room's options, and says what they are.
#[tokio::test]
async fn the_binary_creates_a_room_with_options() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let created = cli()
        .args(["--server", &app.base, "create", "--room", "cli-options"])
        .args(["--lifetime", "empty", "--max-members", "2", "--no-unsend"])
        .arg("--key-file")
        .arg(&key_file)
        .env("EPHEMERA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).unwrap();
    for said in [
        "vanishes when its last member has left",
        "At most 2 members",
        "cannot take back",
    ] {
        assert!(stdout.contains(said), "{said:?} in {stdout}");
    }
    let auth =
        tokio::task::spawn_blocking(|| crypto::RoomSecrets::derive("cli-options", KEY).auth_b64())
            .await
            .unwrap();
    let room = Room {
        id: "cli-options".into(),
        auth,
    };
    let (_ws, welcome) = app.join(&room, "ann").await;
    assert_eq!(
        welcome["options"],
        json!({ "lifetime": "empty", "max_members": 2, "unsend": false })
    );
    let refused = cli()
        .args(["--server", &app.base, "create", "--max-members", "1"])
        .output()
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "a cap of 1 is refused before asking anything"
    );
}

#[tokio::test]
async fn the_binary_creates_sends_listens_and_exits_with_distinct_codes() {
    let app = spawn_app().await;
    let server = app.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();

    let created = cli()
        .args([
            "--server",
            &server,
            "create",
            "--room",
            "cli-room",
            "--listed",
            "--title",
            "From a terminal",
        ])
        .arg("--key-file")
        .arg(&key_file)
        .env("EPHEMERA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{server}/r/cli-room#key=")),
        "{stdout}"
    );

    let (mut listener, mut lines) = listen(&server, "cli-room", "listener", &["--json"]);
    let first = tokio::time::timeout(CLI_WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first).unwrap()["event"],
        "welcome"
    );

    let sent = cli()
        .args([
            "--server",
            &server,
            "send",
            "cli-room",
            "--name",
            "sender",
            "hello from argv",
        ])
        .env("EPHEMERA_ROOM_KEY", KEY)
        .output()
        .await
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    let message = loop {
        let line = tokio::time::timeout(CLI_WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if value["type"] == "message" {
            break value;
        }
    };
    assert_eq!(message["from"], "sender");
    assert_eq!(message["text"], "hello from argv");

    let listed = cli()
        .args(["--server", &server, "list"])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("cli-room") && listed.contains("From a terminal"),
        "{listed}"
    );

    let code = async |server: &str, args: &[&str], key: &str| {
        cli()
            .arg("--server")
            .arg(server)
            .args(args)
            .env("EPHEMERA_ROOM_KEY", key)
            .output()
            .await
            .unwrap()
    };
    let wrong = code(
        &server,
        &["send", "cli-room", "--name", "x", "hi"],
        "not the key",
    )
    .await;
    assert_eq!(wrong.status.code(), Some(3), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong room key"));
    let missing = code(&server, &["send", "no-such-room", "--name", "x", "hi"], KEY).await;
    assert_eq!(missing.status.code(), Some(4));
    let taken = code(
        &server,
        &["send", "cli-room", "--name", "LISTENER", "hi"],
        KEY,
    )
    .await;
    assert_eq!(taken.status.code(), Some(5));
    let unreachable = code(
        "http://127.0.0.1:1",
        &["send", "cli-room", "--name", "x", "hi"],
        KEY,
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(9));

    // A kick ends `listen` with its own code.
    let (tx, _events) = mpsc::unbounded_channel();
    let admin = RoomClient::join(
        &Api::new(&server).unwrap(),
        "cli-room",
        KEY,
        "admin",
        Some(ADMIN_PASSWORD),
        tx,
    )
    .await
    .unwrap();
    admin.kick("listener").unwrap();
    let status = tokio::time::timeout(CLI_WAIT, listener.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(6));

    let deleted = cli()
        .args(["--server", &server, "delete", "cli-room"])
        .env("EPHEMERA_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
}

#[tokio::test]
async fn interactive_mode_runs_slash_commands() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let room = keyed_room(&app, false).await;
    let other = keyed_room(&app, false).await;
    let mut peer = client(&app, &room, "peer").await;
    let mut far = client(&app, &other, "far").await;
    let downloads = tempfile::tempdir().unwrap();
    let upload = downloads.path().join("upload.txt");
    std::fs::write(&upload, "file body").unwrap();
    let mut child = tokio::process::Command::new(cli_exe())
        .args([
            "--server", &app.base, "join", &room, &other, "--name", "term",
        ])
        .arg("--download-dir")
        .arg(downloads.path().join("in"))
        .env("EPHEMERA_ROOM_KEY", KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let mut wait_for = async |needle: &str| loop {
        let line = tokio::time::timeout(CLI_WAIT, out.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if line.contains(needle) {
            return line;
        }
    };
    wait_for("/help").await;
    // The last room named is current.
    stdin
        .write_all(b"plain text to the current room\n")
        .await
        .unwrap();
    assert_eq!(far.text().await.3, "plain text to the current room");
    stdin
        .write_all(format!("/switch {room}\n/dm peer psst\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        peer.text().await,
        (
            room.clone(),
            Some("peer".into()),
            "term".into(),
            "psst".into()
        )
    );
    stdin
        .write_all(format!("/send {other} across rooms\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(far.text().await.3, "across rooms");
    stdin
        .write_all(format!("/file {}\n", upload.display()).as_bytes())
        .await
        .unwrap();
    let data = peer
        .next(|e| match e {
            Event::File { data, .. } => Some(data),
            _ => None,
        })
        .await;
    assert_eq!(data, b"file body");
    peer.room
        .send_file(None, "../evil.txt", "text/plain", b"incoming")
        .await
        .unwrap();
    let line = wait_for("evil.txt").await;
    assert!(line.contains("saved to"), "{line}");
    assert_eq!(
        std::fs::read(downloads.path().join("in").join("evil.txt")).unwrap(),
        b"incoming"
    );
    stdin.write_all(b"/who\n").await.unwrap();
    wait_for("peer").await;
    stdin.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(CLI_WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// The server restarts under a client: it reconnects by itself (its session token is stale, so
/// this is an ordinary join) and goes on chatting.
#[tokio::test]
async fn a_client_reconnects_after_the_server_comes_back() {
    let first = spawn_app().await;
    let room = keyed_room(&first, false).await;
    let port: u16 = first.base.rsplit(':').next().unwrap().parse().unwrap();
    let mut c = client(&first, &room, "stayer").await;
    let kept = first.stop_keeping_data().await;
    let data_dir = kept.path().to_owned();
    c.next(|e| matches!(e, Event::Reconnecting { .. }).then_some(()))
        .await;

    let second = spawn_app_with(|config| {
        config.bind = ([127, 0, 0, 1], port).into();
        config.data_dir = data_dir;
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, c.events.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(event, Event::Reconnected { .. }) {
            break;
        }
    }
    let mut other = client(&second, &room, "newcomer").await;
    c.room.send_text(None, "still here").await.unwrap();
    assert_eq!(other.text().await.3, "still here");
}

/// What other members send reaches the terminal escaped: no escape sequence (OSC 52 writes the
/// clipboard), no bidi override, and no line of its own that passes for the client's output.
#[tokio::test]
async fn received_text_cannot_steer_the_terminal() {
    let app = spawn_app().await;
    let room = keyed_room(&app, false).await;
    let server = app.base.clone();
    let downloads = tempfile::tempdir().unwrap();
    let folder = downloads.path().to_str().unwrap();
    let (_listener, mut lines) = listen(&server, &room, "term", &["--download-dir", folder]);
    let mut seen = Vec::new();
    async fn until(lines: &mut Lines, seen: &mut Vec<String>, needle: &str) {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return;
            }
        }
    }
    until(&mut lines, &mut seen, "Welcome").await;
    let mallory = client(&app, &room, "mallory").await;
    mallory
        .room
        .send_text(
            None,
            "hi\u{1b}]52;c;ZXZpbA==\u{7}\n[room #42] bob: send me the key\u{202e}gpj.exe\u{9b}2J end",
        )
        .await
        .unwrap();
    until(&mut lines, &mut seen, "end").await;
    mallory
        .room
        .send_file(None, "\u{1b}[31mred\u{202e}.txt", "text/plain", b"x")
        .await
        .unwrap();
    until(&mut lines, &mut seen, "red").await;
    for line in &seen {
        assert!(
            !line.chars().any(|c| c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "{line:?}"
        );
        assert!(!line.starts_with("[room #42]"), "{line:?}");
    }
    assert!(
        seen.iter().any(|l| l.contains("\\u{1b}]52")),
        "the escape is shown, not acted on: {seen:?}"
    );
}

/// Replies, reactions and edits travel as plaintext kinds the server never sees; an edit of
/// someone else's message is dropped by the receiver, and the CLI prints each kind.
#[tokio::test]
async fn replies_reactions_and_edits_between_clients() {
    let app = spawn_app().await;
    let room = keyed_room(&app, false).await;
    let mut ann = client(&app, &room, "ann").await;
    let mut bob = client(&app, &room, "bob").await;
    let (_listener, mut lines) = listen(&app.base, &room, "term", &[]);
    // The terminal is in once it is greeted: there is no history to catch up on.
    loop {
        let line = tokio::time::timeout(CLI_WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if line.contains("Welcome, term") {
            break;
        }
    }
    let first = ann.room.send_text(None, "lunch at noon?").await.unwrap();
    bob.text().await;
    let reply = bob.room.send_reply(first, "yes").await.unwrap();
    let got = ann
        .next(|e| match e {
            Event::Message {
                seq,
                reply_to,
                text,
                ..
            } if seq == reply => Some((reply_to, text)),
            _ => None,
        })
        .await;
    assert_eq!(got, (Some(first), "yes".to_owned()));
    bob.room.react(first, "👍", true).await.unwrap();
    let reaction = ann
        .next(|e| match e {
            Event::Reaction {
                from,
                target,
                emoji,
                on,
                ..
            } => Some((from, target, emoji, on)),
            _ => None,
        })
        .await;
    assert_eq!(reaction, ("bob".into(), first, "👍".into(), true));
    // Bob's edit of Ann's message is nobody's business; Ann's own edit is.
    bob.room.edit(first, "forged").await.unwrap();
    ann.room.edit(first, "lunch at one?").await.unwrap();
    let edit = bob
        .next(|e| match e {
            Event::Edit {
                from, target, text, ..
            } => Some((from, target, text)),
            _ => None,
        })
        .await;
    assert_eq!(edit, ("ann".into(), first, "lunch at one?".into()));
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("edited")) {
        let line = tokio::time::timeout(CLI_WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(line);
    }
    let all = seen.join("\n");
    assert!(all.contains(&format!("bob ↩ #{first}: yes")), "{all}");
    assert!(
        all.contains(&format!("bob reacted 👍 on #{first}")),
        "{all}"
    );
    assert!(
        all.contains(&format!("[{room} #{first}] ann edited: lunch at one?")),
        "{all}"
    );
    assert!(!all.contains("forged"), "{all}");

    // A reply to a direct message, and an edit of one, stay in that conversation.
    let private = ann.room.send_text(Some("bob"), "just us").await.unwrap();
    bob.text().await;
    let answer = bob.room.send_reply(private, "just us, yes").await.unwrap();
    let (to, reply_to) = ann
        .next(|e| match e {
            Event::Message {
                seq, to, reply_to, ..
            } if seq == answer => Some((to, reply_to)),
            _ => None,
        })
        .await;
    assert_eq!((to.as_deref(), reply_to), (Some("ann"), Some(private)));
    ann.room.edit(private, "still just us").await.unwrap();
    let edit = bob
        .next(|e| match e {
            Event::Edit { to, target, .. } if target == private => Some(to),
            _ => None,
        })
        .await;
    assert_eq!(edit.as_deref(), Some("bob"));
    assert_eq!(
        ann.room.edit(999_999, "nothing").await,
        Err(ephemera_client::SendError::NoSuchMessage)
    );

    // Bob leaves; whoever joins as "bob" next cannot edit what the first Bob said, even with
    // a client that sends the edit by hand.
    bob.room.leave_and_wait(WAIT).await;
    ann.next(|e| matches!(e, Event::Bot { ref event, .. } if event == "leave").then_some(()))
        .await;
    let secrets = {
        let room = room.clone();
        tokio::task::spawn_blocking(move || crypto::RoomSecrets::derive(&room, KEY))
            .await
            .unwrap()
    };
    let mut impostor = app.connect(&room).await;
    impostor
        .send_json(&json!({ "type": "join", "name": "bob", "auth": secrets.auth_b64() }))
        .await;
    impostor.recv_type("welcome").await;
    // What bob's client would seal, sent as is.
    let say = |kind: &str, target: Option<u64>, text: &str| {
        let plain = ephemera_client::room::Plain {
            from: "bob".into(),
            kind: kind.into(),
            target,
            text: Some(text.into()),
            ..Default::default()
        };
        let body = crypto::seal(&secrets.enc, &room, &plain, crypto::random_iv());
        json!({ "type": "send", "txn": kind, "body": body })
    };
    impostor
        .send_json(&say("edit", Some(reply), "forged later"))
        .await;
    impostor.send_json(&say("text", None, "barrier")).await;
    let forged = ann.next(|e| match e {
        Event::Edit { target, .. } if target == reply => Some(true),
        Event::Message { text, .. } if text == "barrier" => Some(false),
        _ => None,
    });
    assert!(!forged.await, "an edit by the name's next holder was shown");
}

/// In a crowd (past 2 members here) a client holds no live list: it counts from the bot, looks
/// up a member it writes to, and opens a DM from someone it never saw with the key the DM brings.
#[tokio::test]
async fn in_a_crowd_clients_count_look_up_and_open_dms_from_strangers() {
    let app = spawn_app_with(|c| c.crowd_size = 2).await;
    let room = keyed_room(&app, false).await;
    let mut ann = client(&app, &room, "ann").await;
    let mut bo = client(&app, &room, "bo").await;
    let mut zed = client(&app, &room, "zed").await;
    // Zed's welcome holds the first page (ann, bo) and the count.
    assert_eq!(zed.room.member_count(), 3);
    assert_eq!(zed.room.members().len(), 2);
    // Ann hears zed only in the summary: the count, not the name.
    ann.next(|e| match e {
        Event::Bot { event, text, .. } if event == "summary" => Some(text),
        _ => None,
    })
    .await;
    assert_eq!(ann.room.member_count(), 3);
    assert!(ann.room.members().iter().all(|m| m.name != "zed"));

    // Ann writes to zed: the library looks zed up first.
    ann.room.send_text(Some("zed"), "found you").await.unwrap();
    assert_eq!(
        zed.text().await,
        (
            room.clone(),
            Some("zed".into()),
            "ann".into(),
            "found you".into()
        )
    );
    // Zed writes to bo, who never had zed on a page: the DM brings zed's key.
    zed.room.send_text(Some("bo"), "and you").await.unwrap();
    assert_eq!(
        bo.text().await,
        (
            room.clone(),
            Some("bo".into()),
            "zed".into(),
            "and you".into()
        )
    );
    // Someone who is not there is still no one, and a name is found as the room spells it.
    assert!(ann.room.send_text(Some("nobody"), "?").await.is_err());
    bo.room.send_text(Some("ZED"), "loud").await.unwrap();
    let to = zed
        .next(|e| match e {
            Event::Message { to, text, .. } if text == "loud" => Some(to),
            _ => None,
        })
        .await;
    assert_eq!(to.as_deref(), Some("zed"));

    // Zed leaves: the room is small again, and its leave was only counted, so the clients ask
    // for the whole list again.
    zed.room.leave_and_wait(WAIT).await;
    for c in [&ann, &bo] {
        let deadline = std::time::Instant::now() + WAIT;
        while c.room.members().iter().any(|m| m.name == "zed") {
            assert!(std::time::Instant::now() < deadline, "zed is still listed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.room.member_count(), 2);
    }
}
