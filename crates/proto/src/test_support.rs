//! Shared by the codecs' unit tests: input cut at every byte, and a small deterministic fuzzer
//! (no external crates, same sequence on every run so a failure reproduces).

use std::fmt::Debug;

/// Marsaglia's xorshift64: plenty for shuffling test input, and reproducible.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Up to `max_len` bytes, mostly from `alphabet` (the protocol's structural bytes) and
    /// sometimes any byte at all.
    pub(crate) fn protocol_bytes(&mut self, alphabet: &[u8], max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| {
                if self.below(8) == 0 {
                    self.next_u64() as u8
                } else {
                    alphabet[self.below(alphabet.len())]
                }
            })
            .collect()
    }

    /// Cut points for splitting `len` bytes into at most `max_pieces` pieces: sorted, starting
    /// at 0 and ending at `len`, with repeats allowed (an empty feed must be harmless too).
    pub(crate) fn cuts(&mut self, len: usize, max_pieces: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (1..self.below(max_pieces) + 1)
            .map(|_| self.below(len + 1))
            .collect();
        cuts.push(0);
        cuts.push(len);
        cuts.sort_unstable();
        cuts
    }
}

/// `transcript` with a few random bytes replaced, inserted or removed, or cut short.
pub(crate) fn mutate(rng: &mut XorShift, transcript: &[u8]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\r\n {}+*-.0123456789[]";
    let mut bytes = transcript.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        let byte = if rng.below(2) == 0 {
            INTERESTING[rng.below(INTERESTING.len())]
        } else {
            rng.next_u64() as u8
        };
        match rng.below(8) {
            0..=2 if at < bytes.len() => bytes[at] = byte,
            3..=5 => bytes.insert(at, byte),
            6 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// Asserts that `run` gives the same outcome for `input` fed whole, cut once at every byte
/// position, and fed byte by byte.
pub(crate) fn assert_same_for_every_split<T: PartialEq + Debug>(
    input: &[u8],
    run: impl Fn(&[&[u8]]) -> T,
) {
    let whole = run(&[input]);
    for cut in 0..=input.len() {
        let (head, tail) = input.split_at(cut);
        assert_eq!(run(&[head, tail]), whole, "cut at byte {cut}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "fed byte by byte");
}

/// What a fuzzing round feeds a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FuzzInput {
    /// Random bytes, mostly the protocol's structural ones.
    Random,
    /// A real transcript with a few bytes changed.
    Mutated,
}

/// The codecs' fuzzer: 20,000 rounds, alternately random bytes (up to `max_len`, mostly from
/// `alphabet`) and one of `transcripts` mutated. `run` reads the input fed in the given
/// pieces and returns the outcome, which must not panic and must be the same whole and cut
/// at random places.
pub(crate) fn fuzz_never_panics_and_ignores_cuts<T: PartialEq + Debug>(
    seed: u64,
    alphabet: &[u8],
    max_len: usize,
    transcripts: &[Vec<u8>],
    run: impl Fn(FuzzInput, &[&[u8]]) -> T,
) {
    let mut rng = XorShift::new(seed);
    for round in 0..20_000 {
        let (kind, input) = if round % 2 == 0 {
            (FuzzInput::Random, rng.protocol_bytes(alphabet, max_len))
        } else {
            let transcript = &transcripts[round % transcripts.len()];
            (FuzzInput::Mutated, mutate(&mut rng, transcript))
        };
        let whole = run(kind, &[&input]);
        let cuts = rng.cuts(input.len(), 4);
        let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &input[w[0]..w[1]]).collect();
        assert_eq!(
            run(kind, &chunks),
            whole,
            "round {round}: {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}
