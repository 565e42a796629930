//! The kernels: every weight matrix of the model is a [`Matrix`], and the forward pass only
//! ever asks one for `y = W·x` or for one of its rows. Each storage format (f32 now; f16,
//! int8 and int4 later) implements those two operations here and nowhere else.

/// How a matrix's elements are stored, borrowed in place from the blob.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// Row-major f32.
    F32(&'a [f32]),
}

/// A `rows × cols` row-major weight matrix.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    rows: usize,
    cols: usize,
    weights: Weights<'a>,
}

impl<'a> Matrix<'a> {
    /// A matrix over `weights`; `None` unless they hold exactly `rows * cols` elements.
    pub fn new(rows: usize, cols: usize, weights: Weights<'a>) -> Option<Self> {
        let n = match weights {
            Weights::F32(w) => w.len(),
        };
        (rows.checked_mul(cols) == Some(n)).then_some(Matrix { rows, cols, weights })
    }

    /// Output length of [`Matrix::matvec`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input length of [`Matrix::matvec`].
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Which kernel computes with this matrix (for reports).
    pub fn kernel_name(&self) -> &'static str {
        match self.weights {
            Weights::F32(_) => "f32-scalar",
        }
    }

    /// `y = W·x`. `x` must hold `cols` values and `y` `rows`; shorter slices compute a
    /// prefix (the model sizes every buffer from the same config, so they always match).
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        match self.weights {
            Weights::F32(w) => {
                for (row, out) in w.chunks_exact(self.cols).zip(y.iter_mut()) {
                    *out = dot_f32(row, x);
                }
            }
        }
    }

    /// `out += W[row, ..]` (embedding lookup).
    pub fn add_row(&self, row: usize, out: &mut [f32]) {
        match self.weights {
            Weights::F32(w) => {
                let r = w.chunks_exact(self.cols).nth(row).unwrap_or(&[]);
                for (o, v) in out.iter_mut().zip(r) {
                    *o += v;
                }
            }
        }
    }
}

/// Dot product with eight independent accumulators, a shape LLVM vectorises.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 8;
    let mut acc = [0.0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_matches_the_definition() {
        let w: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = Matrix::new(2, 3, Weights::F32(&w)).expect("shape");
        let mut y = [0.0; 2];
        m.matvec(&[1.0, 0.5, -1.0], &mut y);
        assert_eq!(y, [1.0 + 1.0 - 3.0, 4.0 + 2.5 - 6.0]);
        assert!(Matrix::new(4, 2, Weights::F32(&w)).is_none());
    }

    #[test]
    fn dot_handles_remainders() {
        let a: [f32; 19] = core::array::from_fn(|i| i as f32);
        let b = [2.0f32; 19];
        assert_eq!(dot_f32(&a, &b), 2.0 * (0..19).sum::<i32>() as f32);
    }
}
