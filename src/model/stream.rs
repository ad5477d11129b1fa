//! Loading a model straight to the GPU from its file's bytes in order — a fetch stream, a file
//! read in chunks — without the file in memory (issue #5 item 2).
//!
//! [`GpuLoader::push`] feeds the bytes: [`HeaderStream`] until the header is complete, then
//! [`TensorRouter`] says which tensor each byte belongs to. A matrix's bytes are gathered until
//! the tensor is complete and then uploaded ([`Uploads::add_group`]: ternary types repacked to
//! T2R, split by rows past the binding limit) and dropped; a layer's gate and up (or q, k and
//! v) wait for each other so that they upload as one weight. 1-D tensors (norm weights, biases,
//! `rope_freqs`, BitNet's `.scale`) stay on the host: they are a few KB. [`GpuLoader::finish`]
//! builds the spec and the weights from the header and those, checks every tensor arrived, and
//! returns a [`Model`] that runs only on the GPU (a CPU forward is
//! [`ModelError::GpuOnly`]). The host holds at most the header and the tensors being
//! gathered ([`GpuLoader::peak_bytes`]): in llama.cpp's files a layer's tensors are adjacent, so
//! that is the largest tensor or group, not the file.
//!
//! A split set (`name-00001-of-0000N.gguf` …) streams file after file: [`GpuLoader::next_file`]
//! ends one and starts the next, each with its own header. A layer's gate/up or q/k/v join only
//! within a file (a group cut by a file boundary uploads as two weights, which the decoder
//! handles as it does matrices of different types); [`GpuLoader::finish`] checks the set's
//! split keys as [`SplitSet::from_parts`] does for files read whole.
//!
//! Which tensors are matrices is read from the names alone (the spec needs `rope_freqs`' values,
//! which may come late): `token_embd`, `output` and `blk.N.*.weight` with two dimensions; other
//! tensors are skipped. A matrix the architecture needs that is not among them is reported as
//! missing by [`GpuLoader::finish`].

use super::Model;
use crate::backend::gpu::{GpuContext, Uploads};
use crate::error::{GgufError, ModelError, Result};
use crate::gguf::split::{SplitPart, SplitSet};
use crate::gguf::{GgufHeader, HeaderStream, Limits, TensorChunk, TensorRouter};
use crate::quant::TensorView;
use std::collections::HashMap;

/// What happens to a tensor's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// Kept on the host (1-D).
    Host,
    /// Uploaded with the other members of group `g` (a group of one: alone).
    Matrix(usize),
    /// Not used by any architecture.
    Skip,
}

/// The group a matrix uploads with: a layer's gate and up, or its q, k and v (members in that
/// order), else itself alone.
fn group_key(name: &str) -> (String, usize) {
    if let Some(rest) = name.strip_prefix("blk.") {
        if let Some((layer, role)) = rest.split_once('.') {
            let member = |key: &str, i: usize| (format!("blk.{layer}.{key}"), i);
            match role {
                "ffn_gate.weight" => return member("ffn_gate+up", 0),
                "ffn_up.weight" => return member("ffn_gate+up", 1),
                "attn_q.weight" => return member("attn_q+k+v", 0),
                "attn_k.weight" => return member("attn_q+k+v", 1),
                "attn_v.weight" => return member("attn_q+k+v", 2),
                _ => {}
            }
        }
    }
    (name.to_string(), 0)
}

fn is_matrix_name(name: &str) -> bool {
    name == "token_embd.weight"
        || name == "output.weight"
        || (name.starts_with("blk.") && name.ends_with(".weight"))
}

/// A group's members: (place in the group, tensor index, bytes once complete), by place.
type Group = Vec<(usize, usize, Option<Vec<u8>>)>;

/// After the header: where each tensor goes and what has arrived.
struct Routing {
    header: GgufHeader,
    file_len: Option<u64>,
    router: TensorRouter,
    roles: Vec<Role>,
    groups: Vec<Group>,
    /// Bytes of tensors not yet complete, by tensor index.
    partial: HashMap<usize, Vec<u8>>,
    /// Tensors complete (uploaded, kept, or skipped whole).
    done: Vec<bool>,
}

/// What a load keeps across the files of a split set.
#[derive(Default)]
struct Loaded {
    /// The files ended so far (their headers and lengths), in order.
    parts: Vec<SplitPart>,
    /// Complete 1-D tensors by name.
    host: HashMap<String, Vec<u8>>,
    uploads: Uploads,
}

/// Streams a GGUF file, or a split set's files one after another, into a model on the GPU (see
/// the module docs).
pub struct GpuLoader {
    ctx: GpuContext,
    head: Option<HeaderStream>,
    routing: Option<Routing>,
    loaded: Loaded,
    /// Offset in the current file of the next byte pushed.
    pos: u64,
    /// The first error, as text: every later call fails with it.
    failed: Option<String>,
    peak: u64,
}

