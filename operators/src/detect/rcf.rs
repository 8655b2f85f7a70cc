//! Robust random cut forest (Guha, Mishra, Roy, Schrijvers, ICML 2016) over shingles: each
//! point becomes the vector of the last `shingle` values; every tree holds the last
//! `tree_size` shingles, inserted and deleted incrementally (the sliding-window variant); the
//! surprise of a point is its collusive displacement (CoDisp) averaged over the trees — how
//! many points of the window would be displaced from its path were it removed, relative to
//! its own subtree. Cuts pick a dimension with probability proportional to its range, so
//! the forest needs no normalisation.
//!
//! Deterministic: the random cuts come from a SplitMix64 seeded with `seed`, the same for
//! every series, and points arrive in event-time order.
//!
//! Memory per series (see `memory_bytes`): each tree has at most `tree_size − 1` inner nodes
//! of `24 + 8 × shingle` bytes (the node and its box), `tree_size` leaves of `8 + 4 × shingle`
//! bytes (a leaf's box is its point, kept once) and a slot map of `4 × tree_size` bytes; with
//! the defaults (8 trees of 128, shingle 4) that is 8 × (128 × 56 + 128 × 24 + 512) ≈ 86 KB
//! with the arenas' capacities, 88 KB (86 KiB) with the rest of the state (120 KB while
//! leaves were nodes with boxes of two points).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::calibrate::Calibrator;
use super::{Detector, SavedDetector, Score};

/// Longest shingle.
pub const MAX_SHINGLE: usize = 16;

/// Parameters of [`Rcf`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RcfSpec {
    /// Trees in the forest.
    pub trees: usize,
    /// Shingles held by every tree (the sliding window).
    pub tree_size: usize,
    /// Values per shingle.
    pub shingle: usize,
    /// Seed of the random cuts.
    pub seed: u64,
}

impl Default for RcfSpec {
    fn default() -> Self {
        RcfSpec { trees: 8, tree_size: 128, shingle: 4, seed: 42 }
    }
}

const NONE: u32 = u32::MAX;
/// The bit that marks a leaf's id (the rest is its index among the leaves): inner nodes and
/// leaves live in arenas of their own, so a leaf stores its point once, not as a box.
const LEAF: u32 = 1 << 31;

#[inline]
fn is_leaf(id: u32) -> bool {
    id & LEAF != 0
}

/// A leaf id's index among the leaves.
#[inline]
fn leaf_index(id: u32) -> usize {
    (id & !LEAF) as usize
}

/// An inner node: a cut, and the count of the points below it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Inner {
    parent: u32,
    left: u32,
    right: u32,
    count: u32,
    cut_dim: u32,
    cut: f32,
}

/// A leaf: a distinct shingle with its multiplicity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Leaf {
    parent: u32,
    count: u32,
}

/// One tree: inner nodes in an arena with their boxes in a parallel flat array (`2 × dim`
/// each), leaves in another with their points in a parallel array (`dim` each).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tree {
    inner: Vec<Inner>,
    boxes: Vec<f32>,
    leaves: Vec<Leaf>,
    points: Vec<f32>,
    free_inner: Vec<u32>,
    free_leaves: Vec<u32>,
    root: u32,
    /// Window slot → the leaf holding that slot's shingle.
    slot_leaf: Vec<u32>,
}

/// The state of one series.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rcf {
    spec: RcfSpec,
    trees: Vec<Tree>,
    rng: u64,
    shingle: [f32; MAX_SHINGLE],
    seen: u64,
    slot: usize,
    filled: usize,
    mean: f64,
    cal: Calibrator,
}

impl Rcf {
    /// A fresh detector.
    pub fn new(spec: RcfSpec, cal: Calibrator) -> Self {
        let tree = Tree {
            inner: Vec::new(),
            boxes: Vec::new(),
            leaves: Vec::new(),
            points: Vec::new(),
            free_inner: Vec::new(),
            free_leaves: Vec::new(),
            root: NONE,
            slot_leaf: vec![NONE; spec.tree_size],
        };
        Rcf {
            spec,
            trees: vec![tree; spec.trees],
            rng: spec.seed,
            shingle: [0.0; MAX_SHINGLE],
            seen: 0,
            slot: 0,
            filled: 0,
            mean: 0.0,
            cal,
        }
    }
}

#[inline]
fn next_unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

impl Tree {
    fn alloc_inner(&mut self, dim: usize, node: Inner) -> u32 {
        if let Some(i) = self.free_inner.pop() {
            self.inner[i as usize] = node;
            i
        } else {
            self.inner.push(node);
            self.boxes.resize(self.boxes.len() + 2 * dim, 0.0);
            (self.inner.len() - 1) as u32
        }
    }

