#!/usr/bin/env python3
"""Dump a JSON description of GGUF file(s), as a test oracle for the ternlm
GGUF parser (`ternlm inspect --json`).

Usage:
    python scripts/gguf_dump.py FILE... > out.json      (one file: one object;
                                                         several: a JSON list)
    python scripts/gguf_dump.py --out-dir DIR FILE...   (DIR/<basename>.json each,
                                                         basename without .gguf)

Output shape (one object per file):

  {"file": "<basename>", "version": 3, "tensor_count": N, "kv_count": M,
   "alignment": 32, "data_offset": D,
   "metadata": [
      {"key": K, "type": "UINT32" | ... | "STRING", "value": V},
      {"key": K, "type": "ARRAY", "elem_type": T, "len": n,
       "sha256": H, "head": [first min(n, 8) values]}, ...],
   "tensors": [
      {"name": S, "shape": [ne0, ne1, ...], "type": "Q4_1", "type_id": 3,
       "offset": O, "n_bytes": B}, ...]}

- "metadata" lists the file's key/value pairs in file order. GGUFReader's
  synthetic GGUF.version / GGUF.tensor_count / GGUF.kv_count entries are not
  in it (they are the top-level fields).
- Type names are the GGUF spec names (UINT8, INT8, UINT16, INT16, UINT32,
  INT32, FLOAT32, BOOL, STRING, UINT64, INT64, FLOAT64, ARRAY). FLOAT32 and
  FLOAT64 values are JSON numbers holding the exact stored value (the f32 is
  widened to a double); BOOL is true/false; STRING is the decoded UTF-8 text.
- "sha256" of an array is over its payload exactly as encoded in the file,
  after the element type and count: numeric elements little-endian in their
  own width, each string as u64 length + bytes, a nested array as u32 element
  type + u64 count + its payload. "head" holds the first up to 8 elements as
  JSON values (for nested arrays: {"elem_type", "len", "head"} objects).
- "alignment" is general.alignment or the default 32; "data_offset" is the
  absolute file offset of the tensor data section.
- Tensor "shape" is in ne order (ne0, the contiguous dimension, first);
  "offset" is relative to the data section of this file; "n_bytes" is the
  tensor's data size: ne0/blck*type_size*ne1*... and, for the BitNet fork's
  I2_S (type id 36), n/4 + 32 (formats.md §4.3).

The dump is produced by gguf.GGUFReader where it can read the file, and is
cross-checked against a small independent parser in this script (which must
agree exactly). Files GGUFReader cannot read (e.g. containing type 36, which
gguf's enum lacks) are dumped by the fallback parser alone, with a note on
stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

VALUE_TYPES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32",
               6: "FLOAT32", 7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64",
               12: "FLOAT64"}
SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
              10: "<Q", 11: "<q", 12: "<d"}
HEAD_LEN = 8
DEFAULT_ALIGNMENT = 32

# ggml type id -> (name, block elements, block bytes). Mirrors ggml.h; the
# BitNet fork's I2_S (36) is special-cased in tensor_nbytes().
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    36: ("I2_S", 1, 1), 39: ("MXFP4", 32, 17),
}
I2_S = 36


def tensor_nbytes(type_id: int, shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    if type_id == I2_S:
        return n // 4 + 32
    _, blck, size = GGML_TYPES[type_id]
    return n // blck * size


def type_name(type_id: int) -> str:
    return GGML_TYPES[type_id][0] if type_id in GGML_TYPES else f"UNKNOWN_{type_id}"


# --------------------------------------------------------------------------
# Independent fallback parser
# --------------------------------------------------------------------------

class Parser:
    def __init__(self, buf: bytes):
        self.b = buf
        self.o = 0

    def take(self, fmt: str) -> Any:
        v = struct.unpack_from(fmt, self.b, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.take("<Q")
        s = self.b[self.o:self.o + n]
        if len(s) != n:
            raise ValueError("truncated string")
        self.o += n
        return s.decode("utf-8")

    def scalar(self, t: int) -> Any:
        if t == 8:
            return self.string()
        v = self.take(SCALAR_FMT[t])
        if t == 7:
            return bool(v)
        if t in (6, 12):
            return float(v)
        return int(v)

    def array(self, head_len: int) -> dict[str, Any]:
        """At the element type of an array. Returns a description and skips it."""
        et = self.take("<I")
        n = self.take("<Q")
        start = self.o
        head: list[Any] = []
        for i in range(n):
            if et == 9:
                sub = self.array(head_len)
                if i < head_len:
                    head.append({"elem_type": sub["elem_type"], "len": sub["len"], "head": sub["head"]})
            elif et == 8 or i < head_len:
                v = self.scalar(et)
                if i < head_len:
                    head.append(v)
            else:  # skip fixed-width numeric elements in one step
                self.o += struct.calcsize(SCALAR_FMT[et]) * (n - i)
                break
        payload = self.b[start:self.o]
        return {"elem_type": VALUE_TYPES[et], "len": n,
                "sha256": hashlib.sha256(payload).hexdigest(), "head": head}


def dump_fallback(path: Path) -> dict[str, Any]:
    buf = path.read_bytes()
    p = Parser(buf)
    if p.take("<I") != 0x46554747:
        raise ValueError(f"{path}: not a GGUF file")
    version = p.take("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version}")
    n_tensors = p.take("<Q")
    n_kv = p.take("<Q")
    meta: list[dict[str, Any]] = []
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = p.string()
        t = p.take("<I")
        if t == 9:
            entry = {"key": key, "type": "ARRAY"}
            entry.update(p.array(HEAD_LEN))
        else:
            entry = {"key": key, "type": VALUE_TYPES[t], "value": p.scalar(t)}
            if key == "general.alignment" and t == 4:
                alignment = entry["value"]
        meta.append(entry)
    tensors: list[dict[str, Any]] = []
    for _ in range(n_tensors):
        name = p.string()
        n_dims = p.take("<I")
        shape = [p.take("<Q") for _ in range(n_dims)]
        tid = p.take("<I")
        off = p.take("<Q")
        tensors.append({"name": name, "shape": shape, "type": type_name(tid), "type_id": tid,
                        "offset": off, "n_bytes": tensor_nbytes(tid, shape)})
    data_offset = (p.o + alignment - 1) // alignment * alignment
    return {"file": path.name, "version": version, "tensor_count": n_tensors, "kv_count": n_kv,
            "alignment": alignment, "data_offset": data_offset, "metadata": meta, "tensors": tensors}


# --------------------------------------------------------------------------
# GGUFReader-based dump
# --------------------------------------------------------------------------

def _reader_value(t: int, part: np.ndarray) -> Any:
    if t == 8:
        return bytes(part).decode("utf-8")
    v = part.tolist()[0]
    if t == 7:
        return bool(v)
    if t in (6, 12):
        return float(v)
    return int(v)


def dump_reader(path: Path) -> dict[str, Any]:
    import gguf  # noqa: PLC0415

    r = gguf.GGUFReader(path)
    raw = r.data  # np.memmap over the whole file
    meta: list[dict[str, Any]] = []
    for key, f in r.fields.items():
        if key.startswith("GGUF.") and f.offset < 24:
            continue  # synthetic header pseudo-fields
        t = int(f.types[0])
        if t != 9:
            part = f.parts[f.data[0]] if t != 8 else f.parts[-1]
            meta.append({"key": key, "type": VALUE_TYPES[t], "value": _reader_value(t, part)})
            continue
        et = int(f.types[1]) if len(f.types) > 1 else int(f.parts[3][0])
        n = int(f.parts[4][0])
        # parts: [klen, kdata, vtype, elem_type, count, payload parts...]
        start = f.offset + 8 + int(f.parts[0][0]) + 4 + 4 + 8
        end = start + sum(int(x.nbytes) for x in f.parts[5:])
        entry: dict[str, Any] = {"key": key, "type": "ARRAY", "elem_type": VALUE_TYPES[et], "len": n,
                                 "sha256": hashlib.sha256(raw[start:end].tobytes()).hexdigest()}
        if et == 9:
            # GGUFReader flattens nested arrays; take the head from the raw bytes
            sub = Parser(raw[start - 12:end].tobytes())
            entry["head"] = sub.array(HEAD_LEN)["head"]
        else:
            entry["head"] = [_reader_value(et, f.parts[i]) for i in f.data[:HEAD_LEN]]
        meta.append(entry)
    tensors = []
    for t in r.tensors:
        tid = int(t.tensor_type)
        shape = [int(x) for x in t.shape]
        rel = int(t.data_offset) - int(r.data_offset)
        tensors.append({"name": t.name, "shape": shape, "type": t.tensor_type.name, "type_id": tid,
                        "offset": rel, "n_bytes": int(t.n_bytes)})
    return {"file": path.name, "version": int(r.fields["GGUF.version"].parts[0][0]),
            "tensor_count": int(r.fields["GGUF.tensor_count"].parts[0][0]),
            "kv_count": int(r.fields["GGUF.kv_count"].parts[0][0]),
            "alignment": int(r.alignment), "data_offset": int(r.data_offset),
            "metadata": meta, "tensors": tensors}


def dump(path: Path) -> dict[str, Any]:
    fb = dump_fallback(path)
    try:
        d = dump_reader(path)
    except Exception as e:  # noqa: BLE001
        print(f"note: {path.name}: GGUFReader failed ({e}); using the fallback parser",
              file=sys.stderr)
        return fb
    if json.dumps(d, sort_keys=True) != json.dumps(fb, sort_keys=True):
        raise SystemExit(f"{path}: GGUFReader and fallback parser disagree")
    return d


def to_json(d: dict[str, Any]) -> str:
    """Stable, diff-friendly JSON: one metadata entry / tensor per line."""
    def one(x: Any) -> str:
        return json.dumps(x, ensure_ascii=False)
    lines = ["{"]
    for k in ("file", "version", "tensor_count", "kv_count", "alignment", "data_offset"):
        lines.append(f" {one(k)}: {one(d[k])},")
    for k, end in (("metadata", ","), ("tensors", "")):
        items = d[k]
        lines.append(f" {one(k)}: [" + ("" if items else "]" + end))
        for i, e in enumerate(items):
            lines.append("  " + one(e) + ("," if i + 1 < len(items) else ""))
        if items:
            lines.append(" ]" + end)
    lines.append("}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="write DIR/<basename without .gguf>.json per file instead of stdout")
    args = ap.parse_args()
    dumps = [dump(f) for f in args.files]
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for f, d in zip(args.files, dumps):
            name = f.name[:-5] if f.name.endswith(".gguf") else f.name
            (args.out_dir / f"{name}.json").write_text(to_json(d) + "\n", encoding="utf-8")
    else:
        if len(dumps) == 1:
            text = to_json(dumps[0])
        else:
            text = "[\n" + ",\n".join(to_json(d) for d in dumps) + "\n]"
        sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[attr-defined]
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
