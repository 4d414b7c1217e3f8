//! Training data as compact bin codes.
//!
//! Training never holds an f64 matrix. A [`TrainingSet`] is built in two
//! streamed passes over the rows (from Arrow batches in [`crate::frame`], or
//! from an in-memory [`Dataset`]):
//!
//! 1. [`RowHashes`]: the stable hash of every row. Sorted, the hashes give
//!    the canonical order ([`CanonicalOrder`]): local and cluster runs see
//!    the rows in the same order whatever the partitioning, so they train
//!    identical models. The same pass keeps the rows with the smallest
//!    hashes ([`SampleCandidates`]); the first [`BIN_SAMPLE_ROWS`] training
//!    rows among them in canonical order fix each feature's quantile bin
//!    boundaries ([`FeatureBins`]).
//! 2. Every row is encoded straight into row-major codes ([`Codes`]: a `u8`
//!    per value up to 256 bins, a `u16` past that) at its canonical
//!    position, once per distinct `maxBins` the candidates use.
//!
//! Bin 0 is reserved for missing values (NaN / null). Test rows are encoded
//! with the training rows' boundaries, so a tree's thresholds route a code
//! exactly as they route the raw value, and test metrics come from codes.

use kiln_engine::hash::StableHasher;
use kiln_engine::{KilnError, Result};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Rows sampled to fit the bin boundaries of a training set.
pub const BIN_SAMPLE_ROWS: usize = 200_000;

/// The stable hash of one row: its label, then every feature's bits.
#[inline]
pub fn row_hash(h: &mut StableHasher, label: u32, columns: &[Vec<f64>], r: usize) -> u64 {
    h.reset();
    h.u32(label);
    for c in columns {
        h.f64(c[r]);
    }
    h.finish()
}

/// Dense feature columns (NaN = missing) and integer class labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub columns: Vec<Vec<f64>>,
    pub labels: Vec<u32>,
    pub feature_names: Vec<String>,
}

impl Dataset {
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }

    pub fn n_features(&self) -> usize {
        self.columns.len()
    }

    /// Reorders rows canonically (by content), so results do not depend on
    /// the order in which a distributed engine returned the rows.
    pub fn canonicalize(&mut self) {
        let n = self.n_rows();
        let mut h = StableHasher::new();
        let keys: Vec<u64> = (0..n).map(|r| self.row_hash(r, &mut h)).collect();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| {
            keys[a].cmp(&keys[b]).then_with(|| {
                self.columns
                    .iter()
                    .map(|c| c[a].total_cmp(&c[b]))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(self.labels[a].cmp(&self.labels[b]))
            })
        });
        for c in &mut self.columns {
            *c = idx.iter().map(|&i| c[i]).collect();
        }
        self.labels = idx.iter().map(|&i| self.labels[i]).collect();
    }

    /// The stable hash of row `r` (label, then every feature's bits).
    pub fn row_hash(&self, r: usize, h: &mut StableHasher) -> u64 {
        row_hash(h, self.labels[r], &self.columns, r)
    }

    /// A fingerprint of the content that does not depend on row order: row
    /// and feature counts and the wrapping sum of every row's stable hash.
    pub fn fingerprint(&self) -> String {
        let mut h = StableHasher::new();
        let sum = (0..self.n_rows()).fold(0u64, |s, r| s.wrapping_add(self.row_hash(r, &mut h)));
        format!(
            "rows={} features={} checksum={sum:016x}",
            self.n_rows(),
            self.n_features()
        )
    }

    /// Checks shape, finite features and labels; returns the class count.
    pub fn validate(&self, binary_only: bool) -> Result<usize> {
        self.validate_shape()?;
        validate_labels(self.labels.iter().copied(), binary_only)
    }

    /// Checks that every feature has a value per label and none is infinite.
    pub fn validate_shape(&self) -> Result<()> {
        let n = self.n_rows();
        for (c, name) in self.columns.iter().zip(&self.feature_names) {
            if c.len() != n {
                return Err(KilnError::data(
                    "training set",
                    format!("feature '{name}' has {} values for {n} labels", c.len()),
                ));
            }
            if let Some(i) = c.iter().position(|v| v.is_infinite()) {
                return Err(infinite_feature("training set", name, c[i], i));
            }
        }
        Ok(())
    }
}

/// The error for an infinite feature value.
pub fn infinite_feature(location: &str, name: &str, value: f64, row: usize) -> KilnError {
    KilnError::Data {
        location: location.into(),
        message: format!("feature '{name}' is infinite ({value}) in row {row}"),
        fix: Some("replace infinities (e.g. with a SQLTransformer) or drop the feature; NaN/null are fine and treated as missing".into()),
    }
}

/// Bin thresholds of one feature: value `x` falls in bin `1 + #{t < x}`
/// (first threshold ≥ x), missing in bin 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBins {
    pub thresholds: Vec<f64>,
}

impl FeatureBins {
    /// Quantile thresholds from a sorted sample of the non-missing values.
    pub fn fit(values: &[f64], max_bins: usize) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        let usable = max_bins.saturating_sub(1).max(1);
        let thresholds = if v.len() <= usable {
            // One bin per distinct value; thresholds halfway between values.
            v.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0).collect()
        } else {
            // Quantiles of the distinct values weighted by frequency.
            let mut all: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
            all.sort_by(f64::total_cmp);
            let mut t = Vec::with_capacity(usable);
            for q in 1..usable {
                let idx = (q * all.len()) / usable;
                let x = all[idx.min(all.len() - 1)];
                if t.last().is_none_or(|l| x > *l) {
                    t.push(x);
                }
            }
            t
        };
        FeatureBins { thresholds }
    }

    pub fn n_bins(&self) -> usize {
        self.thresholds.len() + 2
    }

    /// The code of value `x` (below `n_bins`, so below 2^16 by
    /// [`MAX_BINS`]).
    #[inline]
    pub fn bin(&self, x: f64) -> u16 {
        if x.is_nan() {
            return 0;
        }
        1 + self.thresholds.partition_point(|t| *t < x) as u16
    }

    /// The split value between bin `b` and `b + 1` (go left when x <= value).
    pub fn upper(&self, b: usize) -> f64 {
        self.thresholds.get(b - 1).copied().unwrap_or(f64::INFINITY)
    }

    /// A value that every tree split on these boundaries routes like the
    /// values of bin `code`: NaN for missing, else the bin's upper bound.
    #[inline]
    pub fn representative(&self, code: usize) -> f64 {
        if code == 0 {
            f64::NAN
        } else {
            self.upper(code)
        }
    }
}

