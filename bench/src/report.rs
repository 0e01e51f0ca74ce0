//! Results: one table per scenario run, saved as JSON so that `table` can
//! put the runs of several hubs side by side with Tidings' ratio to each.

use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

use crate::target::Target;

/// One scenario run against one hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub description: String,
    /// The knobs of the run, in order.
    pub params: Vec<(String, String)>,
    pub rows: Vec<Row>,
    /// Caveats printed under the table.
    pub notes: Vec<String>,
    /// Correctness failures (loss, duplicates, failed connections...).
    pub problems: Vec<String>,
}

/// One measured figure; `None` is printed as n/a.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    pub value: Option<f64>,
    pub better: Better,
}

/// Which way a figure is good, so ratios can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Better {
    Higher,
    Lower,
    /// Context, not a score.
    Info,
}

impl Better {
    fn arrow(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Info => "",
        }
    }
}

impl Report {
    /// An empty report of `scenario` against `target`.
    pub fn new(scenario: &str, target: &Target) -> Self {
        Report {
            scenario: scenario.into(),
            target: target.name.clone(),
            description: target.describe(),
            params: Vec::new(),
            rows: Vec::new(),
            notes: target.notes.clone(),
            problems: Vec::new(),
        }
    }

    pub fn param(&mut self, name: &str, value: impl ToString) {
        self.params.push((name.into(), value.to_string()));
    }

    pub fn row(&mut self, metric: &str, unit: &str, value: Option<f64>, better: Better) {
        self.rows.push(Row { metric: metric.into(), unit: unit.into(), value, better });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// The value of `metric`, if measured.
    pub fn value(&self, metric: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.metric == metric).and_then(|r| r.value)
    }

    /// The report as a text table with its parameters, notes and problems.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n== {} against {} ==", self.scenario, self.target);
        let _ = writeln!(out, "{}", self.description);
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "params: {}\n", params.join(" "));
        let table: Vec<Vec<String>> = std::iter::once(vec!["metric".into(), "value".into(), "unit".into(), "better".into()])
            .chain(self.rows.iter().map(|r| vec![r.metric.clone(), fmt_value(r.value), r.unit.clone(), r.better.arrow().into()]))
            .collect();
        out.push_str(&align(&table, &[false, true, false, false]));
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        if self.problems.is_empty() {
            let _ = writeln!(out, "correctness: OK (nothing lost, duplicated or misrouted)");
        }
        for problem in &self.problems {
            let _ = writeln!(out, "PROBLEM: {problem}");
        }
        out
    }

    /// Writes the report as JSON.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// Reads a report written by [`save`](Self::save).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }
}

/// Several hubs' reports of one scenario side by side, with the ratio of
/// the first (Tidings) to each of the others. Text, and Markdown.
pub fn side_by_side(reports: &[Report]) -> (String, String) {
    let Some(base) = reports.first() else { return (String::new(), String::new()) };
    let mut header = vec!["metric".to_string(), "unit".into(), "better".into()];
    header.extend(reports.iter().map(|r| r.target.clone()));
    header.extend(reports[1..].iter().map(|r| format!("{}/{}", base.target, r.target)));
    let mut table = vec![header];
    for row in &base.rows {
        let mut line = vec![row.metric.clone(), row.unit.clone(), row.better.arrow().to_string()];
        line.extend(reports.iter().map(|r| fmt_value(r.value(&row.metric))));
        for other in &reports[1..] {
            line.push(ratio(row.value, other.value(&row.metric)));
        }
        table.push(line);
    }

    let mut text = String::new();
    let _ = writeln!(text, "\n== {}: {} ==", base.scenario, reports.iter().map(|r| r.target.as_str()).collect::<Vec<_>>().join(" vs "));
    for report in reports {
        let params: Vec<String> = report.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(text, "{}: {} [{}]", report.target, report.description, params.join(" "));
    }
    text.push('\n');
    let right: Vec<bool> = (0..table[0].len()).map(|i| i >= 3).collect();
    text.push_str(&align(&table, &right));
    let mut markdown = String::new();
    let _ = writeln!(markdown, "| {} |", table[0].join(" | "));
    let _ = writeln!(markdown, "|{}|", right.iter().map(|&r| if r { " ---: " } else { " --- " }).collect::<Vec<_>>().join("|"));
    for line in &table[1..] {
        let _ = writeln!(markdown, "| {} |", line.join(" | "));
    }
    for report in reports {
        for note in &report.notes {
            let _ = writeln!(text, "note ({}): {note}", report.target);
        }
        for problem in &report.problems {
            let _ = writeln!(text, "PROBLEM ({}): {problem}", report.target);
        }
    }
    (text, markdown)
}

fn ratio(base: Option<f64>, other: Option<f64>) -> String {
    match (base, other) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        (Some(a), Some(b)) if a == b => "=".into(),
        _ => "n/a".into(),
    }
}

/// A figure with as many digits as it deserves.
pub fn fmt_value(value: Option<f64>) -> String {
    let Some(v) = value else { return "n/a".into() };
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return group(v as i64);
    }
    match v.abs() {
        a if a >= 1000.0 => group(v.round() as i64),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn align(rows: &[Vec<String>], right: &[bool]) -> String {
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| if right.get(i).copied().unwrap_or(false) { format!("{cell:>w$}", w = widths[i]) } else { format!("{cell:<w$}", w = widths[i]) })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_figures_and_ratios() {
        assert_eq!(fmt_value(Some(12345.0)), "12,345");
        assert_eq!(fmt_value(Some(2.345)), "2.35");
        assert_eq!(fmt_value(None), "n/a");
        assert_eq!(ratio(Some(4.0), Some(2.0)), "2.00");
        assert_eq!(ratio(Some(0.0), Some(0.0)), "=");
        assert_eq!(ratio(Some(1.0), None), "n/a");
    }
}
