// What each board's firmware can link into, in one place: the board build scripts
// (`itera-board-build`, which refuses a blob or arena that cannot fit) and `itera-sim fit`
// (host-sim/src/board.rs) both include this file, so the two cannot disagree. The figures
// are the RAM and flash regions the firmware links into (its memory.x, or esp-hal's), not
// the chip's totals: the RP2040's two 4 KiB banks SRAM4/5 are left unused (256 of 264 KiB),
// and esp-hal 1.2 gives the ESP32-C3's DRAM 313 of its 400 KiB of SRAM (the rest is ROM data,
// cache and IRAM code).

/// The flash and RAM a board's firmware links into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Flash for code, constants and the blob (the FLASH region of memory.x).
    pub flash_bytes: usize,
    /// RAM for the arena, the stack and the statics (the RAM region of memory.x).
    pub ram_bytes: usize,
}

/// QEMU mps2-an386: 4 MiB SSRAM1 as flash, 4 MiB SSRAM2/3 as RAM.
pub const QEMU_AN386: Memory = Memory { flash_bytes: 4 << 20, ram_bytes: 4 << 20 };
/// QEMU mps2-an385 (the qemu-v6m port): the same memory map as the AN386.
pub const QEMU_V6M: Memory = Memory { flash_bytes: 4 << 20, ram_bytes: 4 << 20 };
/// QEMU virt (the qemu-rv32 port): 8 MiB of DRAM as flash, the next 8 MiB as RAM.
pub const QEMU_RV32: Memory = Memory { flash_bytes: 8 << 20, ram_bytes: 8 << 20 };
/// STM32F411CE Black Pill: 512 KiB flash, 128 KiB SRAM.
pub const STM32F411: Memory = Memory { flash_bytes: 512 << 10, ram_bytes: 128 << 10 };
/// Raspberry Pi Pico: 2 MiB QSPI flash (less 256 bytes of boot2), SRAM0-3 striped (256 KiB).
pub const RP2040: Memory = Memory { flash_bytes: (2 << 20) - 256, ram_bytes: 256 << 10 };
/// ESP32-C3: 4 MiB flash, esp-hal 1.2's DRAM region (313 KiB).
pub const ESP32C3: Memory = Memory { flash_bytes: 4 << 20, ram_bytes: 313 << 10 };

/// Stack the firmware needs: its high-water mark, 67,052 bytes at most over the micro f32,
/// int8, mixed and integer blobs on the three QEMU boards (painted, `stack_bytes:`; the
/// deepest, qemu-an386 with the mixed blob), rounded up. `main`'s frames hold the `Model`'s
/// weight views (a float or a fixed-point model: the larger one's size).
pub const STACK_BYTES: usize = 68 << 10;
