//! Grouping inputs into padded batches under a token budget.

/// Splits inputs into batches. Inputs are sorted by length (longest first); a batch
/// holds at most `max_batch` inputs, at most `token_budget` padded tokens (a single
/// input longer than the budget gets a batch of its own), and only inputs at least
/// three quarters as long as its longest, so padding never exceeds a quarter of the
/// work. Returns indices into `lens`.
pub fn plan(lens: &[usize], token_budget: usize, max_batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted longest first: the batch's padded length is its first input's.
        let width = current.first().map_or(lens[i], |&f| lens[f]);
        let full = current.len() >= max_batch || (current.len() + 1) * width > token_budget;
        let too_short = lens[i] * 4 < width * 3;
        if !current.is_empty() && (full || too_short) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
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
            let width = b.iter().map(|&i| lens[i]).max().unwrap();
            assert!(b.len() <= 16);
            assert!(b.len() == 1 || b.len() * width <= 2048, "{b:?}");
            let shortest = b.iter().map(|&i| lens[i]).min().unwrap();
            assert!(shortest * 4 >= width * 3, "{b:?} pads more than a quarter");
        }
    }

    #[test]
    fn oversized_input_gets_its_own_batch() {
        assert_eq!(plan(&[5000, 10, 10], 1000, 8), vec![vec![0], vec![1, 2]]);
        assert_eq!(plan(&[512, 100, 512, 90], 4096, 8), vec![vec![0, 2], vec![1, 3]]);
        assert!(plan(&[], 1000, 8).is_empty());
    }
}
