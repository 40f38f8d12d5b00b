//! Text → token ids, exactly as sentence-transformers prepares them: prefix, Python's
//! `str.strip()`, optional lower-casing, the model's tokenizer.json, then truncation to
//! the model's maximum with `<s>` … `</s>` around the content.
//!
//! Long inputs are not tokenized whole. Truncation keeps only the first few hundred
//! tokens, so we tokenize a prefix of the text that ends at a word boundary and grow it
//! only while it holds too few tokens. The XLM-R pipeline (a per-grapheme character map,
//! collapse of space runs, split at spaces, unigram per word) is local to words, so the
//! tokens of a prefix cut at a plain space are the first tokens of the whole text. This
//! keeps memory bounded for megabyte inputs; tests check it against the reference on
//! texts far over the limit.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, ErrorKind, Result};

/// Which E5 prompt an input gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Query,
    Passage,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Query => "query: ",
            Kind::Passage => "passage: ",
        }
    }
}

/// First prefix length tried for long inputs at 512 tokens. 510 tokens of Korean or
/// English text take 1.5–3 KiB, so one step is nearly always enough. Models with a
/// longer maximum get proportionally more (see `TextTokenizer::windows`).
const FIRST_WINDOW: usize = 16 * 1024;
/// Texts are counted in pieces of about this many bytes.
const COUNT_SEGMENT: usize = 64 * 1024;
/// The longest prefix ever tokenized for an embedding at 512 tokens. 510 tokens never
/// need more: no XLM-R piece is longer than a few dozen bytes. A text with no plain
/// word boundary in its first 64 KiB (one huge run without spaces) is cut at a
/// character boundary here. Models with a longer maximum get the same bytes per token
/// (1 MiB for 8,192 tokens).
const HARD_WINDOW: usize = 64 * 1024;
/// The windows' size per token of the model's maximum: 64 KiB / 512 and 16 KiB / 512.
const HARD_BYTES_PER_TOKEN: usize = HARD_WINDOW / 512;
const FIRST_BYTES_PER_TOKEN: usize = FIRST_WINDOW / 512;

pub struct TextTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    max_tokens: usize,
    lower_case: bool,
    /// Whether the tokenizer is shaped like XLM-R's, for which prefix tokenization is
    /// exact. Any other tokenizer gets whole texts.
    local: bool,
}

/// Python's `str.isspace()`: Unicode White_Space plus the four information separators
/// U+001C–U+001F, which Python counts as whitespace and Rust does not.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A character that never joins a neighbouring space into one grapheme or one
/// normalisation unit: ASCII letters and digits, Hangul syllables, CJK ideographs.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || ('\u{ac00}'..='\u{d7a3}').contains(&c) || ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// The largest byte index `i <= limit` (and `> limit / 2`) where `s[i]` is a plain space
/// between two plain characters, so `s[..i]` ends at a word boundary.
fn word_cut(s: &str, limit: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = limit.min(bytes.len().saturating_sub(1));
    let floor = limit / 2;
    while i > floor {
        if bytes[i] == b' ' {
            let before = s[..i].chars().next_back();
            let after = s[i + 1..].chars().next();
            if let (Some(b), Some(a)) = (before, after) {
                if is_plain(b) && is_plain(a) {
                    return Some(i);
                }
            }
        }
        i -= 1;
    }
    None
}

/// Where to cut when no plain word boundary exists: the last whitespace in the second
/// half of `s[..limit]`, else the last character boundary.
fn any_cut(s: &str, limit: usize) -> usize {
    let mut end = limit.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end]
        .char_indices()
        .rev()
        .take_while(|(i, _)| *i > limit / 2)
        .find(|(_, c)| c.is_whitespace())
        .map_or(end, |(i, _)| i)
}

/// Where the next piece of `rest` ends when a long text is tokenized piece by piece:
/// all of it when it is at most `segment` bytes, else a plain word boundary anywhere
/// between half and four times the segment, which keeps the tokens exact; only a run
/// with none is cut anywhere.
pub(crate) fn piece_end(rest: &str, segment: usize) -> usize {
    if rest.len() <= segment {
        return rest.len();
    }
    [segment, 2 * segment, 4 * segment]
        .iter()
        .find_map(|&limit| word_cut(rest, limit))
        .unwrap_or_else(|| any_cut(rest, segment))
}

