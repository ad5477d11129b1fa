// Flash-style causal attention for many query rows (attn_prefill::attention_prefill): GQA,
// optional sliding window. The CPU reference is backend::cpu::ops::attend; attention.wgsl stays
// the kernel of a few query rows (decode, split-K).
//
// A workgroup takes one KV head and a tile of BR query rows of that head's group, rows being
// (token, query head of the group) pairs, t-major: the group's heads share every K/V tile read.
// It walks the keys visible to any of its rows in blocks of BK, with an online softmax:
//   S = Q·Kᵀ (head_dim in chunks of DC: Q and K chunks staged in workgroup memory),
//   masked (causal, window), running max m and sum l per row rescaled by exp(m_old − m_new),
//   O += P·V (head_dim_v in chunks of DC: V chunks staged in workgroup memory).
// Thread (r, c) = (lid / 8, lid % 8) owns row r, keys 4c..4c+3 of a block in S, and dims
// 4c..4c+3 of every DC-chunk of O (one vec4 per chunk, NCH chunks: head_dim_v is a define so the
// accumulators are registers). Workgroup memory: 3 · 32·32 f32 = 12 KiB (WebGPU's default 16).

#include "common"
#define KV_READ 1
#include "kv"

const WG: u32 = 256u;
const BR: u32 = 32u;   // query rows per workgroup
const BK: u32 = 32u;   // keys per block
const DC: u32 = 32u;   // head dims per staged chunk
const NCH: u32 = (HEAD_DIM_V + DC - 1u) / DC;  // V chunks (HEAD_DIM_V: a define ≤ 256)

struct Params {
    tokens: u32,
    pos0: u32,        // position of query row 0
    n_head: u32,
    group: u32,       // n_head / n_head_kv: query heads per KV head
    head_dim: u32,
    head_dim_v: u32,
    k_row: u32,       // n_head_kv · head_dim
    v_row: u32,       // n_head_kv · head_dim_v
    scale: f32,       // multiplies q·k
    window: u32,      // a query at i sees keys i − window < j ≤ i; 0: no window
    groups_x: u32,
    tiles: u32,       // row tiles per KV head: ceil(tokens · group / BR)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;        // [tokens, n_head·head_dim]
// The KV cache as kv.wgsl stores it (f16 pairs or f32): rows of kv_stride(k_row) / kv_stride(v_row)
@group(0) @binding(2) var<storage, read> kc: array<kv_word>;   // [capacity, k_row], rows < pos0 + tokens valid
@group(0) @binding(3) var<storage, read> vc: array<kv_word>;   // [capacity, v_row]
@group(0) @binding(4) var<storage, read_write> o: array<f32>;  // [tokens, n_head·head_dim_v]

var<workgroup> qs: array<vec4<f32>, DC * BR / 4u>;   // [DC][BR]: a chunk of the rows' queries
var<workgroup> kvs: array<vec4<f32>, DC * BK / 4u>;  // K chunk [DC][BK], or V chunk [BK][DC]
var<workgroup> ps: array<vec4<f32>, BR * BK / 4u>;   // [BR][BK]: scores, then probabilities

// First visible key of a query at position `pos`.
fn first_key(pos: u32) -> u32 {
    if (p.window != 0u && pos + 1u > p.window) {
        return pos + 1u - p.window;
    }
    return 0u;
}

@compute @workgroup_size(WG)
fn attention_prefill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Uniform control flow: every thread runs every block; rows past the end are masked.
    let wi = flat_group(wg, p.groups_x);
    let hk = wi / p.tiles;
    let i0 = (wi % p.tiles) * BR;
    let n_rows = p.tokens * p.group;
    let r = lid / 8u;
    let c = lid % 8u;
    let row = i0 + r;
    let live = row < n_rows && hk * p.group < p.n_head;
    let t = row / p.group;
    let pos = p.pos0 + t;
    let lo = first_key(pos);
    // Keys any row of the tile sees: [first_key(first row), last row's position].
    let last = min(i0 + BR, n_rows) - 1u;
    let k_lo = first_key(p.pos0 + i0 / p.group);
    let k_hi = p.pos0 + last / p.group + 1u;
    let kb = hk * p.head_dim;
    let vb = hk * p.head_dim_v;
    let ks = kv_stride(p.k_row);
    let vs = kv_stride(p.v_row);
    // The loaders: row / key lr of the tile, dims 4lc..4lc+3 of a chunk.
    let lr = lid / 8u;
    let lc = (lid % 8u) * 4u;
    let lrow = i0 + lr;
    let qrow = (lrow / p.group) * p.n_head + hk * p.group + lrow % p.group;

