#!/usr/bin/env bash
# Does the generation loop call any soft-float routine? For each blob: builds BOARD's firmware
# with it, runs it once in QEMU logging every executed translation block (-d exec,nochain) but
# only at the entry points of the ELF's float routines and of the demo's two markers
# (-dfilter), and counts the routine entries between itera_token_loop_begin and
# itera_token_loop_end: the ITERA_GENERATE tokens, as the demo generates them after prefill.
#
# The float routines are read from the ELF's own symbol table by pattern, not from a list:
#  - the soft-float ABI of compiler-builtins/libgcc: __aeabi_f*/__aeabi_d* (add, sub, mul, div,
#    cmp*, conversions), __aeabi_[u]i2f/[u]l2d…, __addsf3 __subsf3 __mulsf3 __divsf3 __negsf2,
#    __eqsf2 __nesf2 __ltsf2 __lesf2 __gtsf2 __gesf2 __unordsf2 __cmpsf2, __floatsisf
#    __floatunsisf __floatdisf…, __fixsfsi __fixunssfsi…, __extendsfdf2 __truncdfsf2, __powisf2,
#    and their df/hf/tf twins;
#  - libm functions left out of line (libm::*, or C libm names: fmaxf, expf, sqrtf, …).
# compiler-builtins' implementations behind the ABI names (compiler_builtins::float::*) are
# entered only through those, so they are not traced.
# A routine inlined into the caller has no entry to see: compiler-builtins' never are (it is
# built #[no_builtins], outside LTO); libm's can be, and then show only through the ABI
# routines they call (its integer-only ones, such as a bit-by-bit sqrtf, not at all).
#
# Usage: boards/no-soft-float.sh [--report] BOARD BLOB.itb [BLOB.itb ...]
#        BOARD: qemu-v6m, qemu-rv32 (no FPU), or qemu-an386 (FPU: only f64 and libm calls show)
#        --report: print the counts but exit 0 when there are calls (information only)
# Exit:  0 no float routine entered in the token loop (or --report), 1 some were, 2 an error
#        (build, QEMU, or a trace that did not show both markers: no claim either way).
# Env:   ITERA_PROMPT, ITERA_GENERATE (as boards/qemu-check.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}/boards
. "$here/qemu-boards.sh"
. "$here/float-symbols.sh"
report_only=
if [ "${1:-}" = --report ]; then report_only=1; shift; fi
[ $# -ge 2 ] || { echo "usage: $0 [--report] BOARD BLOB.itb [BLOB.itb ...]  (BOARD: $QEMU_BOARDS)" >&2; exit 2; }
board=$1; shift
qemu_board "$board" || exit 2
command -v nm >/dev/null || { echo "nm not found: apt-get install binutils" >&2; exit 2; }
export ITERA_PROMPT="${ITERA_PROMPT:-41,13,6,42,182,43,4,16}"
export ITERA_GENERATE="${ITERA_GENERATE:-16}"


tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
status=0
for blob in "$@"; do
  blob=$(abs_path "$blob")
  name="$board $(basename "$blob")"
  build_firmware "$board" "$blob"
  # Function symbols (demangled) → "hex-address<TAB>name", Thumb bit cleared, aliases joined by '='.
  nm -C --defined-only "$elf" | awk -v abi="$FLOAT_ABI" -v impl="$FLOAT_IMPL" -v libm="$FLOAT_LIBM" '
    $2 ~ /^[tTwW]$/ {
      name = $0; sub(/^[^ ]+ [^ ]+ /, "", name); sub(/::h[0-9a-f]+$/, "", name)
      if (name == "itera_token_loop_begin" || name == "itera_token_loop_end" || name ~ abi || name ~ libm || (name ~ impl && name !~ /^compiler_builtins::/))
        print $1 "\t" name
    }' | while IFS=$'\t' read -r addr sym; do
      printf '%x\t%s\n' $((0x$addr & ~1)) "$sym"
    done | sort -u | awk -F'\t' '{ if ($1 in n) n[$1] = n[$1] "=" $2; else n[$1] = $2 } END { for (a in n) print a "\t" n[a] }' \
    >"$tmp/symbols"
  [ "$(awk -F'\t' '$2 ~ /^itera_token_loop_(begin|end)$/' "$tmp/symbols" | wc -l)" -eq 2 ] || {
    echo "$name: the ELF has no itera_token_loop_begin/_end markers (not the shared demo loop?)" >&2; exit 2; }
  routines=$(($(wc -l <"$tmp/symbols") - 2))
  filter=$(awk -F'\t' '{ printf "%s0x%s+2", (NR > 1 ? "," : ""), $1 }' "$tmp/symbols")
  # The trace goes to stderr, piped into the counter; the firmware's console to a file.
  # A trace line: "Trace 0: 0x7f… [00000000/0000fc1c/00000110/ff000200] __aeabi_fadd": the
  # second field between slashes is the guest pc.
  if ! "${qemu[@]}" -icount shift=0 -d exec,nochain -dfilter "$filter" -kernel "$elf" 2>&1 >"$tmp/console" | awk -F/ '
      FNR == NR { split($0, f, "\t"); sym[f[1]] = f[2]; next }
      /^Trace / {
        pc = $2; sub(/^0+/, "", pc)
        n = sym[pc]
        if (n == "itera_token_loop_begin") { begins++; inside = 1; next }
        if (n == "itera_token_loop_end") { ends++; inside = 0; next }
        if (n == "") next
        if (inside) count[n]++; else outside++
      }
      END {
        printf "markers %d %d\noutside %d\n", begins, ends, outside
        for (n in count) printf "in\t%s\t%d\n", n, count[n]
      }' "$tmp/symbols" - >"$tmp/counts"; then
    echo "$name: QEMU failed"; cat "$tmp/console"; exit 2
  fi
  grep -q '^done$' "$tmp/console" || { echo "$name: the firmware did not finish:"; cat "$tmp/console"; exit 2; }
  [ "$(grep '^markers' "$tmp/counts")" = "markers 1 1" ] || {
    echo "$name: the trace did not show the token loop once ($(grep '^markers' "$tmp/counts")): no verdict" >&2; exit 2; }
  # Calls: entries of the ABI and libm routines (compiler-builtins' implementations behind the
  # ABI names are not traced). A block that QEMU restarts (an interrupt, the end of an icount
  # slice) is logged twice, so the counts can exceed the calls by a few in a million; never a
  # routine that was not entered.
  calls=$(awk -F'\t' '$1 == "in" && $2 !~ /::/ { c += $3 } END { print c + 0 }' "$tmp/counts")
  entries=$(awk -F'\t' '$1 == "in" { c += $3 } END { print c + 0 }' "$tmp/counts")
  if [ "$entries" -eq 0 ]; then
    echo "$name: no float routine entered in the token loop ($ITERA_GENERATE tokens traced; $routines float routines in the ELF): ok"
    continue
  fi
  verdict=FAIL; [ -n "$report_only" ] && verdict="reported"
  echo "$name: $calls float routine calls in the token loop ($ITERA_GENERATE tokens, $((calls / ITERA_GENERATE)) per token): $verdict"
  awk -F'\t' '$1 == "in" { printf "    %10d  %s\n", $3, $2 }' "$tmp/counts" | sort -k1,1nr
  [ -n "$report_only" ] || status=1
done
exit $status
