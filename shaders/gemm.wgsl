// Prefill GEMM: y[t][row0 + r] = mult · Σ_k W[r][k]·x[t][k] for many tokens (gemm::gemm), every
// weight type through dequant.wgsl's dq(), with matmul.wgsl's fusions (NORM, GLU, RESIDUAL, a
// row range `w_row0`, weight parts at `row0`), and SPLIT (ops::matmul_split, gemm::gemm_split: the
// q, k and v rows of a joined weight into three outputs, as gemv.wgsl's SPLIT). matmul.wgsl
// stays the kernel of a few tokens.
//
// Register tiling: a workgroup computes a tile of BM weight rows × BN tokens. Per step of KT
// columns it dequantizes the W tile [BM × KT] into workgroup memory once (each (row, group) by
// one thread) and stages the X tile [BN × KT], both k-major so that a thread reads 4 rows or 4
// tokens as one vec4; each thread then accumulates 8 rows × 4 tokens in registers (8 vec4).
// Thread (tr, tc) = (lid / 16, lid % 16) owns rows 4tr..4tr+3 and 64+4tr..64+4tr+3 of the tile
// and tokens 4tc..4tc+3. Under GLU, tile rows 0..63 are gate rows and 64..127 the matching up
// rows, so a thread holds both factors of its 4 outputs.
// NORM: y = inv_rms[t] · Σ_k W[r][k]·(x[t][k]·nw[k]); the X loader multiplies by nw and sums
// x² of the token it always loads, so inv_rms costs no extra pass over x.
// KSPLIT (split-K, for GEMMs with few row and token tiles, e.g. a 2048-row down projection):
// workgroup z = split · token tiles + token tile; each split sums its `kc` columns and stores
// the raw sums in y = [splits][tokens][rows] (then, under NORM, its Σx² per token at
// [splits·tokens·rows + split·tokens + t]); gemm_reduce.wgsl adds the splits, scales and stores.
// Workgroup memory: (BM + BN)·KT·4 + WG·4 bytes = 13 KiB, under WebGPU's 16 KiB default.

#include "common"

const WG: u32 = 256u;  // threads: 16 × 16, each 8 rows × 4 tokens
const BM: u32 = 128u;  // weight rows per tile (64 outputs under GLU)
const BN: u32 = 64u;   // tokens per tile
const KT: u32 = 16u;   // columns per step: one 16-element group of the block types

struct Params {
    rows: u32,       // output rows of this weight part (under GLU: gate rows)
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
    w_row0: u32,     // first stored row used (under GLU the up rows follow at w_row0 + rows)
    split1: u32,     // SPLIT: rows [0, split1) go to y, [split1, split2) to y1, the rest to y2;
                     // KSPLIT: columns per split (a multiple of KT)
    split2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;        // [rows, row_words]

#include "dequant"

@group(0) @binding(2) var<storage, read> x: array<f32>;        // [tokens, cols]
#ifdef SPLIT
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [tokens, split1]
@group(0) @binding(4) var<storage, read_write> y1: array<f32>; // [tokens, split2 - split1]
@group(0) @binding(5) var<storage, read_write> y2: array<f32>; // [tokens, rows - split2]
#define NW_BINDING 6
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [tokens, y_cols]
#define NW_BINDING 4
#endif
#ifdef NORM
@group(0) @binding(NW_BINDING) var<storage, read> nw: array<f32>;  // [cols]
#endif

var<workgroup> ws: array<vec4<f32>, KT * BM / 4u>;  // [KT][BM] (4 rows per vec4)
var<workgroup> xs: array<vec4<f32>, KT * BN / 4u>;  // [KT][BN] (4 tokens per vec4)
var<workgroup> ssq: array<f32, WG>;                 // NORM: Σx² partials, 4 per token

// The stored row of tile row `l` (0..BM) of row tile `rt`, or none (past the part's rows).
fn tile_row(rt: u32, l: u32) -> vec2<u32> {
#ifdef GLU
    let r = rt * (BM / 2u) + l % (BM / 2u);
    let up = select(0u, p.rows, l >= BM / 2u);
    return vec2<u32>(p.w_row0 + up + r, u32(r < p.rows));
#else
    let r = rt * BM + l;
    return vec2<u32>(p.w_row0 + r, u32(r < p.rows));
#endif
}

// Writes output (token t, tile row l) from the accumulated sums `c`; `inv` scales them (NORM).
// KSPLIT: into the partial sums of piece `split`.
fn store(rt: u32, split: u32, t: u32, l: u32, v: f32) {
#ifdef GLU
    let r = rt * (BM / 2u) + l;
#else
    let r = rt * BM + l;
#endif
    if (t < p.tokens && r < p.rows) {
#ifdef KSPLIT
        y[(split * p.tokens + t) * p.rows + r] = v;
#else
#ifdef SPLIT
        // Each output is its own [tokens, width] matrix; a tile may straddle a split point.
        if (r < p.split1) {
            y[t * p.split1 + r] = v;
        } else if (r < p.split2) {
            y1[t * (p.split2 - p.split1) + r - p.split1] = v;
        } else {
            y2[t * (p.rows - p.split2) + r - p.split2] = v;
        }
#else
        let i = t * p.y_cols + p.row0 + r;
#ifdef RESIDUAL
        y[i] += v;
#else
        y[i] = v;
#endif
#endif
#endif
    }
}

@compute @workgroup_size(WG)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Every thread reaches every barrier: out-of-range rows and tokens load zeros.
    let rt = flat_group(wg, p.groups_x);
#ifdef KSPLIT
    let ttiles = (p.tokens + BN - 1u) / BN;
    let split = wg.z / ttiles;
    let t0 = (wg.z % ttiles) * BN;
    let k_first = split * p.split1;
    let k_end = min(k_first + p.split1, p.cols);
#else
    let split = 0u;
    let t0 = wg.z * BN;
    let k_first = 0u;
    let k_end = p.cols;
#endif
    let tr = lid / 16u;
    let tc = lid % 16u;
    // The X loader: token xt of the tile, columns xk..xk+3 of each step.
    let xt = lid / 4u;
    let xk = (lid % 4u) * 4u;
    let x_live = t0 + xt < p.tokens;
    let xb = (t0 + xt) * p.cols;
    var ss = 0.0;

    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c02 = vec4<f32>(0.0);
    var c03 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c12 = vec4<f32>(0.0);
    var c13 = vec4<f32>(0.0);

