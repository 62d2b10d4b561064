//! Parsers for command-line values the protocol has no type for. Their errors are what
//! clap prints after "invalid value …", so they say what is expected.

use std::time::Duration;

use trellis_protocol::{InviteCode, InviteId, InviteTicket};

const EXAMPLES: &str = "write e.g. 30m, 24h or 7d";

/// A duration like `90s`, `30m`, `24h`, `7d`, `2w` or `1h30m`; more than zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the duration is empty; {EXAMPLES}"));
    }
    let too_long = || format!("{text:?} is too long a time");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit_secs: u64 = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 60 * 60,
            'd' => 24 * 60 * 60,
            'w' => 7 * 24 * 60 * 60,
            _ => return Err(format!("{c:?} in {text:?} is not a unit (s, m, h, d or w); {EXAMPLES}")),
        };
        if number.is_empty() {
            return Err(format!("{text:?} has a unit without a number before it; {EXAMPLES}"));
        }
        let amount: u64 = number.parse().map_err(|_| too_long())?;
        total =
            amount.checked_mul(unit_secs).and_then(|secs| total.checked_add(secs)).ok_or_else(too_long)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("{text:?} needs a unit after {number} (s, m, h, d or w); {EXAMPLES}"));
    }
    if total == 0 {
        return Err("the duration must be longer than zero".into());
    }
    Ok(Duration::from_secs(total))
}

/// An invite's id: the first group of its code (`K7QF`), typed as forgivingly as codes
/// are; a whole code or link names its invite too.
pub fn parse_invite_id(text: &str) -> Result<InviteId, String> {
    if let Ok(ticket) = text.parse::<InviteTicket>() {
        return Ok(ticket.code.locator());
    }
    let symbols: String = text.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
    let not_an_id = || {
        format!(
            "{text:?} is not an invite id: an id is the first four characters of an invite code, \
             like K7QF (`trellis invites` lists them)"
        )
    };
    if symbols.chars().count() != 4 {
        return Err(not_an_id());
    }
    // The id is a code's first group: the code parser applies the same rules to it.
    let code: InviteCode = format!("{symbols}000000000000").parse().map_err(|_| not_an_id())?;
    Ok(code.locator())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_and_combined() {
        let secs = |text| parse_duration(text).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("24h"), Ok(86_400));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("2W"), Ok(1_209_600));
        assert_eq!(secs(" 1h30m "), Ok(5400));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for (text, expect) in [
            ("", "empty"),
            ("30", "needs a unit after 30"),
            ("1h30", "needs a unit after 30"),
            ("m", "a unit without a number"),
            ("3y", "'y' in \"3y\" is not a unit"),
            ("-5m", "'-' in \"-5m\" is not a unit"),
            ("0h", "longer than zero"),
            ("99999999999999999999d", "too long"),
            ("9999999999999999w", "too long"),
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(expect), "{text:?}: {error}");
        }
    }

    #[test]
    fn invite_ids_are_read_like_codes() {
        assert_eq!(parse_invite_id("K7QF"), Ok(InviteId("K7QF".into())));
        assert_eq!(parse_invite_id("k7qf"), Ok(InviteId("K7QF".into())));
        assert_eq!(parse_invite_id("oil1"), Ok(InviteId("0111".into())));
        assert_eq!(parse_invite_id("K7QF-3M9T-WX2C-HN4R"), Ok(InviteId("K7QF".into())));
        assert_eq!(parse_invite_id("trellis://join/K7QF-3M9T-WX2C-HN4R@h:1"), Ok(InviteId("K7QF".into())));
        for bad in ["", "K7Q", "K7QFX", "K7QU", "K7Q!"] {
            let error = parse_invite_id(bad).unwrap_err();
            assert!(error.contains("is not an invite id"), "{bad:?}: {error}");
        }
    }
}
