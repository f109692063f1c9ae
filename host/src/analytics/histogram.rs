//! Latency histograms that merge exactly, so p50/p99 over any set of buckets are real
//! percentiles, not averages of percentiles.
//!
//! Values are microseconds. Bins: 0–15 µs exactly, then 8 bins per power of two up to
//! 2^36 µs (~19 h), so a percentile is off by at most 1/16 (6.25 %) of its value. The bucket
//! in progress keeps a dense array (fast to update); completed buckets keep only their
//! non-empty bins.

const EXACT: usize = 16;
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const MAX_EXP: u32 = 36;
/// Number of bins.
pub const BINS: usize = EXACT + (MAX_EXP as usize - 4 + 1) * SUB;

/// Bin index of a value in microseconds.
pub fn bin(us: u64) -> usize {
    if us < EXACT as u64 {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros()).min(MAX_EXP);
    if exp == MAX_EXP && us >= (1u64 << (MAX_EXP + 1)) {
        return BINS - 1;
    }
    let sub = ((us >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    EXACT + (exp as usize - 4) * SUB + sub
}

/// Lower bound and width of a bin, in microseconds.
fn bin_range(index: usize) -> (f64, f64) {
    if index < EXACT {
        return (index as f64, 1.0);
    }
    let exp = (index - EXACT) / SUB + 4;
    let sub = (index - EXACT) % SUB;
    let width = (1u64 << (exp - SUB_BITS as usize)) as f64;
    ((1u64 << exp) as f64 + sub as f64 * width, width)
}

/// How many of `total` values lie at or below the `q` quantile (at least one).
fn rank(q: f64, total: u64) -> u64 {
    ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1)
}

/// A value representing a bin: its midpoint.
fn bin_value(index: usize) -> f64 {
    let (low, width) = bin_range(index);
    if index < EXACT {
        low
    } else {
        low + width / 2.0
    }
}

/// The histogram of the bucket in progress. Its array is allocated on the first value, so
/// a series that keeps no latencies (route × backend pairs) costs nothing here.
#[derive(Clone, Default)]
pub struct DenseHistogram {
    counts: Option<Box<[u32; BINS]>>,
}

impl DenseHistogram {
    fn counts(&mut self) -> &mut [u32; BINS] {
        self.counts.get_or_insert_with(|| Box::new([0; BINS]))
    }

    pub fn add(&mut self, us: u64) {
        let c = &mut self.counts()[bin(us)];
        *c = c.saturating_add(1);
    }

    /// The count of the bin `us` falls in (0 before the first value): reading it brings
    /// the bin's cache line in before [`add`](Self::add) writes it.
    pub fn peek(&self, us: u64) -> u32 {
        self.counts
            .as_deref()
            .and_then(|c| c.get(bin(us)))
            .copied()
            .unwrap_or(0)
    }

    /// Adds a compact histogram's counts.
    pub fn absorb(&mut self, h: &Histogram) {
        if h.bins.is_empty() {
            return;
        }
        let counts = self.counts();
        for (i, c) in &h.bins {
            if let Some(slot) = counts.get_mut(usize::from(*i)) {
                *slot = slot.saturating_add(*c);
            }
        }
    }

    /// Takes away a compact histogram's counts (one that was absorbed before: counts
    /// that saturated at `u32::MAX` do not come back exactly).
    pub fn remove(&mut self, h: &Histogram) {
        let Some(counts) = self.counts.as_deref_mut() else {
            return;
        };
        for (i, c) in &h.bins {
            if let Some(slot) = counts.get_mut(usize::from(*i)) {
                *slot = slot.saturating_sub(*c);
            }
        }
    }

    /// The quantiles `qs` (each 0 < q ≤ 1, ascending) in microseconds, as
    /// [`Histogram::quantile`] gives them; `None` when empty. One pass over the bins for
    /// all of them.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        let mut out = [None; N];
        let Some(counts) = self.counts.as_deref() else {
            return out;
        };
        let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
        if total == 0 {
            return out;
        }
        let mut next = 0;
        let mut seen = 0u64;
        for (index, count) in counts.iter().enumerate() {
            seen += u64::from(*count);
            while let Some(q) = qs.get(next)
                && seen >= rank(*q, total)
            {
                out[next] = Some(bin_value(index));
                next += 1;
            }
            if next == N {
                break;
            }
        }
        out
    }

    pub fn to_sparse(&self) -> Histogram {
        let Some(counts) = &self.counts else {
            return Histogram::default();
        };
        Histogram {
            bins: counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u16, *c))
                .collect(),
        }
    }
}

