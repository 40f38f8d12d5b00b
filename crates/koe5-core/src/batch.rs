//! Grouping inputs into batches under a token budget.

/// Tokens per forward pass (texts packed back to back, no padding). A forward pass
/// holds its activations once, in buffers every layer reuses: `budget × 10 × hidden`
/// f32 values (the layer's input, Q/K/V, attention's output, its normalised sum, the
/// FFN's expansion) and a bf16 copy of the widest input, about 96 MiB for KoE5;
/// attention keeps only a few rows of scores per task. The largest step between two
/// interrupt checks (the FFN expansion of one batch) is then about 17 GFLOP: a cancel
/// landed within 0.052 s at KoE5's size on 2 cores (stress/run.sh measures it).
pub const DEFAULT_TOKEN_BUDGET: usize = 2048;
/// Inputs per forward pass at most.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// Splits inputs into batches. Inputs are sorted by length (longest first); a batch
/// holds at most `max_batch` inputs and at most `token_budget` tokens (a single input
/// longer than the budget gets a batch of its own). The encoder packs a batch's inputs
/// back to back, so a batch computes no padding, whatever its lengths. Returns indices
/// into `lens`.
pub fn plan(lens: &[usize], token_budget: usize, max_batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0;
    for i in order {
        if !current.is_empty() && (current.len() >= max_batch || tokens + lens[i] > token_budget) {
            batches.push(std::mem::take(&mut current));
            tokens = 0;
        }
        current.push(i);
        tokens += lens[i];
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_once_and_budget_kept() {
        let lens: Vec<usize> = (0..100).map(|i| 3 + (i * 37) % 500).collect();
        let batches = plan(&lens, 2048, 16);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        for b in &batches {
            let tokens: usize = b.iter().map(|&i| lens[i]).sum();
            assert!(b.len() <= 16);
            assert!(b.len() == 1 || tokens <= 2048, "{b:?}");
        }
        // Batches are full: each but the last was closed by the next input not fitting.
        for pair in batches.windows(2) {
            let tokens: usize = pair[0].iter().map(|&i| lens[i]).sum();
            assert!(pair[0].len() == 16 || tokens + lens[pair[1][0]] > 2048, "{:?} could take more", pair[0]);
        }
    }

    #[test]
    fn oversized_input_gets_its_own_batch() {
        assert_eq!(plan(&[5000, 10, 10], 1000, 8), vec![vec![0], vec![1, 2]]);
        assert_eq!(plan(&[512, 100, 512, 90], 1200, 8), vec![vec![0, 2, 1], vec![3]]);
        assert!(plan(&[], 1000, 8).is_empty());
    }
}
