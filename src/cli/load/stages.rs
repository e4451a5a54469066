//! Where the server spent the time of a run: the stage histograms of its
//! `/metrics` (`cepheus_stage_seconds`) read before and after the run, and
//! the difference summarised per stage.

use serde::Serialize;

use crate::telemetry::STAGE_SECONDS;

/// One stage's share of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTime {
    /// The stage (`decode`, `fsync`, …).
    pub stage: String,
    /// Observations during the run.
    pub count: u64,
    /// Mean, in milliseconds.
    pub mean_ms: f64,
    /// Median, in milliseconds (the upper bound of its histogram bucket).
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds (the upper bound of its bucket).
    pub p99_ms: f64,
}

/// One stage's histogram as scraped: (stage, bucket upper bounds with
/// cumulative counts, sum, count).
type Scraped = (String, Vec<(f64, u64)>, f64, u64);

/// The stage histograms read from one `/metrics` text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageSample {
    stages: Vec<Scraped>,
}

impl StageSample {
    /// Parses the `cepheus_stage_seconds` series of a Prometheus text.
    pub fn parse(text: &str) -> StageSample {
        let mut sample = StageSample::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(STAGE_SECONDS) else {
                continue;
            };
            let Some((series, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let Some(stage) = label(series, "stage") else {
                continue;
            };
            let entry = sample.entry(stage);
            if series.starts_with("_bucket") {
                if let Some(le) = label(series, "le").and_then(|le| le.parse::<f64>().ok()) {
                    entry.1.push((le, value as u64));
                }
            } else if series.starts_with("_sum") {
                entry.2 = value;
            } else if series.starts_with("_count") {
                entry.3 = value as u64;
            }
        }
        sample
    }

    fn entry(&mut self, stage: String) -> &mut Scraped {
        let i = match self.stages.iter().position(|s| s.0 == stage) {
            Some(i) => i,
            None => {
                self.stages.push((stage, Vec::new(), 0.0, 0));
                self.stages.len() - 1
            }
        };
        &mut self.stages[i]
    }

    /// What happened between `self` (before) and `after`, per stage, in
    /// the order of the path (stages with no observation left out).
    pub fn until(&self, after: &StageSample) -> Vec<StageTime> {
        let mut times = Vec::new();
        for (stage, buckets, sum, count) in &after.stages {
            let before = self.stages.iter().find(|s| &s.0 == stage);
            let (before_sum, before_count) = before.map_or((0.0, 0), |b| (b.2, b.3));
            let n = count.saturating_sub(before_count);
            if n == 0 {
                continue;
            }
            let delta: Vec<(f64, u64)> = buckets
                .iter()
                .map(|&(le, c)| {
                    let was = before
                        .and_then(|b| b.1.iter().find(|x| x.0 == le))
                        .map_or(0, |x| x.1);
                    (le, c.saturating_sub(was))
                })
                .collect();
            let quantile = |q: f64| {
                let want = (q * n as f64).ceil() as u64;
                delta
                    .iter()
                    .find(|(_, c)| *c >= want)
                    .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
            };
            times.push(StageTime {
                stage: stage.clone(),
                count: n,
                mean_ms: (sum - before_sum) / n as f64 * 1000.0,
                p50_ms: quantile(0.5),
                p99_ms: quantile(0.99),
            });
        }
        times
    }
}

/// The value of `name="…"` in a series' labels.
fn label(series: &str, name: &str) -> Option<String> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + series[start..].find('"')?;
    Some(series[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_the_difference_of_two_scrapes() {
        let before = StageSample::parse(
            "cepheus_stage_seconds_bucket{stage=\"fsync\",le=\"0.001\"} 1\n\
             cepheus_stage_seconds_bucket{stage=\"fsync\",le=\"0.005\"} 2\n\
             cepheus_stage_seconds_bucket{stage=\"fsync\",le=\"+Inf\"} 2\n\
             cepheus_stage_seconds_sum{stage=\"fsync\"} 0.004\n\
             cepheus_stage_seconds_count{stage=\"fsync\"} 2\n",
        );
        let after = StageSample::parse(
            "# TYPE cepheus_stage_seconds histogram\n\
             cepheus_stage_seconds_bucket{stage=\"fsync\",le=\"0.001\"} 1\n\
             cepheus_stage_seconds_bucket{stage=\"fsync\",le=\"0.005\"} 101\n\
             cepheus_stage_seconds_bucket{stage=\"fsync\",le=\"+Inf\"} 102\n\
             cepheus_stage_seconds_sum{stage=\"fsync\"} 0.404\n\
             cepheus_stage_seconds_count{stage=\"fsync\"} 102\n\
             cepheus_stage_seconds_count{stage=\"decode\"} 0\n",
        );
        let times = before.until(&after);
        assert_eq!(times.len(), 1);
        let fsync = &times[0];
        assert_eq!((fsync.stage.as_str(), fsync.count), ("fsync", 100));
        assert!((fsync.mean_ms - 4.0).abs() < 1e-9);
        assert_eq!(fsync.p50_ms, 5.0);
        assert_eq!(fsync.p99_ms, 5.0);
    }
}
