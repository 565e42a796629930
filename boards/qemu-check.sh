#!/usr/bin/env bash
# Builds a QEMU board's firmware with each blob, runs it in QEMU twice, and checks that
#  - it ran to the end (exit status 0),
#  - its tokens and logits checksum equal what `itera-sim greedy` computes on the host,
#  - both runs report the same instructions per token (-icount shift=0 makes them exact),
#  - with GOLDEN_DIR, its tokens, text, checksum and instructions per token (prefill and
#    generation) equal GOLDEN_DIR/BOARD/BLOB.txt (BLOB without .itb) exactly;
# then prints one row per blob: instructions per token and per MAC, stack high-water mark.
# Usage: boards/qemu-check.sh BOARD BLOB.itb [BLOB.itb ...]
#        BOARD: qemu-an386 (Cortex-M4F), qemu-v6m (ARMv6-M), qemu-rv32 (RV32IMC)
# Env:   ITERA_SIM (default: cargo run --release -p itera-sim --), ITERA_PROMPT, ITERA_GENERATE,
#        GOLDEN_DIR (boards/golden: see boards/qemu-golden.sh), UPDATE_GOLDEN=1 (write the
#        goldens instead of comparing), VERBOSE=1 (print the firmware's output too)
# Exit:  0 all match, 1 a mismatch or a failed run, 2 bad usage (an unknown board, a missing blob)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}/boards
. "$here/qemu-boards.sh"
[ $# -ge 2 ] || { echo "usage: $0 BOARD BLOB.itb [BLOB.itb ...]  (BOARD: $QEMU_BOARDS)" >&2; exit 2; }
board=$1; shift
qemu_board "$board" || exit 2
for blob in "$@"; do
  [ -f "$blob" ] || { echo "$(basename "$0"): $blob: no such blob (pack one: itera-pack convert CHECKPOINT -o $blob)" >&2; exit 2; }
done
export ITERA_PROMPT="${ITERA_PROMPT:-41,13,6,42,182,43,4,16}"
export ITERA_GENERATE="${ITERA_GENERATE:-16}"
sim=${ITERA_SIM:-"cargo run -q --release --manifest-path $root/Cargo.toml -p itera-sim --"}
run=("${qemu[@]}" -icount shift=0 -kernel "$elf")
field() { grep "^$1:" <<<"$2" | cut -d' ' -f2; }
# The lines a golden holds: what the firmware computes and what it costs, nothing that names a
# path (the `blob:` line) or depends on the build's layout (parse cost, stack).
golden_lines() { grep -E '^(tokens|text|logits_fnv1a|prefill_instructions_per_token|instructions_per_token):' <<<"$1" || true; }
regenerate="UPDATE_GOLDEN=1 boards/qemu-golden.sh $board (packs the CI blobs, rewrites boards/golden/$board/), then review and commit the diff"
status=0
printf '%-11s %-24s %-6s %-7s %-7s %12s %9s %12s\n' board blob match repeat golden insn/token insn/MAC stack_bytes
for blob in "$@"; do
  blob=$(abs_path "$blob")
  build_firmware "$board" "$blob" || { echo "$board $(basename "$blob"): the firmware did not build (above)"; status=1; continue; }
  out1=$(timeout 600 "${run[@]}") || { echo "$board $blob: firmware failed:"; echo "$out1"; status=1; continue; }
  out2=$(timeout 600 "${run[@]}") || { echo "$board $blob: second run failed"; status=1; continue; }
  host=$($sim greedy "$blob" --tokens "$ITERA_PROMPT" -n "$ITERA_GENERATE")
  firmware=$(grep -E '^(tokens|logits_fnv1a):' <<<"$out1" || true)
  match=yes; [ "$firmware" == "$host" ] || { match=NO; status=1; diff <(echo "$host") <(echo "$firmware") || true; }
  per_token=$(field instructions_per_token "$out1")
  repeat=yes; [ -n "$per_token" ] && [ "$per_token" == "$(field instructions_per_token "$out2")" ] || { repeat=NO; status=1; }
  golden=-
  if [ -n "${GOLDEN_DIR:-}" ]; then
    expected=$GOLDEN_DIR/$board/$(basename "$blob" .itb).txt
    if [ -n "${UPDATE_GOLDEN:-}" ]; then
      mkdir -p "$(dirname "$expected")"
      golden_lines "$out1" >"$expected"
      golden=written
    elif [ ! -f "$expected" ]; then
      golden=NONE; status=1
      echo "$board $(basename "$blob"): no golden $expected; to create it: $regenerate"
    elif diff -u --label "$expected" --label "$board firmware" "$expected" <(golden_lines "$out1"); then
      golden=yes
    else
      golden=NO; status=1
      echo "$board $(basename "$blob"): the firmware's output differs from its golden (diff above). If the change is intended: $regenerate"
    fi
  fi
  printf '%-11s %-24s %-6s %-7s %-7s %12s %9s %12s\n' "$board" "$(basename "$blob")" $match $repeat $golden \
    "$per_token" "$(field instructions_per_mac "$out1")" "$(field stack_bytes "$out1")"
  if [ -n "${VERBOSE:-}" ]; then echo "$out1"; fi
done
exit $status
