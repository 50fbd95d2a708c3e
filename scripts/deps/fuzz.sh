#!/usr/bin/env bash
# The fuzz check's tools (fuzz/README.md): cargo-fuzz (from crates.io, pinned, --locked) and a
# C++ compiler (libfuzzer-sys builds libFuzzer from source). Idempotent; the stable toolchain
# of rust-toolchain.toml is enough (the targets are built with `--sanitizer none`).
set -euo pipefail
CARGO_FUZZ_VERSION=0.13.2

if ! command -v c++ >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends g++ || { apt-get update && apt-get install -y --no-install-recommends g++; }
    else
        echo "fuzz deps: no C++ compiler and not root; install g++ (the fuzz check skips)" >&2
    fi
fi

if cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "fuzz deps: cargo-fuzz $CARGO_FUZZ_VERSION present"
    exit 0
fi
cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
echo "fuzz deps: cargo-fuzz $CARGO_FUZZ_VERSION installed"