/// True when tokenization is local to space-separated words, so that a prefix cut at
/// a plain space yields the first tokens of the whole text: a normalizer of
/// Precompiled maps and space-run collapsing, a splitting Metaspace pre-tokenizer, a
/// Unigram model, and no special token containing whitespace (XLM-R's tokenizer.json).
fn tokenization_is_local(tok: &Tokenizer) -> bool {
    use tokenizers::models::ModelWrapper;
    use tokenizers::normalizers::NormalizerWrapper as N;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    let plain_normalizer = |n: &N| match n {
        N::Precompiled(_) => true,
        N::Replace(r) => {
            serde_json::to_value(r).map(|v| v["pattern"]["Regex"] == " {2,}" && v["content"] == " ").unwrap_or(false)
        }
        _ => false,
    };
    let normalizer = match tok.get_normalizer() {
        None => true,
        Some(N::Sequence(seq)) => seq.as_ref().iter().all(plain_normalizer),
        Some(n) => plain_normalizer(n),
    };
    let pre = matches!(tok.get_pre_tokenizer(), Some(PreTokenizerWrapper::Metaspace(m)) if m.get_split());
    let model = matches!(tok.get_model(), ModelWrapper::Unigram(_));
    let added = tok.get_added_tokens_decoder().values().all(|t| !t.content.chars().any(char::is_whitespace));
    normalizer && pre && model && added
}

