//! Pure rendering and parsing of `synchronous_standby_names` in Patroni's format (§2.14 of the contract).
//!
//! This module owns the GUC text: one standby → its bare name, several → `N (a,b)`, quorum → `ANY N (a,b,c)`,
//! strict mode without standbys → `*` (quorum: `ANY 1 (*)`), and reading a current value back.
//! It must not choose the standbys (that is `ha::candidate`) or touch PostgreSQL or the DCS.

use std::collections::BTreeSet;

/// How the listed standbys confirm commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `synchronous_mode: on`: `FIRST` semantics, the first `N` listed standbys by priority.
    Priority,
    /// `synchronous_mode: quorum`: `ANY N`, any `N` of the listed standbys.
    Quorum,
}

/// What happens when no standby is eligible (`synchronous_mode_strict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Clear the GUC: the primary runs standalone and commits do not wait.
    Relaxed,
    /// Ask for any standby (`*`): commits wait until one connects.
    Strict,
}

/// What the primary wants `synchronous_standby_names` to express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRequest<'a> {
    /// Priority or quorum.
    pub mode: SyncMode,
    /// The chosen standbys' member names (`*` stands for any standby).
    pub standbys: &'a BTreeSet<String>,
    /// How many must confirm; `None` means all of them (priority mode). Quorum mode passes it explicitly.
    pub num: Option<u32>,
    /// What to do with no standbys.
    pub strictness: Strictness,
}

/// Renders the GUC value, or `None` when it should be cleared (no standbys, not strict), as Patroni 4.1.4 does.
///
/// Names are sorted and quoted with [`quote_standby_name`]. PostgreSQL rejects a count of 0, so quorum callers
/// must pass `num >= 1` whenever they list standbys.
pub fn render_synchronous_standby_names(request: &SyncRequest<'_>) -> Option<String> {
    let SyncRequest { mode, standbys, num, strictness } = *request;
    let wants_any = strictness == Strictness::Strict || num.is_some_and(|num| num >= 1);
    let items: Vec<String> = if standbys.contains("*") || (standbys.is_empty() && wants_any) {
        vec!["*".to_owned()]
    } else {
        standbys.iter().map(|name| quote_standby_name(name)).collect()
    };
    let num = num.unwrap_or(u32::try_from(items.len()).unwrap_or(u32::MAX));
    let list = items.join(",");
    match (mode, items.len()) {
        (_, 0) => None,
        (SyncMode::Quorum, _) => Some(format!("ANY {num} ({list})")),
        (SyncMode::Priority, 1) => Some(list),
        (SyncMode::Priority, _) => Some(format!("{num} ({list})")),
    }
}

