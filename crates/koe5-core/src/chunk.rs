//! Splitting a long document into chunks that each fit the model whole, so that no text
//! is lost to truncation when a document is embedded chunk by chunk.
//!
//! Chunks are planned from the byte offsets of the document's tokens and cut where the
//! text has a natural boundary: best at a blank line, then a line break, a sentence end,
//! any whitespace, and only as a last resort between two tokens. A chunk takes as much
//! text as fits up to the best kind of boundary within reach, as a recursive splitter
//! would. Token counts are not quite additive (a chunk's first word may get a different
//! `▁` piece on its own than inside the document, and lower-casing may change pieces), so
//! every chunk is tokenized again as the model will see it, and cut shorter if it does
//! not fit. The document is tokenized for planning a piece at a time, so memory stays
//! bounded for documents of many megabytes.

use std::collections::VecDeque;

use crate::error::{Error, ErrorKind, Result};
use crate::tokenize::{is_py_space, piece_end, Kind, TextTokenizer};

/// One chunk of a document: the text `&doc[start..end]`, which starts and ends on
/// non-whitespace characters, and the tokens the model sees for it once prefixed,
/// `<s>` and `</s>` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    pub n_tokens: usize,
}

/// Boundary kinds, best first. A chunk ends at the last boundary of the best kind
/// within its reach.
const PARAGRAPH: usize = 0;
const LINE: usize = 1;
const SENTENCE: usize = 2;
const SPACE: usize = 3;

/// Punctuation that ends a sentence when whitespace follows, as in Korean "…다.".
fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '?' | '!' | '。' | '？' | '！' | '…')
}

/// Full-width stops also end a sentence with no space after them, as Chinese and
/// Japanese are written.
fn ends_cjk_sentence(c: char) -> bool {
    matches!(c, '。' | '？' | '！')
}

/// The first byte at or after `pos` that is not whitespace.
fn skip_space(doc: &str, pos: usize) -> usize {
    doc.len() - doc[pos..].trim_start_matches(is_py_space).len()
}

/// The best text boundary `p` with `after < p <= limit`, where `doc[after]` is not
/// whitespace. A whitespace run is cut at its start; what it holds (two line breaks,
/// one, none after a sentence end, none) makes its kind. Boundaries in the second half
/// of the reach come first, so that a heading or a short line early on does not end a
/// chunk that could hold much more: it joins the text that follows it.
fn text_cut(doc: &str, after: usize, limit: usize) -> Option<usize> {
    let half = after + (limit - after) / 2;
    let mut best = [None; 4];
    let mut late = [None; 4];
    let mut chars = doc[after..].char_indices().map(|(i, c)| (after + i, c)).peekable();
    let mut prev = None;
    while let Some((i, c)) = chars.next() {
        if i > limit {
            break;
        }
        if is_py_space(c) {
            let mut newlines = usize::from(c == '\n');
            while let Some((_, c)) = chars.next_if(|&(_, c)| is_py_space(c)) {
                newlines += usize::from(c == '\n');
            }
            let kind = match newlines {
                0 if prev.is_some_and(ends_sentence) => SENTENCE,
                0 => SPACE,
                1 => LINE,
                _ => PARAGRAPH,
            };
            best[kind] = Some(i);
            if i >= half {
                late[kind] = Some(i);
            }
            prev = None;
            continue;
        }
        let next = i + c.len_utf8();
        if ends_cjk_sentence(c) && next <= limit && chars.peek().is_some_and(|&(_, n)| !is_py_space(n)) {
            best[SENTENCE] = Some(next);
            if next >= half {
                late[SENTENCE] = Some(next);
            }
        }
        prev = Some(c);
    }
    late.into_iter().flatten().next().or_else(|| best.into_iter().flatten().next())
}

/// The planning view of a document: where each of its tokens starts, for the part
/// still needed, tokenized a piece at a time as chunking moves on.
struct Plan<'a> {
    tok: &'a TextTokenizer,
    doc: &'a str,
    /// End of the document without its trailing whitespace.
    end: usize,
    /// `doc[..tokenized]` has been tokenized.
    tokenized: usize,
    /// The first non-whitespace byte of each token (for a lone `▁`, the word it
    /// precedes), in document order, from the start of the current chunk on.
    anchors: VecDeque<usize>,
}

