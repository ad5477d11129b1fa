// The index of each row's largest value (ops::argmax): one workgroup per row, each thread
// scanning a stride of the row, then a (value, index) reduction in workgroup memory. Ties go to
// the lowest index and NaN never wins, as the CPU's `argmax`.

#include "common"

const WG: u32 = 256u;

struct Params {
    rows: u32,
    cols: u32,
    groups_x: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // [rows, cols]
@group(0) @binding(2) var<storage, read_write> ids: array<u32>; // [rows]

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

const NONE: u32 = 0xffffffffu;

// NaN by its bits: shader compilers may assume NaN never occurs and fold `v != v` away.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Candidate (v, i) beats the best so far (w, j; j = NONE: none yet): larger, or equal at a
// lower index. NaN never is a candidate.
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
    if (i == NONE || is_nan(v)) {
        return false;
    }
    return j == NONE || v > w || (v == w && i < j);
}

@compute @workgroup_size(WG)
fn argmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat_group(wg, p.groups_x);
    let live = r < p.rows;
    var bv = 0.0;
    var bi = NONE;
    if (live) {
        for (var c = lid; c < p.cols; c += WG) {
            let v = x[r * p.cols + c];
            if (beats(v, c, bv, bi)) {
                bv = v;
                bi = c;
            }
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h && beats(best_v[lid + h], best_i[lid + h], best_v[lid], best_i[lid])) {
            best_v[lid] = best_v[lid + h];
            best_i[lid] = best_i[lid + h];
        }
        workgroupBarrier();
    }
    if (live && lid == 0u) {
        // All NaN: index 0.
        ids[r] = select(best_i[0], 0u, best_i[0] == NONE);
    }
}
