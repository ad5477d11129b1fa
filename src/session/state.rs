//! The saved-session binary format (spec/runtime.md §3.1–§3.2) and the model fingerprint.
//!
//! Little-endian, version 1:
//!
//! | Field | Type |
//! |---|---|
//! | magic `"TLMS"` | 4 bytes |
//! | version | u32 (= [`STATE_VERSION`]) |
//! | model fingerprint | 32 bytes ([`model_fingerprint`]) |
//! | `n_vocab`, `n_layer` | u32, u32 |
//! | KV dtype | u32 (0 = f32, the only one so far) |
//! | capacity at save time, token count `n` | u32, u32 (informational / checked against the loader's capacity) |
//! | flags | u32 (bit 0: the last token's logits follow) |
//! | tokens | `n` × u32 |
//! | sampler | RNG state u64, Mirostat `mu` f32 |
//! | logits (if flagged) | `n_vocab` × f32 |
//! | per layer | kind u32 (0 = attention), `k_row` u32, `v_row` u32, `len` u32 (= `n`), body bytes u64 (= `4·len·(k_row + v_row)`), then K `[len][k_row]` f32, V `[len][v_row]` f32 |
//! | checksum | u64 over every preceding byte |
//!
//! Loading is two-pass: `parse` validates the whole buffer (every count against the model and
//! against the bytes that remain, before anything is allocated, then the checksum) and only
//! returns views; the session then copies them in. On any error the session is unchanged.

use super::sampler::SamplerState;
use crate::error::StateError;
use crate::model::{KvCache, Model};
use sha2::{Digest, Sha256};

pub const STATE_MAGIC: [u8; 4] = *b"TLMS";
pub const STATE_VERSION: u32 = 1;
const HEADER_LEN: usize = 64;
const KIND_ATTENTION: u32 = 0;
const DTYPE_F32: u32 = 0;
const FLAG_LOGITS: u32 = 1;

/// sha256 over the architecture, the key hyperparameters, the tensor table (name, ggml type,
/// shape, byte size of every weight the model binds) and the values of every norm vector (cheap,
/// and they tell apart fine-tunes that share one tensor table).
pub fn model_fingerprint(model: &Model) -> [u8; 32] {
    let s = model.spec();
    let mut h = Sha256::new();
    let num = |h: &mut Sha256, v: u64| h.update(v.to_le_bytes());
    h.update(b"ternlm-fingerprint-1\0");
    h.update(s.arch.name.as_bytes());
    h.update([0]);
    for v in [
        s.n_layer,
        s.n_embd,
        s.n_head,
        s.n_head_kv,
        s.head_dim,
        s.head_dim_v,
        s.n_ff,
        s.n_vocab,
    ] {
        num(&mut h, v as u64);
    }
    let w = model.weights();
    let weight = |h: &mut Sha256, x: &crate::model::Weight| {
        h.update(x.name.as_bytes());
        h.update([0]);
        num(h, x.ty as u64);
        num(h, x.ne.len() as u64);
        for &d in &x.ne {
            num(h, d);
        }
        num(h, x.range.len() as u64);
    };
    let vector = |h: &mut Sha256, v: &crate::model::Vector| {
        h.update(v.name.as_bytes());
        h.update([0]);
        for x in &v.data {
            h.update(x.to_le_bytes());
        }
    };
    weight(&mut h, &w.token_embd);
    if let Some(o) = &w.output {
        weight(&mut h, o);
    }
    vector(&mut h, &w.output_norm);
    for l in &w.layers {
        match &l.qkv {
            crate::model::Qkv::Separate { q, k, v } => {
                for x in [q, k, v] {
                    weight(&mut h, x);
                }
            }
            crate::model::Qkv::Fused(x) => weight(&mut h, x),
        }
        for x in [&l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down] {
            weight(&mut h, x);
        }
        vector(&mut h, &l.attn_norm);
        vector(&mut h, &l.ffn_norm);
    }
    h.finalize().into()
}

/// A fast 64-bit checksum (FxHash-style; every step is a bijection of the running value, so
/// any single changed word changes the result). Detects corruption, not tampering.
fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    (h.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K)
}

/// What the loading session requires.
pub(crate) struct Expect<'a> {
    pub fingerprint: &'a [u8; 32],
    pub n_vocab: usize,
    /// `(k_row, v_row)` per layer.
    pub rows: Vec<(usize, usize)>,
    pub capacity: usize,
}

/// A validated state, borrowing the buffer.
pub(crate) struct StateView<'a> {
    pub tokens: Vec<u32>,
    pub sampler: SamplerState,
    pub logits: Option<&'a [u8]>,
    /// K and V bytes per layer.
    pub layers: Vec<(&'a [u8], &'a [u8])>,
}

