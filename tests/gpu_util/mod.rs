//! The backend-check harness (STYLE.md practice 4; testing.md §4.2): a GPU context on
//! whatever adapter exists (lavapipe in CI; a missing adapter fails the test, it never
//! skips), fresh seeded random inputs, poisoned outputs with sentinel words behind them, and an
//! NMSE bound per op against the CPU reference.
//!
//! Written once, run per backend (STYLE.md practice 5): the tests are `#[gpu_test] async fn`s
//! that await every readback (`ctx_async`, `finish_async`). Natively `gpu_test` is
//! `#[pollster::test]` (a `#[test]` blocking on the future; lavapipe in CI); in
//! tests/gpu_browser.rs, which includes the test files, it is `#[wasm_bindgen_test]` and they
//! run in headless Chromium on WebGPU (SwiftShader). The blocking `ctx`/`finish` are for
//! native-only tests.

#![allow(dead_code, unused_imports)]

#[cfg(not(target_arch = "wasm32"))]
pub use pollster::test as gpu_test;
use ternlm::backend::gpu::{ops, upload, GpuContext, GpuOptions, GpuWeight, Recorder};
use ternlm::backend::AttnParams;
use ternlm::quant::{GgmlType, TensorView};
#[cfg(target_arch = "wasm32")]
pub use wasm_bindgen_test::wasm_bindgen_test as gpu_test;

/// The `no_subgroups` settings a test takes: with the adapter's subgroups and without. The
/// browser's WebGPU has none, so there the first would repeat the second.
pub const NO_SUBGROUPS: &[bool] = if cfg!(target_arch = "wasm32") {
    &[true]
} else {
    &[false, true]
};

/// A GPU context; the test fails when there is no adapter.
pub async fn ctx_async() -> GpuContext {
    ctx_with_async(&GpuOptions::default()).await
}

/// A GPU context with `opts`; the test fails when there is no adapter, and natively when its
/// shaders are not compiled as trusted code by default, or are under `TERNLM_GPU_CHECKED=1`
/// (CI's checked-shader run).
pub async fn ctx_with_async(opts: &GpuOptions) -> GpuContext {
    let ctx = match GpuContext::new(opts).await {
        Ok(c) => c,
        Err(e) => panic!(
            "no GPU adapter ({e}); natively install a Vulkan driver (CI: mesa-vulkan-drivers \
             for lavapipe); in Chromium pass --enable-unsafe-webgpu"
        ),
    };
    if !cfg!(target_arch = "wasm32") {
        let checked =
            opts.checked_shaders || std::env::var("TERNLM_GPU_CHECKED").is_ok_and(|v| v == "1");
        assert_eq!(
            ctx.shader_checks.is_none_or(|c| c.force_loop_bounding),
            checked,
            "shaders checked: want {checked}"
        );
    }
    ctx
}

/// [`ctx_async`], blocking (native tests).
#[cfg(not(target_arch = "wasm32"))]
pub fn ctx() -> GpuContext {
    pollster::block_on(ctx_async())
}

/// [`ctx_with_async`], blocking (native tests).
#[cfg(not(target_arch = "wasm32"))]
pub fn ctx_with(opts: &GpuOptions) -> GpuContext {
    pollster::block_on(ctx_with_async(opts))
}

/// xorshift64*: fresh inputs per case from a seed printed on failure.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Mostly [-2, 2), with zeros and a few large magnitudes mixed in.
    pub fn value(&mut self) -> f32 {
        match self.below(64) {
            0 => 0.0,
            1 => self.unit() * 60.0,
            _ => self.unit() * 2.0,
        }
    }
    pub fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
}

/// The poison every output element starts as (a quiet NaN with a payload).
pub const POISON: u32 = 0x7fc0_dead;
/// The sentinel words behind every output.
pub const SENTINEL: u32 = 0xdead_beef;
/// Sentinel words after each output.
pub const GUARD: usize = 64;

