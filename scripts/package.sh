#!/usr/bin/env bash
# Release tarballs and Debian packages from the cross/build.sh artefacts (docs/install.md).
#
#   scripts/package.sh [--build] [--out DIR] [--no-deb] [--no-tarball] [TARGET...]
#
# TARGET defaults to the three of cross/build.sh. Reads the artefacts listed in
# <target dir>/cross-artifacts.txt (written by cross/build.sh; --build runs it first for the
# TARGETs). Writes to DIR (default <target dir>/dist), replacing what a previous run wrote there:
#   slapos-edge-<version>-<target>.tar.gz   static binaries (armv7: glibc), systemd units,
#                                           example configs, examples, README.md, docs/
#   <pkg>_<version>_<arch>.deb              slapos-master, slapos-node, slapos-buffer for amd64,
#                                           arm64, armhf (dpkg-deb --build from a staged tree)
#   SHA256SUMS                              sha256sum -c SHA256SUMS verifies them
#   MANIFEST.tsv                            file, size, sha256, target, version, git commit
# Shell completions and man pages come from scripts/gen-cli-docs.sh OUTDIR BIN when it exists
# (else they are left out, with a note). The output is reproducible: file times are the
# commit's time (SOURCE_DATE_EPOCH), owners root, gzip without names.
# Needs dpkg-deb, fakeroot is not needed (dpkg-deb --root-owner-group).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../cross/lib.sh"
cd "$CROSS_REPO"

build=0 out="" deb=1 tarball=1 targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1; shift ;;
        --out) out=$2; shift 2 ;;
        --no-deb) deb=0; shift ;;
        --no-tarball) tarball=0; shift ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        -*) echo "package: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${CROSS_DEFAULT_TARGETS[@]}")
TD=$(cross_target_dir)
out=${out:-$TD/dist}
log() { printf 'package: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if [ $build = 1 ]; then cross/build.sh --no-init "${targets[@]}"; fi
[ -f "$TD/cross-artifacts.txt" ] ||
    die "no $TD/cross-artifacts.txt: build first (cross/build.sh ${targets[*]}, or pass --build)"

version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "master-lite"))')
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit-dirty"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# The artefact of one binary for one target (cross-artifacts.txt), or nothing.
artifact() { # target bin
    awk -v t="$1" -v b="$2" '$1 == t && $2 == b { print $3 }' "$TD/cross-artifacts.txt"
}
deb_arch() {
    case "$1" in
        x86_64-*) echo amd64 ;;
        aarch64-*) echo arm64 ;;
        armv7-*gnueabihf | armv7-*musleabihf) echo armhf ;;
        *) die "no Debian architecture for $1" ;;
    esac
}
# Binaries of each Debian package (those built are packaged; slapos-master/node/buffer must be).
pkg_bins() {
    case "$1" in
        slapos-master) echo slapos-master ;;
        slapos-node) echo slapos-node rt-probe rt-report slapos-radio enb-sim ;;
        slapos-buffer) echo slapos-buffer ;;
    esac
}
pkg_crate() {
    case "$1" in
        slapos-master) echo master-lite ;;
        slapos-node) echo node-edge ;;
        slapos-buffer) echo buffer ;;
    esac
}
pkg_units() {
    case "$1" in
        slapos-master) echo slapos-master.service slapos-master-standalone.service ;;
        slapos-node) echo slapos-node.service ;;
        slapos-buffer) echo slapos-buffer@.service ;;
    esac
}
PACKAGES=(slapos-master slapos-node slapos-buffer)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -f "$out"/slapos-edge-*.tar.gz "$out"/slapos-*.deb "$out/SHA256SUMS" "$out/MANIFEST.tsv"

# Completions and man pages, once (they do not depend on the target).
clidocs=""
if [ -x scripts/gen-cli-docs.sh ]; then
    clidocs=$work/cli-docs
    mkdir -p "$clidocs" "$work/host-bin"
    # It runs the programs (`slapos-master completions`, `man`, the others' --help), found next to
    # the slapos-master it is given: the x86_64 artefacts when this host runs them, else the
    # workspace's debug build.
    master=target/debug/slapos-master
    if [ "$(uname -m)" = x86_64 ] && [ -n "$(artifact x86_64-unknown-linux-musl slapos-master)" ]; then
        while read -r _ b f; do ln -sf "$f" "$work/host-bin/$b"; done \
            < <(awk '$1 == "x86_64-unknown-linux-musl"' "$TD/cross-artifacts.txt")
        master=$work/host-bin/slapos-master
    fi
    scripts/gen-cli-docs.sh "$clidocs" "$master" >&2 || die "scripts/gen-cli-docs.sh $clidocs $master failed"
    log "completions and man pages from scripts/gen-cli-docs.sh: $(cd "$clidocs" && find . -type f | sort | tr '\n' ' ')"
