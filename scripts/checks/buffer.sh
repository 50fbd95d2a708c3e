#!/usr/bin/env bash
# Extra checks for the `buffer` crate beyond `cargo test`:
#  1. the frame codec builds as no_std for a Cortex-M4F (sensor firmware), with no `std` feature
#     anywhere in its dependency graph;
#  2. the OPC-UA input builds (feature `opcua`, off by default).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=thumbv7em-none-eabihf
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
cargo build -p buffer --lib --no-default-features --target "$target"
if cargo tree -p buffer --no-default-features --target "$target" -e no-dev,no-build,features \
    | grep -E '"std"' ; then
    echo "buffer codec: a std feature is enabled for $target" >&2
    exit 1
fi
echo "buffer codec: no_std build for $target ok"
if [[ "${SLAPOS_BUFFER_CHECK_OPCUA:-1}" == 1 ]]; then
    cargo check -p buffer --features opcua --bins
    echo "buffer: opcua feature builds"
fi