/// The most bins a binning holds in a byte per row.
pub const NARROW_BINS: usize = 256;
/// The largest `maxBins`: codes are at most `u16`.
pub const MAX_BINS: usize = 65_536;

/// The bin codes of one binning, **row-major**: row `r`'s codes of features
/// `0..nf` are the values `r * nf .. (r + 1) * nf`, so a node's histograms
/// read one cache line per row whatever the feature count (a column per
/// feature read one per row and feature). A byte per code for a binning of
/// at most [`NARROW_BINS`] bins, two bytes past that.
#[derive(Debug, Clone, PartialEq)]
pub enum Codes {
    Narrow(Vec<u8>),
    Wide(Vec<u16>),
}

/// Runs `$body` with `$c` bound to the codes as a slice of their integer
/// type (`u8` or `u16`): one generic body, compiled for both widths, so the
/// byte case costs what it did before wide codes existed.
#[macro_export]
macro_rules! with_codes {
    ($codes:expr, |$c:ident| $body:expr) => {
        match $codes {
            $crate::data::Codes::Narrow($c) => $body,
            $crate::data::Codes::Wide($c) => $body,
        }
    };
}

/// Writes one feature's `column` (rows from `first`) into row-major codes
/// of `nf` features.
pub(crate) fn scatter<T: Copy>(column: &[T], rows: &mut [T], first: usize, f: usize, nf: usize) {
    for (r, v) in column.iter().enumerate() {
        rows[(first + r) * nf + f] = *v;
    }
}

impl Codes {
    /// `values` missing-value codes, as wide as `max_bins` needs.
    pub fn zeros(values: usize, max_bins: usize) -> Codes {
        if max_bins <= NARROW_BINS {
            Codes::Narrow(vec![0; values])
        } else {
            Codes::Wide(vec![0; values])
        }
    }

    /// Bytes per code of a binning with `max_bins` bins.
    pub fn width(max_bins: usize) -> usize {
        if max_bins <= NARROW_BINS { 1 } else { 2 }
    }

    pub fn len(&self) -> usize {
        with_codes!(self, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The code at index `i`.
    #[inline]
    pub fn get(&self, i: usize) -> usize {
        with_codes!(self, |c| c[i] as usize)
    }

    /// The codes at indices `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Codes {
        match self {
            Codes::Narrow(c) => Codes::Narrow(c[range].to_vec()),
            Codes::Wide(c) => Codes::Wide(c[range].to_vec()),
        }
    }

    /// Row-major codes from one column per feature (all of one width and
    /// length); `None` when they are not.
    pub fn interleave(columns: &[Codes]) -> Option<Codes> {
        let nf = columns.len();
        let rows = columns.first().map_or(0, Codes::len);
        if columns.iter().any(|c| c.len() != rows) {
            return None;
        }
        fn fill<T: Copy + Default>(columns: &[&[T]], rows: usize) -> Vec<T> {
            let nf = columns.len();
            let mut out = vec![T::default(); rows * nf];
            for (f, column) in columns.iter().enumerate() {
                scatter(column, &mut out, 0, f, nf);
            }
            out
        }
        match columns.first() {
            None | Some(Codes::Narrow(_)) => {
                let c: Option<Vec<&[u8]>> = columns
                    .iter()
                    .map(|c| match c {
                        Codes::Narrow(v) => Some(v.as_slice()),
                        Codes::Wide(_) => None,
                    })
                    .collect();
                Some(Codes::Narrow(fill(&c?, rows)))
            }
            Some(Codes::Wide(_)) => {
                let c: Option<Vec<&[u16]>> = columns
                    .iter()
                    .map(|c| match c {
                        Codes::Wide(v) => Some(v.as_slice()),
                        Codes::Narrow(_) => None,
                    })
                    .collect();
                Some(Codes::Wide(fill(&c?, rows)))
            }
        }
        .filter(|c| c.len() == rows * nf)
    }

    /// Copies `len` codes from `src[from..]` to `self[to..]`; both of one
    /// width (the same binning).
    fn copy_from(&mut self, to: usize, src: &Codes, from: usize, len: usize) {
        match (self, src) {
            (Codes::Narrow(d), Codes::Narrow(s)) => {
                d[to..to + len].copy_from_slice(&s[from..from + len])
            }
            (Codes::Wide(d), Codes::Wide(s)) => {
                d[to..to + len].copy_from_slice(&s[from..from + len])
            }
            _ => unreachable!("codes of one binning share a width"),
        }
    }
}

/// Row-major bin codes of one binning (one `maxBins`).
#[derive(Debug, Clone)]
pub struct Binned {
    pub max_bins: usize,
    pub n_rows: usize,
    /// `n_rows × bins.len()` codes, row by row.
    pub codes: Codes,
    pub bins: Vec<FeatureBins>,
}

impl Binned {
    /// Bins every row of `data` in its given order, with the boundaries
    /// the training path fits ([`BinSample::of`]).
    pub fn new(data: &Dataset, max_bins: usize) -> Result<Self> {
        check_max_bins(max_bins)?;
        let bins = BinSample::of(data)?
            .fit(&[max_bins])?
            .pop()
            .map(|(_, bins)| bins)
            .unwrap_or_default();
        let columns: Vec<Codes> = data
            .columns
            .par_iter()
            .zip(&bins)
            .map(|(c, b)| {
                let mut codes = Codes::zeros(c.len(), max_bins);
                with_codes!(&mut codes, |out| {
                    for (o, x) in out.iter_mut().zip(c) {
                        *o = b.bin(*x) as _;
                    }
                });
                codes
            })
            .collect();
        let codes = Codes::interleave(&columns).ok_or_else(|| {
            KilnError::internal("binning a dataset", "feature columns of different lengths")
        })?;
        Ok(Binned {
            max_bins,
            n_rows: data.n_rows(),
            codes,
            bins,
        })
    }

