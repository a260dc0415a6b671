//! Figures, their references and targets; medians over runs; JSON and a Markdown table.
//!
//! A target is reported as held or not, never asserted: a slow machine gets a true table, not a
//! failed run.

use serde::Serialize;

/// What a figure should be.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// Stride's figure divided by the reference's at most this.
    RatioAtMost(f64),
}

impl Target {
    fn holds(&self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::AtLeast(t) => Some(value >= *t),
            Target::AtMost(t) => Some(value <= *t),
            Target::RatioAtMost(t) => ratio.map(|r| r <= *t),
        }
    }

    fn text(&self, unit: &str) -> String {
        match self {
            Target::AtLeast(t) => format!("≥ {} {unit}", fmt(*t)),
            Target::AtMost(t) => format!("≤ {} {unit}", fmt(*t)),
            Target::RatioAtMost(t) => format!("≤ {}× reference", fmt(*t)),
        }
    }
}

/// One figure of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub value: f64,
    /// What the same run measured to compare with: (what, value, unit).
    pub reference: Option<(String, f64, String)>,
    pub target: Option<Target>,
}

impl Measure {
    pub fn new(scenario: &str, metric: &str, unit: &str, value: f64) -> Self {
        Self {
            scenario: scenario.to_string(),
            metric: metric.to_string(),
            unit: unit.to_string(),
            value,
            reference: None,
            target: None,
        }
    }

    pub fn reference(mut self, what: &str, value: f64, unit: &str) -> Self {
        self.reference = Some((what.to_string(), value, unit.to_string()));
        self
    }

    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }
}

/// One figure over every run.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub runs: Vec<f64>,
    pub median: f64,
    pub reference: Option<String>,
    pub reference_unit: Option<String>,
    pub reference_runs: Vec<f64>,
    pub reference_median: Option<f64>,
    /// `median / reference_median`.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub holds: Option<bool>,
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Groups the measures of every run by (scenario, metric), in first-seen order.
pub fn aggregate(measures: &[Measure]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for m in measures {
        let row = match rows
            .iter_mut()
            .find(|r| r.scenario == m.scenario && r.metric == m.metric)
        {
            Some(r) => r,
            None => {
                rows.push(Row {
                    scenario: m.scenario.clone(),
                    metric: m.metric.clone(),
                    unit: m.unit.clone(),
                    runs: Vec::new(),
                    median: f64::NAN,
                    reference: m.reference.as_ref().map(|r| r.0.clone()),
                    reference_unit: m.reference.as_ref().map(|r| r.2.clone()),
                    reference_runs: Vec::new(),
                    reference_median: None,
                    ratio: None,
                    target: m.target.clone(),
                    holds: None,
                });
                rows.last_mut().unwrap_or_else(|| unreachable!())
            }
        };
        row.runs.push(m.value);
        if let Some((_, v, _)) = &m.reference {
            row.reference_runs.push(*v);
        }
    }
    for r in &mut rows {
        r.median = median(&r.runs);
        if !r.reference_runs.is_empty() {
            let rm = median(&r.reference_runs);
            r.reference_median = Some(rm);
            if rm != 0.0 {
                r.ratio = Some(r.median / rm);
            }
        }
        r.holds = r.target.as_ref().and_then(|t| t.holds(r.median, r.ratio));
    }
    rows
}

/// A number as a person reads it: no more digits than it deserves.
pub fn fmt(v: f64) -> String {
    if v.is_nan() {
        return "–".into();
    }
    let a = v.abs();
    let s = if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    group_thousands(&s)
}

fn group_thousands(s: &str) -> String {
    let (int, frac) = s.split_once('.').map_or((s, None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | figure | Stride (median) | runs | reference, same run (median) | ratio | target | holds |\n\
         |---|---|---:|---|---|---:|---|:---:|\n",
    );
    for r in rows {
        let runs: Vec<String> = r.runs.iter().map(|v| fmt(*v)).collect();
        let reference = match (&r.reference, r.reference_median) {
            (Some(what), Some(v)) => format!(
                "{what}: {} {}",
                fmt(v),
                r.reference_unit.as_deref().unwrap_or("")
            ),
            _ => String::new(),
        };
        let ratio = r.ratio.map(|x| format!("{:.2}×", x)).unwrap_or_default();
        let target = r
            .target
            .as_ref()
            .map(|t| t.text(&r.unit))
            .unwrap_or_default();
        let holds = match r.holds {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.metric,
            fmt(r.median),
            r.unit,
            runs.join(" / "),
            reference,
            ratio,
            target,
            holds
        ));
    }
    out
}
