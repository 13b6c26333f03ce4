//! Generated dates for the `dates` encoder-decoder task: a date between 1950-01-01 and
//! 2049-12-31 written in one of [`DATE_FORMATS`] human formats ([`format_date`]) paired with its
//! ISO 8601 form, from a seeded generator ([`date_pairs`]).

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Month names, January first.
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Weekday names, Sunday first (as [`weekday`] counts).
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
/// Number of human formats of [`format_date`].
pub const DATE_FORMATS: usize = 12;

/// Days in `month` (1-12) of `year` (Gregorian).
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week, 0 = Sunday (Sakamoto's method).
fn weekday(year: u32, month: u32, day: u32) -> usize {
    const T: [u32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    ((y + y / 4 - y / 100 + y / 400 + T[month as usize - 1] + day) % 7) as usize
}

/// The English ordinal suffix of `day`: `st`, `nd`, `rd` or `th`.
fn ordinal(day: u32) -> &'static str {
    match (day % 10, day % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

/// `year-month-day` written in human format `format` (`0..DATE_FORMATS`), with month and weekday
/// names as given (the caller varies their case):
///
/// | # | example |
/// |---|---|
/// | 0 | `3 March 2021` |
/// | 1 | `March 3, 2021` |
/// | 2 | `03/03/2021` (month first) |
/// | 3 | `Wed, 3 Mar 21` (years 1950-2049) |
/// | 4 | `2021 March 3rd` |
/// | 5 | `3rd of March 2021` |
/// | 6 | `Wednesday, March 3, 2021` |
/// | 7 | `03.03.2021` (day first) |
/// | 8 | `3-Mar-2021` |
/// | 9 | `20210303` |
/// | 10 | `Mar 3 2021` |
/// | 11 | `2021-3-3` |
pub fn format_date(year: u32, month: u32, day: u32, format: usize) -> String {
    let name = MONTHS[month as usize - 1];
    let short = &name[..3];
    let wd = WEEKDAYS[weekday(year, month, day)];
    let yy = year % 100;
    match format % DATE_FORMATS {
        0 => format!("{day} {name} {year}"),
        1 => format!("{name} {day}, {year}"),
        2 => format!("{month:02}/{day:02}/{year}"),
        3 => format!("{}, {day} {short} {yy:02}", &wd[..3]),
        4 => format!("{year} {name} {day}{}", ordinal(day)),
        5 => format!("{day}{} of {name} {year}", ordinal(day)),
        6 => format!("{wd}, {name} {day}, {year}"),
        7 => format!("{day:02}.{month:02}.{year}"),
        8 => format!("{day}-{short}-{year}"),
        9 => format!("{year}{month:02}{day:02}"),
        10 => format!("{short} {day} {year}"),
        _ => format!("{year}-{month}-{day}"),
    }
}

/// One random (human, ISO 8601) date pair.
fn random_date_pair(rng: &mut ChaCha8Rng) -> (String, String) {
    let year = rng.random_range(1950..=2049u32);
    let month = rng.random_range(1..=12u32);
    let day = rng.random_range(1..=days_in_month(year, month));
    let human = format_date(year, month, day, rng.random_range(0..DATE_FORMATS));
    let human = match rng.random_range(0..3) {
        0 => human.to_lowercase(),
        1 => human.to_uppercase(),
        _ => human,
    };
    (human, format!("{year:04}-{month:02}-{day:02}"))
}

/// (human-written, ISO 8601) pairs.
pub type DatePairs = Vec<(String, String)>;

/// Seeded date pairs: `train` training pairs and `valid` validation pairs whose human side never
/// occurs among the training pairs. The same `(train, valid, seed)` gives the same pairs.
pub fn date_pairs(train: usize, valid: usize, seed: u64) -> (DatePairs, DatePairs) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xda7e_5eed);
    let train_pairs: Vec<(String, String)> =
        (0..train).map(|_| random_date_pair(&mut rng)).collect();
    let seen: HashSet<&str> = train_pairs.iter().map(|(h, _)| h.as_str()).collect();
    let mut valid_pairs = Vec::with_capacity(valid);
    // The date space (36,525 days x 12 formats x 3 cases) is far larger than any sensible
    // sample, so this ends quickly; the bound guards against absurd --samples.
    let mut tries = 0usize;
    while valid_pairs.len() < valid && tries < 100 * valid + 1000 {
        tries += 1;
        let pair = random_date_pair(&mut rng);
        if !seen.contains(pair.0.as_str()) {
            valid_pairs.push(pair);
        }
    }
    (train_pairs, valid_pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_valid_and_seeded() {
        assert_eq!(format_date(2021, 3, 3, 0), "3 March 2021");
        assert_eq!(format_date(2021, 3, 3, 1), "March 3, 2021");
        assert_eq!(format_date(2021, 3, 3, 2), "03/03/2021");
        assert_eq!(format_date(2021, 3, 3, 3), "Wed, 3 Mar 21");
        assert_eq!(format_date(2021, 3, 3, 4), "2021 March 3rd");
        assert_eq!(format_date(2000, 1, 1, 6), "Saturday, January 1, 2000");
        assert_eq!(format_date(2021, 3, 12, 5), "12th of March 2021");
        let (a, va) = date_pairs(50, 10, 4);
        let (b, _) = date_pairs(50, 10, 4);
        assert_eq!(a, b);
        assert_eq!(va.len(), 10);
        let train: HashSet<&String> = a.iter().map(|(h, _)| h).collect();
        assert!(va.iter().all(|(h, _)| !train.contains(h)));
        for (_, iso) in a.iter().chain(&va) {
            let parts: Vec<u32> = iso.split('-').map(|p| p.parse().unwrap()).collect();
            assert_eq!(iso.len(), 10);
            assert!((1950..=2049).contains(&parts[0]));
            assert!(parts[2] >= 1 && parts[2] <= days_in_month(parts[0], parts[1]));
        }
    }
}
