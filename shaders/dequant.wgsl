// Dequantization of weight rows on the GPU, one section per stored type (selected by a define
// `TYPE_<name>`, e.g. TYPE_Q4_K). Each section defines
//   const G: u32                      elements per group (groups never straddle a block)
//   fn dq(row: u32, g: u32) -> array<f32, G>   group `g` of row `row`
// reading the weight buffer `w` (array<u32>) and `p.row_words` (u32 words per row), `p.aux`
// (word offset of a second region, e.g. T2R scales). The GPU layout of each type is
// src/backend/gpu/layout.rs; the CPU reference decoders are src/quant/.

#ifdef TYPE_F32
const G: u32 = 4u;
fn dq(row: u32, g: u32) -> array<f32, 4> {
    let b = row * p.row_words + g * 4u;
    // Rows are zero-padded to whole groups at upload.
    return array<f32, 4>(bitcast<f32>(w[b]), bitcast<f32>(w[b + 1u]), bitcast<f32>(w[b + 2u]), bitcast<f32>(w[b + 3u]));
}
#endif

#ifdef TYPE_F16
const G: u32 = 4u;
fn dq(row: u32, g: u32) -> array<f32, 4> {
    let b = row * p.row_words + g * 2u;
    let lo = unpack2x16float(w[b]);
    let hi = unpack2x16float(w[b + 1u]);
    return array<f32, 4>(lo.x, lo.y, hi.x, hi.y);
}
#endif

#ifdef TYPE_BF16
const G: u32 = 4u;
fn dq(row: u32, g: u32) -> array<f32, 4> {
    let b = row * p.row_words + g * 2u;
    let lo = w[b];
    let hi = w[b + 1u];
    return array<f32, 4>(bf16_of(lo, false), bf16_of(lo, true), bf16_of(hi, false), bf16_of(hi, true));
}
#endif
