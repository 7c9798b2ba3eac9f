//! The transport over a real loopback TCP pair: what the reader makes of a client's bytes, and
//! what the writer puts on the wire, with no HTTP server around them.

use std::time::Duration;

use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{Inbound, Incoming, Outbox, PushError, QueueLimits};

/// A connected pair: the client's stream, and the server's halves.
async fn pair() -> (
    TcpStream,
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let (read, write) = server.into_split();
    (client, read, write)
}

/// A client frame, masked; `declared` may differ from the payload that follows.
fn frame(first: u8, declared: u64, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
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

async fn next(inbound: &mut Inbound) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), inbound.next())
        .await
        .expect("a message in time")
}

fn limits(bytes: usize, frames: usize) -> std::sync::Arc<QueueLimits> {
    std::sync::Arc::new(QueueLimits {
        bytes,
        frames,
        budget: 0,
        queued: prometheus::IntGauge::new("queued", "test").unwrap(),
        overflows: prometheus::IntCounter::new("overflows", "test").unwrap(),
    })
}

/// Reads the server's frames until its close; returns the texts and the close code.
async fn read_until_close(client: &mut TcpStream) -> (Vec<String>, Option<u16>) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let (mut texts, mut rest) = (Vec::new(), &bytes[..]);
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0F;
        let (len, head) = match rest[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 => panic!("no frame here is that long"),
            n => (usize::from(n), 2),
        };
        let payload = &rest[head..head + len];
        match opcode {
            0x1 => texts.push(String::from_utf8(payload.to_vec()).unwrap()),
            0x8 => return (texts, Some(u16::from_be_bytes([payload[0], payload[1]]))),
            _ => {}
        }
        rest = &rest[head + len..];
    }
    (texts, None)
}

/// A message in three fragments, split inside a character, with a ping between fragments and
/// the bytes trickling in: the ping comes out at once, the message whole.
#[tokio::test]
async fn fragments_with_a_ping_between_make_one_message() {
    let (mut client, read, _write) = pair().await;
    let mut inbound = Inbound::new(read, BytesMut::new(), 1024);
    let text = "héllo, fragments".as_bytes();
    let mut stream = frame(0x01, 2, &text[..2]);
    stream.extend(frame(0x89, 2, b"hi"));
    stream.extend(frame(0x00, 5, &text[2..7]));
    stream.extend(frame(0x80, (text.len() - 7) as u64, &text[7..]));
    for byte in stream {
        client.write_all(&[byte]).await.unwrap();
    }
    assert!(
        matches!(next(&mut inbound).await, Incoming::Ping(p) if p == Bytes::from_static(b"hi"))
    );
    assert!(matches!(next(&mut inbound).await, Incoming::Text(t) if &*t == "héllo, fragments"));
}

/// The size bound is checked on the header: a frame declaring more than the limit is refused
/// before any of its payload is sent, and so is the fragment that would take a message over.
#[tokio::test]
async fn a_frame_over_the_limit_is_refused_from_its_header() {
    let (mut client, read, _write) = pair().await;
    let mut inbound = Inbound::new(read, BytesMut::new(), 1024);
    client.write_all(&frame(0x81, 1 << 40, &[])).await.unwrap();
    assert!(matches!(next(&mut inbound).await, Incoming::TooLarge));

    let (mut client, read, _write) = pair().await;
    let mut inbound = Inbound::new(read, BytesMut::new(), 1024);
    let mut stream = frame(0x01, 600, &[b'a'; 600]);
    stream.extend(frame(0x80, 600, &[]));
    client.write_all(&stream).await.unwrap();
    assert!(matches!(next(&mut inbound).await, Incoming::TooLarge));
}

/// An idle socket holds no read buffer: it is given back once a message has been taken out,
/// and a large message's buffer does not stay behind.
#[tokio::test]
async fn an_idle_reader_holds_no_buffer() {
    let (mut client, read, _write) = pair().await;
    let mut inbound = Inbound::new(read, BytesMut::new(), 64 * 1024);
    assert_eq!(inbound.buffered(), 0);
    let big = vec![b'x'; 40 * 1024];
    client
        .write_all(&frame(0x81, big.len() as u64, &big))
        .await
        .unwrap();
    assert!(matches!(next(&mut inbound).await, Incoming::Text(t) if t.len() == big.len()));
    assert_eq!(inbound.buffered(), 0);
    client.write_all(&frame(0x8A, 0, &[])).await.unwrap();
    assert!(matches!(next(&mut inbound).await, Incoming::Pong));
    assert_eq!(inbound.buffered(), 0);
    drop(client);
    assert!(matches!(next(&mut inbound).await, Incoming::Gone));
}

/// The writer sends what was queued, in order, then the close; a member whose backlog passes
/// its limit is cut off with 1013, the backlog dropped and the close sent at once.
#[tokio::test]
async fn the_writer_sends_in_order_and_cuts_off_an_overflowing_member() {
    let (mut client, _read, write) = pair().await;
    let (outbox, drain) = Outbox::new(limits(1024, 16));
    let writer = tokio::spawn(drain.write_to(write));
    outbox.push(&ByteString::from("one")).unwrap();
    outbox.push(&ByteString::from("two")).unwrap();
    outbox.close(1000, "bye");
    assert_eq!(
        outbox.push(&ByteString::from("late")),
        Err(PushError::Closing)
    );
    let (texts, code) = read_until_close(&mut client).await;
    assert_eq!(
        (texts, code),
        (vec!["one".to_owned(), "two".to_owned()], Some(1000))
    );
    writer.await.unwrap();

    let (mut client, _read, write) = pair().await;
    let queue = limits(100, 1000);
    let (outbox, drain) = Outbox::new(queue.clone());
    // The writer starts once the backlog is there, as when a member stops reading.
    let chunk = ByteString::from("y".repeat(40));
    outbox.push(&chunk).unwrap();
    outbox.push(&chunk).unwrap();
    assert_eq!(outbox.push(&chunk), Err(PushError::Overflow));
    assert_eq!(queue.queued.get(), 0, "the backlog is counted out");
    let writer = tokio::spawn(drain.write_to(write));
    let (texts, code) = read_until_close(&mut client).await;
    assert_eq!((texts.len(), code), (0, Some(1013)));
    writer.await.unwrap();
    assert_eq!(queue.overflows.get(), 1);
}