/// Exact size of [`encode`]'s output.
pub(crate) fn encoded_len(
    n_vocab: usize,
    n_tokens: usize,
    has_logits: bool,
    rows: &[(usize, usize)],
) -> usize {
    let layers: usize = rows.iter().map(|&(k, v)| 24 + 4 * n_tokens * (k + v)).sum();
    HEADER_LEN + 4 * n_tokens + 12 + if has_logits { 4 * n_vocab } else { 0 } + layers + 8
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    debug_assert!(v <= u32::MAX as usize);
    out.extend_from_slice(&(v as u32).to_le_bytes());
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Serialises a session (see the module table). The cache's host rows must be current
/// (`KvCache::sync_host`), else the error of `KvCache::layer_k`.
pub(crate) fn encode(
    fingerprint: &[u8; 32],
    n_vocab: usize,
    tokens: &[u32],
    sampler: SamplerState,
    logits: Option<&[f32]>,
    cache: &KvCache,
) -> crate::error::Result<Vec<u8>> {
    let n = tokens.len();
    debug_assert_eq!(n, cache.len());
    let rows: Vec<(usize, usize)> = (0..cache.n_layer()).map(|l| cache.row_len(l)).collect();
    let mut out = Vec::with_capacity(encoded_len(n_vocab, n, logits.is_some(), &rows));
    out.extend_from_slice(&STATE_MAGIC);
    put_u32(&mut out, STATE_VERSION as usize);
    out.extend_from_slice(fingerprint);
    put_u32(&mut out, n_vocab);
    put_u32(&mut out, rows.len());
    put_u32(&mut out, DTYPE_F32 as usize);
    put_u32(&mut out, cache.capacity().min(u32::MAX as usize));
    put_u32(&mut out, n);
    put_u32(
        &mut out,
        if logits.is_some() {
            FLAG_LOGITS as usize
        } else {
            0
        },
    );
    debug_assert_eq!(out.len(), HEADER_LEN);
    for &t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(&sampler.rng.to_le_bytes());
    out.extend_from_slice(&sampler.mu.to_le_bytes());
    if let Some(l) = logits {
        put_f32s(&mut out, l);
    }
    for (l, &(kr, vr)) in rows.iter().enumerate() {
        put_u32(&mut out, KIND_ATTENTION as usize);
        put_u32(&mut out, kr);
        put_u32(&mut out, vr);
        put_u32(&mut out, n);
        out.extend_from_slice(&((4 * n * (kr + vr)) as u64).to_le_bytes());
        put_f32s(&mut out, cache.layer_k(l)?);
        put_f32s(&mut out, cache.layer_v(l)?);
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], StateError> {
        let got = (self.buf.len() - self.pos) as u64;
        if n > got {
            return Err(StateError::Truncated {
                what: what.into(),
                need: n,
                got,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
}

fn shape(field: impl Into<String>, got: u64, want: u64) -> Result<(), StateError> {
    if got != want {
        return Err(StateError::ShapeMismatch {
            field: field.into(),
            got,
            want,
        });
    }
    Ok(())
}

/// Pass one of a load: validates everything, allocates only the token list (after checking
/// that its bytes are present) and the per-layer view list (after checking the layer count).
pub(crate) fn parse<'a>(bytes: &'a [u8], want: &Expect) -> Result<StateView<'a>, StateError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let magic = r.take(4, "magic").map_err(|_| StateError::BadMagic {
        found: bytes[..bytes.len().min(4)].to_vec(),
    })?;
    if magic != STATE_MAGIC {
        return Err(StateError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = r.u32("version")?;
    if version != STATE_VERSION {
        return Err(StateError::BadVersion {
            got: version,
            want: STATE_VERSION,
        });
    }
    let fp = r.take(32, "fingerprint")?;
    if fp != want.fingerprint {
        return Err(StateError::ModelMismatch);
    }
    shape("n_vocab", r.u32("n_vocab")? as u64, want.n_vocab as u64)?;
    shape("n_layer", r.u32("n_layer")? as u64, want.rows.len() as u64)?;
    shape("kv dtype", r.u32("kv dtype")? as u64, DTYPE_F32 as u64)?;
    let _capacity_at_save = r.u32("capacity")?;
    let n = r.u32("token count")? as u64;
    if n > want.capacity as u64 {
        return Err(StateError::LenOverflow {
            len: n,
            capacity: want.capacity as u64,
        });
    }
    let flags = r.u32("flags")?;
    if flags & !FLAG_LOGITS != 0 {
        return Err(StateError::BadValue(format!("unknown flags {flags:#x}")));
    }
    let tok_bytes = r.take(4 * n, "tokens")?;
    let tokens: Vec<u32> = tok_bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    if let Some((i, &t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= want.n_vocab)
    {
        return Err(StateError::BadValue(format!(
            "token {i} is {t}, outside the vocabulary of {}",
            want.n_vocab
        )));
    }
    let rng = r.u64("sampler rng")?;
    let mu = f32::from_bits(r.u32("sampler mu")?);
    if !mu.is_finite() {
        return Err(StateError::BadValue(format!("mirostat mu is {mu}")));
    }
    let logits = if flags & FLAG_LOGITS != 0 {
        if n == 0 {
            return Err(StateError::BadValue("logits without tokens".into()));
        }
        Some(r.take(4 * want.n_vocab as u64, "logits")?)
    } else {
        None
    };
    let mut layers = Vec::with_capacity(want.rows.len());
    for (l, &(kr, vr)) in want.rows.iter().enumerate() {
        shape(
            format!("layer {l} kind"),
            r.u32("layer kind")? as u64,
            KIND_ATTENTION as u64,
        )?;
        shape(
            format!("layer {l} k_row"),
            r.u32("k_row")? as u64,
            kr as u64,
        )?;
        shape(
            format!("layer {l} v_row"),
            r.u32("v_row")? as u64,
            vr as u64,
        )?;
        shape(format!("layer {l} len"), r.u32("layer len")? as u64, n)?;
        let body = r.u64("layer body size")?;
        // n ≤ capacity and the rows are the model's, so this cannot overflow a u64
        let (kb, vb) = (4 * n * kr as u64, 4 * n * vr as u64);
        shape(format!("layer {l} body bytes"), body, kb + vb)?;
        let what = format!("layer {l}");
        let k = r.take(kb, &what)?;
        let v = r.take(vb, &what)?;
        layers.push((k, v));
    }
    let body_end = r.pos;
    let sum = r.u64("checksum")?;
    if r.pos != bytes.len() {
        return Err(StateError::TrailingBytes((bytes.len() - r.pos) as u64));
    }
    if checksum(&bytes[..body_end]) != sum {
        return Err(StateError::Checksum);
    }
    Ok(StateView {
        tokens,
        sampler: SamplerState { rng, mu },
        logits,
        layers,
    })
}

/// Little-endian f32s (the length is a multiple of 4 by construction).
pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sees_every_word_and_length() {
        let a = vec![7u8; 100];
        let base = checksum(&a);
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 1;
            assert_ne!(checksum(&b), base, "byte {i}");
        }
        assert_ne!(checksum(&a[..99]), base);
        let mut z = a.clone();
        z.push(0);
        assert_ne!(checksum(&z), base);
    }

    #[test]
    fn round_trip_and_every_truncation_fails() {
        let mut cache = KvCache::new(8, vec![2, 2], vec![3, 3]);
        cache
            .restore(
                2,
                vec![vec![1.0, 2.0, 3.0, 4.0]; 2],
                vec![vec![5.0, 6.0, 7.0, 8.0, 9.0, 10.0]; 2],
            )
            .unwrap();
        let fp = [3u8; 32];
        let st = SamplerState { rng: 99, mu: 10.0 };
        let logits = [0.5f32; 5];
        let bytes = encode(&fp, 5, &[1, 4], st, Some(&logits), &cache).unwrap();
        assert_eq!(bytes.len(), encoded_len(5, 2, true, &[(2, 3), (2, 3)]));
        let want = Expect {
            fingerprint: &fp,
            n_vocab: 5,
            rows: vec![(2, 3), (2, 3)],
            capacity: 8,
        };
        let v = parse(&bytes, &want).unwrap();
        assert_eq!(v.tokens, vec![1, 4]);
        assert_eq!(v.sampler, st);
        assert_eq!(f32s(v.logits.unwrap()), logits);
        assert_eq!(f32s(v.layers[1].1), cache.layer_v(1).unwrap());
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut], &want).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            parse(&longer, &want),
            Err(StateError::TrailingBytes(1))
        ));
        // a huge claimed token count is refused before any allocation
        let mut huge = bytes.clone();
        huge[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse(&huge, &want),
            Err(StateError::LenOverflow { .. })
        ));
        let small = Expect {
            capacity: 1,
            ..want
        };
        assert!(matches!(
            parse(&bytes, &small),
            Err(StateError::LenOverflow { .. })
        ));
    }
}
