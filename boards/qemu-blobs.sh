# Sourced by scripts/test and boards/qemu-golden.sh: the blobs every QEMU board runs in CI, each
# with a golden output per board (boards/golden/BOARD/BLOB.txt).
#   QEMU_PRESETS            the --quant presets the micro checkpoint is packed with (micro_PRESET.itb)
#   qemu_blobs DIR FIXTURES packs those, and the published INT4 checkpoint as it is (int4_keep.itb),
#                           into DIR, keeping any already there; then lists their paths, one a line
# Needs: pack (the itera-pack command line, word-split).

QEMU_PRESETS=(f32 int8 mixed integer)

qemu_blobs() {
  local dir=$1 fixtures=$2 quant
  for quant in "${QEMU_PRESETS[@]}"; do
    [ -f "$dir/micro_$quant.itb" ] || $pack convert "$fixtures/itera_lite_micro_distilled.pt" \
      -o "$dir/micro_$quant.itb" --quant "$quant" --tokenizer "$fixtures/tokenizer_2000.json" >/dev/null || return
    echo "$dir/micro_$quant.itb"
  done
  # Its int4 weights computed weight-only against f32 activations.
  [ -f "$dir/int4_keep.itb" ] || $pack convert "$fixtures/itera_lite_int4.pt" -o "$dir/int4_keep.itb" \
    --quant keep >/dev/null || return
  echo "$dir/int4_keep.itb"
}
