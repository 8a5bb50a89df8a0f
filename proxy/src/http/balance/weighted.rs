//! nginx's smooth weighted round robin: each pick adds every usable server's effective weight
//! to its current weight and takes the largest, which then gives back the total. Weights 5, 1, 1
//! give a a b a c a a. A failure lowers a server's effective weight; picks restore it.

/// One worker's round-robin weights for one upstream (no lock: a worker owns them).
#[derive(Debug)]
pub struct Weights {
    weight: Vec<i64>,
    current: Vec<i64>,
    effective: Vec<i64>,
}

impl Weights {
    pub fn new(weights: impl Iterator<Item = u32>) -> Weights {
        let weight: Vec<i64> = weights.map(i64::from).collect();
        Weights {
            current: vec![0; weight.len()],
            effective: weight.clone(),
            weight,
        }
    }

    /// The next server among those `usable` says may be chosen, if any.
    pub fn pick(&mut self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut total = 0;
        for i in 0..self.current.len() {
            if !usable(i) {
                continue;
            }
            self.current[i] += self.effective[i];
            total += self.effective[i];
            self.recover(i);
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }

    /// A pick of `i` (by any method) restores one unit of a lowered effective weight.
    pub fn recover(&mut self, i: usize) {
        if self.effective[i] < self.weight[i] {
            self.effective[i] += 1;
        }
    }

    /// Server `i` failed: its effective weight drops by `weight / max_fails`.
    pub fn lower(&mut self, i: usize, max_fails: u32) {
        if max_fails > 0 {
            self.effective[i] = (self.effective[i] - self.weight[i] / i64::from(max_fails)).max(0);
        }
    }
}
