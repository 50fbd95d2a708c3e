#!/usr/bin/env bash
# Release artefacts of the node-side binaries and the master for the edge targets, without Docker.
#
#   cross/build.sh [--profile P] [--bins a,b] [--no-init] [--no-report] [TARGET...]
#
# TARGET defaults to x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# armv7-unknown-linux-gnueabihf. Profile: --profile P for every package, else per package
# (cross_package_profile, cross/lib.sh): `minsize` for the node side (root Cargo.toml: opt-level z,
# fat LTO, 1 CGU, panic abort, strip), `release` for slapos-master (stripped here). Installs what
# it needs (apt cross gcc, rustup targets) when run as root, unless SLAPOS_CROSS_NO_INSTALL=1.
# Binaries: --bins, else SLAPOS_CROSS_BINS, else "slapos-node rt-probe rt-report slapos-buffer
# slapos-radio enb-sim slapos-master" (those not in the workspace are skipped), plus the board
# PID 1 `edge-init` (tests crate)
# for non-x86_64 targets unless --no-init. One cargo invocation per package, so a package's
# artefacts do not depend on which others are built (the board test builds only the node and
# edge-init with the very same commands and shares the artefacts), and a package that fails to
# build does not stop the others: the failure is reported and the script exits 1 at the end.
# slapos-master is built for the targets in SLAPOS_CROSS_MASTER_TARGETS when it is set.
# Features: cross_package_features (cross/lib.sh) — slapos-buffer is built with `opcua`
# (SLAPOS_CROSS_OPCUA_TARGETS limits where).
# Artefacts: <target dir>/<target>/<profile>/<bin>, listed ("target bin path" per line) in
# <target dir>/cross-artifacts.txt (merged with earlier runs; scripts/package.sh reads it).
# Prints a size report (bytes, linkage, NEEDED) and writes it to <target dir>/cross-report.txt
# (not with --no-report); fails if a binary needs a shared library beyond the C runtime (libc,
# libm, libgcc_s, loader) or if a musl binary is not static.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CROSS_REPO"

profile="" init=1 write_report=1 targets=() wanted=("${CROSS_BINS[@]}")
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --bins) IFS=, read -ra wanted <<<"$2"; shift 2 ;;
        --no-init) init=0; shift ;;
        --no-report) write_report=0; shift ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        -*) cross_log "unknown option $1"; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${CROSS_DEFAULT_TARGETS[@]}")
cross_ensure build "${targets[@]}"
TD=$(cross_target_dir)

# "package bin bin…" per line, for the wanted binaries that exist (cargo metadata); bins whose
# required features are not default are left out.
mapfile -t plan < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
want, pkgs = sys.argv[1].split(), sys.argv[2].split()
for p in json.load(sys.stdin)["packages"]:
    if p["name"] not in pkgs:
        continue
    default = set(p["features"].get("default", []))
    bins = [t["name"] for t in p["targets"] if "bin" in t["kind"] and t["name"] in want
            and set(t.get("required-features", [])) <= default]
    if bins:
        print(" ".join([p["name"]] + bins))
' "${wanted[*]}" "${CROSS_PACKAGES[*]}")
[ ${#plan[@]} -gt 0 ] || { cross_log "none of ${wanted[*]} is a binary of ${CROSS_PACKAGES[*]}"; exit 1; }

report=$(mktemp) artifacts=$(mktemp)
trap 'rm -f "$report" "$artifacts"' EXIT
bad=0
{
    echo "cross size report: profile ${profile:-minsize (node side), release (slapos-master)}, $(rustc --version), $(date -u +%Y-%m-%dT%H:%MZ)"
    printf '%-31s %-14s %10s %7s  %-8s %s\n' target binary bytes MiB linkage NEEDED
} >"$report"

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# Size, linkage and NEEDED of one artefact into the report; 1 if it breaks a rule.
inspect() { # target profile bin
    local t=$1 b=$3 f size needed link lib rc=0
    f="$TD/$t/$2/$b"
    printf '%s %s %s\n' "$t" "$b" "$f" >>"$artifacts"
    size=$(stat -c %s "$f")
    needed=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd, -)
    if [ -z "$needed" ]; then link=static; else link=dynamic; fi
    for lib in ${needed//,/ }; do
        case "$lib" in
            libc.so.* | libm.so.* | libgcc_s.so.* | ld-linux*.so.* | libpthread.so.* | libdl.so.* | librt.so.*) ;;
            *) cross_log "$t/$b needs $lib: not a C runtime library"; rc=1 ;;
        esac
    done
    if [[ "$t" == *-musl* ]] && [ "$link" != static ]; then
        cross_log "$t/$b is not static"; rc=1
    fi
    printf '%-31s %-14s %10d %7.2f  %-8s %s\n' "$t" "$b" "$size" \
        "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" "$link" "${needed:--}" >>"$report"
    return $rc
}

