//! Retry policies: how often and how soon a failed step is tried again.
//! Written per module in `modules.json` and overridable per step in a
//! sequence file; the effective policy of each step is frozen in the run's
//! snapshot. The delay is a pure function of the policy, the retry number
//! and a jitter sample the caller draws (this crate has no randomness).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The retry settings as written (every field optional), in `modules.json`
/// or on a step of a sequence file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_max_delay_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_jitter_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_exit_codes: Option<Vec<i32>>,
}

/// The effective policy of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Extra attempts after a failed one.
    pub retries: u32,
    /// Wait before the first retry.
    pub delay_secs: f64,
    /// Multiplier applied to the delay at each further retry.
    pub backoff: f64,
    /// Cap on the delay (jitter included).
    pub max_delay_secs: f64,
    /// Each delay is moved by up to this fraction, up or down.
    pub jitter_factor: f64,
    /// Only failures with one of these exit codes are retried; `None`: any
    /// failure (a timeout, a signal, a program that could not start
    /// included). A timeout or a signal has no exit code, so a list never
    /// matches it.
    pub on_exit_codes: Option<Vec<i32>>,
}

/// Upper bounds that keep a typo from meaning "retry for a year".
pub const MAX_RETRIES: u32 = 1000;
pub const MAX_DELAY_SECS: f64 = 7.0 * 24.0 * 3600.0;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            delay_secs: 10.0,
            backoff: 2.0,
            max_delay_secs: 600.0,
            jitter_factor: 0.25,
            on_exit_codes: None,
        }
    }
}

impl RetryPolicy {
    /// `base` with `settings` laid over it; `Err(message)` names the field
    /// and what to write instead.
    pub fn with(&self, settings: &RetrySettings) -> Result<RetryPolicy, String> {
        let mut p = self.clone();
        if let Some(r) = settings.retries {
            if r.fract() != 0.0 || !(0.0..=MAX_RETRIES as f64).contains(&r) {
                return Err(format!(
                    "\"retries\" must be a whole number from 0 to {MAX_RETRIES}, not {r}"
                ));
            }
            p.retries = r as u32;
        }
        let secs = |field: &str, v: f64| {
            if v.is_finite() && (0.0..=MAX_DELAY_SECS).contains(&v) {
                Ok(v)
            } else {
                Err(format!(
                    "\"{field}\" must be a number of seconds from 0 to {MAX_DELAY_SECS} (a week), not {v}"
                ))
            }
        };
        if let Some(v) = settings.retry_delay_secs {
            p.delay_secs = secs("retry_delay_secs", v)?;
        }
        if let Some(v) = settings.retry_max_delay_secs {
            p.max_delay_secs = secs("retry_max_delay_secs", v)?;
        }
        if let Some(v) = settings.retry_backoff {
            if !(v.is_finite() && (1.0..=100.0).contains(&v)) {
                return Err(format!(
                    "\"retry_backoff\" must be a number from 1 (a constant delay) to 100, not {v}"
                ));
            }
            p.backoff = v;
        }
        if let Some(v) = settings.retry_jitter_factor {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!(
                    "\"retry_jitter_factor\" must be a fraction from 0 (no jitter) to 1, not {v}"
                ));
            }
            p.jitter_factor = v;
        }
        if let Some(codes) = &settings.retry_on_exit_codes {
            if codes.is_empty() {
                return Err(
                    "\"retry_on_exit_codes\" is empty, so nothing would be retried; list exit codes, or leave it out to retry any failure"
                        .into(),
                );
            }
            if let Some(c) = codes.iter().find(|c| !(1..=255).contains(*c)) {
                return Err(format!(
                    "\"retry_on_exit_codes\" holds {c}; a failed module exits with a code from 1 to 255"
                ));
            }
            p.on_exit_codes = Some(codes.clone());
        }
        Ok(p)
    }

    /// Whether a failure with this exit code (`None`: a timeout, a signal, a
    /// program that could not start) may be retried.
    pub fn retries_on(&self, exit_code: Option<i32>) -> bool {
        match (&self.on_exit_codes, exit_code) {
            (None, _) => true,
            (Some(codes), Some(code)) => codes.contains(&code),
            (Some(_), None) => false,
        }
    }

    /// The wait before retry number `retry` (1 for the first), with
    /// `jitter` in `[-1, 1]` (drawn by the caller): `delay * backoff^(retry-1)`,
    /// capped, then moved by `jitter * jitter_factor` of itself, and capped
    /// again. Saturates: any retry number gives a delay within the cap.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(10_000) as i32;
        let base = (self.delay_secs * self.backoff.powi(exponent)).min(self.max_delay_secs);
        let jitter = if jitter.is_finite() {
            jitter.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let secs = (base * (1.0 + jitter * self.jitter_factor)).clamp(0.0, self.max_delay_secs);
        Duration::from_secs_f64(if secs.is_finite() { secs } else { 0.0 })
    }
}