    fn alloc_leaf(&mut self, p: &[f32]) -> u32 {
        let dim = p.len();
        let leaf = Leaf { parent: NONE, count: 1 };
        let i = if let Some(i) = self.free_leaves.pop() {
            self.leaves[i as usize] = leaf;
            i as usize
        } else {
            self.leaves.push(leaf);
            self.points.resize(self.points.len() + dim, 0.0);
            self.leaves.len() - 1
        };
        self.points[i * dim..(i + 1) * dim].copy_from_slice(p);
        i as u32 | LEAF
    }

    #[inline]
    fn parent(&self, id: u32) -> u32 {
        if is_leaf(id) { self.leaves[leaf_index(id)].parent } else { self.inner[id as usize].parent }
    }

    #[inline]
    fn set_parent(&mut self, id: u32, parent: u32) {
        if is_leaf(id) {
            self.leaves[leaf_index(id)].parent = parent;
        } else {
            self.inner[id as usize].parent = parent;
        }
    }

    #[inline]
    fn count(&self, id: u32) -> u32 {
        if is_leaf(id) { self.leaves[leaf_index(id)].count } else { self.inner[id as usize].count }
    }

    /// The box of a node: a leaf's is its point, as minimum and maximum.
    #[inline]
    fn bbox(&self, dim: usize, id: u32) -> (&[f32], &[f32]) {
        if is_leaf(id) {
            let i = leaf_index(id);
            let p = &self.points[i * dim..(i + 1) * dim];
            (p, p)
        } else {
            self.boxes[id as usize * 2 * dim..(id as usize + 1) * 2 * dim].split_at(dim)
        }
    }

    /// Sets inner node `n`'s box to the union of `a`'s and `b`'s; whether it changed.
    fn update_box(&mut self, dim: usize, n: u32, a: u32, b: u32) -> bool {
        let mut union = [0.0f32; 2 * MAX_SHINGLE];
        {
            let ((amin, amax), (bmin, bmax)) = (self.bbox(dim, a), self.bbox(dim, b));
            for k in 0..dim {
                union[k] = amin[k].min(bmin[k]);
                union[dim + k] = amax[k].max(bmax[k]);
            }
        }
        let own = &mut self.boxes[n as usize * 2 * dim..(n as usize + 1) * 2 * dim];
        let changed = own != &union[..2 * dim];
        own.copy_from_slice(&union[..2 * dim]);
        changed
    }

    fn replace_child(&mut self, parent: u32, old: u32, new: u32) {
        if parent == NONE {
            self.root = new;
        } else if self.inner[parent as usize].left == old {
            self.inner[parent as usize].left = new;
        } else {
            self.inner[parent as usize].right = new;
        }
        self.set_parent(new, parent);
    }

