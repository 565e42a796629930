#!/usr/bin/env bash
# Which code implements the soft-float routines a firmware ELF links? For every symbol of the
# soft-float ABI (FLOAT_ABI in float-symbols.sh: __aeabi_fadd, __addsf3, __ltsf2, __floatsisf, …)
# in the ELF's symbol table, its source file from the debug line table (nm -l) says whose it
# is: compiler-builtins (Rust's, IEEE 754, the ones the QEMU ports run), a HAL's (rp2040-hal's
# ROM wrappers), or none at all for an absolute address (ROM routines a linker script assigns,
# as esp-rom-sys does for the ESP32-C3's ROM libgcc).
# Prints one line per routine and fails unless all of them are compiler-builtins'.
# Usage: boards/float-routines.sh ELF [ELF ...]     (needs the ELF's debug info: debug = 2)
# Env:   VERBOSE=1 also lists the compiler-builtins routines
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/float-symbols.sh"
[ $# -ge 1 ] || { echo "usage: $0 ELF [ELF ...]" >&2; exit 2; }
command -v nm >/dev/null || { echo "nm not found: apt-get install binutils" >&2; exit 2; }
status=0
for elf in "$@"; do
  [ -f "$elf" ] || { echo "$elf: no such file" >&2; exit 2; }
  # "address type name<TAB>file:line" (the file only where the debug info has the symbol).
  rows=$(nm -l --defined-only "$elf" | awk -v abi="$FLOAT_ABI" '{ split($3, n, "\t"); if (n[1] ~ abi) print }' |
    awk '{
      name = $3; sub(/\t.*/, "", name)
      file = $0; if (file ~ /\t/) { sub(/^[^\t]*\t/, "", file) } else file = ""
      if ($2 == "A" || $2 == "a") whose = "ROM (absolute address " $1 ")"
      else if (file ~ /compiler-builtins|compiler_builtins/) whose = "compiler-builtins"
      else if (file == "") whose = "unknown (no debug info)"
      else { whose = file; sub(/:[0-9]+$/, "", whose)
             if (match(whose, /registry\/src\/[^\/]+\/[^\/]+\//)) { whose = substr(whose, RSTART, RLENGTH); sub(/^registry\/src\/[^\/]+\//, "", whose); sub(/\/$/, "", whose) } }
      printf "%-20s %s\n", name, whose
    }' | sort)
  total=$(grep -c . <<<"$rows" || true)
  other=$(grep -vc ' compiler-builtins$' <<<"$rows" || true)
  [ -n "$rows" ] || { total=0; other=0; }
  echo "$(basename "$elf"): $total soft-float ABI routines, $((total - other)) from compiler-builtins, $other from elsewhere"
  if [ "$other" -gt 0 ]; then
    grep -v ' compiler-builtins$' <<<"$rows" | sed 's/^/    /'
    status=1
  fi
  if [ -n "${VERBOSE:-}" ]; then grep ' compiler-builtins$' <<<"$rows" | sed 's/^/    /' || true; fi
done
exit $status