/// A compact histogram: non-empty bins in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    bins: Vec<(u16, u32)>,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|(_, c)| u64::from(*c)).sum()
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.bins.is_empty() {
            return;
        }
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    merged.push((x.0, x.1.saturating_add(y.1)));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    merged.push(**x);
                    a.next();
                }
                (Some(_), Some(y)) => {
                    merged.push(**y);
                    b.next();
                }
                (Some(x), None) => {
                    merged.push(**x);
                    a.next();
                }
                (None, Some(y)) => {
                    merged.push(**y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.bins = merged;
    }

    /// The `q` quantile (0 < q ≤ 1) in microseconds, or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = rank(q, total);
        let mut seen = 0u64;
        for (index, count) in &self.bins {
            seen += u64::from(*count);
            if seen >= rank {
                return Some(bin_value(usize::from(*index)));
            }
        }
        self.bins.last().map(|(i, _)| bin_value(usize::from(*i)))
    }

    /// Serialises as little-endian (u16 bin, u32 count) pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bins.len() * 6);
        for (i, c) in &self.bins {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Reads what [`Histogram::encode`] wrote; `None` for malformed input.
    pub fn decode(bytes: &[u8]) -> Option<Histogram> {
        if !bytes.len().is_multiple_of(6) {
            return None;
        }
        let mut bins = Vec::with_capacity(bytes.len() / 6);
        for chunk in bytes.chunks_exact(6) {
            let i = u16::from_le_bytes([chunk[0], chunk[1]]);
            let c = u32::from_le_bytes([chunk[2], chunk[3], chunk[4], chunk[5]]);
            if usize::from(i) >= BINS || bins.last().is_some_and(|(p, _)| *p >= i) {
                return None;
            }
            bins.push((i, c));
        }
        Some(Histogram { bins })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: impl IntoIterator<Item = u64>) -> Histogram {
        let mut d = DenseHistogram::default();
        for v in values {
            d.add(v);
        }
        d.to_sparse()
    }

    #[test]
    fn bins_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 1 << 30, (1 << 36) + 5, u64::MAX]) {
            let b = bin(v);
            assert!(b >= last, "bin({v}) went backwards");
            assert!(b < BINS);
            last = b;
            if v < (1 << 36) {
                let (low, width) = bin_range(b);
                assert!(
                    v as f64 >= low && (v as f64) < low + width,
                    "{v} outside bin {b}"
                );
            }
        }
    }

    #[test]
    fn quantiles_are_within_the_bin_error() {
        // 1..=10_000 µs uniformly: p50 ≈ 5000, p99 ≈ 9900.
        let h = hist(1..=10_000);
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.0625, "p50 {p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.0625, "p99 {p99}");
        assert_eq!(
            hist([7, 7, 7]).quantile(0.99),
            Some(7.0),
            "small values are exact"
        );
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn dense_and_compact_quantiles_agree() {
        let values: Vec<u64> = (0..5_000u64).map(|i| (i * 7919) % 40_000).collect();
        let mut dense = DenseHistogram::default();
        for v in &values {
            dense.add(*v);
        }
        let sparse = dense.to_sparse();
        let qs = [0.01, 0.5, 0.5, 0.9, 0.99, 1.0];
        assert_eq!(dense.quantiles(qs), qs.map(|q| sparse.quantile(q)));
        assert_eq!(DenseHistogram::default().quantiles([0.5]), [None]);
    }

    #[test]
    fn merging_equals_recording_together() {
        let mut a = hist([10, 200, 3000, 3000]);
        let b = hist([5, 200, 90_000]);
        a.merge(&b);
        assert_eq!(a, hist([10, 200, 3000, 3000, 5, 200, 90_000]));
        assert_eq!(a.count(), 7);
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let h = hist([1, 50, 50, 1_000_000]);
        assert_eq!(Histogram::decode(&h.encode()), Some(h));
        assert_eq!(Histogram::decode(&[1, 2, 3]), None);
        assert_eq!(
            Histogram::decode(&[0xff, 0xff, 1, 0, 0, 0]),
            None,
            "bin out of range"
        );
    }
}
