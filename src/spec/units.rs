//! Strictly parsed units: durations (`500ms`, `5s`, `2m`), sizes (`512MiB`, `2GiB`), rates
//! (`100/min`, `10/s`) and file modes (`"0400"`).
//!
//! A unit never fails deserialisation: it keeps the text as written (with its span) and the
//! outcome of parsing it, so that the checks report every bad unit of a file at once.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserialize, Deserializer};

use super::spanned::Sp;

/// A kind of unit: how to parse it and how to describe it.
pub trait UnitKind {
    type Value: Clone + fmt::Debug + PartialEq;
    /// Why a text is not such a unit (its `Display` is the message a user reads).
    type Error: std::error::Error + Clone + PartialEq;
    /// What the unit is called in messages ("duration").
    const NAME: &'static str;
    /// The name of its definition in the JSON Schema.
    const SCHEMA_NAME: &'static str;
    /// What a user should write instead (a hint).
    const HINT: &'static str;
    const PATTERN: &'static str;
    fn parse(text: &str) -> Result<Self::Value, Self::Error>;
    /// The canonical text of a value, used to compare and render plans.
    fn canonical(value: &Self::Value) -> String;
}

/// A unit value as written in the spec, with the result of parsing it.
#[derive(Clone, Debug)]
pub struct Unit<K: UnitKind> {
    pub raw: Sp<String>,
    pub parsed: Result<K::Value, K::Error>,
}

impl<K: UnitKind> Unit<K> {
    /// The parsed value, if it parsed (the checks report it otherwise).
    pub fn get(&self) -> Option<K::Value> {
        self.parsed.as_ref().ok().cloned()
    }

    /// Canonical text: the parsed value's, or the raw text when it did not parse.
    pub fn canonical(&self) -> String {
        match &self.parsed {
            Ok(v) => K::canonical(v),
            Err(_) => self.raw.value.clone(),
        }
    }
}

impl<'de, K: UnitKind> Deserialize<'de> for Unit<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A string request gets the scalar's text as written, numbers included, so that
        // `interval: 5` is reported as a duration without a unit and `mode: 0400` is read
        // as the octal it looks like.
        let raw = Sp::<String>::deserialize(d)?;
        let parsed = K::parse(&raw.value);
        Ok(Unit { raw, parsed })
    }
}

impl<K: UnitKind> PartialEq for Unit<K> {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl<K: UnitKind> JsonSchema for Unit<K> {
    fn schema_name() -> Cow<'static, str> {
        K::SCHEMA_NAME.into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": K::PATTERN,
            "description": format!("A {}: {}", K::NAME, K::HINT),
        })
    }
}

/// Splits `123abc` into (123, "abc"); digits only, no sign, no fraction.
fn number_then_suffix(text: &str) -> Option<(u64, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if end == 0 {
        return None;
    }
    let n = text[..end].parse().ok()?;
    Some((n, &text[end..]))
}

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{text}` is not a duration")]
    NotADuration { text: String },
    #[error("`{text}` has no unit")]
    NoUnit { text: String },
    #[error("`{unit}` is not a duration unit")]
    UnknownUnit { unit: String },
    #[error("`{text}` is too long")]
    TooLong { text: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationKind;
impl UnitKind for DurationKind {
    type Value = std::time::Duration;
    type Error = DurationError;
    const NAME: &'static str = "duration";
    const SCHEMA_NAME: &'static str = "Duration";
    const HINT: &'static str =
        "a whole number and a unit (ms, s, m, h, d), e.g. `500ms`, `5s`, `2m`, `1h30m`";
    const PATTERN: &'static str = "^([0-9]+(ms|s|m|h|d))+$";

    fn parse(text: &str) -> Result<Self::Value, DurationError> {
        let whole = || text.to_owned();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut rest = text;
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let (n, tail) = number_then_suffix(rest)
                .ok_or_else(|| DurationError::NotADuration { text: whole() })?;
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len());
            let per = match &tail[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(DurationError::NoUnit { text: whole() }),
                u => return Err(DurationError::UnknownUnit { unit: u.to_owned() }),
            };
            total_ms = n
                .checked_mul(per)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(|| DurationError::TooLong { text: whole() })?;
            rest = &tail[unit_len..];
        }
        Ok(std::time::Duration::from_millis(total_ms))
    }

    fn canonical(v: &Self::Value) -> String {
        format_duration(*v)
    }
}

/// `90s` -> `1m30s`, `500ms` -> `500ms`, zero -> `0s`.
pub fn format_duration(d: std::time::Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= per {
            out.push_str(&format!("{}{unit}", ms / per));
            ms %= per;
        }
    }
    out
}

/// Why a text is not a size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{text}` is not a size")]
    NotASize { text: String },
    #[error("`{text}` has no unit")]
    NoUnit { text: String },
    /// A unit berth does not know, with the one the user probably meant (`2g`: `2GiB`).
    #[error("`{unit}` is not a size unit{}", did_you_mean(.suggestion))]
    UnknownUnit {
        unit: String,
        suggestion: Option<String>,
    },
    #[error("`{text}` is too large")]
    TooLarge { text: String },
}

