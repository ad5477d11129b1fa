#!/usr/bin/env bash
# ternlm (wgpu/Vulkan) against llama.cpp CUDA on the shape-exact synthetic benchmark models
# (issue #5), in two halves:
#
#   bash scripts/bench-gpu.sh pack DIR            here, with network: everything the GPU machine
#                                                  cannot download, into DIR (well under 50 MiB)
#   bash scripts/bench-gpu.sh run DIR OUTDIR [WORK]  on the GPU machine, no network: build
#                                                  llama.cpp CUDA, generate the models, run both,
#                                                  print one markdown table
#
# The pack (DIR):
#   llama.cpp-src.tar.xz   vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist, trimmed to what
#                          a build of llama-bench and llama-quantize needs (ggml with only the CPU
#                          and CUDA backends, src, common, vendor, tools/{llama-bench,quantize};
#                          tools/CMakeLists.txt replaced by one that adds just those two). The
#                          sdist is $LLAMA_SDIST, else .cache/sdist/, else `pip download`ed;
#                          its sha256 is checked.
#   gguf-0.19.0-py3-none-any.whl   pure Python, imported straight from the wheel (PYTHONPATH)
#   ternlm.xz              `cargo build --release --bin ternlm`, stripped ($TERNLM_BIN: use that
#                          binary instead of building). Needs glibc >= the MANIFEST's value;
#                          the Vulkan loader comes separately.
#   MANIFEST               versions and sha256s
#
# `run` keeps its state in WORK (default $BENCH_WORK, else /tmp/ternlm-bench) so that each step
# fits in one 10-minute call and the next call reuses it:
#   WORK/llama.cpp, WORK/llama.cpp-build   source and CUDA build (bin/llama-bench, llama-quantize)
#   WORK/models/*.gguf                     the four models (about 3.5 GB; 5 GB F16 on the way)
#   WORK/results/                          raw JSON and logs of every run, table.md
# OUTDIR receives a copy of WORK/results (never the models).
#
# Environment for `run`:
#   STEPS=build,models,bench   any of build, models, bench, table (bench ends with table)
#   MODELS=a,b                 file stems (default all four, see MODEL_STEMS) or families
#   JOBS=N                     build parallelism (default nproc)
#   BUILD_TIMEOUT=540          seconds; an unfinished build stops cleanly, run STEPS=build again
#   RUN_TIMEOUT=300            seconds per llama-bench / ternlm run
#   N_PROMPT=512 N_GEN=128     benchmark sizes
#   LAYERS=N                   pass --layers N to the generator (testing only)
#   LLAMA_CUDA=ON  TERNLM_BACKEND=gpu  REQUIRE_NVIDIA=1   (OFF / cpu / 0: test the script on a
#                              machine without a GPU; the table is then not a GPU comparison)
# ternlm needs the Vulkan loader and the NVIDIA ICD: when VK_DRIVER_FILES / VK_ICD_FILENAMES are
# unset and no nvidia_icd.json is in the standard places but
# /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json exists, VK_DRIVER_FILES is set to it. The
# adapter ternlm reports must be an NVIDIA GPU, otherwise the run stops.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SDIST_PKG="llama-cpp-python==0.3.36"
SDIST_FILE="llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
GGUF_VERSION="0.19.0"
GGUF_WHEEL="gguf-$GGUF_VERSION-py3-none-any.whl"
MODEL_STEMS=(smollm2-135m-q4_1 llama-3.2-1b-q4_k_m bitnet-2b-4t-tq2_0 bitnet-2b-4t-tq1_0)
PACK_LIMIT_MIB=50
LLAMA_LABEL="llama-cpp-python-0.3.36"   # the build_commit llama-bench reports (no git in the pack)

log() { echo "bench-gpu: $*" >&2; }
die() { echo "bench-gpu: ERROR: $*" >&2; exit 1; }
usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
sha256() { sha256sum "$1" | cut -d' ' -f1; }
has() { [[ ",$1," == *",$2,"* ]]; }
json_field() {  # FILE KEY: KEY of the JSON object on FILE's last line ("" if absent)
    python3 -c 'import json, sys
print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]).get(sys.argv[2], ""))' "$1" "$2"
}
VK_HINT="Is the Vulkan loader (libvulkan.so.1) installed and the NVIDIA ICD visible? Try
VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json"
exit_why() { if [ "$1" = 124 ]; then echo "124: over RUN_TIMEOUT=${RUN_TIMEOUT}s"; else echo "$1"; fi; }

