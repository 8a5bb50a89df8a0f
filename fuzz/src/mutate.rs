//! A small deterministic mutator for the short runs: a seeded xorshift generator, the usual
//! byte mutations, and splices of tokens of the target's format (its commands, keywords,
//! numbers at their limits), so that most mutants are nearly valid and get deep.

/// Numbers at the edges walnut checks (lengths, ports, sizes, counts).
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"2",
    b"10",
    b"250",
    b"251",
    b"1024",
    b"1025",
    b"4096",
    b"8192",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"18446744073709551615",
    b"18446744073709551616",
    b"ffffffffffffffff",
    b"7fffffff",
];

/// Bytes that delimit things.
const BYTES: &[u8] = b"\r\n \t:;,=-_/#%?[]{}\"'\\\x00\x7f\xff0123456789abcfxyzABCFXYZ";

pub struct Mutator {
    state: u64,
    tokens: &'static [&'static [u8]],
}

impl Mutator {
    pub fn new(seed: u64, tokens: &'static [&'static [u8]]) -> Mutator {
        Mutator {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            tokens,
        }
    }

    /// xorshift64*.
    pub fn random(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.random() % n as u64) as usize
        }
    }

    fn token(&mut self) -> &'static [u8] {
        if self.tokens.is_empty() || self.below(3) == 0 {
            NUMBERS[self.below(NUMBERS.len())]
        } else {
            self.tokens[self.below(self.tokens.len())]
        }
    }

    /// Changes `data` by one to four mutations, taking material from `corpus` too, and keeps
    /// it within `max_len` bytes.
    pub fn mutate(&mut self, data: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
        for _ in 0..1 + self.below(4) {
            let len = data.len();
            let at = self.below(len + 1);
            match self.below(10) {
                0 if len > 0 => {
                    let i = self.below(len);
                    data[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    data[i] = BYTES[self.below(BYTES.len())];
                }
                2 => {
                    let end = (at + 1 + self.below(8)).min(len);
                    data.drain(at..end);
                }
                3 | 4 => {
                    let token = self.token();
                    data.splice(at..at, token.iter().copied());
                }
                5 => {
                    let end = (at + self.below(6)).min(len);
                    let token = self.token();
                    data.splice(at..end, token.iter().copied());
                }
                6 if len > 0 => {
                    // A piece of the input, repeated: pipelined requests, repeated lines.
                    let start = self.below(len);
                    let end = (start + 1 + self.below(64)).min(len);
                    let piece = data[start..end].to_vec();
                    let times = 1 + self.below(3);
                    for _ in 0..times {
                        data.splice(at..at, piece.iter().copied());
                    }
                }
                7 if !corpus.is_empty() => {
                    // Splice: this input's head, another's tail.
                    let other = &corpus[self.below(corpus.len())];
                    let from = self.below(other.len() + 1);
                    data.truncate(at);
                    data.extend_from_slice(&other[from..]);
                }
                8 => data.truncate(at),
                _ => {
                    // A number in the input becomes an edge value.
                    let digits: Vec<usize> =
                        (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
                    if let Some(&start) = digits.get(self.below(digits.len())) {
                        let end = (start..len)
                            .find(|&i| !data[i].is_ascii_digit())
                            .unwrap_or(len);
                        let n = NUMBERS[self.below(NUMBERS.len())];
                        data.splice(start..end, n.iter().copied());
                    }
                }
            }
        }
        data.truncate(max_len);
    }
}