    var m = -3.0e38;  // running max (finite: the first rescale is exp(−huge) = 0, never NaN)
    var l = 0.0;
    var acc: array<vec4<f32>, NCH>;
    for (var j0 = k_lo; j0 < k_hi; j0 += BK) {
        // S = Q·Kᵀ over head_dim chunks.
        var s = vec4<f32>(0.0);
        for (var d0 = 0u; d0 < p.head_dim; d0 += DC) {
            for (var e = 0u; e < 4u; e++) {
                let d = d0 + lc + e;
                var qv = 0.0;
                if (lrow < n_rows && d < p.head_dim) {
                    qv = q[qrow * p.head_dim + d];
                }
                qs[(lc + e) * (BR / 4u) + lr / 4u][lr % 4u] = qv;
                let j = j0 + lr;
                var kv = 0.0;
                if (j < k_hi && d < p.head_dim) {
                    kv = kv_k(j * ks + kb + d);
                }
                kvs[(lc + e) * (BK / 4u) + lr / 4u][lr % 4u] = kv;
            }
            workgroupBarrier();
            for (var d = 0u; d < DC; d++) {
                s = fma(vec4<f32>(qs[d * (BR / 4u) + r / 4u][r % 4u]), kvs[d * (BK / 4u) + c], s);
            }
            workgroupBarrier();
        }
        // Mask, then the block's row max (every thread of the row reads all BK scores).
        for (var e = 0u; e < 4u; e++) {
            let j = j0 + 4u * c + e;
            let vis = live && j >= lo && j <= pos;
            s[e] = select(-3.0e38, s[e] * p.scale, vis);
        }
        ps[r * (BK / 4u) + c] = s;
        workgroupBarrier();
        var mb = m;
        for (var k = 0u; k < BK / 4u; k++) {
            let v = ps[r * (BK / 4u) + k];
            mb = max(mb, max(max(v.x, v.y), max(v.z, v.w)));
        }
        workgroupBarrier();
        // Masked keys weigh exactly 0 (their score is the sentinel, not −inf).
        var pv = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            pv[e] = select(0.0, exp(s[e] - mb), s[e] > -3.0e38);
        }
        ps[r * (BK / 4u) + c] = pv;
        let alpha = exp(m - mb);
        m = mb;
        // O += P·V over head_dim_v chunks (the barrier of the first chunk publishes ps).
        for (var ch = 0u; ch < NCH; ch++) {
            let d0 = ch * DC;
            for (var e = 0u; e < 4u; e++) {
                let d = d0 + lc + e;
                let j = j0 + lr;
                var vv = 0.0;
                if (j < k_hi && d < p.head_dim_v) {
                    vv = kv_v(j * vs + vb + d);
                }
                kvs[lr * (DC / 4u) + lc / 4u][e] = vv;
            }
            workgroupBarrier();
            var a = acc[ch] * alpha;
            for (var k = 0u; k < BK; k++) {
                a = fma(vec4<f32>(ps[r * (BK / 4u) + k / 4u][k % 4u]), kvs[k * (DC / 4u) + c], a);
            }
            acc[ch] = a;
            workgroupBarrier();
        }
        var lb = 0.0;
        for (var k = 0u; k < BK / 4u; k++) {
            let v = ps[r * (BK / 4u) + k];
            lb += (v.x + v.y) + (v.z + v.w);
        }
        l = l * alpha + lb;
        // ps is rewritten only after the next block's first barrier.
    }
    if (!live) {
        return;
    }
    let ob = ((row / p.group) * p.n_head + hk * p.group + row % p.group) * p.head_dim_v;
    let inv = 1.0 / l;
    for (var ch = 0u; ch < NCH; ch++) {
        for (var e = 0u; e < 4u; e++) {
            let d = ch * DC + 4u * c + e;
            if (d < p.head_dim_v) {
                o[ob + d] = acc[ch][e] * inv;
            }
        }
    }
}
