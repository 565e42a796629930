//! ARMv6-M (Cortex-M0/M0+) integer row dots: four rows per pass sharing each input load,
//! two columns per loop turn, `LDRSB` with a register offset (the only signed byte load
//! v6-M has), `MULS` and `ADD` into high registers: 29 instructions for 8 MACs. In
//! assembly because the compiler, with r6 and r7 reserved and only r0-r7 usable by `LDRSB`
//! and `MULS`, spills the four sums and the row pointers in every column (27 instructions
//! for 4 MACs, measured). Exact integer sums: the same values as the portable loop.

// `itera_v6m_dots4(q, cols, x, out)`: rows q[0..cols], q[cols..2 cols], q[2 cols..3 cols],
// q[3 cols..4 cols] against x[0..cols] into out[0..4]; cols even and at least 2. Registers
// in the loop: r0 the column index from -cols up to 0, r1 an input, r2 the end of x, r3 a
// weight and product, r4-r7 the ends of the four rows, r8-r11 the sums, r12 `out`.
core::arch::global_asm!(
    ".section .text.itera_v6m_dots4,\"ax\",%progbits",
    ".global itera_v6m_dots4",
    ".type itera_v6m_dots4,%function",
    ".thumb_func",
    "itera_v6m_dots4:",
    "push {{r4-r7, lr}}",
    "mov r4, r8",
    "mov r5, r9",
    "mov r6, r10",
    "mov r7, r11",
    "push {{r4-r7}}",
    "mov r12, r3",
    "adds r2, r2, r1",
    "adds r4, r0, r1",
    "adds r5, r4, r1",
    "adds r6, r5, r1",
    "adds r7, r6, r1",
    "rsbs r0, r1, #0",
    "movs r1, #0",
    "mov r8, r1",
    "mov r9, r1",
    "mov r10, r1",
    "mov r11, r1",
    ".macro itera_v6m_column",
    "ldrsb r1, [r2, r0]",
    "ldrsb r3, [r4, r0]",
    "muls r3, r1, r3",
    "add r8, r3",
    "ldrsb r3, [r5, r0]",
    "muls r3, r1, r3",
    "add r9, r3",
    "ldrsb r3, [r6, r0]",
    "muls r3, r1, r3",
    "add r10, r3",
    "ldrsb r3, [r7, r0]",
    "muls r3, r1, r3",
    "add r11, r3",
    "adds r0, #1",
    ".endm",
    "1:",
    "itera_v6m_column",
    "itera_v6m_column",
    "bne 1b",
    "mov r3, r12",
    "mov r1, r8",
    "str r1, [r3]",
    "mov r1, r9",
    "str r1, [r3, #4]",
    "mov r1, r10",
    "str r1, [r3, #8]",
    "mov r1, r11",
    "str r1, [r3, #12]",
    "pop {{r4-r7}}",
    "mov r8, r4",
    "mov r9, r5",
    "mov r10, r6",
    "mov r11, r7",
    "pop {{r4-r7, pc}}",
    ".size itera_v6m_dots4, . - itera_v6m_dots4",
);

extern "C" {
    fn itera_v6m_dots4(q: *const i8, cols: usize, x: *const i8, out: *mut i32);
}

/// Row dots four rows at a time; returns how many rows it computed (a multiple of 4; the
/// caller does the rest, and everything when `cols` is odd or zero).
pub(crate) fn dots4(q: &[i8], cols: usize, xq: &[i8], out: &mut [i32]) -> usize {
    if cols < 2 || !cols.is_multiple_of(2) || xq.len() < cols {
        return 0;
    }
    let mut done = 0;
    for (o, rows) in out.chunks_exact_mut(4).zip(q.chunks_exact(4 * cols)) {
        // SAFETY: the routine reads 4 · cols bytes from `rows` (exactly its length), cols
        // bytes from `xq` (checked above), writes four i32 to `o` (a chunk of four), keeps to
        // the AAPCS (r4-r11 saved and restored, the stack balanced) and touches nothing else.
        unsafe { itera_v6m_dots4(rows.as_ptr(), cols, xq.as_ptr(), o.as_mut_ptr()) };
        done += 4;
    }
    done
}
