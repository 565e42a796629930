# Sourced by qemu-check.sh and no-soft-float.sh: what each QEMU board is.
#   qemu_board BOARD   sets target (Rust target), elf (the firmware ELF) and qemu (the QEMU
#                      command line without -icount and -kernel), or fails for an unknown board
#   build_firmware BOARD BLOB   builds BOARD's firmware with BLOB linked in (quietly)
# Needs: root (the repository root), target_dir (the boards' CARGO_TARGET_DIR).

QEMU_BOARDS="qemu-an386 qemu-v6m qemu-rv32"

qemu_board() {
  case $1 in
    qemu-an386)
      target=thumbv7em-none-eabihf
      qemu=(qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none -serial none
            -semihosting-config enable=on,target=native) ;;
    qemu-v6m)
      # ARMv6-M code on the Cortex-M3 board: a subset, so it runs as is, instruction for instruction.
      target=thumbv6m-none-eabi
      qemu=(qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -nographic -monitor none -serial none
            -semihosting-config enable=on,target=native) ;;
    qemu-rv32)
      target=riscv32imc-unknown-none-elf
      qemu=(qemu-system-riscv32 -machine virt -bios none -nographic -monitor none) ;;
    *)
      echo "unknown board '$1' (known: $QEMU_BOARDS)" >&2
      return 2 ;;
  esac
  command -v "${qemu[0]}" >/dev/null || {
    echo "${qemu[0]} not found: apt-get install qemu-system-arm qemu-system-misc" >&2
    return 2
  }
  elf=$target_dir/$target/release/itera-board-$1
}

build_firmware() {
  (cd "$root/boards/$1" && ITERA_BLOB="$2" CARGO_TARGET_DIR="$target_dir" cargo build -q --release --locked)
}

# An absolute path for a blob given relative to the caller's folder.
abs_path() {
  echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
}
