//! The koe5 core's side of the benchmark (bench/run.py): embeds the corpus's passages
//! in batches and its queries one at a time, and prints one JSON object with the
//! timings; with a third argument, writes the passage vectors there (f32, little-endian,
//! row after row) for the accuracy check.
//!
//!   KOE5_PRECISION=f32|bf16|int8 cargo run --release -p koe5-core --example bench_core -- MODEL_DIR bench/corpus.json [VECTORS.f32]

use std::time::Instant;

use koe5_core::{Embedder, Kind, Precision};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, corpus, rest @ ..] = args.as_slice() else {
        return Err("usage: bench_core MODEL_DIR CORPUS.json [VECTORS.f32]".into());
    };
    let corpus: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(corpus)?)?;
    let texts = |key: &str| -> Vec<String> {
        corpus[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    let (passages, queries) = (texts("passages"), texts("queries"));
    let tokens: u64 = corpus["passage_tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();

    let t = Instant::now();
    let precision = std::env::var("KOE5_PRECISION").unwrap_or_else(|_| "f32".into());
    let precision = Precision::parse(&precision).ok_or("KOE5_PRECISION is f32, bf16, int8 or auto")?;
    let e = Embedder::load_with(dir.as_ref(), precision, &mut || {})?;
    let load_s = t.elapsed().as_secs_f64();
    // Warm-up: one of each, so the thread pool and allocator are ready.
    e.embed_one(Kind::Query, &queries[0], &mut || {})?;

    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    // The batches embed_many makes (koe5 packs a batch's texts back to back: no padding).
    let lens: Vec<usize> =
        refs.iter().map(|t| e.tokenize(Kind::Passage, t).map(|ids| ids.len())).collect::<Result<_, _>>()?;
    let plan = koe5_core::batch::plan(&lens, koe5_core::DEFAULT_TOKEN_BUDGET, koe5_core::DEFAULT_MAX_BATCH);
    let t = Instant::now();
    let vectors = e.embed_many(Kind::Passage, &refs, &mut || {})?;
    let passage_s = t.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(queries.len());
    for q in &queries {
        let t = Instant::now();
        e.embed_one(Kind::Query, q, &mut || {})?;
        latencies.push(t.elapsed().as_secs_f64());
    }
    latencies.sort_by(f64::total_cmp);

    if let Some(out) = rest.first() {
        let mut bytes = Vec::with_capacity(vectors.len() * e.dimension() * 4);
        for v in &vectors {
            for x in v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        std::fs::write(out, bytes)?;
    }
    let threads = rayon_threads();
    println!(
        "{}",
        serde_json::json!({
            "load_s": load_s,
            "passages": passages.len(),
            "passage_tokens": tokens,
            "passage_s": passage_s,
            "passages_per_s": passages.len() as f64 / passage_s,
            "tokens_per_s": tokens as f64 / passage_s,
            "query_p50_ms": percentile(&latencies, 0.5) * 1e3,
            "query_p95_ms": percentile(&latencies, 0.95) * 1e3,
            "threads": threads,
            "precision": precision.name(),
            "batches": plan.len(),
            // What `auto` (the default) resolves to on this CPU, and why.
            "auto": Precision::auto_choice().0.name(),
            "auto_why": Precision::auto_choice().1,
        })
    );
    Ok(())
}

/// The compute threads candle uses (rayon's global pool, RAYON_NUM_THREADS or one per core).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}
