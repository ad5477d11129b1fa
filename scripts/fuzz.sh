#!/usr/bin/env bash
# Fuzzes the GGUF reader with cargo-fuzz for SECONDS (default 600) and prints libFuzzer's run count.
# Stable toolchain: no sanitizer (the reader is safe Rust), debug assertions on.
# The corpus lives in .cache/fuzz-corpus, seeded from fuzz/seeds and the synthetic test models.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_TO_RUN="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
CORPUS=.cache/fuzz-corpus
mkdir -p "$CORPUS"
cp fuzz/seeds/gguf_reader/* "$CORPUS"/
for m in tests/data/models/*.gguf; do
    # first byte of an input is the stream chunk size
    { printf '\x40'; head -c 65536 "$m"; } > "$CORPUS/$(basename "$m").head"
done
cargo fuzz run -O -a --sanitizer none gguf_reader "$CORPUS" -- \
    -max_total_time="$SECONDS_TO_RUN" -max_len=131072 -print_final_stats=1
