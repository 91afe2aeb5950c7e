//! Regular expressions for bounded decimal strings, so a JSON Schema says
//! exactly which amounts a parser takes: `min ≤ value ≤ max`, at most
//! `scale` fractional digits, no leading zeros, no sign, no exponent.
//!
//! Written for ECMA-262 and every other common dialect: only groups,
//! classes, counted repetition and alternation.

use rust_decimal::Decimal;

/// `lo..=hi`, each written with exactly `width` digits (zero-padded).
fn fixed_width(lo: u64, hi: u64, width: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = lo;
    while start <= hi {
        // The largest block [start, start + 10^k - 1] aligned on 10^k.
        let mut k = 0u32;
        while k < width && start % 10u64.pow(k + 1) == 0 && start + 10u64.pow(k + 1) - 1 <= hi {
            k += 1;
        }
        let step = 10u64.pow(k);
        let mut end = start + step - 1;
        // Then as many such blocks as share the next digit up.
        while end + step <= hi && (end + 1) % (step * 10) != 0 {
            end += step;
        }
        let (s, e) = (
            format!("{start:0w$}", w = width as usize),
            format!("{end:0w$}", w = width as usize),
        );
        let mut p = String::new();
        if k < width {
            // The digits before the varying one are common to the block.
            let at = (width - k - 1) as usize;
            p.push_str(&s[..at]);
            let (a, b) = (&s[at..=at], &e[at..=at]);
            if a == b {
                p.push_str(a);
            } else {
                p.push_str(&format!("[{a}-{b}]"));
            }
        }
        match k {
            0 => {}
            1 => p.push_str("[0-9]"),
            k => p.push_str(&format!("[0-9]{{{k}}}")),
        }
        out.push(p);
        if end == u64::MAX {
            break;
        }
        start = end + 1;
    }
    out
}

/// `lo..=hi` written without leading zeros (`0` alone for zero).
fn natural(lo: u64, hi: u64) -> Vec<String> {
    let mut out = Vec::new();
    if lo == 0 {
        out.push("0".to_owned());
    }
    let digits = |n: u64| n.max(1).ilog10() + 1;
    for width in digits(lo.max(1))..=digits(hi) {
        let (a, b) = (
            10u64.pow(width - 1).max(lo.max(1)),
            (10u64.pow(width) - 1).min(hi),
        );
        if a <= b {
            out.extend(fixed_width(a, b, width));
        }
    }
    out
}

fn alternatives(parts: &[String]) -> String {
    match parts {
        [one] => one.clone(),
        many => format!("(?:{})", many.join("|")),
    }
}

/// The fraction `.d…` (1 to `scale` digits) of a value whose fraction, in
/// units of 10^-scale, lies in `lo..=hi`; `None` when none does.
fn fraction(lo: u64, hi: u64, scale: u32) -> Vec<String> {
    let mut parts = Vec::new();
    for k in 1..=scale {
        // k digits f stand for f * 10^(scale - k).
        let unit = 10u64.pow(scale - k);
        let (a, b) = (lo.div_ceil(unit), (hi / unit).min(10u64.pow(k) - 1));
        if a <= b {
            parts.extend(fixed_width(a, b, k).into_iter().map(|p| format!("\\.{p}")));
        }
    }
    parts
}

/// A pattern for decimal strings from `min` to `max` (both non-negative,
/// with at most `scale` fractional digits) with at most `scale` fractional
/// digits written.
pub fn decimal_range(min: Decimal, max: Decimal, scale: u32) -> String {
    let split = |d: Decimal| {
        let d = d.round_dp(scale);
        let int = d.trunc();
        let frac = ((d - int) * Decimal::from(10u64.pow(scale))).trunc();
        (
            u64::try_from(int).expect("bounds fit u64"),
            u64::try_from(frac).expect("fractions fit u64"),
        )
    };
    let ((lo_int, lo_frac), (hi_int, hi_frac)) = (split(min), split(max));
    let all = 10u64.pow(scale) - 1;
    let any_fraction = format!("(?:\\.[0-9]{{1,{scale}}})?");
    let with = |ints: Vec<String>, lo: u64, hi: u64| -> Option<String> {
        if ints.is_empty() {
            return None;
        }
        let int = alternatives(&ints);
        if scale == 0 {
            return Some(int);
        }
        if lo == 0 && hi == all {
            return Some(format!("{int}{any_fraction}"));
        }
        let frac = fraction(lo, hi, scale);
        // No fraction written means a fraction of zero.
        let optional = if lo == 0 { "?" } else { "" };
        match frac.len() {
            0 if lo == 0 => Some(int),
            0 => None,
            _ => Some(format!("{int}{}{optional}", alternatives(&frac))),
        }
    };
    let mut parts = Vec::new();
    if lo_int == hi_int {
        parts.extend(with(natural(lo_int, lo_int), lo_frac, hi_frac));
    } else {
        parts.extend(with(natural(lo_int, lo_int), lo_frac, all));
        if lo_int + 1 < hi_int {
            parts.extend(with(natural(lo_int + 1, hi_int - 1), 0, all));
        }
        parts.extend(with(natural(hi_int, hi_int), 0, hi_frac));
    }
    format!("^(?:{})$", parts.join("|"))
}

/// `pattern` (as [`decimal_range`] writes it) with an optional minus sign.
pub fn signed(pattern: &str) -> String {
    let body = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or(pattern);
    format!("^-?{body}$")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn matches(pattern: &str, s: &str) -> bool {
        // The patterns use only what `regex` reads the same way.
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    fn canonical(s: &str, scale: u32) -> bool {
        let (int, frac) = s.split_once('.').map_or((s, None), |(i, f)| (i, Some(f)));
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && (int == "0" || !int.starts_with('0'))
            && frac.is_none_or(|f| {
                (1..=scale as usize).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit())
            })
    }

    #[test]
    fn integer_ranges_split_as_expected() {
        assert_eq!(
            natural(1, 250),
            ["[1-9]", "[1-9][0-9]", "1[0-9]{2}", "2[0-4][0-9]", "250"]
        );
        assert_eq!(fixed_width(0, 9, 1), ["[0-9]"]);
        assert_eq!(fixed_width(0, 5, 2), ["0[0-5]"]);
    }

    proptest! {
        #[test]
        fn a_pattern_takes_exactly_the_values_in_range(
            lo in 0u64..3_000, span in 0u64..300_000, scale in 0u32..4,
            value in "-?[0-9]{1,8}(\\.[0-9]{0,5})?",
        ) {
            let unit = Decimal::new(1, scale);
            let min = Decimal::from(lo) * unit;
            let max = min + Decimal::from(span) * unit;
            let p = decimal_range(min, max, scale);
            let want = canonical(&value, scale)
                && Decimal::from_str(&value).is_ok_and(|v| v >= min && v <= max);
            prop_assert_eq!(matches(&p, &value), want, "{} against {}", value, p);
        }
    }
}