impl GpuLoader {
    /// A loader onto `ctx`'s device. `file_len`, when known (Content-Length, file metadata),
    /// validates the tensor table against it as soon as the header is complete.
    pub fn new(ctx: GpuContext, file_len: Option<u64>) -> GpuLoader {
        GpuLoader {
            ctx,
            head: Some(HeaderStream::new(file_len, Limits::default())),
            routing: None,
            loaded: Loaded::default(),
            pos: 0,
            failed: None,
            peak: 0,
        }
    }

    /// The next bytes of the file. An error (a malformed header, more bytes than the file
    /// has, an upload that failed) ends the load: later calls are [`ModelError::LoadFailed`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.check_live()?;
        let r = self.push_inner(chunk);
        self.fail_on(r)
    }

    /// The current file of a split set ended (every tensor it declares arrived); the bytes
    /// pushed from now on are the next file's, from its first byte (`file_len` as for
    /// [`GpuLoader::new`]). Errors as [`GpuLoader::push`].
    pub fn next_file(&mut self, file_len: Option<u64>) -> Result<()> {
        self.check_live()?;
        let r = self.end_file();
        self.fail_on(r)?;
        self.head = Some(HeaderStream::new(file_len, Limits::default()));
        self.pos = 0;
        Ok(())
    }

    fn fail_on<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    fn check_live(&self) -> Result<()> {
        match &self.failed {
            Some(e) => Err(ModelError::LoadFailed(e.clone()).into()),
            None => Ok(()),
        }
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<()> {
        if let Some(head) = &mut self.head {
            let Some(header) = head.push(chunk)? else {
                self.peak = self.peak.max(head.leftover().1.len() as u64);
                return Ok(());
            };
            let head = self.head.take().expect("the header stream");
            let (_, bytes) = head.leftover();
            self.pos = bytes.len() as u64;
            self.peak = self.peak.max(self.pos);
            self.routing = Some(Routing::new(header, head.file_len()));
            return self.route(0, bytes);
        }
        let at = self.pos;
        self.pos += chunk.len() as u64;
        self.route(at, chunk)
    }

    fn route(&mut self, at: u64, bytes: &[u8]) -> Result<()> {
        let r = self.routing.as_mut().expect("routing after the header");
        if let Some(len) = r.file_len.filter(|&l| at + bytes.len() as u64 > l) {
            return Err(GgufError::TooLarge {
                what: "stream length".into(),
                value: at + bytes.len() as u64,
                limit: len,
            }
            .into());
        }
        let mut pieces = Vec::new();
        r.router.route(at, bytes, |c| pieces.push(c));
        for c in pieces {
            r.take(&self.ctx, c, &mut self.loaded)?;
        }
        self.peak = self.peak.max(r.held());
        Ok(())
    }

    /// The most bytes of the file the loader has held at once (the header while it was
    /// incomplete, then the tensors being gathered).
    pub fn peak_bytes(&self) -> u64 {
        self.peak
    }

    /// The stream ended: the model, once every tensor it needs has arrived (and, for a split
    /// set, every file: its split keys checked).
    pub fn finish(mut self) -> Result<Model> {
        self.check_live()?;
        self.end_file()?;
        let Loaded {
            parts,
            host,
            uploads,
        } = self.loaded;
        Model::from_stream(SplitSet::from_parts(parts)?, &host, uploads, self.ctx)
    }

    /// Ends the current file: its header complete and every tensor it declares arrived; its
    /// header and length join [`Loaded::parts`].
    fn end_file(&mut self) -> Result<()> {
        if let Some(mut head) = self.head.take() {
            // the header was never known complete: the file ends here (a short file)
            let header = head.finish()?;
            let bytes = head.leftover().1;
            self.pos = bytes.len() as u64;
            self.routing = Some(Routing::new(header, head.file_len()));
            self.route(0, bytes)?;
        }
        let r = self.routing.take().expect("routing after the header");
        if let Some(i) = (0..r.roles.len()).find(|&i| r.roles[i] != Role::Skip && !r.done[i]) {
            let t = &r.header.tensors[i];
            let have = r.partial.get(&i).map_or(0, |b| b.len() as u64);
            return Err(GgufError::Truncated {
                what: format!("tensor '{}'", t.name),
                offset: r.header.data_offset + t.offset + have,
                need: t.n_bytes - have,
                have: 0,
            }
            .into());
        }
        self.loaded.parts.push(SplitPart {
            file_len: r.file_len.unwrap_or(self.pos),
            header: r.header,
        });
        Ok(())
    }
}

