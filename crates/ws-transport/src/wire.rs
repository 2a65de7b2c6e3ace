//! The data frames the write pump encodes itself, straight into the socket's gather
//! buffer (RFC 6455 §5.2, server to client: never masked, never fragmented).
//!
//! Going through tungstenite, every frame a connection writes was built as a `Message`,
//! formatted into tungstenite's own buffer (a copy of the payload), then handed to the
//! socket, which gathered it for the flush (a second copy); tungstenite also kept that
//! buffer at the size of the largest frame the connection ever wrote. Data frames now take
//! one copy into the socket's buffer and no per-connection buffer outlives the flush.
//! Control frames (ping, pong, close) still go through tungstenite, which keeps the close
//! handshake's state.

/// The most bytes a frame header takes without a mask: two, then a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;

/// A data frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Text = 0x1,
    Binary = 0x2,
}

/// Appends one final, unmasked frame of `opcode` carrying `payload` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    const FIN: u8 = 0x80;
    out.reserve(MAX_HEADER + payload.len());
    out.push(FIN | opcode as u8);
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
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::*;
    use crate::tungstenite;

    /// tungstenite's encoding of the same frame: the reference.
    fn reference(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let data = match opcode {
            Opcode::Text => Data::Text,
            Opcode::Binary => Data::Binary,
        };
        let frame = Frame::message(payload.to_vec(), OpCode::Data(data), true);
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    #[test]
    fn every_length_class_matches_tungstenite() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 0x1_0001, 200_000] {
            for opcode in [Opcode::Text, Opcode::Binary] {
                let payload = vec![b'a'; len];
                let mut out = Vec::new();
                encode(&mut out, opcode, &payload);
                assert_eq!(out, reference(opcode, &payload), "{opcode:?}, {len} bytes");
                assert!(out.len() <= payload.len() + MAX_HEADER);
            }
        }
    }

    proptest! {
        #[test]
        fn frames_appended_in_a_row_read_back_as_tungstenite_writes_them(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)
        ) {
            let mut out = Vec::new();
            let mut expected = Vec::new();
            for payload in &payloads {
                encode(&mut out, Opcode::Binary, payload);
                expected.extend(reference(Opcode::Binary, payload));
            }
            prop_assert_eq!(out, expected);
        }
    }
}
