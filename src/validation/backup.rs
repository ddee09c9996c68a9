//! `spec.redis.backup`: the schedule is checked field by field the way the CronJob
//! controller parses it (five standard cron fields or a macro), so a schedule that passes
//! here never makes the CronJob's apply fail; `keep` and `storage` against their bounds.

use super::{Problems, Unit, check_positive_quantity, quoted};
use crate::crd::{RedisBackup, limits};

const FIELD: &str = "spec.redis.backup";

pub(super) fn check(backup: &RedisBackup, problems: &mut Problems) {
    let field = format!("{FIELD}.schedule");
    let length = backup.schedule.chars().count();
    if length > limits::MAX_BACKUP_SCHEDULE {
        problems.check_length(&field, &backup.schedule, limits::MAX_BACKUP_SCHEDULE);
    } else if let Err(why) = check_schedule(&backup.schedule) {
        problems.add(&field, why);
    }
    if !(1..=limits::MAX_BACKUP_KEEP).contains(&backup.keep) {
        problems.add(
            format!("{FIELD}.keep"),
            format!(
                "must be from 1 to {}, found {}",
                limits::MAX_BACKUP_KEEP,
                backup.keep
            ),
        );
    }
    if let Some(storage) = &backup.storage {
        check_positive_quantity(&format!("{FIELD}.storage"), storage, Unit::Bytes, problems);
    }
}

/// The macros a CronJob accepts in place of five fields (`@every` is refused: it is not
/// a cron schedule and drifts with the controller's restarts).
const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// One of the five fields: its name, its bounds, and the names it accepts for values
/// (`jan` is 1, `sun` is 0).
struct CronField {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    first_named: u32,
}

const FIELDS: [CronField; 5] = [
    CronField {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        first_named: 0,
    },
    CronField {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        first_named: 0,
    },
    CronField {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        first_named: 0,
    },
    CronField {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        first_named: 1,
    },
    CronField {
        name: "day of week",
        min: 0,
        max: 6,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        first_named: 0,
    },
];

/// Checks `schedule` as the CronJob controller's standard parser does; says what is wrong.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    const FORM: &str = "a cron schedule has five space-separated fields (minute hour \
                        day-of-month month day-of-week), such as \"0 3 * * *\", or is one of \
                        @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually";
    if schedule.starts_with('@') {
        return if MACROS.contains(&schedule) {
            Ok(())
        } else {
            Err(format!("{} is not a known macro; {FORM}", quoted(schedule)))
        };
    }
    let fields: Vec<&str> = schedule.split(' ').collect();
    if fields.len() != FIELDS.len() || fields.iter().any(|f| f.is_empty()) {
        return Err(format!("{} is not a schedule: {FORM}", quoted(schedule)));
    }
    for (text, field) in fields.iter().zip(&FIELDS) {
        for item in text.split(',') {
            check_item(item, field).map_err(|why| {
                format!(
                    "{} is not a schedule: the {} field {}: {why}",
                    quoted(schedule),
                    field.name,
                    quoted(text)
                )
            })?;
        }
    }
    Ok(())
}

/// One item of a field's list: `*`, `?`, `N` or `N-M`, each optionally `/STEP`.
fn check_item(item: &str, field: &CronField) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(step) if step > 0 => {}
            _ => {
                return Err(format!(
                    "the step {} must be a positive number",
                    quoted(step)
                ));
            }
        }
    }
    if range == "*" || range == "?" {
        return Ok(());
    }
    let (low, high) = match range.split_once('-') {
        Some((low, high)) => (value(low, field)?, value(high, field)?),
        None => {
            let single = value(range, field)?;
            (single, single)
        }
    };
    if low > high {
        return Err(format!("the range starts at {low}, after its end {high}"));
    }
    Ok(())
}

fn value(text: &str, field: &CronField) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|name| *name == lower) {
        return Ok(field.first_named + index as u32);
    }
    match text.parse::<u32>() {
        Ok(n)
            if (field.min..=field.max).contains(&n) && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(n)
        }
        _ => Err(format!(
            "{} is not a {} from {} to {}",
            quoted(text),
            field.name,
            field.min,
            field.max
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BACKUP_SCHEDULE_PATTERN;
    use proptest::prelude::*;

    #[test]
    fn common_schedules_are_accepted() {
        for schedule in [
            "0 3 * * *",
            "*/15 * * * *",
            "0 0 * * 0",
            "30 2 1 * *",
            "0 4 * * MON-FRI",
            "0 0 1 jan,jul ?",
            "5,35 0-23/2 * * sun",
            "0 3/6 * * *",
            "@daily",
            "@hourly",
            "@annually",
        ] {
            assert_eq!(check_schedule(schedule), Ok(()), "{schedule}");
        }
    }

    #[test]
    fn each_wrong_schedule_says_which_field_is_wrong() {
        for (schedule, part) in [
            ("0 3 * *", "five space-separated fields"),
            ("0 3 * * * *", "five space-separated fields"),
            ("0  3 * * *", "five space-separated fields"),
            ("60 3 * * *", "the minute field \"60\""),
            ("0 24 * * *", "not a hour from 0 to 23"),
            ("0 3 0 * *", "not a day of month from 1 to 31"),
            ("0 3 * 13 *", "not a month from 1 to 12"),
            ("0 3 * * 7", "not a day of week from 0 to 6"),
            ("0 3 * * fun", "day of week"),
            ("*/0 * * * *", "positive number"),
            ("5-1 * * * *", "starts at 5, after its end 1"),
            ("@every 1h", "not a known macro"),
            ("@reboot", "not a known macro"),
            ("+5 * * * *", "not a minute"),
        ] {
            let why = check_schedule(schedule).expect_err(schedule);
            assert!(why.contains(part), "{schedule}: {why}");
        }
    }

    proptest! {
        /// Whatever the operator accepts, admission's shape check accepts too: admission
        /// never refuses a schedule the operator would run.
        #[test]
        fn admission_accepts_every_schedule_the_operator_accepts(
            schedule in "(@[a-z]{4,8}|[0-9*,/?a-zA-Z-]{1,6}( [0-9*,/?a-zA-Z-]{1,6}){4}| ?[0-9* ]{1,14})"
        ) {
            let shape = regex::Regex::new(BACKUP_SCHEDULE_PATTERN).unwrap();
            if check_schedule(&schedule).is_ok() {
                prop_assert!(shape.is_match(&schedule), "{}", schedule);
            }
        }
    }
}