    pub fn n_features(&self) -> usize {
        self.bins.len()
    }

    /// The code of feature `f` in row `r`.
    #[inline]
    pub fn code(&self, f: usize, r: usize) -> usize {
        self.codes.get(r * self.bins.len() + f)
    }

    /// A raw value of feature `f` that routes like row `r` through any tree
    /// split on these boundaries (prediction from codes).
    #[inline]
    pub fn value(&self, f: usize, r: usize) -> f64 {
        self.bins[f].representative(self.code(f, r))
    }

    /// Feature `f`'s codes of rows `rows` (a column, for set files).
    pub fn column(&self, f: usize, rows: std::ops::Range<usize>) -> Codes {
        let nf = self.bins.len();
        // Empty when the range is empty (the slice then starts past its end).
        let values = (rows.start * nf + f).min(rows.end * nf)..rows.end * nf;
        match &self.codes {
            Codes::Narrow(c) => Codes::Narrow(c[values].iter().step_by(nf).copied().collect()),
            Codes::Wide(c) => Codes::Wide(c[values].iter().step_by(nf).copied().collect()),
        }
    }

    /// Rows `rows` as a binning of their own.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Binned {
        let nf = self.bins.len();
        Binned {
            max_bins: self.max_bins,
            n_rows: rows.len(),
            codes: self.codes.slice(rows.start * nf..rows.end * nf),
            bins: self.bins.clone(),
        }
    }
}

fn check_max_bins(max_bins: usize) -> Result<()> {
    if (2..=MAX_BINS).contains(&max_bins) {
        Ok(())
    } else {
        Err(KilnError::config(format!(
            "maxBins must be in 2..={MAX_BINS}, got {max_bins}"
        )))
    }
}

/// Labelled rows in canonical order, binned once for every `maxBins` the
/// candidates use. Test splits and CV folds are row-index lists over this
/// one copy.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    pub labels: Vec<u32>,
    pub feature_names: Vec<String>,
    /// One per distinct `maxBins`, ascending.
    pub binnings: Vec<Binned>,
    /// The wrapping sum of the rows' stable hashes (order-independent).
    pub checksum: u64,
}

impl TrainingSet {
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Every row index, in canonical order.
    pub fn all_rows(&self) -> Vec<u32> {
        (0..self.n_rows() as u32).collect()
    }

    /// The binning for `max_bins`.
    pub fn binned(&self, max_bins: usize) -> Result<&Binned> {
        self.binnings
            .iter()
            .find(|b| b.max_bins == max_bins)
            .ok_or_else(|| {
                KilnError::internal(
                    "looking up a binning",
                    format!("the training set was not binned for maxBins {max_bins}"),
                )
            })
    }

    /// Row and feature counts and the order-independent checksum (the same
    /// string [`Dataset::fingerprint`] gives for the same rows).
    pub fn fingerprint(&self) -> String {
        format!(
            "rows={} features={} checksum={:016x}",
            self.n_rows(),
            self.n_features(),
            self.checksum
        )
    }

    /// Checks that the rows can train a classifier; returns the class count.
    pub fn validate(&self, binary_only: bool) -> Result<usize> {
        validate_labels(self.labels.iter().copied(), binary_only)
    }

    /// The class count of `rows`, checked like [`TrainingSet::validate`].
    pub fn class_count(&self, rows: &[u32]) -> Result<usize> {
        validate_labels(rows.iter().map(|r| self.labels[*r as usize]), false)
    }

    /// Bins an in-memory dataset (boundaries from its own rows) after
    /// putting it in canonical order.
    pub fn from_dataset(data: &Dataset, max_bins: &[usize]) -> Result<Self> {
        data.validate_shape()?;
        let bins = BinSample::of(data)?.fit(max_bins)?;
        let order = RowHashes::of(&data.labels, &data.columns).finish();
        let split = Split::none(order.len());
        let mut encoder = Encoder::new(bins, &split, &data.feature_names);
        encoder.add(&order, &split, &data.labels, &data.columns)?;
        let (train, _) = encoder.finish_checked(&order)?;
        Ok(train)
    }

    /// Encodes an in-memory dataset with the boundaries of `like` (a test
    /// set for a model trained on `like`).
    pub fn encode_like(data: &Dataset, like: &TrainingSet) -> Result<Self> {
        data.validate_shape()?;
        let order = RowHashes::of(&data.labels, &data.columns).finish();
        let split = Split::none(order.len());
        let mut encoder = Encoder::like(like, &split);
        encoder.add(&order, &split, &data.labels, &data.columns)?;
        let (set, _) = encoder.finish_checked(&order)?;
        Ok(set)
    }
}

