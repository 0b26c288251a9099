//! A bounds-checked cursor over a byte slice that tells "not enough bytes yet" apart from
//! "these bytes are wrong", so the same parser serves one-shot and streaming decryption.

use crate::error::DecryptError;

/// Why parsing stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The input ends inside the named field; more bytes may complete it.
    Incomplete(&'static str),
    /// The bytes are malformed.
    Bad(DecryptError),
}

impl From<DecryptError> for Stop {
    fn from(e: DecryptError) -> Self {
        Stop::Bad(e)
    }
}

pub(crate) struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Stop> {
        let end = self.pos.checked_add(n).ok_or(Stop::Incomplete(field))?;
        let bytes = self.input.get(self.pos..end).ok_or(Stop::Incomplete(field))?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Stop> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Stop> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Stop> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Stop> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A field with a two-byte length prefix.
    pub(crate) fn u16_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], Stop> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }
}
