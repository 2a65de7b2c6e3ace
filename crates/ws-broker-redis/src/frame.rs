//! The bytes that travel through Redis: a `message` frame cut where its offset goes (the
//! publish script splices the offset in), the pub/sub payload, and retained entries.

use bytes::Bytes;
use tungstenite::Utf8Bytes;
use ws_core::ConnId;
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

/// The connection of one node that must not receive a message (`echo: false`): written
/// after the offset field as `@<node>:<conn>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) node: String,
    pub(crate) conn: ConnId,
}

impl Origin {
    /// The suffix of the offset field: empty without an origin.
    pub(crate) fn suffix(origin: Option<&Self>) -> String {
        origin.map_or_else(String::new, |o| format!("@{}:{}", o.node, o.conn.0))
    }

    fn parse(s: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(s).ok()?;
        let (node, conn) = s.rsplit_once(':')?;
        Some(Self {
            node: node.to_owned(),
            conn: ConnId(conn.parse().ok()?),
        })
    }
}

/// A message as it arrives on a project's channel.
#[derive(Debug)]
pub(crate) struct Live {
    /// The stream's epoch and the message's offset; `None` for an ephemeral message, which
    /// has neither and must not move the follower.
    pub(crate) position: Option<(String, u64)>,
    /// Who must not receive it.
    pub(crate) origin: Option<Origin>,
    pub(crate) frame: Utf8Bytes,
}

/// The pub/sub payload of an ephemeral message: `"- -[@<node>:<conn>] <frame>"` (no epoch,
/// no offset: `-` is never an epoch, which is hex digits and a dash).
pub(crate) fn ephemeral_payload(frame: &str, origin: Option<&Origin>) -> String {
    format!("- -{} {frame}", Origin::suffix(origin))
}

/// Parses `"<epoch> <offset>[@<node>:<conn>] <frame>"` or `"- -[@<node>:<conn>] <frame>"`.
pub(crate) fn parse_live(payload: &[u8]) -> Option<Live> {
    let (epoch, rest) = split_word(payload)?;
    let (offset, frame) = split_word(rest)?;
    let (offset, origin) = match offset.iter().position(|&b| b == b'@') {
        Some(at) => (&offset[..at], Some(Origin::parse(&offset[at + 1..])?)),
        None => (offset, None),
    };
    let frame = Utf8Bytes::try_from(Bytes::copy_from_slice(frame)).ok()?;
    let position = if epoch == b"-" {
        if offset != b"-" {
            return None;
        }
        None
    } else {
        Some((
            std::str::from_utf8(epoch).ok()?.to_owned(),
            std::str::from_utf8(offset).ok()?.parse().ok()?,
        ))
    };
    Some(Live {
        position,
        origin,
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
            key: None,
            ephemeral: false,
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
            (live.position, live.origin, live.frame.as_str()),
            (
                Some(("e1-2".to_owned(), 17)),
                None,
                r#"{"type":"message","offset":17}"#
            )
        );
        let live = parse_live(b"e1 3@0123abcd:42 {}").unwrap();
        let origin = Origin {
            node: "0123abcd".to_owned(),
            conn: ConnId(42),
        };
        assert_eq!(
            (live.position, live.origin.as_ref()),
            (Some(("e1".to_owned(), 3)), Some(&origin))
        );
        let ephemeral = ephemeral_payload(r#"{"a":1}"#, Some(&origin));
        assert_eq!(ephemeral, r#"- -@0123abcd:42 {"a":1}"#);
        let live = parse_live(ephemeral.as_bytes()).unwrap();
        assert_eq!(
            (live.position, live.origin, live.frame.as_str()),
            (None, Some(origin), r#"{"a":1}"#)
        );
        let live = parse_live(b"- - {}").unwrap();
        assert!(live.position.is_none() && live.origin.is_none());
        assert!(parse_live(b"- 3 {}").is_none());
        assert!(parse_live(b"e1 3@x {}").is_none());
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