/// Checks labels: not empty, at least two classes, binary when asked;
/// returns the class count.
fn validate_labels(labels: impl Iterator<Item = u32>, binary_only: bool) -> Result<usize> {
    let mut seen: Vec<bool> = Vec::new();
    for l in labels {
        let l = l as usize;
        if l >= seen.len() {
            seen.resize(l + 1, false);
        }
        seen[l] = true;
    }
    if seen.is_empty() {
        return Err(KilnError::data("training set", "the training set is empty"));
    }
    let k = seen.len();
    if seen.iter().filter(|s| **s).count() < 2 {
        return Err(KilnError::data(
            "training set",
            "the training labels have a single class; a classifier needs at least two",
        ));
    }
    if binary_only && k > 2 {
        return Err(KilnError::data(
            "training set",
            format!(
                "labels go up to {}, but binary training needs labels in {{0, 1}}",
                k - 1
            ),
        ));
    }
    Ok(k.max(2))
}

/// Pass 1: the stable hash of every row, in arrival order, and optionally
/// the candidates of the bin sample ([`SampleCandidates`]).
#[derive(Debug, Default)]
pub struct RowHashes {
    hashes: Vec<u64>,
    classes: usize,
    sample: Option<SampleCandidates>,
}

/// Rows hashed per rayon job.
const HASH_CHUNK: usize = 2048;

fn hash_rows(labels: &[u32], columns: &[Vec<f64>]) -> Vec<u64> {
    let mut out = vec![0u64; labels.len()];
    out.par_chunks_mut(HASH_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut h = StableHasher::new();
            for (j, o) in chunk.iter_mut().enumerate() {
                let r = c * HASH_CHUNK + j;
                *o = row_hash(&mut h, labels[r], columns, r);
            }
        });
    out
}

impl RowHashes {
    pub fn of(labels: &[u32], columns: &[Vec<f64>]) -> Self {
        let mut h = RowHashes::default();
        h.add(labels, columns);
        h
    }

    /// Hashes rows and also keeps the `cap` rows of `n_features` with the
    /// smallest hashes: the bin sample's candidates.
    pub fn sampling(cap: usize, n_features: usize) -> Self {
        RowHashes {
            sample: Some(SampleCandidates::new(cap, n_features)),
            ..RowHashes::default()
        }
    }

    /// Hashes a chunk of rows (labels and column-major features).
    pub fn add(&mut self, labels: &[u32], columns: &[Vec<f64>]) {
        let start = self.hashes.len();
        self.hashes.extend(hash_rows(labels, columns));
        if let Some(sample) = &mut self.sample {
            sample.add(&self.hashes[start..], columns);
        }
        if let Some(m) = labels.iter().max() {
            self.classes = self.classes.max(*m as usize + 1);
        }
    }

    /// The canonical order and the sample candidates, if kept.
    pub fn finish_sampled(mut self) -> (CanonicalOrder, Option<SampleCandidates>) {
        let sample = self.sample.take();
        (self.finish(), sample)
    }

    /// Sorts the hashes into the canonical order.
    pub fn finish(self) -> CanonicalOrder {
        let mut sorted = self.hashes;
        drop(self.sample);
        sorted.par_sort_unstable();
        // A bucket index on the top bits: one or two probes per lookup.
        let bits = sorted
            .len()
            .next_power_of_two()
            .trailing_zeros()
            .clamp(1, 24);
        let shift = 64 - bits;
        let mut starts = vec![0u32; (1usize << bits) + 1];
        let mut i = 0usize;
        for (b, start) in starts.iter_mut().enumerate() {
            while i < sorted.len() && ((sorted[i] >> shift) as usize) < b {
                i += 1;
            }
            *start = i as u32;
        }
        CanonicalOrder {
            sorted,
            starts,
            shift,
            classes: self.classes,
        }
    }
}

/// Rows sorted by stable hash: every row's canonical rank, whatever order
/// and partitioning the engine delivers the rows in. Identical rows are
/// interchangeable, so their ranks are handed out in turn; two different
/// rows with the same 64-bit hash (about 1 in 25,000 at 38M rows) could
/// swap places between runs.
#[derive(Debug)]
pub struct CanonicalOrder {
    sorted: Vec<u64>,
    starts: Vec<u32>,
    shift: u32,
    classes: usize,
}

/// One pass's hand-out of the ranks of identical rows.
#[derive(Debug, Default)]
pub struct RankCursor {
    taken: HashMap<u32, u32>,
    seen: usize,
}

impl CanonicalOrder {
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// One more than the largest label.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The first rank with hash `h`.
    #[inline]
    fn first(&self, h: u64) -> Option<usize> {
        let b = (h >> self.shift) as usize;
        let (lo, hi) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        let i = lo + self.sorted[lo..hi].partition_point(|x| *x < h);
        (i < hi && self.sorted[i] == h).then_some(i)
    }

    /// The canonical ranks and hashes of a chunk's rows.
    pub fn ranks(
        &self,
        labels: &[u32],
        columns: &[Vec<f64>],
        cursor: &mut RankCursor,
    ) -> Result<Vec<(u32, u64)>> {
        let hashes = hash_rows(labels, columns);
        let firsts: Vec<Option<usize>> = hashes.par_iter().map(|h| self.first(*h)).collect();
        let out = hashes
            .into_iter()
            .zip(firsts)
            .map(|(h, first)| Ok((self.rank_from(h, first, cursor)?, h)))
            .collect::<Result<Vec<_>>>()?;
        cursor.seen += out.len();
        Ok(out)
    }

    /// The canonical rank of one row's hash (not counted as seen).
    fn rank(&self, h: u64, cursor: &mut RankCursor) -> Result<u32> {
        self.rank_from(h, self.first(h), cursor)
    }