/// An output buffer of `n` f32, poisoned, followed by [`GUARD`] sentinel words.
pub fn poisoned(ctx: &GpuContext, n: usize) -> wgpu::Buffer {
    let mut init = vec![POISON; n];
    init.extend(std::iter::repeat_n(SENTINEL, GUARD));
    ctx.storage_init("out", bytemuck::cast_slice(&init))
}

/// [`finish_async`], blocking (native tests).
#[cfg(not(target_arch = "wasm32"))]
pub fn finish(ctx: &GpuContext, enc: Recorder, out: &wgpu::Buffer, n: usize) -> Vec<f32> {
    pollster::block_on(finish_async(ctx, enc, out, n))
}

/// Submits `enc`, reads `n` outputs back and checks the sentinels behind them.
pub async fn finish_async(
    ctx: &GpuContext,
    enc: Recorder,
    out: &wgpu::Buffer,
    n: usize,
) -> Vec<f32> {
    let all = ctx
        .read_f32(Some(enc), out, 0, n + GUARD)
        .await
        .unwrap_or_else(|e| panic!("GPU error: {e}"));
    for (i, v) in all[n..].iter().enumerate() {
        assert_eq!(v.to_bits(), SENTINEL, "write past the output at +{i}");
    }
    all[..n].to_vec()
}

/// Uploads f32 values as a storage buffer.
pub fn upload_f32(ctx: &GpuContext, v: &[f32]) -> wgpu::Buffer {
    ctx.storage_init("in", bytemuck::cast_slice(v))
}

pub fn encoder(ctx: &GpuContext) -> Recorder {
    ctx.recorder()
}

/// `Σ(a−b)² / Σb²` (0 when both are all zero); NaN or an unwritten (poisoned) element fails.
pub fn nmse(case: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{case}: length");
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() != POISON, "{case}: element {i} never written");
        assert!(!g.is_nan(), "{case}: element {i} is NaN (want {w})");
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Asserts `nmse(got, want) ≤ bound`.
pub fn check(case: &str, got: &[f32], want: &[f32], bound: f64) {
    let e = nmse(case, got, want);
    assert!(e <= bound, "{case}: NMSE {e:e} > {bound:e}");
}

/// Byte offsets of the f16 scale/min fields inside one block of `ty` (formats.md §3-§4).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::TQ1_0 => &[52],
        GgmlType::TQ2_0 => &[64],
        _ => panic!("random_tensor: add {ty:?}"),
    }
}

/// A sane random f16 scale: magnitude 1e-3..1e-1 (log-uniform), negative one time in four.
pub fn sane_f16(rng: &mut Rng) -> u16 {
    let mag = 10f32.powf(-2.0 + rng.unit());
    let v = if rng.below(4) == 0 { -mag } else { mag };
    half::f16::from_f32(v).to_bits()
}

