//! The bytes that travel through Redis: a `message` frame cut where its offset goes (the
//! publish script splices the offset in), the pub/sub payload, and retained entries.

use bytes::Bytes;
use tungstenite::Utf8Bytes;
use ws_core::envelope::ServerFrame;
use ws_transport::broker::Publication;
use ws_transport::tungstenite;

/// An offset no real message gets: it marks where the offset goes in a serialised frame.
const PLACEHOLDER: u64 = u64::MAX;

/// The `message` frame of `publication` around its offset: `head + offset + tail` is exactly
/// what `ServerFrame::Message` serialises to, so replays and live deliveries are the bytes
/// the memory broker would send.
pub(crate) fn message_parts(publication: &Publication) -> (String, String) {
    let json = ServerFrame::Message {
        offset: PLACEHOLDER,
        from: &publication.from,
        data: publication.data.as_raw(),
        ts: publication.ts,
    }
    .to_json();
    // `offset` is serialised before `from` and `data`, so its first occurrence is the field.
    let marker = format!("\"offset\":{PLACEHOLDER}");
    match json.find(&marker) {
        Some(at) => {
            let head_end = at + "\"offset\":".len();
            (
                json[..head_end].to_owned(),
                json[at + marker.len()..].to_owned(),
            )
        }
        None => unreachable!("a message frame always has an offset field"),
    }
}

/// A message as it arrives on a project's channel.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) epoch: String,
    pub(crate) offset: u64,
    pub(crate) frame: Utf8Bytes,
}

/// Parses `"<epoch> <offset> <frame>"`.
pub(crate) fn parse_live(payload: &[u8]) -> Option<Live> {
    let (epoch, rest) = split_word(payload)?;
    let (offset, frame) = split_word(rest)?;
    let frame = Utf8Bytes::try_from(Bytes::copy_from_slice(frame)).ok()?;
    Some(Live {
        epoch: std::str::from_utf8(epoch).ok()?.to_owned(),
        offset: std::str::from_utf8(offset).ok()?.parse().ok()?,
        frame,
    })
}

/// A retained message as the history list keeps it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    /// When Redis appended it, in Redis milliseconds.
    pub(crate) at_ms: u64,
    pub(crate) frame: Utf8Bytes,
}

/// Parses `"<offset> <ms> <frame>"`.
pub(crate) fn parse_entry(entry: Vec<u8>) -> Option<Entry> {
    let entry = Bytes::from(entry);
    let (offset, rest) = split_word(&entry)?;
    let (at_ms, frame) = split_word(rest)?;
    let offset = std::str::from_utf8(offset).ok()?.parse().ok()?;
    let at_ms = std::str::from_utf8(at_ms).ok()?.parse().ok()?;
    let frame = entry.slice_ref(frame);
    Some(Entry {
        offset,
        at_ms,
        frame: Utf8Bytes::try_from(frame).ok()?,
    })
}

fn split_word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = bytes.iter().position(|&b| b == b' ')?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ws_core::envelope::Payload;

    fn publication(data: &str) -> Publication {
        Publication {
            from: "u\"1".to_owned(),
            data: Payload::from_json(data.to_owned()).unwrap(),
            ts: 1_700_000_000_123,
            except: None,
        }
    }

    #[test]
    fn spliced_frames_are_the_frames_ws_core_serialises() {
        for data in [
            "1",
            r#"{"offset":18446744073709551615}"#,
            r#"["\"offset\":18446744073709551615"]"#,
            r#"[{"a":"b c"}, null]"#,
        ] {
            let p = publication(data);
            let (head, tail) = message_parts(&p);
            for offset in [1, 42, 9_007_199_254_740_993] {
                let expected = ServerFrame::Message {
                    offset,
                    from: &p.from,
                    data: p.data.as_raw(),
                    ts: p.ts,
                }
                .to_json();
                assert_eq!(format!("{head}{offset}{tail}"), expected);
            }
        }
    }

    #[test]
    fn payloads_and_entries_round_trip() {
        let live = parse_live(br#"e1-2 17 {"type":"message","offset":17}"#).unwrap();
        assert_eq!(
            (live.epoch.as_str(), live.offset, live.frame.as_str()),
            ("e1-2", 17, r#"{"type":"message","offset":17}"#)
        );
        assert!(parse_live(b"e1 x {}").is_none());
        assert!(parse_live(b"e1").is_none());
        let entry = parse_entry(b"3 1700000000123 {\"a\": 1}".to_vec()).unwrap();
        assert_eq!(
            (entry.offset, entry.at_ms, entry.frame.as_str()),
            (3, 1_700_000_000_123, "{\"a\": 1}")
        );
        assert!(parse_entry(b"3 {}".to_vec()).is_none());
        assert!(parse_entry(vec![b'1', b' ', b'2', b' ', 0xff]).is_none());
    }
}
