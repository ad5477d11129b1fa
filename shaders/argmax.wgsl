// The index of each row's largest value (ops::argmax), in two passes: `argmax_part` gives each
// chunk of CHUNK values of a row a workgroup (each thread scanning PER values, loads in flight
// together), which writes its (value, index) winner; `argmax_final` takes one workgroup per row
// over its chunks' winners. Both reduce (value, index) pairs in workgroup memory. Ties go to the
// lowest index and NaN never wins, as the CPU's `argmax`. Under MERGE_LAST (natively, as in
// attention.wgsl) the last of a row's chunk workgroups to finish, counted by an atomic, takes
// the second pass itself: one dispatch.

#include "common"

const WG: u32 = 256u;

const PER: u32 = 16u;  // values a thread: argmax_part's four load4
const CHUNK: u32 = WG * PER;  // ops::ARGMAX_CHUNK

struct Params {
    rows: u32,
    cols: u32,
    groups_x: u32,
    chunks: u32,  // per row: ceil(cols / CHUNK)
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef PART
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows, cols]
@group(0) @binding(2) var<storage, read_write> win: array<u32>;  // [rows, chunks, 2]: value bits, index
#ifdef MERGE_LAST
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;  // [rows]
// Per row, how many of its chunks have written their winners (GpuContext::arrivals: 0 before
// the dispatch, set back to 0 by the workgroup that merges).
@group(0) @binding(4) var<storage, read_write> arrivals: array<atomic<u32>>;
var<workgroup> merging: u32;
#endif
#else
@group(0) @binding(1) var<storage, read> win: array<u32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;  // [rows]
#endif

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

// The workgroup's best of every thread's (bv, bi), left in best_v[0], best_i[0].
fn reduce(bv: f32, bi: u32, lid: u32) {
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
}

#ifdef PART
var<private> bv: f32 = 0.0;
var<private> bi: u32 = NONE;

// Row r's values at columns c, c + WG, c + 2·WG, c + 3·WG (0 past the row: never taken).
fn load4(r: u32, c: u32) -> vec4<f32> {
    let b = r * p.cols;
    let e = p.cols - 1u;
    return vec4<f32>(x[b + min(c, e)], x[b + min(c + WG, e)], x[b + min(c + 2u * WG, e)],
                     x[b + min(c + 3u * WG, e)]);
}

// The four values of load4(r, c), taken in index order.
fn take4(v: vec4<f32>, c: u32) {
    for (var k = 0u; k < 4u; k++) {
        let ck = c + k * WG;
        if (ck < p.cols && beats(v[k], ck, bv, bi)) {
            bv = v[k];
            bi = ck;
        }
    }
}

@compute @workgroup_size(WG)
fn argmax_part(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wi = flat_group(wg, p.groups_x);
    let live = wi < p.rows * p.chunks;
    let r = wi / p.chunks;
    let c = (wi % p.chunks) * CHUNK + lid;
    if (live) {
        // All PER (16) values loaded first, into variables (independent loads), then compared
        // in index order.
        let a = load4(r, c);
        let b = load4(r, c + 4u * WG);
        let d = load4(r, c + 8u * WG);
        let e = load4(r, c + 12u * WG);
        take4(a, c);
        take4(b, c + 4u * WG);
        take4(d, c + 8u * WG);
        take4(e, c + 12u * WG);
    }
    reduce(bv, bi, lid);
    if (live && lid == 0u) {
        win[2u * wi] = bitcast<u32>(best_v[0]);
        win[2u * wi + 1u] = best_i[0];
    }
#ifdef MERGE_LAST
    // The barrier before the arrival releases this workgroup's winner at device scope (naga:
    // OpControlBarrier, Device memory scope, AcquireRelease), the one after it is the merger's
    // acquire of the others'.
    storageBarrier();
    if (lid == 0u) {
        merging = u32(live && atomicAdd(&arrivals[r], 1u) == p.chunks - 1u);
    }
    if (workgroupUniformLoad(&merging) != 0u) {
        storageBarrier();
        final_row(r, true, lid);
        if (lid == 0u) {
            atomicStore(&arrivals[r], 0u);
        }
    }
#endif
}
#else
@compute @workgroup_size(WG)
fn argmax_final(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat_group(wg, p.groups_x);
    final_row(r, r < p.rows, lid);
}
#endif

#ifndef PART
#define FINAL_ROW 1
#endif
#ifdef MERGE_LAST
#define FINAL_ROW 1
#endif
#ifdef FINAL_ROW
// ids[r] = the winner of row r's chunk winners (`live`: r is a row; called in uniform control
// flow by the whole workgroup).
fn final_row(r: u32, live: bool, lid: u32) {
    var bv = 0.0;
    var bi = NONE;
    if (live) {
        for (var c = lid; c < p.chunks; c += WG) {
            let i = 2u * (r * p.chunks + c);
            let v = bitcast<f32>(win[i]);
            if (beats(v, win[i + 1u], bv, bi)) {
                bv = v;
                bi = win[i + 1u];
            }
        }
    }
    reduce(bv, bi, lid);
    if (live && lid == 0u) {
        // All NaN: index 0.
        ids[r] = select(best_i[0], 0u, best_i[0] == NONE);
    }
}
#endif
