//! RFC 6455 frames from a client, decoded with every limit checked on the header, before any of
//! the payload is buffered.
//!
//! actix-http's parser checks a frame's size only once the whole frame has arrived, so a header
//! declaring 2^40 bytes made the server buffer whatever followed (600 MiB in two seconds). This
//! decoder refuses an oversized frame, or a fragment that would take its message past the limit,
//! as soon as the length field has been read, and it never holds more than one frame's payload
//! plus the fragments of one message, both within the limit.

use actix_web::web::{Buf as _, Bytes, BytesMut};
use bytestring::ByteString;

/// What a complete frame (or, for text, a complete message) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A whole text message, fragments joined, checked to be UTF-8.
    Text(ByteString),
    /// A whole binary message, by its length: the protocol has no use for one, so its bytes are
    /// not kept.
    Binary(usize),
    Ping(Bytes),
    Pong,
    /// A close frame, with its code when it has one.
    Close(Option<u16>),
}

/// Why the stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The frame, or the message it belongs to, is over the size limit.
    TooLarge,
    /// A text message that is not UTF-8 (RFC 6455: close with 1007).
    InvalidUtf8,
    /// Anything else RFC 6455 forbids: reserved bits, unknown opcodes, unmasked frames, control
    /// frames that are long or fragmented, continuations out of place.
    Protocol(&'static str),
}

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const MASKED: u8 = 0x80;
/// RFC 6455 §5.5: a control frame's payload is at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Fragments one message may come in. Browsers and the usual libraries send a message whole;
/// without a bound, a stream of empty fragments would never make a message (nor cost one).
const MAX_FRAGMENTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// A fragmented message being put together.
struct Partial {
    kind: Kind,
    /// The text so far; a binary message's bytes are not kept.
    bytes: BytesMut,
    /// Its length so far, kept or not.
    len: usize,
    fragments: usize,
}

/// A frame's header, once enough bytes are there to read it.
struct Header {
    fin: bool,
    opcode: u8,
    /// `None` while its four bytes are still on the way.
    mask: Option<[u8; 4]>,
    /// Bytes the header takes.
    len: usize,
    payload: usize,
}

/// Decodes client frames out of a buffer the caller fills. Cancel-safe: all state lives here and
/// in the buffer, so a read interrupted between two calls loses nothing.
pub struct Decoder {
    max_message: usize,
    partial: Option<Partial>,
    /// Payload bytes still to be thrown away by [`Decoder::discard`].
    skipping: usize,
}

