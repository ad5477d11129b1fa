// Split-K reduction of gemm.wgsl's KSPLIT (gemm::gemm, gemm::gemm_split): for each token t and
// row r of a weight part, y[t][row0 + r] = mult · inv_rms[t] · Σ_s part[s][t][r] (inv_rms under
// NORM, from the splits' Σx² after the sums), added to y under RESIDUAL; under SPLIT row r goes
// to y, y1 or y2 as in gemm.wgsl's SPLIT (the q, k and v rows). One thread per output.

#include "common"

struct Params {
    rows: u32,    // rows of the weight part
    cols: u32,    // K (NORM: the mean of x² is over K)
    tokens: u32,
    splits: u32,
    groups_x: u32,
    row0: u32,    // output column of this part's first row
    y_cols: u32,  // output row stride
    mult: f32,    // tensor multiplier (T2R from I2_S), else 1
    eps: f32,     // NORM
    split1: u32,  // SPLIT: rows [0, split1) go to y, [split1, split2) to y1, the rest to y2
    split2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;    // [splits][tokens][rows], NORM: then Σx² [splits][tokens]
#ifdef SPLIT
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [tokens, split1]
@group(0) @binding(3) var<storage, read_write> y1: array<f32>;  // [tokens, split2 - split1]
@group(0) @binding(4) var<storage, read_write> y2: array<f32>;  // [tokens, rows - split2]
#else
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [tokens, y_cols]
#endif

@compute @workgroup_size(256)
fn gemm_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wg, p.groups_x) * 256u + lid;
    if (i >= p.rows * p.tokens) {
        return;
    }
    let t = i / p.rows;
    let r = i % p.rows;
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += part[(s * p.tokens + t) * p.rows + r];
    }
    var sc = p.mult;
#ifdef NORM
    let ss_at = p.splits * p.tokens * p.rows;
    var ss = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        ss += part[ss_at + s * p.tokens + t];
    }
    sc *= 1.0 / sqrt(ss / f32(p.cols) + p.eps);
#endif
#ifdef SPLIT
    if (r < p.split1) {
        y[t * p.split1 + r] = sum * sc;
    } else if (r < p.split2) {
        y1[t * (p.split2 - p.split1) + r - p.split1] = sum * sc;
    } else {
        y2[t * (p.rows - p.split2) + r - p.split2] = sum * sc;
    }
#else
    let o = t * p.y_cols + p.row0 + r;
#ifdef RESIDUAL
    y[o] += sum * sc;
#else
    y[o] = sum * sc;
#endif
#endif
}
