// Tokenizer oracle: what llama.cpp's libllama says about one vocabulary, for
// tests/data/tokenizer/*.golden (see scripts/gen_vocab_golden.sh and
// tests/tokenizer_vocab_suite.rs for the format).
//
// usage: vocab_oracle MODEL.gguf [INPUTS]
//   INPUTS: strings separated by "\n__ggml_vocab_test__\n" (a .inp file); synthetic strings made
//   of the vocabulary's own special tokens are appended.
#include "llama.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level l, const char * t, void * u) { (void) l; (void) t; (void) u; }

static void hex(const char * s, int n) {
    if (n <= 0) { printf("-"); return; }
    for (int i = 0; i < n; i++) printf("%02x", (unsigned char) s[i]);
}

static uint64_t fnv(uint64_t h, const void * p, size_t n) {
    const unsigned char * b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}

static const struct llama_vocab * v;
static int32_t * toks;
static int32_t   ntoks_max;
static char *    buf;
static int32_t   buf_max;

static int tok(const char * s, int len, int as, int ps) {
    int n = llama_tokenize(v, s, len, toks, ntoks_max, as, ps);
    if (n < 0) { fprintf(stderr, "token buffer too small\n"); exit(1); }
    return n;
}

static void detok(int n, int rs, int us) {
    int k = llama_detokenize(v, toks, n, buf, buf_max, rs, us);
    if (k < 0) { fprintf(stderr, "text buffer too small\n"); exit(1); }
    hex(buf, k);
}

static void one(const char * s, int len) {
    printf("S "); hex(s, len); printf("\n");
    int n = tok(s, len, 1, 1);
    printf("T");
    for (int i = 0; i < n; i++) printf(" %d", toks[i]);
    printf("\nD "); detok(n, 0, 0);
    printf("\nE "); detok(n, 1, 1);
    n = tok(s, len, 0, 0);
    printf("\nR "); detok(n, 0, 0);
    printf("\n");
}

int main(int argc, char ** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf [INPUTS]\n", argv[0]); return 1; }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model * m = llama_model_load_from_file(argv[1], mp);
    if (!m) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    v = llama_model_get_vocab(m);
    const int nv = llama_vocab_n_tokens(v);

    ntoks_max = 1 << 20; toks = malloc(sizeof(int32_t) * ntoks_max);
    buf_max = 1 << 24;   buf = malloc(buf_max);

    char model[64] = "";
    llama_model_meta_val_str(m, "tokenizer.ggml.model", model, sizeof model);
    printf("M %s\n", model);
    printf("V %d %d %d %d %d %d\n", nv, llama_vocab_bos(v), llama_vocab_eos(v), llama_vocab_eot(v),
           llama_vocab_get_add_bos(v), llama_vocab_get_add_eos(v));

    // digest of every token's piece (special and not) and EOG flag
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t id = 0; id < nv; id++) {
        h = fnv(h, &id, 4);
        for (int sp = 1; sp >= 0; sp--) {
            int32_t n = llama_token_to_piece(v, id, buf, buf_max, 0, sp);
            if (n < 0) n = 0;
            h = fnv(h, &n, 4);
            h = fnv(h, buf, n);
        }
        unsigned char eog = llama_vocab_is_eog(v, id);
        h = fnv(h, &eog, 1);
    }
    printf("H %016llx\n", (unsigned long long) h);

    if (argc > 2) {
        FILE * f = fopen(argv[2], "rb");
        if (!f) { fprintf(stderr, "cannot open %s\n", argv[2]); return 1; }
        fseek(f, 0, SEEK_END); long sz = ftell(f); fseek(f, 0, SEEK_SET);
        char * all = malloc(sz + 1);
        if (fread(all, 1, sz, f) != (size_t) sz) { fprintf(stderr, "read error\n"); return 1; }
        all[sz] = 0;
        fclose(f);
        const char * sep = "\n__ggml_vocab_test__\n";
        char * p = all;
        while (p < all + sz) {
            char * q = strstr(p, sep);
            size_t len = q ? (size_t) (q - p) : strlen(p);
            one(p, (int) len);
            if (!q) break;
            p = q + strlen(sep);
        }
    }

    // synthetic strings around up to 8 special tokens spread over the vocabulary
    int32_t sp[8]; int nsp = 0;
    int32_t all_sp[1 << 16]; int nall = 0;
    for (int32_t id = 0; id < nv && nall < (1 << 16); id++) {
        int a = llama_vocab_get_attr(v, id);
        if (a & (LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_USER_DEFINED | LLAMA_TOKEN_ATTR_UNKNOWN)) all_sp[nall++] = id;
    }
    for (int i = 0; i < 8 && nall > 0; i++) sp[nsp++] = all_sp[(int64_t) i * nall / 8];
    if (nsp > 0) {
        const char * t[8];
        for (int i = 0; i < 8; i++) t[i] = llama_vocab_get_text(v, sp[i % nsp]);
        char s[4096];
        snprintf(s, sizeof s, "%sHello%s world%s\n%s", t[0], t[1], t[2], t[3]);           one(s, strlen(s));
        snprintf(s, sizeof s, " %s %s  x%s%s ", t[4], t[5], t[6], t[7]);                  one(s, strlen(s));
        snprintf(s, sizeof s, "%s%s%s\n\n%s  \t%s.", t[0], t[0], t[7], t[3], t[5]);       one(s, strlen(s));
        // a special token's text cut short is plain text
        size_t l = strlen(t[1]);
        snprintf(s, sizeof s, "a%.*sz b", (int) (l > 1 ? l - 1 : l), t[1]);              one(s, strlen(s));
    }
    return 0;
}
