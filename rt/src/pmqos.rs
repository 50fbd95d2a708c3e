//! PM-QoS: holding `/dev/cpu_dma_latency` at 0 keeps CPUs out of deep idle states while the
//! descriptor stays open (what cyclictest does by default). Measured on the reference VM it
//! halves the average wake-up latency (crates.md §1a), so the manager holds it while RT
//! partitions run and the probe holds it during a measurement.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Opens `path` (normally `/dev/cpu_dma_latency`) and writes a 0 µs latency request; the
/// request lasts until the returned file is dropped.
pub fn hold_zero(path: &Path) -> io::Result<File> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(&0i32.to_ne_bytes())?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_binary_zero_and_fails_on_missing_device() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cpu_dma_latency");
        std::fs::write(&p, b"xxxxxxxx").unwrap();
        let f = hold_zero(&p).unwrap();
        drop(f);
        assert_eq!(&std::fs::read(&p).unwrap()[..4], &[0, 0, 0, 0]);
        assert_eq!(
            hold_zero(&dir.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