/// ` (did you mean `X`?)`, or nothing.
fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeKind;
impl UnitKind for SizeKind {
    type Value = u64;
    type Error = SizeError;
    const NAME: &'static str = "size";
    const SCHEMA_NAME: &'static str = "Size";
    const HINT: &'static str = "a whole number and a unit (B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB), e.g. `512MiB`, `2GiB`";
    const PATTERN: &'static str = "^[0-9]+(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)$";

    fn parse(text: &str) -> Result<u64, SizeError> {
        let (n, unit) = number_then_suffix(text).ok_or_else(|| SizeError::NotASize {
            text: text.to_owned(),
        })?;
        let per: u64 = match unit {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "" => {
                return Err(SizeError::NoUnit {
                    text: text.to_owned(),
                });
            }
            u => {
                let guess = match u.to_ascii_lowercase().trim_end_matches('b') {
                    "k" | "ki" => "KiB",
                    "m" | "mi" => "MiB",
                    "g" | "gi" => "GiB",
                    "t" | "ti" => "TiB",
                    _ => "",
                };
                return Err(SizeError::UnknownUnit {
                    unit: u.to_owned(),
                    suggestion: (!guess.is_empty()).then(|| format!("{n}{guess}")),
                });
            }
        };
        n.checked_mul(per).ok_or_else(|| SizeError::TooLarge {
            text: text.to_owned(),
        })
    }

    fn canonical(v: &u64) -> String {
        format_size(*v)
    }
}

/// Bytes in the largest binary unit that divides them exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, per) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= per && bytes.is_multiple_of(per) {
            return format!("{}{unit}", bytes / per);
        }
    }
    format!("{bytes}B")
}

/// A request rate as nginx understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub requests: u64,
    pub per: RatePer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatePer {
    Second,
    Minute,
}

/// Why a text is not a rate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("`{text}` is not a rate")]
    NotARate { text: String },
    #[error("`{text}` has no period")]
    NoPeriod { text: String },
    /// A period berth does not know, with the one the user probably meant (`10r/s`: `10/s`).
    #[error("`{period}` is not a rate period{}", did_you_mean(.suggestion))]
    UnknownPeriod {
        period: String,
        suggestion: Option<String>,
    },
    #[error("a rate of zero would refuse every request")]
    Zero,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateKind;
impl UnitKind for RateKind {
    type Value = Rate;
    type Error = RateError;
    const NAME: &'static str = "rate";
    const SCHEMA_NAME: &'static str = "Rate";
    const HINT: &'static str = "requests per second or minute, e.g. `10/s` or `100/min`";
    const PATTERN: &'static str = "^[0-9]+/(s|min)$";

    fn parse(text: &str) -> Result<Rate, RateError> {
        let (n, rest) = number_then_suffix(text).ok_or_else(|| RateError::NotARate {
            text: text.to_owned(),
        })?;
        let per = match rest {
            "/s" => RatePer::Second,
            "/min" => RatePer::Minute,
            "" => {
                return Err(RateError::NoPeriod {
                    text: text.to_owned(),
                });
            }
            p => {
                let guess = match p {
                    "r/s" | "/sec" | "/second" | "rps" => Some("s"),
                    "r/m" | "/m" | "/minute" | "rpm" => Some("min"),
                    _ => None,
                };
                return Err(RateError::UnknownPeriod {
                    period: p.to_owned(),
                    suggestion: guess.map(|g| format!("{n}/{g}")),
                });
            }
        };
        if n == 0 {
            return Err(RateError::Zero);
        }
        Ok(Rate { requests: n, per })
    }

