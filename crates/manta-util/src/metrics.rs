//! A small Prometheus registry: counters, gauges and histograms with labels, rendered in the
//! text exposition format on `/metrics`.
//!
//! Each service owns one [`Metrics`] (several services may run in one test process, so there is
//! no global registry). Updates take a short mutex; nothing is held across `.await`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Default latency buckets, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Series {
    Counter(BTreeMap<Labels, f64>),
    Gauge(BTreeMap<Labels, f64>),
    Histogram {
        buckets: &'static [f64],
        series: BTreeMap<Labels, Hist>,
    },
}

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    series: Series,
}

/// A registry of metric families.
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn with_family<R>(
        &self,
        name: &'static str,
        help: &'static str,
        make: impl FnOnce() -> Series,
        f: impl FnOnce(&mut Series) -> R,
    ) -> R {
        let mut fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let fam = fams.entry(name).or_insert_with(|| Family {
            help,
            series: make(),
        });
        f(&mut fam.series)
    }

    /// Adds `by` to a counter.
    pub fn inc_by(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: f64) {
        self.with_family(
            name,
            help,
            || Series::Counter(BTreeMap::new()),
            |s| {
                if let Series::Counter(m) = s {
                    *m.entry(owned(labels)).or_insert(0.0) += by;
                }
            },
        );
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) {
        self.inc_by(name, help, labels, 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.with_family(
            name,
            help,
            || Series::Gauge(BTreeMap::new()),
            |s| {
                if let Series::Gauge(m) = s {
                    m.insert(owned(labels), v);
                }
            },
        );
    }

    /// Records one observation in a histogram with [`LATENCY_BUCKETS`].
    pub fn observe(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.observe_in(name, help, LATENCY_BUCKETS, labels, v);
    }

    /// Records one observation in a histogram with the given (sorted) bucket bounds.
    pub fn observe_in(
        &self,
        name: &'static str,
        help: &'static str,
        buckets: &'static [f64],
        labels: &[(&str, &str)],
        v: f64,
    ) {
        self.with_family(
            name,
            help,
            || Series::Histogram {
                buckets,
                series: BTreeMap::new(),
            },
            |s| {
                if let Series::Histogram { buckets, series } = s {
                    let h = series.entry(owned(labels)).or_insert_with(|| Hist {
                        counts: vec![0; buckets.len()],
                        sum: 0.0,
                        count: 0,
                    });
                    for (i, b) in buckets.iter().enumerate() {
                        if v <= *b {
                            h.counts[i] += 1;
                        }
                    }
                    h.sum += v;
                    h.count += 1;
                }
            },
        );
    }

    /// The current value of a counter or gauge series (for tests and status pages).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        match &fams.get(name)?.series {
            Series::Counter(m) | Series::Gauge(m) => m.get(&owned(labels)).copied(),
            Series::Histogram { series, .. } => series.get(&owned(labels)).map(|h| h.count as f64),
        }
    }

    /// Renders every family in the Prometheus text format, plus the process's resident memory.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.set(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &[],
                rss as f64,
            );
        }
        let fams = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let kind = match fam.series {
                Series::Counter(_) => "counter",
                Series::Gauge(_) => "gauge",
                Series::Histogram { .. } => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            match &fam.series {
                Series::Counter(m) | Series::Gauge(m) => {
                    for (labels, v) in m {
                        let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
                    }
                }
                Series::Histogram { buckets, series } => {
                    for (labels, h) in series {
                        for (i, b) in buckets.iter().enumerate() {
                            let le = b.to_string();
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {}",
                                fmt_labels(labels, Some(&le)),
                                h.counts[i]
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            fmt_labels(labels, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
                        let _ =
                            writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
                    }
                }
            }
        }
        out
    }
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    let mut first = true;
    let mut push = |k: &str, v: &str| {
        if !first {
            s.push(',');
        }
        first = false;
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    };
    for (k, v) in labels {
        push(k, v);
    }
    if let Some(le) = le {
        push("le", le);
    }
    s.push('}');
    s
}

/// This process's resident set size, from `/proc/self/statm`.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc(
            "http_requests_total",
            "Requests.",
            &[("route", "GetObject"), ("status", "200")],
        );
        m.inc(
            "http_requests_total",
            "Requests.",
            &[("route", "GetObject"), ("status", "200")],
        );
        m.observe(
            "http_request_duration_seconds",
            "Latency.",
            &[("route", "x\"y")],
            0.003,
        );
        let text = m.render();
        assert!(
            text.contains("# TYPE http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("http_requests_total{route=\"GetObject\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket{route=\"x\\\"y\",le=\"0.005\"} 1")
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket{route=\"x\\\"y\",le=\"0.001\"} 0")
        );
        assert!(text.contains("http_request_duration_seconds_count{route=\"x\\\"y\"} 1"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert_eq!(
            m.value(
                "http_requests_total",
                &[("route", "GetObject"), ("status", "200")]
            ),
            Some(2.0)
        );
    }
}
