//! Integer arithmetic of points: rounding a division per [`RoundingMode`], and allocating a
//! total over lines in proportion to their weights (largest remainder, never losing a point).

use super::*;

/// `numerator / denominator` rounded per `mode` (`denominator > 0`). Nearest rounds half up.
pub fn round_div(numerator: i128, denominator: i128, mode: RoundingMode) -> i128 {
    if denominator <= 0 {
        return 0;
    }
    let floor = numerator.div_euclid(denominator);
    let rem = numerator.rem_euclid(denominator);
    match mode {
        RoundingMode::Floor => floor,
        RoundingMode::Ceil => floor + i128::from(rem != 0),
        RoundingMode::Nearest => floor + i128::from(rem >= denominator - rem),
    }
}

/// Distributes `total` points over lines in proportion to their positive weights (largest
/// remainder; ties go to the earlier line). Lines with a weight ≤ 0 get 0. The result adds up
/// to `total` whenever some weight is positive.
pub(super) fn allocate(total: i64, weights: &[i128]) -> Vec<i64> {
    let mut out = vec![0_i64; weights.len()];
    let positive: i128 = weights
        .iter()
        .filter(|w| **w > 0)
        .fold(0_i128, |a, w| a.saturating_add(*w));
    if total <= 0 || positive <= 0 {
        return out;
    }
    let mut remainders = Vec::new();
    let mut given: i64 = 0;
    for (index, w) in weights.iter().enumerate() {
        if *w <= 0 {
            continue;
        }
        match i128::from(total).checked_mul(*w) {
            Some(product) if positive < i128::MAX => {
                let share = product / positive;
                out[index] = i64::try_from(share).unwrap_or(0);
                given = given.saturating_add(out[index]);
                remainders.push((product % positive, index));
            }
            _ => {
                // Absurd magnitudes only: fall back to giving everything to the first lines.
                return greedy(total, weights);
            }
        }
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = total - given;
    for (_, index) in remainders.iter().cycle() {
        if left <= 0 {
            break;
        }
        out[*index] += 1;
        left -= 1;
    }
    out
}

pub(super) fn greedy(total: i64, weights: &[i128]) -> Vec<i64> {
    let mut out = vec![0_i64; weights.len()];
    if let Some(first) = weights.iter().position(|w| *w > 0) {
        out[first] = total;
    }
    out
}
