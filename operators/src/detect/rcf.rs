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
//! Memory per series (see `memory_bytes`): each tree has at most `2 × tree_size − 1` nodes of
//! `24 + 8 × shingle` bytes plus a slot map of `4 × tree_size` bytes; with the defaults
//! (8 trees of 128, shingle 4) that is 8 × (255 × 56 + 512) ≈ 118 KB.

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

/// One node: a leaf holds a distinct shingle (`min == max`) with its multiplicity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Node {
    parent: u32,
    left: u32,
    right: u32,
    count: u32,
    cut_dim: u32,
    cut: f32,
}

/// One tree: nodes in an arena, boxes in a parallel flat array (`2 × dim` per node).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tree {
    nodes: Vec<Node>,
    boxes: Vec<f32>,
    free: Vec<u32>,
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
        let tree = Tree { nodes: Vec::new(), boxes: Vec::new(), free: Vec::new(), root: NONE, slot_leaf: vec![NONE; spec.tree_size] };
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
    fn alloc(&mut self, dim: usize, node: Node) -> u32 {
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            self.boxes.resize(self.boxes.len() + 2 * dim, 0.0);
            (self.nodes.len() - 1) as u32
        }
    }

    #[inline]
    fn bbox(&self, dim: usize, n: u32) -> (&[f32], &[f32]) {
        let b = &self.boxes[n as usize * 2 * dim..(n as usize + 1) * 2 * dim];
        b.split_at(dim)
    }

    fn set_box_union(&mut self, dim: usize, n: u32, a: u32, b: u32) {
        for k in 0..dim {
            let (amin, amax) = (self.boxes[a as usize * 2 * dim + k], self.boxes[a as usize * 2 * dim + dim + k]);
            let (bmin, bmax) = (self.boxes[b as usize * 2 * dim + k], self.boxes[b as usize * 2 * dim + dim + k]);
            self.boxes[n as usize * 2 * dim + k] = amin.min(bmin);
            self.boxes[n as usize * 2 * dim + dim + k] = amax.max(bmax);
        }
    }

    fn is_leaf(&self, n: u32) -> bool {
        self.nodes[n as usize].left == NONE
    }

    fn replace_child(&mut self, parent: u32, old: u32, new: u32) {
        if parent == NONE {
            self.root = new;
        } else if self.nodes[parent as usize].left == old {
            self.nodes[parent as usize].left = new;
        } else {
            self.nodes[parent as usize].right = new;
        }
        self.nodes[new as usize].parent = parent;
    }

    /// Inserts `p`, returning its leaf.
    fn insert(&mut self, p: &[f32], rng: &mut u64) -> u32 {
        let dim = p.len();
        let leaf_node = Node { parent: NONE, left: NONE, right: NONE, count: 1, cut_dim: 0, cut: 0.0 };
        if self.root == NONE {
            let l = self.alloc(dim, leaf_node);
            self.write_point(dim, l, p);
            self.root = l;
            return l;
        }
        let mut node = self.root;
        loop {
            let (min, max) = self.bbox(dim, node);
            if self.is_leaf(node) && min == p {
                // A duplicate: the leaf and its ancestors count it.
                let mut n = node;
                while n != NONE {
                    self.nodes[n as usize].count += 1;
                    n = self.nodes[n as usize].parent;
                }
                return node;
            }
            let mut span = 0.0f64;
            for k in 0..dim {
                span += (max[k].max(p[k]) - min[k].min(p[k])) as f64;
            }
            let mut r = next_unit(rng) * span;
            let mut cut_dim = dim - 1;
            for k in 0..dim {
                let w = (max[k].max(p[k]) - min[k].min(p[k])) as f64;
                if r < w {
                    cut_dim = k;
                    break;
                }
                r -= w;
            }
            let lo = min[cut_dim].min(p[cut_dim]) as f64;
            let cut = (lo + r) as f32;
            let (bmin, bmax) = (min[cut_dim], max[cut_dim]);
            let separates_left = cut < bmin; // p ≤ cut < box
            let separates_right = cut >= bmax && p[cut_dim] > cut; // box ≤ cut < p
            if separates_left || separates_right || self.is_leaf(node) {
                let parent = self.nodes[node as usize].parent;
                let leaf = self.alloc(dim, leaf_node);
                self.write_point(dim, leaf, p);
                let count = self.nodes[node as usize].count + 1;
                let (left, right) = if separates_left || (!separates_right && p[cut_dim] <= cut) { (leaf, node) } else { (node, leaf) };
                let inner = self.alloc(dim, Node { parent, left, right, count, cut_dim: cut_dim as u32, cut });
                self.replace_child(parent, node, inner);
                self.nodes[left as usize].parent = inner;
                self.nodes[right as usize].parent = inner;
                self.set_box_union(dim, inner, left, right);
                // Ancestors: one more point, boxes grown to hold it.
                let mut a = parent;
                while a != NONE {
                    self.nodes[a as usize].count += 1;
                    let (min, max) = self.boxes[a as usize * 2 * dim..(a as usize + 1) * 2 * dim].split_at_mut(dim);
                    for ((lo, hi), &x) in min.iter_mut().zip(max.iter_mut()).zip(p) {
                        *lo = lo.min(x);
                        *hi = hi.max(x);
                    }
                    a = self.nodes[a as usize].parent;
                }
                return leaf;
            }
            let n = self.nodes[node as usize];
            node = if p[n.cut_dim as usize] <= n.cut { n.left } else { n.right };
        }
    }

    fn write_point(&mut self, dim: usize, n: u32, p: &[f32]) {
        let base = n as usize * 2 * dim;
        self.boxes[base..base + dim].copy_from_slice(p);
        self.boxes[base + dim..base + 2 * dim].copy_from_slice(p);
    }

    /// Removes one occurrence of the shingle of `leaf`.
    fn delete(&mut self, dim: usize, leaf: u32) {
        let mut n = leaf;
        while n != NONE {
            self.nodes[n as usize].count -= 1;
            n = self.nodes[n as usize].parent;
        }
        if self.nodes[leaf as usize].count > 0 {
            return;
        }
        let parent = self.nodes[leaf as usize].parent;
        self.free.push(leaf);
        if parent == NONE {
            self.root = NONE;
            return;
        }
        let p = self.nodes[parent as usize];
        let sibling = if p.left == leaf { p.right } else { p.left };
        self.replace_child(p.parent, parent, sibling);
        self.free.push(parent);
        let mut a = p.parent;
        while a != NONE {
            let an = self.nodes[a as usize];
            self.set_box_union(dim, a, an.left, an.right);
            a = an.parent;
        }
    }

    /// Collusive displacement of `leaf`: the largest ratio, along its path, of a sibling's
    /// size to the size of the subtree holding the leaf.
    fn codisp(&self, leaf: u32) -> f64 {
        let mut best = 0.0f64;
        let mut n = leaf;
        while self.nodes[n as usize].parent != NONE {
            let p = self.nodes[self.nodes[n as usize].parent as usize];
            let sib = if p.left == n { p.right } else { p.left };
            best = best.max(self.nodes[sib as usize].count as f64 / self.nodes[n as usize].count as f64);
            n = self.nodes[n as usize].parent;
        }
        best
    }
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
        let mut disp = 0.0;
        for t in &mut self.trees {
            if full {
                let old = t.slot_leaf[self.slot];
                t.delete(d, old);
            }
            let leaf = t.insert(p, &mut self.rng);
            t.slot_leaf[self.slot] = leaf;
            disp += t.codisp(leaf);
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
                        + t.nodes.capacity() * std::mem::size_of::<Node>()
                        + t.boxes.capacity() * 4
                        + t.free.capacity() * 4
                        + t.slot_leaf.capacity() * 4
                })
                .sum::<usize>()
    }

    fn saved(&self) -> SavedDetector<'_> {
        SavedDetector::Rcf(Cow::Borrowed(self))
    }
}
