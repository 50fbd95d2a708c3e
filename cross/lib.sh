# Shared by cross/build.sh, cross/test-emulated.sh and scripts/deps/cross.sh (source it).
# Installs what the native cross path needs, idempotently, and names the defaults.

CROSS_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The three release targets: static musl for x86_64/aarch64; armv7 is glibc (gnueabihf) because
# 1.95.0 ships no rust-std for armv7-unknown-linux-musleabihf (docs/cross.md).
CROSS_DEFAULT_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
# Packages built for the targets: the node-side ones (shipped to boards) and the master.
CROSS_PACKAGES=(node-edge rt buffer radio master-lite)
# The binaries of the release artefacts (built when they exist), node-side and the master.
CROSS_BINS=(${SLAPOS_CROSS_BINS:-slapos-node rt-probe rt-report slapos-buffer slapos-radio enb-sim slapos-master})
# Cargo profile of a package's artefacts when cross/build.sh is not given --profile: `minsize`
# for the node side (size-critical, panic = abort), `release` for the master (a server: it
# keeps unwinding, so a panicking request handler does not take the process down, and full
# speed), stripped by cross/build.sh (CARGO_PROFILE_RELEASE_STRIP).
cross_package_profile() { # package
    case "$1" in
        master-lite) echo release ;;
        *) echo minsize ;;
    esac
}
# Cargo features of the release artefacts, per package and target (beyond the defaults). The
# buffer ships its OPC-UA input (async-opcua client, ~+7.6 MiB; docs/buffer.md) on every target
# in SLAPOS_CROSS_OPCUA_TARGETS (default: all; "" = none, e.g. for a sensor gateway without
# PLCs). CI builds it for aarch64 only: its fat-LTO link costs minutes per target (docs/cross.md).
cross_package_features() { # package target
    case "$1" in
        buffer)
            local t
            for t in ${SLAPOS_CROSS_OPCUA_TARGETS-$2}; do
                [ "$t" != "$2" ] || { echo opcua; return; }
            done
            ;;
    esac
}
# Targets a package is built for (default: every target asked for). slapos-master: those in
# SLAPOS_CROSS_MASTER_TARGETS when it is set ("" = none).
cross_package_wanted() { # package target
    local t
    case "$1" in
        master-lite)
            [ -n "${SLAPOS_CROSS_MASTER_TARGETS+x}" ] || return 0
            for t in $SLAPOS_CROSS_MASTER_TARGETS; do [ "$t" != "$2" ] || return 0; done
            return 1
            ;;
    esac
}
# What CI builds (scripts/checks/cross.sh and packages.sh, so both see the same artefacts):
# the OPC-UA buffer for aarch64 only (its fat-LTO link costs minutes per target) and the master
# for x86_64 only (a cold release build of it is ~5 min per target; x86_64 is what the install
# test runs). A variable already set wins (docs/cross.md).
cross_ci_defaults() {
    export SLAPOS_CROSS_OPCUA_TARGETS="${SLAPOS_CROSS_OPCUA_TARGETS-aarch64-unknown-linux-musl}"
    export SLAPOS_CROSS_MASTER_TARGETS="${SLAPOS_CROSS_MASTER_TARGETS-x86_64-unknown-linux-musl}"
}
CROSS_CARGO=(cargo --config "$CROSS_REPO/cross/config.toml")

cross_log() { printf 'cross: %s\n' "$*" >&2; }

# apt packages a target needs to link (and, with `run`, to run under qemu-user).
cross_apt_packages() { # target [run]
    case "$1" in
        aarch64-*) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu ;;
        armv7-*) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross binutils-arm-linux-gnueabihf ;;
    esac
    case "$1:${2:-}" in
        aarch64-*:run | armv7-*:run) echo qemu-user-static ;;
    esac
}

# Install missing apt packages (root only; otherwise say what is missing and fail).
cross_ensure_apt() { # pkg...
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || [ "${SLAPOS_CROSS_NO_INSTALL:-0}" = 1 ]; then
        cross_log "missing apt packages: ${missing[*]} (run scripts/deps/cross.sh as root)"
        return 1
    fi
    cross_log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y \
        --no-install-recommends "${missing[@]}" >/dev/null
}

# rustup targets (no-op when installed; the toolchain comes from rust-toolchain.toml).
cross_ensure_targets() { # target...
    command -v rustup >/dev/null || return 0
    local installed t missing=()
    installed=$(cd "$CROSS_REPO" && rustup target list --installed)
    for t in "$@"; do grep -qx "$t" <<<"$installed" || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "${SLAPOS_CROSS_NO_INSTALL:-0}" = 1 ]; then
        cross_log "missing rustup targets: ${missing[*]}"
        return 1
    fi
    (cd "$CROSS_REPO" && rustup target add "${missing[@]}")
}

# Everything needed to build (and with `run`, test) for the given targets.
cross_ensure() { # run|build target...
    local mode=$1 t pkgs=()
    shift
    for t in "$@"; do
        # shellcheck disable=SC2207
        pkgs+=($(cross_apt_packages "$t" "$mode"))
    done
    [ ${#pkgs[@]} -eq 0 ] || cross_ensure_apt $(printf '%s\n' "${pkgs[@]}" | sort -u)
    cross_ensure_targets "$@"
}

# The cargo target directory (CARGO_TARGET_DIR, else the workspace's target/).
cross_target_dir() {
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR"; else echo "$CROSS_REPO/target"; fi
}
