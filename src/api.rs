//! The SQL-facing functions. Their SQL declarations (volatility, cost, comments) are
//! hand-written in sql/surface/ (one file per concept); here each one converts its arguments, calls the core
//! and turns failures into PostgreSQL errors.

use std::collections::VecDeque;
use std::time::{Duration, UNIX_EPOCH};

use koe5_core::{Kind, ModelSpec};
use pgrx::prelude::*;
use pgrx::{Array, JsonB, PgSqlErrorCode};
use serde_json::json;

use crate::encoding::to_utf8;
use crate::ereport::{raise, report, OrRaise};
use crate::gucs;
use crate::session::{self, check_interrupts};

/// Texts embedded per round of a batch call: results stream out as rounds finish, so
/// memory stays bounded however long the input array is.
const ROUND: usize = 256;

fn embed_text(kind: Kind, text: &[u8]) -> Vec<f32> {
    let text = to_utf8(text);
    let model = session::model().or_raise();
    // A query in a WHERE or ORDER BY clause may be evaluated once per row.
    if kind == Kind::Query {
        if let Some(v) = model.cached_query(&text) {
            return v;
        }
    }
    let v = model.embedder.embed_one(kind, &text, &mut check_interrupts).or_raise();
    session::release_free_memory();
    session::count_embedded(1);
    if kind == Kind::Query {
        model.remember_query(&text, &v);
    }
    v
}

#[pg_extern(sql = false)]
fn koe5_query(text: &[u8]) -> Vec<f32> {
    embed_text(Kind::Query, text)
}

#[pg_extern(sql = false)]
fn koe5_passage(text: &[u8]) -> Vec<f32> {
    embed_text(Kind::Passage, text)
}