    /// The rank of hash `h` whose first rank is `first`: identical rows
    /// take their ranks in turn.
    fn rank_from(&self, h: u64, first: Option<usize>, cursor: &mut RankCursor) -> Result<u32> {
        let changed = || KilnError::Data {
            location: "training input".into(),
            message: "a row appeared that the first pass over the input did not see".into(),
            fix: Some("the input changed while it was read; rerun when no one writes to it".into()),
        };
        let first = first.ok_or_else(changed)?;
        let rank = if self.sorted.get(first + 1) == Some(&h) {
            let taken = cursor.taken.entry(first as u32).or_default();
            let rank = first + *taken as usize;
            if self.sorted.get(rank) != Some(&h) {
                return Err(changed());
            }
            *taken += 1;
            rank
        } else {
            first
        };
        Ok(rank as u32)
    }

    /// Checks that a pass saw every row of the first pass.
    fn check_complete(&self, cursor: &RankCursor) -> Result<()> {
        if cursor.seen == self.len() {
            Ok(())
        } else {
            Err(KilnError::Data {
                location: "training input".into(),
                message: format!(
                    "the first pass over the input read {} rows, a later one {}",
                    self.len(),
                    cursor.seen
                ),
                fix: Some(
                    "the input changed while it was read; rerun when no one writes to it".into(),
                ),
            })
        }
    }
}

/// Where each canonical row goes: the training set or the test set, and
/// its position there (canonical order within each set).
#[derive(Debug)]
pub struct Split {
    test: Option<Vec<bool>>,
    position: Vec<u32>,
    sizes: [usize; 2],
}

impl Split {
    /// Every row trains.
    pub fn none(n: usize) -> Self {
        Split {
            test: None,
            position: (0..n as u32).collect(),
            sizes: [n, 0],
        }
    }

    /// Each row, in canonical order, is a test row with probability `fraction`.
    pub fn random(n: usize, fraction: f64, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let test: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < fraction).collect();
        let mut sizes = [0usize; 2];
        let position = test
            .iter()
            .map(|t| {
                let s = &mut sizes[usize::from(*t)];
                *s += 1;
                (*s - 1) as u32
            })
            .collect();
        Split {
            test: Some(test),
            position,
            sizes,
        }
    }

    /// Rows in the training set and in the test set.
    pub fn sizes(&self) -> [usize; 2] {
        self.sizes
    }

    /// The set (0 = train, 1 = test) and position of canonical rank `r`.
    #[inline]
    fn place(&self, r: u32) -> (usize, usize) {
        let set = self.test.as_ref().map_or(0, |t| usize::from(t[r as usize]));
        (set, self.position[r as usize] as usize)
    }
}

/// The bin sample's candidates, kept during pass 1: the rows with the
/// smallest stable hashes. Those are the first rows in canonical order, so
/// the sample is the same whatever order and partitioning the rows arrive
/// in, and no pass of its own is needed.
#[derive(Debug)]
pub struct SampleCandidates {
    cap: usize,
    n_features: usize,
    hashes: Vec<u64>,
    /// Row-major, `n_features` per candidate.
    values: Vec<f64>,
    /// A row with a larger hash is not among the `cap` smallest.
    bound: u64,
}

impl SampleCandidates {
    pub fn new(cap: usize, n_features: usize) -> Self {
        SampleCandidates {
            cap: cap.max(1),
            n_features,
            hashes: Vec::new(),
            values: Vec::new(),
            bound: u64::MAX,
        }
    }

    /// Candidates kept for a sample of `rows` training rows when each row is
    /// a test row with probability `test_fraction`.
    pub fn cap_for(rows: usize, test_fraction: f64) -> usize {
        if test_fraction <= 0.0 {
            return rows;
        }
        let train_share = (1.0 - test_fraction).max(1e-3);
        (rows as f64 / train_share * 1.1).ceil() as usize + 64
    }

    fn add(&mut self, hashes: &[u64], columns: &[Vec<f64>]) {
        for (i, &h) in hashes.iter().enumerate() {
            if h <= self.bound {
                self.hashes.push(h);
                self.values.extend(columns.iter().map(|c| c[i]));
            }
        }
        if self.hashes.len() > self.cap + self.cap / 4 {
            self.shrink();
        }
    }

    /// Keeps the rows whose hash is at most the `cap`-th smallest (ties
    /// are identical rows or, rarely, equal hashes: all are kept).
    fn shrink(&mut self) {
        if self.hashes.len() <= self.cap {
            return;
        }
        let mut sorted = self.hashes.clone();
        let (_, bound, _) = sorted.select_nth_unstable(self.cap - 1);
        self.bound = *bound;
        let nf = self.n_features;
        let mut kept = 0;
        for i in 0..self.hashes.len() {
            if self.hashes[i] <= self.bound {
                self.hashes[kept] = self.hashes[i];
                self.values.copy_within(i * nf..(i + 1) * nf, kept * nf);
                kept += 1;
            }
        }
        self.hashes.truncate(kept);
        self.values.truncate(kept * nf);
    }

    /// The first `rows` training rows in canonical order among the
    /// candidates: the sample that fixes the bin boundaries.
    pub fn finish(
        mut self,
        order: &CanonicalOrder,
        split: &Split,
        rows: usize,
    ) -> Result<BinSample> {
        self.shrink();
        let nf = self.n_features;
        let mut by_hash: Vec<usize> = (0..self.hashes.len()).collect();
        by_hash.sort_by_key(|&i| self.hashes[i]);
        let mut columns = vec![Vec::new(); nf];
        let mut cursor = RankCursor::default();
        let mut taken = 0;
        for i in by_hash {
            if taken == rows {
                break;
            }
            let rank = order.rank(self.hashes[i], &mut cursor)?;
            if split.place(rank).0 == 0 {
                for (c, v) in columns.iter_mut().zip(&self.values[i * nf..(i + 1) * nf]) {
                    c.push(*v);
                }
                taken += 1;
            }
        }
        Ok(BinSample { columns })
    }
}

/// The sample of training rows the bin boundaries come from, and the drift
/// reference.
#[derive(Debug)]
pub struct BinSample {
    columns: Vec<Vec<f64>>,
}

