#!/usr/bin/env bash
# Builds the qemu-an386 firmware for each blob, runs it in QEMU twice, and checks that
#  - it ran to the end (exit status 0),
#  - its tokens and logits checksum equal what `itera-sim greedy` computes on the host,
#  - both runs report the same instructions per token (-icount makes them deterministic).
# Usage: boards/qemu-an386/check.sh BLOB.itb [BLOB.itb ...]
# Env:   ITERA_SIM (default: cargo run --release -p itera-sim --), ITERA_PROMPT, ITERA_GENERATE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BLOB.itb [BLOB.itb ...]" >&2; exit 2; }
command -v qemu-system-arm >/dev/null || { echo "qemu-system-arm not found: apt-get install qemu-system-arm" >&2; exit 2; }
export ITERA_PROMPT="${ITERA_PROMPT:-41,13,6,42,182,43,4,16}"
export ITERA_GENERATE="${ITERA_GENERATE:-16}"
sim=${ITERA_SIM:-"cargo run -q --release --manifest-path $root/Cargo.toml -p itera-sim --"}
target_dir=${CARGO_TARGET_DIR:-$root/target}/boards
elf=$target_dir/thumbv7em-none-eabihf/release/itera-board-qemu-an386
qemu=(qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none -serial none
      -semihosting-config enable=on,target=native -icount shift=0 -kernel "$elf")
status=0
printf '%-28s %-6s %-8s %14s %10s %12s\n' blob match repeat insn/token insn/MAC stack_bytes
for blob in "$@"; do
  blob=$(cd "$(dirname "$blob")" && pwd)/$(basename "$blob")
  (cd "$here" && ITERA_BLOB="$blob" CARGO_TARGET_DIR="$target_dir" cargo build -q --release)
  out1=$(timeout 600 "${qemu[@]}") || { echo "$blob: firmware failed:"; echo "$out1"; status=1; continue; }
  out2=$(timeout 600 "${qemu[@]}") || { echo "$blob: second run failed"; status=1; continue; }
  host=$($sim greedy "$blob" --tokens "$ITERA_PROMPT" -n "$ITERA_GENERATE")
  board=$(grep -E '^(tokens|logits_fnv1a):' <<<"$out1")
  field() { grep "^$1:" <<<"$2" | cut -d' ' -f2; }
  match=yes; [ "$board" == "$host" ] || { match=NO; status=1; diff <(echo "$host") <(echo "$board") || true; }
  repeat=yes; [ "$(field instructions_per_token "$out1")" == "$(field instructions_per_token "$out2")" ] || { repeat=NO; status=1; }
  printf '%-28s %-6s %-8s %14s %10s %12s\n' "$(basename "$blob")" $match $repeat \
    "$(field instructions_per_token "$out1")" "$(field instructions_per_mac "$out1")" "$(field stack_bytes "$out1")"
  [ -n "${VERBOSE:-}" ] && echo "$out1"
done
exit $status
