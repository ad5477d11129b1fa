// Elementwise ops over row-major [rows, cols] f32 matrices (ops::{add, scale, add_bias, glu,
// softcap, copy_cols}). One thread per element; the flat index folds a 2-D grid.

#include "common"

const WG: u32 = 256u;

struct Params {
    n: u32,          // elements to process
    cols: u32,       // columns of the output (and of row-broadcast operands)
    groups_x: u32,   // workgroups in x of the 2-D grid
    s: f32,          // scalar: scale factor, soft-cap
    src_cols: u32,   // copy_cols: columns of the source
    src_col0: u32,   // copy_cols: first source column
    kind: u32,       // glu: 0 SiLU, 1 GELU (tanh), 2 ReLU²
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn index(wg: vec3<u32>, lid: u32) -> u32 {
    return flat_group(wg, p.groups_x) * WG + lid;
}

#ifdef ADD
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // [rows, cols]
@group(0) @binding(2) var<storage, read> y: array<f32>;        // [rows, cols]

// x += y
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, lid);
    if (i < p.n) {
        x[i] = x[i] + y[i];
    }
}
#endif

#ifdef ADD_BIAS
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // [rows, cols]
@group(0) @binding(2) var<storage, read> b: array<f32>;        // [cols]

// x[r] += b
@compute @workgroup_size(WG)
fn add_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, lid);
    if (i < p.n) {
        x[i] = x[i] + b[i % p.cols];
    }
}
#endif

#ifdef UNARY
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // [n]

// x *= s
@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, lid);
    if (i < p.n) {
        x[i] = x[i] * p.s;
    }
}

// x = s·tanh(x/s)
@compute @workgroup_size(WG)
fn softcap(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, lid);
    if (i < p.n) {
        x[i] = p.s * tanh(x[i] / p.s);
    }
}
#endif

#ifdef GLU
@group(0) @binding(1) var<storage, read> gate: array<f32>;     // [rows, cols]
@group(0) @binding(2) var<storage, read> up: array<f32>;       // [rows, cols]
@group(0) @binding(3) var<storage, read_write> o: array<f32>;  // [rows, cols]

// o = act(gate) ⊙ up, act as ggml computes it (ggml_silu_f32, ggml_gelu_f32 tanh form, ReLU²).
@compute @workgroup_size(WG)
fn glu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, lid);
    if (i < p.n) {
        let a = activation(p.kind, gate[i]);
        o[i] = a * up[i];
    }
}
#endif

#ifdef COPY_COLS
@group(0) @binding(1) var<storage, read> src: array<f32>;        // [rows, src_cols]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;  // [rows, cols]

// dst[r][c] = src[r][src_col0 + c]
@compute @workgroup_size(WG)
fn copy_cols(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, lid);
    if (i < p.n) {
        let r = i / p.cols;
        let c = i % p.cols;
        dst[i] = src[r * p.src_cols + p.src_col0 + c];
    }
}
#endif
