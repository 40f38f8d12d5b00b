//! Lexical segmentation for full-text search: a text cut into the model's sentencepiece
//! pieces (`번역을` → `번역` + `을`), each with the byte range it came from and a
//! lexeme, and the blanks between them, so that a PostgreSQL text search parser can hand
//! them out one by one and `ts_headline` can rebuild the text from them.
//!
//! The tokens cover the text: every byte belongs to exactly one [`TokenKind::Piece`] or
//! [`TokenKind::Blank`], in order. Optional [`TokenKind::Word`] tokens (a whole word
//! beside its pieces) overlap the pieces and are not part of that cover.
//!
//! Where pieces split is the tokenizer's business, but what a piece covers is read from
//! the text itself. The tokenizer's offsets are trusted only as cut points inside runs of
//! visible characters: its normalizer (sentencepiece's `nmt_nfkc` map) may drop or merge
//! characters, and its offsets then drift (a control character at the start of a text
//! shifts every later offset by a character). Separators (whitespace, control and
//! invisible characters, a literal `▁`) are always blanks and reach the tokenizer as
//! plain spaces of the same byte length, which keeps its offsets aligned with the text;
//! any offset still off can only misplace a cut inside a word, never lose or repeat a
//! byte.
//!
//! Texts of any length are segmented whole, in bounded windows that end at a plain space
//! where there is one, so a window's pieces are those of the whole text (XLM-R's
//! tokenization is local to words). A run with no space for [`WINDOW`] bytes and more is
//! cut at a character boundary; the piece at such a cut may differ from the whole
//! text's. `interrupt` runs between windows.
//!
//! No filtering happens here: particles and endings stay pieces (see
//! [`KOREAN_PARTICLES`] for a list to filter with), and whether words and Hangul
//! bigrams are indexed beside their pieces is the caller's choice ([`Options`]).
//!
//! Bigrams exist because a piece is not a stable unit: the tokenizer cuts `재판소` as
//! `재판` + `소` alone but as `재` + `판` + `소` inside `헌법재판소`, and `육아휴직` as
//! `육` + `아` + `휴` + `직`, so a question's word often fails to match the same word
//! inside a compound. Every two neighbouring syllables of a word (`헌법`, `법재`, `재판`,
//! `판소`) match wherever the word is cut (measured on data/eval: bench/RESULTS-retrieval.md).

use std::borrow::Cow;

use tokenizers::NormalizedString;

use crate::error::Result;
use crate::tokenize::{is_py_space, piece_end, TextTokenizer};

/// About how many bytes of text are tokenized at once. Windows end at a plain space
/// between half and four times this, or, in a run without one, at a character boundary
/// here. 16 KiB keeps the time between `interrupt` calls to milliseconds.
pub const WINDOW: usize = 16 * 1024;

/// What a token is to a text search parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A sentencepiece piece with a lexeme: the visible characters it came from, without
    /// the space that sentencepiece's `▁` stands for.
    Piece,
    /// Text with nothing to index: whitespace, control and invisible characters, and
    /// pieces whose lexeme is empty (punctuation and symbols only, such as `.`, `(`, `·`).
    /// Its lexeme is empty.
    Blank,
    /// A whole word: a run of two or more pieces with no blank between them, given just
    /// before its first piece when [`Options::words`] is set. It overlaps its pieces, so
    /// whoever rebuilds the text skips it (as PostgreSQL's headline skips the compound
    /// words of its default parser).
    Word,
    /// Two neighbouring Hangul syllables of a word (`헌법재판소를` gives `헌법`, `법재`,
    /// `재판`, `판소`), given when [`Options::bigrams`] is set just before the word's
    /// pieces (after its Word token), so that a phrase query of the same word matches
    /// whatever particle follows it in the text; none from the trailing pieces that
    /// are particles or endings ([`KOREAN_PARTICLES`]), so `국민의` and `국민에게는`
    /// give `국민` alone and `또는` none. Overlaps the pieces, as a word does.
    Bigram,
}

/// One token of a text: `text[start..end]`, what it is, and its lexeme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub start: usize,
    pub end: usize,
    pub kind: TokenKind,
    /// [`lexeme`] of the token's text for a piece or a word; empty for a blank.
    pub lexeme: String,
}

/// What [`tokens`] gives beside pieces and blanks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Also give each word of two or more pieces as a [`TokenKind::Word`].
    pub words: bool,
    /// Also give the Hangul bigrams of each word as [`TokenKind::Bigram`]s.
    pub bigrams: bool,
}

