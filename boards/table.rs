// The board table: every figure of every board the project ships firmware for, in one place.
// The board build helper (`itera-board-build`: each firmware's memory.x, its fit checks, the
// banner and clock it compiles in, the target it must be built for) and `itera-sim fit`
// (host-sim/src/board.rs) both include this file, so they cannot disagree; nothing else
// states these numbers. The memory figures are the regions the firmware links into, not the
// chip's totals: the RP2040's two 4 KiB banks SRAM4/5 are left unused (256 of 264 KiB), and
// esp-hal 1.2 gives the ESP32-C3's DRAM 313 of its 400 KiB of SRAM (the rest is ROM data,
// cache and IRAM code).

/// Where a firmware's linker script gets the memory map from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMap {
    /// A `memory.x` written from this table for cortex-m-rt's `link.x`: FLASH and RAM.
    CortexM {
        /// First address of FLASH.
        flash_origin: u32,
        /// First address of RAM.
        ram_origin: u32,
    },
    /// As [`MemoryMap::CortexM`], with the RP2040's second-stage bootloader at the start of
    /// flash: a `BOOT2` region of `boot2_bytes` where `.boot2` goes, FLASH after it.
    CortexMBoot2 {
        /// First address of flash (boot2's).
        flash_origin: u32,
        /// Bytes of boot2, not counted in [`Board::flash_bytes`].
        boot2_bytes: u32,
        /// First address of RAM.
        ram_origin: u32,
    },
    /// A `memory.x` written from this table for riscv-rt's `link.x`: FLASH and RAM, with the
    /// region aliases riscv-rt links by.
    RiscvRt {
        /// First address of FLASH.
        flash_origin: u32,
        /// First address of RAM.
        ram_origin: u32,
    },
    /// The HAL's own linker script (esp-hal's `linkall.x`): [`Board::flash_bytes`] and
    /// [`Board::ram_bytes`] are what it gives the firmware, for the fit checks; nothing is
    /// written.
    Hal,
}

/// One board: its chip, the firmware's target and clock, its memory, and what the firmware
/// costs there besides the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// Name used by `--board`, the folder under `boards/` and the crate `itera-board-NAME`.
    pub name: &'static str,
    /// Chip or machine.
    pub chip: &'static str,
    /// Core and FPU, as the firmware's banner says them.
    pub core: &'static str,
    /// Rust target triple the firmware is built for (its `.cargo/config.toml` names the same).
    pub target: &'static str,
    /// Core clock the firmware sets, in MHz; `None` for the QEMU boards, which have none
    /// (under `-icount shift=0` one instruction is one virtual nanosecond).
    pub clock_mhz: Option<u32>,
    /// Flash for code, constants and the blob (the FLASH region).
    pub flash_bytes: usize,
    /// RAM for the arena, the stack and the statics (the RAM region).
    pub ram_bytes: usize,
    /// Where the regions are, and how the linker learns them.
    pub memory_map: MemoryMap,
    /// The firmware's code, vectors and constants besides the blob, estimated from its ELF
    /// (rounded up to 4 KiB): the flash a blob must leave free.
    pub code_bytes: usize,
    /// The firmware's statics besides the arena (`.data` + `.bss`), estimated from its ELF.
    pub static_bytes: usize,
    /// Stack the firmware needs ([`STACK_BYTES`]): RAM an arena must leave free.
    pub stack_bytes: usize,
}

/// Stack the firmware needs: its high-water mark, 67,052 bytes at most over the micro f32,
/// int8, mixed and integer blobs on the three QEMU boards (painted, `stack_bytes:`; the
/// deepest, qemu-an386 with the mixed blob), rounded up. `main`'s frames hold the `Model`'s
/// weight views (a float or a fixed-point model: the larger one's size).
pub const STACK_BYTES: usize = 68 << 10;

/// Every board, QEMU boards first.
pub const BOARDS: [Board; 6] = [
    Board {
        name: "qemu-an386",
        chip: "QEMU mps2-an386",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        clock_mhz: None,
        // 4 MiB ZBT SSRAM1 holds code and blob (the "flash"), SSRAM2/3 is data RAM.
        flash_bytes: 4 << 20,
        ram_bytes: 4 << 20,
        memory_map: MemoryMap::CortexM { flash_origin: 0x0000_0000, ram_origin: 0x2000_0000 },
        code_bytes: 116 << 10,
        static_bytes: 1 << 10,
        stack_bytes: STACK_BYTES,
    },
    Board {
        name: "qemu-v6m",
        chip: "QEMU mps2-an385 running ARMv6-M code",
        core: "ARMv6-M code on a Cortex-M3, soft float",
        target: "thumbv6m-none-eabi",
        clock_mhz: None,
        // The AN386's memory map.
        flash_bytes: 4 << 20,
        ram_bytes: 4 << 20,
        memory_map: MemoryMap::CortexM { flash_origin: 0x0000_0000, ram_origin: 0x2000_0000 },
        code_bytes: 100 << 10,
        static_bytes: 1 << 10,
        stack_bytes: STACK_BYTES,
    },
    Board {
        name: "qemu-rv32",
        chip: "QEMU virt",
        core: "RV32IMC, soft float",
        target: "riscv32imc-unknown-none-elf",
        clock_mhz: None,
        // DRAM at 0x8000_0000: its first 8 MiB hold code and blob (-bios none starts there,
        // where riscv-rt puts _start), the next 8 MiB data, the stack at the top.
        flash_bytes: 8 << 20,
        ram_bytes: 8 << 20,
        memory_map: MemoryMap::RiscvRt { flash_origin: 0x8000_0000, ram_origin: 0x8080_0000 },
        code_bytes: 108 << 10,
        static_bytes: 1 << 10,
        stack_bytes: STACK_BYTES,
    },
    Board {
        name: "stm32f411",
        chip: "STM32F411CE Black Pill",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        clock_mhz: Some(100),
        flash_bytes: 512 << 10,
        ram_bytes: 128 << 10,
        memory_map: MemoryMap::CortexM { flash_origin: 0x0800_0000, ram_origin: 0x2000_0000 },
        code_bytes: 128 << 10,
        static_bytes: 2 << 10,
        stack_bytes: STACK_BYTES,
    },
    Board {
        name: "rp2040",
        chip: "RP2040 Pico, 2 MiB QSPI flash",
        core: "Cortex-M0+, no FPU",
        target: "thumbv6m-none-eabi",
        clock_mhz: Some(125),
        // 2 MiB of flash executed in place through XIP, less boot2's 256 bytes; SRAM0-3
        // striped.
        flash_bytes: (2 << 20) - 256,
        ram_bytes: 256 << 10,
        memory_map: MemoryMap::CortexMBoot2 { flash_origin: 0x1000_0000, boot2_bytes: 256, ram_origin: 0x2000_0000 },
        code_bytes: 108 << 10,
        static_bytes: 2 << 10,
        stack_bytes: STACK_BYTES,
    },
    Board {
        name: "esp32c3",
        chip: "ESP32-C3",
        core: "RISC-V rv32imc, no FPU",
        target: "riscv32imc-unknown-none-elf",
        clock_mhz: Some(160),
        // esp-hal's memory map: 4 MiB of flash through the cache, its DRAM region.
        flash_bytes: 4 << 20,
        ram_bytes: 313 << 10,
        memory_map: MemoryMap::Hal,
        code_bytes: 156 << 10,
        static_bytes: 2 << 10,
        stack_bytes: STACK_BYTES,
    },
];

/// The board called `name`.
pub fn board(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}
