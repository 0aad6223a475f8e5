//! Small value types of the workspace's crates (the emulator keeps its own: it shares no type
//! with the client).

use std::fmt;
use std::str::FromStr;

/// A number of bytes, parsed from `5MiB`, `16 MB`, `1GiB`, `123` (decimal and binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// A kibibyte: 1024 bytes.
    pub const KIB: u64 = 1024;
    /// A mebibyte: 1024 KiB.
    pub const MIB: u64 = 1024 * 1024;
    /// A gibibyte: 1024 MiB.
    pub const GIB: u64 = 1024 * 1024 * 1024;

    /// The number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * Self::MIB)
    }
}

/// Why a byte size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid byte size {input:?}: expected a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB, TiB), e.g. \"16MiB\""
)]
pub struct ByteSizeError {
    input: String,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ByteSizeError {
            input: s.to_owned(),
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        // A rate such as "50MB/s" is accepted where a size per second is meant.
        let unit = unit.strip_suffix("/s").unwrap_or(unit);
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "t" | "tb" => 1_000_000_000_000,
            "kib" => Self::KIB,
            "mib" => Self::MIB,
            "gib" => Self::GIB,
            "tib" => Self::GIB * 1024,
            _ => return Err(err()),
        };
        if num.is_empty() {
            return Err(err());
        }
        if num.contains('.') {
            let v: f64 = num.parse().map_err(|_| err())?;
            let bytes = v * mult as f64;
            if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
                return Err(err());
            }
            Ok(Self(bytes.round() as u64))
        } else {
            let v: u64 = num.parse().map_err(|_| err())?;
            v.checked_mul(mult).map(Self).ok_or_else(err)
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= Self::GIB && b.is_multiple_of(Self::GIB) {
            write!(f, "{}GiB", b / Self::GIB)
        } else if b >= Self::MIB && b.is_multiple_of(Self::MIB) {
            write!(f, "{}MiB", b / Self::MIB)
        } else if b >= Self::GIB {
            write!(f, "{:.2}GiB", b as f64 / Self::GIB as f64)
        } else if b >= Self::MIB {
            write!(f, "{:.2}MiB", b as f64 / Self::MIB as f64)
        } else if b >= Self::KIB {
            write!(f, "{:.1}KiB", b as f64 / Self::KIB as f64)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("123".parse::<ByteSize>().unwrap().0, 123);
        assert_eq!("5MiB".parse::<ByteSize>().unwrap().0, 5 * 1024 * 1024);
        assert_eq!("16 MB".parse::<ByteSize>().unwrap().0, 16_000_000);
        assert_eq!("50MB/s".parse::<ByteSize>().unwrap().0, 50_000_000);
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap().0, 1_610_612_736);
        assert!("abc".parse::<ByteSize>().is_err());
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(ByteSize::mib(16).to_string(), "16MiB");
        assert_eq!(ByteSize(1).to_string(), "1B");
    }
}
