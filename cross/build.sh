#!/usr/bin/env bash
# Release artefacts of the node-side binaries for the edge targets, without Docker.
#
#   cross/build.sh [--profile P] [--no-init] [--no-report] [TARGET...]
#
# TARGET defaults to x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# armv7-unknown-linux-gnueabihf. Profile defaults to `minsize` (root Cargo.toml: opt-level s, fat
# LTO, 1 CGU, panic abort, strip). Installs what it needs (apt cross gcc, rustup targets) when run
# as root, unless SLAPOS_CROSS_NO_INSTALL=1. Builds, per target, the binaries of
# SLAPOS_CROSS_BINS (default: slapos-node rt-probe slapos-buffer slapos-radio enb-sim; those
# not in the workspace yet are skipped) and, unless --no-init, the board PID 1 `edge-init` (tests
# crate) for targets other than x86_64. Artefacts: <target dir>/<target>/<profile>/<bin>.
# Prints a size report (bytes, linkage, NEEDED) and writes it to <target dir>/cross-report.txt
# (not with --no-report: the board test builds one target and leaves the full report alone);
# fails if a binary needs a shared library beyond the C runtime (libc, libm, libgcc_s, loader) or
# if a musl binary is not static.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CROSS_REPO"

profile=minsize init=1 write_report=1 targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --no-init) init=0; shift ;;
        --no-report) write_report=0; shift ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) cross_log "unknown option $1"; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${CROSS_DEFAULT_TARGETS[@]}")
cross_ensure build "${targets[@]}"
TD=$(cross_target_dir)

# Which wanted binaries exist, as cargo arguments (`-p pkg --bin name`), from cargo metadata.
mapfile -t bin_args < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
want, pkgs = sys.argv[1].split(), sys.argv[2].split()
for p in json.load(sys.stdin)["packages"]:
    if p["name"] not in pkgs:
        continue
    default = set(p["features"].get("default", []))
    for t in p["targets"]:
        if "bin" in t["kind"] and t["name"] in want and set(t.get("required-features", [])) <= default:
            print("-p\n%s\n--bin\n%s" % (p["name"], t["name"]))
' "${CROSS_NODE_BINS[*]}" "${CROSS_NODE_PACKAGES[*]}")
[ ${#bin_args[@]} -gt 0 ] || { cross_log "no node binary found"; exit 1; }
# Dedupe -p (cargo accepts repeats, but keep the command readable).
node_cmd=() seen=" "
for ((i = 0; i < ${#bin_args[@]}; i += 4)); do
    pkg=${bin_args[i+1]} bin=${bin_args[i+3]}
    [[ "$seen" == *" $pkg "* ]] || { node_cmd+=(-p "$pkg"); seen+="$pkg "; }
    node_cmd+=(--bin "$bin")
done

report=$(mktemp)
trap 'rm -f "$report"' EXIT
rustc_v=$(rustc --version)
bad=0
{
    echo "cross size report: profile $profile, $rustc_v, $(date -u +%Y-%m-%dT%H:%MZ)"
    printf '%-31s %-14s %10s %7s  %-8s %s\n' target binary bytes MiB linkage NEEDED
} >"$report"

for t in "${targets[@]}"; do
    t0=$(date +%s.%N)
    cross_log "building ${node_cmd[*]} for $t ($profile)"
    "${CROSS_CARGO[@]}" build --profile "$profile" --target "$t" "${node_cmd[@]}"
    bins=()
    for ((i = 3; i < ${#bin_args[@]}; i += 4)); do bins+=("${bin_args[i]}"); done
    if [ $init = 1 ] && [[ "$t" != x86_64-* ]]; then
        "${CROSS_CARGO[@]}" build --profile "$profile" --target "$t" -p slapos-tests --bin edge-init
        bins+=(edge-init)
    fi
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    cross_log "$t built in ${secs}s"
    for b in "${bins[@]}"; do
        f="$TD/$t/$profile/$b"
        size=$(stat -c %s "$f")
        needed=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd, -)
        if [ -z "$needed" ]; then link=static; else link=dynamic; fi
        for lib in ${needed//,/ }; do
            case "$lib" in
                libc.so.* | libm.so.* | libgcc_s.so.* | ld-linux*.so.* | libpthread.so.* | libdl.so.* | librt.so.*) ;;
                *) cross_log "$t/$b needs $lib: not a C runtime library"; bad=1 ;;
            esac
        done
        if [[ "$t" == *-musl* ]] && [ "$link" != static ]; then
            cross_log "$t/$b is not static"; bad=1
        fi
        printf '%-31s %-14s %10d %7.2f  %-8s %s\n' "$t" "$b" "$size" \
            "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" "$link" "${needed:--}" >>"$report"
    done
    echo "# $t: built in ${secs}s" >>"$report"
done

node=$TD/aarch64-unknown-linux-musl/$profile/slapos-node
if [ -f "$node" ] && [[ " ${targets[*]} " == *" aarch64-unknown-linux-musl "* ]]; then
    size=$(stat -c %s "$node")
    if [ "$size" -le 3000000 ]; then verdict=met; else verdict="NOT met"; fi
    echo "goal: slapos-node static aarch64 <= 3 MB (3000000 B): $size B, $verdict" >>"$report"
fi
cat "$report"
if [ $write_report = 1 ]; then
    mkdir -p "$TD"
    cp "$report" "$TD/cross-report.txt"
    echo "(written to $TD/cross-report.txt)"
fi
exit $bad
