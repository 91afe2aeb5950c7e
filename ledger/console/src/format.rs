//! Amounts as people read them: rupees with Indian digit grouping
//! (₹1,23,456.78), dollars, credits with their sign.

use rust_decimal::Decimal;

/// Groups an integer's digits: the last three, then pairs (Indian).
fn group_indian(digits: &str) -> String {
    if digits.len() <= 3 {
        return digits.to_owned();
    }
    let (head, last3) = digits.split_at(digits.len() - 3);
    let mut parts: Vec<&str> = Vec::new();
    let mut rest = head;
    while rest.len() > 2 {
        let (h, pair) = rest.split_at(rest.len() - 2);
        parts.push(pair);
        rest = h;
    }
    parts.push(rest);
    parts.reverse();
    format!("{},{last3}", parts.join(","))
}

/// Groups an integer's digits by thousands.
fn group_thousands(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `₹2,078.00` from paise.
pub fn inr(paise: i64) -> String {
    let sign = if paise < 0 { "-" } else { "" };
    let p = paise.unsigned_abs();
    format!(
        "{sign}₹{}.{:02}",
        group_indian(&(p / 100).to_string()),
        p % 100
    )
}

/// `$25.00`.
pub fn usd(amount: Decimal) -> String {
    let a = amount.round_dp(2);
    let sign = if a.is_sign_negative() && !a.is_zero() {
        "-"
    } else {
        ""
    };
    let text = format!("{:.2}", a.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, "00"));
    format!("{sign}${}.{frac}", group_thousands(int))
}

/// Credits as the ledger keeps them (exact), grouped: `1,234.5`.
pub fn credits(amount: Decimal) -> String {
    let n = amount.normalize();
    let sign = if n.is_sign_negative() && !n.is_zero() {
        "-"
    } else {
        ""
    };
    let text = n.abs().to_string();
    match text.split_once('.') {
        Some((int, frac)) => format!("{sign}{}.{frac}", group_thousands(int)),
        None => format!("{sign}{}", group_thousands(&text)),
    }
}

/// A movement: `+25` or `-0.0075`.
pub fn signed_credits(amount: Decimal) -> String {
    if amount.is_sign_positive() && !amount.is_zero() {
        format!("+{}", credits(amount))
    } else {
        credits(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn rupees_group_as_in_india() {
        assert_eq!(inr(0), "₹0.00");
        assert_eq!(inr(5), "₹0.05");
        assert_eq!(inr(207_800), "₹2,078.00");
        assert_eq!(inr(12_345_678), "₹1,23,456.78");
        assert_eq!(inr(123_456_789_012), "₹1,23,45,67,890.12");
        assert_eq!(inr(-100_000), "-₹1,000.00");
    }

    #[test]
    fn dollars_and_credits() {
        assert_eq!(usd(d("25")), "$25.00");
        assert_eq!(usd(d("1234.5")), "$1,234.50");
        assert_eq!(credits(d("1234567.0075")), "1,234,567.0075");
        assert_eq!(credits(d("25.00")), "25");
        assert_eq!(signed_credits(d("25")), "+25");
        assert_eq!(signed_credits(d("-0.0075")), "-0.0075");
        assert_eq!(signed_credits(d("0")), "0");
    }
}
