//! Placeholders in a step's `input`, `output` and `conf`: `{{ ds }}` and
//! friends, checked when the sequence is parsed and filled when a run is
//! triggered (the values come from the caller: this crate has no clock), so
//! the snapshot holds the paths the run really uses.

use std::collections::BTreeMap;

/// Every placeholder a field may use.
pub const NAMES: [&str; 7] = [
    "ds",
    "ds_nodash",
    "ts",
    "yesterday_ds",
    "tomorrow_ds",
    "run_id",
    "sequence",
];

/// The values of one run's placeholders, by name.
pub type Values = BTreeMap<&'static str, String>;

/// The placeholders `text` uses, in order, or what is wrong with one.
fn scan(text: &str) -> Result<Vec<(usize, usize, &str)>, String> {
    let mut found = Vec::new();
    let mut rest = 0;
    while let Some(open) = text[rest..].find("{{").map(|i| rest + i) {
        let Some(close) = text[open + 2..].find("}}").map(|i| open + 2 + i) else {
            return Err(format!(
                "an unclosed placeholder at {:?}; write {{{{ ds }}}}",
                &text[open..]
            ));
        };
        let name = text[open + 2..close].trim();
        if !NAMES.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{{ {name} }}}}; known: {}",
                NAMES.map(|n| format!("{{{{ {n} }}}}")).join(", ")
            ));
        }
        found.push((open, close + 2, name));
        rest = close + 2;
    }
    Ok(found)
}

/// Checks the placeholders of a field.
pub fn check(text: &str) -> Result<(), String> {
    scan(text).map(drop)
}

/// Fills the placeholders of a checked field; with no values, the text is
/// left as written.
pub fn fill(text: &str, values: &Values) -> String {
    let Ok(found) = scan(text) else {
        return text.to_string();
    };
    if found.is_empty() || values.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, name) in found {
        out.push_str(&text[at..start]);
        match values.get(name) {
            Some(v) => out.push_str(v),
            None => out.push_str(&text[start..end]),
        }
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_the_rest_kept_verbatim() {
        let values: Values = [("ds", "2026-11-01".to_string()), ("run_id", "r1".to_string())].into();
        assert_eq!(
            fill("data/{{ ds }}/x-{{run_id}}.csv", &values),
            "data/2026-11-01/x-r1.csv"
        );
        assert_eq!(fill("no placeholder {", &values), "no placeholder {");
        assert_eq!(fill("{{ ds }}", &Values::new()), "{{ ds }}");
    }

    #[test]
    fn unknown_or_unclosed_placeholders_say_what_to_write() {
        assert!(
            check("{{ dss }}")
                .unwrap_err()
                .contains("unknown placeholder {{ dss }}; known: {{ ds }}")
        );
        assert!(check("x {{ ds").unwrap_err().contains("unclosed placeholder"));
        check("{{ ds }} {{ ds_nodash }} {{ ts }} {{ yesterday_ds }} {{ tomorrow_ds }} {{ sequence }}").unwrap();
    }
}
