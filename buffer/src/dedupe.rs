//! Resend recognition: the identities producers give their records, and which of them the log
//! already holds (`docs/buffer-format.md` §11). Pure state, no I/O.
//!
//! * **Numbered producers** (a TCP connection that began with `hello <producer> <next>`): per
//!   (source, producer) the highest record number stored and the seq it got. A record whose
//!   number is at or below it is a resend: it is not stored again, and its acknowledgement
//!   waits for that seq to be durable. Exact as long as the producer numbers its records one by
//!   one and resends in order; at most [`MAX_PRODUCERS`] producers are remembered (the one
//!   written to longest ago is forgotten first).
//! * **MQTT packets**: per source, the packet ids of its last [`PACKET_WINDOW`] records with
//!   their seq and a CRC-32C of topic and payload. A PUBLISH flagged DUP whose packet id and
//!   content match the newest record with that id is a redelivery. The MQTT input announces a
//!   receive maximum of [`PACKET_WINDOW`], so every message the broker may redeliver is within
//!   the window.
//!
//! The log rebuilds both tables at open from its newest records (`log::DEDUPE_REBUILD_BYTES`).

use crate::codec::{Crc32c, OriginV1};
use std::collections::{HashMap, VecDeque};

/// MQTT records remembered per source; also the receive maximum the MQTT input announces.
pub const PACKET_WINDOW: usize = 4096;
/// Numbered producers remembered.
pub const MAX_PRODUCERS: usize = 4096;

/// The identity a producer gave a record; `redelivery` is MQTT's DUP flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Stored with the record (envelope variant 2).
    pub id: OriginV1,
    /// The broker says it may have sent this PUBLISH before (only then is it matched).
    pub redelivery: bool,
}

impl Origin {
    /// Record `n` of the producer named by the record's key.
    pub fn numbered(n: u64) -> Self {
        Origin {
            id: OriginV1::Numbered(n),
            redelivery: false,
        }
    }

    /// An MQTT QoS 1 PUBLISH with packet id `pkid` and its DUP flag.
    pub fn packet(pkid: u16, dup: bool) -> Self {
        Origin {
            id: OriginV1::Packet(pkid),
            redelivery: dup,
        }
    }
}

fn content_crc(key: &[u8], payload: &[u8]) -> u32 {
    let mut h = Crc32c::new();
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    h.update(payload);
    h.finish()
}

/// The tables (see the module doc).
#[derive(Debug, Default)]
pub struct Dedupe {
    /// source → producer → (highest number, its seq).
    numbered: HashMap<u16, HashMap<Vec<u8>, (u64, u64)>>,
    producers: usize,
    packets: HashMap<u16, VecDeque<(u16, u64, u32)>>,
}

impl Dedupe {
    /// The seq of the stored original when this record is a resend of it.
    pub fn original(&self, source: u16, key: &[u8], payload: &[u8], o: &Origin) -> Option<u64> {
        match o.id {
            OriginV1::Numbered(n) => self
                .numbered
                .get(&source)?
                .get(key)
                .and_then(|&(hwm, seq)| (n <= hwm).then_some(seq)),
            OriginV1::Packet(id) if o.redelivery => {
                let w = self.packets.get(&source)?;
                let &(_, seq, crc) = w.iter().rev().find(|e| e.0 == id)?;
                (crc == content_crc(key, payload)).then_some(seq)
            }
            OriginV1::Packet(_) => None,
        }
    }

    /// Notes a stored record.
    pub fn stored(&mut self, source: u16, key: &[u8], payload: &[u8], id: OriginV1, seq: u64) {
        match id {
            OriginV1::Numbered(n) => {
                if let Some(e) = self.numbered.get_mut(&source).and_then(|m| m.get_mut(key)) {
                    if n > e.0 {
                        *e = (n, seq);
                    }
                    return;
                }
                if self.producers >= MAX_PRODUCERS {
                    self.forget_oldest_producer();
                }
                self.numbered
                    .entry(source)
                    .or_default()
                    .insert(key.to_vec(), (n, seq));
                self.producers += 1;
            }
            OriginV1::Packet(id) => {
                let w = self.packets.entry(source).or_default();
                if w.len() >= PACKET_WINDOW {
                    w.pop_front();
                }
                w.push_back((id, seq, content_crc(key, payload)));
            }
        }
    }

