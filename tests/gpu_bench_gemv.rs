//! Matmul timing, not a correctness test. `gemm_prefill_timing`: the prefill GEMMs of the
//! benchmark models at `GEMM_BENCH_TOKENS` (512) tokens, GPU time and FLOP/s, with an F32 and
//! an F16 matrix of the same shape (the kernel without the cost of dequantization).
//! `gemv_decode_timing`, decode (GEMV): the matrices of one decode step of the
//! benchmark models (shapes and types of scripts/make_bench_models.py, with the fusions the
//! decoder uses), each recorded `GEMV_BENCH_CALLS` (100) times back to back in one submission (dependent
//! dispatches, as in a decode step), wall time per call and the weight bytes read per second,
//! and again with the same copy every call (L2-resident where it fits: what a prefetch could
//! at best save).
//! Two references first: a chain of one-element dispatches (the fixed cost of a dependent
//! dispatch) and a streaming `add` over 256 MB (the bandwidth a plain WGSL kernel reaches).
//! `chain_handoff_timing`: dependent phases as one dispatch each against one dispatch that
//! orders them itself (`CHAIN_PHASES`, `CHAIN_GROUPS` workgroups a phase).
//! `stream_read_timing`: a read-only stream over 256 MiB by grid size and load width.
//! Ignored by default; on a GPU machine:
//! `cargo test --release --test gpu_bench_gemv -- --ignored --nocapture` (`--test-threads 1`).

#![cfg(not(target_arch = "wasm32"))]

mod gpu_util;

use gpu_util::*;
use ternlm::backend::gpu::{ops, upload, GpuContext, GpuWeight, Recorder};
use ternlm::model::arch::Activation;
use ternlm::quant::{GgmlType, TensorView};