    /// Inserts `p` and returns its leaf and its collusive displacement: the largest ratio,
    /// along its path, of a sibling's size to the size of the subtree holding the new point.
    ///
    /// One descent does everything: every node passed on the way down is an ancestor of the
    /// new point, so it counts it and grows its box there (after the cut was drawn from the
    /// box as it was), and the ratio at each level needs only that node's count and the count
    /// of the child taken (sibling = parent − child, as an inner node counts its children's
    /// points). The tree is not walked again, and siblings are never read: on a forest larger
    /// than the cache every node touched is a miss.
    fn insert(&mut self, p: &[f32], rng: &mut u64) -> (u32, f64) {
        let dim = p.len();
        if self.root == NONE {
            let l = self.alloc_leaf(p);
            self.root = l;
            return (l, 0.0);
        }
        let mut best = 0.0f64;
        let mut node = self.root;
        loop {
            let leaf = is_leaf(node);
            let (parent, count) = (self.parent(node), self.count(node));
            let (min, max) = self.bbox(dim, node);
            if leaf && min == p {
                // A duplicate: the leaf counts it (its ancestors did on the way down).
                self.leaves[leaf_index(node)].count += 1;
                if parent != NONE {
                    let above = self.inner[parent as usize].count;
                    best = best.max((above - (count + 1)) as f64 / (count + 1) as f64);
                }
                return (node, best);
            }
            let mut widths = [0.0f64; MAX_SHINGLE];
            let mut span = 0.0f64;
            for k in 0..dim {
                widths[k] = (max[k].max(p[k]) - min[k].min(p[k])) as f64;
                span += widths[k];
            }
            let (cut_dim, r) = cut_dimension(&widths[..dim], next_unit(rng) * span);
            let lo = min[cut_dim].min(p[cut_dim]) as f64;
            let cut = (lo + r) as f32;
            let (bmin, bmax) = (min[cut_dim], max[cut_dim]);
            let separates_left = cut < bmin; // p ≤ cut < box
            let separates_right = cut >= bmax && p[cut_dim] > cut; // box ≤ cut < p
            if separates_left || separates_right || leaf {
                let new_leaf = self.alloc_leaf(p);
                let grown = count + 1;
                let (left, right) =
                    if separates_left || (!separates_right && p[cut_dim] <= cut) { (new_leaf, node) } else { (node, new_leaf) };
                let inner = self.alloc_inner(dim, Inner { parent, left, right, count: grown, cut_dim: cut_dim as u32, cut });
                self.replace_child(parent, node, inner);
                self.set_parent(left, inner);
                self.set_parent(right, inner);
                self.update_box(dim, inner, left, right);
                // The new leaf's sibling is the displaced subtree; above, the new inner node
                // stands where `node` stood, one point larger.
                best = best.max(count as f64);
                if parent != NONE {
                    let above = self.inner[parent as usize].count;
                    best = best.max((above - grown) as f64 / grown as f64);
                }
                return (new_leaf, best);
            }
            // Descend: this inner node is an ancestor of the new point.
            let n = self.inner[node as usize];
            let child = if p[n.cut_dim as usize] <= n.cut { n.left } else { n.right };
            self.inner[node as usize].count += 1;
            let (bmin, bmax) = self.boxes[node as usize * 2 * dim..(node as usize + 1) * 2 * dim].split_at_mut(dim);
            for ((lo, hi), &x) in bmin.iter_mut().zip(bmax.iter_mut()).zip(p) {
                *lo = lo.min(x);
                *hi = hi.max(x);
            }
            if n.parent != NONE {
                // The ratio at the level above: `node` (now one larger) against its sibling.
                let above = self.inner[n.parent as usize].count;
                best = best.max((above - (n.count + 1)) as f64 / (n.count + 1) as f64);
            }
            node = child;
        }
    }

    /// Removes one occurrence of the shingle of `leaf`.
    fn delete(&mut self, dim: usize, leaf: u32) {
        let li = leaf_index(leaf);
        self.leaves[li].count -= 1;
        if self.leaves[li].count > 0 {
            // A duplicate left: no shape or box changes, only the ancestors' counts.
            let mut a = self.leaves[li].parent;
            while a != NONE {
                self.inner[a as usize].count -= 1;
                a = self.inner[a as usize].parent;
            }
            return;
        }
        let parent = self.leaves[li].parent;
        self.free_leaves.push(li as u32);
        if parent == NONE {
            self.root = NONE;
            return;
        }
        let p = self.inner[parent as usize];
        let sibling = if p.left == leaf { p.right } else { p.left };
        self.replace_child(p.parent, parent, sibling);
        self.free_inner.push(parent);
        // Every ancestor counts one point less; its box is recomputed from its children only
        // while the box below changed (a box is the union of its children's: once one stays
        // the same, every box above it does).
        let mut changed = true;
        let mut a = p.parent;
        while a != NONE {
            let an = self.inner[a as usize];
            self.inner[a as usize].count -= 1;
            if changed {
                changed = self.update_box(dim, a, an.left, an.right);
            }
            a = an.parent;
        }
    }
}

/// The cut's dimension for a draw `r` in [0, Σ widths): the first `k` with
/// `r − w₀ − … − wₖ₋₁ < wₖ`, and that remainder (the last dimension and the full remainder
/// when rounding leaves none).
///
/// Which dimension it is, is random, so a loop that stops at it mispredicts at almost every
/// node of every walk; instead every remainder is computed, with the same subtractions in the
/// same order, and the first hit is read from a bit mask.
#[inline]
fn cut_dimension(widths: &[f64], r: f64) -> (usize, f64) {
    let mut rest = [0.0f64; MAX_SHINGLE + 1];
    rest[0] = r;
    let mut hits = 0u32;
    for (k, &w) in widths.iter().enumerate() {
        hits |= ((rest[k] < w) as u32) << k;
        rest[k + 1] = rest[k] - w;
    }
    if hits != 0 {
        let k = hits.trailing_zeros() as usize;
        (k, rest[k])
    } else {
        (widths.len() - 1, rest[widths.len()])
    }
}

/// Trees walked side by side by [`warm`].
const LANES: usize = 8;