impl Plan<'_> {
    /// Tokenizes the next piece of the document.
    fn extend(&mut self, interrupt: &mut dyn FnMut()) -> Result<()> {
        interrupt();
        let rest = &self.doc[self.tokenized..self.end];
        let piece = &rest[..piece_end(rest, self.tok.segment())];
        for (s, e) in self.tok.content_offsets(piece)? {
            let text = &piece[s..e];
            let anchor = e - text.trim_start_matches(is_py_space).len();
            self.anchors.push_back(self.tokenized + anchor);
        }
        self.tokenized += piece.len();
        Ok(())
    }

    /// Index of the first token that starts at or after `pos`.
    fn index(&self, pos: usize) -> usize {
        self.anchors.partition_point(|&a| a < pos)
    }

    /// Planned tokens of `doc[from..to]`.
    fn tokens(&self, from: usize, to: usize) -> usize {
        self.index(to) - self.index(from)
    }

    /// How far a chunk starting at `from` may reach with `budget` tokens: the start of
    /// its first token past the budget, or the end of the document if all the rest fits.
    fn reach(&mut self, from: usize, budget: usize, interrupt: &mut dyn FnMut()) -> Result<usize> {
        while self.anchors.len() - self.index(from) <= budget && self.tokenized < self.end {
            self.extend(interrupt)?;
        }
        Ok(self.anchors.get(self.index(from) + budget).copied().unwrap_or(self.end))
    }

    /// Where a chunk that must end past `after` and may reach `limit` ends: at the best
    /// text boundary, else between tokens, else (for a token too big on its own) at any
    /// character boundary.
    fn cut(&self, after: usize, limit: usize) -> Option<usize> {
        if limit >= self.end {
            return Some(self.end);
        }
        text_cut(self.doc, after, limit)
            .or_else(|| {
                let i = self.anchors.partition_point(|&a| a <= limit);
                let a = self.doc.floor_char_boundary(*self.anchors.get(i.checked_sub(1)?)?);
                (a > after).then_some(a)
            })
            .or_else(|| Some(self.doc.floor_char_boundary(limit)).filter(|&c| c > after))
    }

    /// Where the chunk after `prev` starts so as to repeat the last `overlap` tokens of
    /// it: at the start of the word holding the first of them if that adds few enough
    /// tokens (at most `most` in all), else between tokens. A chunk of no more than
    /// `overlap` tokens, which cannot be repeated whole, is repeated from its second
    /// word on; one with a single word not at all: the next chunk starts at `next`.
    fn overlap_start(&self, prev: &Chunk, overlap: usize, most: usize, next: usize) -> usize {
        let (first, past) = (self.index(prev.start), self.index(prev.end));
        let short = past - first <= overlap;
        let target = if short { prev.end } else { self.doc.floor_char_boundary(self.anchors[past - overlap]) };
        if target <= prev.start {
            return next; // the tokens all come from the chunk's first character
        }
        let word = self.doc[prev.start..target]
            .char_indices()
            .rfind(|&(_, c)| is_py_space(c))
            .map(|(k, c)| prev.start + k + c.len_utf8());
        match word {
            Some(w) if short || self.tokens(w, prev.end) <= most => w,
            _ if short => next,
            _ => target,
        }
    }

    /// The chunk that starts at `start` (before `next` when it overlaps the previous
    /// chunk) and ends past `next`, as long as fits. A chunk that does not fit when
    /// tokenized on its own is cut shorter, by its excess in planned tokens, until it
    /// fits; an overlap that leaves no room is dropped.
    fn fit_chunk(
        &mut self,
        limits: &Limits,
        mut start: usize,
        next: usize,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Chunk> {
        let doc = self.doc;
        let mut limit = self.reach(start, limits.budget, interrupt)?;
        loop {
            let Some(cut) = self.cut(next, limit) else {
                if start < next {
                    start = next;
                    limit = self.reach(start, limits.budget, interrupt)?;
                    continue;
                }
                let c = doc[start..].chars().next().expect("a chunk starts on a character");
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("max_tokens {} is too small for the character {c:?} at byte {start}", limits.max),
                )
                .with_detail("The model needs more tokens for that character alone than max_tokens allows.")
                .with_hint("Raise max_tokens."));
            };
            let end = start + doc[start..cut].trim_end_matches(is_py_space).len();
            let n_tokens = self.tok.count(limits.kind, &doc[start..end], interrupt)?;
            if n_tokens <= limits.max {
                return Ok(Chunk { start, end, n_tokens });
            }
            // Shorter by the excess in planned tokens, and by a character at least;
            // an overlap that leaves no room past `next` goes first.
            let fewer = self.tokens(start, end).saturating_sub(n_tokens - limits.max);
            let shorter = if fewer > 0 { self.reach(start, fewer, interrupt)? } else { start };
            let one_char_less = doc.floor_char_boundary(end - 1);
            limit = if shorter > next {
                shorter.min(one_char_less)
            } else if start < next {
                start = next;
                self.reach(start, limits.budget, interrupt)?
            } else {
                one_char_less
            };
        }
    }
}