else
    log "note: no scripts/gen-cli-docs.sh: packages and tarballs ship no completions or man pages"
fi
# The files gen-cli-docs.sh produced, by kind: "kind path" lines. Recognised by name:
# *.1 (man), *.bash / bash/*, *.zsh / _NAME, *.fish.
cli_files() {
    [ -n "$clidocs" ] || return 0
    local f base
    while IFS= read -r f; do
        base=${f##*/}
        case "$f" in
            *.1 | *.1.gz) echo "man $f" ;;
            *.fish) echo "fish $f" ;;
            *.zsh | */_*) echo "zsh $f" ;;
            *.bash | */bash/* | */bash-completion/*) echo "bash $f" ;;
            *) log "gen-cli-docs.sh: $base: kind unknown, not packaged" ;;
        esac
    done < <(find "$clidocs" -type f | sort)
}
# Installs the completions/man pages of the binaries of a package into a staged root. A file is
# a binary's when its name (without extension or zsh's leading _) is the binary's name, or for
# man pages starts with it and a dash (slapos-master-serve.1).
stage_cli_docs() { # root bin...
    local root=$1 kind f base name b owner
    shift
    while read -r kind f; do
        base=${f##*/}
        name=${base%%.*}
        name=${name#_}
        owner=""
        for b in "$@"; do
            if [ "$name" = "$b" ] || { [ "$kind" = man ] && [[ "$name" == "$b"-* ]]; }; then owner=$b; fi
        done
        [ -n "$owner" ] || continue
        case "$kind" in
            man) mkdir -p "$root/usr/share/man/man1"
                 if [[ "$f" == *.gz ]]; then gzip -dc "$f"; else cat "$f"; fi |
                     gzip -9n >"$root/usr/share/man/man1/$name.1.gz"
                 chmod 0644 "$root/usr/share/man/man1/$name.1.gz" ;;
            bash) install -D -m 0644 "$f" "$root/usr/share/bash-completion/completions/$owner" ;;
            zsh) install -D -m 0644 "$f" "$root/usr/share/zsh/vendor-completions/_$owner" ;;
            fish) install -D -m 0644 "$f" "$root/usr/share/fish/vendor_completions.d/$owner.fish" ;;
        esac
    done < <(cli_files)
}

manifest=$work/manifest.tsv
: >"$manifest"
record() { # file target
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${1##*/}" "$(stat -c %s "$1")" \
        "$(sha256sum "$1" | cut -d' ' -f1)" "$2" "$version" "$commit" >>"$manifest"
}
# Deterministic tar.gz of DIR's content under its basename.
tar_gz() { # dir out
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$(dirname "$1")" -cf - "$(basename "$1")" | gzip -9n >"$2"
}

# Copies a binary, stripped: the minsize slapos-buffer keeps its symbol table (~0.4 MB; its
# per-package profile override, root Cargo.toml), lintian's unstripped-binary-or-object.
install_bin() { # target src dest
    local tool=strip
    case "$1" in
        aarch64-*) tool=aarch64-linux-gnu-strip ;;
        armv7-*) tool=arm-linux-gnueabihf-strip ;;
    esac
    install -m 0755 "$2" "$3"
    "$tool" --strip-all "$3"
}

# The highest GLIBC_x.y symbol version a dynamic binary needs (nothing for a static one).
glibc_floor() { # file
    { objdump -T "$1" 2>/dev/null || true; } | { grep -o 'GLIBC_[0-9.]*' || true; } |
        sed 's/GLIBC_//' | sort -uV | tail -1
}