/// Common Korean particles and endings, as lexemes, that XLM-R's tokenizer gives as a
/// piece of their own after a noun or stem (`국민` + `의`, `시행` + `하는`) or, for
/// `및`, `등` and `또는`, as a word of their own. Measured on data/ko (the constitution
/// and a bill, 65 KB): each occurs as a piece there. Some are also pieces of other words
/// (`이` in `이 법`, `가` in `가능`); [`tokens`] never filters them, a dictionary may.
/// Compound particles the tokenizer keeps as one piece (`에게는`, `으로부터`) are not
/// listed: adding them (and 하며, 된다, …) measured worse on the constitution set
/// (bench/RESULTS-retrieval.md).
#[rustfmt::skip]
pub const KOREAN_PARTICLES: &[&str] = &[
    // Case, topic and connective particles.
    "을", "를", "이", "가", "은", "는", "의", "에", "에서", "에게", "에는",
    "으로", "로", "으로서", "로서", "와", "과", "도", "만", "까지", "부터", "이나", "이다",
    // Endings of 하다, frequent in legal and administrative text.
    "한다", "하는", "하여", "하여야", "하고",
    // Conjunctions and "and so on", words of their own.
    "및", "등", "또는",
];

/// The lexeme of a piece or word of text: NFKC, lower-cased, without `▁` and
/// invisible characters, and without the punctuation and symbols at either end
/// (`제1.` → `제1`, `(주)` → `주`). Empty when nothing is left. A pure function of the
/// text, so a dictionary can compute it from a token's text alone.
pub fn lexeme(text: &str) -> String {
    // ASCII and precomposed Hangul syllables are already NFKC.
    let nfkc: Cow<str> = if text.chars().all(|c| c.is_ascii() || is_syllable(c)) {
        text.into()
    } else {
        let mut n = NormalizedString::from(text);
        n.nfkc();
        n.get().to_owned().into()
    };
    let mut lower = nfkc.to_lowercase();
    lower.retain(|c| !is_separator(c) && !is_invisible(c));
    let kept = lower.trim_matches(is_symbol);
    if kept.len() == lower.len() {
        lower
    } else {
        kept.to_owned()
    }
}

/// The tokens of `text`, covering it (see the module docs), with words beside their
/// pieces if `options` asks for them. `interrupt` runs between windows of a long text.
pub fn tokens(tok: &TextTokenizer, text: &str, options: &Options, interrupt: &mut dyn FnMut()) -> Result<Vec<Token>> {
    tokens_in_windows(tok, text, options, WINDOW, interrupt)
}

fn tokens_in_windows(
    tok: &TextTokenizer,
    text: &str,
    options: &Options,
    window: usize,
    interrupt: &mut dyn FnMut(),
) -> Result<Vec<Token>> {
    let mut out = Builder { text, options: *options, tokens: Vec::new(), word: Vec::new() };
    let mut from = 0;
    while from < text.len() {
        if from > 0 {
            interrupt();
        }
        let rest = &text[from..];
        // piece_end never returns 0 for a non-empty rest; the max keeps that certain.
        let first = rest.chars().next().map_or(1, char::len_utf8);
        let to = from + piece_end(rest, window).max(first);
        segment_window(tok, text, from, to, &mut out)?;
        from = to;
    }
    Ok(out.finish())
}

/// Appends the tokens of `text[from..to]`.
fn segment_window(tok: &TextTokenizer, text: &str, from: usize, to: usize, out: &mut Builder) -> Result<()> {
    let w = &text[from..to];
    let seen = hide_separators(w);
    let offsets = tok.content_offsets(&seen)?;
    // A piece ends where a token ends, unless the next token starts before that: tokens
    // that share a character (one the normalizer expands, as `㈜` into `(`, `주`, `)`, or
    // the first character, onto which the `▁` put before a text is mapped) stay one piece.
    let mut cuts: Vec<usize> = offsets
        .iter()
        .zip(offsets.iter().skip(1).map(Some).chain([None]))
        .filter(|(this, next)| next.is_none_or(|next| next.0 >= this.1))
        .map(|(this, _)| this.1)
        .collect();
    // Offsets are in order for sound text; sorting makes any drift harmless.
    cuts.sort_unstable();
    cuts.dedup();
    let mut cuts = cuts.into_iter().filter(|&c| is_cut(w, c)).peekable();

    let mut chars = w.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        let blank = is_separator(c);
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if is_separator(c) != blank {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        if blank {
            out.blank(from + start, from + end);
            continue;
        }
        // A run of visible characters: pieces between the cuts inside it.
        while cuts.next_if(|&c| c <= start).is_some() {}
        let mut piece = start;
        while let Some(cut) = cuts.next_if(|&c| c < end) {
            out.piece(from + piece, from + cut);
            piece = cut;
        }
        out.piece(from + piece, from + end);
    }
    Ok(())
}

