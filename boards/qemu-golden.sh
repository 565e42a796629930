#!/usr/bin/env bash
# Every QEMU board with every CI blob (boards/qemu-blobs.sh), against the host and against its
# golden output: boards/qemu-check.sh BOARD with GOLDEN_DIR=boards/golden, so a change in the
# tokens, the logits checksum or the instructions per token shows as a diff of
# boards/golden/BOARD/BLOB.txt in review.
# Usage: boards/qemu-golden.sh [BOARD ...]          (default: qemu-an386 qemu-v6m qemu-rv32)
#        UPDATE_GOLDEN=1 boards/qemu-golden.sh      rewrites the goldens from this build's firmware
#                                                   (review the diff, then commit it)
# Env:   ITERA_FIXTURES (default: ../shared/fixtures/itera-lite beside the repository),
#        QEMU_BLOBS (a folder the blobs are packed into and kept; default: a temporary one),
#        ITERA_PACK, ITERA_SIM (default: cargo run --release -p itera-pack / -p itera-sim)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/qemu-boards.sh"
. "$here/qemu-blobs.sh"
fixtures=${ITERA_FIXTURES:-$root/../shared/fixtures/itera-lite}
[ -f "$fixtures/itera_lite_micro_distilled.pt" ] || {
  echo "$0: no fixtures at $fixtures: set ITERA_FIXTURES to the itera-lite fixtures folder" >&2; exit 2; }
pack=${ITERA_PACK:-"cargo run -q --release --manifest-path $root/Cargo.toml -p itera-pack --"}
blob_dir=${QEMU_BLOBS:-}
if [ -z "$blob_dir" ]; then blob_dir=$(mktemp -d); trap 'rm -rf "$blob_dir"' EXIT; fi
list=$(qemu_blobs "$blob_dir" "$fixtures")
mapfile -t blobs <<<"$list"
[ $# -gt 0 ] || set -- $QEMU_BOARDS
status=0
for board in "$@"; do
  GOLDEN_DIR="$here/golden" "$here/qemu-check.sh" "$board" "${blobs[@]}" || status=1
done
exit $status
