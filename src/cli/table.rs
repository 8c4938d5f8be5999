//! PURE: patronictl's `print_output` — one table of rows rendered as `pretty` (prettytable's frame with a title
//! written into the top border), `topology`, `tsv`, `json` or `yaml`.
//!
//! The pretty form is drawn by comfy-table with a preset that reproduces prettytable's `+---+` frame, so
//! `raftgres list` prints the table operators know from `patronictl list`.

use comfy_table::CellAlignment;
use comfy_table::ContentArrangement;
use serde_json::Map;
use serde_json::Value;

/// prettytable's frame: `|` sides, `-` top, bottom and header rule, `+` junctions, no rules between rows.
const FRAME: &str = "||--+-++|    ++++++";
/// The same with a rule between every row, used when a cell spans several lines (prettytable's `ALL`).
const FRAME_ALL_RULES: &str = "||--+-++|-+++++++++";

/// An output format of `list`, `topology` and `history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A framed table with the cluster in its top border.
    Pretty,
    /// Tab-separated values with a header line.
    Tsv,
    /// A JSON array with one object per row.
    Json,
    /// A YAML list with one map per row.
    #[value(alias = "yml")]
    Yaml,
    /// `pretty` with the rows ordered as the replication tree (`topology` only).
    #[value(skip)]
    Topology,
}

impl Format {
    /// `pretty` or `topology`: the human forms that carry the title and the footer.
    pub fn is_human(self) -> bool {
        matches!(self, Format::Pretty | Format::Topology)
    }
}

/// A table: column names, rows of JSON values (strings, numbers; `""` for empty), right-aligned columns.
#[derive(Debug, Clone, Default)]
pub struct Output<'a> {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// One value per column in every row.
    pub rows: Vec<Vec<Value>>,
    /// Columns whose values (and header) are right-aligned in the human forms.
    pub right_aligned: &'a [&'a str],
    /// Written into the top border (` Cluster: demo (7…) `); also makes `json`/`yaml` drop empty values and the
    /// human forms drop a leading `Cluster` column, as patronictl does.
    pub title: String,
}

/// Renders `output` in `format`; the result ends with a newline.
pub fn render(output: &Output<'_>, format: Format) -> String {
    match format {
        Format::Json => format!("{}\n", json_rows(output)),
        Format::Yaml => yaml_rows(output),
        Format::Tsv => {
            let header = output.columns.join("\t");
            let rows = output.rows.iter().map(|row| row.iter().map(text).collect::<Vec<_>>().join("\t"));
            std::iter::once(header).chain(rows).map(|line| line + "\n").collect()
        }
        Format::Pretty | Format::Topology => pretty(output),
    }
}

/// A value as a cell shows it: strings as they are, numbers in decimal, null as nothing.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn pretty(output: &Output<'_>) -> String {
    let skip = usize::from(!output.title.is_empty() && output.columns.first().is_some_and(|c| c == "Cluster"));
    let columns = &output.columns[skip.min(output.columns.len())..];
    let multi_line = output.rows.iter().flatten().any(|value| text(value).contains('\n'));
    let mut table = comfy_table::Table::new();
    table
        .load_preset(if multi_line { FRAME_ALL_RULES } else { FRAME })
        .force_no_tty()
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.to_vec());
    for row in &output.rows {
        table.add_row(row.iter().skip(skip).map(text).collect::<Vec<_>>());
    }
    for (column_idx, name) in columns.iter().enumerate() {
        if let Some(column) = table.column_mut(column_idx) {
            let right = output.right_aligned.contains(&name.as_str());
            column.set_cell_alignment(if right { CellAlignment::Right } else { CellAlignment::Left });
        }
    }
    let rendered = table.to_string();
    let mut lines = rendered.lines();
    let mut res = match lines.next() {
        Some(top) => with_title(top, &output.title),
        None => String::new(),
    };
    res.push('\n');
    for line in lines {
        res.push_str(line);
        res.push('\n');
    }
    res
}

/// patronictl's `__build_header`: the title replaces the top border after its first character, cut to fit.
fn with_title(top: &str, title: &str) -> String {
    let top: Vec<char> = top.chars().collect();
    let title: Vec<char> = title.chars().take(top.len().saturating_sub(2)).collect();
    let Some(first) = top.first() else { return String::new() };
    let rest = top.get(1 + title.len()..).unwrap_or_default();
    std::iter::once(*first).chain(title).chain(rest.iter().copied()).collect()
}