impl BinSample {
    /// The sample of an in-memory dataset: its [`BIN_SAMPLE_ROWS`] first
    /// rows in canonical order.
    pub fn of(data: &Dataset) -> Result<BinSample> {
        let mut hashes = RowHashes::sampling(BIN_SAMPLE_ROWS, data.n_features());
        hashes.add(&data.labels, &data.columns);
        let (order, sample) = hashes.finish_sampled();
        let split = Split::none(order.len());
        match sample {
            Some(s) => s.finish(&order, &split, BIN_SAMPLE_ROWS),
            None => Ok(BinSample {
                columns: vec![Vec::new(); data.n_features()],
            }),
        }
    }

    /// Each feature's reference distribution for drift monitoring: the
    /// same sampled rows that fix the bin boundaries.
    pub fn reference(&self) -> Vec<crate::drift::Reference> {
        self.columns
            .par_iter()
            .map(|c| crate::drift::Reference::from_values(c))
            .collect()
    }

    /// The boundaries for each distinct `max_bins` (sorted, deduplicated).
    /// Sample order does not matter: [`FeatureBins::fit`] sorts.
    pub fn fit(self, max_bins: &[usize]) -> Result<Vec<(usize, Vec<FeatureBins>)>> {
        let mut wanted = max_bins.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
            .into_iter()
            .map(|m| {
                check_max_bins(m)?;
                Ok((
                    m,
                    self.columns
                        .par_iter()
                        .map(|c| FeatureBins::fit(c, m))
                        .collect(),
                ))
            })
            .collect()
    }
}

/// Scores one row given its raw feature values (`value(f)` for feature `f`):
/// another model's class probabilities, e.g. the champion's.
pub type RowScorer = dyn Fn(&dyn Fn(usize) -> f64) -> Vec<f64> + Sync;

/// Rows a rayon job of [`Encoder`] bins.
const ENCODE_BLOCK_ROWS: usize = 4096;

/// Pass 3: every row's label and codes, written at its canonical position
/// in the training or the test set; optionally also a scorer's output for
/// the rows of one set, by position.
pub struct Encoder {
    sets: [TrainingSet; 2],
    cursor: RankCursor,
    scored: Option<(usize, Vec<Vec<f64>>)>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("sets", &self.sets)
            .field("scored_set", &self.scored.as_ref().map(|(s, _)| s))
            .finish()
    }
}

impl Encoder {
    pub fn new(bins: Vec<(usize, Vec<FeatureBins>)>, split: &Split, names: &[String]) -> Self {
        let make = |rows: usize| TrainingSet {
            labels: vec![0; rows],
            feature_names: names.to_vec(),
            binnings: bins
                .iter()
                .map(|(max_bins, b)| Binned {
                    max_bins: *max_bins,
                    n_rows: rows,
                    codes: Codes::zeros(rows * b.len(), *max_bins),
                    bins: b.clone(),
                })
                .collect(),
            checksum: 0,
        };
        Encoder {
            sets: [make(split.sizes[0]), make(split.sizes[1])],
            cursor: RankCursor::default(),
            scored: None,
        }
    }

    /// Also keeps a scorer's output for the rows of `set` (0: training, 1:
    /// test), by canonical position; see [`Encoder::add_scored`].
    pub fn scoring(mut self, set: usize) -> Self {
        let rows = self.sets[set].n_rows();
        self.scored = Some((set, vec![Vec::new(); rows]));
        self
    }

    /// The scores kept by [`Encoder::scoring`], by position in their set.
    pub fn take_scores(&mut self) -> Option<Vec<Vec<f64>>> {
        self.scored.take().map(|(_, s)| s)
    }

    /// [`Encoder::add`], and `scorer` on every row of the scored set.
    pub fn add_scored(
        &mut self,
        order: &CanonicalOrder,
        split: &Split,
        labels: &[u32],
        columns: &[Vec<f64>],
        scorer: &RowScorer,
    ) -> Result<()> {
        let places = self.add_places(order, split, labels, columns)?;
        if let Some((set, scores)) = &mut self.scored {
            let rows: Vec<(usize, usize)> = places
                .iter()
                .enumerate()
                .filter(|(_, (s, _))| s == set)
                .map(|(i, (_, pos))| (i, *pos))
                .collect();
            let out: Vec<(usize, Vec<f64>)> = rows
                .par_iter()
                .map(|(i, pos)| (*pos, scorer(&|f| columns[f][*i])))
                .collect();
            for (pos, s) in out {
                scores[pos] = s;
            }
        }
        Ok(())
    }

    /// Encodes with the boundaries of an existing set (test rows).
    pub fn like(like: &TrainingSet, split: &Split) -> Self {
        let bins = like
            .binnings
            .iter()
            .map(|b| (b.max_bins, b.bins.clone()))
            .collect();
        Encoder::new(bins, split, &like.feature_names)
    }

    pub fn add(
        &mut self,
        order: &CanonicalOrder,
        split: &Split,
        labels: &[u32],
        columns: &[Vec<f64>],
    ) -> Result<()> {
        self.add_places(order, split, labels, columns).map(|_| ())
    }

