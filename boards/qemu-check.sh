#!/usr/bin/env bash
# Builds a QEMU board's firmware with each blob, runs it in QEMU twice, and checks that
#  - it ran to the end (exit status 0),
#  - its tokens and logits checksum equal what `itera-sim greedy` computes on the host,
#  - both runs report the same instructions per token (-icount shift=0 makes them exact);
# then prints one row per blob: instructions per token and per MAC, stack high-water mark.
# Usage: boards/qemu-check.sh BOARD BLOB.itb [BLOB.itb ...]
#        BOARD: qemu-an386 (Cortex-M4F), qemu-v6m (ARMv6-M), qemu-rv32 (RV32IMC)
# Env:   ITERA_SIM (default: cargo run --release -p itera-sim --), ITERA_PROMPT, ITERA_GENERATE,
#        VERBOSE=1 (print the firmware's output too)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}/boards
. "$here/qemu-boards.sh"
[ $# -ge 2 ] || { echo "usage: $0 BOARD BLOB.itb [BLOB.itb ...]  (BOARD: $QEMU_BOARDS)" >&2; exit 2; }
board=$1; shift
qemu_board "$board" || exit 2
export ITERA_PROMPT="${ITERA_PROMPT:-41,13,6,42,182,43,4,16}"
export ITERA_GENERATE="${ITERA_GENERATE:-16}"
sim=${ITERA_SIM:-"cargo run -q --release --manifest-path $root/Cargo.toml -p itera-sim --"}
run=("${qemu[@]}" -icount shift=0 -kernel "$elf")
field() { grep "^$1:" <<<"$2" | cut -d' ' -f2; }
status=0
printf '%-11s %-24s %-6s %-7s %12s %9s %12s\n' board blob match repeat insn/token insn/MAC stack_bytes
for blob in "$@"; do
  blob=$(abs_path "$blob")
  build_firmware "$board" "$blob"
  out1=$(timeout 600 "${run[@]}") || { echo "$board $blob: firmware failed:"; echo "$out1"; status=1; continue; }
  out2=$(timeout 600 "${run[@]}") || { echo "$board $blob: second run failed"; status=1; continue; }
  host=$($sim greedy "$blob" --tokens "$ITERA_PROMPT" -n "$ITERA_GENERATE")
  firmware=$(grep -E '^(tokens|logits_fnv1a):' <<<"$out1" || true)
  match=yes; [ "$firmware" == "$host" ] || { match=NO; status=1; diff <(echo "$host") <(echo "$firmware") || true; }
  per_token=$(field instructions_per_token "$out1")
  repeat=yes; [ -n "$per_token" ] && [ "$per_token" == "$(field instructions_per_token "$out2")" ] || { repeat=NO; status=1; }
  printf '%-11s %-24s %-6s %-7s %12s %9s %12s\n' "$board" "$(basename "$blob")" $match $repeat \
    "$per_token" "$(field instructions_per_mac "$out1")" "$(field stack_bytes "$out1")"
  if [ -n "${VERBOSE:-}" ]; then echo "$out1"; fi
done
exit $status
