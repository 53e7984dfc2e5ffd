//! Weighted round robin in nginx's "smooth" order, lock-free.
//!
//! The smooth sequence is periodic, so it is computed once when the config is compiled and the request path only
//! bumps an atomic counter to index it. Weights are divided by their gcd first, and a very long period is scaled
//! down to [`MAX_PERIOD`] picks (approximating extreme ratios) to bound memory.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The longest precomputed sequence.
pub const MAX_PERIOD: u64 = 4096;

/// The balancing state of one upstream; kept across recompiles while the upstream is unchanged.
#[derive(Debug)]
pub struct Balancer {
    /// Node indexes in smooth WRR order; weight-0 nodes never appear.
    sequence: Box<[u32]>,
    /// How many nodes appear in the sequence.
    eligible: usize,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer over nodes with these weights (by node index).
    pub fn new(weights: &[u32]) -> Balancer {
        let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
        let total: u64 = w.iter().sum();
        if total > MAX_PERIOD {
            // Keep every positive weight at least 1 so no node silently disappears.
            for x in w.iter_mut().filter(|x| **x > 0) {
                *x = (*x * MAX_PERIOD / total).max(1);
            }
        }
        let g = w.iter().copied().filter(|&x| x > 0).fold(0, gcd);
        if g > 1 {
            w.iter_mut().for_each(|x| *x /= g);
        }
        let total: u64 = w.iter().sum();
        let eligible = w.iter().filter(|&&x| x > 0).count();
        let mut current = vec![0i64; w.len()];
        let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let signed: Vec<i64> = w.iter().map(|&x| i64::try_from(x).unwrap_or(i64::MAX)).collect();
        let total_signed = i64::try_from(total).unwrap_or(i64::MAX);
        for _ in 0..total {
            let mut best = 0;
            for (i, weight) in signed.iter().enumerate() {
                current[i] += weight;
                // Strictly greater: on ties the first node wins, as in nginx.
                if current[i] > current[best] || signed[best] == 0 {
                    best = i;
                }
            }
            current[best] -= total_signed;
            sequence.push(u32::try_from(best).unwrap_or(0));
        }
        Balancer { sequence: sequence.into_boxed_slice(), eligible, next: AtomicUsize::new(0) }
    }

    /// How many nodes can receive traffic (positive weight).
    pub fn eligible(&self) -> usize {
        self.eligible
    }

    /// The next node in order as `(position, node index)`; `None` when no node has a positive weight.
    pub fn pick(&self) -> Option<(usize, usize)> {
        if self.sequence.is_empty() {
            return None;
        }
        let pos = self.next.fetch_add(1, Ordering::Relaxed) % self.sequence.len();
        Some((pos, self.sequence[pos] as usize))
    }

    /// After a failure at `pos`, the next node in order that is not in `tried`.
    pub fn retry(&self, pos: usize, tried: &[usize]) -> Option<(usize, usize)> {
        let len = self.sequence.len();
        (1..len)
            .map(|step| (pos + step) % len)
            .map(|p| (p, self.sequence[p] as usize))
            .find(|(_, n)| !tried.contains(n))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(weights: &[u32], n: usize) -> Vec<usize> {
        let b = Balancer::new(weights);
        (0..n).map(|_| b.pick().unwrap().1).collect()
    }

    #[test]
    fn follows_smooth_weighted_order() {
        // nginx's documented example: a=5, b=1, c=1 gives a a b a c a a.
        assert_eq!(order(&[5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(order(&[2, 1, 1], 8), [0, 1, 2, 0, 0, 1, 2, 0]);
        assert_eq!(order(&[2, 1], 6), [0, 1, 0, 0, 1, 0]);
        assert_eq!(order(&[1, 1, 1], 4), [0, 1, 2, 0]);
        // gcd reduction keeps the same order.
        assert_eq!(order(&[200, 100], 3), [0, 1, 0]);
    }

    #[test]
    fn weight_zero_gets_nothing() {
        let picks = order(&[0, 3, 0, 1], 400);
        assert!(!picks.contains(&0) && !picks.contains(&2));
        assert_eq!(picks.iter().filter(|&&n| n == 1).count(), 300);
        assert_eq!(Balancer::new(&[0, 0]).pick(), None);
        assert_eq!(Balancer::new(&[]).pick(), None);
        assert_eq!(Balancer::new(&[0, 2]).eligible(), 1);
    }

    #[test]
    fn caps_long_periods() {
        let b = Balancer::new(&[1_000_000, 1, 3]);
        assert!(b.sequence.len() as u64 <= MAX_PERIOD + 3);
        let picks: Vec<usize> = (0..b.sequence.len()).map(|_| b.pick().unwrap().1).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "small weights keep at least one slot");
    }

    #[test]
    fn retries_other_nodes_once_each() {
        let b = Balancer::new(&[2, 1, 1, 0]);
        let (pos, first) = b.pick().unwrap();
        let mut tried = vec![first];
        let mut p = pos;
        while let Some((np, n)) = b.retry(p, &tried) {
            tried.push(n);
            p = np;
        }
        tried.sort();
        assert_eq!(tried, [0, 1, 2]);
    }
}
