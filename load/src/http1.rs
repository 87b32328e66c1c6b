//! The little HTTP/1.1 both sides of this tool need: the baseline reads
//! `POST /api/events` requests, the producers read the 202s.
//!
//! Hand-written rather than hyper: the baseline must stay small enough to
//! read in one sitting, and the producers must cost the load generator as
//! little CPU as possible. Only what the two sides exchange is supported:
//! bodies with `Content-Length`, keep-alive, no chunked encoding (refused
//! with an error, never misread).

use std::fmt;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest request or response head read; a longer one is refused.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub content_length: usize,
    pub keep_alive: bool,
    /// Bytes of the head, blank line included: where the body starts.
    pub len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub content_length: usize,
    pub keep_alive: bool,
    pub len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    TooLarge,
    Malformed(&'static str),
    /// Well-formed, but outside the subset (chunked bodies).
    Unsupported(&'static str),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "head over {MAX_HEAD} bytes"),
            HeadError::Malformed(what) => write!(f, "malformed head: {what}"),
            HeadError::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

/// The fields both heads share, from the header lines.
struct Headers {
    content_length: Option<usize>,
    connection_close: bool,
    connection_keep_alive: bool,
}

/// Splits off a complete head: `Ok(None)` while the blank line has not
/// arrived yet.
fn split_head(buf: &[u8]) -> Result<Option<(&str, usize)>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    Ok(Some((text, end + 4)))
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, HeadError> {
    let mut headers = Headers {
        content_length: None,
        connection_close: false,
        connection_keep_alive: false,
    };
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HeadError::Malformed("header without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| HeadError::Malformed("bad content-length"))?;
            if headers.content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Malformed("two different content-lengths"));
            }
            headers.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Unsupported(
                "transfer-encoding (send content-length)",
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                headers.connection_close |= token.eq_ignore_ascii_case("close");
                headers.connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    Ok(headers)
}

/// HTTP/1.1 keeps the connection unless told to close; 1.0 closes unless
/// told to keep it.
fn keep_alive(version: &str, headers: &Headers) -> Result<bool, HeadError> {
    match version {
        "HTTP/1.1" => Ok(!headers.connection_close),
        "HTTP/1.0" => Ok(headers.connection_keep_alive && !headers.connection_close),
        _ => Err(HeadError::Malformed("not HTTP/1.x")),
    }
}

pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let Some((text, len)) = split_head(buf)? else {
        return Ok(None);
    };
    let mut lines = text.split("\r\n");
    let mut start = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (start.next(), start.next(), start.next(), start.next())
    else {
        return Err(HeadError::Malformed("request line"));
    };
    if method.is_empty() || !path.starts_with('/') {
        return Err(HeadError::Malformed("request line"));
    }
    let headers = parse_headers(lines)?;
    Ok(Some(RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        content_length: headers.content_length.unwrap_or(0),
        keep_alive: keep_alive(version, &headers)?,
        len,
    }))
}

pub fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let Some((text, len)) = split_head(buf)? else {
        return Ok(None);
    };
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
        .ok_or(HeadError::Malformed("status line"))?;
    let headers = parse_headers(lines)?;
    // Without a length the body would run to the end of the connection,
    // which a keep-alive client cannot tell from a slow server.
    let content_length = match (headers.content_length, status) {
        (Some(n), _) => n,
        (None, 204 | 304) => 0,
        (None, _) => return Err(HeadError::Unsupported("a response without content-length")),
    };
    Ok(Some(ResponseHead {
        status,
        content_length,
        keep_alive: keep_alive(version, &headers)?,
        len,
    }))
}

/// A response with a JSON body.
pub fn json_response(status: u16, body: &[u8], keep_alive: bool) -> Vec<u8> {
    let reason = match status {
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Head(HeadError),
    BodyTooLarge(usize),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Head(e) => write!(f, "{e}"),
            ReadError::BodyTooLarge(n) => write!(f, "body of {n} bytes over the limit"),
        }
    }
}