/// The rows as objects keyed by column, in column order; with a title, empty values are left out.
fn row_objects<'b>(output: &'b Output<'_>) -> impl Iterator<Item = Vec<(&'b str, &'b Value)>> + 'b {
    output.rows.iter().map(move |row| {
        output
            .columns
            .iter()
            .zip(row)
            .filter(|(_, value)| output.title.is_empty() || !text(value).is_empty())
            .map(|(column, value)| (column.as_str(), value))
            .collect()
    })
}

/// Python's `json.dumps` of the row objects: keys in column order, `", "` and `": "` separators.
fn json_rows(output: &Output<'_>) -> String {
    let objects: Vec<String> = row_objects(output)
        .map(|pairs| {
            let members: Vec<String> = pairs
                .into_iter()
                .map(|(key, value)| format!("{}: {}", Value::from(key), compact_json(value)))
                .collect();
            format!("{{{}}}", members.join(", "))
        })
        .collect();
    format!("[{}]", objects.join(", "))
}

fn compact_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// PyYAML's `safe_dump` of the row objects (keys sorted, block style).
fn yaml_rows(output: &Output<'_>) -> String {
    let objects: Vec<Value> = row_objects(output)
        .map(|pairs| Value::Object(pairs.into_iter().map(|(key, value)| (key.to_string(), value.clone())).collect()))
        .collect();
    to_yaml(&Value::Array(objects))
}

/// YAML in block style; `[]` for an empty list and `{}` for an empty map, as PyYAML prints them.
pub fn to_yaml(value: &Value) -> String {
    match value {
        Value::Array(items) if items.is_empty() => "[]\n".into(),
        Value::Object(map) if map.is_empty() => "{}\n".into(),
        _ => serde_yaml_ng::to_string(value).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n")),
    }
}

/// YAML flow style for one line (`{nofailover: true, clonefrom: true}`), used for tags in tsv and topology.
pub fn to_yaml_flow(map: &Map<String, Value>) -> String {
    let items: Vec<String> =
        map.iter().map(|(key, value)| format!("{key}: {}", to_yaml(value).trim_end().replace('\n', " "))).collect();
    format!("{{{}}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn output() -> Output<'static> {
        Output {
            columns: vec!["Cluster".into(), "Member".into(), "TL".into()],
            rows: vec![vec![json!("demo"), json!("node1"), json!(5)], vec![json!("demo"), json!("node2"), json!("")]],
            right_aligned: &["TL"],
            title: " Cluster: demo (7277694203142172922) ".into(),
        }
    }

    #[test]
    fn pretty_writes_the_title_into_the_top_border_and_drops_the_cluster_column() {
        let expected = "\
+ Cluster: dem+\n\
| Member | TL |\n\
+--------+----+\n\
| node1  |  5 |\n\
| node2  |    |\n\
+--------+----+\n";
        assert_eq!(render(&output(), Format::Pretty), expected);
    }

    #[test]
    fn short_titles_keep_the_rest_of_the_border() {
        assert_eq!(with_title("+--------+----+", " x "), "+ x -----+----+");
    }

    #[test]
    fn machine_formats_keep_the_cluster_column_and_drop_empty_values() {
        assert_eq!(
            render(&output(), Format::Json),
            "[{\"Cluster\": \"demo\", \"Member\": \"node1\", \"TL\": 5}, {\"Cluster\": \"demo\", \"Member\": \"node2\"}]\n"
        );
        assert_eq!(render(&output(), Format::Tsv), "Cluster\tMember\tTL\ndemo\tnode1\t5\ndemo\tnode2\t\n");
        assert_eq!(
            render(&output(), Format::Yaml),
            "- Cluster: demo\n  Member: node1\n  TL: 5\n- Cluster: demo\n  Member: node2\n"
        );
    }

    #[test]
    fn multi_line_cells_get_a_rule_between_rows() {
        let output = Output {
            columns: vec!["A".into()],
            rows: vec![vec![json!("x\ny")], vec![json!("z")]],
            right_aligned: &[],
            title: String::new(),
        };
        assert_eq!(render(&output, Format::Pretty), "+---+\n| A |\n+---+\n| x |\n| y |\n+---+\n| z |\n+---+\n");
    }

    #[test]
    fn tags_in_flow_style() {
        let tags = json!({"nofailover": true, "clonefrom": "node1"});
        assert_eq!(to_yaml_flow(tags.as_object().expect("map")), "{clonefrom: node1, nofailover: true}");
    }
}
