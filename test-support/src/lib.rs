//! # slapos-test-support — what the workspace's tests share (unpublished)
//!
//! * [`gate`]: the three test tiers' skip gates. A test that needs root, an external tool or
//!   QEMU prints `SKIP <test>: <reason>` and passes, unless its variable
//!   (`SLAPOS_REQUIRE_PRIVILEGED`, `SLAPOS_REQUIRE_TOOLS`, `SLAPOS_REQUIRE_QEMU`) is `1`: then it
//!   fails. CI sets them, so nothing is skipped there unnoticed.
//! * [`wait`]: poll a condition until it holds or a deadline passes ([`wait::wait_for`],
//!   blocking; [`wait::until`], async on the tokio clock).
//! * [`ports`]: blocks of loopback ports no other test, in this process or another, is given
//!   at the same time.
//! * [`bins`]: the workspace binaries, built beforehand (`cargo build --workspace --bins`, as
//!   `scripts/test.sh` does): a test never runs cargo.
//! * [`slap_capture`]: the parser of the recorded SLAP HTTP exchanges
//!   (`proto/tests/fixtures/slap-wire/*.txt`).
//!
//! The fake master link is `node_edge::link::fake::FakeLink`: it lives with the seam it fakes
//! (this crate does not depend on node-edge, so every crate's tests can use it).

pub mod bins;
pub mod gate;
pub mod ports;
pub mod slap_capture;
pub mod wait;
