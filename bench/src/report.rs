//! The report model shared by every benchmark: a benchmark returns a [`Table`] of [`Row`]s plus
//! note lines, tables merge with [`Table::append`], and [`Table::render`] prints them as one grid
//! (so `all` prints one combined table). With five failover runs, min / p50 / max are the
//! min / median / max the issue asks for (p90 and p99 are then the max too).
//!
//! It only summarizes and formats samples: it must not run or time anything, and it never judges
//! a number (timings are printed, never asserted).

use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::CellAlignment;

/// What a row's samples measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds (latencies, gaps).
    Millis,
    /// Requests per second (throughput per one-second window).
    PerSecond,
    /// Mebibytes (resident memory).
    MiB,
    /// Percent of one CPU core.
    CpuPercent,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::PerSecond => "req/s",
            Unit::MiB => "MiB",
            Unit::CpuPercent => "% of a core",
        }
    }
}

/// Nearest-rank percentiles of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let min = *sorted.first()?;
        let max = *sorted.last()?;
        Some(Summary {
            n: sorted.len(),
            min,
            p50: nearest_rank(&sorted, 50),
            p90: nearest_rank(&sorted, 90),
            p99: nearest_rank(&sorted, 99),
            max,
        })
    }

    /// Summarizes durations in milliseconds.
    pub fn of_durations(samples: &[Duration]) -> Option<Summary> {
        Summary::of(&Summary::durations_as_millis(samples))
    }

    /// Durations as milliseconds, the unit every timing row prints.
    pub fn durations_as_millis(samples: &[Duration]) -> Vec<f64> {
        samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect()
    }
}

/// The smallest sample such that at least `percent`% of the samples are at or below it.
/// `sorted` is ascending and not empty.
fn nearest_rank(sorted: &[f64], percent: usize) -> f64 {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// One measured path of one benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The benchmark (its subcommand name).
    pub benchmark: &'static str,
    /// What was measured, e.g. "CAS put via leader".
    pub path: String,
    /// Unit of the summary.
    pub unit: Unit,
    /// The samples' percentiles; `None` when the path ran zero times.
    pub summary: Option<Summary>,
    /// Why the path could not be measured at all (printed after the path), e.g. a missing endpoint.
    pub unavailable: Option<String>,
}

impl Row {
    /// A latency row from measured durations.
    pub fn latency(benchmark: &'static str, path: impl Into<String>, samples: &[Duration]) -> Row {
        Row::of(benchmark, path, Unit::Millis, &Summary::durations_as_millis(samples))
    }

    /// A row of plain samples in `unit`.
    pub fn of(benchmark: &'static str, path: impl Into<String>, unit: Unit, samples: &[f64]) -> Row {
        Row { benchmark, path: path.into(), unit, summary: Summary::of(samples), unavailable: None }
    }

    /// A row that could not be measured, saying why instead of numbers.
    pub fn unavailable(benchmark: &'static str, path: impl Into<String>, unit: Unit, why: impl Into<String>) -> Row {
        Row { benchmark, path: path.into(), unit, summary: None, unavailable: Some(why.into()) }
    }
}

/// Rows and free-form note lines (set-up, disk, caveats), printed under the grid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// The measured rows, in print order.
    pub rows: Vec<Row>,
    /// Lines printed after the grid.
    pub notes: Vec<String>,
}

impl Table {
    /// Appends another benchmark's rows and notes (how `all` builds one table).
    pub fn append(&mut self, other: Table) {
        self.rows.extend(other.rows);
        self.notes.extend(other.notes);
    }

    /// The grid followed by the notes, one per line.
    pub fn render(&self) -> String {
        let mut grid = comfy_table::Table::new();
        grid.load_preset(UTF8_FULL_CONDENSED);
        grid.set_header(["benchmark", "path", "n", "min", "p50", "p90", "p99", "max", "unit"]);
        for row in &self.rows {
            let numbers = match &row.summary {
                Some(s) => [s.n.to_string(), fmt2(s.min), fmt2(s.p50), fmt2(s.p90), fmt2(s.p99), fmt2(s.max)],
                None => ["0".to_string(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into()],
            };
            let path = match &row.unavailable {
                Some(why) => format!("{}: {why}", row.path),
                None => row.path.clone(),
            };
            let mut cells = vec![row.benchmark.to_string(), path];
            cells.extend(numbers);
            cells.push(row.unit.label().to_string());
            grid.add_row(cells);
        }
        for column_idx in 2..8 {
            if let Some(column) = grid.column_mut(column_idx) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        let mut out = grid.to_string();
        for note in &self.notes {
            out.push('\n');
            out.push_str(note);
        }
        out
    }
}

/// Two decimals, the precision of every printed number.
pub fn fmt2(value: f64) -> String {
    format!("{value:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(samples: &[f64], expected: Option<(usize, f64, f64, f64, f64, f64)>) {
        let got = Summary::of(samples).map(|s| (s.n, s.min, s.p50, s.p90, s.p99, s.max));
        assert_eq!(got, expected);
    }

    #[test]
    fn no_samples_have_no_summary() {
        check(&[], None);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        check(&[3.0], Some((1, 3.0, 3.0, 3.0, 3.0, 3.0)));
    }

    #[test]
    fn hundred_samples_use_nearest_rank() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        check(&samples, Some((100, 1.0, 50.0, 90.0, 99.0, 100.0)));
    }

    #[test]
    fn ten_samples_round_the_rank_up() {
        let samples: Vec<f64> = (1..=10).map(f64::from).collect();
        check(&samples, Some((10, 1.0, 5.0, 9.0, 10.0, 10.0)));
    }

    #[test]
    fn render_prints_rows_and_notes() {
        let mut table = Table::default();
        table.append(Table {
            rows: vec![Row::latency("raft-write", "CAS put via leader", &[Duration::from_micros(1500)])],
            notes: vec!["disk: fine".into()],
        });
        table.append(Table { rows: vec![Row::latency("raft-write", "nothing", &[])], notes: vec![] });
        table.rows.push(Row::unavailable("failover", "switchover write gap", Unit::Millis, "endpoint not available"));
        let out = table.render();
        assert!(out.contains("CAS put via leader"), "{out}");
        assert!(out.contains("switchover write gap: endpoint not available"), "{out}");
        assert!(out.contains("1.50"), "{out}");
        assert!(out.ends_with("disk: fine"), "{out}");
    }
}