/// The fields of [`RetrySettings`], as written.
pub const FIELDS: [&str; 6] = [
    "retries",
    "retry_delay_secs",
    "retry_backoff",
    "retry_max_delay_secs",
    "retry_jitter_factor",
    "retry_on_exit_codes",
];

/// Takes the retry fields out of a module's or a step's JSON object, each
/// checked for its type with a message that names it; the rest of the
/// object is left for its own parser.
pub fn take_settings(object: &mut serde_json::Map<String, serde_json::Value>) -> Result<RetrySettings, String> {
    let mut s = RetrySettings::default();
    for field in FIELDS {
        let Some(value) = object.remove(field) else { continue };
        if field == "retry_on_exit_codes" {
            let codes = value.as_array().and_then(|a| {
                a.iter()
                    .map(|c| c.as_i64().and_then(|c| i32::try_from(c).ok()))
                    .collect()
            });
            s.retry_on_exit_codes = Some(codes.ok_or_else(|| {
                format!("\"retry_on_exit_codes\" must be a list of exit codes such as [75, 111], not {value}")
            })?);
            continue;
        }
        let n = value
            .as_f64()
            .ok_or_else(|| format!("\"{field}\" must be a number, not {value}"))?;
        match field {
            "retries" => s.retries = Some(n),
            "retry_delay_secs" => s.retry_delay_secs = Some(n),
            "retry_backoff" => s.retry_backoff = Some(n),
            "retry_max_delay_secs" => s.retry_max_delay_secs = Some(n),
            _ => s.retry_jitter_factor = Some(n),
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retries: f64, delay: f64) -> RetryPolicy {
        RetryPolicy::default()
            .with(&RetrySettings {
                retries: Some(retries),
                retry_delay_secs: Some(delay),
                ..RetrySettings::default()
            })
            .unwrap()
    }

    #[test]
    fn the_delay_grows_by_the_backoff_and_stops_at_the_cap() {
        let p = policy(10.0, 10.0);
        let at = |n| p.delay(n, 0.0).as_secs_f64();
        assert_eq!([at(1), at(2), at(3), at(4)], [10.0, 20.0, 40.0, 80.0]);
        assert_eq!(at(7), 600.0);
        // Saturates: no overflow, no delay of days, for any retry number.
        assert_eq!(at(u32::MAX), 600.0);
        assert_eq!(p.delay(u32::MAX, 1.0).as_secs_f64(), 600.0);
    }

    #[test]
    fn jitter_moves_the_delay_by_at_most_its_fraction_either_way() {
        let p = policy(3.0, 8.0);
        assert_eq!(p.delay(1, -1.0).as_secs_f64(), 6.0);
        assert_eq!(p.delay(1, 1.0).as_secs_f64(), 10.0);
        assert_eq!(p.delay(1, 7.0).as_secs_f64(), 10.0, "samples are clamped");
        assert_eq!(p.delay(1, f64::NAN).as_secs_f64(), 8.0);
    }

    #[test]
    fn exit_codes_select_what_is_retried() {
        let any = RetryPolicy::default();
        assert!(any.retries_on(Some(3)) && any.retries_on(None));
        let some = any
            .with(&RetrySettings {
                retry_on_exit_codes: Some(vec![75, 111]),
                ..RetrySettings::default()
            })
            .unwrap();
        assert!(some.retries_on(Some(75)) && !some.retries_on(Some(1)));
        assert!(!some.retries_on(None), "a timeout or a signal has no exit code");
    }

    #[test]
    fn bad_settings_name_their_field() {
        let bad = |s: RetrySettings, field: &str| {
            let e = RetryPolicy::default().with(&s).unwrap_err();
            assert!(e.contains(field), "{e}");
        };
        bad(
            RetrySettings {
                retries: Some(-1.0),
                ..Default::default()
            },
            "\"retries\"",
        );
        bad(
            RetrySettings {
                retries: Some(1.5),
                ..Default::default()
            },
            "\"retries\"",
        );
        bad(
            RetrySettings {
                retry_delay_secs: Some(-5.0),
                ..Default::default()
            },
            "\"retry_delay_secs\"",
        );
        bad(
            RetrySettings {
                retry_backoff: Some(0.5),
                ..Default::default()
            },
            "\"retry_backoff\"",
        );
        bad(
            RetrySettings {
                retry_jitter_factor: Some(2.0),
                ..Default::default()
            },
            "\"retry_jitter_factor\"",
        );
        bad(
            RetrySettings {
                retry_on_exit_codes: Some(vec![]),
                ..Default::default()
            },
            "\"retry_on_exit_codes\"",
        );
        bad(
            RetrySettings {
                retry_on_exit_codes: Some(vec![0]),
                ..Default::default()
            },
            "\"retry_on_exit_codes\"",
        );
    }
}