/// Quotes a standby name unless it is a plain identifier (`[A-Za-z_][A-Za-z0-9_$]*`, not `first` or `any`):
/// `pg1` stays as is, `postgres-1` becomes `"postgres-1"`, and `"` inside is doubled.
pub fn quote_standby_name(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !name.eq_ignore_ascii_case("first")
        && !name.eq_ignore_ascii_case("any");
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A parsed `synchronous_standby_names` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStandbyNames {
    /// `FIRST`/bare list or `ANY`.
    pub mode: SyncMode,
    /// How many standbys must confirm (1 for a bare list).
    pub num: u32,
    /// The listed names, unquoted (PostgreSQL compares them with `application_name` case-insensitively).
    pub names: BTreeSet<String>,
    /// The list contains `*` (any standby); `*` is also in `names`.
    pub has_star: bool,
}

/// Why a `synchronous_standby_names` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse synchronous_standby_names {value:?}: {reason}")]
pub struct SyncParseError {
    /// The value.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    First,
    Any,
    Name(String),
    Star,
    Num(String),
    Comma,
    Open,
    Close,
}

/// Parses a current value; `Ok(None)` for an empty value (synchronous replication off).
///
/// Follows PostgreSQL's syntax (`syncrep_gram.y`): a bare list means `FIRST 1`, `N (list)` means `FIRST N`.
pub fn parse_synchronous_standby_names(value: &str) -> Result<Option<SyncStandbyNames>, SyncParseError> {
    let err = |reason: String| SyncParseError { value: value.to_owned(), reason };
    let tokens = tokenize(value).map_err(err)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let parse_num = |digits: &str| digits.parse::<u32>().map_err(|_| err(format!("number {digits} is too large")));
    let (mode, num, list) = match tokens.as_slice() {
        [Token::Any, Token::Num(n), Token::Open, list @ .., Token::Close] => (SyncMode::Quorum, parse_num(n)?, list),
        [Token::First, Token::Num(n), Token::Open, list @ .., Token::Close]
        | [Token::Num(n), Token::Open, list @ .., Token::Close] => (SyncMode::Priority, parse_num(n)?, list),
        list => (SyncMode::Priority, 1, list),
    };
    let mut names = BTreeSet::new();
    for (idx, token) in list.iter().enumerate() {
        let name = match (idx % 2, token) {
            (1, Token::Comma) => continue,
            (1, _) => return Err(err(format!("expected a comma at {token:?}"))),
            (_, Token::Name(name) | Token::Num(name)) => name.clone(),
            (_, Token::First) => "first".to_owned(),
            (_, Token::Any) => "any".to_owned(),
            (_, Token::Star) => "*".to_owned(),
            (_, other) => return Err(err(format!("expected a standby name at {other:?}"))),
        };
        names.insert(name);
    }
    if list.len() % 2 == 0 {
        return Err(err("the standby list is empty or ends with a comma".to_owned()));
    }
    Ok(Some(SyncStandbyNames { mode, num, has_star: names.contains("*"), names }))
}

/// Splits the value into tokens like PostgreSQL's `syncrep_scanner.l`.
fn tokenize(value: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = value.chars().peekable();
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '*' => Token::Star,
            '"' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            name.push('"');
                        }
                        Some('"') => break,
                        Some(c) => name.push(c),
                        None => return Err("unterminated quoted name".to_owned()),
                    }
                }
                Token::Name(name)
            }
            c if c.is_ascii_digit() => {
                let mut digits = c.to_string();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                Token::Num(digits)
            }
            c if ident_start(c) => {
                let mut ident = c.to_string();
                while let Some(d) = chars.next_if(|d| ident_start(*d) || d.is_ascii_digit() || *d == '$') {
                    ident.push(d);
                }
                match ident.to_ascii_lowercase().as_str() {
                    "first" => Token::First,
                    "any" => Token::Any,
                    _ => Token::Name(ident),
                }
            }
            other => return Err(format!("unexpected character {other:?}")),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    enum Input<'a> {
        Render(SyncMode, &'a [&'a str], Option<u32>, Strictness),
        Parse(&'a str),
    }

    #[track_caller]
    fn check(input: Input<'_>, expected: &str) {
        let actual = match input {
            Input::Render(mode, standbys, num, strictness) => {
                let standbys = set(standbys);
                let request = SyncRequest { mode, standbys: &standbys, num, strictness };
                render_synchronous_standby_names(&request).unwrap_or_else(|| "<cleared>".to_owned())
            }
            Input::Parse(value) => match parse_synchronous_standby_names(value) {
                Ok(None) => "off".to_owned(),
                Ok(Some(ssn)) => format!("{:?} {} {:?} star={}", ssn.mode, ssn.num, ssn.names, ssn.has_star),
                Err(e) => e.to_string(),
            },
        };
        assert_eq!(actual, expected);
    }

    use Strictness::{Relaxed, Strict};
    use SyncMode::{Priority, Quorum};

    #[test]
    fn single_standby_is_a_bare_name() {
        check(Input::Render(Priority, &["pg1"], None, Relaxed), "pg1");
        check(Input::Render(Priority, &["postgres-1"], None, Relaxed), r#""postgres-1""#);
        check(Input::Render(Priority, &["Node_1$"], None, Strict), "Node_1$");
        check(Input::Render(Priority, &["first"], None, Relaxed), r#""first""#);
        check(Input::Render(Priority, &["say \"hi\""], None, Relaxed), r#""say ""hi""""#);
    }

    #[test]
    fn several_standbys_are_sorted_with_a_count() {
        check(Input::Render(Priority, &["pg3", "pg-2"], None, Relaxed), r#"2 ("pg-2",pg3)"#);
        check(Input::Render(Priority, &["b", "a", "c"], Some(1), Relaxed), "1 (a,b,c)");
    }

    #[test]
    fn quorum_uses_any_even_for_one_standby() {
        check(Input::Render(Quorum, &["a", "b", "c"], Some(2), Relaxed), "ANY 2 (a,b,c)");
        check(Input::Render(Quorum, &["a"], Some(1), Relaxed), "ANY 1 (a)");
    }

    #[test]
    fn strict_without_standbys_waits_for_any() {
        check(Input::Render(Priority, &[], None, Strict), "*");
        check(Input::Render(Quorum, &[], Some(1), Strict), "ANY 1 (*)");
        check(Input::Render(Quorum, &[], Some(1), Relaxed), "ANY 1 (*)");
        check(Input::Render(Priority, &["*"], None, Relaxed), "*");
    }

    #[test]
    fn relaxed_without_standbys_clears_the_guc() {
        check(Input::Render(Priority, &[], None, Relaxed), "<cleared>");
        check(Input::Render(Quorum, &[], Some(0), Relaxed), "<cleared>");
    }

    #[test]
    fn parses_every_form_postgresql_accepts() {
        check(Input::Parse(""), "off");
        check(Input::Parse("  "), "off");
        check(Input::Parse("pg1"), r#"Priority 1 {"pg1"} star=false"#);
        check(Input::Parse(" a , b "), r#"Priority 1 {"a", "b"} star=false"#);
        check(Input::Parse(r#"2 ("pg-2",pg3)"#), r#"Priority 2 {"pg-2", "pg3"} star=false"#);
        check(Input::Parse("FIRST 2 (a,b)"), r#"Priority 2 {"a", "b"} star=false"#);
        check(Input::Parse(r#"ANY 4("a",*,b)"#), r#"Quorum 4 {"*", "a", "b"} star=true"#);
        check(Input::Parse("any 1 (*)"), r#"Quorum 1 {"*"} star=true"#);
        check(Input::Parse(r#""say ""hi""""#), r#"Priority 1 {"say \"hi\""} star=false"#);
        check(Input::Parse("firstname"), r#"Priority 1 {"firstname"} star=false"#);
        check(Input::Parse("FiRsT"), r#"Priority 1 {"first"} star=false"#);
    }

    #[test]
    fn parse_rejects_malformed_values() {
        check(
            Input::Parse("a,"),
            r#"cannot parse synchronous_standby_names "a,": the standby list is empty or ends with a comma"#,
        );
        check(
            Input::Parse("2 (,)"),
            r#"cannot parse synchronous_standby_names "2 (,)": expected a standby name at Comma"#,
        );
        check(
            Input::Parse(r#"ANY 4("a" b,"c c")"#),
            r#"cannot parse synchronous_standby_names "ANY 4(\"a\" b,\"c c\")": expected a comma at Name("b")"#,
        );
        check(Input::Parse(r#""open"#), r#"cannot parse synchronous_standby_names "\"open": unterminated quoted name"#);
        check(Input::Parse("a;b"), r#"cannot parse synchronous_standby_names "a;b": unexpected character ';'"#);
        check(
            Input::Parse("99999999999 (a)"),
            r#"cannot parse synchronous_standby_names "99999999999 (a)": number 99999999999 is too large"#,
        );
        check(
            Input::Parse("2 ()"),
            r#"cannot parse synchronous_standby_names "2 ()": the standby list is empty or ends with a comma"#,
        );
    }

    #[test]
    fn rendered_values_parse_back() {
        for (mode, standbys, num) in [(Priority, &["x-1", "y"][..], None), (Quorum, &["a", "b", "c"][..], Some(2))] {
            let standbys = set(standbys);
            let text =
                render_synchronous_standby_names(&SyncRequest { mode, standbys: &standbys, num, strictness: Relaxed });
            let parsed = parse_synchronous_standby_names(&text.unwrap()).unwrap().unwrap();
            assert_eq!((parsed.mode, parsed.names), (mode, standbys));
        }
    }
}