impl TextTokenizer {
    /// Reads the tokenizer.json at `path` (with the checks of [`crate::files`], inside
    /// the directory that holds it).
    pub fn from_file(path: &Path, max_tokens: usize, lower_case: bool) -> Result<TextTokenizer> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let bytes = crate::files::read(dir, path, crate::files::MAX_TOKENIZER)?;
        TextTokenizer::from_bytes(&bytes, path, max_tokens, lower_case)
    }

    /// The tokenizer whose tokenizer.json is `bytes` (`path` names it in errors): for one
    /// built into a program, as the text search parser's is.
    pub fn from_bytes(bytes: &[u8], path: &Path, max_tokens: usize, lower_case: bool) -> Result<TextTokenizer> {
        let mut inner = Tokenizer::from_bytes(bytes).map_err(|e| {
            Error::new(ErrorKind::InvalidConfig, format!("invalid tokenizer file \"{}\": {e}", path.display()))
        })?;
        inner.with_truncation(None).map_err(|e| Error::config(path, e))?;
        inner.with_padding(None);

        // Learn the special tokens the post-processor wraps a single text in.
        let probe = "a";
        let with = inner.encode_fast(probe, true).map_err(|e| Error::config(path, e))?;
        let without = inner.encode_fast(probe, false).map_err(|e| Error::config(path, e))?;
        let (w, wo) = (with.get_ids(), without.get_ids());
        if w.len() != wo.len() + 2 || w[1..w.len() - 1] != *wo {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("unsupported post-processor in \"{}\"", path.display()),
            )
            .with_detail("koe5 expects one special token before and one after each text, as XLM-R's <s> and </s>."));
        }
        let local = tokenization_is_local(&inner);
        Ok(TextTokenizer { bos: w[0], eos: w[w.len() - 1], inner, max_tokens, lower_case, local })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Whether long texts are tokenized exactly in bounded windows (XLM-R's tokenizer,
    /// whose tokenization is local to words). Any other tokenizer is bounded the same
    /// way, but its tokens near a window's edge may differ from whole-text tokenization.
    pub fn exact_windows(&self) -> bool {
        self.local
    }

    /// The largest token id the tokenizer can produce: its model's ids are
    /// `0..vocab_size`, and added tokens may lie beyond (read without copying the
    /// 250,002-piece vocabulary).
    pub fn max_id(&self) -> u32 {
        use tokenizers::Model;
        let model = (self.inner.get_model().get_vocab_size() as u32).saturating_sub(1);
        let added = self.inner.get_added_tokens_decoder().keys().copied().max().unwrap_or(0);
        model.max(added).max(self.bos).max(self.eos)
    }

    /// Fails unless every id this tokenizer gives has a row in a vocabulary of
    /// `vocab_size` (`path` names the tokenizer in the error).
    pub(crate) fn check_vocabulary(&self, vocab_size: usize, path: &Path) -> Result<()> {
        let max_id = self.max_id();
        if max_id as usize >= vocab_size {
            return Err(Error::config(
                path,
                format!("its token ids reach {max_id}, but the model's vocabulary has {vocab_size} rows"),
            )
            .with_hint("tokenizer.json and config.json belong to different models."));
        }
        Ok(())
    }

    /// The most bytes of a long text tokenized for one embedding (a text with no
    /// plain word boundary that far is cut there; see `windows`).
    pub fn hard_window(&self) -> usize {
        self.windows().1
    }

    /// The string the reference tokenizes for `text`.
    fn prepare(&self, kind: Kind, text: &str) -> String {
        let mut s = String::with_capacity(kind.prefix().len() + text.len().min(FIRST_WINDOW * 4));
        s.push_str(kind.prefix());
        s.push_str(text);
        let stripped = s.trim_matches(is_py_space);
        if self.lower_case {
            stripped.to_lowercase()
        } else if stripped.len() == s.len() {
            s
        } else {
            stripped.to_owned()
        }
    }

    fn content(&self, s: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(s, false)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("could not tokenize text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The byte range in `s` of each content token of `s` (no special tokens). A token
    /// from a character the normalizer expands into several shares that character's range.
    pub(crate) fn content_offsets(&self, s: &str) -> Result<Vec<(usize, usize)>> {
        let enc = self
            .inner
            .encode(s, false)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("could not tokenize text: {e}")))?;
        Ok(enc.get_offsets().to_vec())
    }

    /// How many bytes of text are tokenized at once when a long text is counted or
    /// chunked (exact at plain word boundaries for XLM-R-shaped tokenizers; for others,
    /// a count may be off by a token or two per segment, but memory stays bounded).
    pub(crate) fn segment(&self) -> usize {
        COUNT_SEGMENT
    }

    /// The first and the largest prefix tokenized for an embedding: 16 KiB and 64 KiB
    /// at 512 tokens, proportionally more for models that take more tokens.
    fn windows(&self) -> (usize, usize) {
        let tokens = self.max_tokens.max(512);
        (tokens.saturating_mul(FIRST_BYTES_PER_TOKEN), tokens.saturating_mul(HARD_BYTES_PER_TOKEN))
    }

    /// Token ids the model sees for `text`: `<s>`, at most `max_tokens - 2` content
    /// tokens, `</s>`.
    pub fn encode(&self, kind: Kind, text: &str) -> Result<Vec<u32>> {
        self.encode_with(kind, text, &mut || {})
    }

    /// [`encode`](Self::encode), calling `interrupt` between the pieces of a long text.
    pub fn encode_with(&self, kind: Kind, text: &str, interrupt: &mut dyn FnMut()) -> Result<Vec<u32>> {
        self.encode_windowed(kind, text, self.windows().0, interrupt)
    }

    fn encode_windowed(
        &self,
        kind: Kind,
        text: &str,
        first_window: usize,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<u32>> {
        let content =
            self.content_prefix(text, &|t| self.prepare(kind, t), self.max_tokens - 2, first_window, interrupt)?;
        Ok(self.wrap(content))
    }

    /// The content ids of `prepare(text)` (no special tokens), or of a prefix of the
    /// text that holds at least `budget` of them, exactly its first ones: the
    /// tokenizer never sees more of a long text than it needs (see `windows`).
    fn content_prefix(
        &self,
        text: &str,
        prepare: &dyn Fn(&str) -> String,
        budget: usize,
        first_window: usize,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<u32>> {
        let hard_window = self.windows().1;
        let mut window = first_window;
        let whole = || self.content(&prepare(text));
        let content = loop {
            if window >= text.len() {
                break whole()?;
            }
            if !self.local {
                // Not XLM-R's tokenizer: its tokens are not known to be local to words,
                // so only the hard window is tokenized (exact unless a text holds fewer
                // than max_tokens tokens in that many bytes).
                let hard = hard_window.max(first_window);
                if text.len() <= hard {
                    break whole()?;
                }
                break self.content(&prepare(&text[..any_cut(text, hard)]))?;
            }
            // A prefix that ends at a plain word keeps its end unstripped, as the
            // whole text would. Past the hard window, any boundary will do.
            let last = window >= hard_window;
            let cut = word_cut(text, window).or_else(|| last.then(|| any_cut(text, window)));
            if let Some(cut) = cut {
                let ids = self.content(&prepare(&text[..cut]))?;
                if ids.len() >= budget {
                    break ids;
                }
                // A hard window that holds too few tokens is mostly whitespace or
                // invisible characters. Go on piece by piece, as counting does (bounded
                // memory, `interrupt` between pieces), each piece trimmed of whitespace
                // at its cuts, until the budget is reached or the text ends.
                if last {
                    let mut ids = ids;
                    let mut rest = &text[cut..];
                    while ids.len() < budget && !rest.trim_matches(is_py_space).is_empty() {
                        interrupt();
                        let end = piece_end(rest, hard_window);
                        let piece = rest[..end].trim_matches(is_py_space);
                        if !piece.is_empty() {
                            let piece: std::borrow::Cow<str> =
                                if self.lower_case { piece.to_lowercase().into() } else { piece.into() };
                            ids.extend(self.content(&piece)?);
                        }
                        rest = &rest[end..];
                    }
                    break ids;
                }
            }
            window = window.saturating_mul(4).min(hard_window.max(first_window));
        };
        Ok(content)
    }

    /// Token ids a cross-encoder sees for the pair (`query`, `passage`), as Hugging
    /// Face's tokenizer gives them to sentence-transformers' `CrossEncoder.predict`:
    /// `<s> query </s></s> passage </s>`, the texts as they are (not stripped), the
    /// pair truncated to `max_tokens` by the `longest_first` strategy (see
    /// [`truncate_pair`]). `interrupt` runs between the pieces of a long text.
    ///
    /// Each side is tokenized only as far as truncation can use (`max_tokens - 3`
    /// tokens). That is exact but for two edge cases: when both texts are longer than
    /// that and `max_tokens` is odd (no model koe5 knows: XLM-R's 512, BGE-M3's 8192),
    /// which side gets the odd token is decided by those prefixes, not the whole
    /// texts; and a text of more than 64 KiB that is mostly whitespace is read piece
    /// by piece, trimmed at the pieces' ends.
    pub fn encode_pair(&self, query: &str, passage: &str, interrupt: &mut dyn FnMut()) -> Result<Vec<u32>> {
        let budget = self.max_tokens.saturating_sub(4);
        // Neither side can keep more than the whole budget, so `budget` first tokens
        // of each are all truncation can use: longer texts are tokenized no further.
        let raw = |t: &str| if self.lower_case { t.to_lowercase() } else { t.to_owned() };
        let first = self.windows().0;
        let mut q = self.content_prefix(query, &raw, budget + 1, first, interrupt)?;
        let mut p = self.content_prefix(passage, &raw, budget + 1, first, interrupt)?;
        let (nq, np) = truncate_pair(q.len(), p.len(), budget);
        q.truncate(nq);
        p.truncate(np);
        let mut ids = Vec::with_capacity(q.len() + p.len() + 4);
        ids.push(self.bos);
        ids.extend_from_slice(&q);
        ids.extend_from_slice(&[self.eos, self.eos]);
        ids.extend_from_slice(&p);
        ids.push(self.eos);
        Ok(ids)
    }

    /// `<s>`, the first `max_tokens - 2` content ids, `</s>`: truncation as the
    /// reference does it for a single text.
    fn wrap(&self, mut content: Vec<u32>) -> Vec<u32> {
        content.truncate(self.max_tokens - 2);
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(self.bos);
        ids.extend_from_slice(&content);
        ids.push(self.eos);
        ids
    }

    /// How many tokens the model would see for `text` before truncation, prefix and
    /// special tokens included. Long texts are counted piece by piece at word
    /// boundaries, so memory stays bounded; inside a run of more than 64 KiB without a
    /// plain space the pieces are cut anywhere, and the count there may be off by a
    /// token or two per cut. `interrupt` runs between pieces.
    pub fn count(&self, kind: Kind, text: &str, interrupt: &mut dyn FnMut()) -> Result<usize> {
        let s = self.prepare(kind, text);
        self.count_prepared(&s, self.segment(), interrupt)
    }

    fn count_prepared(&self, s: &str, segment: usize, interrupt: &mut dyn FnMut()) -> Result<usize> {
        let mut total = 2;
        let mut rest = s;
        while rest.len() > segment {
            interrupt();
            let cut = piece_end(rest, segment);
            total += self.content(&rest[..cut])?.len();
            rest = &rest[cut..];
        }
        total += self.content(rest)?.len();
        Ok(total)
    }

    /// Token ids without truncation or bounding: the plain reference pipeline, for tests.
    #[cfg(test)]
    fn encode_unbounded(&self, kind: Kind, text: &str) -> Result<Vec<u32>> {
        Ok(self.wrap(self.content(&self.prepare(kind, text))?))
    }

    #[cfg(test)]
    pub(crate) fn encode_with_window(&self, kind: Kind, text: &str, window: usize) -> Result<Vec<u32>> {
        self.encode_windowed(kind, text, window, &mut || {})
    }

    #[cfg(test)]
    pub(crate) fn count_with_segment(&self, kind: Kind, text: &str, segment: usize) -> Result<usize> {
        self.count_prepared(&self.prepare(kind, text), segment, &mut || {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_strip_matches_python() {
        // Python: "\x1c a \u3000".strip() == "a"; "\u200b a".strip() == "\u200b a"
        assert_eq!("\u{1c} a \u{3000}".trim_matches(is_py_space), "a");
        assert_eq!("\u{200b} a".trim_matches(is_py_space), "\u{200b} a");
        assert_eq!("\u{feff}a\u{85}".trim_matches(is_py_space), "\u{feff}a");
    }

    #[test]
    fn word_cut_finds_plain_boundaries() {
        let s = "가나 다라 ab cd";
        let cut = word_cut(s, s.len() - 1).unwrap();
        assert_eq!(&s[cut..], " cd");
        // a space next to punctuation or a combining mark is not a cut point
        assert_eq!(word_cut("ab. \u{301}cd efgh", 5), None);
        assert_eq!(word_cut("abcdefgh", 6), None);
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    fn tokenizer() -> TextTokenizer {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/tokenizer.json");
        TextTokenizer::from_file(&p, 512, false).unwrap()
    }

    fn long_texts() -> Vec<String> {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ko");
        let mut v = vec![];
        for f in ["constitution.txt", "bill-1809896.txt"] {
            v.push(std::fs::read_to_string(data.join(f)).unwrap());
        }
        // Always have at least one long text, with and without spaces.
        v.push("대한민국의 주권은 국민에게 있고 모든 권력은 국민으로부터 나온다 ".repeat(400));
        v.push("가나다라마바사".repeat(3000));
        v
    }

    #[test]
    fn prefix_windows_give_the_tokens_of_the_whole_text() {
        let t = tokenizer();
        for text in long_texts() {
            let whole = t.encode_unbounded(Kind::Passage, &text).unwrap();
            for window in [512, 2048, 16 * 1024] {
                assert_eq!(t.encode_with_window(Kind::Passage, &text, window).unwrap(), whole, "window {window}");
            }
        }
    }

    #[test]
    fn xlmr_tokenizer_is_recognised_as_local() {
        assert!(tokenizer().local);
    }

    #[test]
    fn unspaced_text_is_cut_at_the_hard_window_with_the_same_tokens() {
        let t = tokenizer();
        // 300 KB of Chinese and of Korean without a single space: one "word" each.
        for unit in ["中华人民共和国宪法规定国家的根本制度。", "대한민국의모든국민은인간으로서의존엄과가치를가진다"]
        {
            let text = unit.repeat(300_000 / unit.len());
            let whole = t.encode_unbounded(Kind::Passage, &text).unwrap();
            assert_eq!(whole.len(), 512);
            assert_eq!(t.encode(Kind::Passage, &text).unwrap(), whole);
        }
    }

    #[test]
    fn windows_grow_with_the_models_maximum() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/tokenizer.json");
        assert_eq!(tokenizer().windows(), (16 * 1024, 64 * 1024));
        let t = TextTokenizer::from_file(&p, 8192, false).unwrap();
        assert_eq!(t.windows(), (256 * 1024, 1024 * 1024));
        // 8,190 content tokens need more than the 512-token windows hold: spaced text of
        // about 290 KB, and 1.4 MB without a space (cut at the 1 MiB window).
        for text in [
            "대한민국의 주권은 국민에게 있고 모든 권력은 국민으로부터 나온다 ".repeat(3000),
            "대한민국의모든국민은인간으로서의존엄과가치를가진다".repeat(1_400_000 / 69),
        ] {
            let whole = t.encode_unbounded(Kind::Passage, &text).unwrap();
            assert_eq!(whole.len(), 8192);
            assert_eq!(t.encode(Kind::Passage, &text).unwrap(), whole);
        }
    }

    #[test]
    fn mostly_blank_long_texts_are_tokenized_piece_by_piece() {
        let t = tokenizer();
        // 16 MB of spaces between two letters: the whole text's tokens are those of
        // "a b" (space runs collapse), reached piece by piece with bounded memory.
        let text = format!("a{}b", " ".repeat(16_000_000));
        let mut pieces = 0;
        let got = t.encode_with(Kind::Passage, &text, &mut || pieces += 1).unwrap();
        assert_eq!(got, t.encode_unbounded(Kind::Passage, "a b").unwrap());
        assert!(pieces > 100, "{pieces} interrupt checks");
        // Other invisible runs end too, within the model's maximum.
        for filler in ["\u{1}", "\u{200b}"] {
            let text = format!("a{}b", filler.repeat(4_000_000));
            let ids = t.encode(Kind::Passage, &text).unwrap();
            assert!(ids.len() <= 512 && ids.len() >= 4, "{filler:?}: {} ids", ids.len());
        }
    }

    #[test]
    fn other_tokenizers_are_bounded_too() {
        // XLM-R's tokenizer with one more normalizer: no longer known to be local.
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/tokenizer.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let seq = spec["normalizer"]["normalizers"].as_array_mut().unwrap();
        seq.push(serde_json::json!({"type": "Lowercase"}));
        let dir = std::env::temp_dir().join(format!("koe5-other-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokenizer.json");
        std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
        let t = TextTokenizer::from_file(&file, 512, false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!t.exact_windows());
        let unit = "대한민국의 주권은 국민에게 있고 모든 권력은 국민으로부터 나온다 ";
        let text = unit.repeat(16_000_000 / unit.len());
        let start = std::time::Instant::now();
        let ids = t.encode(Kind::Passage, &text).unwrap();
        // Only the first 64 KiB were tokenized: the same first tokens as the whole text.
        assert_eq!(ids, t.encode_unbounded(Kind::Passage, &text[..any_cut(&text, 64 * 1024)]).unwrap());
        assert_eq!(ids.len(), 512);
        let mut pieces = 0;
        let n = t.count(Kind::Passage, &text, &mut || pieces += 1).unwrap();
        assert!(pieces >= 200, "{pieces} pieces");
        let per_unit = t.count(Kind::Passage, unit.trim_end(), &mut || {}).unwrap()
            - t.count(Kind::Passage, "", &mut || {}).unwrap();
        let want = per_unit * (16_000_000 / unit.len());
        assert!(n.abs_diff(want) * 100 < want, "{n} vs about {want}");
        assert!(start.elapsed().as_secs() < 60);
    }

    #[test]
    fn counting_in_segments_equals_counting_whole() {
        let t = tokenizer();
        for text in long_texts() {
            let s = t.prepare(Kind::Passage, &text);
            let whole = t.content(&s).unwrap().len() + 2;
            if !text.contains(' ') {
                continue; // cut anywhere: approximate by design
            }
            for segment in [300, 4096] {
                assert_eq!(t.count_with_segment(Kind::Passage, &text, segment).unwrap(), whole, "segment {segment}");
            }
        }
    }
}

/// How many tokens of each side of a pair `longest_first` truncation keeps, as the
/// tokenizers library computes it (`truncate_encodings`): nothing is cut when both fit;
/// else the longer side is cut to what the shorter leaves, but to no less than half
/// of `max`; when both are longer than that, each keeps half, the longer side (the
/// second on a tie) the odd token of an odd `max`.
pub fn truncate_pair(n1: usize, n2: usize, max: usize) -> (usize, usize) {
    if n1 + n2 <= max {
        return (n1, n2);
    }
    let swap = n1 > n2;
    // `a` for the shorter side, `b` for the longer.
    let mut a = n1.min(n2);
    let mut b = if a > max { a } else { a.max(max - a) };
    if a + b > max {
        a = max / 2;
        b = a + max % 2;
    }
    let (a, b) = if swap { (b, a) } else { (a, b) };
    (n1.min(a), n2.min(b))
}
