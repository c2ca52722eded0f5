//! Sizes written by people ("4G", "512MiB", "auto") and their validation.

use serde::{Deserialize, Deserializer};
use std::fmt;

pub const MIB: u64 = 1024 * 1024;

/// A size in bytes parsed from "512M", "4G", "4GiB", "1500MB" (binary units:
/// disk people mean MiB when they write M) or a plain byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn parse(s: &str) -> Result<Bytes, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (examples: \"512M\", \"4G\")"))?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1024,
            "m" | "mb" | "mib" => MIB,
            "g" | "gb" | "gib" => 1024 * MIB,
            "t" | "tb" | "tib" => 1024 * 1024 * MIB,
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit `{unit}` (use K, M, G or T)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Bytes)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
    pub fn mib(self) -> u64 {
        self.0.div_ceil(MIB)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_bytes(self.0, f)
    }
}

pub fn fmt_bytes(b: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if b >= 1024 * MIB && b % (1024 * MIB / 10) == 0 || b >= 10 * 1024 * MIB {
        write!(f, "{:.1} GiB", b as f64 / (1024 * MIB) as f64)
    } else if b >= MIB {
        write!(f, "{} MiB", b.div_ceil(MIB))
    } else {
        write!(f, "{b} B")
    }
}

/// Human form of a byte count, for messages.
pub fn human(b: u64) -> String {
    Bytes(b).to_string()
}

/// The image size: grown to fit the content, or fixed by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageSize {
    #[default]
    Auto,
    Fixed(Bytes),
}

impl<'de> Deserialize<'de> for ImageSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "auto" {
            return Ok(ImageSize::Auto);
        }
        let b = Bytes::parse(&s).map_err(serde::de::Error::custom)?;
        if b.0 < 64 * MIB {
            return Err(serde::de::Error::custom(format!(
                "size `{s}` is below the 64 MiB minimum (or use \"auto\")"
            )));
        }
        Ok(ImageSize::Fixed(b))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Bytes(n)),
            Raw::S(s) => Bytes::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSize::Auto => f.write_str("auto"),
            ImageSize::Fixed(b) => b.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Bytes::parse("512M").unwrap().0, 512 * MIB);
        assert_eq!(Bytes::parse("4GiB").unwrap().0, 4096 * MIB);
        assert_eq!(Bytes::parse("1024").unwrap().0, 1024);
        assert!(Bytes::parse("4X").unwrap_err().contains("unknown unit"));
        assert!(Bytes::parse("big").is_err());
    }
}