# --- tarballs -------------------------------------------------------------------------------
make_tarball() { # target
    local t=$1 name dir b f
    name=slapos-edge-$version-$t
    dir=$work/$name
    mkdir -p "$dir/bin" "$dir/systemd" "$dir/config" "$dir/docs" "$dir/examples"
    for pkg in "${PACKAGES[@]}"; do
        for b in $(pkg_bins "$pkg"); do
            f=$(artifact "$t" "$b")
            [ -n "$f" ] && [ -f "$f" ] || continue
            install_bin "$t" "$f" "$dir/bin/$b"
        done
    done
    install -m 0644 dist/systemd/*.service "$dir/systemd/"
    install -m 0644 dist/config/*.toml "$dir/config/"
    install -m 0644 README.md "$dir/"
    install -m 0644 docs/*.md "$dir/docs/"
    cp -r examples/hello-web "$dir/examples/"
    if [ -n "$clidocs" ]; then
        mkdir -p "$dir/share"
        stage_cli_docs "$dir/share" $(ls "$dir/bin")
        [ -d "$dir/share/usr/share" ] && mv "$dir/share/usr/share"/* "$dir/share/" && rm -rf "$dir/share/usr"
    fi
    (cd "$dir" && find . -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum >SHA256SUMS)
    tar_gz "$dir" "$out/$name.tar.gz"
    record "$out/$name.tar.gz" "$t"
    log "$name.tar.gz: $(stat -c %s "$out/$name.tar.gz") B, $(ls "$dir/bin" | wc -l) binaries"
}

# --- Debian packages ------------------------------------------------------------------------
# Maintainer scripts: what dh_installsystemd generates, written out (deb-systemd-helper,
# deb-systemd-invoke: package init-system-helpers, essential on Debian systems with systemd).
# $ENABLE: units enabled and started at install; $OTHER: units only reloaded/restarted.
postinst_units() { # enable-units other-units
    cat <<EOF
if [ "\$1" = configure ] || [ "\$1" = abort-upgrade ] || [ "\$1" = abort-deconfigure ] || [ "\$1" = abort-remove ]; then
    for unit in $1; do
        deb-systemd-helper unmask "\$unit" >/dev/null || true
        if deb-systemd-helper --quiet was-enabled "\$unit"; then
            deb-systemd-helper enable "\$unit" >/dev/null || true
        else
            deb-systemd-helper update-state "\$unit" >/dev/null || true
        fi
    done
    for unit in $2; do
        deb-systemd-helper unmask "\$unit" >/dev/null || true
        if deb-systemd-helper debian-installed "\$unit"; then
            deb-systemd-helper update-state "\$unit" >/dev/null || true
        fi
    done
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        for unit in $1; do
            if [ -n "\$2" ]; then deb-systemd-invoke restart "\$unit" >/dev/null || true
            else deb-systemd-invoke start "\$unit" >/dev/null || true; fi
        done
        if [ -n "\$2" ]; then
            for unit in $2; do
                case "\$unit" in
                    *@.service) systemctl try-restart "\${unit%.service}*.service" >/dev/null 2>&1 || true ;;
                    *) deb-systemd-invoke try-restart "\$unit" >/dev/null || true ;;
                esac
            done
        fi
    fi
fi
EOF
}

stage_deb() { # pkg target
    local pkg=$1 t=$2 arch root b f u floor depends="" synopsis desc enable other doc
    arch=$(deb_arch "$t")
    root=$work/deb-$pkg-$arch
    doc=$root/usr/share/doc/$pkg
    mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$doc"
    local bins=()
    for b in $(pkg_bins "$pkg"); do
        f=$(artifact "$t" "$b")
        if [ -z "$f" ] || [ ! -f "$f" ]; then
            [ "$b" != "$pkg" ] || die "$t: $b was not built (cross/build.sh $t)"
            continue
        fi
        install_bin "$t" "$f" "$root/usr/bin/$b"
        bins+=("$b")
    done
    for u in $(pkg_units "$pkg"); do
        sed "s|file:///usr/share/doc/slapos-edge/|file:///usr/share/doc/$pkg/|" "dist/systemd/$u" \
            >"$root/usr/lib/systemd/system/$u"
        chmod 0644 "$root/usr/lib/systemd/system/$u"
    done
    stage_cli_docs "$root" "${bins[@]}"
    install -m 0644 docs/install.md "$doc/install.md"
    install -m 0644 README.md "$doc/README.md"
    case "$pkg" in
        slapos-master)
            install -D -m 0644 dist/config/master.toml "$root/etc/slapos/master.toml"
            install -m 0644 docs/cli.md docs/master-lite.md docs/identity.md "$doc/"
            mkdir -p "$root/usr/share/slapos-master/examples"
            cp -r examples/hello-web "$root/usr/share/slapos-master/examples/"
            synopsis="SlapOS master over embedded SQLite, its CLI and the standalone box"
            desc="The SlapOS master: the API over an embedded SQLite database (or PostgreSQL),
its command line client and the standalone box (master and local node in one
process). slapos-master.service is enabled and started at install (loopback,
plain HTTP: /etc/slapos/master.toml); slapos-master-standalone.service, which
conflicts with it, is not."
            enable=slapos-master.service other=slapos-master-standalone.service ;;
        slapos-node)
            install -D -m 0644 dist/config/node.toml "$root/etc/slapos/node.toml"
            install -m 0644 docs/node.md docs/rt.md docs/radio.md "$doc/"
            synopsis="SlapOS node: runs this computer's partitions for its master"
            desc="The SlapOS node converges this computer to its master's desired state
(partitions as unix users, cgroups, real-time scheduling), with rt-probe,
rt-report and the radio tools. slapos-node.service needs enrollment first and
is not started at install."
            enable="" other=slapos-node.service ;;
        slapos-buffer)
            mkdir -p "$root/etc/slapos/buffer"
            install -D -m 0644 dist/config/buffer-example.toml "$doc/examples/buffer-example.toml"
            install -m 0644 docs/buffer.md docs/buffer-format.md "$doc/"
            synopsis="SlapOS store-and-forward buffer for sensor data"
            desc="The SlapOS buffer keeps sensor data (MQTT, TCP, serial, OPC-UA) on disk and
forwards it to an uplink once durable. slapos-buffer@NAME.service runs
/etc/slapos/buffer/NAME.toml; none is started at install."
            enable="" other=slapos-buffer@.service ;;
    esac
    cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: slapos-edge
Source: https://example.invalid/slapos-edge

Files: *
Copyright: 2026 the slapos-edge authors
License: Apache-2.0

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be found
 in /usr/share/common-licenses/Apache-2.0.
EOF
    printf '%s (%s) unstable; urgency=medium\n\n  * Release %s (git %s).\n\n -- slapos-edge maintainers <slapos-edge@example.invalid>  %s\n' \
        "$pkg" "$version" "$version" "$commit" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" |
        gzip -9n >"$doc/changelog.gz"

    # Dependencies: static musl binaries need nothing; glibc ones libc6 at the highest symbol
    # version they use (objdump -T), and libgcc-s1.
    floor=""
    for b in "${bins[@]}"; do
        f=$(glibc_floor "$root/usr/bin/$b")
        [ -z "$f" ] || floor=$(printf '%s\n%s\n' "$floor" "$f" | sed '/^$/d' | sort -V | tail -1)
    done
    [ -z "$floor" ] || depends="libc6 (>= $floor), libgcc-s1"
    case "$pkg" in slapos-master | slapos-buffer) depends="${depends:+$depends, }adduser" ;; esac
    # https release downloads (node) and uplinks (buffer) trust the system CA bundle.
    case "$pkg" in slapos-node | slapos-buffer) depends="${depends:+$depends, }ca-certificates" ;; esac

    lintian_overrides "$pkg" "$root" "${bins[@]}"

    # conffiles: everything under /etc.
    (cd "$root" && find etc -type f -printf '/%p\n' | sort) >"$root/DEBIAN/conffiles"
    [ -s "$root/DEBIAN/conffiles" ] || rm "$root/DEBIAN/conffiles"

    write_maintscripts "$pkg" "$enable" "$other" "$root/DEBIAN"

    local size
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    {
        echo "Package: $pkg"
        echo "Version: $version"
        echo "Architecture: $arch"
        echo "Maintainer: slapos-edge maintainers <slapos-edge@example.invalid>"
        echo "Installed-Size: $size"
        [ -z "$depends" ] || echo "Depends: $depends"
        echo "Section: admin"
        echo "Priority: optional"
        echo "Homepage: https://example.invalid/slapos-edge"
        echo "Description: $synopsis"
        sed 's/^/ /' <<<"$desc"
    } >"$root/DEBIAN/control"
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
        xargs -0 md5sum >DEBIAN/md5sums)
    find "$root" -type d -exec chmod 0755 {} +
    local deb=$out/${pkg}_${version}_$arch.deb
    dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
    record "$deb" "$t"
    log "${deb##*/}: $(stat -c %s "$deb") B${depends:+, Depends: $depends}"
}