/// Random bytes of a tensor of `ty` that decode to finite values: plain types from random
/// values; block types from random bytes with every f16 scale/min field replaced by
/// [`sane_f16`] (the first block's first field by an f16 subnormal); I2_S from random codes and
/// a sane f32 trailer scale.
pub fn random_tensor(rng: &mut Rng, ty: GgmlType, cols: usize, rows: usize) -> Vec<u8> {
    let n = cols * rows;
    match ty {
        GgmlType::F32 => bytemuck::cast_slice(&rng.values(n)).to_vec(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| half::f16::from_f32(rng.value()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(rng.value()).to_le_bytes())
            .collect(),
        GgmlType::I2_S => {
            let mut b = rng.bytes(n / 4);
            let s = half::f16::from_bits(sane_f16(rng)).to_f32() * 10.0;
            b.extend(s.to_le_bytes());
            b.extend([0u8; 28]);
            b
        }
        _ => {
            let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
            assert_eq!(cols % bs, 0, "{ty:?}: {cols} columns are not whole blocks");
            let mut b = rng.bytes(n / bs * ts);
            for (i, blk) in b.chunks_exact_mut(ts).enumerate() {
                for (f, &at) in f16_fields(ty).iter().enumerate() {
                    let bits = if i == 0 && f == 0 {
                        1 + rng.below(0x3ff) as u16 // subnormal
                    } else {
                        sane_f16(rng)
                    };
                    blk[at..at + 2].copy_from_slice(&bits.to_le_bytes());
                }
            }
            b
        }
    }
}

/// Makes every block of a TQ1_0 / TQ2_0 tensor take the scale of the first block of its third of
/// the rows: three runs of rows of one scale, as a joined q/k/v weight of BitNet's one scale a
/// tensor has (`GpuWeight::scale_runs`).
pub fn share_scales(ty: GgmlType, bytes: &mut [u8], cols: usize) {
    let (bs, ts, at) = (
        ty.block_size() as usize,
        ty.type_size() as usize,
        f16_fields(ty)[0],
    );
    let row = cols / bs * ts;
    let rows = bytes.len() / row;
    for run in 0..3 {
        let (r0, r1) = (run * rows / 3, (run + 1) * rows / 3);
        let s = [bytes[r0 * row + at], bytes[r0 * row + at + 1]];
        for blk in bytes[r0 * row..r1 * row].chunks_exact_mut(ts) {
            blk[at..at + 2].copy_from_slice(&s);
        }
    }
}

/// `x` as the matmul of `w` over `tokens` rows uses it: a one-token product that quantizes x
/// (`ops::gemv_quantizes_x`) sees x quantized per 256 values as the CPU engine's Q8_K scheme does
/// it (`backend::cpu::q8`), dequantized here; anything else sees x itself.
pub fn gemv_input(ctx: &GpuContext, w: &GpuWeight, x: &[f32], tokens: usize) -> Vec<f32> {
    use ternlm::backend::cpu::q8::{Q8Acts, Scheme};
    if tokens != 1 || !ops::gemv_quantizes_x(ctx, w) {
        return x.to_vec();
    }
    let a = Q8Acts::quantize(x, w.cols, Scheme::Q8K);
    let d = |i: usize| a.d[i / 32];
    a.qs.iter()
        .enumerate()
        .map(|(i, &q)| q as f32 * d(i))
        .collect()
}

/// `W·x` in f64 from the CPU decoder.
pub fn reference_matmul(v: &TensorView, x: &[f32], tokens: usize) -> Vec<f32> {
    let (cols, rows) = (v.ncols(), v.nrows());
    let mut w = vec![0f32; cols];
    let mut y = vec![0f32; tokens * rows];
    for r in 0..rows {
        v.dequantize_row(r, &mut w).unwrap();
        for t in 0..tokens {
            let s: f64 = w
                .iter()
                .zip(&x[t * cols..(t + 1) * cols])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            y[t * rows + r] = s as f32;
        }
    }
    y
}

/// matmul and embed of one type over odd shapes, token counts around the tile, and a split
/// into row parts (a binding limit of a few rows, or of about 130 rows for shapes of 256 rows
/// or more, so that parts are rounded down to multiples of 128 rows; that pass also without
/// subgroup operations). matmul must be within
/// `bound` (NMSE), embed bit-exact. `runs` (TQ1_0, TQ2_0): three runs of rows of one scale
/// ([`share_scales`]), else random scales in every block. Returns the largest matmul NMSE seen.
pub async fn matmul_cases(ty: GgmlType, shapes: &[(usize, usize)], bound: f64, runs: bool) -> f64 {
    let mut rng = Rng::new(ty as u64 + 100);
    let mut worst = 0f64;
    for split in [false, true] {
        for &(cols, rows) in shapes {
            let mut data = random_tensor(&mut rng, ty, cols, rows);
            if runs {
                share_scales(ty, &mut data, cols);
            }
            let ne = [cols as u64, rows as u64];
            let v = TensorView::new("w", ty, &ne, &data).unwrap();
            // The binding limit of the split path (at least 256 bytes); the GPU row is at most
            // this estimate (T2R rows hold 66 bytes per 256 columns).
            let row_bytes = data.len() / rows + cols / 4 + 16;
            let part_rows = if rows >= 256 { 130 } else { 3 };
            let limit = (row_bytes * part_rows).next_multiple_of(256);
            // The split pass also takes the workgroup-reduction path (no subgroups).
            let opts = GpuOptions {
                max_binding_size: split.then_some(limit as u64),
                no_subgroups: split,
                ..Default::default()
            };
            let ctx = ctx_with_async(&opts).await;
            let w = upload(&ctx, &v).unwrap();
            // Random TQ block scales make a run of every row, too many; I2_S has unit block
            // scales (its scale is the tensor's).
            assert_eq!(
                !w.scale_runs.is_empty(),
                runs || ty == GgmlType::I2_S,
                "{ty:?} {cols}x{rows}: scale runs {:?}",
                w.scale_runs
            );
            if split && data.len() > limit {
                assert!(w.parts.len() > 1, "{ty:?} {cols}x{rows}: split into parts");
                if part_rows > 128 {
                    let starts: Vec<usize> = w.parts.iter().map(|p| p.row0).collect();
                    assert!(
                        starts.iter().all(|r| r % 128 == 0),
                        "{ty:?} {cols}x{rows}: parts start at {starts:?}"
                    );
                }
            }
            for tokens in [1usize, 3, 4, 5, 9] {
                let case = format!("matmul {ty:?} {cols}x{rows} t{tokens} split={split}");
                let x = rng.values(tokens * cols);
                let y = poisoned(&ctx, tokens * rows);
                let mut enc = encoder(&ctx);
                ops::matmul(
                    &ctx,
                    &mut enc,
                    &w,
                    &upload_f32(&ctx, &x),
                    tokens,
                    &y,
                    rows,
                    0,
                    Default::default(),
                )
                .unwrap();
                let got = finish_async(&ctx, enc, &y, tokens * rows).await;
                let want = reference_matmul(&v, &gemv_input(&ctx, &w, &x, tokens), tokens);
                let e = nmse(&case, &got, &want);
                assert!(e <= bound, "{case}: NMSE {e:e} > {bound:e}");
                worst = worst.max(e);
            }
            // embed: random ids, repeated and at both ends
            let ids: Vec<u32> = (0..7)
                .map(|i| match i {
                    0 => 0,
                    1 => rows as u32 - 1,
                    _ => rng.below(rows) as u32,
                })
                .collect();
            let out = poisoned(&ctx, ids.len() * cols);
            let mut enc = encoder(&ctx);
            let idb = ctx.storage_init("ids", bytemuck::cast_slice(&ids));
            ops::embed(&ctx, &mut enc, &w, &idb, ids.len(), &out).unwrap();
            let got = finish_async(&ctx, enc, &out, ids.len() * cols).await;
            let mut want = vec![0f32; ids.len() * cols];
            for (o, &id) in want.chunks_exact_mut(cols).zip(&ids) {
                v.dequantize_row(id as usize, o).unwrap();
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&got) == bits(&want),
                "embed {ty:?} {cols}x{rows} split={split}: first difference at {:?}",
                got.iter()
                    .zip(&want)
                    .position(|(a, b)| a.to_bits() != b.to_bits())
                    .map(|i| (i, got[i], want[i]))
            );
        }
    }
    worst
}