impl Routing {
    fn new(header: GgufHeader, file_len: Option<u64>) -> Routing {
        let mut groups: Vec<Group> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let roles = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.ne.len() == 1 {
                    return Role::Host;
                }
                if t.ne.len() != 2 || !is_matrix_name(&t.name) {
                    return Role::Skip;
                }
                let (key, place) = group_key(&t.name);
                let g = *by_key.entry(key).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push((place, i, None));
                Role::Matrix(g)
            })
            .collect::<Vec<_>>();
        for g in &mut groups {
            g.sort_by_key(|m| m.0);
        }
        let done = header.tensors.iter().map(|t| t.n_bytes == 0).collect();
        Routing {
            router: TensorRouter::new(&header),
            header,
            file_len,
            roles,
            groups,
            partial: HashMap::new(),
            done,
        }
    }

    /// Bytes held: tensors being gathered and group members waiting for the others.
    fn held(&self) -> u64 {
        let waiting: usize = self
            .groups
            .iter()
            .flatten()
            .filter_map(|m| m.2.as_ref().map(Vec::len))
            .sum();
        (self.partial.values().map(Vec::len).sum::<usize>() + waiting) as u64
    }

    fn take(&mut self, ctx: &GpuContext, c: TensorChunk, loaded: &mut Loaded) -> Result<()> {
        let i = c.tensor;
        let role = self.roles[i];
        if role == Role::Skip {
            self.done[i] |= c.last;
            return Ok(());
        }
        let n_bytes = self.header.tensors[i].n_bytes;
        let whole = c.offset == 0 && c.last;
        let bytes = if whole {
            c.bytes.to_vec()
        } else {
            // grown as the bytes come (never reserved from the header's claim alone)
            let buf = self.partial.entry(i).or_default();
            if buf.len() as u64 != c.offset {
                return Err(ModelError::Mismatch(format!(
                    "tensor '{}' bytes out of order",
                    self.header.tensors[i].name
                ))
                .into());
            }
            buf.extend_from_slice(c.bytes);
            if !c.last {
                return Ok(());
            }
            self.partial.remove(&i).unwrap_or_default()
        };
        debug_assert_eq!(bytes.len() as u64, n_bytes);
        self.done[i] = true;
        let t = &self.header.tensors[i];
        match role {
            Role::Host => {
                loaded.host.insert(t.name.clone(), bytes);
            }
            Role::Matrix(g) => {
                let group = &mut self.groups[g];
                if let Some(m) = group.iter_mut().find(|m| m.1 == i) {
                    m.2 = Some(bytes);
                }
                if group.iter().all(|m| m.2.is_some()) {
                    let members = std::mem::take(group);
                    let views = members
                        .iter()
                        .map(|(_, j, b)| {
                            let t = &self.header.tensors[*j];
                            TensorView::new(&t.name, t.ty, &t.ne, b.as_deref().unwrap_or(&[]))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    loaded.uploads.add_group(ctx, &views)?;
                    ctx.flush_writes();
                    ctx.check()?;
                }
            }
            Role::Skip => {}
        }
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl GpuLoader {
    /// Streams the GGUF file at `path` onto `ctx`'s device, read 8 MiB at a time; a split set's
    /// files (`path` named like any of them) one after another.
    pub fn load_file(ctx: GpuContext, path: &std::path::Path) -> Result<Model> {
        let paths = crate::gguf::split::split_paths(path).unwrap_or_else(|| vec![path.into()]);
        let (first, rest) = paths
            .split_first()
            .expect("split_paths gives at least one file");
        let mut buf = vec![0u8; 8 << 20];
        let (f, len) = open_len(first)?;
        let mut loader = GpuLoader::new(ctx, Some(len));
        loader.push_file(f, first, &mut buf)?;
        for p in rest {
            let (f, len) = open_len(p)?;
            loader.next_file(Some(len))?;
            loader.push_file(f, p, &mut buf)?;
        }
        loader.finish()
    }

    /// Pushes the rest of `f` (at `path`), `buf` at a time.
    fn push_file(
        &mut self,
        mut f: std::fs::File,
        path: &std::path::Path,
        buf: &mut [u8],
    ) -> Result<()> {
        use std::io::Read;
        loop {
            let n = f
                .read(buf)
                .map_err(|e| crate::Error::io(path.display().to_string(), e))?;
            if n == 0 {
                return Ok(());
            }
            self.push(&buf[..n])?;
        }
    }
}

/// The file at `path`, open, and its length.
#[cfg(not(target_arch = "wasm32"))]
fn open_len(path: &std::path::Path) -> Result<(std::fs::File, u64)> {
    let io = |e| crate::Error::io(path.display().to_string(), e);
    let f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    Ok((f, len))
}
