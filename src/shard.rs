//! Which part of the fleet this process runs (`--shard I/N`): devices I, I+N, I+2N, … of the
//! whole fleet, with their ids and indexes unchanged, so shards are disjoint and together are
//! exactly the fleet one process would run, readings included.

use std::fmt;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    /// The whole fleet.
    fn default() -> Shard {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Whether device number `i` of the fleet (0-based) runs here.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count == self.index
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Parses `I/N` with I < N; `None` when the text is not of that form.
    pub fn parse(text: &str) -> Option<Shard> {
        let (i, n) = text.trim().split_once('/')?;
        let (index, count) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
        (count >= 1 && index < count).then_some(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_the_fleet() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        for i in 0..100 {
            assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1, "device {i}");
        }
        assert_eq!(Shard::parse("1/4"), Some(Shard { index: 1, count: 4 }));
        assert_eq!(Shard::parse("4/4"), None);
        assert_eq!(Shard::parse("0/0"), None);
        assert_eq!(Shard::parse("a/2"), None);
        assert_eq!(Shard::default().to_string(), "0/1");
    }
}