# ----------------------------------------------------------------------------------------------
# pack
# ----------------------------------------------------------------------------------------------
pack() {
    local dir="$1"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local py="${PYTHON:-python3}"
    command -v "$py" >/dev/null || die "python3 not found"
    command -v xz >/dev/null || die "xz not found"
    local tmp
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/bench-pack.XXXXXX")"
    PACK_TMP="$tmp"
    trap 'rm -rf "$PACK_TMP"' EXIT

    # 1. the llama-cpp-python sdist
    local sdist="${LLAMA_SDIST:-}"
    if [ -z "$sdist" ] && [ -f "$REPO_ROOT/.cache/sdist/$SDIST_FILE" ]; then
        sdist="$REPO_ROOT/.cache/sdist/$SDIST_FILE"
    fi
    if [ -z "$sdist" ]; then
        log "pip download $SDIST_PKG (sdist, about 77 MB)"
        "$py" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$tmp/sdist" "$SDIST_PKG"
        sdist="$tmp/sdist/$SDIST_FILE"
    fi
    [ -f "$sdist" ] || die "sdist not found: $sdist"
    [ "$(sha256 "$sdist")" = "$SDIST_SHA256" ] || die "$sdist: sha256 is not $SDIST_SHA256"

    # 2. trimmed llama.cpp source
    log "trimming llama.cpp from $(basename "$sdist")"
    "$py" - "$sdist" "$tmp/src" <<'PY'
import os, sys, tarfile
sdist, out = sys.argv[1], sys.argv[2]
TOP = {"CMakeLists.txt", "LICENSE", "cmake", "include", "src", "common", "vendor", "licenses",
       "ggml"}
TOOLS = {"llama-bench", "quantize"}
GGML_BACKENDS = {"ggml-cpu", "ggml-cuda"}
n = size = 0
with tarfile.open(sdist) as t:
    for m in t:
        parts = m.name.split("/")
        if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"] or not (m.isfile() or m.isdir()):
            continue
        rel = parts[3:]
        keep = rel[0] in TOP or (rel[0] == "tools" and len(rel) > 2 and rel[1] in TOOLS)
        # ggml/src/ggml-<backend>/...: only the CPU and CUDA backends
        if rel[:2] == ["ggml", "src"] and len(rel) > 3 and rel[2].startswith("ggml-") \
                and rel[2] not in GGML_BACKENDS:
            keep = False
        if not keep or not m.isfile():
            continue
        dest = os.path.join(out, "llama.cpp", *rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with t.extractfile(m) as src, open(dest, "wb") as f:
            f.write(src.read())
        os.chmod(dest, 0o755 if m.mode & 0o111 else 0o644)
        n += 1
        size += m.size
print(f"bench-gpu: kept {n} files, {size / 2**20:.1f} MiB", file=sys.stderr)
PY
    cat > "$tmp/src/llama.cpp/tools/CMakeLists.txt" <<'CMAKE'
# Trimmed by ternlm's scripts/bench-gpu.sh: only the tools the GPU benchmark needs.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
add_subdirectory(quantize)
CMAKE
    rm -f "$dir/llama.cpp-src.tar.xz"
    XZ_OPT="-9 -T0" tar -C "$tmp/src" --owner=0 --group=0 --sort=name --mtime=@0 -cJf "$dir/llama.cpp-src.tar.xz" llama.cpp

    # 3. the gguf wheel (pure Python)
    if [ -f "$REPO_ROOT/.cache/wheels/$GGUF_WHEEL" ]; then
        cp "$REPO_ROOT/.cache/wheels/$GGUF_WHEEL" "$dir/"
    elif [ ! -f "$dir/$GGUF_WHEEL" ]; then
        log "pip download gguf==$GGUF_VERSION"
        "$py" -m pip download --quiet --no-deps --only-binary :all: -d "$dir" "gguf==$GGUF_VERSION"
    fi
    [ -f "$dir/$GGUF_WHEEL" ] || die "$GGUF_WHEEL was not downloaded"

    # 4. ternlm, stripped
    local bin="${TERNLM_BIN:-}"
    if [ -z "$bin" ]; then
        log "cargo build --release --bin ternlm"
        (cd "$REPO_ROOT" && cargo build --release --quiet --bin ternlm)
        bin="$REPO_ROOT/target/release/ternlm"
    fi
    [ -x "$bin" ] || die "ternlm binary not found: $bin"
    strip -o "$tmp/ternlm" "$bin"
    local glibc
    glibc="$(objdump -T "$tmp/ternlm" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)"
    if ldd "$tmp/ternlm" | grep -q 'not found'; then die "ternlm links a library this machine lacks"; fi
    local libs
    libs="$(ldd "$tmp/ternlm" | awk '{print $1}' | grep -v -e linux-vdso -e ld-linux | tr '\n' ' ')"
    xz -9 -T0 -c "$tmp/ternlm" > "$dir/ternlm.xz"

    # 5. manifest
    {
        echo "ternlm bench pack, made $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "ternlm git: $(cd "$REPO_ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
        echo "ternlm needs: $glibc, $libs(dynamically: the Vulkan loader)"
        echo "ternlm sha256 (stripped): $(sha256 "$tmp/ternlm")"
        echo "llama.cpp: vendor/llama.cpp of $SDIST_FILE ($SDIST_SHA256)"
        for f in llama.cpp-src.tar.xz "$GGUF_WHEEL" ternlm.xz; do
            echo "$(sha256 "$dir/$f")  $f"
        done
    } > "$dir/MANIFEST"

    local total=0 s f
    for f in llama.cpp-src.tar.xz "$GGUF_WHEEL" ternlm.xz MANIFEST; do
        s=$(stat -c %s "$dir/$f")
        total=$((total + s))
        printf '%10d  %s\n' "$s" "$dir/$f"
    done
    printf '%10d  total (%s MiB)\n' "$total" "$(awk -v t="$total" 'BEGIN {printf "%.1f", t / 1048576}')"
    [ "$total" -lt $((PACK_LIMIT_MIB * 1048576)) ] || die "pack is over $PACK_LIMIT_MIB MiB"
}

# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------
step_build() {
    local src="$WORK/llama.cpp" build="$WORK/llama.cpp-build"
    local want stamp
    want="$(sha256 "$PACK/llama.cpp-src.tar.xz")"
    stamp="$WORK/.llama-src-$want"
    if [ -x "$build/bin/llama-bench" ] && [ -x "$build/bin/llama-quantize" ] && [ -f "$stamp" ] \
        && [ -f "$build/.done" ]; then
        log "build: llama.cpp already built in $build, skipped"
        return
    fi
    command -v cmake >/dev/null || die "cmake not found"
    if [ "$LLAMA_CUDA" = ON ] && ! command -v nvcc >/dev/null; then
        [ -x /usr/local/cuda/bin/nvcc ] || die "nvcc not found (PATH, /usr/local/cuda/bin)"
        export PATH="/usr/local/cuda/bin:$PATH"
    fi
    if [ ! -f "$stamp" ]; then
        log "build: extracting llama.cpp into $src"
        rm -rf "$src" "$build" "$WORK"/.llama-src-*
        tar -C "$WORK" -xJf "$PACK/llama.cpp-src.tar.xz"
        touch "$stamp"
    fi
    local gen=()
    if command -v ninja >/dev/null; then gen=(-G Ninja); fi
    if [ ! -f "$build/CMakeCache.txt" ]; then
        log "build: configuring (GGML_CUDA=$LLAMA_CUDA)"
        cmake -S "$src" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
            -DGGML_CUDA="$LLAMA_CUDA" -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF \
            -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
            -DLLAMA_BUILD_COMMIT="$LLAMA_LABEL" -DLLAMA_BUILD_NUMBER=0 \
            > "$WORK/cmake-configure.log" 2>&1 \
            || {
                tail -40 "$WORK/cmake-configure.log" >&2
                rm -f "$build/CMakeCache.txt"
                die "cmake configure failed ($WORK/cmake-configure.log)"
            }
    fi
    log "build: llama-bench and llama-quantize with $JOBS jobs (limit ${BUILD_TIMEOUT}s)"
    local t0=$SECONDS rc=0
    timeout "$BUILD_TIMEOUT" cmake --build "$build" --target llama-bench llama-quantize -j "$JOBS" \
        > "$WORK/cmake-build.log" 2>&1 || rc=$?
    if [ "$rc" = 124 ]; then
        tail -3 "$WORK/cmake-build.log" >&2
        die "build not finished after ${BUILD_TIMEOUT}s; run STEPS=build again (it resumes)"
    elif [ "$rc" != 0 ]; then
        grep -m 20 -B 2 -A 10 -E 'error|Error' "$WORK/cmake-build.log" >&2 || tail -40 "$WORK/cmake-build.log" >&2
        die "llama.cpp build failed ($WORK/cmake-build.log)"
    fi
    if [ "$LLAMA_CUDA" = ON ]; then
        ls "$build"/bin/libggml-cuda* >/dev/null 2>&1 || die "the build has no CUDA backend (libggml-cuda)"
    fi
    touch "$build/.done"
    log "build: done in $((SECONDS - t0))s"
}

step_models() {
    local py="${PYTHON:-python3}"
    command -v "$py" >/dev/null || die "python3 not found"
    "$py" -c "import numpy" 2>/dev/null || die "$py has no numpy"
    [ -x "$WORK/llama.cpp-build/bin/llama-quantize" ] || die "llama-quantize is not built: run STEPS=build first"
    local free_gb
    free_gb=$(df -Pk "$WORK" | awk 'NR==2 {print int($4 / 1048576)}')
    [ "$free_gb" -ge 12 ] || log "warning: only ${free_gb} GB free in $WORK (about 9 GB needed at peak)"
    local extra=()
    if [ -n "${LAYERS:-}" ]; then extra=(--layers "$LAYERS"); fi
    log "models: generating into $WORK/models ($MODELS)"
    PYTHONPATH="$PACK/$GGUF_WHEEL${PYTHONPATH:+:$PYTHONPATH}" "$py" \
        "$REPO_ROOT/scripts/make_bench_models.py" "$WORK/models" \
        --llama-quantize "$WORK/llama.cpp-build/bin/llama-quantize" --only "$MODELS" "${extra[@]}"
}

vulkan_env() {
    [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] || return 0
    local d
    for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
        if ls "$d"/nvidia*.json >/dev/null 2>&1; then return 0; fi
    done
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$icd" ]; then
        log "bench: no NVIDIA Vulkan ICD in the standard places; VK_DRIVER_FILES=$icd"
        export VK_DRIVER_FILES="$icd"
    fi
}

step_bench() {
    local lb="$WORK/llama.cpp-build/bin/llama-bench" tl="$WORK/bin/ternlm" res="$WORK/results"
    [ -x "$lb" ] || die "llama-bench is not built: run STEPS=build first"
    mkdir -p "$WORK/bin" "$res"
    xz -dc "$PACK/ternlm.xz" > "$tl.tmp" && chmod +x "$tl.tmp" && mv "$tl.tmp" "$tl"
    "$tl" --version >/dev/null 2>&1 || "$tl" --help >/dev/null 2>&1 \
        || die "the packed ternlm does not start here: $("$tl" --help 2>&1 | head -3)"
    vulkan_env
    local stem f rc adapter
    for stem in $(stems); do
        f="$WORK/models/$stem.gguf"
        [ -f "$f" ] || die "$f is missing: run STEPS=models (MODELS=$stem)"

        # ternlm first: a missing or wrong Vulkan adapter fails before llama.cpp's longer runs.
        log "bench: $stem: ternlm bench --backend $TERNLM_BACKEND -p $N_PROMPT -n $N_GEN"
        rc=0
        timeout "$RUN_TIMEOUT" "$tl" bench -m "$f" --backend "$TERNLM_BACKEND" \
            -p "$N_PROMPT" -n "$N_GEN" > "$res/$stem.ternlm.json" 2> "$res/$stem.ternlm.log" || rc=$?
        if [ "$rc" != 0 ]; then
            tail -30 "$res/$stem.ternlm.log" >&2
            if grep -q gpu_no_adapter "$res/$stem.ternlm.log"; then log "$VK_HINT"; fi
            die "ternlm bench failed on $stem (exit $(exit_why "$rc"))"
        fi
        if [ "$REQUIRE_NVIDIA" = 1 ]; then
            adapter="$(json_field "$res/$stem.ternlm.json" adapter)"
            grep -qi nvidia <<< "$adapter" \
                || die "ternlm ran on adapter '${adapter:-none}', not an NVIDIA GPU. $VK_HINT"
        fi
        # The same with checked shaders (GpuOptions::checked_shaders, the browser's way; natively
        # they are trusted by default): its own columns; a failure there is logged, not fatal.
        log "bench: $stem: TERNLM_GPU_CHECKED=1 ternlm bench"
        rc=0
        TERNLM_GPU_CHECKED=1 timeout "$RUN_TIMEOUT" "$tl" bench -m "$f" --backend "$TERNLM_BACKEND" \
            -p "$N_PROMPT" -n "$N_GEN" > "$res/$stem.ternlm-checked.json" \
            2> "$res/$stem.ternlm-checked.log" || rc=$?
        if [ "$rc" != 0 ]; then
            tail -10 "$res/$stem.ternlm-checked.log" >&2
            log "bench: $stem: the checked run failed (exit $(exit_why "$rc"))"
        fi

        log "bench: $stem: llama-bench -ngl $NGL -p $N_PROMPT -n $N_GEN"
        rc=0
        timeout "$RUN_TIMEOUT" "$lb" -m "$f" -ngl "$NGL" -p "$N_PROMPT" -n "$N_GEN" -o json \
            > "$res/$stem.llama-bench.json" 2> "$res/$stem.llama-bench.log" || rc=$?
        if [ "$rc" != 0 ]; then
            tail -30 "$res/$stem.llama-bench.log" >&2
            die "llama-bench failed on $stem (exit $(exit_why "$rc"))"
        fi
        if [ "$LLAMA_CUDA" = ON ] && ! grep -q '"backends": *"[^"]*CUDA' "$res/$stem.llama-bench.json"; then
            die "llama-bench did not run on CUDA (see $res/$stem.llama-bench.log)"
        fi
        # Where llama.cpp put the weights (its CUDA backend has no TQ1_0/TQ2_0 matmul, so those
        # stay on the CPU): one short verbose run, its "model buffer size" lines.
        timeout "$RUN_TIMEOUT" "$lb" -m "$f" -ngl "$NGL" -p 0 -n 1 -r 1 -v -o json \
            > /dev/null 2> "$res/$stem.llama-bench-placement.log" || true
        grep -E 'model buffer size|offloaded' "$res/$stem.llama-bench-placement.log" >&2 || true
    done
}

step_table() {
    local res="$WORK/results"
    mkdir -p "$res"
    python3 - "$res" "$WORK/models" "$PACK/MANIFEST" $(stems) <<'PY' | tee "$res/table.md"
import json, os, re, sys
res, models, manifest, stems = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def load(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return json.loads(text) if text.startswith("[") else json.loads(text.splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None

def placement(path):
    """llama.cpp's weight MiB by buffer ("CUDA0 1234 + CPU_Mapped 56"), from load_tensors."""
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return "?"
    bufs = []
    for l in lines:
        m = re.search(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", l)
        if m:
            bufs.append(f"{m.group(1)} {float(m.group(2)):.0f}")
    return " + ".join(bufs) or "?"

def fmt(x, nd=1):
    return "—" if x is None else f"{x:,.{nd}f}"

def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}×"

rows, gpus, adapters, commits = [], set(), set(), set()
for stem in stems:
    lb, tl = load(f"{res}/{stem}.llama-bench.json"), load(f"{res}/{stem}.ternlm.json")
    if lb is None and tl is None:
        continue
    pp = tg = None
    for r in lb or []:
        gpus.add(r.get("gpu_info") or r.get("backends", "?"))
        commits.add(r.get("build_commit", "?"))
        if r.get("n_prompt") and not r.get("n_gen"):
            pp = r["avg_ts"]
        elif r.get("n_gen") and not r.get("n_prompt"):
            tg = r["avg_ts"]
    tl = tl or {}
    if tl.get("adapter"):
        adapters.add(tl["adapter"])
    family, quant = stem.rsplit("-", 1)
    path = f"{models}/{stem}.gguf"
    size = os.path.getsize(path) / 2**20 if os.path.exists(path) else None
    prefill, decode = tl.get("prefill_tok_s"), tl.get("decode_tok_s")
    ck = load(f"{res}/{stem}.ternlm-checked.json") or {}
    c_prefill, c_decode = ck.get("prefill_tok_s"), ck.get("decode_tok_s")
    rows.append([family, quant.upper(), fmt(size), fmt(pp), fmt(tg), fmt(prefill), fmt(decode),
                 ratio(prefill, pp), ratio(decode, tg), fmt(c_prefill), fmt(c_decode),
                 ratio(c_decode, tg), fmt(tl.get("dispatches_per_token"), 0),
                 fmt(tl.get("effective_gb_s")), placement(f"{res}/{stem}.llama-bench-placement.log")])

n_p = n_g = "?"
for stem in stems:
    tl = load(f"{res}/{stem}.ternlm.json")
    if tl:
        n_p, n_g = tl.get("n_prompt", "?"), tl.get("n_gen", "?")
        break
head = ["model", "quant", "MiB", f"llama.cpp pp{n_p} t/s", f"llama.cpp tg{n_g} t/s",
        "ternlm prefill t/s", "ternlm decode t/s", "prefill ternlm/llama", "decode ternlm/llama",
        "checked prefill t/s", "checked decode t/s", "checked decode ternlm/llama",
        "ternlm dispatches/token", "ternlm eff. GB/s", "llama.cpp weights MiB"]
try:
    ternlm_rev = next(l.split(": ", 1)[1].strip() for l in open(manifest) if l.startswith("ternlm git:"))
except (OSError, StopIteration):
    ternlm_rev = "?"
print(f"llama.cpp {', '.join(sorted(commits)) or '?'} (-ngl 99) on {', '.join(sorted(gpus)) or '?'}; "
      f"ternlm {ternlm_rev} on {', '.join(sorted(adapters)) or '?'}. "
      "Synthetic models with the real shapes (scripts/make_bench_models.py). "
      "Ratios are ternlm / llama.cpp; \"checked\" is ternlm with TERNLM_GPU_CHECKED=1 (the shaders compiled with the runtime checks the browser adds); "
      "the last column is where llama.cpp put the weights "
      "(its CUDA backend has no TQ1_0/TQ2_0 matmul: those run on the CPU).")
print()
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if not rows:
    print("(no results yet: run STEPS=bench)")
PY
    if [ -n "${OUTDIR:-}" ]; then
        mkdir -p "$OUTDIR"
        cp "$res"/* "$OUTDIR"/
        log "results copied to $OUTDIR"
    fi
}

stems() {  # MODELS (file stems or families) -> file stems, in table order
    local s m
    for s in "${MODEL_STEMS[@]}"; do
        for m in ${MODELS//,/ }; do
            if [ "$m" = "$s" ] || [ "$m" = "${s%-*}" ]; then echo "$s"; break; fi
        done
    done
}

run() {
    [ -d "$1" ] || die "pack directory $1 not found: make it with 'bash scripts/bench-gpu.sh pack DIR'"
    PACK="$(cd "$1" && pwd)"
    OUTDIR="$2"
    WORK="${3:-${BENCH_WORK:-/tmp/ternlm-bench}}"
    mkdir -p "$WORK" "$OUTDIR"
    WORK="$(cd "$WORK" && pwd)"
    OUTDIR="$(cd "$OUTDIR" && pwd)"
    local f
    for f in llama.cpp-src.tar.xz "$GGUF_WHEEL" ternlm.xz; do
        [ -f "$PACK/$f" ] || die "$PACK/$f missing: make the pack with 'bash scripts/bench-gpu.sh pack DIR'"
    done
    STEPS="${STEPS:-build,models,bench}"
    MODELS="${MODELS:-$(IFS=,; echo "${MODEL_STEMS[*]}")}"
    JOBS="${JOBS:-$(nproc)}"
    BUILD_TIMEOUT="${BUILD_TIMEOUT:-540}"
    RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
    N_PROMPT="${N_PROMPT:-512}" N_GEN="${N_GEN:-128}" NGL="${NGL:-99}"
    LLAMA_CUDA="${LLAMA_CUDA:-ON}" TERNLM_BACKEND="${TERNLM_BACKEND:-gpu}"
    REQUIRE_NVIDIA="${REQUIRE_NVIDIA:-1}"
    [ -n "$(stems)" ] || die "MODELS='$MODELS' names none of: ${MODEL_STEMS[*]}"
    local s
    for s in ${STEPS//,/ }; do
        case "$s" in build | models | bench | table) ;; *) die "unknown step '$s' (build, models, bench, table)" ;; esac
    done
    log "pack $PACK, work $WORK, steps $STEPS, models $(stems | tr '\n' ' ')"
    if has "$STEPS" build; then step_build; fi
    if has "$STEPS" models; then step_models; fi
    if has "$STEPS" bench; then step_bench; fi
    if has "$STEPS" bench || has "$STEPS" table; then step_table; fi
}

case "${1:-}" in
    pack) [ $# -eq 2 ] || usage; pack "$2" ;;
    run) [ $# -ge 3 ] && [ $# -le 4 ] || usage; run "$2" "$3" "${4:-}" ;;
    *) usage ;;
esac
