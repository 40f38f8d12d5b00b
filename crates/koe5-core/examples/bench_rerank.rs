//! The koe5 core's side of the reranking benchmark (bench/rerank.py): scores each
//! query's candidate passages with the cross-encoder, as `koe5_rerank(query, passages)`
//! does (one call per query, packed batches under the default token budget), and prints
//! one JSON object with the timings; writes the raw logits (one list per query) to
//! LOGITS.json for the accuracy check.
//!
//!   KOE5_PRECISION=f32|bf16|int8 cargo run --release -p koe5-core --example bench_rerank -- MODEL_DIR INPUT.json LOGITS.json
//!
//! INPUT.json: {"queries": [{"query": "...", "passages": ["...", ...]}, ...]}.

use std::time::Instant;

use koe5_core::{Precision, Reranker, DEFAULT_MAX_BATCH, DEFAULT_TOKEN_BUDGET};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, input, out] = args.as_slice() else {
        return Err("usage: bench_rerank MODEL_DIR INPUT.json LOGITS.json".into());
    };
    let input: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(input)?)?;
    let precision = std::env::var("KOE5_PRECISION").unwrap_or_else(|_| "f32".into());
    let precision = Precision::parse(&precision).ok_or("KOE5_PRECISION is f32, bf16, int8 or auto")?;
    let t = Instant::now();
    let r = Reranker::load_with(dir.as_ref(), precision, &mut || {})?;
    let load_s = t.elapsed().as_secs_f64();

    let queries = input["queries"].as_array().ok_or("no queries")?;
    // Warm-up: one pair, so the thread pool and allocator are ready.
    let first = &queries[0];
    r.rerank(first["query"].as_str().unwrap(), &[first["passages"][0].as_str().unwrap()], &mut || {})?;

    let (mut pairs, mut tokens, mut seconds) = (0usize, 0usize, 0f64);
    let mut per_query = Vec::new();
    let mut logits = Vec::new();
    for q in queries {
        let query = q["query"].as_str().unwrap();
        let passages: Vec<&str> = q["passages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        for p in &passages {
            tokens += r.pair_ids(query, p, &mut || {})?.len();
        }
        let t = Instant::now();
        let l = r.logits_with(query, &passages, DEFAULT_TOKEN_BUDGET, DEFAULT_MAX_BATCH, &mut || {})?;
        let s = t.elapsed().as_secs_f64();
        per_query.push(s);
        seconds += s;
        pairs += passages.len();
        logits.push(l);
    }
    std::fs::write(out, serde_json::to_string(&logits)?)?;
    println!(
        "{}",
        serde_json::json!({
            "load_s": load_s,
            "pairs": pairs,
            "pair_tokens": tokens,
            "seconds": seconds,
            "per_query_s": per_query,
            "pairs_per_s": pairs as f64 / seconds,
            "tokens_per_s": tokens as f64 / seconds,
            "precision": precision.name(),
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}