# The lintian tags the packages knowingly carry, each with its reason (docs/install.md).
lintian_overrides() { # pkg root bin...
    local pkg=$1 root=$2 b o
    shift 2
    o=$root/usr/share/lintian/overrides/$pkg
    mkdir -p "${o%/*}"
    {
        for b in "$@"; do
            [ ! -e "$root/usr/share/man/man1/$b.1.gz" ] || continue
            echo "# $b has no man page: --help and /usr/share/doc/$pkg/*.md are its reference."
            echo "$pkg: no-manual-page [usr/bin/$b]"
        done
        for b in "$@"; do
            ! readelf -l "$root/usr/bin/$b" 2>/dev/null | grep -q 'Requesting program interpreter' || continue
            echo "# Static(-pie) musl build, on purpose: one binary for every distribution (docs/cross.md)."
            echo "$pkg: statically-linked-binary [usr/bin/$b]"
            echo "# Static-pie is an ET_DYN file without interpreter, which lintian may take for a library."
            echo "$pkg: shared-library-lacks-prerequisites [usr/bin/$b]"
        done
    } >"$o"
    if [ -s "$o" ]; then chmod 0644 "$o"; else rm -rf "$root/usr/share/lintian"; fi
}

write_maintscripts() { # pkg enable-units other-units DEBIAN-dir
    local pkg=$1 enable=$2 other=$3 d=$4 user="" home=""
    case "$pkg" in
        slapos-master) user=slapos-master home=/var/lib/slapos-master ;;
        slapos-buffer) user=slapos-buffer home=/var/lib/slapos-buffer ;;
    esac
    {
        echo '#!/bin/sh'
        echo 'set -e'
        if [ -n "$user" ]; then
            cat <<EOF
# The service's system user (the unit's User=); its home is the state directory, created by
# systemd (StateDirectory=) with the modes the service checks.
if [ "\$1" = configure ] && ! getent passwd $user >/dev/null; then
    adduser --system --group --quiet --no-create-home --home $home --shell /usr/sbin/nologin \\
        --gecos "SlapOS ${user#slapos-}" $user
fi
EOF
            [ "$pkg" != slapos-buffer ] ||
                echo "[ \"\$1\" != configure ] || adduser --quiet $user dialout"
        fi
        postinst_units "$enable" "$other"
    } >"$d/postinst"
    {
        echo '#!/bin/sh'
        echo 'set -e'
        # Stop on removal (an upgrade restarts them in postinst). Template instances too.
        cat <<EOF
if [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
    for unit in $enable $other; do
        case "\$unit" in
            *@.service) systemctl stop "\${unit%.service}*.service" >/dev/null 2>&1 || true ;;
            *) deb-systemd-invoke stop "\$unit" >/dev/null || true ;;
        esac
    done