impl Decoder {
    /// `max_message` bounds every data frame and every message put together from fragments.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
            skipping: 0,
        }
    }

    /// Sets the bound for the messages to come.
    pub fn set_limit(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// Forgets a message being put together: a closing socket only skips frames.
    pub fn forget_message(&mut self) {
        self.partial = None;
    }

    /// Consumes `buf` keeping nothing, frame by frame, until a close frame: whether one came.
    /// For a socket that is closing: its frames no longer matter, only whether the client has
    /// closed its side, and a frame of any size costs no memory.
    pub fn discard(&mut self, buf: &mut BytesMut) -> Result<bool, Violation> {
        loop {
            let skipped = self.skipping.min(buf.len());
            buf.advance(skipped);
            self.skipping -= skipped;
            if self.skipping > 0 {
                return Ok(false);
            }
            let Some(Header {
                mask: Some(_),
                opcode,
                len,
                payload,
                ..
            }) = header(buf)?
            else {
                return Ok(false);
            };
            if opcode == 0x8 {
                return Ok(true);
            }
            buf.advance(len);
            self.skipping = payload;
        }
    }

    /// How many more bytes the frame at the head of `buf` needs, at least 1 when `decode` would
    /// wait; the caller reads that much (or more) before calling again.
    pub fn wanted(&self, buf: &[u8]) -> usize {
        match header(buf) {
            Ok(Some(h)) => (h.len + h.payload).saturating_sub(buf.len()).max(1),
            _ => 1,
        }
    }

    /// The next message out of `buf`, consuming its bytes; `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Violation> {
        loop {
            let Some(h) = header(buf)? else {
                return Ok(None);
            };
            self.check(&h)?;
            let Some(mask) = h.mask.filter(|_| buf.len() >= h.len + h.payload) else {
                return Ok(None);
            };
            buf.advance(h.len);
            let mut payload = buf.split_to(h.payload);
            unmask(&mut payload, mask);
            if let Some(message) = self.frame(&h, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Every rule that can be checked from the header alone.
    fn check(&self, h: &Header) -> Result<(), Violation> {
        let control = h.opcode & 0x8 != 0;
        if control {
            if !h.fin {
                return Err(Violation::Protocol("fragmented control frame"));
            }
            if h.payload > MAX_CONTROL_PAYLOAD {
                return Err(Violation::Protocol("control frame over 125 bytes"));
            }
            return Ok(());
        }
        let so_far = match (&self.partial, h.opcode) {
            (None, 0) => return Err(Violation::Protocol("continuation without a message")),
            (Some(_), 1 | 2) => {
                return Err(Violation::Protocol("new message inside a fragmented one"))
            }
            (Some(p), _) if p.fragments >= MAX_FRAGMENTS => {
                return Err(Violation::Protocol("too many fragments"))
            }
            (Some(p), _) => p.len,
            (None, _) => 0,
        };
        if h.payload > self.max_message.saturating_sub(so_far) {
            return Err(Violation::TooLarge);
        }
        Ok(())
    }

    /// Acts on one whole frame; returns a message when one is complete.
    fn frame(&mut self, h: &Header, payload: BytesMut) -> Result<Option<Message>, Violation> {
        let kind = match h.opcode {
            0x8 => {
                let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                return Ok(Some(Message::Close(code)));
            }
            // Copied: a pong that waits in the outbox must not hold the whole read buffer.
            0x9 => return Ok(Some(Message::Ping(Bytes::copy_from_slice(&payload)))),
            0xA => return Ok(Some(Message::Pong)),
            0x1 => Kind::Text,
            0x2 => Kind::Binary,
            _ => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(Violation::Protocol("continuation without a message"));
                };
                if partial.kind == Kind::Text {
                    partial.bytes.extend_from_slice(&payload);
                }
                partial.len += payload.len();
                partial.fragments += 1;
                if !h.fin {
                    return Ok(None);
                }
                let Some(Partial {
                    kind, bytes, len, ..
                }) = self.partial.take()
                else {
                    return Ok(None);
                };
                return complete(kind, bytes, len).map(Some);
            }
        };
        let len = payload.len();
        if h.fin {
            return complete(kind, payload, len).map(Some);
        }
        let bytes = if kind == Kind::Text {
            payload
        } else {
            BytesMut::new()
        };
        self.partial = Some(Partial {
            kind,
            bytes,
            len,
            fragments: 1,
        });
        Ok(None)
    }
}

fn complete(kind: Kind, bytes: BytesMut, len: usize) -> Result<Message, Violation> {
    match kind {
        Kind::Binary => Ok(Message::Binary(len)),
        Kind::Text => ByteString::try_from(bytes.freeze())
            .map(Message::Text)
            .map_err(|_| Violation::InvalidUtf8),
    }
}

