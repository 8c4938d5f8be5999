//! Questions on standard error, answers from standard input, as patronictl's `click.confirm` and `click.prompt`.
//!
//! Answers may be typed or piped (`printf 'y\n' | raftgres switchover …`). When standard input is closed or has
//! no more lines, a question cannot be answered: the command fails and says to pass `--force` (or the missing
//! option) instead of guessing. Prompts go to standard error so that standard output stays the command's output.

use std::io::BufRead as _;
use std::io::Write as _;

use anyhow::Context as _;

/// Asks a yes/no question (default no); `action` names what `--force` would skip, for the error on closed input.
pub async fn confirm(question: &str, action: &str) -> anyhow::Result<bool> {
    loop {
        let answer = read_answer(&format!("{question} [y/N]: "), action).await?;
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "" | "n" | "no" => return Ok(false),
            _ => eprintln!("Error: invalid input"),
        }
    }
}

/// Asks for a value; an empty answer means `default`.
pub async fn ask(question: &str, default: &str, action: &str) -> anyhow::Result<String> {
    let answer = read_answer(&format!("{question} [{default}]: "), action).await?;
    let answer = answer.trim();
    Ok(if answer.is_empty() { default.to_string() } else { answer.to_string() })
}

/// Asks for a value that has no default (`remove`'s typed confirmations).
pub async fn ask_required(question: &str, action: &str) -> anyhow::Result<String> {
    loop {
        let answer = read_answer(&format!("{question}: "), action).await?;
        if !answer.trim().is_empty() {
            return Ok(answer.trim().to_string());
        }
    }
}

/// Asks for a password on the terminal without echoing it (`query --password`).
pub async fn password(question: &str) -> anyhow::Result<String> {
    let prompt = format!("{question}: ");
    tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .context("read the password")?
        .context("read the password from the terminal (--password needs one)")
}

/// Prints `prompt` and reads one line; fails when standard input has no more lines.
async fn read_answer(prompt: &str, action: &str) -> anyhow::Result<String> {
    let prompt = prompt.to_string();
    let line = tokio::task::spawn_blocking(move || -> std::io::Result<Option<String>> {
        let mut stderr = std::io::stderr();
        stderr.write_all(prompt.as_bytes())?;
        stderr.flush()?;
        let mut line = String::new();
        // The process-wide stdin buffer keeps piped answers for the next question.
        let n_read = std::io::stdin().lock().read_line(&mut line)?;
        // A terminal echoes the answer's newline; piped answers do not, so end the prompt's line here.
        if n_read > 0 && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            stderr.write_all(b"\n")?;
        }
        Ok((n_read > 0).then_some(line))
    })
    .await
    .context("read from standard input")?
    .context("read from standard input")?;
    match line {
        Some(line) => Ok(line),
        None => {
            eprintln!();
            Err(anyhow::anyhow!(
                "a confirmation is needed but standard input is closed; pass --force to {action} without asking"
            ))
        }
    }
}