fn embed_array(kind: Kind, texts: Array<'_, &[u8]>) -> impl Iterator<Item = Option<Vec<f32>>> + 'static {
    // Copy the texts out (converted to UTF-8) so the iterator owns what it needs
    // across the calls of this set-returning function.
    let owned: Vec<Option<String>> = texts.iter().map(|t| t.map(|b| to_utf8(b).into_owned())).collect();
    if unsafe { (*texts.into_array_type()).ndim } > 1 {
        data_error(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "array must be one-dimensional");
    }
    let texts = owned;
    let model = session::model().or_raise();
    let mut next = 0;
    let mut ready: VecDeque<Option<Vec<f32>>> = VecDeque::new();
    std::iter::from_fn(move || {
        if ready.is_empty() && next < texts.len() {
            let end = (next + ROUND).min(texts.len());
            let round = &texts[next..end];
            let present: Vec<&str> = round.iter().flatten().map(String::as_str).collect();
            let mut vectors = model.embedder.embed_many(kind, &present, &mut check_interrupts).or_raise().into_iter();
            session::release_free_memory();
            session::count_embedded(present.len());
            for t in round {
                ready.push_back(t.as_ref().map(|_| vectors.next().expect("one vector per text")));
            }
            next = end;
        }
        ready.pop_front()
    })
}

#[pg_extern(sql = false)]
fn koe5_query_batch(texts: Array<'_, &[u8]>) -> SetOfIterator<'static, Option<Vec<f32>>> {
    SetOfIterator::new(embed_array(Kind::Query, texts))
}

#[pg_extern(sql = false)]
fn koe5_passage_batch(texts: Array<'_, &[u8]>) -> SetOfIterator<'static, Option<Vec<f32>>> {
    SetOfIterator::new(embed_array(Kind::Passage, texts))
}

fn data_error(code: PgSqlErrorCode, message: &str) -> ! {
    report(code, message.to_owned(), None, None)
}

/// The elements of a one-dimensional real[] without NULLs, NaN or infinity.
fn plain_vector(a: Array<'_, f32>) -> Vec<f32> {
    let v: Vec<f32> = a
        .iter()
        .map(|x| {
            x.unwrap_or_else(|| {
                data_error(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "array must not contain nulls")
            })
        })
        .collect();
    let ndim = unsafe { (*a.into_array_type()).ndim };
    if ndim > 1 {
        data_error(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "array must be one-dimensional");
    }
    if v.iter().any(|x| !x.is_finite()) {
        data_error(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "array must not contain NaN or infinity");
    }
    v
}

#[pg_extern(sql = false)]
fn koe5_similarity(a: Array<'_, f32>, b: Array<'_, f32>) -> f32 {
    let (a, b) = (plain_vector(a), plain_vector(b));
    if a.len() != b.len() {
        report(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("different vector dimensions {} and {}", a.len(), b.len()),
            None,
            None,
        );
    }
    if a.is_empty() {
        data_error(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "cannot compute the similarity of empty arrays");
    }
    koe5_core::cosine(&a, &b).unwrap_or_else(|| {
        report(
            PgSqlErrorCode::ERRCODE_DIVISION_BY_ZERO,
            "cannot compute the cosine similarity of a zero vector".into(),
            None,
            None,
        )
    })
}

#[pg_extern(sql = false)]
fn koe5_token_count(text: &[u8]) -> i32 {
    let text = to_utf8(text);
    let model = session::model().or_raise();
    let n = model.embedder.token_count(Kind::Passage, &text, &mut check_interrupts).or_raise();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What this backend has embedded, for monitoring and for tests that count work.
#[pg_extern(sql = false)]
fn koe5_backend_stats(
) -> TableIterator<'static, (name!(texts_embedded, i64), name!(query_cache_hits, i64), name!(query_cache_entries, i32))>
{
    let s = session::stats();
    let entries = session::loaded().map_or(0, |m| m.cached_queries());
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    TableIterator::once((n(s.texts_embedded), n(s.query_cache_hits), i32::try_from(entries).unwrap_or(i32::MAX)))
}

/// A document cut into pieces the model takes whole. The pieces come back as UTF-8
/// bytes; the SQL wrapper koe5_chunks() converts them to the server encoding.
#[pg_extern(sql = false)]
fn koe5_chunks_utf8(
    doc: &[u8],
    max_tokens: i32,
    overlap_tokens: i32,
) -> TableIterator<'static, (name!(ord, i32), name!(chunk, Vec<u8>), name!(n_tokens, i32))> {
    let (Ok(max_tokens), Ok(overlap)) = (usize::try_from(max_tokens), usize::try_from(overlap_tokens)) else {
        data_error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "max_tokens and overlap_tokens must not be negative",
        )
    };
    let doc = to_utf8(doc);
    let model = session::model().or_raise();
    let chunks = model.embedder.chunks(Kind::Passage, &doc, max_tokens, overlap, &mut check_interrupts).or_raise();
    let rows: Vec<_> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ord = i32::try_from(i + 1).unwrap_or(i32::MAX);
            (ord, doc[c.start..c.end].as_bytes().to_vec(), i32::try_from(c.n_tokens).unwrap_or(i32::MAX))
        })
        .collect();
    TableIterator::new(rows)
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `info` for a model that cannot be described further: not loaded, and why.
fn unavailable(mut info: serde_json::Value, error: &str) -> JsonB {
    info["loaded"] = json!(false);
    info["error"] = json!(error);
    JsonB(info)
}

/// The SHA-256 of a weights file this backend has not loaded, hashed on disk; a file
/// that cannot be read is reported in `info`, not raised.
fn hash_on_disk(info: &mut serde_json::Value, weights: &std::path::Path) {
    match session::weights_sha256(weights) {
        Ok(hex) => info["sha256"] = json!(hex),
        Err(e) => {
            info["sha256"] = json!(null);
            info["error"] = json!(e.message);
        }
    }
}

#[pg_extern(sql = false)]
fn koe5_model_info() -> JsonB {
    let mut info = json!({
        "model_path": gucs::model_path().map(|p| p.display().to_string()),
        "model_id": gucs::model_id(),
        "precision": gucs::precision().name(),
    });
    if gucs::precision_is_auto() {
        info["precision_auto"] = json!(koe5_core::Precision::auto_choice().1);
    }
    if let Some((_, message, _, _)) = gucs::dropped_pin() {
        return unavailable(info, &message);
    }
    let dir = match session::resolve_dir() {
        Ok(d) => d,
        Err(e) => return unavailable(info, &e.message),
    };
    info["directory"] = json!(dir.display().to_string());
    let loaded = session::loaded().filter(|m| m.from.dir == dir && m.embedder.precision == gucs::precision());
    let spec = match &loaded {
        Some(m) => m.embedder.spec.clone(),
        None => match ModelSpec::read(&dir) {
            Ok(s) => s,
            Err(e) => return unavailable(info, &e.message),
        },
    };
    info["architecture"] = json!(spec.encoder.architecture().name());
    info["dimension"] = json!(spec.dimension());
    info["max_tokens"] = json!(spec.max_tokens);
    info["pooling"] = json!(spec.pooling.name());
    info["normalize"] = json!(spec.normalize);
    info["layers"] = json!(spec.encoder.num_hidden_layers);
    info["weights"] = json!(spec.weights.display().to_string());
    // The loaded model's hash is of the bytes it was read from; a model not loaded here
    // is hashed on disk, and a file that cannot be read is reported, not raised.
    match &loaded {
        Some(m) => {
            info["sha256"] = json!(m.embedder.weights_sha256);
            info["loaded"] = json!(true);
            info["load_time_ms"] = json!(millis(m.embedder.load_time));
            info["preloaded"] = json!(m.from.preloaded);
            let at = m.from.loaded_at.duration_since(UNIX_EPOCH).unwrap_or_default();
            info["loaded_at_unix"] = json!(at.as_secs());
        }
        None => {
            hash_on_disk(&mut info, &spec.weights);
            info["loaded"] = json!(false);
            info["load_time_ms"] = json!(null);
        }
    }
    JsonB(info)
}

#[pg_extern(sql = false)]
fn koe5_download() -> String {
    download(koe5_core::hub::Kind::Embedder)
}

#[pg_extern(sql = false)]
fn koe5_download_which(which: &str) -> String {
    match which {
        "model" => download(koe5_core::hub::Kind::Embedder),
        "reranker" => download(koe5_core::hub::Kind::Reranker),
        _ => report(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid download \"{which}\""),
            None,
            Some("Use 'model' (koe5.model_id) or 'reranker' (koe5.reranker_id).".into()),
        ),
    }
}

