//! Bytes in a 4-aligned buffer: what `Blob::parse` and `Session::new` take on a host, where
//! a `Vec<u8>` promises no alignment.

/// Bytes in a `u32`-backed (hence 4-aligned) buffer.
pub struct AlignedBytes {
    // `inspect::read_aligned_from` reads straight into the words and sets the length.
    pub(crate) words: Vec<u32>,
    pub(crate) len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes: a session's arena, say.
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes { words: vec![0u32; len.div_ceil(4)], len }
    }
}

impl From<&[u8]> for AlignedBytes {
    fn from(b: &[u8]) -> Self {
        let mut out = AlignedBytes::zeroed(b.len());
        out.copy_from_slice(b);
        out
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
}

impl std::ops::DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut::<u32, u8>(&mut self.words)[..len]
    }
}

impl AsMut<[u8]> for AlignedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}
