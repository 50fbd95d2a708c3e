#!/usr/bin/env bash
# Extra checks for the `buffer` crate beyond `cargo test`:
#  1. the frame codec builds as no_std for a Cortex-M4F (sensor firmware), with no `std` feature
#     anywhere in its dependency graph;
#  2. the OPC-UA input (feature `opcua`, off by default) against a real OPC-UA server.
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
# The OPC-UA input against a real OPC-UA server (async-opcua's, in-process); heavy to build,
# so it lives here rather than in the default `cargo test`. SLAPOS_BUFFER_CHECK_OPCUA=0 skips it.
if [[ "${SLAPOS_BUFFER_CHECK_OPCUA:-1}" == 1 ]]; then
    cargo test -p buffer --features opcua-test-server --test opcua
    echo "buffer: opcua input tested"
fi