/// Collects tokens, merging neighbouring blanks and holding a word's pieces until the
/// word ends, so that its Word token can go first.
struct Builder<'a> {
    text: &'a str,
    options: Options,
    tokens: Vec<Token>,
    /// The pieces of the current word (none between words).
    word: Vec<Token>,
}

impl Builder<'_> {
    fn piece(&mut self, start: usize, end: usize) {
        let lexeme = lexeme(&self.text[start..end]);
        if lexeme.is_empty() {
            self.blank(start, end);
        } else {
            self.word.push(Token { start, end, kind: TokenKind::Piece, lexeme });
        }
    }

    fn blank(&mut self, start: usize, end: usize) {
        self.end_word();
        match self.tokens.last_mut() {
            Some(t) if t.kind == TokenKind::Blank && t.end == start => t.end = end,
            _ => self.tokens.push(Token { start, end, kind: TokenKind::Blank, lexeme: String::new() }),
        }
    }

    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        if self.options.words && self.word.len() > 1 {
            let (start, end) = (self.word[0].start, self.word[self.word.len() - 1].end);
            let lexeme = lexeme(&self.text[start..end]);
            self.tokens.push(Token { start, end, kind: TokenKind::Word, lexeme });
        }
        // The stem: the word without its trailing particles and endings (`국민에게는` →
        // `국민`); a word that is all particles (`또는`) has none. Bigrams equal to a
        // particle (`에서` inside a stem) are left to the dictionary to drop.
        let mut stem_pieces = self.word.len();
        while stem_pieces > 0 && KOREAN_PARTICLES.contains(&self.word[stem_pieces - 1].lexeme.as_str()) {
            stem_pieces -= 1;
        }
        let stem_end = if stem_pieces == 0 { self.word[0].start } else { self.word[stem_pieces - 1].end };
        if self.options.bigrams {
            let from = self.word[0].start;
            let mut prev: Option<(usize, char)> = None;
            for (i, c) in self.text[from..stem_end].char_indices() {
                if is_syllable(c) {
                    if let Some((p, pc)) = prev {
                        let (start, end) = (from + p, from + i + c.len_utf8());
                        self.tokens.push(Token {
                            start,
                            end,
                            kind: TokenKind::Bigram,
                            lexeme: [pc, c].iter().collect(),
                        });
                    }
                    prev = Some((i, c));
                } else {
                    prev = None;
                }
            }
        }
        self.tokens.append(&mut self.word);
    }

    fn finish(mut self) -> Vec<Token> {
        self.end_word();
        self.tokens
    }
}

/// What is always a blank: Python's whitespace (the tokenizer's word boundaries),
/// control characters, the zero-width space, word joiner and byte order mark (which the
/// tokenizer drops or treats as spaces), and a literal `▁`, sentencepiece's own space.
fn is_separator(c: char) -> bool {
    is_py_space(c) || c.is_control() || matches!(c, '\u{200b}' | '\u{2060}' | '\u{feff}' | '▁')
}

/// Invisible characters that may sit inside a word without being part of its lexeme:
/// the soft hyphen and the zero-width and bidirectional marks.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200c}'..='\u{200f}' | '\u{2061}'..='\u{2064}')
}

/// A character that belongs to the one before it, so no piece starts with it: combining
/// marks, joiners, variation selectors, emoji skin tones, and the vowel and final jamo
/// that join a Hangul syllable.
fn continues(c: char) -> bool {
    matches!(c,
        '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}'
        | '\u{fe20}'..='\u{fe2f}' | '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}'
        | '\u{200c}' | '\u{200d}' | '\u{1f3fb}'..='\u{1f3ff}'
        | '\u{1160}'..='\u{11ff}' | '\u{d7b0}'..='\u{d7ff}' | '\u{3099}' | '\u{309a}')
}