/// Reads one message (head and body) from `stream` into `buf`, which keeps
/// any bytes of the next message. `Ok(None)`: the peer closed cleanly
/// between messages.
pub async fn read_message<S, H>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Result<Option<H>, HeadError>,
    length: fn(&H) -> (usize, usize),
    max_body: usize,
) -> Result<Option<(H, Vec<u8>)>, ReadError>
where
    S: AsyncRead + Unpin,
{
    let head = loop {
        if let Some(head) = parse(buf).map_err(ReadError::Head)? {
            break head;
        }
        if read_more(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
            };
        }
    };
    let (head_len, body_len) = length(&head);
    if body_len > max_body {
        return Err(ReadError::BodyTooLarge(body_len));
    }
    while buf.len() < head_len + body_len {
        if read_more(stream, buf).await? == 0 {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    let body = buf[head_len..head_len + body_len].to_vec();
    buf.drain(..head_len + body_len);
    Ok(Some((head, body)))
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, ReadError> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

pub fn request_length(head: &RequestHead) -> (usize, usize) {
    (head.len, head.content_length)
}

pub fn response_length(head: &ResponseHead) -> (usize, usize) {
    (head.len, head.content_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_post() {
        let raw = b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"a\":1}";
        let head = parse_request(raw).unwrap().unwrap();
        assert_eq!(
            head,
            RequestHead {
                method: "POST".into(),
                path: "/api/events".into(),
                content_length: 12,
                keep_alive: true,
                len: raw.len() - 7,
            }
        );
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert_eq!(
            parse_request(b"POST /api/events HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        assert_eq!(parse_request(b""), Ok(None));
    }

    #[test]
    fn connection_header_and_version_decide_keep_alive() {
        let close = b"POST / HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert!(!parse_request(close).unwrap().unwrap().keep_alive);
        let old = b"POST / HTTP/1.0\r\n\r\n";
        assert!(!parse_request(old).unwrap().unwrap().keep_alive);
        let old_kept = b"POST / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n";
        assert!(parse_request(old_kept).unwrap().unwrap().keep_alive);
    }

    #[test]
    fn refusals() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_request(chunked),
            Err(HeadError::Unsupported(_))
        ));
        let bad_len = b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n";
        assert!(matches!(
            parse_request(bad_len),
            Err(HeadError::Malformed(_))
        ));
        let two_lens = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            parse_request(two_lens),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"POST\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"POST / SPDY/3\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse_request(&endless), Err(HeadError::TooLarge));
    }

    #[test]
    fn a_202_from_either_target() {
        let raw = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\ncontent-type: application/json\r\ndate: x\r\n\r\n{}";
        let head = parse_response(raw).unwrap().unwrap();
        assert_eq!(
            (head.status, head.content_length, head.keep_alive),
            (202, 2, true)
        );
        assert_eq!(&raw[head.len..], b"{}");
        let ours = json_response(202, b"{}", true);
        assert_eq!(parse_response(&ours).unwrap().unwrap().status, 202);
        let missing_length = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(matches!(
            parse_response(missing_length),
            Err(HeadError::Unsupported(_))
        ));
    }

    #[tokio::test]
    async fn read_message_keeps_the_next_pipelined_request() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nd";
        let mut stream: &[u8] = raw;
        let mut buf = Vec::new();
        let (head, body) = read_message(&mut stream, &mut buf, parse_request, request_length, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((head.path.as_str(), body.as_slice()), ("/a", &b"abc"[..]));
        let (head, body) = read_message(&mut stream, &mut buf, parse_request, request_length, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((head.path.as_str(), body.as_slice()), ("/b", &b"d"[..]));
        assert!(
            read_message(&mut stream, &mut buf, parse_request, request_length, 100)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn read_message_refuses_a_body_over_the_limit() {
        let mut stream: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n";
        let mut buf = Vec::new();
        let result = read_message(&mut stream, &mut buf, parse_request, request_length, 100).await;
        assert!(matches!(result, Err(ReadError::BodyTooLarge(101))));
    }
}
