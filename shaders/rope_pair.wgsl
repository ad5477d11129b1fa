// One RoPE pair: which two elements of a head it rotates and the rotation itself, #included by
// rope.wgsl (rope, rope_kv) and attention.wgsl (the decode kernel that rotates q and the new k).
// The rotation is written as fma(x0, c, −x1·s), fma(x0, s, x1·c), as backend::cpu::ops::rope_head
// (bit-identical where fma fuses; lavapipe splits it into mul + add: ~10% of values 1 ulp off).

// The two indices of pair `pair` of the head starting at `base`: adjacent (Norm) or `half`
// apart (Neox).
fn pair_of(base: u32, pair: u32, half: u32, neox: bool) -> vec2<u32> {
    if (neox) {
        return vec2<u32>(base + pair, base + pair + half);
    }
    return vec2<u32>(base + 2u * pair, base + 2u * pair + 1u);
}

// (x0, x1) rotated by (cos, sin) = cs, in the FMA form of the CPU reference.
fn rotate(x0: f32, x1: f32, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(fma(x0, cs.x, -(x1 * cs.y)), fma(x0, cs.y, x1 * cs.x));
}