    /// Encodes the rows; returns each row's (set, position).
    fn add_places(
        &mut self,
        order: &CanonicalOrder,
        split: &Split,
        labels: &[u32],
        columns: &[Vec<f64>],
    ) -> Result<Vec<(usize, usize)>> {
        let ranks = order.ranks(labels, columns, &mut self.cursor)?;
        let places: Vec<(usize, usize)> = ranks.iter().map(|(r, _)| split.place(*r)).collect();
        for (i, ((set, pos), (_, h))) in places.iter().zip(&ranks).enumerate() {
            let s = &mut self.sets[*set];
            s.labels[*pos] = labels[i];
            s.checksum = s.checksum.wrapping_add(*h);
        }
        // Per binning: the batch's codes row by row (rayon over blocks of
        // rows), then each row's line copied to its place.
        let nf = columns.len();
        for b in (0..self.sets[0].binnings.len()).filter(|_| nf > 0) {
            let binning = &self.sets[0].binnings[b];
            let bins = &binning.bins;
            let mut lines = Codes::zeros(places.len() * nf, binning.max_bins);
            with_codes!(&mut lines, |out| {
                out.par_chunks_mut(nf * ENCODE_BLOCK_ROWS)
                    .enumerate()
                    .for_each(|(block, out)| {
                        let first = block * ENCODE_BLOCK_ROWS;
                        for (i, line) in out.chunks_exact_mut(nf).enumerate() {
                            for (f, code) in line.iter_mut().enumerate() {
                                *code = bins[f].bin(columns[f][first + i]) as _;
                            }
                        }
                    })
            });
            for (i, (set, pos)) in places.iter().enumerate() {
                self.sets[*set].binnings[b]
                    .codes
                    .copy_from(pos * nf, &lines, i * nf, nf);
            }
        }
        Ok(places)
    }

    /// The training and test sets; fails when the pass missed rows.
    pub fn finish_checked(self, order: &CanonicalOrder) -> Result<(TrainingSet, TrainingSet)> {
        order.check_complete(&self.cursor)?;
        let [train, test] = self.sets;
        Ok((train, test))
    }
}

/// Bytes the loaded sets take: codes per binning and a `u32` label per row.
pub fn set_bytes(rows: usize, features: usize, max_bins: &[usize]) -> u64 {
    let code_bytes: usize = max_bins.iter().map(|&b| Codes::width(b)).sum();
    rows as u64 * (features as u64 * code_bytes as u64 + 4)
}

/// Bytes the loading passes need on top of the sets: sorted hashes, the
/// bucket index, positions and the test mask.
pub fn loading_bytes(rows: usize) -> u64 {
    rows as u64 * (8 + 8 + 4 + 1)
}

