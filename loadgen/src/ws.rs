//! A minimal WebSocket client (RFC 6455) for the load generator: the opening handshake,
//! masked client frames, and a reader that never zero-fills its buffer.
//!
//! Why not tokio-tungstenite: its reader zero-fills its whole read buffer before every read,
//! and the buffer keeps the size of the largest message seen. After one 300 KB `notify` (a
//! 10,000-member group's member list) every later read of a 300-byte message zeroed about
//! 300 KB: 29 % of the generator's CPU in the group fan-out benchmark, on the cores the
//! servers under test share. This reader reads into spare capacity (`read_buf`) and gives
//! large buffers back once they are empty.
//!
//! Not supported, since the servers under test never send them: extensions (no
//! `permessage-deflate` is offered) and masked server frames (refused). The server's
//! `Sec-WebSocket-Accept` is not verified: the generator only talks to servers it started.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Spare room made before each read.
const READ_CHUNK: usize = 8 * 1024;
/// An emptied read buffer above this capacity is replaced by a small one.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Largest message accepted (a 10,000-member `notify` is ~300 KB).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest handshake response accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (all fragments joined).
    Text(String),
    /// A binary message (all fragments joined).
    Binary(Vec<u8>),
    /// A ping: answer it with [`Outgoing::Pong`] carrying the same bytes.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame.
    Close,
}

/// A message to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// The answer to a ping.
    Pong(Vec<u8>),
    /// A close frame (no status).
    Close,
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Performs the opening handshake for `url` (`ws://host:port/path?query`) on `tcp` and
/// returns the two halves of the connection.
pub async fn connect(tcp: TcpStream, url: &str) -> io::Result<(WsReader, WsWriter)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| protocol_error(format!("not a ws:// URL: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut keys = MaskKeys::new();
    let key = handshake_key(&mut keys);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (read, mut write) = tcp.into_split();
    write.write_all(request.as_bytes()).await?;
    let mut reader = WsReader {
        stream: read,
        buf: Vec::with_capacity(READ_CHUNK),
        pos: 0,
        partial: None,
    };
    let head_end = loop {
        if let Some(i) = find(&reader.buf, b"\r\n\r\n") {
            break i + 4;
        }
        if reader.buf.len() > MAX_RESPONSE_HEAD {
            return Err(protocol_error("handshake response too long"));
        }
        if reader.fill().await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let head = String::from_utf8_lossy(&reader.buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    let upgraded = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("upgrade") && v.trim().eq_ignore_ascii_case("websocket")
        })
    });
    if status != "101" || !upgraded {
        let first = head.lines().next().unwrap_or_default();
        return Err(protocol_error(format!("handshake refused: {first}")));
    }
    // Frames the server sent right behind its answer stay in the buffer.
    reader.pos = head_end;
    Ok((
        reader,
        WsWriter {
            stream: write,
            out: Vec::with_capacity(1024),
            keys,
        },
    ))
}

