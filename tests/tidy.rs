//! Tidy: house-style rules checked as a test over every `.rs` file of the workspace
//! (STYLE.md rule 24), reporting every violation as `file:line: problem` in one failure.
//!
//! It reads files and never changes them. A rule with an exception carries an allowlist here
//! with the reason, so the exception is reviewed like code.

use std::path::Path;
use std::path::PathBuf;

/// Directories scanned, relative to the workspace root.
const ROOTS: &[&str] = &["src", "raft/src", "bench/src", "tests", "raft/tests"];

/// Crates whose top-level modules ARCHITECTURE.md must name, as `<dir>/<module>`.
const MODULE_ROOTS: &[&str] = &["src", "raft/src"];

/// Files above this many lines fail unless allowlisted (STYLE.md rule 4; the aim is 500).
const MAX_LINES: usize = 800;

/// Files allowed over [`MAX_LINES`]: `(path relative to the workspace root, reason)`.
const LENGTH_ALLOWLIST: &[(&str, &str)] = &[];

/// Files allowed `expect(` outside tests: `(path, reason)`; each is a real invariant, not input or I/O.
const EXPECT_ALLOWLIST: &[(&str, &str)] = &[(
    "raft/src/store/sm.rs",
    "a poisoned state-machine lock means `apply` panicked half-way; serving that state would be worse than stopping",
)];

/// Files allowed `#[allow(unsafe_code)]` (the workspace denies it): `(path, reason)`.
const UNSAFE_ALLOWLIST: &[(&str, &str)] = &[(
    "src/watchdog/device.rs",
    "the three watchdog ioctls (WDIOC_GETSUPPORT, WDIOC_SETTIMEOUT, WDIOC_GETTIMEOUT); nix only offers unsafe fns",
)];

/// What a file ARCHITECTURE.md lists as pure may not contain outside comments and its test module:
/// `(token, what it is)`. `tokio::time::Instant` as a value type is fine; reading the clock is not.
const IMPURE: &[(&str, &str)] = &[
    ("async fn", "async code"),
    (".await", "async code"),
    ("tokio::spawn", "async code"),
    ("std::fs", "file I/O"),
    ("fs::", "file I/O"),
    ("File::", "file I/O"),
    ("std::net", "network I/O"),
    ("tokio::net", "network I/O"),
    ("reqwest", "network I/O"),
    ("std::process", "process I/O"),
    ("Instant::now(", "a clock read"),
    ("SystemTime::now(", "a clock read"),
    ("Utc::now(", "a clock read"),
];

/// The line of ARCHITECTURE.md that lists the pure files, by its bold label.
const PURE_FILES_LABEL: &str = "**Pure files";

/// Attributes that hide a failing test instead of fixing it or asserting the current behaviour.
const BANNED_ATTRIBUTES: &[&str] = &["#[ignore", "#[should_panic"];

#[test]
fn tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ROOTS {
        collect_rs_files(&root.join(dir), &mut files);
    }
    files.sort();
    let mut problems = Vec::new();
    for path in &files {
        let rel = relative(root, path);
        match std::fs::read_to_string(path) {
            Ok(text) => check_file(&rel, &text, &mut problems),
            Err(e) => problems.push(format!("{rel}: cannot read: {e}")),
        }
    }
    check_architecture(root, &mut problems);
    assert!(problems.is_empty(), "tidy found {} problem(s):\n{}", problems.len(), problems.join("\n"));
}

/// Every per-file rule; pushes `path:line: problem` lines.
fn check_file(rel: &str, text: &str, problems: &mut Vec<String>) {
    if !text.starts_with("//!") {
        problems.push(format!("{rel}:1: does not start with a `//!` comment saying what the file owns"));
    }
    let n_lines = text.lines().count();
    if n_lines > MAX_LINES && !LENGTH_ALLOWLIST.iter().any(|(path, _)| *path == rel) {
        problems.push(format!(
            "{rel}:{n_lines}: {n_lines} lines, over the {MAX_LINES}-line budget; split it or add it to LENGTH_ALLOWLIST with a reason"
        ));
    }
    let mut in_test_code = is_test_file(rel);
    for (line_idx, line) in text.lines().enumerate() {
        let line_no = line_idx + 1;
        let trimmed = line.trim_start();
        if line.ends_with(' ') || line.ends_with('\t') {
            problems.push(format!("{rel}:{line_no}: trailing whitespace"));
        }
        if let Some(attribute) = BANNED_ATTRIBUTES.iter().find(|a| trimmed.starts_with(*a)) {
            problems.push(format!("{rel}:{line_no}: {attribute}] is banned; assert the current behaviour instead"));
        }
        // Heuristic: test modules come last in a file, so everything after the marker is tests.
        if trimmed.starts_with("#[cfg(test)]") {
            in_test_code = true;
        }
        if !in_test_code && !trimmed.starts_with("//") && line.contains(".unwrap()") {
            problems.push(format!("{rel}:{line_no}: .unwrap() outside tests; propagate the error"));
        }
        let unsafe_allowed = UNSAFE_ALLOWLIST.iter().any(|(path, _)| *path == rel);
        if !in_test_code && !trimmed.starts_with("//") && line.contains("allow(unsafe_code)") && !unsafe_allowed {
            problems.push(format!(
                "{rel}:{line_no}: allow(unsafe_code) outside UNSAFE_ALLOWLIST; find a safe API or add the file with a reason"
            ));
        }
        let expect_allowed = EXPECT_ALLOWLIST.iter().any(|(path, _)| *path == rel);
        if !in_test_code && !trimmed.starts_with("//") && line.contains(".expect(") && !expect_allowed {
            problems.push(format!(
                "{rel}:{line_no}: .expect( outside tests; propagate the error, or add the file to EXPECT_ALLOWLIST \
                 with the invariant that makes it impossible"
            ));
        }
    }
}