/// `x` as the device's KV storage holds it (f16 rounds to nearest even, as the CPU encoder).
pub fn kv_round(ctx: &GpuContext, x: f32) -> f32 {
    if ctx.kv_f16 {
        half::f16::from_f32(x).to_f32()
    } else {
        x
    }
}

/// Host rows of `cols` elements in the device's KV storage, as words to upload.
pub fn kv_encode(ctx: &GpuContext, vals: &[f32], cols: usize) -> Vec<u32> {
    if !ctx.kv_f16 {
        return vals.iter().map(|x| x.to_bits()).collect();
    }
    let mut out = Vec::new();
    for row in vals.chunks_exact(cols) {
        for pair in row.chunks(2) {
            let h = |i: usize| pair.get(i).map_or(0, |&x| half::f16::from_f32(x).to_bits());
            out.push(h(0) as u32 | (h(1) as u32) << 16);
        }
    }
    out
}

/// Attention in f64: query row `t` at `pos0 + t` over cache rows `lo..=pos`.
pub fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tokens: usize,
    pos0: usize,
    p: &AttnParams,
) -> Vec<f32> {
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let (k_row, v_row) = (p.n_head_kv * hd, p.n_head_kv * hdv);
    let mut out = vec![0f32; tokens * p.n_head * hdv];
    for t in 0..tokens {
        let pos = pos0 + t;
        let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        for h in 0..p.n_head {
            let g = h / (p.n_head / p.n_head_kv);
            let qh = &q[(t * p.n_head + h) * hd..][..hd];
            let s: Vec<f64> = (lo..=pos)
                .map(|j| {
                    let kj = &k[j * k_row + g * hd..][..hd];
                    let d: f64 = qh.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    d * p.scale as f64
                })
                .collect();
            let m = s.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            let o = &mut out[(t * p.n_head + h) * hdv..][..hdv];
            for (d, od) in o.iter_mut().enumerate() {
                let acc: f64 = e
                    .iter()
                    .enumerate()
                    .map(|(jj, &w)| w * v[(lo + jj) * v_row + g * hdv + d] as f64)
                    .sum();
                *od = (acc / sum) as f32;
            }
        }
    }
    out
}

