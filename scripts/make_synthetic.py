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
`tokenizer_kv`):

  tiny-llama-{f32,f16,q4_0,q4_1,q5_0,q5_1,q8_0}
      arch llama, n_embd 64, n_ff 192, 2 blocks, 4 heads / 2 kv heads
      (head_dim 16), untied `output.weight`. Every 2-D weight (including
      token_embd and output) has the named type; norms are F32.
      tiny-llama-f16 additionally sets general.alignment = 64.
  tiny-split-0000{1,2}-of-00002
      tiny-llama-f32's tensors split over two files (split.no / split.count /
      split.tensors.count; all other metadata only in the first file).
  tiny-llama256-f32
      arch llama, n_embd 256, n_ff 512 (ffn_down rows hold 2 super-blocks),
      2 blocks, 4 heads / 2 kv heads (head_dim 64), tied output. Input for
      llama-quantize. It is about 5 MB, so it is NOT written to OUTDIR (whose
      files are committed) but to --scratch DIR (default: a temporary
      directory removed at the end); it is only written when --scratch or
      --llama-quantize is given. Being deterministic, it can be regenerated
      at any time with --scratch.
  tiny-llama256-{q2_k,q3_k,q4_k,q5_k,q6_k}   (only with --llama-quantize)
      llama-quantize --pure of tiny-llama256-f32 with Q2_K, Q3_K_M, Q4_K_M,
      Q5_K_M, Q6_K: every 2-D weight gets that K-quant type.
  tiny-bitnet-{tq1_0,tq2_0,i2_s}
      arch bitnet, n_embd 256, n_ff 512, 2 blocks, 4 heads / 2 kv heads,
      attn_sub_norm / ffn_sub_norm, no output.weight (tied). The same ternary
      matrices t*s (t in {-1,0,1}, one f16-representable scale s per tensor)
      in all three files, so they decode to identical values. token_embd F16,
      norms F32. The I2_S file follows formats.md §4.3 (type id 36, n/4 packed
      bytes, MSB-first 128-element/32-byte interleave, 32-byte trailer holding
      the f32 scale) and general.file_type 40 (the BitNet fork's
      LLAMA_FTYPE_MOSTLY_I2_S); upstream llama.cpp cannot load it.
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
    def __init__(self, arch, n_embd, n_ff, n_layer, n_head, n_head_kv, tied, seed,
                 ctx=512, rope_base=10000.0, eps=1e-5):
        self.arch, self.n_embd, self.n_ff, self.n_layer = arch, n_embd, n_ff, n_layer
        self.n_head, self.n_head_kv, self.tied, self.seed = n_head, n_head_kv, tied, seed
        self.ctx, self.rope_base, self.eps = ctx, rope_base, eps
        self.head_dim = n_embd // n_head


TINY = Cfg("llama", 64, 192, 2, 4, 2, tied=False, seed=1001)
TINY256 = Cfg("llama", 256, 512, 2, 4, 2, tied=True, seed=1002)
BITNET = Cfg("bitnet", 256, 512, 2, 4, 2, tied=True, seed=1003)


def tensor_specs(c: Cfg) -> list[tuple[str, tuple[int, ...]]]:
    """(name, ne) in file order. 1-D tensors are norms."""
    kv = c.n_head_kv * c.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (c.n_embd, N_VOCAB)),
                                              ("output_norm.weight", (c.n_embd,))]
    if not c.tied:
        out.append(("output.weight", (c.n_embd, N_VOCAB)))
    for i in range(c.n_layer):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (c.n_embd,)),
                (p + "attn_q.weight", (c.n_embd, c.n_head * c.head_dim)),
                (p + "attn_k.weight", (c.n_embd, kv)),
                (p + "attn_v.weight", (c.n_embd, kv)),
                (p + "attn_output.weight", (c.n_head * c.head_dim, c.n_embd))]
        if c.arch == "bitnet":
            out.append((p + "attn_sub_norm.weight", (c.n_embd,)))
        out += [(p + "ffn_norm.weight", (c.n_embd,)),
                (p + "ffn_gate.weight", (c.n_embd, c.n_ff)),
                (p + "ffn_up.weight", (c.n_embd, c.n_ff)),
                (p + "ffn_down.weight", (c.n_ff, c.n_embd))]
        if c.arch == "bitnet":
            out.append((p + "ffn_sub_norm.weight", (c.n_ff,)))
    return out


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
    w.add_layer_norm_rms_eps(c.eps)
    w.add_rope_freq_base(c.rope_base)
    w.add_rope_dimension_count(c.head_dim)
    w.add_vocab_size(N_VOCAB)
    tokenizer_kv(w)


def finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_llama(c: Cfg, path: Path, qtype: QT, ftype: int, alignment: int | None = None,
                split_max_tensors: int = 0) -> list[Path]:
    w = gguf.GGUFWriter(path, c.arch, split_max_tensors=split_max_tensors)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    hparams_kv(w, c, path.stem if not split_max_tensors else "tiny-split", ftype)
    for name, ne in tensor_specs(c):
        if len(ne) == 1:
            w.add_tensor(name, norm_weight(c.seed, name, ne[0]))
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
    ftype = {"tq1_0": FT.MOSTLY_TQ1_0, "tq2_0": FT.MOSTLY_TQ2_0, "i2_s": I2_S_FTYPE}[kind]
    w = gguf.GGUFWriter(path, c.arch)
    hparams_kv(w, c, path.stem, int(ftype))
    for name, ne in tensor_specs(c):
        if len(ne) == 1:
            w.add_tensor(name, norm_weight(c.seed, name, ne[0]))
            continue
        if name == "token_embd.weight":
            w.add_tensor(name, gaussian(c.seed, name, ne).astype(np.float16))
            continue
        t, s = ternary(c.seed, name, ne)
        if kind == "i2_s":
            raw = np.frombuffer(pack_i2_s(t, s), dtype=np.int8)
            # GGUFWriter only converts byte shapes for uint8 data of a known
            # quant type; with int8 data and an explicit raw_shape (numpy
            # order) it writes the shape as given and the raw type id as u32.
            w.add_tensor(name, raw, raw_shape=tuple(reversed(ne)),
                         raw_dtype=I2_S_TYPE_ID)  # type: ignore[arg-type]
        else:
            qt = QT.TQ1_0 if kind == "tq1_0" else QT.TQ2_0
            x = t.astype(np.float32) * np.float32(s)
            q = gguf.quants.quantize(x, qt)
            assert np.array_equal(gguf.quants.dequantize(q, qt), x), name
            w.add_tensor(name, q, raw_dtype=qt)
    finish(w)


KQUANTS = [("q2_k", "Q2_K"), ("q3_k", "Q3_K_M"), ("q4_k", "Q4_K_M"),
           ("q5_k", "Q5_K_M"), ("q6_k", "Q6_K")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--llama-quantize", type=Path, default=None,
                    help="path to llama.cpp's llama-quantize; enables the K-quant models")
    ap.add_argument("--scratch", type=Path, default=None,
                    help="directory for tiny-llama256-f32.gguf (not committed); "
                         "default: a temporary directory")
    args = ap.parse_args()
    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    llama_types = [("f32", QT.F32, FT.ALL_F32), ("f16", QT.F16, FT.MOSTLY_F16),
                   ("q4_0", QT.Q4_0, FT.MOSTLY_Q4_0), ("q4_1", QT.Q4_1, FT.MOSTLY_Q4_1),
                   ("q5_0", QT.Q5_0, FT.MOSTLY_Q5_0), ("q5_1", QT.Q5_1, FT.MOSTLY_Q5_1),
                   ("q8_0", QT.Q8_0, FT.MOSTLY_Q8_0)]
    for suffix, qt, ft in llama_types:
        p = out / f"tiny-llama-{suffix}.gguf"
        written += write_llama(TINY, p, qt, int(ft), alignment=F16_ALIGNMENT if qt == QT.F16 else None)

    n_tensors = len(tensor_specs(TINY))
    written += write_llama(TINY, out / "tiny-split.gguf", QT.F32, int(FT.ALL_F32),
                           split_max_tensors=(n_tensors + 1) // 2)

    for kind in ("tq1_0", "tq2_0", "i2_s"):
        p = out / f"tiny-bitnet-{kind}.gguf"
        write_bitnet(BITNET, p, kind)
        written.append(p)

    tmp = None
    if args.scratch is not None or args.llama_quantize is not None:
        if args.scratch is None:
            tmp = tempfile.TemporaryDirectory(prefix="make_synthetic-")
            scratch = Path(tmp.name)
        else:
            scratch = args.scratch
            scratch.mkdir(parents=True, exist_ok=True)
        f32_256 = scratch / "tiny-llama256-f32.gguf"
        written += write_llama(TINY256, f32_256, QT.F32, int(FT.ALL_F32))

    if args.llama_quantize is not None:
        for suffix, qname in KQUANTS:
            p = out / f"tiny-llama256-{suffix}.gguf"
            cmd = [str(args.llama_quantize), "--pure", str(f32_256), str(p), qname]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                sys.stderr.write(r.stdout)
                raise SystemExit(f"llama-quantize failed for {qname}")
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
