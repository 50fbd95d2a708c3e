#!/usr/bin/env bash
# Installs the amd64 .debs in a clean Debian 12 booted with systemd, runs them, purges them.
#
#   dist/test-install.sh [DEB_DIR]      # DEB_DIR: default <target dir>/dist (scripts/package.sh)
#
# 1. a minimal bookworm rootfs (debootstrap minbase + systemd, dbus, the packages' Depends
#    adduser and ca-certificates, python3 for hello-web), cached
#    in /var/cache/slapos-pkgtest (SLAPOS_PKGTEST_CACHE) and never modified: each run boots an
#    overlay of it, so it starts clean and the overlay's upper layer shows what changed;
# 2. `systemd-nspawn -b` boots it (its own network namespace: loopback only);
# 3. inside: dpkg -i slapos-master, slapos-node, slapos-buffer; slapos-master.service is
#    enabled and running and answers /v1/health; slapos-buffer@plant starts from the shipped
#    example; then slapos-master-standalone.service requests hello-web (the release shipped in
#    /usr/share/slapos-master/examples) and its page answers with the requested title;
# 4. dpkg --purge of all three: no file, user, group, unit or state directory is left (the
#    overlay's changes before install and after purge are compared), apart from the partition
#    users the standalone box's node created (they are the node's, docs/install.md).
# Needs root, debootstrap, systemd-nspawn (systemd-container), overlayfs and the network for a
# cold cache (deb.debian.org or SLAPOS_PKGTEST_MIRROR). Skips with a reason when one is
# missing; fails instead under SLAPOS_REQUIRE_PRIVILEGED=1 / SLAPOS_REQUIRE_TOOLS=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. cross/lib.sh

log() { printf 'pkgtest: %s\n' "$*" >&2; }
skip() { # var reason
    if [ "${!1:-0}" = 1 ]; then log "FAIL: $2 ($1=1 forbids skipping)"; exit 1; fi
    log "SKIP: $2 (set $1=1 to make this a failure)"
    exit 0
}
[ "$(id -u)" = 0 ] || skip SLAPOS_REQUIRE_PRIVILEGED "needs root (debootstrap, systemd-nspawn)"
for tool in debootstrap systemd-nspawn nsenter dpkg-deb; do
    command -v "$tool" >/dev/null || skip SLAPOS_REQUIRE_TOOLS "$tool not found (run scripts/deps/packages.sh)"
done
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    skip SLAPOS_REQUIRE_TOOLS "no overlayfs in this kernel"

