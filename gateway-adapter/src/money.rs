//! Money rules of a top-up, written down and tested:
//!
//! - **FX rate**: INR per USD, the configured base rate plus a spread in basis
//!   points, rounded half-even to 4 decimals. The rate actually used is
//!   recorded with the quote.
//! - **INR amount**: `amount_usd × rate`, in paise (× 100), rounded half-even
//!   to a whole paisa.
//! - **Credits**: `amount_usd × credits_per_usd`, exact: USD has at most 2
//!   decimals and `credits_per_usd` at most 4, so credits have at most 6.
//! - **Reversal for a refund**: the granted credits × refunded paise ÷
//!   captured paise, rounded half-even to 6 decimals; the refund that
//!   completes a full refund reverses exactly what is left, so the reversals of
//!   a fully refunded payment add up to the credits it granted.

use ledger_schemas::{Credits, Paise, UsdAmount};
use rust_decimal::{Decimal, RoundingStrategy};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("credits_per_usd must be positive with at most 4 decimals")]
    CreditsPerUsd,
    #[error("the FX rate must be positive")]
    Rate,
    #[error("the amount is out of range")]
    Range,
    #[error("the refund exceeds what was captured")]
    OverRefund,
}

/// INR per USD: `base` plus `spread_bps` basis points, half-even to 4 decimals.
pub fn quoted_rate(base: Decimal, spread_bps: u32) -> Result<Decimal, MoneyError> {
    if base <= Decimal::ZERO {
        return Err(MoneyError::Rate);
    }
    let factor = Decimal::ONE + Decimal::from(spread_bps) / Decimal::from(10_000);
    Ok((base * factor).round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven))
}