# minsize artefacts are panic = "abort": they never unwind, so they are linked without the
# unwinder's .eh_frame_hdr index (~115 KB of the static aarch64 node; docs/cross.md). Its only
# other reader is a panic's backtrace, which a stripped binary cannot symbolise anyway.
# Other profiles (the master's `release`) unwind, so they keep it; `release` is stripped here
# (CARGO_PROFILE_RELEASE_STRIP: the root Cargo.toml's release profile keeps symbols for
# developers).
build_env() { # target profile -> env assignments for `env`
    [ "$2" != release ] || echo "CARGO_PROFILE_RELEASE_STRIP=symbols"
    [ "$2" = minsize ] || return 0
    local var="CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$1")_RUSTFLAGS"
    case "$1" in
        *-musl*) echo "$var=-Clink-arg=--no-eh-frame-hdr" ;; # rust-lld (cross/config.toml)
        *) echo "$var=-Clink-arg=-Wl,--no-eh-frame-hdr" ;;    # the cross gcc driver
    esac
}

for t in "${targets[@]}"; do
    t0=$(date +%s.%N)
    steps=("${plan[@]}")
    if [ $init = 1 ] && [[ "$t" != x86_64-* ]]; then steps+=("slapos-tests edge-init"); fi
    for step in "${steps[@]}"; do
        read -ra words <<<"$step"
        cross_package_wanted "${words[0]}" "$t" || { cross_log "$t: ${words[0]} not wanted here (SLAPOS_CROSS_MASTER_TARGETS)"; continue; }
        args=(-p "${words[0]}")
        features=$(cross_package_features "${words[0]}" "$t")
        [ -z "$features" ] || args+=(--features "$features")
        for b in "${words[@]:1}"; do args+=(--bin "$b"); done
        p=${profile:-$(cross_package_profile "${words[0]}")}
        mapfile -t envs < <(build_env "$t" "$p")
        s0=$(date +%s.%N)
        cross_log "$t: ${envs[*]} cargo build --profile $p ${args[*]}"
        if env "${envs[@]}" "${CROSS_CARGO[@]}" build --profile "$p" --target "$t" "${args[@]}"; then
            cross_log "$t: ${words[0]} built in $(since "$s0")s"
            for b in "${words[@]:1}"; do inspect "$t" "$p" "$b" || bad=1; done
        else
            cross_log "$t: ${words[0]} FAILED to build"
            printf '%-31s %-14s FAILED to build (package %s)\n' "$t" "${words[*]:1}" "${words[0]}" >>"$report"
            bad=1
        fi
    done
    echo "# $t: $(since "$t0")s" >>"$report"
done

node=$TD/aarch64-unknown-linux-musl/${profile:-$(cross_package_profile node-edge)}/slapos-node
if [[ " ${targets[*]} " == *" aarch64-unknown-linux-musl "* ]] && [ -f "$node" ]; then
    size=$(stat -c %s "$node")
    if [ "$size" -le 3000000 ]; then verdict=met; else verdict="NOT met"; fi
    echo "goal: slapos-node static aarch64 <= 3 MB (3000000 B): $size B, $verdict" >>"$report"
fi
cat "$report"
mkdir -p "$TD"
# This run's artefacts replace the same (target, bin) lines of earlier runs.
touch "$TD/cross-artifacts.txt"
awk 'NR == FNR { new[$1 " " $2] = 1; print; next } !(($1 " " $2) in new)' \
    "$artifacts" "$TD/cross-artifacts.txt" | sort >"$TD/cross-artifacts.txt.new"
mv "$TD/cross-artifacts.txt.new" "$TD/cross-artifacts.txt"
if [ $write_report = 1 ]; then
    cp "$report" "$TD/cross-report.txt"
    echo "(written to $TD/cross-report.txt)"
fi
exit $bad
