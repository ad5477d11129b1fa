//! SentencePiece BPE (`tokenizer.ggml.model` = `llama`), as llama.cpp's
//! `llm_tokenizer_spm_session` applies it.
//!
//! The text (spaces already escaped to `▁`) is cut into characters; the adjacent pair whose
//! concatenation is a token with the highest score (leftmost on ties) is merged until no pair is a
//! token. A character that is not a token is emitted as its UTF-8 bytes through the `<0xXX>`
//! byte tokens.

use super::vocab::Vocab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// No token.
pub(crate) const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
    id: u32,
}

/// A score as a totally ordered integer (`-0.0` counts as `0.0`, as with C's `<`).
fn score_key(s: f32) -> i32 {
    let s = if s == 0.0 { 0.0 } else { s };
    let b = s.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

/// Reusable buffers of [`encode`].
#[derive(Debug, Default)]
pub(crate) struct SpmScratch {
    syms: Vec<Sym>,
    /// `(score, left, right, size, id)`: highest score, then leftmost, first.
    heap: BinaryHeap<(i32, Reverse<u32>, u32, u32, u32)>,
}

fn bigram(vocab: &Vocab, text: &str, st: &mut SpmScratch, l: i32, r: i32) {
    if l < 0 || r < 0 {
        return;
    }
    let (a, b) = (st.syms[l as usize], st.syms[r as usize]);
    let s = a.start as usize;
    let Some(id) = vocab.id(&text[s..s + (a.len + b.len) as usize]) else {
        return;
    };
    let score = vocab.score(id).unwrap_or(0.0);
    st.heap.push((
        score_key(score),
        Reverse(l as u32),
        r as u32,
        a.len + b.len,
        id,
    ));
}

/// Tokenizes `text` (whitespace already escaped), appending to `out`. `byte_tokens` maps each byte
/// to its fallback token ([`NONE`] drops it).
pub(crate) fn encode(
    vocab: &Vocab,
    byte_tokens: &[u32; 256],
    text: &str,
    st: &mut SpmScratch,
    out: &mut Vec<u32>,
) {
    st.syms.clear();
    st.heap.clear();
    for (i, (start, ch)) in text.char_indices().enumerate() {
        let len = ch.len_utf8();
        st.syms.push(Sym {
            start: start as u32,
            len: len as u32,
            prev: i as i32 - 1,
            next: i as i32 + 1,
            id: vocab.id(&text[start..start + len]).unwrap_or(NONE),
        });
    }
    if let Some(last) = st.syms.last_mut() {
        last.next = -1;
    }
    for i in 1..st.syms.len() as i32 {
        bigram(vocab, text, st, i - 1, i);
    }
    while let Some((_, Reverse(l), r, size, id)) = st.heap.pop() {
        let (left, right) = (st.syms[l as usize], st.syms[r as usize]);
        // stale: one side was merged since the pair was queued
        if left.len == 0 || right.len == 0 || left.len + right.len != size {
            continue;
        }
        let s = &mut st.syms[l as usize];
        s.len = size;
        s.id = id;
        s.next = right.next;
        st.syms[r as usize].len = 0;
        if right.next >= 0 {
            st.syms[right.next as usize].prev = l as i32;
        }
        bigram(vocab, text, st, left.prev, l as i32);
        bigram(vocab, text, st, l as i32, right.next);
    }
    for s in st.syms.iter().filter(|s| s.len > 0) {
        if s.id != NONE {
            out.push(s.id);
        } else {
            let bytes = &text.as_bytes()[s.start as usize..(s.start + s.len) as usize];
            out.extend(
                bytes
                    .iter()
                    .map(|&b| byte_tokens[b as usize])
                    .filter(|&id| id != NONE),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_order_is_total_and_monotonic() {
        let xs = [-1e30f32, -2.5, -1.0, -0.0, 0.0, 1e-9, 3.0, f32::INFINITY];
        for w in xs.windows(2) {
            assert!(score_key(w[0]) <= score_key(w[1]), "{w:?}");
        }
        assert_eq!(score_key(-0.0), score_key(0.0));
    }
}
