//! The backend-check harness (STYLE.md practice 4; testing.md §4.2): a GPU context on
//! whatever adapter exists (lavapipe in CI; a missing adapter fails the test, it never
//! skips), fresh seeded random inputs, poisoned outputs with sentinel words behind them, and an
//! NMSE bound per op against the CPU reference.

#![allow(dead_code)]

use ternlm::backend::gpu::{GpuContext, GpuOptions};

/// A GPU context; the test fails when there is no adapter.
pub fn ctx() -> GpuContext {
    ctx_with(&GpuOptions::default())
}

pub fn ctx_with(opts: &GpuOptions) -> GpuContext {
    match GpuContext::new_blocking(opts) {
        Ok(c) => c,
        Err(e) => panic!(
            "no GPU adapter ({e}); install a Vulkan driver (CI: mesa-vulkan-drivers for lavapipe)"
        ),
    }
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

/// Submits `enc`, reads `n` outputs back and checks the sentinels behind them.
pub fn finish(ctx: &GpuContext, enc: wgpu::CommandEncoder, out: &wgpu::Buffer, n: usize) -> Vec<f32> {
    let all = ctx
        .read_f32_blocking(Some(enc), out, 0, n + GUARD)
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

pub fn encoder(ctx: &GpuContext) -> wgpu::CommandEncoder {
    ctx.device.create_command_encoder(&Default::default())
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