    fn forget_oldest_producer(&mut self) {
        let oldest = self
            .numbered
            .iter()
            .flat_map(|(s, m)| m.iter().map(move |(k, v)| (v.1, *s, k)))
            .min_by_key(|e| e.0)
            .map(|(_, s, k)| (s, k.clone()));
        if let Some((s, k)) = oldest
            && let Some(m) = self.numbered.get_mut(&s)
            && m.remove(&k).is_some()
        {
            self.producers -= 1;
        }
    }

    /// Highest record number stored for a producer (0 if none is known).
    pub fn highest(&self, source: u16, key: &[u8]) -> u64 {
        self.numbered
            .get(&source)
            .and_then(|m| m.get(key))
            .map_or(0, |e| e.0)
    }

    /// (numbered producers, MQTT records) remembered.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.producers,
            self.packets.values().map(VecDeque::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_resends_are_recognised_up_to_the_highest_number() {
        let mut d = Dedupe::default();
        assert_eq!(d.original(0, b"p", b"x", &Origin::numbered(1)), None);
        d.stored(0, b"p", b"x", OriginV1::Numbered(1), 10);
        d.stored(0, b"p", b"y", OriginV1::Numbered(2), 11);
        assert_eq!(d.original(0, b"p", b"?", &Origin::numbered(1)), Some(11));
        assert_eq!(d.original(0, b"p", b"?", &Origin::numbered(3)), None);
        assert_eq!(
            d.original(1, b"p", b"?", &Origin::numbered(1)),
            None,
            "per source"
        );
        assert_eq!(
            d.original(0, b"q", b"?", &Origin::numbered(1)),
            None,
            "per producer"
        );
        assert_eq!(d.highest(0, b"p"), 2);
    }

    #[test]
    fn mqtt_redeliveries_match_id_and_content_of_the_newest_record() {
        let mut d = Dedupe::default();
        d.stored(2, b"t", b"21.5", OriginV1::Packet(7), 100);
        // Not flagged as a redelivery: a new message that reuses the id.
        assert_eq!(
            d.original(2, b"t", b"21.5", &Origin::packet(7, false)),
            None
        );
        assert_eq!(
            d.original(2, b"t", b"21.5", &Origin::packet(7, true)),
            Some(100)
        );
        assert_eq!(d.original(2, b"t", b"21.6", &Origin::packet(7, true)), None);
        assert_eq!(d.original(2, b"u", b"21.5", &Origin::packet(7, true)), None);
        d.stored(2, b"t", b"22.0", OriginV1::Packet(7), 200);
        assert_eq!(d.original(2, b"t", b"21.5", &Origin::packet(7, true)), None);
        assert_eq!(
            d.original(2, b"t", b"22.0", &Origin::packet(7, true)),
            Some(200)
        );
        // The window forgets the oldest.
        for i in 0..PACKET_WINDOW as u64 {
            d.stored(2, b"t", b"z", OriginV1::Packet(8), 300 + i);
        }
        assert_eq!(d.original(2, b"t", b"22.0", &Origin::packet(7, true)), None);
        assert_eq!(d.sizes().1, PACKET_WINDOW);
    }

    #[test]
    fn the_producer_written_to_longest_ago_is_forgotten_first() {
        let mut d = Dedupe::default();
        for i in 0..MAX_PRODUCERS as u64 + 1 {
            d.stored(
                0,
                format!("p{i}").as_bytes(),
                b"",
                OriginV1::Numbered(1),
                i + 1,
            );
        }
        assert_eq!(d.sizes().0, MAX_PRODUCERS);
        assert_eq!(d.highest(0, b"p0"), 0);
        assert_eq!(d.highest(0, b"p1"), 1);
    }
}
