//! How every format's matmul spreads its work: runs of weight rows as work items on
//! one parallel region, and within an item, activation rows four at a time. Written
//! once here; each format supplies only its dot products.

pub(crate) use crate::pool::SyncPtr;
use std::ops::Range;

/// Runs `f(matrix, rows)` over runs of 8 rows of every matrix (`ns[i]` rows each) in
/// one region of [`crate::pool`]: several matrices that read the same activations
/// (q, k and v; gate and up) share one region.
/// Weight rows per work item.
pub(crate) const ROWS: usize = 8;

pub(crate) fn for_row_runs(ns: &[usize], f: impl Fn(usize, Range<usize>) + Sync) {
    // Work item c covers rows c*ROWS.. of the concatenation of all matrices' rows.
    let mut starts = Vec::with_capacity(ns.len());
    let mut total = 0;
    for n in ns {
        starts.push(total);
        total += n.div_ceil(ROWS);
    }
    crate::pool::run_chunked(total, |chunks| {
        for c in chunks {
            let i = starts.partition_point(|&s| s <= c) - 1;
            let first = (c - starts[i]) * ROWS;
            f(i, first..(first + ROWS).min(ns[i]));
        }
    });
}

/// The dot products of weight rows `rows` with activation rows `0..m`: four
/// activation rows at a time (prefill: each weight block is unpacked once for four
/// products while the four rows stay in L1), then the rest one by one.
/// `dot4(r, j)` multiplies weight row `r` with activation rows `j..j + 4`, `dot1(r, j)`
/// with row `j`; `put(j, r, v)` stores a result.
#[inline(always)]
pub(crate) fn by_fours(
    m: usize,
    rows: Range<usize>,
    mut dot4: impl FnMut(usize, usize) -> [f32; 4],
    mut dot1: impl FnMut(usize, usize) -> f32,
    mut put: impl FnMut(usize, usize, f32),
) {
    let mut j = 0;
    while j + 4 <= m {
        for r in rows.clone() {
            for (i, v) in dot4(r, j).into_iter().enumerate() {
                put(j + i, r, v);
            }
        }
        j += 4;
    }
    for jj in j..m {
        for r in rows.clone() {
            put(jj, r, dot1(r, jj));
        }
    }
}

/// Outputs `[m, n]` for each of several matrices (`ns[i]` rows each), filled by
/// [`for_row_runs`] work items: `fill(i, rows, out)` computes rows `rows` of matrix
/// `i` for every activation row and stores each result with [`Out::put`].
pub(crate) fn row_runs_into(
    m: usize,
    ns: &[usize],
    fill: impl Fn(usize, Range<usize>, Out) + Sync,
) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = ns.iter().map(|n| vec![0f32; m * n]).collect();
    let ptrs: Vec<SyncPtr<f32>> = outs.iter_mut().map(|o| SyncPtr(o.as_mut_ptr())).collect();
    for_row_runs(ns, |i, rows| {
        let out = Out {
            ptr: ptrs[i],
            rows: rows.clone(),
            m,
            n: ns[i],
        };
        fill(i, rows, out)
    });
    outs
}

/// Where one work item stores its results: output `[m, n]` of one matrix, rows
/// `rows` of it.
pub(crate) struct Out {
    ptr: SyncPtr<f32>,
    rows: Range<usize>,
    m: usize,
    n: usize,
}

impl Out {
    /// Stores the product of activation row `j` and weight row `r`.
    #[inline(always)]
    pub(crate) fn put(&self, j: usize, r: usize, v: f32) {
        assert!(
            j < self.m && self.rows.contains(&r),
            "output ({j}, {r}) outside the item"
        );
        // SAFETY: inside the buffer (checked), and row r belongs to this item only.
        unsafe { *self.ptr.get().add(j * self.n + r) = v };
    }
}