/// Best-of-three GPU seconds per call of `record` (which records one call), `calls` calls per
/// submission back to back (dependent dispatches, as in a decode step): the command buffer is
/// encoded before the clock starts, so this is the submission and the GPU's work, the empty
/// submission's own cost taken out. For the `#[ignore]`d timing tests (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_seconds_per_call(ctx: &GpuContext, calls: usize, record: &dyn Fn(&mut Recorder)) -> f64 {
    let run = |n: usize| {
        let mut enc = encoder(ctx);
        for _ in 0..n {
            record(&mut enc);
        }
        let cb = ctx.finish(enc);
        let t = std::time::Instant::now();
        ctx.queue.submit([cb]);
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .unwrap();
        t.elapsed().as_secs_f64()
    };
    run(4);
    let base = (0..3).map(|_| run(0)).fold(f64::INFINITY, f64::min);
    let best = (0..3).map(|_| run(calls)).fold(f64::INFINITY, f64::min);
    (best - base) / calls as f64
}

/// A committed synthetic model, a prompt and llama.cpp's 16 greedy ids after it
/// (`greedy.generated_ids` of tests/data/golden/logits/<model>.json).
pub struct DecodeCase {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub prompt: &'static [u32],
    pub want: &'static [u32],
}

/// The greedy-decode cases of the GPU tests (tests/gpu_decode.rs, session_async.rs,
/// gpu_stream_load.rs, gpu_device_lost.rs): a block-quantized llama and a ternary BitNet.
pub const DECODE_CASES: &[DecodeCase] = &[
    DecodeCase {
        name: "tiny-llama-q8_0",
        bytes: include_bytes!("../data/models/tiny-llama-q8_0.gguf"),
        prompt: &[72, 101, 108, 108, 111, 259],
        want: &[
            90, 17, 135, 135, 31, 205, 135, 31, 205, 135, 31, 24, 24, 24, 24, 24,
        ],
    },
    DecodeCase {
        name: "tiny-bitnet-tq2_0",
        bytes: include_bytes!("../data/models/tiny-bitnet-tq2_0.gguf"),
        prompt: &[72, 101, 108, 108, 111, 259],
        want: &[
            146, 146, 146, 146, 146, 146, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60,
        ],
    },
];

/// `c.want.len()` greedy ids after `c.prompt`: the prompt's argmax, then the pipelined
/// `Model::greedy_async`.
pub async fn greedy_ids(m: &ternlm::model::Model, c: &DecodeCase) -> ternlm::Result<Vec<u32>> {
    let mut cache = m.new_cache(c.prompt.len() + c.want.len());
    let first = m.forward_argmax_async(&mut cache, c.prompt).await?;
    let mut ids = vec![first];
    ids.extend(
        m.greedy_async(&mut cache, first, c.want.len() - 1, |_| true)
            .await?,
    );
    Ok(ids)
}