/// `Sec-WebSocket-Key`: base64 of a 16-byte nonce (servers such as Node's `ws` refuse any
/// other length).
fn handshake_key(keys: &mut MaskKeys) -> String {
    let nonce: Vec<u8> = (0..4).flat_map(|_| keys.next().to_be_bytes()).collect();
    base64_of(&nonce)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The reading half.
pub struct WsReader {
    stream: OwnedReadHalf,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    /// Opcode and payload so far of a fragmented message.
    partial: Option<(u8, Vec<u8>)>,
}

impl WsReader {
    /// The next message; `None` once the server closed the TCP connection.
    pub async fn next(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            while let Some((frame, used)) = parse_frame(&self.buf[self.pos..])? {
                self.pos += used;
                if let Some(message) = self.assemble(frame)? {
                    return Ok(Some(message));
                }
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes after the unparsed ones; returns how many (0 at EOF).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.pos = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::with_capacity(READ_CHUNK);
            } else {
                self.buf.clear();
            }
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        // Into the spare capacity: no zero-filling.
        self.stream.read_buf(&mut self.buf).await
    }

    /// Joins fragments; returns a complete message when there is one.
    fn assemble(&mut self, frame: Frame) -> io::Result<Option<Incoming>> {
        let message = match frame.opcode {
            OP_PING => return Ok(Some(Incoming::Ping(frame.payload))),
            OP_PONG => return Ok(Some(Incoming::Pong)),
            OP_CLOSE => return Ok(Some(Incoming::Close)),
            OP_TEXT | OP_BINARY if self.partial.is_some() => {
                return Err(protocol_error("new message inside a fragmented one"))
            }
            OP_TEXT | OP_BINARY if !frame.fin => {
                self.partial = Some((frame.opcode, frame.payload));
                return Ok(None);
            }
            OP_TEXT | OP_BINARY => (frame.opcode, frame.payload),
            OP_CONTINUATION => {
                let Some((opcode, mut payload)) = self.partial.take() else {
                    return Err(protocol_error("continuation without a message"));
                };
                if payload.len() + frame.payload.len() > MAX_MESSAGE {
                    return Err(protocol_error("message too large"));
                }
                payload.extend_from_slice(&frame.payload);
                if !frame.fin {
                    self.partial = Some((opcode, payload));
                    return Ok(None);
                }
                (opcode, payload)
            }
            other => return Err(protocol_error(format!("unknown opcode {other}"))),
        };
        Ok(Some(match message {
            (OP_TEXT, bytes) => Incoming::Text(
                String::from_utf8(bytes).map_err(|_| protocol_error("text is not UTF-8"))?,
            ),
            (_, bytes) => Incoming::Binary(bytes),
        }))
    }
}

/// One frame off the wire.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// Parses one server frame from the front of `bytes`; `None` when it is not all there yet.
/// Returns the frame and the bytes it took.
fn parse_frame(bytes: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(protocol_error(
            "reserved bits set (no extension was negotiated)",
        ));
    }
    if second & 0x80 != 0 {
        return Err(protocol_error("a server frame is masked"));
    }
    let (len, header) = match second & 0x7F {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => {
                let mut len = [0; 8];
                len.copy_from_slice(b);
                (u64::from_be_bytes(len), 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_MESSAGE)
        .ok_or_else(|| protocol_error("frame too large"))?;
    let Some(payload) = bytes.get(header..header + len) else {
        return Ok(None);
    };
    Ok(Some((
        Frame {
            fin: first & 0x80 != 0,
            opcode: first & 0x0F,
            payload: payload.to_vec(),
        },
        header + len,
    )))
}

/// The writing half: frames are buffered, then written together by [`WsWriter::flush`].
pub struct WsWriter {
    stream: OwnedWriteHalf,
    out: Vec<u8>,
    keys: MaskKeys,
}

impl WsWriter {
    /// Adds `message` to the buffer.
    pub fn buffer(&mut self, message: &Outgoing) {
        let (opcode, payload): (u8, &[u8]) = match message {
            Outgoing::Text(text) => (OP_TEXT, text.as_bytes()),
            Outgoing::Binary(bytes) => (OP_BINARY, bytes),
            Outgoing::Pong(bytes) => (OP_PONG, bytes),
            Outgoing::Close => (OP_CLOSE, &[]),
        };
        encode_frame(&mut self.out, opcode, payload, self.keys.next());
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Ends the sending direction of the TCP connection.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// Appends one final client frame (masked with `mask`, as RFC 6455 requires of clients).
fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: u32) {
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let mask = mask.to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// Masking keys (and the handshake nonce) from a splitmix64 sequence seeded per
/// connection. RFC 6455 wants keys a script in a browser cannot predict, to protect
/// proxies from cache poisoning; a load generator on loopback needs them only to be valid.
struct MaskKeys(u64);

impl MaskKeys {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::{SystemTime, UNIX_EPOCH};
        static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Self(nanos ^ CONNECTIONS.fetch_add(1, Ordering::Relaxed).rotate_left(32))
    }

    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    }
}

/// Standard base64 (with padding).
fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A websocket server end for the client's tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_server {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A server frame (unmasked).
    pub(crate) fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => out.push(len as u8),
            len @ 126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Accepts one connection on `listener`, reads its upgrade request and answers it,
    /// followed by `frames` in the same write (as servers do). Returns the connection and
    /// the request.
    pub(crate) async fn accept_sending(
        listener: &TcpListener,
        frames: &[u8],
    ) -> (TcpStream, Vec<u8>) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while super::find(&request, b"\r\n\r\n").is_none() {
            let mut chunk = [0; 1024];
            let n = socket.read(&mut chunk).await.unwrap();
            request.extend_from_slice(&chunk[..n]);
        }
        let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
            .to_vec();
        answer.extend_from_slice(frames);
        socket.write_all(&answer).await.unwrap();
        (socket, request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use test_server::{accept_sending, server_frame};

    #[test]
    fn parses_frames_of_every_length_form_and_waits_for_missing_bytes() {
        for len in [0, 5, 125, 126, 300, 0xFFFF, 0x10000, 300_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire = server_frame(true, OP_TEXT, &payload);
            let (frame, used) = parse_frame(&wire).unwrap().unwrap();
            assert_eq!(used, wire.len(), "{len}");
            assert_eq!(frame.payload, payload, "{len}");
            assert!(frame.fin);
            for cut in [0, 1, wire.len() / 2, wire.len() - 1] {
                assert!(
                    parse_frame(&wire[..cut]).unwrap().is_none(),
                    "{len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn refuses_masked_server_frames_and_reserved_bits() {
        assert!(parse_frame(&[0x81, 0x81, 1, 2, 3, 4, 5]).is_err());
        assert!(parse_frame(&[0xC1, 0x00]).is_err());
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        for len in [0usize, 3, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            let mut out = Vec::new();
            encode_frame(&mut out, OP_TEXT, &payload, 0xA1B2_C3D4);
            assert_eq!(out[0], 0x81);
            assert_ne!(out[1] & 0x80, 0, "mask bit");
            let (len_field, header) = match out[1] & 0x7F {
                126 => (u64::from(u16::from_be_bytes([out[2], out[3]])), 4),
                127 => (u64::from_be_bytes(out[2..10].try_into().unwrap()), 10),
                n => (u64::from(n), 2),
            };
            assert_eq!(len_field as usize, len);
            let mask = &out[header..header + 4];
            assert_eq!(mask, &[0xA1, 0xB2, 0xC3, 0xD4]);
            let unmasked: Vec<u8> = out[header + 4..]
                .iter()
                .zip(mask.iter().cycle())
                .map(|(b, m)| b ^ m)
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_of(b""), "");
        assert_eq!(base64_of(b"f"), "Zg==");
        assert_eq!(base64_of(b"fo"), "Zm8=");
        assert_eq!(base64_of(b"foo"), "Zm9v");
        assert_eq!(base64_of(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_of(&[0xFF; 8]).len(), 12);
    }

    #[test]
    fn the_handshake_key_is_a_16_byte_nonce() {
        let mut keys = MaskKeys::new();
        let key = handshake_key(&mut keys);
        assert_eq!(key.len(), 24, "{key}");
        assert!(key.ends_with("=="), "{key}");
        assert_ne!(key, handshake_key(&mut keys));
    }

    /// A loopback server that answers the handshake, then sends `frames` and closes.
    async fn server_sending(frames: Vec<u8>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/socket.io/?EIO=4", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, mut request) = accept_sending(&listener, &frames).await;
            let mut rest = Vec::new();
            socket.read_to_end(&mut rest).await.unwrap();
            request.extend_from_slice(&rest);
            request
        });
        (url, server)
    }

    #[tokio::test]
    async fn reads_messages_sent_with_the_handshake_joins_fragments_and_writes_masked() {
        let big = "x".repeat(300_000);
        let mut frames = server_frame(true, OP_TEXT, b"0{\"sid\":\"a\"}");
        frames.extend(server_frame(false, OP_TEXT, b"42[\"chat\","));
        frames.extend(server_frame(true, OP_PING, b"p"));
        frames.extend(server_frame(true, OP_CONTINUATION, b"1]"));
        frames.extend(server_frame(true, OP_TEXT, big.as_bytes()));
        frames.extend(server_frame(true, OP_TEXT, b"small after big"));
        frames.extend(server_frame(true, OP_CLOSE, b""));
        let (url, server) = server_sending(frames).await;
        let tcp = TcpStream::connect(url.trim_start_matches("ws://").split('/').next().unwrap())
            .await
            .unwrap();
        let (mut reader, mut writer) = connect(tcp, &url).await.unwrap();
        let mut got = Vec::new();
        while let Some(message) = reader.next().await.unwrap() {
            let done = message == Incoming::Close;
            got.push(message);
            if done {
                break;
            }
        }
        assert_eq!(
            got,
            vec![
                Incoming::Text("0{\"sid\":\"a\"}".into()),
                Incoming::Ping(b"p".to_vec()),
                Incoming::Text("42[\"chat\",1]".into()),
                Incoming::Text(big),
                Incoming::Text("small after big".into()),
                Incoming::Close,
            ]
        );
        writer.buffer(&Outgoing::Text("40".into()));
        writer.flush().await.unwrap();
        writer.shutdown().await.unwrap();
        let request = server.await.unwrap();
        let head_end = find(&request, b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&request[..head_end]);
        assert!(
            head.starts_with("GET /socket.io/?EIO=4 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
        let sent = &request[head_end..];
        assert_eq!(sent[0], 0x81);
        assert_eq!(sent[1], 0x80 | 2);
        let mask = &sent[2..6];
        assert_eq!([sent[6] ^ mask[0], sent[7] ^ mask[1]], *b"40");
    }

    #[tokio::test]
    async fn a_refused_handshake_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut chunk = [0; 1024];
            let _ = socket.read(&mut chunk).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let refused = connect(tcp, &format!("ws://{addr}/socket.io/")).await;
        assert!(refused.is_err());
    }
}
