#!/usr/bin/env bash
# The engine against the GPU reference forward pass, on a machine with an NVIDIA GPU, the
# CUDA driver and toolkit (NVRTC) and Python 3 (PyTorch optional), but no Rust and no network.
#
#   host-sim/gpu-check.sh BIN_DIR FIXTURES_DIR [WORK_DIR]
#
# BIN_DIR holds `itera-sim` (built with `cargo build --release -p itera-sim --features cuda`)
# and `itera-pack`; FIXTURES_DIR is the Itera-Lite fixtures folder (checkpoints + golden/).
# Packs FP32, INT8 and mixed blobs of each fixture checkpoint that has a golden file, runs
# `itera-sim check --reference cuda --json` (and `--reference cpu`, for comparison) on the
# golden's tokens, and prints one row per blob and reference: max |Δlogit|, top-1, mean KL.
# With PyTorch installed it also runs tools/reference/torch_reference.py on each golden.
#
# REFS (default "cuda cpu") picks the references; REFS="cuda-cpu cpu" dry-runs the script
# without a GPU (the same CUDA kernels, compiled for the CPU).
#
# Exit status: 0 all good; 1 an FP32 blob is off a reference by more than 1e-3, or
# its top-1 agreement is below 100%, or the PyTorch reference misses a golden by more than
# 1e-4; 2 bad arguments or a failed step; 3 the CUDA reference cannot run here (the reason
# is printed). Quantized blobs are reported, not judged.
set -uo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BIN=$(cd "$1" && pwd) || exit 2
FIX=$(cd "$2" && pwd) || exit 2
WORK=${3:-$(mktemp -d)}
mkdir -p "$WORK" || exit 2
HERE=$(cd "$(dirname "$0")" && pwd)
SIM="$BIN/itera-sim"
PACK="$BIN/itera-pack"
for exe in "$SIM" "$PACK"; do
    [ -x "$exe" ] || { echo "error: $exe is missing or not executable" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "error: python3 is needed to read the JSON reports" >&2; exit 2; }

# NVRTC and the driver are loaded at run time: make the toolkit's libraries findable.
REFS=${REFS:-cuda cpu}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME/targets/x86_64-linux/lib"; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
command -v nvidia-smi >/dev/null && nvidia-smi -L

# checkpoint : golden whose tokens are used
PAIRS="itera_lite_micro_distilled.pt:micro_distilled_story128.json itera_lite_tiny_int8.pt:tiny_int8_story128.json"
FIELDS='import json,sys
d=json.load(sys.stdin)
print("%.3e %.4f %.3e" % (d["max_abs_diff"], d["top1_agreement"], d["kld_mean"] if d["kld_mean"] is not None else float("nan")))'

status=0
rows=()
for pair in $PAIRS; do
    ckpt=${pair%%:*}
    golden="$FIX/golden/${pair##*:}"
    [ -f "$FIX/$ckpt" ] && [ -f "$golden" ] || { echo "skip $ckpt: checkpoint or golden missing"; continue; }
    for quant in f32 int8 mixed; do
        blob="$WORK/${ckpt%.pt}-$quant.itb"
        if ! "$PACK" convert "$FIX/$ckpt" -o "$blob" --quant "$quant" --top-k 2 >"$WORK/pack.log" 2>&1; then
            echo "error: itera-pack convert $ckpt --quant $quant failed:" >&2
            cat "$WORK/pack.log" >&2
            exit 2
        fi
        for ref in $REFS; do
            # Bounds wide open: this script judges the numbers itself.
            json=$("$SIM" check "$blob" --reference "$ref" --golden "$golden" --json --tol 1e30 --min-top1 0 2>"$WORK/check.err")
            rc=$?
            if [ $rc -eq 3 ]; then
                cat "$WORK/check.err" >&2
                exit 3
            elif [ $rc -ne 0 ]; then
                echo "error: itera-sim check $(basename "$blob") --reference $ref exited $rc:" >&2
                cat "$WORK/check.err" >&2
                exit 2
            fi
            read -r max top1 kld <<<"$(printf '%s' "$json" | python3 -c "$FIELDS")"
            verdict=""
            if [ "$quant" = f32 ]; then
                if python3 -c "import sys; sys.exit(0 if float('$max') <= 1e-3 and float('$top1') >= 1.0 else 1)"; then
                    verdict="ok"
                else
                    verdict="FAIL (needs max <= 1e-3, top-1 100%)"
                    status=1
                fi
            fi
            rows+=("$(printf '%-38s %-8s %12s %8s %12s  %s' "$(basename "$blob")" "$ref" "$max" "$top1" "$kld" "$verdict")")
        done
    done
done

echo
printf '%-38s %-8s %12s %8s %12s\n' "blob" "ref" "max|Δlogit|" "top-1" "KLD (mean)"
for r in "${rows[@]}"; do echo "$r"; done

TORCH_REF="$HERE/../tools/reference/torch_reference.py"
if [ -f "$TORCH_REF" ] && python3 -c "import torch" 2>/dev/null; then
    echo
    echo "PyTorch reference (float64) against the golden files:"
    for golden in "$FIX"/golden/*.json; do
        line=$(python3 "$TORCH_REF" "$golden" --out "$WORK/$(basename "${golden%.json}").torch.f32") || { status=1; continue; }
        echo "  $line"
        max=$(printf '%s' "$line" | sed -n 's/.*max |logit - golden| = \([^,]*\),.*/\1/p')
        python3 -c "import sys; sys.exit(0 if float('${max:-nan}') <= 1e-4 else 1)" || { echo "  FAIL: above 1e-4"; status=1; }
    done
else
    echo "(PyTorch not found: tools/reference/torch_reference.py skipped)"
fi
echo
[ $status -eq 0 ] && echo "gpu-check: PASS" || echo "gpu-check: FAIL"
exit $status