/// Brings into the cache, level by level across the trees, the nodes (and boxes) that the
/// point's delete and insert are about to visit: the path from the leaf of `slot` up to the
/// root, and the path `p` takes down through the existing cuts.
///
/// Why: a worker's forests are far larger than the cache, so every node a walk visits is a
/// miss, and within one tree each miss waits for the one before (the next index is in the
/// node). The trees are independent, so taking one step in each of up to [`LANES`] trees per
/// round keeps that many misses in flight; the real walks that follow, one tree at a time
/// and in the same order as before, then find their nodes cached. Only reads: the scores are
/// bit for bit those without it.
fn warm(trees: &[Tree], dim: usize, p: &[f32], slot: Option<usize>) {
    let mut sink = 0u32;
    for group in trees.chunks(LANES) {
        // Per tree, two walks at once: up from the leaf to delete, down the point's path.
        let (mut up, mut down) = ([NONE; LANES], [NONE; LANES]);
        for ((u, d), t) in up.iter_mut().zip(down.iter_mut()).zip(group) {
            *u = slot.map_or(NONE, |s| t.slot_leaf[s]);
            *d = t.root;
        }
        // The first value of a node's box (a leaf's point): one load per node touched.
        let first = |t: &Tree, id: u32| -> u32 {
            if is_leaf(id) { t.points[leaf_index(id) * dim].to_bits() } else { t.boxes[id as usize * 2 * dim].to_bits() }
        };
        for level in 0.. {
            let mut live = false;
            for ((u, d), t) in up.iter_mut().zip(down.iter_mut()).zip(group) {
                if *u != NONE {
                    sink ^= first(t, *u);
                    if is_leaf(*u) {
                        *u = t.leaves[leaf_index(*u)].parent;
                    } else {
                        let n = &t.inner[*u as usize];
                        // The lowest ancestors' boxes are recomputed from both children's (the
                        // leaf's sibling moves up): bring those too. Higher up the
                        // recomputation mostly stops at an unchanged box.
                        if (1..=2).contains(&level) {
                            sink ^= first(t, n.left) ^ first(t, n.right);
                        }
                        *u = n.parent;
                    }
                    live = true;
                }
                if *d != NONE {
                    sink ^= first(t, *d);
                    *d = if is_leaf(*d) {
                        NONE
                    } else {
                        let n = &t.inner[*d as usize];
                        if p[n.cut_dim as usize] <= n.cut { n.left } else { n.right }
                    };
                    live = true;
                }
            }
            if !live {
                break;
            }
        }
    }
    // The loads must happen: their values feed something the optimiser cannot drop.
    std::hint::black_box(sink);
}

impl Detector for Rcf {
    fn score(&mut self, _ts: i64, value: f64) -> Score {
        let d = self.spec.shingle;
        self.shingle.copy_within(1..d, 0);
        self.shingle[d - 1] = value as f32;
        self.seen += 1;
        let expected = if self.seen == 1 { value } else { self.mean };
        self.mean += (value - self.mean) / (self.seen as f64).min(self.spec.tree_size as f64);
        if (self.seen as usize) < d {
            return Score { score: 0.0, expected };
        }
        let p = &self.shingle[..d];
        let full = self.filled == self.spec.tree_size;
        warm(&self.trees, d, p, full.then_some(self.slot));
        let mut disp = 0.0;
        for t in &mut self.trees {
            if full {
                let old = t.slot_leaf[self.slot];
                t.delete(d, old);
            }
            let (leaf, codisp) = t.insert(p, &mut self.rng);
            t.slot_leaf[self.slot] = leaf;
            disp += codisp;
        }
        self.slot = (self.slot + 1) % self.spec.tree_size;
        self.filled = (self.filled + 1).min(self.spec.tree_size);
        // The surprise: mean CoDisp (a typical point displaces ~1), once a quarter of the window
        // is in the trees (before, every point is an outlier of a handful).
        if self.filled < self.spec.tree_size / 4 {
            return Score { score: 0.0, expected };
        }
        Score { score: self.cal.score(disp / self.trees.len() as f64), expected }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .trees
                .iter()
                .map(|t| {
                    std::mem::size_of::<Tree>()
                        + t.inner.capacity() * std::mem::size_of::<Inner>()
                        + t.boxes.capacity() * 4
                        + t.leaves.capacity() * std::mem::size_of::<Leaf>()
                        + t.points.capacity() * 4
                        + (t.free_inner.capacity() + t.free_leaves.capacity() + t.slot_leaf.capacity()) * 4
                })
                .sum::<usize>()
    }

