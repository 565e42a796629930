//! Cortex-M4/M7/M33 DSP path: int8 dot products with `SXTB16` (two bytes to two halfwords)
//! and `SMLAD` (two 16x16 multiply-accumulates), four products per word loaded, where the
//! portable code needs a sign-extending load and a multiply-accumulate per product. Exact,
//! so it returns what the portable `dot_i8` returns.

use core::arch::asm;

/// Exact `Σ a·b` over int8.
#[inline]
pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (ac, ar) = a[..n].as_chunks::<4>();
    let (bc, br) = b[..n].as_chunks::<4>();
    let mut acc: i32 = 0;
    for (x, y) in ac.iter().zip(bc) {
        let wx = u32::from_le_bytes(x.map(|v| v as u8));
        let wy = u32::from_le_bytes(y.map(|v| v as u8));
        // SAFETY: register-only DSP instructions of ARMv7E-M (this module is compiled only
        // for such targets, see build.rs); no memory is touched, no flags are relied on.
        unsafe {
            asm!(
                "sxtb16 {x02}, {wx}",
                "sxtb16 {x13}, {wx}, ror #8",
                "sxtb16 {y02}, {wy}",
                "sxtb16 {y13}, {wy}, ror #8",
                "smlad {acc}, {x02}, {y02}, {acc}",
                "smlad {acc}, {x13}, {y13}, {acc}",
                wx = in(reg) wx,
                wy = in(reg) wy,
                x02 = out(reg) _,
                x13 = out(reg) _,
                y02 = out(reg) _,
                y13 = out(reg) _,
                acc = inout(reg) acc,
                options(pure, nomem, nostack),
            );
        }
    }
    acc + ar.iter().zip(br).map(|(&x, &y)| x as i32 * y as i32).sum::<i32>()
}

/// Two rows against one `x`: each word of `x` is sign-extended once for both rows.
#[inline]
pub(super) fn dot2_i8(a: &[i8], b: &[i8], x: &[i8]) -> (i32, i32) {
    let n = a.len().min(b.len()).min(x.len());
    let (ac, ar) = a[..n].as_chunks::<4>();
    let (bc, br) = b[..n].as_chunks::<4>();
    let (xc, xr) = x[..n].as_chunks::<4>();
    let (mut acc_a, mut acc_b) = (0i32, 0i32);
    for ((wa, wb), xv) in ac.iter().zip(bc).zip(xc) {
        let wa = u32::from_le_bytes(wa.map(|v| v as u8));
        let wb = u32::from_le_bytes(wb.map(|v| v as u8));
        let wx = u32::from_le_bytes(xv.map(|v| v as u8));
        // SAFETY: as in `dot_i8`: register-only ARMv7E-M DSP instructions.
        unsafe {
            asm!(
                "sxtb16 {x02}, {wx}",
                "sxtb16 {x13}, {wx}, ror #8",
                "sxtb16 {t02}, {wa}",
                "sxtb16 {t13}, {wa}, ror #8",
                "smlad {acc_a}, {t02}, {x02}, {acc_a}",
                "smlad {acc_a}, {t13}, {x13}, {acc_a}",
                "sxtb16 {t02}, {wb}",
                "sxtb16 {t13}, {wb}, ror #8",
                "smlad {acc_b}, {t02}, {x02}, {acc_b}",
                "smlad {acc_b}, {t13}, {x13}, {acc_b}",
                wa = in(reg) wa,
                wb = in(reg) wb,
                wx = in(reg) wx,
                x02 = out(reg) _,
                x13 = out(reg) _,
                t02 = out(reg) _,
                t13 = out(reg) _,
                acc_a = inout(reg) acc_a,
                acc_b = inout(reg) acc_b,
                options(pure, nomem, nostack),
            );
        }
    }
    let tail = |r: &[i8]| r.iter().zip(xr).map(|(&w, &v)| w as i32 * v as i32).sum::<i32>();
    (acc_a + tail(ar), acc_b + tail(br))
}
