//! Reading authgate's `/metrics` text in tests.

/// The value of the series `name{labels}` exactly as rendered, if present.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// The sum of every series whose line starts with `prefix` (a name, or a name and some labels).
pub(crate) fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
