//! The Merkle tree of a checkpoint: RFC 6962's (§2.1), with SHA-256.
//!
//! `MTH({}) = SHA-256()`, a leaf `SHA-256(0x00 || leaf)`, a node
//! `SHA-256(0x01 || left || right)`, the left subtree the largest power of
//! two below the number of leaves. Inclusion proofs are RFC 6962's audit
//! paths, checked as RFC 9162 §2.1.3.2 says. Written here rather than
//! taken from a crate so that the construction is exactly the RFC's, which
//! every language has a verifier for.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root over leaf hashes, in order.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` (RFC 6962 §2.1.1), leaf to root.
pub fn path(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 || index >= n {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut p = path(index, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = path(index - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Whether `leaf` (a leaf hash) is leaf `index` of a tree of `size` leaves
/// whose root is `root`, by `path`.
pub fn verify(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn small_trees_are_the_rfcs() {
        let l = leaves(3);
        assert_eq!(root(&[]), <[u8; 32]>::from(Sha256::digest([])));
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_eq!(path(2, &l), vec![node_hash(&l[0], &l[1])]);
        assert_eq!(path(0, &l), vec![l[1], l[2]]);
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_no_other_does(n in 1usize..70, pick in 0usize..70) {
            let l = leaves(n);
            let r = root(&l);
            let i = pick % n;
            let p = path(i, &l);
            prop_assert!(verify(i as u64, n as u64, &l[i], &p, &r));
            let other = leaf_hash(b"other");
            prop_assert!(!verify(i as u64, n as u64, &other, &p, &r));
            if n > 1 {
                let j = (i + 1) % n;
                prop_assert!(!verify(j as u64, n as u64, &l[i], &p, &r));
            }
        }
    }
}
