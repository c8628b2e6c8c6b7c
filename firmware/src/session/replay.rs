//! Sliding anti-replay window over 64-bit counters (RFC 6479 style bitmap, fixed size).
pub const WINDOW: u64 = 2048;
// One spare word so the oldest in-window counter never shares a word with the newest.
const WORDS: usize = (WINDOW / 64) as usize + 1;

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    top: u64,
    any: bool,
    bits: [u64; WORDS],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayCheck {
    Fresh,
    Duplicate,
    TooOld,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { top: 0, any: false, bits: [0; WORDS] }
    }
}

impl ReplayWindow {
    fn bit(c: u64) -> (usize, u64) {
        (((c / 64) % WORDS as u64) as usize, 1u64 << (c % 64))
    }

    /// Checks without recording; call `record` only once the packet has authenticated.
    pub fn check(&self, c: u64) -> ReplayCheck {
        if !self.any || c > self.top {
            return ReplayCheck::Fresh;
        }
        if self.top - c >= WINDOW {
            return ReplayCheck::TooOld;
        }
        let (w, m) = Self::bit(c);
        if self.bits[w] & m != 0 { ReplayCheck::Duplicate } else { ReplayCheck::Fresh }
    }

    pub fn record(&mut self, c: u64) {
        if !self.any {
            self.any = true;
            self.top = c;
        } else if c > self.top {
            // Clear the words that the window slides over (at most the whole bitmap).
            let old_word = self.top / 64;
            let new_word = c / 64;
            let steps = (new_word - old_word).min(WORDS as u64);
            for i in 1..=steps {
                self.bits[((old_word + i) % WORDS as u64) as usize] = 0;
            }
            self.top = c;
        }
        let (w, m) = Self::bit(c);
        self.bits[w] |= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_are_rejected() {
        let mut r = ReplayWindow::default();
        for c in [0u64, 1, 2, 5, 3] {
            assert_eq!(r.check(c), ReplayCheck::Fresh);
            r.record(c);
            assert_eq!(r.check(c), ReplayCheck::Duplicate);
        }
        assert_eq!(r.check(4), ReplayCheck::Fresh);
        r.record(10_000);
        assert_eq!(r.check(5), ReplayCheck::TooOld);
        assert_eq!(r.check(10_000 - WINDOW), ReplayCheck::TooOld);
        assert_eq!(r.check(10_000 - WINDOW + 1), ReplayCheck::Fresh);
        assert_eq!(r.check(10_000), ReplayCheck::Duplicate);
    }

    #[test]
    fn matches_a_reference_model() {
        // Pseudo-random reordering against a HashSet model of "seen within the window".
        let mut r = ReplayWindow::default();
        let mut seen = std::collections::HashSet::new();
        let mut top = 0u64;
        let mut rng = crate::util::rng::Rng::seeded(1);
        for i in 0..20_000u64 {
            let c = (i + rng.next_u64() % 3000).saturating_sub(1500);
            let expect = if !seen.is_empty() && c + WINDOW <= top {
                ReplayCheck::TooOld
            } else if seen.contains(&c) {
                ReplayCheck::Duplicate
            } else {
                ReplayCheck::Fresh
            };
            assert_eq!(r.check(c), expect, "counter {c} top {top}");
            if expect == ReplayCheck::Fresh {
                r.record(c);
                seen.insert(c);
                top = top.max(c);
            }
        }
    }
}
