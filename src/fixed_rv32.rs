//! RV32IMC integer row dots: four rows per pass sharing each input load, four columns per
//! loop turn, every load `LB` with an immediate offset from one row pointer (row `r` at
//! `r · COLS`, so one routine per row length), `MUL` and `ADD`: 55 instructions for 16 MACs.
//! In assembly because the compiler loaded all twenty bytes of a turn before multiplying
//! and spilled the sums (about 80 instructions for 16 MACs, measured). Exact integer sums:
//! the same values as the portable loop.

// `itera_rv32_dots4_COLS(q, x, out, blocks)`: `blocks` (at least 1) blocks of four rows of
// COLS bytes from `q` against x[0..COLS], four i32 per block to `out`. Only caller-saved
// registers: t0-t3 the sums, t4 an input, t5 a product, a4 the end of x, a5 the x pointer.
core::arch::global_asm!(
    // The target has M (build.rs checks), but module-level assembly starts from the base ISA.
    ".option push",
    ".option arch, +m",
    ".macro itera_rv32_column off, cols",
    "lb t4, \\off(a5)",
    "lb t5, \\off(a0)",
    "mul t5, t5, t4",
    "add t0, t0, t5",
    "lb t5, (\\cols + \\off)(a0)",
    "mul t5, t5, t4",
    "add t1, t1, t5",
    "lb t5, (2 * \\cols + \\off)(a0)",
    "mul t5, t5, t4",
    "add t2, t2, t5",
    "lb t5, (3 * \\cols + \\off)(a0)",
    "mul t5, t5, t4",
    "add t3, t3, t5",
    ".endm",
    ".macro itera_rv32_dots4 cols",
    ".section .text.itera_rv32_dots4_\\cols,\"ax\",@progbits",
    ".global itera_rv32_dots4_\\cols",
    ".type itera_rv32_dots4_\\cols,@function",
    "itera_rv32_dots4_\\cols:",
    "1:",
    "li t0, 0",
    "li t1, 0",
    "li t2, 0",
    "li t3, 0",
    "mv a5, a1",
    "addi a4, a1, \\cols",
    "2:",
    "itera_rv32_column 0, \\cols",
    "itera_rv32_column 1, \\cols",
    "itera_rv32_column 2, \\cols",
    "itera_rv32_column 3, \\cols",
    "addi a5, a5, 4",
    "addi a0, a0, 4",
    "bne a5, a4, 2b",
    "sw t0, 0(a2)",
    "sw t1, 4(a2)",
    "sw t2, 8(a2)",
    "sw t3, 12(a2)",
    "addi a2, a2, 16",
    "addi a0, a0, (3 * \\cols)",
    "addi a3, a3, -1",
    "bnez a3, 1b",
    "ret",
    ".size itera_rv32_dots4_\\cols, . - itera_rv32_dots4_\\cols",
    ".endm",
    "itera_rv32_dots4 8",
    "itera_rv32_dots4 32",
    "itera_rv32_dots4 64",
    "itera_rv32_dots4 128",
    "itera_rv32_dots4 256",
    "itera_rv32_dots4 512",
    ".option pop",
);

extern "C" {
    fn itera_rv32_dots4_8(q: *const i8, x: *const i8, out: *mut i32, blocks: usize);
    fn itera_rv32_dots4_32(q: *const i8, x: *const i8, out: *mut i32, blocks: usize);
    fn itera_rv32_dots4_64(q: *const i8, x: *const i8, out: *mut i32, blocks: usize);
    fn itera_rv32_dots4_128(q: *const i8, x: *const i8, out: *mut i32, blocks: usize);
    fn itera_rv32_dots4_256(q: *const i8, x: *const i8, out: *mut i32, blocks: usize);
    fn itera_rv32_dots4_512(q: *const i8, x: *const i8, out: *mut i32, blocks: usize);
}

/// Row dots four rows at a time for the model's row lengths; returns how many rows it
/// computed (a multiple of 4; the caller does the rest, and everything for other lengths).
pub(crate) fn dots4(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) -> usize {
    let routine: unsafe extern "C" fn(*const i8, *const i8, *mut i32, usize) = match cols {
        8 => itera_rv32_dots4_8,
        32 => itera_rv32_dots4_32,
        64 => itera_rv32_dots4_64,
        128 => itera_rv32_dots4_128,
        256 => itera_rv32_dots4_256,
        512 => itera_rv32_dots4_512,
        _ => return 0,
    };
    let blocks = (out.len() / 4).min(q.len() / (4 * cols));
    if blocks == 0 || xq.len() < cols {
        return 0;
    }
    // SAFETY: the routine for `cols` reads 4 · cols · blocks bytes from `q` (at most its
    // length, by `blocks`), cols bytes from `xq` (checked), and writes 4 · blocks i32 to `out`
    // (at most its length); it uses only caller-saved registers and no stack.
    unsafe { routine(q.as_ptr(), xq.as_ptr(), out.as_mut_ptr(), blocks) };
    4 * blocks
}
