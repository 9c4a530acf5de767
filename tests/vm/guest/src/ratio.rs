//! Benchmark arithmetic. Platform-neutral, so the host's `cargo test` checks it.

/// The median of `values` (sorted in place); 0 for an empty slice.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { f64::midpoint(values[mid - 1], values[mid]) }
}

/// Per-round ratios `after[i] / before[i]` (rounds where `before` is 0 are left out),
/// so both sides of each ratio saw the same moment's load.
pub fn paired_ratios(before: &[f64], after: &[f64]) -> alloc::vec::Vec<f64> {
    before.iter().zip(after).filter(|(b, _)| **b > 0.0).map(|(b, a)| a / b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_paired_ratios() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&mut [4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
        assert!(median(&mut []).abs() < 1e-12);
        let r = paired_ratios(&[1.0, 0.0, 2.0], &[2.0, 5.0, 1.0]);
        assert_eq!(r.len(), 2);
        assert!((r[0] - 2.0).abs() < 1e-12 && (r[1] - 0.5).abs() < 1e-12);
    }
}