/// A seeded xorshift source of uniform values in [0, 1) for test data.
#[cfg(test)]
pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `features` columns of `n` uniform values, 5 % of them missing, for test data.
#[cfg(test)]
pub(crate) fn columns_with_missing(n: usize, features: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut next = uniform(seed);
    (0..features)
        .map(|_| {
            (0..n)
                .map(|_| if next() < 0.05 { f64::NAN } else { next() })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_ordered_and_missing_is_zero() {
        let values: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let b = FeatureBins::fit(&values, 32);
        assert!(b.n_bins() <= 33);
        assert_eq!(b.bin(f64::NAN), 0);
        assert_eq!(b.bin(-5.0), 1);
        let mut last = 0;
        for v in &values {
            let code = b.bin(*v);
            assert!(code >= last);
            last = code;
            assert!(*v <= b.upper(code as usize));
        }
        let few = FeatureBins::fit(&[1.0, 2.0, 2.0, 3.0], 32);
        assert_eq!((few.bin(1.0), few.bin(2.0), few.bin(3.0)), (1, 2, 3));
        for code in 0..few.n_bins() {
            let x = few.representative(code);
            assert_eq!(
                few.bin(x) as usize,
                code,
                "the representative of bin {code} is in it"
            );
        }
    }

    /// Rows with missing values, duplicates and two classes.
    fn rows(n: usize) -> Dataset {
        let mut next = uniform(0x9e37_79b9);
        let mut columns = vec![Vec::new(); 3];
        let mut labels = Vec::new();
        for i in 0..n {
            let dup = i % 10 == 9;
            for (f, c) in columns.iter_mut().enumerate() {
                let v = if dup {
                    c[i - 1]
                } else if next() < 0.1 {
                    f64::NAN
                } else {
                    (next() * 1000.0).round() / (f + 1) as f64
                };
                c.push(v);
            }
            labels.push(if dup {
                labels[i - 1]
            } else {
                u32::from(next() < 0.4)
            });
        }
        Dataset {
            columns,
            labels,
            feature_names: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    fn permuted(d: &Dataset, seed: u64) -> Dataset {
        use rand::seq::SliceRandom;
        let mut idx: Vec<usize> = (0..d.n_rows()).collect();
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        Dataset {
            columns: d
                .columns
                .iter()
                .map(|c| idx.iter().map(|&i| c[i]).collect())
                .collect(),
            labels: idx.iter().map(|&i| d.labels[i]).collect(),
            feature_names: d.feature_names.clone(),
        }
    }

    /// Streams `d` in chunks of `chunk` rows through the three passes.
    fn streamed(
        d: &Dataset,
        chunk: usize,
        split: impl Fn(usize) -> Split,
    ) -> (TrainingSet, TrainingSet) {
        let chunks: Vec<(Vec<u32>, Vec<Vec<f64>>)> = (0..d.n_rows())
            .step_by(chunk)
            .map(|s| {
                let e = (s + chunk).min(d.n_rows());
                (
                    d.labels[s..e].to_vec(),
                    d.columns.iter().map(|c| c[s..e].to_vec()).collect(),
                )
            })
            .collect();
        let mut hashes = RowHashes::sampling(d.n_rows(), d.n_features());
        for (l, c) in &chunks {
            hashes.add(l, c);
        }
        let (order, candidates) = hashes.finish_sampled();
        let split = split(order.len());
        let sample = candidates
            .expect("sampled")
            .finish(&order, &split, BIN_SAMPLE_ROWS)
            .expect("sample");
        let mut encoder = Encoder::new(
            sample.fit(&[8, 32]).expect("bins"),
            &split,
            &d.feature_names,
        );
        for (l, c) in &chunks {
            encoder.add(&order, &split, l, c).expect("encode pass");
        }
        encoder.finish_checked(&order).expect("complete")
    }

    #[test]
    fn streamed_binning_is_the_canonical_binning_whatever_the_order() -> Result<()> {
        let d = rows(5000);
        let (a, _) = streamed(&d, 333, Split::none);
        let (b, _) = streamed(&permuted(&d, 7), 1024, Split::none);
        assert_eq!(a.labels, b.labels);
        for (x, y) in a.binnings.iter().zip(&b.binnings) {
            assert_eq!(x.codes, y.codes);
            assert_eq!(x.bins, y.bins);
        }
        assert_eq!(a.fingerprint(), d.fingerprint());
        // The same codes the f64 path gives on the canonicalized rows.
        let mut canonical = d.clone();
        canonical.canonicalize();
        let old = Binned::new(&canonical, 32)?;
        assert_eq!(a.binned(32)?.codes, old.codes);
        assert_eq!(a.binned(32)?.bins, old.bins);
        assert_eq!(a.labels, canonical.labels);
        let from = TrainingSet::from_dataset(&d, &[32])?;
        assert_eq!(from.binned(32)?.codes, old.codes);
        Ok(())
    }

    #[test]
    fn a_random_split_takes_rows_in_canonical_order() -> Result<()> {
        let d = rows(3000);
        let (train, test) = streamed(&permuted(&d, 3), 500, |n| Split::random(n, 0.25, 9));
        let (train2, test2) = streamed(&d, 64, |n| Split::random(n, 0.25, 9));
        assert_eq!(train.labels, train2.labels);
        assert_eq!(test.binned(8)?.codes, test2.binned(8)?.codes);
        assert_eq!(train.n_rows() + test.n_rows(), 3000);
        assert!((600..900).contains(&test.n_rows()), "{}", test.n_rows());
        // The test rows are encoded with the training boundaries.
        let mut canonical = d.clone();
        canonical.canonicalize();
        let split = Split::random(3000, 0.25, 9);
        let keep: Vec<usize> = (0..3000)
            .filter(|r| split.place(*r as u32).0 == 0)
            .collect();
        let train_rows = Dataset {
            columns: canonical
                .columns
                .iter()
                .map(|c| keep.iter().map(|&i| c[i]).collect())
                .collect(),
            labels: keep.iter().map(|&i| canonical.labels[i]).collect(),
            feature_names: canonical.feature_names.clone(),
        };
        assert_eq!(train.binned(32)?.bins, Binned::new(&train_rows, 32)?.bins);
        Ok(())
    }

    /// Values as bits, so NaN equals NaN.
    fn bits(columns: &[Vec<f64>]) -> Vec<Vec<u64>> {
        columns
            .iter()
            .map(|c| c.iter().map(|v| v.to_bits()).collect())
            .collect()
    }

    #[test]
    fn the_bin_sample_is_the_first_rows_in_canonical_order() -> Result<()> {
        let d = rows(3000);
        let mut canonical = d.clone();
        canonical.canonicalize();
        let first: Vec<Vec<f64>> = canonical
            .columns
            .iter()
            .map(|c| c[..500].to_vec())
            .collect();
        // Candidates capped at 500, whatever the arrival order and chunking.
        for (data, chunk) in [(d.clone(), 3000), (permuted(&d, 5), 97)] {
            let mut hashes = RowHashes::sampling(500, 3);
            for s in (0..3000).step_by(chunk) {
                let e = (s + chunk).min(3000);
                let columns: Vec<Vec<f64>> =
                    data.columns.iter().map(|c| c[s..e].to_vec()).collect();
                hashes.add(&data.labels[s..e], &columns);
            }
            let (order, candidates) = hashes.finish_sampled();
            let sample = candidates
                .expect("sampled")
                .finish(&order, &Split::none(3000), 500)?;
            assert_eq!(bits(&sample.columns), bits(&first));
        }
        // With a random split, the first 300 training rows.
        let split = Split::random(3000, 0.4, 2);
        let train: Vec<usize> = (0..3000)
            .filter(|r| split.place(*r as u32).0 == 0)
            .collect();
        let mut hashes = RowHashes::sampling(SampleCandidates::cap_for(300, 0.4), 3);
        hashes.add(&d.labels, &d.columns);
        let (order, candidates) = hashes.finish_sampled();
        let sample = candidates.expect("sampled").finish(&order, &split, 300)?;
        let expected: Vec<Vec<f64>> = canonical
            .columns
            .iter()
            .map(|c| train[..300].iter().map(|&r| c[r]).collect())
            .collect();
        assert_eq!(bits(&sample.columns), bits(&expected));
        Ok(())
    }

    #[test]
    fn a_changed_input_between_passes_is_an_error() {
        let d = rows(100);
        let order = RowHashes::of(&d.labels, &d.columns).finish();
        let split = Split::none(order.len());
        let bins = BinSample::of(&d).and_then(|s| s.fit(&[8])).expect("bins");
        let mut encoder = Encoder::new(bins.clone(), &split, &d.feature_names);
        let mut other = d.clone();
        other.columns[0][5] = 12345.5;
        let err = encoder
            .add(&order, &split, &other.labels, &other.columns)
            .expect_err("changed")
            .to_string();
        assert!(err.contains("the input changed while it was read"), "{err}");
        let mut encoder = Encoder::new(bins, &split, &d.feature_names);
        encoder
            .add(
                &order,
                &split,
                &d.labels[..50],
                &d.columns
                    .iter()
                    .map(|c| c[..50].to_vec())
                    .collect::<Vec<_>>(),
            )
            .expect("half");
        let err = encoder
            .finish_checked(&order)
            .expect_err("short")
            .to_string();
        assert!(err.contains("read 100 rows, a later one 50"), "{err}");
    }
}
