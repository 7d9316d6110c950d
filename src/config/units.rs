//! Parsing of the human-friendly units used in the config file: durations
//! (`"10s"`, `"500ms"`, `"2m"`, `"1h"`) and sizes (`"64KiB"`, `"20GiB"`, `"1MB"`).
//! Pure functions; the caller attaches the file location to the error.

use std::time::Duration;

/// Parses `"<integer><unit>"` where unit is one of ms, s, m, h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("duration {text:?} needs a unit: ms, s, m or h")),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Parses `"<integer>[unit]"` where unit is B, KB, MB, GB, TB (powers of 1000)
/// or KiB, MiB, GiB, TiB (powers of 1024); no unit means bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    // Any case; a single letter is binary, as systemd and Docker read it.
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} (use B; KiB, MiB, GiB, TiB or K, M, G, T: powers of 1024; KB, MB, GB, TB: powers of 1000)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn split_number(text: &str) -> Result<(u64, &str), String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(format!("{text:?} does not start with a number"));
    }
    let number = text[..digits_end]
        .parse::<u64>()
        .map_err(|_| format!("number in {text:?} is too large"))?;
    Ok((number, text[digits_end..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_admins_write_them() {
        assert_eq!(parse_size("5G"), Ok(5 << 30));
        assert_eq!(parse_size("5 g"), parse_size("5GiB"));
        assert_eq!(parse_size("20 GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("20gb"), parse_size("20 GB"));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert!(parse_size("5 gigs").unwrap_err().contains("powers of 1024"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("1 XB").is_err());
        assert!(parse_size("").is_err());
    }
}
