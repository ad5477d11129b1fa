// y[t][row0 + r] = mult · Σ_k W[r][k]·x[t][k] for every weight type (ops::matmul), and the
// embedding gather y[t] = W[ids[t]] (ops::embed). The type is a define (F32, F16, Q4_0, …,
// T2R) selecting its section of dequant.wgsl.
//
// matmul: one workgroup per (output row, tile of TT tokens); its threads stride over the row's
// groups, each dequantizing a group once and using it for every token of the tile, then the
// partial sums are reduced in workgroup memory.

#include "common"

const WG: u32 = 64u;  // threads per row: 2 waves of 32 on NVIDIA, enough loads in flight
const TT: u32 = 4u;   // tokens per workgroup: decode uses 1, prefill reuses each group 4×

struct Params {
    rows: u32,       // rows of this weight part
    cols: u32,       // K
    tokens: u32,
    row_words: u32,  // u32 words per stored row
    groups_x: u32,
    row0: u32,       // output column of this part's first row
    y_cols: u32,     // output row stride (all parts)
    aux: u32,        // word offset of a second region (T2R scales)
    mult: f32,       // tensor multiplier (T2R from I2_S), else 1
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;        // [rows, row_words]

#include "dequant"

#ifdef MATMUL
@group(0) @binding(2) var<storage, read> x: array<f32>;        // [tokens, cols]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [tokens, y_cols]

var<workgroup> part: array<f32, WG * TT>;

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat_group(wg, p.groups_x);
    if (r >= p.rows) {
        return;
    }
    let t0 = wg.z * TT;
    let nt = min(TT, p.tokens - t0);
    var acc: array<f32, TT>;
    let n_groups = (p.cols + G - 1u) / G;
    for (var g = lid; g < n_groups; g += WG) {
        let v = dq(r, g);
        let k0 = g * G;
        let ne = min(G, p.cols - k0);
        for (var t = 0u; t < nt; t++) {
            let xb = (t0 + t) * p.cols + k0;
            var s = 0.0;
            for (var e = 0u; e < ne; e++) {
                s += v[e] * x[xb + e];
            }
            acc[t] += s;
        }
    }
    for (var t = 0u; t < TT; t++) {
        part[t * WG + lid] = acc[t];
    }
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            for (var t = 0u; t < TT; t++) {
                part[t * WG + lid] += part[t * WG + lid + h];
            }
        }
        workgroupBarrier();
    }
    if (lid < nt) {
        y[(t0 + lid) * p.y_cols + p.row0 + r] = part[lid * WG] * p.mult;
    }
}
#endif

#ifdef EMBED
@group(0) @binding(2) var<storage, read> ids: array<u32>;      // [tokens] (rows of this part, already offset)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [tokens, cols]

// One workgroup per token; ids outside this part's rows are left to the other parts.
@compute @workgroup_size(WG)
fn embed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = flat_group(wg, p.groups_x);
    if (t >= p.tokens) {
        return;
    }
    let id = ids[t];
    if (id < p.row0 || id >= p.row0 + p.rows) {
        return;
    }
    let n_groups = (p.cols + G - 1u) / G;
    for (var g = lid; g < n_groups; g += WG) {
        let v = dq(id - p.row0, g);
        let k0 = g * G;
        for (var e = 0u; e < min(G, p.cols - k0); e++) {
            y[t * p.cols + k0 + e] = v[e] * p.mult;
        }
    }
}
#endif
