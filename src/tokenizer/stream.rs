//! Streaming detokenization (spec/runtime.md §7): token bytes in, text deltas out.
//!
//! - [`Utf8Stream`] never splits a UTF-8 character: it emits the longest valid prefix of the bytes
//!   received and keeps at most 3 bytes of an incomplete sequence pending; invalid bytes become
//!   U+FFFD exactly as `String::from_utf8_lossy` would on the whole byte string, so the
//!   concatenation of the deltas equals the lossy decoding of all bytes at once.
//! - [`StopMatcher`] finds stop strings even when they span tokens: it holds back only the tail
//!   that could still begin a stop string, emits everything before a match, and never the stop
//!   string itself.
//! - [`TextStream`] chains the two, which is what a generation loop needs.

/// UTF-8-safe incremental decoding of a byte stream.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns the text that is complete now.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest = self.pending.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("valid prefix"));
                    match e.error_len() {
                        // Invalid bytes: one U+FFFD per maximal invalid subpart, as from_utf8_lossy.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Bytes still pending (at most 3).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: an incomplete trailing sequence becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// What one step of stop-string matching produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopStep {
    /// Text that can be shown now (possibly empty while a partial stop string is held back).
    Text(String),
    /// A stop string matched: `text` is what preceded it and had not been emitted yet; `stop` is
    /// the index of the matching stop string.
    Stopped { text: String, stop: usize },
}

/// Stop-string detection over a stream of text deltas.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new(stops: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let stops = stops
            .into_iter()
            .map(Into::into)
            .filter(|s: &String| !s.is_empty())
            .collect();
        StopMatcher {
            stops,
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopStep {
        self.held.push_str(text);
        // The earliest match wins; at equal positions the longest stop string.
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                self.held
                    .find(s.as_str())
                    .map(|p| (p, std::cmp::Reverse(s.len()), i))
            })
            .min();
        if let Some((p, _, stop)) = found {
            let text = self.held[..p].to_string();
            self.held.clear();
            return StopStep::Stopped { text, stop };
        }
        let keep = self.partial_suffix_len();
        let emit = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        StopStep::Text(emit)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn partial_suffix_len(&self) -> usize {
        let h = &self.held;
        let mut best = 0;
        for s in &self.stops {
            let max = (s.len() - 1).min(h.len());
            for n in (best + 1..=max).rev() {
                let start = h.len() - n;
                if h.is_char_boundary(start) && s.as_bytes().starts_with(&h.as_bytes()[start..]) {
                    best = n;
                    break;
                }
            }
        }
        best
    }

    /// Ends the stream without a match: the held-back text is released.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Token bytes → shown text, UTF-8-safe and stop-string-aware.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    utf8: Utf8Stream,
    stops: StopMatcher,
}

impl TextStream {
    pub fn new(stops: impl IntoIterator<Item = impl Into<String>>) -> Self {
        TextStream {
            utf8: Utf8Stream::new(),
            stops: StopMatcher::new(stops),
        }
    }

    /// Adds one token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> StopStep {
        let text = self.utf8.push(bytes);
        self.stops.push(&text)
    }

    /// Ends the stream: flushes pending bytes (U+FFFD for an incomplete sequence) and held text;
    /// a stop string completed by the flush is still honoured.
    pub fn finish(&mut self) -> StopStep {
        let tail = self.utf8.finish();
        match self.stops.push(&tail) {
            StopStep::Text(mut t) => {
                t.push_str(&self.stops.finish());
                StopStep::Text(t)
            }
            stopped => stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(chunks: &[&[u8]]) -> String {
        let mut s = Utf8Stream::new();
        let mut out = String::new();
        for c in chunks {
            let d = s.push(c);
            assert!(s.pending().len() <= 3);
            out.push_str(&d);
        }
        out + &s.finish()
    }

    #[test]
    fn never_splits_characters_and_matches_lossy_decoding() {
        let samples: Vec<Vec<u8>> = vec![
            "héllo 🦙 世界 👩‍👩‍👧 e\u{301}".as_bytes().to_vec(),
            b"\xff\xfeabc\xe4\xb8".to_vec(),
            b"\xf0\x9f\xa6".to_vec(),
            b"a\xc3".to_vec(),
            b"\xed\xa0\x80x".to_vec(), // an encoded surrogate: invalid
            b"\xe4\xb8\xe4\xb8\x96".to_vec(),
        ];
        for bytes in &samples {
            let whole = String::from_utf8_lossy(bytes).into_owned();
            // every split into 1..=4 byte pieces
            for step in 1..=4 {
                let chunks: Vec<&[u8]> = bytes.chunks(step).collect();
                assert_eq!(stream_all(&chunks), whole, "{bytes:x?} step {step}");
            }
            // byte by byte, no delta ever holds a partial character (it is a String)
            let chunks: Vec<&[u8]> = bytes.iter().map(std::slice::from_ref).collect();
            assert_eq!(stream_all(&chunks), whole);
        }
    }

    #[test]
    fn emoji_bytes_wait_until_complete() {
        let mut s = Utf8Stream::new();
        let e = "🦙".as_bytes();
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.push(&e[1..3]), "");
        assert_eq!(s.push(&e[3..]), "🦙");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopStep::Text(t) => out.push_str(&t),
                StopStep::Stopped { text, stop } => return (out + &text, Some(stop)),
            }
        }
        (out + &m.finish(), None)
    }

    #[test]
    fn stop_strings_spanning_tokens() {
        assert_eq!(
            run(&["</s>"], &["Hello <", "/", "s> more"]),
            ("Hello ".into(), Some(0))
        );
        assert_eq!(
            run(&["\n\nUser:"], &["a\n", "\nUs", "er: x"]),
            ("a".into(), Some(0))
        );
        // A partial match that does not complete is released.
        assert_eq!(run(&["STOP"], &["ST", "ART"]), ("START".into(), None));
        assert_eq!(run(&["STOP"], &["xST"]), ("xST".into(), None));
        // The earliest of several stop strings wins.
        assert_eq!(run(&["bc", "ab"], &["xab", "c"]), ("x".into(), Some(1)));
        // Stop at the very start, multi-byte stop strings.
        assert_eq!(run(&["🦙"], &["🦙 tail"]), ("".into(), Some(0)));
        assert_eq!(run(&["世界"], &["你好世", "界"]), ("你好".into(), Some(0)));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), None));
    }

    #[test]
    fn held_back_text_is_only_a_possible_stop_prefix() {
        let mut m = StopMatcher::new(["<|im_end|>"]);
        assert_eq!(m.push("Hi <|im"), StopStep::Text("Hi ".into()));
        assert_eq!(m.push("_start"), StopStep::Text("<|im_start".into()));
    }

    #[test]
    fn text_stream_combines_utf8_and_stops() {
        let mut t = TextStream::new(["世界"]);
        let b = "你好世界".as_bytes();
        let mut out = String::new();
        let mut stopped = false;
        for c in b.chunks(2) {
            match t.push(c) {
                StopStep::Text(s) => out.push_str(&s),
                StopStep::Stopped { text, .. } => {
                    out.push_str(&text);
                    stopped = true;
                    break;
                }
            }
        }
        assert!(stopped);
        assert_eq!(out, "你好");
        let mut t = TextStream::new(Vec::<String>::new());
        assert_eq!(t.push(b"a\xe4"), StopStep::Text("a".into()));
        assert_eq!(t.finish(), StopStep::Text("\u{fffd}".into()));
    }
}