debs=${1:-$(cross_target_dir)/dist}
shopt -s nullglob
pkgs=("$debs"/slapos-master_*_amd64.deb "$debs"/slapos-node_*_amd64.deb "$debs"/slapos-buffer_*_amd64.deb)
shopt -u nullglob
[ ${#pkgs[@]} = 3 ] || { log "FAIL: expected the three amd64 .debs in $debs (scripts/package.sh), found: ${pkgs[*]:-none}"; exit 1; }

t0=$(date +%s)
since() { echo "$(( $(date +%s) - t0 ))s"; }

# --- the cached rootfs ----------------------------------------------------------------------
cache=${SLAPOS_PKGTEST_CACHE:-/var/cache/slapos-pkgtest}
include=systemd,systemd-sysv,dbus,adduser,python3,ca-certificates
base=$cache/bookworm-$(printf %s "$include" | sha256sum | cut -c1-12)
if [ ! -x "$base/sbin/init" ]; then
    mkdir -p "$cache"
    rm -rf "$base.tmp"
    log "debootstrap bookworm into $base (once; cached)"
    debootstrap --variant=minbase --include="$include" bookworm "$base.tmp" \
        "${SLAPOS_PKGTEST_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log" >&2; log "FAIL: debootstrap (log: $cache/debootstrap.log)"; exit 1; }
    # No apt timers or getty in the test machine: nothing but the packages under test runs.
    rm -f "$base.tmp"/etc/systemd/system/timers.target.wants/* \
        "$base.tmp"/etc/systemd/system/getty.target.wants/*
    mv "$base.tmp" "$base"
    log "rootfs ready in $(since)"
fi

# --- an overlay of it, booted -----------------------------------------------------------------
run=$(mktemp -d /tmp/slapos-pkgtest.XXXXXX)
machine=slapos-pkgtest-$$
mkdir -p "$run/upper" "$run/work" "$run/root"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$run/root"
nspawn_pid="" cgsub=""
cleanup() {
    local rc=$?
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        ct systemctl poweroff >/dev/null 2>&1 || kill "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    umount "$run/root" 2>/dev/null || umount -l "$run/root" 2>/dev/null || true
    cg_cleanup
    if [ $rc != 0 ]; then log "console of the machine: $run/console.log (kept)"; else rm -rf "$run"; fi
}
trap cleanup EXIT
mkdir -p "$run/root/root/debs"
cp "${pkgs[@]}" "$run/root/root/debs/"

# On a cgroup v1 host, systemd-nspawn mounts the controller hierarchies read-only in the
# machine, where the node's jails (pids, freezer) and rt groups (cpuset, cpu, cpuacct, memory)
# could not be created: once booted, each is replaced in the machine's mount namespace by a
# writable bind of a subtree of the host's hierarchy made for this run (removed after it).
# A v2 host needs nothing: the machine gets its own delegated subtree.
cgs=()
cgsub=slapos-pkgtest-$$
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    for c in pids freezer cpuset cpu cpuacct memory; do
        d=/sys/fs/cgroup/$c
        [ -d "$d" ] && [ ! -L "$d" ] || continue
        mkdir -p "$d/$cgsub"
        if [ "$c" = cpuset ]; then
            cat "$d/cpuset.cpus" >"$d/$cgsub/cpuset.cpus"
            cat "$d/cpuset.mems" >"$d/$cgsub/cpuset.mems"
        fi
        cgs+=("$d")
    done
fi
cg_cleanup() {
    local d
    for d in /sys/fs/cgroup/*/"$cgsub"; do
        [ -d "$d" ] || continue
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || log "could not remove cgroup $d"
    done
}
systemd-nspawn -q -b -D "$run/root" -M "$machine" --private-network --register=no \
    --keep-unit >"$run/console.log" 2>&1 </dev/null &
nspawn_pid=$!
leader=""
for _ in $(seq 100); do
    leader=$(pgrep -P "$nspawn_pid" | head -1 || true)
    [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ] && break
    leader=""
    sleep 0.2
done
[ -n "$leader" ] || { cat "$run/console.log" >&2; log "FAIL: systemd-nspawn did not start systemd"; exit 1; }
# Everything inside runs in the machine's namespaces (no machined needed on the host).
ct() { nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
state=""
for _ in $(seq 120); do
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.5
done
case "$state" in
    running) ;;
    *) ct systemctl --failed --no-pager >&2 || true; log "FAIL: the machine booted '$state', not 'running'"; exit 1 ;;
esac
log "booted Debian 12 with systemd in $(since) (systemd-nspawn -b, private network)"
rw=()
for d in "${cgs[@]}"; do
    rw+=("${d##*/}")
    nsenter -t "$leader" -m sh -c 'mount --bind "$1/$2" "$1" && mount -o remount,bind,rw "$1"' sh "$d" "$cgsub" 2>/dev/null ||
        case "$d" in
            */pids | */freezer) log "FAIL: could not give the machine a writable $d"; exit 1 ;;
            *) log "note: $d stays read-only in the machine (rt partitions unavailable there)"; unset 'rw[-1]' ;;
        esac
