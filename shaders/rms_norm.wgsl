// RMSNorm of each `group`-long slice (a row, or one head of a row), times an optional weight
// (ops::rms_norm). One workgroup per slice; the sum of squares is reduced in workgroup memory.

#include "common"

const WG: u32 = 256u;  // threads per slice: one pass over a 2048-wide row, 8 loads each

struct Params {
    n_groups: u32,   // slices
    group: u32,      // elements per slice
    groups_x: u32,
    eps: f32,
    has_w: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // [n_groups, group]
@group(0) @binding(2) var<storage, read> w: array<f32>;        // [group] (ignored when !has_w)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;  // [n_groups, group]

var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(WG)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = flat_group(wg, p.groups_x);
    if (g >= p.n_groups) {
        return;
    }
    let base = g * p.group;
    var s = 0.0;
    for (var i = lid; i < p.group; i += WG) {
        let v = x[base + i];
        s += v * v;
    }
    part[lid] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            part[lid] += part[lid + h];
        }
        workgroupBarrier();
    }
    let scale = 1.0 / sqrt(part[0] / f32(p.group) + p.eps);
    for (var i = lid; i < p.group; i += WG) {
        var v = x[base + i] * scale;
        if (p.has_w != 0u) {
            v = v * w[i];
        }
        y[base + i] = v;
    }
}