/// What bounds each chunk.
struct Limits {
    kind: Kind,
    /// Tokens of a chunk at most, prefix and special tokens included.
    max: usize,
    /// Of those, tokens for the chunk's text.
    budget: usize,
    /// Tokens an overlap may take to start at a word boundary.
    most_overlap: usize,
}

/// Splits `doc` into chunks of at most `max_tokens` tokens each, counted as the model
/// sees the chunk: with the `kind` prefix, `<s>` and `</s>`. `max_tokens` above the
/// model's maximum is lowered to it. With `overlap_tokens > 0`, each chunk after the
/// first starts early enough to repeat about that many tokens of the previous one
/// (at least that many where the previous chunk has them), at a word start where
/// there is one. Chunks exclude leading and trailing whitespace; an empty or blank
/// document has none. A sentence ends at `. ? ! 。 ？ ！ …` before whitespace.
/// `interrupt` runs between pieces of tokenization and between chunks.
///
/// Fails with [`ErrorKind::InvalidInput`] when `max_tokens` leaves no room for text
/// besides the prefix and special tokens, when `overlap_tokens` is not less than half
/// of that room, or when a single character needs more tokens than a chunk holds
/// (possible only with a `max_tokens` of a few tokens).
pub fn chunks(
    tok: &TextTokenizer,
    kind: Kind,
    doc: &str,
    max_tokens: usize,
    overlap_tokens: usize,
    interrupt: &mut dyn FnMut(),
) -> Result<Vec<Chunk>> {
    let max = max_tokens.min(tok.max_tokens());
    let overhead = tok.count(kind, "", interrupt)?;
    if max <= overhead {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("max_tokens must be at least {} for this model", overhead + 1),
        )
        .with_detail(format!(
            "The prefix \"{}\" and the special tokens <s> and </s> take {overhead} tokens of every chunk.",
            kind.prefix()
        )));
    }
    let budget = max - overhead;
    if overlap_tokens.saturating_mul(2) >= budget {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("overlap_tokens must be at most {} when max_tokens is {max}", (budget - 1) / 2),
        )
        .with_detail(format!(
            "The overlap must be less than half of the {budget} text tokens a chunk holds besides the \
             prefix and the special tokens."
        )));
    }

    let lo = skip_space(doc, 0);
    let end = doc.trim_end_matches(is_py_space).len().max(lo);
    let mut plan = Plan { tok, doc, end, tokenized: lo, anchors: VecDeque::new() };
    let limits = Limits { kind, max, budget, most_overlap: (2 * overlap_tokens).min(budget / 2) };
    let mut chunks = Vec::new();
    let (mut start, mut next) = (lo, lo);
    while next < end {
        interrupt();
        while plan.anchors.front().is_some_and(|&a| a < start) {
            plan.anchors.pop_front();
        }
        let chunk = plan.fit_chunk(&limits, start, next, interrupt)?;
        next = skip_space(doc, chunk.end);
        start = if overlap_tokens > 0 {
            plan.overlap_start(&chunk, overlap_tokens, limits.most_overlap, next)
        } else {
            next
        };
        chunks.push(chunk);
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn tokenizer() -> TextTokenizer {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/tokenizer.json");
        TextTokenizer::from_file(&p, 512, false).unwrap()
    }

    fn korean(name: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ko").join(name)).unwrap()
    }

    fn chunks(t: &TextTokenizer, doc: &str, max: usize, overlap: usize) -> Vec<Chunk> {
        super::chunks(t, Kind::Passage, doc, max, overlap, &mut || {}).unwrap()
    }

    fn without_space(s: &str) -> String {
        s.chars().filter(|&c| !is_py_space(c)).collect()
    }

    /// Chunks of `doc`, checked for what `chunks` promises: each fits exactly as
    /// counted, lies on character boundaries without surrounding whitespace, moves
    /// strictly forward, and, without overlap, chunks tile the text.
    fn checked_chunks(t: &TextTokenizer, doc: &str, max: usize, overlap: usize) -> Vec<Chunk> {
        let cs = chunks(t, doc, max, overlap);
        for c in &cs {
            assert!(c.start < c.end && doc.is_char_boundary(c.start) && doc.is_char_boundary(c.end), "{c:?}");
            let text = &doc[c.start..c.end];
            assert_eq!(text, text.trim_matches(is_py_space), "{c:?}");
            assert_eq!(c.n_tokens, t.count(Kind::Passage, text, &mut || {}).unwrap(), "{c:?}");
            assert!(c.n_tokens <= max, "{c:?} over {max}");
        }
        for w in cs.windows(2) {
            assert!(w[1].start > w[0].start && w[1].end > w[0].end, "{w:?}");
            if overlap == 0 {
                assert!(w[1].start >= w[0].end, "{w:?}");
            }
        }
        if overlap == 0 {
            let joined: String = cs.iter().map(|c| &doc[c.start..c.end]).collect();
            assert_eq!(without_space(&joined), without_space(doc));
        }
        cs
    }

    #[test]
    fn chunks_of_korean_documents_fit_and_cover_the_text() {
        let t = tokenizer();
        for name in ["constitution.txt", "bill-1809896.txt"] {
            let doc = korean(name);
            for (max, overlap) in [(512, 0), (128, 0), (64, 16)] {
                let cs = checked_chunks(&t, &doc, max, overlap);
                assert!(cs.len() > 1, "{name} at {max}");
            }
        }
    }

    #[test]
    fn chunks_end_at_sentences_and_lines() {
        let t = tokenizer();
        let doc = korean("constitution.txt");
        let cs = checked_chunks(&t, &doc, 128, 0);
        let at_boundary = |c: &Chunk| {
            doc[c.end..].starts_with(['\n', '\r']) || doc[c.start..c.end].ends_with(ends_sentence) || c.end == doc.len()
        };
        let good = cs.iter().filter(|c| at_boundary(c)).count();
        assert!(good * 10 >= cs.len() * 9, "{good} of {} chunks end at a sentence or line", cs.len());
        // Greedy packing: here no two neighbouring chunks would fit in one.
        let overhead = t.count(Kind::Passage, "", &mut || {}).unwrap();
        for w in cs.windows(2) {
            assert!(w[0].n_tokens + w[1].n_tokens - overhead > 128, "{w:?}");
        }
    }

    #[test]
    fn unspaced_run_is_cut_between_tokens() {
        let t = tokenizer();
        let doc = "가나다라마바사".repeat(1000);
        let cs = checked_chunks(&t, &doc, 64, 0);
        assert!(cs.len() > 10);
        // Without a single space, every chunk but the last is (nearly) full.
        for c in &cs[..cs.len() - 1] {
            assert!(c.n_tokens >= 60, "{c:?}");
        }
        // With overlap, chunks repeat 16 tokens counted in the document; on its own the
        // repeated text may split or merge a token.
        let overhead = t.count(Kind::Passage, "", &mut || {}).unwrap();
        for w in checked_chunks(&t, &doc, 64, 16).windows(2) {
            let repeated = t.count(Kind::Passage, &doc[w[1].start..w[0].end], &mut || {}).unwrap() - overhead;
            assert!((15..=17).contains(&repeated), "{w:?} repeat {repeated}");
        }
    }

    #[test]
    fn overlapping_chunks_repeat_the_end_of_the_previous_one() {
        let t = tokenizer();
        let overhead = t.count(Kind::Passage, "", &mut || {}).unwrap();
        for name in ["constitution.txt", "bill-1809896.txt"] {
            let doc = korean(name);
            for (max, overlap) in [(64, 16), (128, 32), (512, 50)] {
                let cs = checked_chunks(&t, &doc, max, overlap);
                for w in cs.windows(2) {
                    let previous = &doc[w[0].start..w[0].end];
                    if w[0].n_tokens - overhead <= overlap && !previous.contains(is_py_space) {
                        continue; // one short word: nothing to repeat
                    }
                    assert!(w[1].start < w[0].end, "{w:?} share no text");
                    let repeated = t.count(Kind::Passage, &doc[w[1].start..w[0].end], &mut || {}).unwrap() - overhead;
                    if w[0].n_tokens - overhead > overlap {
                        assert!(repeated >= overlap, "{name} {max}/{overlap}: {w:?} repeat {repeated}");
                    }
                    assert!(repeated <= 2 * overlap, "{name} {max}/{overlap}: {w:?} repeat {repeated}");
                }
            }
        }
    }

    #[test]
    fn too_small_max_tokens_is_refused() {
        let t = tokenizer();
        let overhead = t.count(Kind::Passage, "", &mut || {}).unwrap();
        let err = super::chunks(&t, Kind::Passage, "가나다", overhead, 0, &mut || {}).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
        assert_eq!(err.message, format!("max_tokens must be at least {} for this model", overhead + 1));
        // One text token per chunk is enough where single characters are single tokens…
        let doc = "the people of the republic";
        let cs = checked_chunks(&t, doc, overhead + 1, 0);
        let texts: Vec<&str> = cs.iter().map(|c| &doc[c.start..c.end]).collect();
        assert_eq!(texts, ["the", "people", "of", "the", "re", "public"]);
        // …but "은" on its own is "▁" and "은": no chunk can hold it.
        let err = super::chunks(&t, Kind::Passage, "대한민국은", overhead + 1, 0, &mut || {}).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
        assert!(err.message.contains("too small for the character '은'"), "{}", err.message);
    }

    #[test]
    fn too_big_overlap_is_refused() {
        let t = tokenizer();
        let overhead = t.count(Kind::Passage, "", &mut || {}).unwrap();
        let budget = 64 - overhead;
        let err = super::chunks(&t, Kind::Passage, "가나다", 64, budget / 2, &mut || {}).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
        assert!(err.message.starts_with("overlap_tokens must be at most"), "{}", err.message);
        checked_chunks(&t, &korean("constitution.txt"), 64, (budget - 1) / 2);
    }

    #[test]
    fn blank_documents_have_no_chunks() {
        let t = tokenizer();
        for doc in ["", " ", "\n\n\t \u{3000}\u{1c}"] {
            assert_eq!(chunks(&t, doc, 512, 0), vec![]);
        }
    }

    #[test]
    fn short_document_is_one_trimmed_chunk() {
        let t = tokenizer();
        let doc = "\n  제1조 ① 대한민국은 민주공화국이다.  \n";
        let cs = chunks(&t, doc, 512, 16);
        assert_eq!(cs.len(), 1);
        assert_eq!(&doc[cs[0].start..cs[0].end], doc.trim());
        assert_eq!(cs[0].n_tokens, t.count(Kind::Passage, doc, &mut || {}).unwrap());
    }

    #[test]
    fn max_tokens_above_the_model_is_capped() {
        let t = tokenizer();
        let doc = korean("constitution.txt");
        assert_eq!(chunks(&t, &doc, 100_000, 0), chunks(&t, &doc, 512, 0));
    }

    #[test]
    fn lower_casing_tokenizer_chunks_fit() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/tokenizer.json");
        let t = TextTokenizer::from_file(&p, 512, true).unwrap();
        let doc = "The Constitution OF THE Republic. ".repeat(100) + &korean("bill-1809896.txt");
        checked_chunks(&t, &doc, 64, 0);
    }

    #[test]
    fn interrupt_runs_for_every_chunk() {
        let t = tokenizer();
        let doc = korean("constitution.txt");
        let mut calls = 0;
        let cs = super::chunks(&t, Kind::Passage, &doc, 128, 0, &mut || calls += 1).unwrap();
        assert!(calls >= cs.len());
    }

    #[test]
    fn text_cuts_prefer_paragraphs_then_lines_then_sentences() {
        let doc = "가 나.\n다 라.\n\n마 바. 사 아";
        let cut = |limit| &doc[..text_cut(doc, 0, limit).unwrap()];
        assert_eq!(cut(doc.find("\n\n").unwrap() - 1), "가 나.");
        assert_eq!(cut(doc.len()), "가 나.\n다 라.");
        // A blank line early in the reach (after a heading) loses to a sentence end in
        // its second half.
        let titled = "제1장\n\n가 나. 다 라. 마 바. 사 아";
        assert_eq!(&titled[..text_cut(titled, 0, titled.len()).unwrap()], "제1장\n\n가 나. 다 라. 마 바.");
        let tail = doc.find("마").unwrap();
        let cut_tail = |limit| &doc[tail..text_cut(doc, tail, limit).unwrap()];
        assert_eq!(cut_tail(doc.len()), "마 바.");
        assert_eq!(cut_tail(tail + "마 바".len()), "마");
        assert_eq!(text_cut(doc, 0, 2), None);
        // A full-width stop ends a sentence with no space after it.
        let zh = "第一条。第二条规定";
        assert_eq!(&zh[..text_cut(zh, 0, zh.len() - 1).unwrap()], "第一条。");
    }
}