/// Punctuation and symbols, trimmed from the ends of a lexeme (combining marks stay).
fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !continues(c)
}

fn is_syllable(c: char) -> bool {
    ('\u{ac00}'..='\u{d7a3}').contains(&c)
}

/// Whether a piece may start at byte `i` of `w`: inside it, on a character boundary,
/// and not before a character that continues the previous one.
fn is_cut(w: &str, i: usize) -> bool {
    i > 0 && i < w.len() && w.is_char_boundary(i) && !w[i..].chars().next().is_some_and(continues)
}

/// `w` with every separator but the plain space replaced by spaces of the same byte
/// length, so that the tokenizer splits words where we do and its offsets stay those of
/// `w` (it may drop a control character and shift every later offset).
fn hide_separators(w: &str) -> Cow<'_, str> {
    if !w.chars().any(|c| c != ' ' && is_separator(c)) {
        return w.into();
    }
    let mut s = String::with_capacity(w.len());
    for c in w.chars() {
        if c != ' ' && is_separator(c) {
            s.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            s.push(c);
        }
    }
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    pub(super) fn tokenizer() -> TextTokenizer {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/tokenizer.json");
        TextTokenizer::from_file(&p, 512, false).unwrap()
    }

    #[test]
    fn lexemes_are_nfkc_lower_case_and_trimmed() {
        assert_eq!(lexeme("ＡＢＣ１２３"), "abc123");
        assert_eq!(lexeme("KoE5"), "koe5");
        assert_eq!(lexeme("①"), "1");
        assert_eq!(lexeme("ㄱ"), "\u{1100}"); // compatibility jamo → conjoining jamo
        assert_eq!(lexeme("ﬁ"), "fi");
        assert_eq!(lexeme("제1."), "제1");
        assert_eq!(lexeme("㈜"), "주");
        assert_eq!(lexeme("a\u{301}"), "á");
        assert_eq!(lexeme("x\u{ad}y"), "xy");
        assert_eq!(lexeme("▁번역"), "번역");
        assert_eq!(lexeme("\"."), "");
        assert_eq!(lexeme(""), "");
    }

    #[test]
    fn hidden_separators_keep_byte_lengths() {
        let w = "\u{1}a\tb\u{feff}c\u{3000}d ▁";
        let seen = hide_separators(w);
        assert_eq!(seen.len(), w.len());
        assert_eq!(seen, " a b   c   d    ");
        assert!(matches!(hide_separators("a b"), Cow::Borrowed(_)));
    }

    #[test]
    fn cuts_never_split_a_character_or_a_mark_from_its_base() {
        let w = "a\u{301}b가";
        assert!(!is_cut(w, 0));
        assert!(!is_cut(w, 1)); // before the combining acute
        assert!(!is_cut(w, 2)); // inside it
        assert!(is_cut(w, 3));
        assert!(is_cut(w, 4));
        assert!(!is_cut(w, w.len()));
    }

    #[test]
    fn small_windows_give_the_tokens_of_the_whole_text() {
        let t = tokenizer();
        let text = "대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.\n\
                    제63조제2항제4호에 따라 KoE5 모델을 PostgreSQL 안에서 실행한다. "
            .repeat(20);
        for options in [Options::default(), Options { words: true, bigrams: true }] {
            let whole = tokens_in_windows(&t, &text, &options, text.len(), &mut || {}).unwrap();
            for window in [64, 300, 1024] {
                let mut windows = 0;
                let got = tokens_in_windows(&t, &text, &options, window, &mut || windows += 1).unwrap();
                assert_eq!(got, whole, "window {window}");
                assert!(windows >= text.len() / (4 * window), "{windows} windows of {window}");
            }
        }
    }

    #[test]
    fn unspaced_windows_differ_from_the_whole_text_only_at_their_cuts() {
        let t = tokenizer();
        let text = "대한민국의모든국민은인간으로서의존엄과가치를가진다".repeat(300);
        let pieces = |window| {
            let got = tokens_in_windows(&t, &text, &Options::default(), window, &mut || {}).unwrap();
            got.into_iter().map(|t| (t.start, t.end)).collect::<std::collections::HashSet<_>>()
        };
        let whole = pieces(text.len());
        let windowed = pieces(1024);
        let cuts = text.len() / 1024;
        let differ = windowed.difference(&whole).count();
        assert!(cuts > 10 && differ <= 3 * cuts, "{differ} pieces differ at {cuts} cuts");
    }
}
