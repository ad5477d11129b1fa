//! Incremental parsing for streamed files (fetch streams, files read in chunks).
//!
//! [`HeaderStream`] buffers only the header: it retries the parse when the buffer has grown past
//! what the last attempt needed and at least doubled, so the total parse work stays linear in the
//! header size. [`TensorRouter`] then maps each later chunk of the file to the tensors it carries,
//! so tensor data can go straight to its destination (a GPU buffer) without the file in memory.

use super::reader::{parse_header, Limits, Parse};
use super::GgufHeader;
use crate::error::GgufError;

/// Feeds the first chunks of a GGUF file until its header is complete.
#[derive(Debug)]
pub struct HeaderStream {
    buf: Vec<u8>,
    next_try: u64,
    file_len: Option<u64>,
    limits: Limits,
}

impl HeaderStream {
    /// `file_len` is the total file size when known (Content-Length, file metadata); with it the
    /// tensor table is validated against the data section as soon as the header is complete.
    pub fn new(file_len: Option<u64>, limits: Limits) -> Self {
        HeaderStream {
            buf: Vec::new(),
            next_try: 0,
            file_len,
            limits,
        }
    }

    /// Adds the next chunk. Returns the header once it is complete; the bytes of the chunk past the
    /// header are then available from [`HeaderStream::leftover`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<GgufHeader>, GgufError> {
        self.buf.extend_from_slice(chunk);
        let have = self.buf.len() as u64;
        if self.file_len.is_some_and(|l| have > l) {
            return Err(GgufError::TooLarge {
                what: "stream length".into(),
                value: have,
                limit: self.file_len.unwrap_or(0),
            });
        }
        let at_end = self.file_len == Some(have);
        if have < self.next_try && !at_end {
            return Ok(None);
        }
        self.attempt()
    }

    /// The stream ended (unknown length): the header must be complete now.
    pub fn finish(&mut self) -> Result<GgufHeader, GgufError> {
        self.file_len = Some(self.buf.len() as u64);
        self.attempt()?.ok_or_else(|| GgufError::Truncated {
            what: "header".into(),
            offset: self.buf.len() as u64,
            need: 1,
            have: 0,
        })
    }

    fn attempt(&mut self) -> Result<Option<GgufHeader>, GgufError> {
        let have = self.buf.len() as u64;
        match parse_header(&self.buf, self.file_len, self.limits)? {
            Parse::Done(h) => {
                if let Some(len) = self.file_len {
                    h.validate_data(len.saturating_sub(h.data_offset))?;
                }
                Ok(Some(h))
            }
            Parse::NeedMore { total } => {
                if total > self.limits.max_header_bytes {
                    return Err(GgufError::TooLarge {
                        what: "header size".into(),
                        value: total,
                        limit: self.limits.max_header_bytes,
                    });
                }
                self.next_try = total
                    .max(have.saturating_mul(2))
                    .min(self.limits.max_header_bytes);
                if let Some(l) = self.file_len {
                    self.next_try = self.next_try.min(l);
                }
                Ok(None)
            }
        }
    }

    /// The file's length, when known (given, or the stream's once finished).
    pub fn file_len(&self) -> Option<u64> {
        self.file_len
    }

    /// Everything received so far as `(file offset, bytes)`: after the header is complete, route
    /// it with [`TensorRouter::route`] before the chunks that follow.
    pub fn leftover(&self) -> (u64, &[u8]) {
        (0, &self.buf)
    }
}

/// A piece of one tensor's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorChunk<'b> {
    /// Index into the header's tensor table.
    pub tensor: usize,
    /// Offset of `bytes` within the tensor.
    pub offset: u64,
    pub bytes: &'b [u8],
    /// Whether this piece ends the tensor.
    pub last: bool,
}

/// Maps file byte ranges to tensor byte ranges.
#[derive(Debug, Clone)]
pub struct TensorRouter {
    /// (file start, file end, tensor index), sorted by start, non-overlapping (validated header).
    spans: Vec<(u64, u64, usize)>,
}

impl TensorRouter {
    pub fn new(header: &GgufHeader) -> Self {
        let mut spans: Vec<_> = header
            .tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.n_bytes > 0)
            .map(|(i, t)| {
                (
                    header.data_offset + t.offset,
                    header.data_offset + t.offset + t.n_bytes,
                    i,
                )
            })
            .collect();
        spans.sort_unstable();
        TensorRouter { spans }
    }

    /// Calls `f` for each tensor piece inside `bytes`, which start at file offset `file_pos`.
    pub fn route<'b>(&self, file_pos: u64, bytes: &'b [u8], mut f: impl FnMut(TensorChunk<'b>)) {
        let end = file_pos + bytes.len() as u64;
        let first = self.spans.partition_point(|&(_, e, _)| e <= file_pos);
        for &(s, e, tensor) in &self.spans[first..] {
            if s >= end {
                break;
            }
            let lo = s.max(file_pos);
            let hi = e.min(end);
            f(TensorChunk {
                tensor,
                offset: lo - s,
                bytes: &bytes[(lo - file_pos) as usize..(hi - file_pos) as usize],
                last: hi == e,
            });
        }
    }
}