    const NG: u32 = KT / G;  // groups per row per step
    for (var k0 = k_first; k0 < k_end; k0 += KT) {
        // W tile: BM·NG (row, group) tasks; neighbouring threads take a row's neighbouring groups.
        for (var task = lid; task < BM * NG; task += WG) {
            let l = task / NG;
            let gi = task % NG;
            let tw = tile_row(rt, l);
            let g = k0 / G + gi;
            var v = array<f32, G>();  // zeroed explicitly: Tint zeroes a loop-body var once
            if (tw.y != 0u && g * G < k_end) {
                v = dq(tw.x, g);
            }
            for (var e = 0u; e < G; e++) {
                ws[(gi * G + e) * (BM / 4u) + l / 4u][l % 4u] = v[e];
            }
        }
        // X tile: 4 columns of one token per thread.
        for (var e = 0u; e < 4u; e++) {
            let k = k0 + xk + e;
            var v = 0.0;
            if (x_live && k < k_end) {
                v = x[xb + k];
#ifdef NORM
                ss = fma(v, v, ss);
                v *= nw[k];
#endif
            }
            xs[(xk + e) * (BN / 4u) + xt / 4u][xt % 4u] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < KT; k++) {
            let a0 = ws[k * (BM / 4u) + tr];
            let a1 = ws[k * (BM / 4u) + BM / 8u + tr];
            let b = xs[k * (BN / 4u) + tc];
            c00 = fma(a0, vec4<f32>(b.x), c00);
            c01 = fma(a0, vec4<f32>(b.y), c01);
            c02 = fma(a0, vec4<f32>(b.z), c02);
            c03 = fma(a0, vec4<f32>(b.w), c03);
            c10 = fma(a1, vec4<f32>(b.x), c10);
            c11 = fma(a1, vec4<f32>(b.y), c11);
            c12 = fma(a1, vec4<f32>(b.z), c12);
            c13 = fma(a1, vec4<f32>(b.w), c13);
        }
        workgroupBarrier();
    }

    // Per-token scale: mult, times inv_rms under NORM (the 4 loaders of token t hold its Σx²).
    // KSPLIT stores raw sums and this split's Σx² (gemm_reduce.wgsl scales).
#ifdef KSPLIT
    var sc = vec4<f32>(1.0);
#else
    var sc = vec4<f32>(p.mult);
#endif
#ifdef NORM
    ssq[lid] = ss;
    workgroupBarrier();
    for (var j = 0u; j < 4u; j++) {
        let b = (4u * tc + j) * 4u;
        let s = (ssq[b] + ssq[b + 1u]) + (ssq[b + 2u] + ssq[b + 3u]);
#ifdef KSPLIT
        let t = t0 + 4u * tc + j;
        if (rt == 0u && tr == 0u && t < p.tokens) {
            let splits = (p.cols + p.split1 - 1u) / p.split1;
            y[splits * p.tokens * p.rows + split * p.tokens + t] = s;
        }
#else
        sc[j] *= 1.0 / sqrt(s / f32(p.cols) + p.eps);
#endif
    }
#endif
    let c0 = array<vec4<f32>, 4>(c00 * sc.x, c01 * sc.y, c02 * sc.z, c03 * sc.w);
    let c1 = array<vec4<f32>, 4>(c10 * sc.x, c11 * sc.y, c12 * sc.z, c13 * sc.w);
    for (var j = 0u; j < 4u; j++) {
        let t = t0 + 4u * tc + j;
        for (var i = 0u; i < 4u; i++) {
#ifdef GLU
            store(rt, split, t, 4u * tr + i, activation(p.act, c0[j][i]) * c1[j][i]);
#else
            store(rt, split, t, 4u * tr + i, c0[j][i]);
            store(rt, split, t, BM / 2u + 4u * tr + i, c1[j][i]);
#endif
        }
    }
}
