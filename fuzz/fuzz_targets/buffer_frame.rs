//! The buffer's frame codec (`buffer::codec`): the 36-byte header, CRC-32C and postcard
//! records that sensor firmware writes and the gateway reads.
//!
//! Properties, for every input:
//! * the input as frame bytes: `FrameView::parse` and the record iterator never panic; a parsed
//!   frame fits the input, yields at most `count` records with consecutive seqs, and stops at
//!   a broken length prefix (a bad envelope with a sound length is skipped); re-encoding the records it read gives a frame that reads back the
//!   same records (decode ∘ encode ∘ decode = decode); `resync` only ever points at a frame
//!   that parses;
//! * the input as a recipe for records: a frame built with `FrameEncoder` (and the firmware's
//!   fixed-size `HeaplessFrame`) parses back to exactly the records pushed; a push refused with
//!   `BufferFull` leaves the frame as it was.
#![no_main]

use buffer::codec::{
    CodecError, FrameEncoder, FrameView, GapReason, GapV1, HeaplessFrame, Record, resync,
};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode(data);
    if let Some(i) = resync(data, 0) {
        assert!(
            FrameView::parse(&data[i..]).is_ok(),
            "resync to a bad frame"
        );
    }
    let mut u = Unstructured::new(data);
    if let Ok(recipe) = Recipe::arbitrary(&mut u) {
        encode(&recipe);
    }
});

/// An owned record, comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Data {
        ts_ms: i64,
        source: u16,
        key: Vec<u8>,
        payload: Vec<u8>,
    },
    Gap(GapV1),
    Unknown(Vec<u8>),
}

fn owned(r: Record<'_>) -> Rec {
    match r {
        // `origin` (a producer's id and seq, #22) is not pushed by this target's encoders.
        Record::Data {
            ts_ms,
            source,
            key,
            payload,
            ..
        } => Rec::Data {
            ts_ms,
            source,
            key: key.to_vec(),
            payload: payload.to_vec(),
        },
        Record::Gap(g) => Rec::Gap(g),
        Record::Unknown(b) => Rec::Unknown(b.to_vec()),
    }
}

/// Reads a frame; `None` if it does not parse. Checks the iterator's contract on the way.
fn read(bytes: &[u8]) -> Option<(buffer::codec::FrameHeader, Vec<Rec>, bool)> {
    let f = FrameView::parse(bytes).ok()?;
    let h = f.header;
    assert!(h.frame_len() <= bytes.len());
    assert_eq!(f.body.len(), h.body_len as usize);
    let mut recs = Vec::new();
    let (mut bad, mut framing_lost) = (false, false);
    for (i, r) in f.records().enumerate() {
        assert!(!framing_lost, "a record after a broken length prefix");
        match r {
            Ok((seq, rec)) => {
                assert_eq!(seq, h.first_seq + i as u64, "seqs are consecutive");
                recs.push(owned(rec));
            }
            Err(CodecError::BadRecord { index, what }) => {
                assert_eq!(index as usize, i);
                bad = true;
                // A bad envelope behind a sound length is skipped (the reader stops at any
                // error anyway); a bad length ends the frame.
                framing_lost = what != "envelope";
            }
            Err(e) => panic!("unexpected record error {e}"),
        }
    }
    assert!(recs.len() <= h.count as usize);
    Some((h, recs, bad))
}

fn decode(data: &[u8]) {
    let Some((h, recs, bad)) = read(data) else {
        return;
    };
    if bad || recs.iter().any(|r| matches!(r, Rec::Unknown(_))) {
        return; // nothing to re-encode faithfully
    }
    let mut buf = Vec::new();
    let mut enc = FrameEncoder::begin(&mut buf, h.first_seq, h.base_ts_ms, h.epoch).expect("Vec");
    for r in &recs {
        push(&mut enc, &mut buf, r).expect("a record that was read can be written");
    }
    enc.finish(&mut buf).expect("non-empty frame");
    let (h2, again, bad) = read(&buf).expect("re-encoded frame parses");
    assert!(!bad);
    assert_eq!(again, recs);
    assert_eq!(
        (h2.first_seq, h2.base_ts_ms, h2.epoch, h2.count),
        (h.first_seq, h.base_ts_ms, h.epoch, recs.len() as u32)
    );
}

fn push(enc: &mut FrameEncoder, buf: &mut Vec<u8>, r: &Rec) -> Result<u64, CodecError> {
    match r {
        Rec::Data {
            ts_ms,
            source,
            key,
            payload,
        } => enc.push_data(buf, *ts_ms, *source, key, payload),
        Rec::Gap(g) => enc.push_gap(buf, g),
        Rec::Unknown(_) => unreachable!("not pushed"),
    }
}

