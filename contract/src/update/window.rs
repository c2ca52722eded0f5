//! The maintenance window of `update pull`: `HH:MM-HH:MM` in UTC (the
//! device clock), wrapping past midnight when the end is before the start.
//! A pull downloads at any time and installs only inside the window.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight.
    start: u32,
    end: u32,
}

fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

impl Window {
    pub fn parse(s: &str) -> Result<Window> {
        let bad = || {
            Error::msg(format!(
                "maintenance window {s:?} is not HH:MM-HH:MM (UTC), e.g. 02:00-05:00"
            ))
        };
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(bad());
        }
        Ok(Window { start, end })
    }

    /// Whether `secs` (since the epoch) falls inside the window.
    pub fn contains(&self, secs: u64) -> bool {
        let m = ((secs % 86_400) / 60) as u32;
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02} UTC",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_midnight() {
        let w = Window::parse("02:00-05:00").unwrap();
        assert!(w.contains(2 * 3600) && w.contains(4 * 3600 + 3599));
        assert!(!w.contains(5 * 3600) && !w.contains(3600 + 86_400));
        let n = Window::parse("23:30-01:00").unwrap();
        assert!(n.contains(23 * 3600 + 45 * 60) && n.contains(1800));
        assert!(!n.contains(3600) && !n.contains(12 * 3600));
        for bad in [
            "2:00-05:00",
            "02:00",
            "25:00-01:00",
            "02:00-02:00",
            "02:60-03:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