/// Reads the header at the start of `buf`, or `None` until its length field is there: the opcode,
/// reserved bits, mask bit and length are judged as soon as their bytes are.
fn header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & RSV != 0 {
        return Err(Violation::Protocol("reserved bits set"));
    }
    let opcode = first & 0x0F;
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return Err(Violation::Protocol("unknown opcode"));
    }
    if second & MASKED == 0 {
        return Err(Violation::Protocol("unmasked client frame"));
    }
    let (payload, at) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if payload > i64::MAX as u64 {
        return Err(Violation::Protocol("length with its top bit set"));
    }
    // A length that does not fit in memory is over any limit; the size check says so.
    let payload = usize::try_from(payload).unwrap_or(usize::MAX);
    // The mask may still be on the way: the length is judged without it.
    let mask = buf
        .get(at..at + 4)
        .and_then(|m| <[u8; 4]>::try_from(m).ok());
    Ok(Some(Header {
        fin: first & FIN != 0,
        opcode,
        mask,
        len: at + 4,
        payload,
    }))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A client frame as a browser would send it.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { FIN } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(MASKED | n as u8),
            n if n <= 0xFFFF => {
                out.push(MASKED | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(MASKED | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Vec<Result<Message, Violation>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => return out,
                Err(v) => {
                    out.push(Err(v));
                    return out;
                }
            }
        }
    }

    #[test]
    fn a_masked_text_frame_decodes() {
        let bytes = frame(true, 1, b"hello", [1, 2, 3, 4]);
        let out = decode_all(&mut Decoder::new(1024), &bytes);
        assert_eq!(out, vec![Ok(Message::Text("hello".into()))]);
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        // Text, 2^40 bytes declared, and nothing else: no payload, not even the mask.
        let mut head = vec![FIN | 1, MASKED | 127];
        head.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut buf = BytesMut::from(&head[..]);
        let mut decoder = Decoder::new(256 * 1024);
        assert_eq!(decoder.decode(&mut buf), Err(Violation::TooLarge));
    }

    #[test]
    fn fragments_are_refused_once_their_total_passes_the_limit() {
        let mut decoder = Decoder::new(10);
        let mut bytes = frame(false, 1, b"123456", [9; 4]);
        // The second fragment's header alone says the message would be 12 bytes.
        bytes.extend_from_slice(&frame(true, 0, b"123456", [9; 4])[..6]);
        let out = decode_all(&mut decoder, &bytes);
        assert_eq!(out, vec![Err(Violation::TooLarge)]);
    }

    #[test]
    fn fragments_join_and_control_frames_come_between_them() {
        let mut bytes = frame(false, 1, "né".as_bytes(), [5; 4]);
        bytes.extend(frame(true, 9, b"p", [6; 4]));
        bytes.extend(frame(false, 0, b"-", [7; 4]));
        bytes.extend(frame(true, 0, b"x", [8; 4]));
        let out = decode_all(&mut Decoder::new(100), &bytes);
        assert_eq!(
            out,
            vec![
                Ok(Message::Ping(Bytes::from_static(b"p"))),
                Ok(Message::Text("né-x".into())),
            ]
        );
    }

    #[test]
    fn what_rfc_6455_forbids_is_a_violation() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![FIN | 0x40 | 1, MASKED], "reserved"),
            (vec![FIN | 3, MASKED], "opcode 3"),
            (vec![FIN | 0xB, MASKED], "opcode 11"),
            (vec![FIN | 1, 5, b'h'], "unmasked"),
            (frame(false, 9, b"", [0; 4]), "fragmented ping"),
            (frame(true, 9, &[0; 126], [0; 4]), "long ping"),
            (frame(true, 0, b"x", [0; 4]), "stray continuation"),
            (
                [frame(false, 1, b"a", [0; 4]), frame(true, 1, b"b", [0; 4])].concat(),
                "nested",
            ),
        ];
        for (bytes, what) in cases {
            let out = decode_all(&mut Decoder::new(1000), &bytes);
            assert!(
                matches!(out.last(), Some(Err(Violation::Protocol(_)))),
                "{what}: {out:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_reported_for_the_whole_message() {
        let mut bytes = frame(false, 1, &[0xE2, 0x82], [3; 4]);
        bytes.extend(frame(true, 0, &[0xAC], [3; 4]));
        let out = decode_all(&mut Decoder::new(100), &bytes);
        assert_eq!(out, vec![Ok(Message::Text("€".into()))]);
        let out = decode_all(&mut Decoder::new(100), &frame(true, 1, &[0xFF], [3; 4]));
        assert_eq!(out, vec![Err(Violation::InvalidUtf8)]);
    }

    #[test]
    fn discarding_skips_frames_of_any_size_until_a_close() {
        let mut head = vec![FIN | 2, MASKED | 127];
        head.extend_from_slice(&(1u64 << 40).to_be_bytes());
        head.extend_from_slice(&[0; 4]);
        head.extend_from_slice(&[1; 100]);
        let mut decoder = Decoder::new(10);
        let mut buf = BytesMut::from(&head[..]);
        assert_eq!(decoder.discard(&mut buf), Ok(false));
        assert!(buf.is_empty());
        decoder.skipping = 3;
        let mut buf = BytesMut::from(&[1, 2, 3][..]);
        buf.extend(frame(true, 9, b"ping", [1; 4]));
        buf.extend(frame(true, 1, b"text", [1; 4]));
        buf.extend(frame(true, 8, &[3, 232], [1; 4]));
        assert_eq!(decoder.discard(&mut buf), Ok(true));
    }

    #[test]
    fn binary_messages_are_recognised_but_not_kept() {
        let mut bytes = frame(false, 2, &[1; 50], [1; 4]);
        bytes.extend(frame(true, 0, &[2; 50], [1; 4]));
        let mut decoder = Decoder::new(100);
        assert_eq!(
            decode_all(&mut decoder, &bytes),
            vec![Ok(Message::Binary(100))]
        );
        assert!(decoder.partial.is_none());
        // Their total is bounded like text's, though nothing is kept.
        let mut bytes = frame(false, 2, &[1; 60], [1; 4]);
        bytes.extend(frame(false, 0, &[2; 60], [1; 4]));
        let out = decode_all(&mut Decoder::new(100), &bytes);
        assert_eq!(out, vec![Err(Violation::TooLarge)]);
    }

    #[test]
    fn a_message_comes_in_a_bounded_number_of_fragments() {
        let mut bytes = frame(false, 1, b"", [1; 4]);
        for _ in 0..MAX_FRAGMENTS {
            bytes.extend(frame(false, 0, b"", [1; 4]));
        }
        let out = decode_all(&mut Decoder::new(100), &bytes);
        assert_eq!(out, vec![Err(Violation::Protocol("too many fragments"))]);
    }

    /// One message of a valid stream, as the test builds it and as the decoder should give it.
    #[derive(Debug, Clone)]
    enum Sent {
        Text(String, Vec<usize>),
        Ping(Vec<u8>),
        Pong,
        Binary(usize),
    }

    fn sent() -> impl Strategy<Value = Sent> {
        prop_oneof![
            (".{0,300}", proptest::collection::vec(0usize..400, 0..4))
                .prop_map(|(s, cuts)| Sent::Text(s, cuts)),
            proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Sent::Ping),
            Just(Sent::Pong),
            (0usize..3000).prop_map(Sent::Binary),
        ]
    }

    /// The bytes of one message, text split into fragments at the given cuts.
    fn encode(sent: &Sent, mask: [u8; 4]) -> (Vec<u8>, Message) {
        match sent {
            Sent::Text(text, cuts) => {
                let bytes = text.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                points.sort_unstable();
                points.dedup();
                let mut pieces = Vec::new();
                let mut start = 0;
                for p in points {
                    pieces.push(&bytes[start..p]);
                    start = p;
                }
                pieces.push(&bytes[start..]);
                let last = pieces.len() - 1;
                let out = pieces
                    .iter()
                    .enumerate()
                    .flat_map(|(i, piece)| {
                        frame(i == last, if i == 0 { 1 } else { 0 }, piece, mask)
                    })
                    .collect();
                (out, Message::Text(text.as_str().into()))
            }
            Sent::Ping(p) => (
                frame(true, 9, p, mask),
                Message::Ping(Bytes::from(p.clone())),
            ),
            Sent::Pong => (frame(true, 10, b"bye", mask), Message::Pong),
            Sent::Binary(n) => (frame(true, 2, &vec![7; *n], mask), Message::Binary(*n)),
        }
    }

    proptest! {
        /// Any split of a valid stream into reads decodes to the same messages as the whole.
        #[test]
        fn any_split_of_a_valid_stream_decodes_the_same(
            messages in proptest::collection::vec((sent(), any::<[u8; 4]>()), 1..12),
            splits in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
        ) {
            let mut stream = Vec::new();
            let mut expected: Vec<Result<Message, String>> = Vec::new();
            for (m, mask) in &messages {
                let (bytes, message) = encode(m, *mask);
                stream.extend(bytes);
                expected.push(Ok(message));
            }
            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut decoder = Decoder::new(4096);
            let mut buf = BytesMut::new();
            let mut got: Vec<Result<Message, String>> = Vec::new();
            let mut start = 0;
            for cut in cuts {
                buf.extend_from_slice(&stream[start..cut]);
                start = cut;
                while let Some(m) = decoder.decode(&mut buf).map_err(|v| format!("{v:?}")).unwrap() {
                    got.push(Ok(m));
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, expected);
        }

        /// Whatever the bytes, the decoder answers without panicking and never holds more than
        /// its limit (plus one header) of what it was given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut decoder = Decoder::new(64);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decoder.decode(&mut buf) {}
            prop_assert!(decoder.partial.as_ref().is_none_or(|p| p.bytes.len() <= 64));
        }
    }
}
