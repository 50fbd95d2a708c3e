#!/usr/bin/env bash
# Seeds of buffer_frame and buffer_recovery (fuzz/README.md): real segment files written by the
# buffer's own log on its in-memory filesystem (one small, one with a gap marker after a
# dropped batch), and their first frames alone. Builds a scratch program against ../buffer.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
cat >"$scratch/Cargo.toml" <<TOML
[package]
name = "buffer-seeds"
version = "0.0.0"
edition = "2024"
publish = false
[dependencies]
buffer = { path = "$REPO/buffer" }
[workspace]
TOML
cat >"$scratch/src/main.rs" <<'RS'
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use buffer::codec::FrameView;
use buffer::fs::{Fs, MemFs};
use buffer::segment::seg_name;
use buffer::{FullPolicy, Log, LogConfig, Now};

fn main() {
    let out = Path::new(&std::env::args().nth(1).expect("out dir")).to_path_buf();
    let o = Instant::now();
    let at = |t: u64| Now { mono: o + Duration::from_millis(t), wall_ms: 1_700_000_000_000 + t as i64 };
    for (name, n, drop_batch) in [("small", 12u64, false), ("gap", 20, true)] {
        let fs = MemFs::new();
        let mut cfg = LogConfig::new("/buf", "s");
        cfg.segment_bytes = 1 << 20;
        cfg.frame_bytes = 256;
        cfg.batch_bytes = 512;
        cfg.max_bytes = 64 << 20;
        if drop_batch {
            cfg.full_policy = FullPolicy::DropNewest;
        }
        let (mut log, _) = Log::open_with(Arc::new(fs.clone()) as Arc<dyn Fs>, cfg, at(0)).unwrap();
        for i in 1..=n {
            let payload = format!("{{\"t\":{i},\"v\":{}}}", i * 7);
            log.append(i as i64, (i % 3) as u16, b"sensors/a", payload.as_bytes(), at(i)).unwrap();
            if i % 5 == 0 {
                if drop_batch && i == 10 {
                    fs.set_capacity(Some(fs.used_bytes()));
                }
                let _ = log.flush(at(i));
                fs.set_capacity(None);
            }
        }
        log.flush(at(100)).unwrap();
        log.close(at(101)).unwrap();
        let seg = fs.read_file(&Path::new("/buf/s").join(seg_name(1))).unwrap();
        std::fs::write(out.join(format!("buffer_recovery/seed-{name}")), &seg).unwrap();
        let f = FrameView::parse(&seg[32..]).unwrap();
        let len = f.header.frame_len();
        std::fs::write(out.join(format!("buffer_frame/seed-{name}")), &seg[32..32 + len]).unwrap();
    }
}
RS
mkdir -p "$REPO/fuzz/corpus/buffer_recovery" "$REPO/fuzz/corpus/buffer_frame"
cargo run -q --manifest-path "$scratch/Cargo.toml" -- "$REPO/fuzz/corpus"
ls -l "$REPO/fuzz/corpus/buffer_recovery" "$REPO/fuzz/corpus/buffer_frame"
