//! Pictures drawn on the server as SVG by the templates, from geometry
//! computed here: a run's timeline (`timeline`) and a sequence's recent
//! durations (`durations`). No JavaScript and no charting library: the
//! geometry is plain data the tests pin down, and the page's CSS colours it.
//!
//! Horizontal positions are percentages of the chart's width (an SVG that
//! is as wide as its card, from a phone to a desktop: rectangles and text
//! placed in `%` stretch without distorting the text); vertical ones are
//! pixels. Labels that must not stretch sit in a narrow SVG of their own
//! beside the chart. The Content-Security-Policy forbids inline styles, so
//! every position is an SVG attribute, never a `style`.

pub(crate) mod durations;
pub(crate) mod timeline;

/// A position along a chart, in percent of its width, as an SVG attribute.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.3}%", x.clamp(0.0, 100.0))
}

/// Round steps for an axis of milliseconds: 1-2-5 below a second, then
/// the units clocks and calendars use.
const STEPS_MS: &[i64] = &[
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
];

/// The smallest round step that cuts `span_ms` into at most `max_ticks`
/// intervals.
pub(crate) fn step_ms(span_ms: i64, max_ticks: i64) -> i64 {
    let span = span_ms.max(1);
    STEPS_MS
        .iter()
        .copied()
        .find(|s| span / s <= max_ticks.max(1))
        .unwrap_or_else(|| {
            let week = 604_800_000;
            week * (span / week / max_ticks.max(1) + 1)
        })
}

/// An elapsed time on an axis, short enough for a phone: `250 ms`,
/// `1.5 s`, `45 s`, `1:15` (min:s), `20 min`, `1 h 05`, `3 h`, `2 d`.
pub(crate) fn elapsed(ms: i64) -> String {
    let ms = ms.max(0);
    let (s, m, h) = (ms / 1000, ms / 60_000, ms / 3_600_000);
    match ms {
        0 => "0".into(),
        m_ if m_ < 1000 => format!("{m_} ms"),
        _ if ms < 60_000 && ms % 1000 != 0 => format!("{:.1} s", ms as f64 / 1000.0),
        _ if ms < 60_000 => format!("{s} s"),
        _ if ms < 3_600_000 && ms % 60_000 != 0 => format!("{m}:{:02}", s % 60),
        _ if ms < 3_600_000 => format!("{m} min"),
        _ if ms < 86_400_000 && ms % 3_600_000 != 0 => format!("{h} h {:02}", m % 60),
        _ if ms < 86_400_000 => format!("{h} h"),
        _ => format!("{} d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round_and_few() {
        assert_eq!(step_ms(0, 5), 1);
        assert_eq!(step_ms(900, 5), 200);
        assert_eq!(step_ms(4_200, 5), 1_000);
        assert_eq!(step_ms(130_000, 5), 30_000);
        assert_eq!(step_ms(3 * 3_600_000, 5), 3_600_000);
        assert_eq!(step_ms(60 * 86_400_000, 5), 2 * 604_800_000);
        for span in [7, 333, 59_000, 7_000_000, 900_000_000] {
            assert!(span / step_ms(span, 6) <= 6, "{span}");
        }
    }

    #[test]
    fn elapsed_times_stay_short() {
        for (ms, text) in [
            (0, "0"),
            (250, "250 ms"),
            (1_500, "1.5 s"),
            (45_000, "45 s"),
            (75_000, "1:15"),
            (1_200_000, "20 min"),
            (3_900_000, "1 h 05"),
            (10_800_000, "3 h"),
            (172_800_000, "2 d"),
        ] {
            assert_eq!(elapsed(ms), text);
        }
    }
}
