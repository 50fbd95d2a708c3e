#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what the tests need on a fresh Debian 12
# machine (as root), runs the lint gate, builds the workspace binaries and runs every test.
#
#   scripts/test.sh            # everything
#   SKIP_DEPS=1 scripts/test.sh    # skip the installers (already installed)
#
# Privileged / QEMU / external-tool tests skip with a printed reason unless
# SLAPOS_REQUIRE_PRIVILEGED=1 / SLAPOS_REQUIRE_QEMU=1 / SLAPOS_REQUIRE_TOOLS=1 is set; CI sets all three.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
# Each step also shows the free disk: a full disk fails tests far from its cause.
step() {
  printf '\n==> [%4ss] %s (free: %s)\n' "$(( $(date +%s) - t0 ))" "$*" \
    "$(df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' ')"
}

if [ "${SKIP_DEPS:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ] && [ ! -e /var/lib/apt/lists/lock.slapos-updated ]; then
    step "apt-get update"
    apt-get update -qq && touch /var/lib/apt/lists/lock.slapos-updated
  fi
  for f in scripts/deps/*.sh; do
    [ -e "$f" ] || continue
    step "deps: $f"
    bash "$f"
  done
fi

step "rustup components (toolchain pinned by rust-toolchain.toml)"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "lint: cargo fmt --check"
cargo fmt --all --check
step "lint: cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "build workspace binaries (end-to-end tests run them)"
cargo build --workspace --bins

step "cargo test --workspace"
cargo test --workspace --no-fail-fast

# The API suites again on a real PostgreSQL (its own initdb cluster; docs/fleet.md): native,
# authorization matrices (native and SLAP over mTLS), JSON-RPC, classic SLAP and /hateoas with
# the real client, federation, a node's long poll over mTLS. The store unit tests and tests/fleet_*.rs already ran on both engines above.
step "master-lite API suites on PostgreSQL"
SLAPOS_TEST_DB=postgres cargo test -p master-lite --no-fail-fast --test router --test auth \
  --test slap_auth --test slap_json_rpc --test slap_cli --test federation --test long_poll

for f in scripts/checks/*.sh; do
  [ -e "$f" ] || continue
  step "check: $f"
  bash "$f"
done
step "all tests passed"