    fn saved(&self) -> SavedDetector<'_> {
        SavedDetector::Rcf(Cow::Borrowed(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::calibrate::CalibrationSpec;

    /// CoDisp the slow way: from the leaf up to the root, reading every sibling.
    fn codisp_walk(t: &Tree, leaf: u32) -> f64 {
        let mut best = 0.0f64;
        let mut n = leaf;
        while t.parent(n) != NONE {
            let p = t.inner[t.parent(n) as usize];
            let sib = if p.left == n { p.right } else { p.left };
            best = best.max(t.count(sib) as f64 / t.count(n) as f64);
            n = t.parent(n);
        }
        best
    }

    /// Every inner node counts its children's points and boxes exactly their boxes; returns
    /// the points under `n`.
    fn check(t: &Tree, dim: usize, n: u32) -> u32 {
        if is_leaf(n) {
            assert!(t.count(n) >= 1);
            return t.count(n);
        }
        let node = t.inner[n as usize];
        let (min, max) = t.bbox(dim, n);
        for c in [node.left, node.right] {
            assert_eq!(t.parent(c), n);
        }
        let total = check(t, dim, node.left) + check(t, dim, node.right);
        assert_eq!(node.count, total, "node {n} counts its children's points");
        let ((lmin, lmax), (rmin, rmax)) = (t.bbox(dim, node.left), t.bbox(dim, node.right));
        for k in 0..dim {
            assert_eq!(min[k], lmin[k].min(rmin[k]), "node {n}: box minimum {k} is its children's");
            assert_eq!(max[k], lmax[k].max(rmax[k]), "node {n}: box maximum {k} is its children's");
        }
        total
    }

    #[test]
    fn the_cut_dimension_is_the_first_loop_hit_bit_for_bit() {
        // The loop it replaces.
        let reference = |widths: &[f64], mut r: f64| {
            let mut cut = widths.len() - 1;
            for (k, &w) in widths.iter().enumerate() {
                if r < w {
                    cut = k;
                    break;
                }
                r -= w;
            }
            (cut, r)
        };
        let mut x = 5u64;
        for _ in 0..100_000 {
            let dim = 1 + (next_unit(&mut x) * MAX_SHINGLE as f64) as usize;
            // Zero widths (a box flat in a dimension) and widths of very different scales.
            let widths: Vec<f64> = (0..dim)
                .map(|_| match (next_unit(&mut x) * 4.0) as u32 {
                    0 => 0.0,
                    1 => next_unit(&mut x) * 1e-6,
                    _ => next_unit(&mut x) * 1e3,
                })
                .collect();
            let span: f64 = widths.iter().sum();
            for r in [next_unit(&mut x) * span, 0.0, span, span * (1.0 - f64::EPSILON), widths[0]] {
                let (a, b) = (cut_dimension(&widths, r), reference(&widths, r));
                assert!(a.0 == b.0 && a.1.to_bits() == b.1.to_bits(), "{widths:?} r {r}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn the_forest_keeps_exact_counts_and_boxes_and_its_codisp_is_the_walks() {
        let spec = RcfSpec { trees: 4, tree_size: 32, shingle: 3, seed: 7 };
        let cal = Calibrator::new(CalibrationSpec { short: 1, long: 100, warmup: 0, cooldown: 0, age_cap: 0 });
        let mut f = Rcf::new(spec, cal);
        let mut x = 99u64;
        for i in 0..3_000 {
            // Few distinct values (duplicate shingles), a level shift, and spikes.
            let v = (next_unit(&mut x) * 4.0).floor() + if i > 1_500 { 10.0 } else { 0.0 } + if i % 97 == 0 { 50.0 } else { 0.0 };
            // What the score will see: the shingle after this value, and each tree's CoDisp.
            let before = f.clone();
            f.score(i * 1000, v);
            if (f.seen as usize) < spec.shingle {
                continue;
            }
            let mut slow = before;
            let d = spec.shingle;
            slow.shingle.copy_within(1..d, 0);
            slow.shingle[d - 1] = v as f32;
            let p = slow.shingle[..d].to_vec();
            let full = slow.filled == spec.tree_size;
            for (t, fast) in slow.trees.iter_mut().zip(&f.trees) {
                if full {
                    let old = t.slot_leaf[slow.slot];
                    t.delete(d, old);
                }
                let (leaf, codisp) = t.insert(&p, &mut slow.rng);
                t.slot_leaf[slow.slot] = leaf;
                assert_eq!(codisp, codisp_walk(t, leaf), "point {i}: CoDisp on the way down equals the walk up");
                assert_eq!(check(t, d, t.root), (slow.filled + 1).min(spec.tree_size) as u32, "point {i}: points held");
                // The scored forest went through the same steps.
                assert_eq!((&t.boxes, &t.points, &t.slot_leaf, t.root), (&fast.boxes, &fast.points, &fast.slot_leaf, fast.root));
            }
        }
    }
}
