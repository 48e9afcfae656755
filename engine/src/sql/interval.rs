//! Interval literals as durations: `INTERVAL '5' MINUTES`, `INTERVAL '30 seconds'`.

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{DateTimeField, Expr, Interval, Value, ValueWithSpan};

/// Converts an interval literal to a duration, or explains why it cannot.
pub fn interval_to_duration(interval: &Interval) -> Result<Duration, String> {
    let text = match interval.value.as_ref() {
        Expr::Value(ValueWithSpan { value: Value::SingleQuotedString(s) | Value::Number(s, _), .. }) => s.clone(),
        other => return Err(format!("expected a literal interval such as INTERVAL '5' MINUTES, found {other}")),
    };
    let text = text.trim();
    let (num, unit_in_text) = match text.split_once(char::is_whitespace) {
        Some((n, u)) => (n, Some(u.trim().to_string())),
        None => (text, None),
    };
    let n: f64 = num.parse().map_err(|_| format!("'{text}' is not a number of time units"))?;
    let unit = match (&interval.leading_field, unit_in_text) {
        (Some(f), _) => field_name(f)?,
        (None, Some(u)) => u.to_ascii_lowercase(),
        (None, None) => "second".to_string(),
    };
    let secs = match unit.trim_end_matches('s') {
        "millisecond" | "m" if unit.starts_with("milli") => n / 1000.0,
        "second" | "sec" => n,
        "minute" | "min" => n * 60.0,
        "hour" => n * 3600.0,
        "day" => n * 86_400.0,
        "week" => n * 604_800.0,
        _ => return Err(format!("unsupported interval unit '{unit}' (use MILLISECOND, SECOND, MINUTE, HOUR, DAY or WEEK)")),
    };
    if secs < 0.0 {
        return Err(format!("the interval '{text}' is negative"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn field_name(f: &DateTimeField) -> Result<String, String> {
    Ok(match f {
        DateTimeField::Millisecond | DateTimeField::Milliseconds => "millisecond",
        DateTimeField::Second | DateTimeField::Seconds => "second",
        DateTimeField::Minute | DateTimeField::Minutes => "minute",
        DateTimeField::Hour | DateTimeField::Hours => "hour",
        DateTimeField::Day | DateTimeField::Days => "day",
        DateTimeField::Week(_) | DateTimeField::Weeks => "week",
        other => return Err(format!("unsupported interval unit {other}")),
    }
    .to_string())
}

/// A duration as a compact human string: `5m`, `90s`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