/// Calls per timed submission (`GEMV_BENCH_CALLS` to change; 1 checks the harness quickly).
fn calls() -> usize {
    std::env::var("GEMV_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

#[derive(Clone, Copy, Debug)]
enum Use {
    /// `y = W·x`
    Plain,
    /// `y = W·rms_norm(x)` (q/k/v: three outputs; the LM head: one)
    NormSplit,
    Norm,
    /// `y = act(gate·n) ⊙ up·n`, n = rms_norm(x), gate and up joined
    NormGlu,
    /// `y += W·x` (with a sub-norm when `true`)
    Residual(bool),
}

/// `GEMV_BENCH_ONLY=bitnet,llama1b`: only those models' matrices (all when unset).
fn selected(model: &str) -> bool {
    let only = std::env::var("GEMV_BENCH_ONLY").unwrap_or_default();
    only.is_empty() || only.split(',').any(|m| m == model)
}

/// The input, norm weight and output buffers of one timed matmul of `tokens` tokens.
struct Io {
    x: wgpu::Buffer,
    nw: wgpu::Buffer,
    y: [wgpu::Buffer; 3],
    rows: usize,
    tokens: usize,
}

impl Io {
    fn new(ctx: &GpuContext, rng: &mut Rng, k: usize, rows: usize, tokens: usize) -> Io {
        Io {
            x: upload_f32(ctx, &rng.values(k * tokens)),
            nw: upload_f32(ctx, &rng.values(k)),
            y: ["y", "y1", "y2"].map(|l| ctx.storage(l, (rows * tokens * 4) as u64)),
            rows,
            tokens,
        }
    }

    /// Records `w` used as `u` (N of a joined weight is all its rows; q/k/v split 4:1:1).
    fn record(&self, ctx: &GpuContext, e: &mut Recorder, w: &GpuWeight, u: Use) {
        let (rows, tokens) = (self.rows, self.tokens);
        let norm = Some((&self.nw, 1e-5));
        if let Use::NormSplit = u {
            let (q, kv) = (rows * 2 / 3, rows / 6);
            let outs = [(&self.y[0], q), (&self.y[1], kv), (&self.y[2], kv)];
            return ops::matmul_split(ctx, e, w, &self.x, tokens, 0, outs, norm).unwrap();
        }
        let fuse = ops::Fuse {
            norm: match u {
                Use::Norm | Use::NormGlu | Use::Residual(true) => norm,
                _ => None,
            },
            glu: matches!(u, Use::NormGlu).then_some(Activation::Silu),
            residual: matches!(u, Use::Residual(_)),
            rows: None,
        };
        let n = if fuse.glu.is_some() { rows / 2 } else { rows };
        ops::matmul(ctx, e, w, &self.x, tokens, &self.y[0], n, 0, fuse).unwrap()
    }
}

#[test]
#[ignore]
fn gemv_decode_timing() {
    use GgmlType::*;
    let ctx = ctx();
    eprintln!("adapter {} (subgroups {})", ctx.adapter.name, ctx.subgroups);
    let mut rng = Rng::new(5);

    let tiny = upload_f32(&ctx, &[1.0; 64]);
    let one = upload_f32(&ctx, &[1.0; 64]);
    let t = gpu_seconds_per_call(&ctx, calls(), &|e| {
        ops::add(&ctx, e, &tiny, &one, 1).unwrap()
    });
    eprintln!("dependent 1-element dispatch: {:6.2} µs", t * 1e6);
    let n = 1 << 25;
    let a = ctx.storage("a", (n * 4) as u64);
    let b = ctx.storage("b", (n * 4) as u64);
    let t = gpu_seconds_per_call(&ctx, calls(), &|e| ops::add(&ctx, e, &a, &b, n).unwrap());
    eprintln!(
        "streaming add, {} MB moved: {:7.1} µs, {:6.0} GB/s",
        (12 * n) >> 20,
        t * 1e6,
        (12 * n) as f64 / t / 1e9
    );

    // (model, matrix, type, K, N, use); N of a joined weight is all its rows.
    let cases = [
        ("bitnet", "qkv", TQ2_0, 2560, 3840, Use::NormSplit),
        ("bitnet", "o", TQ2_0, 2560, 2560, Use::Residual(true)),
        ("bitnet", "gate·up", TQ2_0, 2560, 2 * 6912, Use::NormGlu),
        ("bitnet", "down", TQ2_0, 6912, 2560, Use::Residual(true)),
        ("bitnet", "head", Q6_K, 2560, 128256, Use::Norm),
        ("smollm2", "qkv", Q4_1, 576, 960, Use::NormSplit),
        ("smollm2", "o", Q4_1, 576, 576, Use::Residual(false)),
        ("smollm2", "gate·up", Q4_1, 576, 2 * 1536, Use::NormGlu),
        ("smollm2", "down", Q4_1, 1536, 576, Use::Residual(false)),
        ("smollm2", "head", Q8_0, 576, 49152, Use::Norm),
        ("llama1b", "qkv", Q4_K, 2048, 3072, Use::NormSplit),
        ("llama1b", "o", Q4_K, 2048, 2048, Use::Residual(false)),
        ("llama1b", "gate·up", Q4_K, 2048, 2 * 8192, Use::NormGlu),
        ("llama1b", "down", Q6_K, 8192, 2048, Use::Residual(false)),
        ("llama1b", "head", Q6_K, 2048, 128256, Use::Norm),
        ("plain", "f16", F16, 4096, 4096, Use::Plain),
    ];
    for (model, name, ty, k, rows, u) in cases {
        if !selected(model) {
            continue;
        }
        let bytes = random_tensor(&mut rng, ty, k, rows);
        let v = TensorView::new("w", ty, &[k as u64, rows as u64], &bytes).unwrap();
        // Copies of the weight cycled through, so that consecutive calls read from memory as a
        // decode step does, not from a cache that holds one small matrix (H100: 50 MB L2).
        let copies = (256 << 20) / bytes.len() + 1;
        let ws: Vec<_> = (0..copies.min(64))
            .map(|_| upload(&ctx, &v).unwrap())
            .collect();
        let w = &ws[0];
        let next = std::cell::Cell::new(0);
        let pick = || {
            let i = next.get();
            next.set((i + 1) % ws.len());
            &ws[i]
        };
        let io = Io::new(&ctx, &mut rng, k, rows, 1);
        let t = gpu_seconds_per_call(&ctx, calls(), &|e| io.record(&ctx, e, pick(), u));
        // The same weight every call: read from the L2 where it fits (the bound of a prefetch).
        let hot = gpu_seconds_per_call(&ctx, calls(), &|e| io.record(&ctx, e, w, u));
        eprintln!(
            "{model:8} {name:8} {ty:?} {k:5}x{rows:6} {:>14}: {:7.2} µs, {:5.2} MB, {:6.0} GB/s; \
             L2-resident {:7.2} µs",
            format!("{u:?}"),
            t * 1e6,
            w.bytes() as f64 / 1e6,
            w.bytes() as f64 / t / 1e9,
            hot * 1e6
        );
    }
}

#[test]
#[ignore]
fn gemm_prefill_timing() {
    use GgmlType::*;
    let ctx = ctx();
    eprintln!("adapter {} (subgroups {})", ctx.adapter.name, ctx.subgroups);
    let tokens: usize = std::env::var("GEMM_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let mut rng = Rng::new(6);
    // (model, matrix, type, K, N, use), as in gemv_decode_timing.
    let cases = [
        ("llama1b", "qkv", Q4_K, 2048, 3072, Use::NormSplit),
        ("llama1b", "o", Q4_K, 2048, 2048, Use::Residual(false)),
        ("llama1b", "gate·up", Q4_K, 2048, 2 * 8192, Use::NormGlu),
        ("llama1b", "down", Q6_K, 8192, 2048, Use::Residual(false)),
        ("llama1b", "gate·up", F32, 2048, 2 * 8192, Use::NormGlu),
        ("llama1b", "gate·up", F16, 2048, 2 * 8192, Use::NormGlu),
        ("bitnet", "qkv", TQ2_0, 2560, 3840, Use::NormSplit),
        ("bitnet", "o", TQ2_0, 2560, 2560, Use::Residual(true)),
        ("bitnet", "gate·up", TQ2_0, 2560, 2 * 6912, Use::NormGlu),
        ("bitnet", "down", TQ2_0, 6912, 2560, Use::Residual(true)),
    ];
    for (model, name, ty, k, rows, u) in cases {
        if !selected(model) {
            continue;
        }
        let bytes = random_tensor(&mut rng, ty, k, rows);
        let v = TensorView::new("w", ty, &[k as u64, rows as u64], &bytes).unwrap();
        let w = upload(&ctx, &v).unwrap();
        let io = Io::new(&ctx, &mut rng, k, rows, tokens);
        let t = gpu_seconds_per_call(&ctx, calls().min(20), &|e| io.record(&ctx, e, &w, u));
        eprintln!(
            "{model:8} {name:8} {ty:?} {k:5}x{rows:6} x{tokens} {:>14}: {:8.1} µs, {:5.1} TFLOP/s",
            format!("{u:?}"),
            t * 1e6,
            2.0 * (k * rows * tokens) as f64 / t / 1e12
        );
    }
}

/// Chained phases: one workgroup step of `PHASES` dependent phases of `groups` workgroups each
/// (every workgroup reads words that four workgroups of the previous phase wrote), run as one
/// dispatch per phase (wgpu's barrier between them) and as one dispatch whose workgroups take
/// their phase from an atomic ticket, in order, and wait for the previous phase's count
/// (deadlock-free while running workgroups progress: a workgroup only waits on tickets taken
/// before its own, by running workgroups; WGSL promises no such progress, so this is a native
/// measurement only). Prints the cost per phase of each; the two must leave the same words and
/// the chained dispatch must leave its counters at 0.
#[test]
#[ignore]
fn chain_handoff_timing() {
    const SRC: &str = r#"
struct P { phases: u32, groups: u32, phase: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> data: array<u32>;  // [phases + 1][groups · 256]
@group(0) @binding(2) var<storage, read_write> ctr: array<atomic<u32>>;  // ticket, done[phase]
var<workgroup> tk: u32;

fn work(ph: u32, g: u32, lid: u32) {
    let n = p.groups * 256u;
    var s = 0u;
    for (var i = 0u; i < 4u; i++) {
        s += data[ph * n + ((g + 7u * i + 1u) % p.groups) * 256u + (lid + 37u * i) % 256u];
    }
    data[(ph + 1u) * n + g * 256u + lid] = s * 2654435761u + ph;
}

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    work(p.phase, wg.x, lid);
}

@compute @workgroup_size(256)
fn chain(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        tk = atomicAdd(&ctr[0], 1u);
    }
    let t = workgroupUniformLoad(&tk);
    let ph = t / p.groups;
    if (ph > 0u) {
        if (lid == 0u) {
            loop {
                if (atomicLoad(&ctr[ph]) >= p.groups) {
                    break;
                }
            }
        }
        storageBarrier();
    }
    work(ph, t % p.groups, lid);
    storageBarrier();
    if (lid == 0u) {
        let done = atomicAdd(&ctr[1u + ph], 1u) + 1u;
        if (ph + 1u == p.phases && done == p.groups) {
            for (var i = 0u; i <= p.phases; i++) {
                atomicStore(&ctr[i], 0u);
            }
        }
    }
}
"#;
    let ctx = ctx();
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (phases, groups) = (env("CHAIN_PHASES", 30), env("CHAIN_GROUPS", 80));
    eprintln!(
        "adapter {}: {phases} phases × {groups} workgroups",
        ctx.adapter.name
    );
    let rw = wgpu::BufferBindingType::Storage { read_only: false };
    let sh = Inline::new(&ctx, SRC, &[wgpu::BufferBindingType::Uniform, rw, rw]);
    let (step, chain) = (sh.pipeline("step"), sh.pipeline("chain"));
    let words = (phases as usize + 1) * groups as usize * 256;
    let init: Vec<u32> = (0..words as u32)
        .map(|i| i.wrapping_mul(2246822519))
        .collect();
    let data = ctx.storage_init("data", bytemuck::cast_slice(&init));
    let ctr = ctx.storage_init("ctr", &vec![0u8; 4 * (phases as usize + 1)]);
    let group = |phase: u32| {
        let uni = sh.uniform([phases, groups, phase, 0]);
        sh.bind_group(&[&uni, &data, &ctr])
    };
    let step_groups: Vec<_> = (0..phases).map(group).collect();
    let chain_group = group(0);
    let by_steps = |e: &mut Recorder| {
        for bg in &step_groups {
            let pass = e.pass();
            pass.set_pipeline(&step);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
    };
    let chained = |e: &mut Recorder| {
        let pass = e.pass();
        pass.set_pipeline(&chain);
        pass.set_bind_group(0, &chain_group, &[]);
        pass.dispatch_workgroups(phases * groups, 1, 1);
    };
    // The same words either way, from the same start.
    let last = |record: &dyn Fn(&mut Recorder)| {
        ctx.write(&data, 0, bytemuck::cast_slice(&init));
        let mut e = encoder(&ctx);
        record(&mut e);
        let n = groups as usize * 256;
        let got = ctx
            .read_f32_blocking(Some(e), &data, (4 * phases as usize * n) as u64, n)
            .unwrap();
        got.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
    };
    let (a, b) = (last(&by_steps), last(&chained));
    assert_eq!(
        a, b,
        "chained phases left other words than dispatches per phase"
    );
    let counters = ctx
        .read_f32_blocking(None, &ctr, 0, phases as usize + 1)
        .unwrap();
    assert!(
        counters.iter().all(|c| c.to_bits() == 0),
        "counters not reset"
    );
    let t_steps = gpu_seconds_per_call(&ctx, 20, &by_steps) / phases as f64;
    let t_chain = gpu_seconds_per_call(&ctx, 20, &chained) / phases as f64;
    eprintln!(
        "per phase: dispatch each {:6.2} µs, chained in one dispatch {:6.2} µs",
        t_steps * 1e6,
        t_chain * 1e6
    );
}

/// Read-only streaming over 256 MiB (or the binding limit): the bound of a GEMV that reads each
/// weight once. 16- or 4-byte loads, four in flight per thread, grid-stride over
/// `STREAM_GROUPS` workgroups (a list; each thread keeps a sum so that no load is dead).
#[test]
#[ignore]
fn stream_read_timing() {
    const SRC: &str = r#"
struct P { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a4: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> a1: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(256)
fn read4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let st = nwg.x * 256u;
    var s = vec4<u32>(0u);
    var i = gid.x;
    for (; i + 3u * st < p.n / 4u; i += 4u * st) {
        s += (a4[i] ^ a4[i + st]) + (a4[i + 2u * st] ^ a4[i + 3u * st]);
    }
    for (; i < p.n / 4u; i += st) {
        s += a4[i];
    }
    out[gid.x] = (s.x + s.y) ^ (s.z + s.w);
}

@compute @workgroup_size(256)
fn read1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let st = nwg.x * 256u;
    var s = 0u;
    var i = gid.x;
    for (; i + 3u * st < p.n; i += 4u * st) {
        s += (a1[i] ^ a1[i + st]) + (a1[i + 2u * st] ^ a1[i + 3u * st]);
    }
    for (; i < p.n; i += st) {
        s += a1[i];
    }
    out[gid.x] = s;
}
"#;
    use wgpu::BufferBindingType as B;
    let ctx = ctx();
    let ro = B::Storage { read_only: true };
    let sh = Inline::new(
        &ctx,
        SRC,
        &[B::Uniform, ro, ro, B::Storage { read_only: false }],
    );
    let words = (1usize << 26).min(ctx.limits.max_storage_buffer_binding_size as usize / 4);
    let a = ctx.storage("a", 4 * words as u64);
    let groups: Vec<u32> = std::env::var("STREAM_GROUPS")
        .unwrap_or("264,528,1056,2112,4224,16384".into())
        .split(',')
        .filter_map(|g| g.parse().ok())
        .collect();
    let out = ctx.storage("out", 4 * 256 * *groups.iter().max().unwrap_or(&1) as u64);
    let uni = sh.uniform([words as u32, 0, 0, 0]);
    let bg = sh.bind_group(&[&uni, &a, &a, &out]);
    eprintln!(
        "adapter {}: {} MiB read",
        ctx.adapter.name,
        (4 * words) >> 20
    );
    for entry in ["read4", "read1"] {
        let pipe = sh.pipeline(entry);
        for &g in &groups {
            let t = gpu_seconds_per_call(&ctx, 20, &|e| {
                let pass = e.pass();
                pass.set_pipeline(&pipe);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(g, 1, 1);
            });
            eprintln!(
                "{entry} {g:6} workgroups: {:7.1} µs, {:6.0} GB/s",
                t * 1e6,
                (4 * words) as f64 / t / 1e9
            );
        }
    }
}

/// A WGSL source of this file's own benches, its bind group layout (the buffer types of
/// bindings 0, 1, … of group 0) and its pipelines.
struct Inline<'a> {
    ctx: &'a GpuContext,
    module: wgpu::ShaderModule,
    bgl: wgpu::BindGroupLayout,
    layout: wgpu::PipelineLayout,
}

impl<'a> Inline<'a> {
    fn new(ctx: &'a GpuContext, src: &str, bindings: &[wgpu::BufferBindingType]) -> Inline<'a> {
        let dev = &ctx.device;
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("bench"),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let entries: Vec<_> = bindings
            .iter()
            .enumerate()
            .map(|(i, &ty)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let bgl = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("bench"),
            entries: &entries,
        });
        let layout = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("bench"),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        Inline {
            ctx,
            module,
            bgl,
            layout,
        }
    }

    fn pipeline(&self, entry: &str) -> wgpu::ComputePipeline {
        let dev = &self.ctx.device;
        dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&self.layout),
            module: &self.module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    }

    /// A 16-byte uniform block holding `words`.
    fn uniform(&self, words: [u32; 4]) -> wgpu::Buffer {
        let uni = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("p"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.ctx
            .queue
            .write_buffer(&uni, 0, bytemuck::cast_slice(&words));
        uni
    }

    fn bind_group(&self, bufs: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &self.bgl,
                entries: &entries,
            })
    }
}