/// A pure file: no I/O, no async, no clock reads outside comments and its test module.
fn check_pure(rel: &str, text: &str, problems: &mut Vec<String>) {
    for (line_idx, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            return;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        if let Some((token, what)) = IMPURE.iter().find(|(token, _)| line.contains(token)) {
            problems.push(format!(
                "{rel}:{}: `{token}` ({what}) in a file ARCHITECTURE.md calls pure; move it to the shell around it",
                line_idx + 1
            ));
        }
    }
}

/// The files ARCHITECTURE.md lists as pure: every backticked `.rs` path on its [`PURE_FILES_LABEL`] line.
fn pure_files(doc: &str) -> Vec<String> {
    let Some(line) = doc.lines().find(|line| line.contains(PURE_FILES_LABEL)) else { return Vec::new() };
    line.split('`').skip(1).step_by(2).filter(|item| item.ends_with(".rs")).map(str::to_string).collect()
}

/// Test code may unwrap: files under a `tests/` directory and files named `tests.rs` or `*_tests.rs`.
fn is_test_file(rel: &str) -> bool {
    rel.split('/').any(|part| part == "tests") || rel.ends_with("/tests.rs") || rel.ends_with("_tests.rs")
}

/// Every top-level module of `src/` and `raft/src/` is named in ARCHITECTURE.md.
fn check_architecture(root: &Path, problems: &mut Vec<String>) {
    let doc_path = root.join("ARCHITECTURE.md");
    let doc = match std::fs::read_to_string(&doc_path) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(format!("ARCHITECTURE.md:1: cannot read: {e}"));
            return;
        }
    };
    let pure = pure_files(&doc);
    if pure.is_empty() {
        problems.push(format!("ARCHITECTURE.md:1: no `{PURE_FILES_LABEL}` line listing the pure files"));
    }
    for rel in pure {
        match std::fs::read_to_string(root.join(&rel)) {
            Ok(text) => check_pure(&rel, &text, problems),
            Err(e) => problems.push(format!("ARCHITECTURE.md:1: lists `{rel}` as pure but it cannot be read: {e}")),
        }
    }
    for crate_dir in MODULE_ROOTS {
        for module in top_level_modules(&root.join(crate_dir)) {
            let module_path = format!("{crate_dir}/{module}");
            if !mentions_path(&doc, &module_path) {
                problems.push(format!(
                    "ARCHITECTURE.md:1: the code map does not mention module `{module_path}`; add a paragraph for it"
                ));
            }
        }
    }
}

/// Modules of a crate root: `<name>.rs` and `<name>/` entries, without the crate roots.
fn top_level_modules(src: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(src) else {
        return Vec::new();
    };
    let mut modules: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_string)
            }
        })
        .filter(|name| name != "lib" && name != "main")
        .collect();
    modules.sort();
    modules.dedup();
    modules
}

/// True when `doc` names `path` as a whole path: `src/config` matches `src/config/` and
/// `src/config.rs` but not `raft/src/config` or `src/configs`.
fn mentions_path(doc: &str, path: &str) -> bool {
    doc.match_indices(path).any(|(start, _)| {
        let before = doc[..start].chars().next_back();
        let after = doc[start + path.len()..].chars().next();
        let starts_path = before.is_none_or(|c| !(c == '/' || c == '_' || c.is_alphanumeric()));
        let ends_path = after.is_none_or(|c| !(c == '_' || c.is_alphanumeric()));
        starts_path && ends_path
    })
}

fn collect_rs_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|entry| entry.ok()) {
        let path = entry.path();
        if path.is_dir() {
            collect_rs_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

#[track_caller]
fn check_mention(doc: &str, path: &str, expected: bool) {
    assert_eq!(mentions_path(doc, path), expected, "mentions_path({doc:?}, {path:?})");
}

#[test]
fn module_mentions_match_whole_paths() {
    check_mention("`src/config/` reads", "src/config", true);
    check_mention("see src/status.rs", "src/status", true);
    check_mention("`raft/src/config.rs` only", "src/config", false);
    check_mention("`src/configs/`", "src/config", false);
    check_mention("`raft/src/config.rs`", "raft/src/config", true);
}

#[test]
fn pure_checks_flag_io_async_and_clocks_but_not_comments_or_tests() {
    let mut problems = Vec::new();
    let text =
        "//! pure\nuse tokio::time::Instant;\n// Instant::now() in a comment\nfn f() { let t = Instant::now(); }\n\
                async fn g() {}\n#[cfg(test)]\nmod tests { fn h() { std::fs::read(\"x\"); } }\n";
    check_pure("src/x.rs", text, &mut problems);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("src/x.rs:4: `Instant::now(` (a clock read)"), "{problems:?}");
    assert!(problems[1].starts_with("src/x.rs:5: `async fn`"), "{problems:?}");
    let doc = "- **Pure files** (tidy): `src/ha/decide.rs`, `raft/src/state.rs` and `ha::decide`.";
    assert_eq!(pure_files(doc), ["src/ha/decide.rs", "raft/src/state.rs"]);
}
