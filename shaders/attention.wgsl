// Causal attention of query rows over the f32 KV cache (attn::attention), with GQA and an
// optional sliding window. The CPU reference is backend::cpu::ops::attend.
//
// One workgroup per (token, query head). It walks the visible keys [lo, pos] in blocks of WG:
// each thread scores one key of the block (q·k over head_dim, q held in workgroup memory), every
// thread then takes the block max itself (broadcast reads, no reduction tree), and the running
// sums are rescaled by exp(m_old − m_new) (online softmax) while each thread accumulates its
// dims of Σ_j p_j·v_j (dims lid, lid + WG, …: coalesced V reads). Two barriers per block;
// memory is O(WG + head_dim), so any context length works.

#include "common"

const WG: u32 = 64u;       // keys per block = threads: 2 NVIDIA warps; head_dim_v 128 is 2 dims each
const MAX_D: u32 = 256u;   // largest head_dim / head_dim_v (attn::attention checks)
const DPT: u32 = 4u;       // MAX_D / WG: V dims per thread

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
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;        // [tokens, n_head·head_dim]
@group(0) @binding(2) var<storage, read> k: array<f32>;        // [capacity, k_row], rows < pos0 + tokens valid
@group(0) @binding(3) var<storage, read> v: array<f32>;        // [capacity, v_row]
@group(0) @binding(4) var<storage, read_write> o: array<f32>;  // [tokens, n_head·head_dim_v]

var<workgroup> qs: array<f32, MAX_D>;  // this head's query
var<workgroup> sc: array<f32, WG>;     // the block's scores
var<workgroup> pw: array<f32, WG>;     // the block's exp(score − max)

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wg, p.groups_x);
    if (i >= p.tokens * p.n_head) {
        return;
    }
    let t = i / p.n_head;
    let h = i % p.n_head;
    let kb = (h / p.group) * p.head_dim;    // this KV head's offset in a K row
    let vb = (h / p.group) * p.head_dim_v;  // … and in a V row
    let pos = p.pos0 + t;
    var lo = 0u;
    if (p.window != 0u && pos + 1u > p.window) {
        lo = pos + 1u - p.window;
    }
    let n = pos + 1u - lo;

    let qb = i * p.head_dim;  // row t, head h
    for (var d = lid; d < p.head_dim; d += WG) {
        qs[d] = q[qb + d];
    }
    workgroupBarrier();

    let hd4 = p.head_dim & ~3u;
    var m = -3.0e38;  // running max (finite, so the first rescale is exp(−huge) = 0, never NaN)
    var l = 0.0;      // running Σ exp(s − m)
    var acc: array<f32, DPT>;
    for (var j0 = 0u; j0 < n; j0 += WG) {
        let nb = min(WG, n - j0);
        if (lid < nb) {
            let kr = (lo + j0 + lid) * p.k_row + kb;
            // Four partial sums: independent FMA chains.
            var s0 = 0.0;
            var s1 = 0.0;
            var s2 = 0.0;
            var s3 = 0.0;
            for (var d = 0u; d < hd4; d += 4u) {
                s0 = fma(qs[d], k[kr + d], s0);
                s1 = fma(qs[d + 1u], k[kr + d + 1u], s1);
                s2 = fma(qs[d + 2u], k[kr + d + 2u], s2);
                s3 = fma(qs[d + 3u], k[kr + d + 3u], s3);
            }
            for (var d = hd4; d < p.head_dim; d++) {
                s0 = fma(qs[d], k[kr + d], s0);
            }
            sc[lid] = ((s0 + s1) + (s2 + s3)) * p.scale;
        }
        workgroupBarrier();
        // Every thread computes the same max (the same reads in the same order).
        var mb = m;
        for (var j = 0u; j < nb; j++) {
            mb = max(mb, sc[j]);
        }
        if (lid < nb) {
            pw[lid] = exp(sc[lid] - mb);
        }
        workgroupBarrier();
        // sc was read only before that barrier; pw is read below and rewritten after the next
        // block's first barrier, which every thread reaches only once it is done with this block.
        let alpha = exp(m - mb);
        m = mb;
        l *= alpha;
        for (var e = 0u; e < DPT; e++) {
            acc[e] *= alpha;
        }
        for (var j = 0u; j < nb; j++) {
            let w = pw[j];
            l += w;
            let vr = (lo + j0 + j) * p.v_row + vb;
            for (var e = 0u; e < DPT; e++) {
                let d = lid + e * WG;
                if (d < p.head_dim_v) {
                    acc[e] = fma(w, v[vr + d], acc[e]);
                }
            }
        }
    }
    let ob = i * p.head_dim_v;
    let inv = 1.0 / l;
    for (var e = 0u; e < DPT; e++) {
        let d = lid + e * WG;
        if (d < p.head_dim_v) {
            o[ob + d] = acc[e] * inv;
        }
    }
}