fi
EOF
    } >"$d/prerm"
    {
        echo '#!/bin/sh'
        echo 'set -e'
        cat <<EOF
if [ "\$1" = remove ] && command -v deb-systemd-helper >/dev/null; then
    for unit in $enable $other; do deb-systemd-helper mask "\$unit" >/dev/null || true; done
fi
if [ "\$1" = purge ]; then
    if command -v deb-systemd-helper >/dev/null; then
        for unit in $enable $other; do
            deb-systemd-helper purge "\$unit" >/dev/null || true
            deb-systemd-helper unmask "\$unit" >/dev/null || true
        done
    fi
EOF
        case "$pkg" in
            slapos-master) echo '    rm -rf /var/lib/slapos-master /var/lib/private/slapos-master /var/lib/slapos-standalone' ;;
            slapos-node) echo '    rm -rf /var/lib/slapos-node' ;;
            slapos-buffer) echo '    rm -rf /var/lib/slapos-buffer /var/lib/private/slapos-buffer' ;;
        esac
        [ -z "$user" ] || cat <<EOF
    if getent passwd $user >/dev/null && command -v deluser >/dev/null; then
        deluser --quiet --system $user >/dev/null || true
    fi
    if getent group $user >/dev/null && command -v delgroup >/dev/null; then
        delgroup --quiet --system $user >/dev/null || true
    fi
EOF
        cat <<'EOF'
    rmdir --ignore-fail-on-non-empty /etc/slapos/buffer /etc/slapos 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
EOF
    } >"$d/postrm"
    chmod 0755 "$d/postinst" "$d/prerm" "$d/postrm"
}

for t in "${targets[@]}"; do
    [ $tarball = 0 ] || make_tarball "$t"
    if [ $deb = 1 ]; then
        for pkg in "${PACKAGES[@]}"; do
        if [ -z "$(artifact "$t" "$pkg")" ] && ! cross_package_wanted "$(pkg_crate "$pkg")" "$t"; then
            log "note: $t: no $pkg package, not built for $t (SLAPOS_CROSS_MASTER_TARGETS)"
            continue
        fi
        stage_deb "$pkg" "$t"
    done
    fi
done

printf 'file\tsize\tsha256\ttarget\tversion\tcommit\n' >"$out/MANIFEST.tsv"
sort "$manifest" >>"$out/MANIFEST.tsv"
(cd "$out" && cut -f1 "$manifest" | sort | xargs sha256sum >SHA256SUMS && sha256sum --quiet -c SHA256SUMS)
log "wrote $out: $(cut -f1 "$manifest" | wc -l) files, SHA256SUMS verified (sha256sum -c), MANIFEST.tsv"
