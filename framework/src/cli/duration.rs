//! Time options on the command line: `--interval 0.25`, `--interval 250ms`,
//! `stop --timeout 2m`.

use std::time::Duration;

/// The longest time option accepted (about 31 years): longer ones would
/// overflow the deadlines computed from them.
///
/// ```
/// use daemonic::cli::{parse_duration, MAX_DURATION};
///
/// assert!(parse_duration(&format!("{}", MAX_DURATION.as_secs() + 1)).is_err());
/// ```
pub const MAX_DURATION: Duration = Duration::from_secs(1_000_000_000);

/// Parses a time option: a number of seconds (`30`, `0.25`) or a number with
/// a unit (`250ms`, `2m`, `1h 30m`). Zero is allowed; negative, non-finite
/// and longer-than-[`MAX_DURATION`] values are refused with a message that
/// says why.
///
/// ```
/// use daemonic::cli::parse_duration;
/// use std::time::Duration;
///
/// assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse_duration("-1").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(secs) if secs.is_nan() || secs.is_infinite() => {
            return Err(format!("`{text}` is not a number of seconds"))
        }
        Ok(secs) if secs < 0.0 => return Err("must not be negative".into()),
        Ok(secs) if secs >= MAX_DURATION.as_secs_f64() => return Err(too_long()),
        Ok(secs) => Duration::from_secs_f64(secs),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("expected seconds (`0.5`) or a number with a unit (`250ms`, `2m`): {e}")
        })?,
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// [`parse_duration`] for options where zero makes no sense (timeouts).
///
/// ```
/// use daemonic::cli::parse_positive_duration;
///
/// assert!(parse_positive_duration("0").is_err());
/// assert!(parse_positive_duration("30s").is_ok());
/// ```
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

fn too_long() -> String {
    format!("must be shorter than {}s", MAX_DURATION.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_units() {
        for (text, expected) in [
            ("0", Duration::ZERO),
            ("1", Duration::from_secs(1)),
            ("0.25", Duration::from_millis(250)),
            (" 1.5 ", Duration::from_millis(1500)),
            ("250ms", Duration::from_millis(250)),
            ("2m", Duration::from_secs(120)),
            ("1h 30m", Duration::from_secs(5400)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        for (text, why) in [
            ("-1", "negative"),
            ("-0.5", "negative"),
            ("nan", "not a number"),
            ("inf", "not a number"),
            ("soon", "expected seconds"),
            ("", "expected seconds"),
            ("1e10", "shorter than"),
            ("40years", "shorter than"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn positive_refuses_zero_only() {
        assert!(parse_positive_duration("0").unwrap_err().contains("zero"));
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }
}