#[derive(Debug, Arbitrary)]
struct Recipe {
    first_seq: u64,
    base_ts_ms: i64,
    epoch: u32,
    records: Vec<RecipeRec>,
}

#[derive(Debug, Arbitrary)]
enum RecipeRec {
    Data {
        ts_ms: i64,
        source: u16,
        key: Vec<u8>,
        payload: Vec<u8>,
    },
    Gap {
        reason: u8,
        first_seq: u64,
        last_seq: u64,
        records: u64,
        bytes: u64,
    },
}

impl RecipeRec {
    fn rec(&self) -> Rec {
        match self {
            RecipeRec::Data {
                ts_ms,
                source,
                key,
                payload,
            } => Rec::Data {
                ts_ms: *ts_ms,
                source: *source,
                key: key.clone(),
                payload: payload.clone(),
            },
            RecipeRec::Gap {
                reason,
                first_seq,
                last_seq,
                records,
                bytes,
            } => Rec::Gap(GapV1 {
                reason: GapReason::ALL[usize::from(*reason) % GapReason::ALL.len()],
                first_seq: *first_seq,
                last_seq: *last_seq,
                records: *records,
                bytes: *bytes,
            }),
        }
    }
}

fn encode(recipe: &Recipe) {
    let recs: Vec<Rec> = recipe.records.iter().map(RecipeRec::rec).collect();
    // The encoders refuse what the decoder would refuse (regressions/buffer_frame/
    // encoder-first-seq-overflow): a `first_seq` of 0 or u64::MAX at `begin`, a push whose seq
    // would overflow; nothing is written then.
    let seqs_fit = recipe.first_seq != 0
        && recipe.first_seq != u64::MAX
        && recipe.first_seq.checked_add(recs.len() as u64).is_some();
    let refused = |e: &CodecError| matches!(e, CodecError::SeqOutOfRange { .. }) && !seqs_fit;
    let mut buf = Vec::new();
    let mut enc =
        match FrameEncoder::begin(&mut buf, recipe.first_seq, recipe.base_ts_ms, recipe.epoch) {
            Ok(enc) => enc,
            Err(e) if refused(&e) => {
                assert!(buf.is_empty(), "a refused frame leaves nothing behind");
                let hf =
                    HeaplessFrame::<512>::new(recipe.first_seq, recipe.base_ts_ms, recipe.epoch);
                assert!(
                    matches!(hf, Err(CodecError::SeqOutOfRange { .. })),
                    "heapless accepted {}",
                    recipe.first_seq
                );
                return;
            }
            Err(e) => panic!("begin: {e}"),
        };
    for r in &recs {
        let before = buf.len();
        let seq = match push(&mut enc, &mut buf, r) {
            Ok(seq) => seq,
            Err(e) if refused(&e) => {
                assert_eq!(buf.len(), before, "a refused push changes nothing");
                return;
            }
            Err(e) => panic!("small records fit a Vec frame: {e}"),
        };
        assert_eq!(seq, enc.next_seq() - 1);
    }
    assert!(
        seqs_fit,
        "seqs from {} for {} records accepted",
        recipe.first_seq,
        recs.len()
    );
    match enc.finish(&mut buf) {
        Err(CodecError::Empty) => {
            assert!(recs.is_empty());
            assert!(buf.is_empty(), "an empty frame leaves nothing behind");
            return;
        }
        Err(e) => panic!("finish: {e}"),
        Ok(len) => assert_eq!(len, buf.len()),
    }
    let (h, back, bad) = read(&buf).unwrap_or_else(|| {
        panic!(
            "an encoded frame does not parse: {:?}",
            FrameView::parse(&buf).err()
        )
    });
    assert!(!bad);
    assert_eq!(back, recs, "decode(encode(x)) != x");
    assert_eq!(h.first_seq, recipe.first_seq);

    // The firmware's fixed buffer: the same bytes while they fit; a refused push changes nothing.
    let mut hf = HeaplessFrame::<512>::new(recipe.first_seq, recipe.base_ts_ms, recipe.epoch)
        .expect("header fits");
    let mut pushed = 0usize;
    for r in &recs {
        let Rec::Data {
            ts_ms,
            source,
            key,
            payload,
        } = r
        else {
            break;
        };
        match hf.push(*ts_ms, *source, key, payload) {
            Ok(_) => pushed += 1,
            Err(CodecError::BufferFull { .. }) => break,
            Err(e) => panic!("heapless push: {e}"),
        }
    }
    match hf.finish() {
        Ok(bytes) => {
            let (_, back, bad) = read(bytes).expect("heapless frame parses");
            assert!(!bad);
            assert_eq!(back, recs[..pushed]);
        }
        Err(CodecError::Empty) => assert_eq!(pushed, 0),
        Err(e) => panic!("heapless finish: {e}"),
    }
}