/// The INR amount in paise for `usd` at `rate`, half-even to a whole paisa.
pub fn inr_paise(usd: UsdAmount, rate: Decimal) -> Result<Paise, MoneyError> {
    if rate <= Decimal::ZERO {
        return Err(MoneyError::Rate);
    }
    let paise = (usd.get() * rate * Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
    let whole: i64 = paise.try_into().map_err(|_| MoneyError::Range)?;
    Paise::new(whole).map_err(|_| MoneyError::Range)
}

/// Credits bought by `usd` at `credits_per_usd` (exact).
pub fn credits_for(usd: UsdAmount, credits_per_usd: Decimal) -> Result<Credits, MoneyError> {
    if credits_per_usd <= Decimal::ZERO || credits_per_usd.normalize().scale() > 4 {
        return Err(MoneyError::CreditsPerUsd);
    }
    Credits::new(usd.get() * credits_per_usd).map_err(|_| MoneyError::Range)
}

/// Credits to reverse for a refund of `refund` paise, given the payment's
/// `captured` paise, the `granted` credits, and what earlier refunds took
/// (`refunded_before` paise, `reversed_before` credits).
pub fn reversal_for(
    granted: Credits,
    captured: Paise,
    refunded_before: Paise,
    reversed_before: Credits,
    refund: Paise,
) -> Result<Credits, MoneyError> {
    let total = refunded_before.get() + refund.get();
    if refund.get() <= 0 || total > captured.get() {
        return Err(MoneyError::OverRefund);
    }
    let left = granted
        .checked_sub(reversed_before)
        .ok_or(MoneyError::OverRefund)?;
    if total == captured.get() {
        return Ok(left);
    }
    let share = (granted.get() * Decimal::from(refund.get()) / Decimal::from(captured.get()))
        .round_dp_with_strategy(6, RoundingStrategy::MidpointNearestEven);
    // Never past what is left, whatever the rounding of earlier shares.
    Credits::new(share.min(left.get())).map_err(|_| MoneyError::Range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(s: &str) -> UsdAmount {
        UsdAmount::parse(s).unwrap()
    }
    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn rate_with_spread_rounds_half_even() {
        assert_eq!(quoted_rate(d("83.1200"), 0).unwrap(), d("83.12"));
        assert_eq!(quoted_rate(d("83.12"), 150).unwrap(), d("84.3668"));
        // 100.00005 -> 100.0000 (half to even), 100.00015 -> 100.0002
        assert_eq!(quoted_rate(d("100.00005"), 0).unwrap(), d("100.0000"));
        assert_eq!(quoted_rate(d("100.00015"), 0).unwrap(), d("100.0002"));
        assert_eq!(quoted_rate(Decimal::ZERO, 0), Err(MoneyError::Rate));
    }

    #[test]
    fn paise_round_half_even() {
        assert_eq!(inr_paise(usd("10.00"), d("83.12")).unwrap().get(), 83_120);
        // 1.01 × 83.125 × 100 = 8395.625 -> 8396 (nearest)
        assert_eq!(inr_paise(usd("1.01"), d("83.125")).unwrap().get(), 8_396);
        // 0.5 paise exactly goes to the even paisa: 1.00 × 0.005 × 100 = 0.5 -> 0
        assert_eq!(inr_paise(usd("1.00"), d("0.005")).unwrap().get(), 0);
        // 1.5 paise -> 2
        assert_eq!(inr_paise(usd("1.00"), d("0.015")).unwrap().get(), 2);
    }

    #[test]
    fn credits_are_exact() {
        assert_eq!(
            credits_for(usd("12.34"), d("1")).unwrap().to_string(),
            "12.34"
        );
        assert_eq!(
            credits_for(usd("0.01"), d("1.2345")).unwrap().to_string(),
            "0.012345"
        );
        assert_eq!(
            credits_for(usd("1"), d("1.23456")),
            Err(MoneyError::CreditsPerUsd)
        );
        assert_eq!(
            credits_for(usd("1"), d("0")),
            Err(MoneyError::CreditsPerUsd)
        );
    }

    #[test]
    fn refunds_reverse_in_proportion_and_add_up_exactly() {
        let granted = Credits::parse("10").unwrap();
        let captured = Paise::new(83_120).unwrap();
        let zero_p = Paise::new(0).unwrap();
        let first = reversal_for(
            granted,
            captured,
            zero_p,
            Credits::ZERO,
            Paise::new(27_707).unwrap(),
        )
        .unwrap();
        assert_eq!(first.to_string(), "3.333373");
        let second = reversal_for(
            granted,
            captured,
            Paise::new(27_707).unwrap(),
            first,
            Paise::new(55_413).unwrap(),
        )
        .unwrap();
        assert_eq!(first.checked_add(second).unwrap(), granted);
        assert_eq!(
            reversal_for(
                granted,
                captured,
                zero_p,
                Credits::ZERO,
                Paise::new(83_121).unwrap()
            ),
            Err(MoneyError::OverRefund)
        );
    }

    proptest! {
        #[test]
        fn any_refund_split_reverses_exactly_the_granted_credits(
            cents in 100u64..1_000_000,
            rate in 7000u64..9000,
            cuts in proptest::collection::vec(1u64..1000, 1..6),
        ) {
            let usd = UsdAmount::new(Decimal::new(cents as i64, 2)).unwrap();
            let captured = inr_paise(usd, Decimal::new(rate as i64, 2)).unwrap();
            let granted = credits_for(usd, Decimal::ONE).unwrap();
            // Split the captured paise into refunds proportional to `cuts`.
            let weight: u64 = cuts.iter().sum();
            let mut parts: Vec<i64> = cuts
                .iter()
                .map(|c| captured.get() * *c as i64 / weight as i64)
                .collect();
            let used: i64 = parts.iter().sum();
            *parts.last_mut().unwrap() += captured.get() - used;
            let (mut refunded, mut reversed) = (0i64, Credits::ZERO);
            for p in parts.into_iter().filter(|p| *p > 0) {
                let r = reversal_for(
                    granted,
                    captured,
                    Paise::new(refunded).unwrap(),
                    reversed,
                    Paise::new(p).unwrap(),
                )
                .unwrap();
                refunded += p;
                reversed = reversed.checked_add(r).unwrap();
                prop_assert!(reversed <= granted);
            }
            prop_assert_eq!(reversed, granted);
        }
    }
}
