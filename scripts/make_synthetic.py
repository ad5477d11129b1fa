#!/usr/bin/env python3
"""Write the small synthetic GGUF test models (testing.md §2.2, §2.3).

Usage:
    python scripts/make_synthetic.py OUTDIR [--llama-quantize PATH] [--scratch DIR]

Requires the `gguf` package (0.19.0) and numpy. Everything is deterministic:
weights come from fixed seeds (one numpy generator per tensor, seeded from the
model family seed and the tensor name), so re-running produces byte-identical
files. All quantized variants of one family share the same underlying f32
weights, so they can be compared with each other.

Models written (all with the same byte-level GPT-2 style vocabulary, see
`tokenizer_kv`). Weights are Gaussian / sqrt(fan_in), norm weights
1 + 0.1 N. Except in the bitnet files, every 2-D weight (token_embd and
output included) has the file's type and 1-D tensors are F32. Every model has
GQA (group > 1). The 32-block families other than tiny-llama use n_embd 96 or
160 (multiples of 32, not of 64); K-quant and TQ families need multiples of
256.

  tiny-llama-{f32,f16,q4_0,q4_1,q5_0,q5_1,q8_0}
      arch llama, n_embd 64, n_ff 192, 2 blocks, 4 heads / 2 kv heads
      (head_dim 16), untied `output.weight`. Every 2-D weight (including
      token_embd and output) has the named type; norms are F32.
      tiny-llama-f16 additionally sets general.alignment = 64.
  tiny-split-0000{1,2}-of-00002
      tiny-llama-f32's tensors split over two files (split.no / split.count /
      split.tensors.count; all other metadata only in the first file).
  tiny-llama3-{f32,q8_0}
      arch llama, n_embd 96, n_ff 128, 2 blocks, 6 heads / 2 kv heads
      (head_dim 16), untied, Llama-3 RoPE scaling as convert_hf_to_gguf
      writes it: a `rope_freqs.weight` {8} tensor (factor 8, low 1, high 4,
      original context 64, so all three bands occur) and no rope.scaling.*
      keys.
  tiny-llamatied-{f32,q8_0}
      arch llama, n_embd 160, n_ff 128, 2 blocks, 5 heads / 1 kv head
      (head_dim 32, MQA), tied output, rope base 100000.
  tiny-qwen2-{f32,f16,q8_0,q4_0}
      arch qwen2, n_embd 96, n_ff 160, 2 blocks, 6 heads / 2 kv heads
      (head_dim 16), attn_{q,k,v}.bias (0.5 N(0,1), F32), tied, rope base
      1e6, eps 1e-6. Like the HF converter: no key_length and no
      rope.dimension_count.
  tiny-qwen3-{f32,f16,q8_0,q4_0}
      arch qwen3, n_embd 96, n_ff 160, 2 blocks, 4 heads / 2 kv heads,
      key_length = value_length = 32 (H*hd = 128 != n_embd), attn_q_norm /
      attn_k_norm {32}, untied, rope base 1e6, eps 1e-6, no
      rope.dimension_count.
  tiny-gemma3-{f32,f16,q8_0,q4_0}
      arch gemma3, n_embd 96, n_ff 64, 6 blocks, 4 heads / 2 kv heads,
      key_length 16 (!= n_embd/H = 24), q/k norms, post_attention_norm /
      post_ffw_norm, tied (no output.weight), sliding_window 8, rope base 1e6.
      Like the real gemma-3-270m file there is no sliding_window_pattern
      (llama.cpp default 6: blocks 0-4 local, block 5 global) and no
      rope.freq_base_swa (default 10000 on local blocks) or
      rope.dimension_count.
  K-quant families: an F32 source <prefix>-f32 (about 5 MB, so NOT written
  to OUTDIR but to --scratch DIR, default a temporary directory; written only
  when --scratch or --llama-quantize is given), then llama-quantize --pure
  (only with --llama-quantize): every 2-D weight gets the K-quant type, 1-D
  tensors stay F32. The script fails if llama-quantize falls back to another
  type for any tensor.
    tiny-llama256-{q2_k,q3_k,q4_k,q5_k,q6_k}
        arch llama, n_embd 256, n_ff 512 (ffn_down rows hold 2 super-blocks),
        2 blocks, 4 heads / 2 kv heads (head_dim 64), tied output;
        Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K.
    tiny-qwen2k-{q4_k,q6_k}
        qwen2 as above at n_embd 256, n_ff 256, 4 / 2 heads (head_dim 64).
    tiny-qwen3k-{q4_k,q6_k}
        qwen3 as above at n_embd 256, n_ff 256, 4 / 1 heads, key_length 128
        (H*hd = 512).
    tiny-gemma3k-{q4_k,q6_k}
        gemma3 at n_embd 256, n_ff 256, 3 blocks, 2 / 1 heads, key_length
        128, sliding_window 8, with explicit keys:
        sliding_window_pattern = 3 (u32: blocks 0, 1 local, block 2 global)
        and rope.freq_base_swa = 20000.
  tiny-bitnet-f32   (scratch only, with --scratch / --llama-quantize)
      the tiny-bitnet values below (t*s, token_embd's F16 values) all F32;
      5 MB, not committed; its llama.cpp logits are committed as a golden
      (scripts/gen_logit_golden.py --extra-model).
  tiny-bitnet-{tq1_0,tq2_0,i2_s}
      arch bitnet, n_embd 256, n_ff 512, 2 blocks, 4 heads / 2 kv heads,
      attn_sub_norm / ffn_sub_norm, no output.weight (tied). The same ternary
      matrices t*s (t in {-1,0,1}, one f16-representable scale s per tensor)
      in all three files, so they decode to identical values. token_embd F16,
      norms F32. The I2_S file follows formats.md §4.3 (type id 36, n/4 packed
      bytes, MSB-first 128-element/32-byte interleave, 32-byte trailer holding
      the f32 scale) and general.file_type 40 (the BitNet fork's
      LLAMA_FTYPE_MOSTLY_I2_S); upstream llama.cpp cannot load it.
  tiny-bitnet25-tq2_0
      arch bitnet-25 (the BitNet fork's 2B-4T: ReLU²-gated FFN), otherwise as
      tiny-bitnet-tq2_0 with its own weights (seed 1012) and rope base 5e5.
      Upstream llama.cpp does not know the architecture: its golden logits come
      from scripts/ref_bitnet.py (numpy, f64).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

I2_S_TYPE_ID = 36          # BitNet fork ggml type id (not in gguf's enum)
I2_S_FTYPE = 40            # BitNet fork LLAMA_FTYPE_MOSTLY_I2_S
F16_ALIGNMENT = 64         # tiny-llama-f16 uses a non-default alignment

# --------------------------------------------------------------------------
# Tokenizer: GPT-2 byte-level BPE with a tiny merge table.
#   ids 0..255   : one token per byte value b (id == b), text = GPT-2
#                  bytes_to_unicode()[b]
#   ids 256..263 : merged tokens, one per merge rule below
#   id  264      : "<|endoftext|>" (CONTROL), used as BOS and EOS
# --------------------------------------------------------------------------
MERGES = ["h e", "Ġ t", "i n", "Ġt he", "l l", "e r", "Ġ a", "o n"]
EOT = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def vocab() -> tuple[list[str], list[int]]:
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    types = [gguf.TokenType.NORMAL] * 256
    for m in MERGES:
        left, right = m.split(" ")
        assert left in tokens and right in tokens, m
        tokens.append(left + right)
        types.append(gguf.TokenType.NORMAL)
    tokens.append(EOT)
    types.append(gguf.TokenType.CONTROL)
    assert len(set(tokens)) == len(tokens)
    return tokens, [int(t) for t in types]


TOKENS, TOKEN_TYPES = vocab()
N_VOCAB = len(TOKENS)          # 265
EOT_ID = N_VOCAB - 1


def tokenizer_kv(w: gguf.GGUFWriter) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(TOKENS)
    w.add_token_types(TOKEN_TYPES)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(EOT_ID)
    w.add_eos_token_id(EOT_ID)
    w.add_add_bos_token(False)


# --------------------------------------------------------------------------
# Deterministic weights
# --------------------------------------------------------------------------

def rng_for(family_seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([family_seed, zlib.crc32(name.encode())])


def gaussian(family_seed: int, name: str, ne: tuple[int, ...]) -> np.ndarray:
    """Gaussian weight with ne = (ne0, ne1, ...) scaled 1/sqrt(fan_in = ne0).
    Returned in numpy order (reversed ne), float32."""
    shape = tuple(reversed(ne))
    x = rng_for(family_seed, name).standard_normal(shape, dtype=np.float32)
    return (x / np.float32(np.sqrt(ne[0]))).astype(np.float32)


def norm_weight(family_seed: int, name: str, n: int) -> np.ndarray:
    x = rng_for(family_seed, name).standard_normal((n,), dtype=np.float32)
    return (1.0 + 0.1 * x).astype(np.float32)


def ternary(family_seed: int, name: str, ne: tuple[int, int]) -> tuple[np.ndarray, float]:
    """BitNet-style absmean ternarisation of a Gaussian matrix.
    Returns (t as int8 in numpy order, scale s) with s exactly representable
    in f16, so TQ1_0/TQ2_0 (f16 block scale = absmax = s) and I2_S (f32
    tensor scale) all decode to exactly t*s."""
    w = gaussian(family_seed, name, ne)
    s = float(np.float16(np.mean(np.abs(w))))
    t = np.clip(np.rint(w / s), -1, 1).astype(np.int8)
    # every 256-element block must contain a non-zero so its absmax is s
    blocks = t.reshape(-1, 256)
    assert np.all(np.any(blocks != 0, axis=1)), name
    return t, s


# --------------------------------------------------------------------------
# Model descriptions
# --------------------------------------------------------------------------

class Cfg:
    """One model family. `head_dim` defaults to n_embd / n_head.

    Metadata follows what llama.cpp's HF converter writes for the arch:
    `key_length` writes attention.key_length / value_length (= head_dim),
    `rope_dim` writes rope.dimension_count (= head_dim); `extra_kv` is a list
    of (GGUFWriter method name, value) written after rope.freq_base.
    Tensor extras: `qkv_bias` (qwen2), `qk_norm` (qwen3, gemma3),
    `post_norms` (gemma3), `sub_norms` (bitnet), `llama3` (a dict with
    factor / low_freq_factor / high_freq_factor / original_context_length:
    writes `rope_freqs.weight` as convert_hf_to_gguf does)."""

    def __init__(self, arch, n_embd, n_ff, n_layer, n_head, n_head_kv, tied, seed,
                 ctx=512, rope_base=10000.0, eps=1e-5, head_dim=None, key_length=False,
                 rope_dim=True, extra_kv=(), qkv_bias=False, qk_norm=False,
                 post_norms=False, llama3=None):
        self.arch, self.n_embd, self.n_ff, self.n_layer = arch, n_embd, n_ff, n_layer
        self.n_head, self.n_head_kv, self.tied, self.seed = n_head, n_head_kv, tied, seed
        self.ctx, self.rope_base, self.eps = ctx, rope_base, eps
        self.head_dim = head_dim if head_dim is not None else n_embd // n_head
        self.key_length, self.rope_dim, self.extra_kv = key_length, rope_dim, list(extra_kv)
        self.qkv_bias, self.qk_norm, self.post_norms = qkv_bias, qk_norm, post_norms
        self.sub_norms = arch in ("bitnet", "bitnet-25")
        self.llama3 = llama3


TINY = Cfg("llama", 64, 192, 2, 4, 2, tied=False, seed=1001)
TINY256 = Cfg("llama", 256, 512, 2, 4, 2, tied=True, seed=1002)
BITNET = Cfg("bitnet", 256, 512, 2, 4, 2, tied=True, seed=1003)
# The BitNet fork's 2B-4T architecture (ReLU²): no llama.cpp oracle, scripts/ref_bitnet.py is.
BITNET25 = Cfg("bitnet-25", 256, 512, 2, 4, 2, tied=True, seed=1012, rope_base=500000.0)

# llama with Llama-3 RoPE scaling baked into rope_freqs.weight. With head_dim
# 16 and base 10000 the 8 wavelengths are 6.3 .. 19869; original context 64
# (high_wl 16, low_wl 64) puts pair 0 in the "keep" band, pairs 1-2 in the
# smooth band and pairs 3-7 in the "divide by factor" band.
LLAMA3_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_context_length": 64}
LLAMA3 = Cfg("llama", 96, 128, 2, 6, 2, tied=False, seed=1004, rope_base=10000.0,
             llama3=LLAMA3_SCALING)
LLAMATIED = Cfg("llama", 160, 128, 2, 5, 1, tied=True, seed=1005, rope_base=100000.0)
QWEN2 = Cfg("qwen2", 96, 160, 2, 6, 2, tied=True, seed=1006, rope_base=1e6, eps=1e-6,
            rope_dim=False, qkv_bias=True)
QWEN2K = Cfg("qwen2", 256, 256, 2, 4, 2, tied=True, seed=1007, rope_base=1e6, eps=1e-6,
             rope_dim=False, qkv_bias=True)
QWEN3 = Cfg("qwen3", 96, 160, 2, 4, 2, tied=False, seed=1008, rope_base=1e6, eps=1e-6,
            head_dim=32, key_length=True, rope_dim=False, qk_norm=True)
QWEN3K = Cfg("qwen3", 256, 256, 2, 4, 1, tied=False, seed=1009, rope_base=1e6, eps=1e-6,
             head_dim=128, key_length=True, rope_dim=False, qk_norm=True)
GEMMA3_WINDOW = 8
# As the real gemma-3-270m file: no sliding_window_pattern (llama.cpp's
# default 6: layers 0-4 local, layer 5 global) and no rope.freq_base_swa
# (default 10000 for local layers); rope.freq_base 1e6 for global layers.
GEMMA3 = Cfg("gemma3", 96, 64, 6, 4, 2, tied=True, seed=1010, rope_base=1e6, eps=1e-6,
             head_dim=16, key_length=True, rope_dim=False, qk_norm=True, post_norms=True,
             extra_kv=[("add_sliding_window", GEMMA3_WINDOW)])
# Explicit keys instead: pattern 3 (layers 0, 1 local, layer 2 global) and
# rope.freq_base_swa 20000.
GEMMA3K = Cfg("gemma3", 256, 256, 3, 2, 1, tied=True, seed=1011, rope_base=1e6, eps=1e-6,
              head_dim=128, key_length=True, rope_dim=False, qk_norm=True, post_norms=True,
              extra_kv=[("add_sliding_window", GEMMA3_WINDOW),
                        ("add_sliding_window_pattern", 3),
                        ("add_rope_freq_base_swa", 20000.0)])

# kinds: "w" (2-D weight, Gaussian), "norm" (1 + 0.1 N), "bias" (0.5 N),
# "freqs" (rope_freqs factors)
Spec = tuple[str, tuple[int, ...], str]


def tensor_specs(c: Cfg) -> list[Spec]:
    """(name, ne, kind) in file order."""
    q = c.n_head * c.head_dim
    kv = c.n_head_kv * c.head_dim
    out: list[Spec] = [("token_embd.weight", (c.n_embd, N_VOCAB), "w"),
                       ("output_norm.weight", (c.n_embd,), "norm")]
    if not c.tied:
        out.append(("output.weight", (c.n_embd, N_VOCAB), "w"))
    if c.llama3 is not None:
        out.append(("rope_freqs.weight", (c.head_dim // 2,), "freqs"))
    for i in range(c.n_layer):
        p = f"blk.{i}."
        out.append((p + "attn_norm.weight", (c.n_embd,), "norm"))
        for t, n in (("q", q), ("k", kv), ("v", kv)):
            out.append((p + f"attn_{t}.weight", (c.n_embd, n), "w"))
            if c.qkv_bias:
                out.append((p + f"attn_{t}.bias", (n,), "bias"))
        if c.qk_norm:
            out += [(p + "attn_q_norm.weight", (c.head_dim,), "norm"),
                    (p + "attn_k_norm.weight", (c.head_dim,), "norm")]
        out.append((p + "attn_output.weight", (q, c.n_embd), "w"))
        if c.sub_norms:
            out.append((p + "attn_sub_norm.weight", (c.n_embd,), "norm"))
        if c.post_norms:
            out.append((p + "post_attention_norm.weight", (c.n_embd,), "norm"))
        out += [(p + "ffn_norm.weight", (c.n_embd,), "norm"),
                (p + "ffn_gate.weight", (c.n_embd, c.n_ff), "w"),
                (p + "ffn_up.weight", (c.n_embd, c.n_ff), "w"),
                (p + "ffn_down.weight", (c.n_ff, c.n_embd), "w")]
        if c.sub_norms:
            out.append((p + "ffn_sub_norm.weight", (c.n_ff,), "norm"))
        if c.post_norms:
            out.append((p + "post_ffw_norm.weight", (c.n_embd,), "norm"))
    return out


def bias_weight(family_seed: int, name: str, n: int) -> np.ndarray:
    x = rng_for(family_seed, name).standard_normal((n,), dtype=np.float32)
    return (0.5 * x).astype(np.float32)


def llama3_rope_factors(c: Cfg) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.generate_extra_tensors: per rotary pair
    i, the divisor of theta_i (1, factor, or the smooth blend)."""
    p = c.llama3
    dim = c.head_dim
    freqs = 1.0 / (np.float32(c.rope_base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    orig = p["original_context_length"]
    lo, hi, factor = p["low_freq_factor"], p["high_freq_factor"], p["factor"]
    low_wl, high_wl = orig / lo, orig / hi
    out = []
    for f in freqs.astype(np.float64):
        wl = 2 * np.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (orig / wl - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def small_tensor(c: Cfg, name: str, ne: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "norm":
        return norm_weight(c.seed, name, ne[0])
    if kind == "bias":
        return bias_weight(c.seed, name, ne[0])
    assert kind == "freqs"
    return llama3_rope_factors(c)


def hparams_kv(w: gguf.GGUFWriter, c: Cfg, name: str, ftype: int) -> None:
    w.add_type("model")
    w.add_name(name)
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(c.ctx)
    w.add_embedding_length(c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_feed_forward_length(c.n_ff)
    w.add_head_count(c.n_head)
    w.add_head_count_kv(c.n_head_kv)
    if c.key_length:
        w.add_key_length(c.head_dim)
        w.add_value_length(c.head_dim)
    w.add_layer_norm_rms_eps(c.eps)
    w.add_rope_freq_base(c.rope_base)
    for method, value in c.extra_kv:
        getattr(w, method)(value)
    if c.rope_dim:
        w.add_rope_dimension_count(c.head_dim)
    w.add_vocab_size(N_VOCAB)
    tokenizer_kv(w)


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_model(c: Cfg, path: Path, qtype: QT, ftype: int, alignment: int | None = None,
                split_max_tensors: int = 0) -> list[Path]:
    """Every 2-D weight in `qtype` (F32 / F16 / a gguf.quants type), 1-D
    tensors F32."""
    w = gguf.GGUFWriter(path, c.arch, split_max_tensors=split_max_tensors)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    hparams_kv(w, c, path.stem if not split_max_tensors else "tiny-split", ftype)
    for name, ne, kind in tensor_specs(c):
        if kind != "w":
            w.add_tensor(name, small_tensor(c, name, ne, kind))
            continue
        x = gaussian(c.seed, name, ne)
        if qtype == QT.F32:
            w.add_tensor(name, x)
        elif qtype == QT.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
    paths = w.format_shard_names(path)
    finish(w)
    return paths


def pack_i2_s(t: np.ndarray, scale: float) -> bytes:
    """formats.md §4.3: flatten row-major, 128-element chunks of 32 bytes;
    byte g of chunk c holds codes (t+1) of elements 128c + {g, 32+g, 64+g,
    96+g} in bits 7:6, 5:4, 3:2, 1:0. Then a 32-byte trailer whose first 4
    bytes are the f32 scale (rest zero)."""
    flat = t.reshape(-1).astype(np.int16)
    n = flat.size
    assert n % 128 == 0
    codes = (flat + 1).astype(np.uint8).reshape(-1, 4, 32)   # [chunk, quarter, g]
    packed = (codes[:, 0, :] << 6) | (codes[:, 1, :] << 4) | (codes[:, 2, :] << 2) | codes[:, 3, :]
    packed = packed.astype(np.uint8).reshape(-1)
    assert packed.size == n // 4
    trailer = np.zeros(32, dtype=np.uint8)
    trailer[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return packed.tobytes() + trailer.tobytes()


def write_bitnet(c: Cfg, path: Path, kind: str) -> None:
    """kind tq1_0 / tq2_0 / i2_s, or f32: the same values (t*s, and the F16
    token_embd widened) with every tensor F32 (scratch only: 5 MB)."""
    ftype = {"tq1_0": FT.MOSTLY_TQ1_0, "tq2_0": FT.MOSTLY_TQ2_0, "i2_s": I2_S_FTYPE,
             "f32": FT.ALL_F32}[kind]
    w = gguf.GGUFWriter(path, c.arch)
    hparams_kv(w, c, path.stem, int(ftype))
    for name, ne, k in tensor_specs(c):
        if k != "w":
            w.add_tensor(name, small_tensor(c, name, ne, k))
            continue
        if name == "token_embd.weight":
            e = gaussian(c.seed, name, ne).astype(np.float16)
            w.add_tensor(name, e.astype(np.float32) if kind == "f32" else e)
            continue
        t, s = ternary(c.seed, name, ne)
        if kind == "i2_s":
            raw = np.frombuffer(pack_i2_s(t, s), dtype=np.int8)
            # GGUFWriter only converts byte shapes for uint8 data of a known
            # quant type; with int8 data and an explicit raw_shape (numpy
            # order) it writes the shape as given and the raw type id as u32.
            w.add_tensor(name, raw, raw_shape=tuple(reversed(ne)),
                         raw_dtype=I2_S_TYPE_ID)  # type: ignore[arg-type]
        elif kind == "f32":
            w.add_tensor(name, t.astype(np.float32) * np.float32(s))
        else:
            qt = QT.TQ1_0 if kind == "tq1_0" else QT.TQ2_0
            x = t.astype(np.float32) * np.float32(s)
            q = gguf.quants.quantize(x, qt)
            assert np.array_equal(gguf.quants.dequantize(q, qt), x), name
            w.add_tensor(name, q, raw_dtype=qt)
    finish(w)


# (file suffix, llama-quantize type name); with --pure every 2-D weight gets
# the K-quant type (Q4_K_M -> Q4_K, ...)
KQUANTS = [("q2_k", "Q2_K"), ("q3_k", "Q3_K_M"), ("q4_k", "Q4_K_M"),
           ("q5_k", "Q5_K_M"), ("q6_k", "Q6_K")]
KQUANTS_46 = [("q4_k", "Q4_K_M"), ("q6_k", "Q6_K")]

TYPES = {"f32": (QT.F32, FT.ALL_F32), "f16": (QT.F16, FT.MOSTLY_F16),
         "q4_0": (QT.Q4_0, FT.MOSTLY_Q4_0), "q4_1": (QT.Q4_1, FT.MOSTLY_Q4_1),
         "q5_0": (QT.Q5_0, FT.MOSTLY_Q5_0), "q5_1": (QT.Q5_1, FT.MOSTLY_Q5_1),
         "q8_0": (QT.Q8_0, FT.MOSTLY_Q8_0)}

# (file prefix, config, types) of the families written directly by gguf-py
DIRECT = [("tiny-llama", TINY, ["f32", "f16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]),
          ("tiny-llama3", LLAMA3, ["f32", "q8_0"]),
          ("tiny-llamatied", LLAMATIED, ["f32", "q8_0"]),
          ("tiny-qwen2", QWEN2, ["f32", "f16", "q8_0", "q4_0"]),
          ("tiny-qwen3", QWEN3, ["f32", "f16", "q8_0", "q4_0"]),
          ("tiny-gemma3", GEMMA3, ["f32", "f16", "q8_0", "q4_0"])]

# (file prefix, config, K-quants) of the llama-quantize families; their F32
# source <prefix>-f32.gguf goes to the scratch directory
KFAMILIES = [("tiny-llama256", TINY256, KQUANTS),
             ("tiny-qwen2k", QWEN2K, KQUANTS_46),
             ("tiny-qwen3k", QWEN3K, KQUANTS_46),
             ("tiny-gemma3k", GEMMA3K, KQUANTS_46)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--llama-quantize", type=Path, default=None,
                    help="path to llama.cpp's llama-quantize; enables the K-quant models")
    ap.add_argument("--scratch", type=Path, default=None,
                    help="directory for the F32 sources of the K-quant families and "
                         "tiny-bitnet-f32 (not committed); default: a temporary directory")
    args = ap.parse_args()
    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    for prefix, cfg, types in DIRECT:
        for suffix in types:
            qt, ft = TYPES[suffix]
            p = out / f"{prefix}-{suffix}.gguf"
            align = F16_ALIGNMENT if (cfg is TINY and qt == QT.F16) else None
            written += write_model(cfg, p, qt, int(ft), alignment=align)

    n_tensors = len(tensor_specs(TINY))
    written += write_model(TINY, out / "tiny-split.gguf", QT.F32, int(FT.ALL_F32),
                           split_max_tensors=(n_tensors + 1) // 2)

    for kind in ("tq1_0", "tq2_0", "i2_s"):
        p = out / f"tiny-bitnet-{kind}.gguf"
        write_bitnet(BITNET, p, kind)
        written.append(p)
    p = out / "tiny-bitnet25-tq2_0.gguf"
    write_bitnet(BITNET25, p, "tq2_0")
    written.append(p)

    tmp = None
    if args.scratch is not None or args.llama_quantize is not None:
        if args.scratch is None:
            tmp = tempfile.TemporaryDirectory(prefix="make_synthetic-")
            scratch = Path(tmp.name)
        else:
            scratch = args.scratch
            scratch.mkdir(parents=True, exist_ok=True)
        for prefix, cfg, _ in KFAMILIES:
            written += write_model(cfg, scratch / f"{prefix}-f32.gguf", QT.F32, int(FT.ALL_F32))
        p = scratch / "tiny-bitnet-f32.gguf"
        write_bitnet(BITNET, p, "f32")
        written.append(p)

    if args.llama_quantize is not None:
        for prefix, _, kquants in KFAMILIES:
            src = scratch / f"{prefix}-f32.gguf"
            for suffix, qname in kquants:
                p = out / f"{prefix}-{suffix}.gguf"
                cmd = [str(args.llama_quantize), "--pure", str(src), str(p), qname]
                r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if r.returncode != 0:
                    sys.stderr.write(r.stdout)
                    raise SystemExit(f"llama-quantize failed for {p.name}")
                if "fallback" in r.stdout:
                    sys.stderr.write(r.stdout)
                    raise SystemExit(f"llama-quantize used a fallback type for {p.name}")
                written.append(p)
    else:
        print("note: --llama-quantize not given; K-quant models not written", file=sys.stderr)

    for p in written:
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        print(f"{h}  {p.name}  {p.stat().st_size}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
