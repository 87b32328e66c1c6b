//! WebSocket frames as the broker writes them (RFC 6455, section 5.2).
//!
//! # Why the broker encodes its own frames
//! A server's frames are never masked and ours are never fragmented, so the
//! bytes of an event's frame, header included, are the same for every
//! subscriber. The Emitter encodes each event's frame once
//! ([`crate::protocol::PublishedEvent::wire`]) and every Session queues that
//! same buffer; a codec per connection encoded it again for each subscriber
//! (the fan-out profile in PERFORMANCE.md). Reading stays with actix-ws,
//! which has to unmask and check what clients send.

use actix_ws::CloseReason;
use bytes::Bytes;

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;
/// FIN set: every frame is the whole message.
const FIN: u8 = 0x80;
/// The longest header of an unmasked frame: 2 bytes and a 64-bit length.
const MAX_HEADER: usize = 10;
/// RFC 6455 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A text frame whose payload `write` appends to the buffer it is given;
/// returns the frame and the length of its header, so that the payload can
/// be had back as `frame.slice(header_len..)` without a copy.
///
/// The payload is written after room for the longest header, and the header
/// goes right before it once the length is known: one buffer, no copy of
/// the payload.
pub fn text_with(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> (Bytes, usize) {
    let mut buffer = Vec::with_capacity(MAX_HEADER + capacity);
    buffer.resize(MAX_HEADER, 0);
    write(&mut buffer);
    let (header, header_len) = header(OPCODE_TEXT, buffer.len() - MAX_HEADER);
    let start = MAX_HEADER - header_len;
    buffer[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
    // Event frames live on in replay buffers: keep no spare capacity.
    buffer.shrink_to_fit();
    (Bytes::from(buffer).slice(start..), header_len)
}

/// A text frame carrying `payload`.
pub fn text(payload: &str) -> Bytes {
    text_with(payload.len(), |buffer| {
        buffer.extend_from_slice(payload.as_bytes())
    })
    .0
}

/// A ping with no payload: the heartbeat.
pub fn ping() -> Bytes {
    Bytes::from_static(&[FIN | OPCODE_PING, 0])
}

/// The pong that answers a ping carrying `payload` (cut to 125 bytes, as a
/// control frame must be).
pub fn pong(payload: &[u8]) -> Bytes {
    control(
        OPCODE_PONG,
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
    )
}

/// A close frame: the code, then the description cut at a character
/// boundary to fit a control frame (browsers refuse longer ones).
pub fn close(reason: Option<&CloseReason>) -> Bytes {
    let Some(reason) = reason else {
        return control(OPCODE_CLOSE, &[]);
    };
    let mut payload = u16::from(reason.code).to_be_bytes().to_vec();
    if let Some(description) = &reason.description {
        let mut end = description.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !description.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&description.as_bytes()[..end]);
    }
    control(OPCODE_CLOSE, &payload)
}

fn control(opcode: u8, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(2 + payload.len());
    frame.extend_from_slice(&[FIN | opcode, payload.len() as u8]);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// The header of an unmasked, final frame with a payload of `len` bytes.
fn header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut header = [0; MAX_HEADER];
    header[0] = FIN | opcode;
    let header_len = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, header_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Decoder;
    use actix_http::ws::{Codec, Frame};
    use actix_ws::CloseCode;
    use bytes::BytesMut;

    /// Decodes `bytes` as a client would: exactly one frame, nothing left over.
    fn decode(bytes: &Bytes) -> Frame {
        let mut codec = Codec::new().client_mode().max_size(1 << 20);
        let mut buffer = BytesMut::from(&bytes[..]);
        let frame = codec.decode(&mut buffer).unwrap().expect("a whole frame");
        assert!(buffer.is_empty(), "bytes left after the frame");
        frame
    }

    #[test]
    fn text_frames_of_every_header_size_decode_to_their_payload() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = "x".repeat(len);
            let frame = text(&payload);
            match decode(&frame) {
                Frame::Text(got) => assert_eq!(got.len(), len, "payload of {len} bytes"),
                other => panic!("{len} bytes decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn the_header_length_returned_points_at_the_payload() {
        for len in [3, 300, 70_000] {
            let payload = "y".repeat(len);
            let (frame, header_len) = text_with(0, |b| b.extend_from_slice(payload.as_bytes()));
            assert_eq!(&frame[header_len..], payload.as_bytes());
        }
    }

    #[test]
    fn control_frames_decode_and_stay_within_125_bytes() {
        assert!(matches!(decode(&ping()), Frame::Ping(p) if p.is_empty()));
        let long = vec![7u8; 300];
        assert!(matches!(decode(&pong(&long)), Frame::Pong(p) if p.len() == 125));
        let reason = CloseReason {
            code: CloseCode::Other(4000),
            description: Some("é".repeat(100)),
        };
        match decode(&close(Some(&reason))) {
            Frame::Close(Some(got)) => {
                assert_eq!(got.code, CloseCode::Other(4000));
                let description = got.description.unwrap();
                assert_eq!(description, "é".repeat(61), "cut at a char boundary");
            }
            other => panic!("decoded as {other:?}"),
        }
        assert!(matches!(decode(&close(None)), Frame::Close(None)));
    }
}