/// Downloads koe5.model_id or koe5.reranker_id into the server's Hugging Face cache.
fn download(kind: koe5_core::hub::Kind) -> String {
    // EXECUTE is revoked from PUBLIC: superusers call this, and roles they GRANT it to.
    gucs::check_pins();
    let id = match kind {
        koe5_core::hub::Kind::Embedder => gucs::model_id(),
        koe5_core::hub::Kind::Reranker => gucs::reranker_id(),
    };
    koe5_core::hub::check_model_id(&id).or_raise();
    let cache = koe5_core::hub::cache_dir();
    // The download runs on a thread of its own while this backend waits for it and
    // stays cancellable. A download that ends is joined; a cancelled one's thread is
    // left to finish on its own (`session::spawn` says why that is safe).
    let (tx, rx) = std::sync::mpsc::channel();
    let worker_id = id.clone();
    let thread = session::spawn("koe5-download", move || {
        let _ = tx.send(koe5_core::hub::download(&cache, &worker_id, kind));
    })
    .unwrap_or_else(|e| {
        report(PgSqlErrorCode::ERRCODE_SYSTEM_ERROR, format!("could not start download thread: {e}"), None, None)
    });
    let downloaded = loop {
        check_interrupts();
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => break Some(result),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    // It has sent its result (or panicked): all that is left of it is its exit.
    let _ = thread.join();
    match downloaded {
        Some(Ok(dir)) => dir.display().to_string(),
        Some(Err(e)) => raise(e),
        None => report(PgSqlErrorCode::ERRCODE_SYSTEM_ERROR, format!("download of \"{id}\" failed"), None, None),
    }
}

/// Passages scored per round of `koe5_rerank`: results stream out as rounds finish.
const RERANK_ROUND: usize = 256;

#[pg_extern(sql = false)]
fn koe5_rerank_score(query: &[u8], passage: &[u8]) -> f32 {
    let (query, passage) = (to_utf8(query), to_utf8(passage));
    let m = session::reranker().or_raise();
    let score = m.reranker.rerank(&query, &[&passage], &mut check_interrupts).or_raise()[0];
    session::release_free_memory();
    score
}

#[pg_extern(sql = false)]
fn koe5_rerank(query: &[u8], passages: Array<'_, &[u8]>) -> SetOfIterator<'static, Option<f32>> {
    let query = to_utf8(query).into_owned();
    let owned: Vec<Option<String>> = passages.iter().map(|t| t.map(|b| to_utf8(b).into_owned())).collect();
    if unsafe { (*passages.into_array_type()).ndim } > 1 {
        data_error(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "array must be one-dimensional");
    }
    // Nothing to score (an empty list of candidates): no rows, and no model needed.
    if owned.is_empty() {
        return SetOfIterator::new(Vec::new());
    }
    let m = session::reranker().or_raise();
    let mut next = 0;
    let mut ready: VecDeque<Option<f32>> = VecDeque::new();
    SetOfIterator::new(std::iter::from_fn(move || {
        if ready.is_empty() && next < owned.len() {
            let end = (next + RERANK_ROUND).min(owned.len());
            let round = &owned[next..end];
            let present: Vec<&str> = round.iter().flatten().map(String::as_str).collect();
            let mut scores = m.reranker.rerank(&query, &present, &mut check_interrupts).or_raise().into_iter();
            session::release_free_memory();
            for p in round {
                ready.push_back(p.as_ref().map(|_| scores.next().expect("one score per passage")));
            }
            next = end;
        }
        ready.pop_front()
    }))
}

#[pg_extern(sql = false)]
fn koe5_reranker_info() -> JsonB {
    let mut info = json!({
        "reranker_path": gucs::reranker_path().map(|p| p.display().to_string()),
        "reranker_id": gucs::reranker_id(),
        "precision": gucs::precision().name(),
    });
    if let Some((_, message, _, _)) = gucs::dropped_pin() {
        return unavailable(info, &message);
    }
    let dir = match session::resolve_reranker_dir() {
        Ok(d) => d,
        Err(e) => return unavailable(info, &e.message),
    };
    info["directory"] = json!(dir.display().to_string());
    let loaded = session::loaded_reranker().filter(|m| m.from.dir == dir && m.reranker.precision == gucs::precision());
    let spec = match &loaded {
        Some(m) => m.reranker.spec.clone(),
        None => match koe5_core::RerankerSpec::read(&dir) {
            Ok(s) => s,
            Err(e) => return unavailable(info, &e.message),
        },
    };
    info["architecture"] = json!("XLMRobertaForSequenceClassification");
    info["max_tokens"] = json!(spec.max_tokens);
    info["activation"] = json!(spec.score.name());
    info["layers"] = json!(spec.encoder.num_hidden_layers);
    info["hidden_size"] = json!(spec.encoder.hidden_size);
    info["weights"] = json!(spec.weights.display().to_string());
    match &loaded {
        Some(m) => {
            info["sha256"] = json!(m.reranker.weights_sha256);
            info["loaded"] = json!(true);
            info["load_time_ms"] = json!(millis(m.reranker.load_time));
            info["preloaded"] = json!(m.from.preloaded);
            let at = m.from.loaded_at.duration_since(UNIX_EPOCH).unwrap_or_default();
            info["loaded_at_unix"] = json!(at.as_secs());
        }
        None => {
            hash_on_disk(&mut info, &spec.weights);
            info["loaded"] = json!(false);
        }
    }
    JsonB(info)
}
