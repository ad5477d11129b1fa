//! Split GGUF sets: `name-00001-of-00003.gguf` … with `split.no`, `split.count` and
//! `split.tensors.count` (formats.md §1.1). Metadata comes from the first file; each tensor keeps
//! the index of the file that holds it, and its offset stays relative to that file's data section.
//! A single plain file is a set of one.

use super::{GgufHeader, HeaderStream, Limits, Metadata, TensorInfo};
use crate::error::{Error, GgufError, Result};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One file of a set.
#[derive(Debug, Clone)]
pub struct SplitPart {
    pub header: GgufHeader,
    /// The file's total length in bytes.
    pub file_len: u64,
}

/// A tensor of the merged table.
#[derive(Debug, Clone)]
pub struct SplitTensor {
    /// Index into [`SplitSet::parts`].
    pub part: usize,
    /// Index into that part's tensor table.
    pub index: usize,
}

/// The merged view of one model's files.
#[derive(Debug, Clone)]
pub struct SplitSet {
    pub parts: Vec<SplitPart>,
    pub tensors: Vec<SplitTensor>,
}

/// For `dir/name-00002-of-00005.gguf`, the paths of all five files in order.
pub fn split_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = head.rsplit_once('-')?;
    if no.len() != 5
        || count.len() != 5
        || !no.bytes().chain(count.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let count: usize = count.parse().ok()?;
    if count == 0 {
        return None;
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    Some(
        (1..=count)
            .map(|i| dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf")))
            .collect(),
    )
}

impl SplitSet {
    /// Merges the parts' tensor tables after checking the split keys.
    pub fn from_parts(parts: Vec<SplitPart>) -> Result<Self, GgufError> {
        let err = |m: String| GgufError::Split(m);
        let n = parts.len();
        if n == 0 {
            return Err(err("no files".into()));
        }
        let first = &parts[0].header.metadata;
        let declared: Option<u32> = first.int("split.count")?;
        if declared.unwrap_or(1) as usize != n {
            return Err(err(format!(
                "split.count = {} but {n} files were given",
                declared.unwrap_or(1)
            )));
        }
        let mut tensors = Vec::new();
        let mut names = HashSet::new();
        for (p, part) in parts.iter().enumerate() {
            let md = &part.header.metadata;
            if n > 1 {
                let no: u32 = Metadata::required("split.no", md.int("split.no"))?;
                let count: u32 = Metadata::required("split.count", md.int("split.count"))?;
                if no as usize != p || count as usize != n {
                    return Err(err(format!(
                        "file {} says split.no = {no}, split.count = {count}",
                        p + 1
                    )));
                }
            }
            for (i, t) in part.header.tensors.iter().enumerate() {
                if !names.insert(t.name.as_str()) {
                    return Err(GgufError::DuplicateTensor(t.name.clone()));
                }
                tensors.push(SplitTensor { part: p, index: i });
            }
        }
        if let Some(total) = first.int::<u64>("split.tensors.count")? {
            if total != tensors.len() as u64 {
                return Err(err(format!(
                    "split.tensors.count = {total} but the files hold {}",
                    tensors.len()
                )));
            }
        }
        Ok(SplitSet { parts, tensors })
    }

    /// Opens a file, or all files of a split set when `path` is named like one (any part may be given).
    pub fn open(path: &Path) -> Result<Self> {
        let paths = split_paths(path).unwrap_or_else(|| vec![path.to_path_buf()]);
        let parts = paths
            .iter()
            .map(|p| read_part(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_parts(parts)?)
    }

    /// The set's metadata (the first file's).
    pub fn metadata(&self) -> &Metadata {
        &self.parts[0].header.metadata
    }

    /// Every tensor of the set with the part that holds it.
    pub fn tensor_infos(&self) -> impl Iterator<Item = (usize, &TensorInfo)> {
        self.tensors
            .iter()
            .map(|t| (t.part, &self.parts[t.part].header.tensors[t.index]))
    }

    pub fn tensor(&self, name: &str) -> Option<(usize, &TensorInfo)> {
        self.tensor_infos().find(|(_, t)| t.name == name)
    }
}

/// Reads only a file's header, in chunks, and validates its tensor table against the file size.
pub fn read_part(path: &Path) -> Result<SplitPart> {
    let shown = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(&shown, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(&shown, e))?.len();
    let mut stream = HeaderStream::new(Some(file_len), Limits::default());
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut chunk).map_err(|e| Error::io(&shown, e))?;
        if n == 0 {
            return Ok(SplitPart {
                header: stream.finish()?,
                file_len,
            });
        }
        if let Some(header) = stream.push(&chunk[..n])? {
            return Ok(SplitPart { header, file_len });
        }
    }
}