    fn canonical(v: &Rate) -> String {
        match v.per {
            RatePer::Second => format!("{}/s", v.requests),
            RatePer::Minute => format!("{}/min", v.requests),
        }
    }
}

/// Why a text is not a file mode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error("`{text}` is not an octal file mode")]
    NotOctal { text: String },
    #[error("`{text}` sets special bits (setuid, setgid, sticky)")]
    SpecialBits { text: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeKind;
impl UnitKind for ModeKind {
    type Value = u32;
    type Error = ModeError;
    const NAME: &'static str = "file mode";
    const SCHEMA_NAME: &'static str = "FileMode";
    const HINT: &'static str = "an octal permission mode, e.g. `\"0400\"` or `\"0440\"`";
    const PATTERN: &'static str = "^(0o|0)?[0-7]{3}$";

    fn parse(text: &str) -> Result<u32, ModeError> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let not_octal = || ModeError::NotOctal {
            text: text.to_owned(),
        };
        if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(not_octal());
        }
        let mode = u32::from_str_radix(digits, 8).map_err(|_| not_octal())?;
        if mode > 0o777 {
            return Err(ModeError::SpecialBits {
                text: text.to_owned(),
            });
        }
        Ok(mode)
    }

    fn canonical(v: &u32) -> String {
        format!("{v:04o}")
    }
}

pub type Duration = Unit<DurationKind>;
pub type Size = Unit<SizeKind>;
pub type RateUnit = Unit<RateKind>;
pub type Mode = Unit<ModeKind>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn durations() {
        assert_eq!(DurationKind::parse("500ms"), Ok(D::from_millis(500)));
        assert_eq!(DurationKind::parse("5s"), Ok(D::from_secs(5)));
        assert_eq!(DurationKind::parse("2m"), Ok(D::from_secs(120)));
        assert_eq!(DurationKind::parse("1h30m"), Ok(D::from_secs(5400)));
        for bad in [
            "",
            "5",
            "5 s",
            "-1s",
            "1.5s",
            "5sec",
            "s",
            "99999999999999999999d",
        ] {
            assert!(DurationKind::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(D::from_secs(90)), "1m30s");
        assert_eq!(format_duration(D::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(SizeKind::parse("512MiB"), Ok(512 << 20));
        assert_eq!(SizeKind::parse("2GiB"), Ok(2 << 30));
        assert_eq!(SizeKind::parse("1GB"), Ok(1_000_000_000));
        let e = SizeKind::parse("2g").unwrap_err().to_string();
        assert!(e.contains("did you mean `2GiB`"), "{e}");
        for bad in ["", "2", "GiB", "2 GiB", "-2GiB", "2.5GiB", "99999999999TiB"] {
            assert!(SizeKind::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(2 << 30), "2GiB");
        assert_eq!(format_size(1_000_000), "1000000B");
    }

    #[test]
    fn rates() {
        assert_eq!(
            RateKind::parse("100/min"),
            Ok(Rate {
                requests: 100,
                per: RatePer::Minute
            })
        );
        assert_eq!(
            RateKind::parse("10/s"),
            Ok(Rate {
                requests: 10,
                per: RatePer::Second
            })
        );
        for bad in ["100", "100/h", "/s", "0/s", "1.5/s", "100/minute"] {
            assert!(RateKind::parse(bad).is_err(), "{bad}");
        }
        assert!(
            RateKind::parse("10r/s")
                .unwrap_err()
                .to_string()
                .contains("did you mean `10/s`")
        );
        assert!(
            RateKind::parse("100/m")
                .unwrap_err()
                .to_string()
                .contains("did you mean `100/min`")
        );
    }

    #[test]
    fn modes() {
        assert_eq!(ModeKind::parse("0400"), Ok(0o400));
        assert_eq!(ModeKind::parse("640"), Ok(0o640));
        assert_eq!(ModeKind::canonical(&0o400), "0400");
        for bad in ["0800", "4755", "rw-", "04", ""] {
            assert!(ModeKind::parse(bad).is_err(), "{bad}");
        }
    }
}