done
[ ${#cgs[@]} = 0 ] || log "cgroup v1 host: writable ${rw[*]} subtrees $cgsub bound in the machine"

fail() { log "FAIL: $*"; ct journalctl --no-pager -n 60 >&2 || true; exit 1; }
# What the packages may change, compared before install and after purge: the overlay's upper
# layer (what differs from the pristine rootfs) except logs, caches, dpkg's bookkeeping and
# what a booted system writes anyway; directories of the rootfs that were merely copied up are
# not changes, a whiteout is (a rootfs file was deleted). Plus the account databases' contents.
snapshot() {
    local type path f
    (cd "$run/upper" && find . -mindepth 1 \
        \( -path ./var/log -o -path ./var/cache -o -path ./var/lib/dpkg -o -path ./var/lib/apt \
        -o -path ./var/lib/systemd/random-seed -o -path ./var/lib/systemd/timers \
        -o -path ./var/lib/systemd/catalog -o -path ./var/lib/systemd/pstore \
        -o -path ./run -o -path ./tmp -o -path ./var/tmp -o -path ./root \
        -o -path ./etc/passwd- -o -path ./etc/group- -o -path ./etc/shadow- -o -path ./etc/gshadow- \
        -o -path ./etc/subuid- -o -path ./etc/subgid- -o -path ./etc/.pwd.lock -o -path ./etc/machine-id \
        -o -path ./etc/passwd -o -path ./etc/group -o -path ./etc/shadow -o -path ./etc/gshadow \
        -o -path ./etc/subuid -o -path ./etc/subgid \) \
        -prune -o -printf '%y %P\n' | sort -k2) |
        while read -r type path; do
            if [ "$type" = d ] && [ -d "$base/$path" ]; then continue; fi
            if [ "$type" = c ] && [ "$(stat -c %t:%T "$run/upper/$path")" = 0:0 ]; then
                # deb-systemd-helper purge removes the .wants directories it leaves empty.
                if [[ "$path" == etc/systemd/system/*.wants ]] && [ -z "$(ls -A "$base/$path")" ]; then continue; fi
                echo "deleted /$path"
            else
                echo "$type /$path"
            fi
        done
    for f in passwd group shadow gshadow subuid subgid; do
        [ ! -f "$run/root/etc/$f" ] || sed "s/^/$f: /" "$run/root/etc/$f"
    done
}
snapshot >"$run/before"

# --- install -----------------------------------------------------------------------------------
ct dpkg -i $(for p in "${pkgs[@]}"; do echo "/root/debs/${p##*/}"; done) \
    >"$run/dpkg-install.log" 2>&1 || { cat "$run/dpkg-install.log" >&2; fail "dpkg -i"; }
log "dpkg -i of the three packages: ok ($(since))"

[ "$(ct systemctl is-enabled slapos-master.service)" = enabled ] || fail "slapos-master.service is not enabled"
[ "$(ct systemctl is-active slapos-master.service)" = active ] || fail "slapos-master.service is not active after install"
[ "$(ct systemctl is-enabled slapos-node.service || true)" = disabled ] || fail "slapos-node.service should stay disabled until enrolled"
ct getent passwd slapos-master >/dev/null || fail "no slapos-master user"
[ "$(ct stat -c '%U %a' /var/lib/slapos-master)" = "slapos-master 700" ] || fail "/var/lib/slapos-master is not slapos-master's, 0700"
health() { # port
    ct python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:%s/v1/health" % sys.argv[1], timeout=5).read().decode())' "$1"
}
health 8355 >/dev/null || fail "the packaged master does not answer /v1/health on 127.0.0.1:8355"
ct slapos-master --version >/dev/null || fail "slapos-master --version"
log "slapos-master.service: enabled, active (Type=notify), /v1/health answers, user slapos-master"
# An upgrade (the same package again: postinst configure with the old version) restarts it.
pid0=$(ct systemctl show -p MainPID --value slapos-master.service)
ct dpkg -i "/root/debs/$(basename "${pkgs[0]}")" >>"$run/dpkg-install.log" 2>&1 || fail "dpkg -i again (upgrade)"
pid1=$(ct systemctl show -p MainPID --value slapos-master.service)
[ "$(ct systemctl is-active slapos-master.service)" = active ] && [ "$pid0" != "$pid1" ] ||
    fail "an upgrade did not restart slapos-master.service (pid $pid0 -> $pid1)"
health 8355 >/dev/null || fail "the master does not answer after an upgrade"
log "upgrade (dpkg -i again): slapos-master.service restarted (pid $pid0 -> $pid1), answers"

ct install -m 0640 -g slapos-buffer /usr/share/doc/slapos-buffer/examples/buffer-example.toml /etc/slapos/buffer/plant.toml
ct systemctl start slapos-buffer@plant.service || fail "systemctl start slapos-buffer@plant"
[ "$(ct stat -c %U /var/lib/slapos-buffer/plant)" = slapos-buffer ] || fail "/var/lib/slapos-buffer/plant is not the buffer's"
ct python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:9480/metrics", timeout=5).read()' ||
    fail "slapos-buffer@plant does not answer its metrics on 127.0.0.1:9480"
log "slapos-buffer@plant.service: active, metrics answer"

# --- hello-web through the packaged standalone box ------------------------------------------------
ct systemctl stop slapos-master.service
ct systemctl start slapos-master-standalone.service || fail "systemctl start slapos-master-standalone"
rel=/usr/share/slapos-master/examples/hello-web/software.toml
# Ready (READY=1) means the master serves; its local node registers its computer just after.
for _ in $(seq 60); do
    [ "$(ct slapos-master list --computers --json 2>/dev/null | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" = 1 ] && break
    sleep 0.5
done
ct slapos-master supply "$rel" >/dev/null || fail "slapos-master supply $rel"
out=$(ct slapos-master request web "$rel" --param title=Packaged --wait 180 --json) ||
    fail "slapos-master request web --wait 180 (exit $?): $out"
url=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["connection"]["url"])' "$out" 2>/dev/null) ||
    fail "no url in the connection parameters: $out"
page=$(ct python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$url") ||
    fail "hello-web does not answer at $url"
grep -q Packaged <<<"$page" || fail "hello-web at $url does not show the requested title: $page"
log "hello-web requested through slapos-master-standalone.service answers at $url ($(since))"
ct slapos-master request web "$rel" --state destroyed >/dev/null || fail "destroy web"
ct systemctl stop slapos-master-standalone.service || fail "systemctl stop slapos-master-standalone"
ct systemctl stop slapos-buffer@plant.service

# The operator's own file (dpkg leaves files it did not install, as it should).
ct rm /etc/slapos/buffer/plant.toml
# --- purge -----------------------------------------------------------------------------------------
ct dpkg --purge slapos-buffer slapos-node slapos-master >"$run/dpkg-purge.log" 2>&1 ||
    { cat "$run/dpkg-purge.log" >&2; fail "dpkg --purge"; }
ct systemctl daemon-reload
left=$(ct systemctl list-units --all --no-legend --plain 'slapos*' || true)
[ -z "$left" ] || fail "units left after purge: $left"
snapshot >"$run/after"
# The standalone box's node made the partition users (slapuserN, slapsoft): the node's accounts,
# kept with the partitions' data it may still own (docs/install.md). Anything else is a leak.
extra=$(diff "$run/before" "$run/after" | grep '^[<>]' | grep -v -E '^> (passwd|group|shadow|gshadow|subuid|subgid): (slapuser[0-9]+|slapsoft):' || true)
if [ -n "$extra" ]; then
    fail "left after dpkg --purge (< only before install, > only after purge):
$extra"
fi
kept=$(diff "$run/before" "$run/after" | grep -c '^>' || true)
log "dpkg --purge: no file, unit, user or state directory left (partition accounts kept: $kept lines)"
log "ok in $(since)"
