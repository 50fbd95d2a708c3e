#!/usr/bin/env bash
# Shell completions and man pages of the command-line programs (docs/cli.md), for packages.
#
#   scripts/gen-cli-docs.sh OUTDIR [BIN]
#
# BIN is the built slapos-master to run (default target/debug/slapos-master). Writes
#   OUTDIR/completions/slapos-master.bash   (bash-completion: install as slapos-master)
#   OUTDIR/completions/_slapos-master       (zsh: a directory of $fpath)
#   OUTDIR/completions/slapos-master.fish   (fish: vendor_completions.d)
#   OUTDIR/man/slapos-master.1, slapos-master-<subcommand>.1, …   (clap_mangen, from the
#                                            clap definitions: `slapos-master man --out DIR`)
#   OUTDIR/man/<program>.1 for slapos-node, slapos-buffer, rt-probe, rt-report, slapos-radio
#                                            found next to BIN: these keep small hand-written
#                                            parsers (binary size), so their page is made
#                                            here from their own `--help` text (below).
# A program of that second list missing next to BIN is named on stderr and skipped; slapos-master
# itself is required. Exit 0 when everything asked was written.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [BIN]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
out=$1
bin=${2:-target/debug/slapos-master}
[ -x "$bin" ] || { echo "gen-cli-docs: $bin: not an executable (build it first)" >&2; exit 1; }
bindir=$(dirname "$bin")

mkdir -p "$out/completions" "$out/man"
"$bin" completions bash >"$out/completions/slapos-master.bash"
"$bin" completions zsh >"$out/completions/_slapos-master"
"$bin" completions fish >"$out/completions/slapos-master.fish"
"$bin" man --out "$out/man"

# A man page from a program's --help: NAME from its first descriptive line, SYNOPSIS from its
# usage line(s), the whole help verbatim (no-fill) as DESCRIPTION. roff escapes: `\` → `\e`,
# a leading `.` or `'` is protected with `\&`.
man_from_help() {
  local prog=$1 path=$2 help version
  help=$("$path" --help)
  version=$("$path" --version 2>/dev/null | head -n1 || true)
  HELP=$help awk -v prog="$prog" -v version="${version:-$prog}" '
    function esc(s) { gsub(/\\/, "\\e", s); gsub(/-/, "\\-", s); if (s ~ /^[.\x27]/) s = "\\&" s; return s }
    BEGIN {
      n = split(ENVIRON["HELP"], l, "\n")
      # SYNOPSIS: the first `usage:` line and its continuations (indented or starting with `[`).
      for (i = 1; i <= n; i++) {
        if (syn == "" && tolower(l[i]) ~ /^usage:/) {
          t = l[i]; sub(/^[Uu]sage: */, "", t); syn = esc(t) "\n"; inuse[i] = 1
          for (i++; i <= n && l[i] ~ /^[ \t[]/; i++) { t = l[i]; sub(/^[ \t]+/, "", t); syn = syn esc(t) "\n"; inuse[i] = 1 }
        }
      }
      # NAME: the first other line, up to its first sentence end or semicolon.
      for (i = 1; i <= n; i++) if (!(i in inuse) && l[i] != "") { desc = l[i]; break }
      sub(/[.;] .*$/, "", desc); sub(/[.;]$/, "", desc)
      printf ".TH %s 1 \"\" \"%s\" \"SlapOS edge\"\n", toupper(prog), version
      printf ".SH NAME\n%s \\- %s\n", prog, esc(desc)
      printf ".SH SYNOPSIS\n.nf\n%s.fi\n.SH DESCRIPTION\n.nf\n", syn
      for (j = 1; j <= n; j++) print esc(l[j])
      printf ".fi\n.SH SEE ALSO\n\\fBslapos\\-master\\fR(1)\n"
    }' >"$out/man/$prog.1"
}

for prog in slapos-node slapos-buffer rt-probe rt-report slapos-radio; do
  if [ -x "$bindir/$prog" ]; then
    man_from_help "$prog" "$bindir/$prog"
  else
    echo "gen-cli-docs: no $bindir/$prog: its man page is skipped" >&2
  fi
done
echo "gen-cli-docs: $(ls "$out/completions" | wc -l) completion scripts, $(ls "$out/man" | wc -l) man pages in $out"
