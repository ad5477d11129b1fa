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
    eps: f32,        // NORM
    act: u32,        // GLU: common.wgsl activation kind
    w_row0: u32,     // first row of the part used (rows past it form the output); embed:
                     // workgroups a token
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;        // [rows, row_words]

#include "dequant"

#ifdef MATMUL
// Fusions, each a define: NORM (x is RMS-normalized per token and times the weight `nw`, eps in
// the params), GLU (the weight holds gate rows then up rows; y = act(gate·x) ⊙ up·x, `kind` in
// the params), RESIDUAL (y += the product instead of y =).
@group(0) @binding(2) var<storage, read> x: array<f32>;        // [tokens, cols]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [tokens, y_cols]
#ifdef NORM
@group(0) @binding(4) var<storage, read> nw: array<f32>;       // [cols]
var<workgroup> inv_rms: array<f32, TT>;
#endif

#ifdef GLU
const NACC: u32 = 2u;
#else
const NACC: u32 = 1u;
#endif
var<workgroup> part: array<f32, WG * TT * NACC>;

// Σ_e v[e]·x[xb + e] over one group (times the norm weight under NORM).
fn dot_group(v: array<f32, G>, xb: u32, k0: u32, ne: u32) -> f32 {
    var s = 0.0;
    for (var e = 0u; e < ne; e++) {
#ifdef NORM
        s += v[e] * (x[xb + e] * nw[k0 + e]);
#else
        s += v[e] * x[xb + e];
#endif
    }
    return s;
}

// Stores the workgroup's partial sums of slot `slot` (one value per thread) so that after the
// next barrier `slot_total` adds them up: with subgroups, one subgroupAdd per subgroup and its
// sum in part[slot·WG + subgroup]; without, every thread's value (the total is then a loop).
fn slot_put(slot: u32, v: f32, lid: u32, sgs: u32, sgi: u32) {
#ifdef HAS_SUBGROUPS
    let s = subgroupAdd(v);
    if (sgi == 0u) {
        part[slot * WG + lid / sgs] = s;
    }
#else
    part[slot * WG + lid] = v;
#endif
}

fn slot_total(slot: u32, sgs: u32) -> f32 {
#ifdef HAS_SUBGROUPS
    let n = (WG + sgs - 1u) / sgs;
#else
    let n = WG;
#endif
    // Four independent chains, then their sum.
    var a = vec4<f32>(0.0);
    var i = 0u;
    for (; i + 4u <= n; i += 4u) {
        a += vec4<f32>(part[slot * WG + i], part[slot * WG + i + 1u], part[slot * WG + i + 2u], part[slot * WG + i + 3u]);
    }
    for (; i < n; i++) {
        a.x += part[slot * WG + i];
    }
    return (a.x + a.y) + (a.z + a.w);
}

@compute @workgroup_size(WG)
fn matmul(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#ifdef HAS_SUBGROUPS
    @builtin(subgroup_size) sgs: u32,
    @builtin(subgroup_invocation_id) sgi: u32,
#endif
) {
#ifndef HAS_SUBGROUPS
    let sgs = 1u;
    let sgi = 0u;
#endif
    // Uniform control flow up to the last barrier: out-of-range workgroups compute and discard.
    let r = flat_group(wg, p.groups_x);
    let live = r < p.rows;
    let t0 = wg.z * TT;
    let nt = min(TT, p.tokens - t0);
#ifdef NORM
    for (var t = 0u; t < nt; t++) {
        var s = 0.0;
        for (var i = lid; i < p.cols; i += WG) {
            let v = x[(t0 + t) * p.cols + i];
            s += v * v;
        }
        slot_put(t, s, lid, sgs, sgi);
    }
    workgroupBarrier();
    if (lid < nt) {
        inv_rms[lid] = 1.0 / sqrt(slot_total(lid, sgs) / f32(p.cols) + p.eps);
    }
    workgroupBarrier();
#endif
    var acc: array<f32, TT>;
#ifdef GLU
    var acc_up: array<f32, TT>;
#endif
    let n_groups = (p.cols + G - 1u) / G;
    if (live) {
        for (var g = lid; g < n_groups; g += WG) {
            let k0 = g * G;
            let ne = min(G, p.cols - k0);
            let v = dq(p.w_row0 + r, g);
#ifdef GLU
            let vu = dq(p.w_row0 + r + p.rows, g);
#endif
            for (var t = 0u; t < nt; t++) {
                let xb = (t0 + t) * p.cols + k0;
                acc[t] += dot_group(v, xb, k0, ne);
#ifdef GLU
                acc_up[t] += dot_group(vu, xb, k0, ne);
#endif
            }
        }
    }
    // The NORM slots were read before the barrier above: reuse them.
    for (var t = 0u; t < nt; t++) {
        slot_put(t, acc[t], lid, sgs, sgi);
#ifdef GLU
        slot_put(TT + t, acc_up[t], lid, sgs, sgi);
#endif
    }
    workgroupBarrier();
    if (live && lid < nt) {
        var v = slot_total(lid, sgs) * p.mult;
#ifdef NORM
        v *= inv_rms[lid];
#endif
#ifdef GLU
        var u = slot_total(TT + lid, sgs) * p.mult;
#ifdef NORM
        u *= inv_rms[lid];
#endif
        v = activation(p.act, v) * u;
#endif
        let i = (t0 + lid) * p.y_cols + p.row0 + r;
#ifdef RESIDUAL
        y[i] += v;
#else
        y[i] = v;
#endif
    }
}
#endif

#ifdef EMBED
@group(0) @binding(2) var<storage, read> ids: array<u32>;      // [tokens] (rows of this part, already offset)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [tokens, cols]

// Workgroups t·ch … t·ch + ch − 1 (ch = p.w_row0, ceil(groups / WG)) gather token t's row, a
// dequantization group a thread, so that all of a row's loads are in flight at once; ids outside
// this part's rows are left to the other parts.
@compute @workgroup_size(WG)
fn embed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let f = flat_group(wg, p.groups_x);
    let t = f / p.w_row0;
    if (t >= p.tokens) {
        return;
    }
    let id = ids[t];
    let g = (f % p.w_row0) * WG + lid;
    let k0 = g * G;
    if (id < p.row0 || id >= p.row0 + p.rows || k0 >= p.cols) {
        return;
    }
    let v = dq(id - p.row0, g);
    let o = t * p.cols + k0;
    if (k0 + G <= p.cols) {
        for (var e = 0u; e < G; e++) {
            y[o + e] = v[e] * p.mult;
        }
    } else {
        for (var e = 0u; e < p.cols - k0; e++) {
            y[o + e] = v[e] * p.mult;
        }
    }
}
#endif
