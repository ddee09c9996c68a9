//! Quantiles of a Prometheus histogram read from OpenMetrics text, summed over every
//! label set of the family (e.g. all phases), interpolated within a bucket the way
//! PromQL's `histogram_quantile` does.

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub mean_seconds: Option<f64>,
}

/// Cumulative (upper bound, count) pairs, ascending, plus the sum of observations.
struct Buckets {
    cumulative: Vec<(f64, f64)>,
    sum: f64,
}

pub fn summarize(metrics: &str, family: &str) -> Summary {
    let buckets = parse(metrics, family);
    let count = buckets.cumulative.last().map_or(0.0, |b| b.1);
    Summary {
        count: count as u64,
        p50_seconds: buckets.quantile(0.50),
        p99_seconds: buckets.quantile(0.99),
        mean_seconds: (count > 0.0).then(|| buckets.sum / count),
    }
}

fn parse(metrics: &str, family: &str) -> Buckets {
    let bucket_prefix = format!("{family}_bucket{{");
    let sum_prefix = format!("{family}_sum");
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    let mut sum = 0.0;
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series.starts_with(&sum_prefix) {
            sum += value;
        } else if series.starts_with(&bucket_prefix)
            && let Some(bound) = label(series, "le").and_then(parse_bound)
        {
            match by_bound.iter_mut().find(|(b, _)| *b == bound) {
                Some(entry) => entry.1 += value,
                None => by_bound.push((bound, value)),
            }
        }
    }
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    Buckets {
        cumulative: by_bound,
        sum,
    }
}

fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &series[start..];
    Some(&rest[..rest.find('"')?])
}

fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

impl Buckets {
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.cumulative.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.cumulative {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let width = count - lower.1;
                let within = if width > 0.0 {
                    (rank - lower.1) / width
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * within);
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }
}
