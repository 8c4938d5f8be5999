//! The short, bounded fuzz run of every target in `tests/fuzz_targets` on the stable toolchain: a small
//! mutation fuzzer (bit flips, byte edits, splices, dictionary tokens, truncation) seeded with real inputs.
//!
//! Each target runs for `RAFTGRES_FUZZ_SECS` seconds (default 5) or `RAFTGRES_FUZZ_MAX_INPUTS` inputs
//! (default 200000), whichever comes first, from the seed `RAFTGRES_FUZZ_SEED` (default: a fixed seed, so CI
//! runs the same inputs every time; `RAFTGRES_FUZZ_SEED=random` draws one and prints it). A
//! panic fails the test and prints the input in hex and the seed that reproduces it; turn it into a
//! regression test. The long runs use libFuzzer through cargo-fuzz (`fuzz/`, see docs/security.md).
//! `RAFTGRES_FUZZ_SEED_DIR=<dir>` also writes each target's seeds to `<dir>/<target>/` (a cargo-fuzz corpus).

mod fuzz_targets;

use std::panic::AssertUnwindSafe;
use std::time::Duration;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;

/// Tokens the mutator splices in: the syntax of every format the targets parse.
const DICTIONARY: [&[u8]; 40] = [
    b"\n",
    b": ",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"\\",
    b"&",
    b"=",
    b"%",
    b"%00",
    b"%FF",
    b",",
    b"*x",
    b"&x ",
    b"!!binary ",
    b"---\n",
    b"\n---env\n",
    b"password: ",
    b"raft:\n  ",
    b"peers:\n  - ",
    b"postgresql:\n  ",
    b"tag_",
    b"lag=",
    b"mode=write",
    b"1.5GB",
    b"18446744073709551615",
    b"-1",
    b"1e999",
    b"NaN",
    b"null",
    b"true",
    b"+99:99",
    b"T",
    b"ready   \n",
    b": 0/16B3740\n",
    b"\xff\xff\xff\xff\xff",
];

/// The seed when `RAFTGRES_FUZZ_SEED` is not set: CI runs are repeatable.
const DEFAULT_SEED: u64 = 0x5eed_2026;

/// `RAFTGRES_FUZZ_SEED`: a number, `random`, or unset ([`DEFAULT_SEED`]).
fn fuzz_seed() -> u64 {
    match std::env::var("RAFTGRES_FUZZ_SEED").ok().as_deref() {
        Some("random") => rand::random(),
        Some(value) => value.parse().unwrap_or(DEFAULT_SEED),
        None => DEFAULT_SEED,
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// One random edit of `input`, using `corpus` for splices.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = input.len();
    match rng.gen_range(0..10) {
        0 if len > 0 => {
            let idx = rng.gen_range(0..len);
            input[idx] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let idx = rng.gen_range(0..len);
            input[idx] = rng.gen();
        }
        2 => {
            let idx = rng.gen_range(0..=len);
            input.insert(idx, rng.gen());
        }
        3 if len > 0 => {
            let start = rng.gen_range(0..len);
            let end = (start + rng.gen_range(1..=16)).min(len);
            input.drain(start..end);
        }
        4 => {
            let token = DICTIONARY[rng.gen_range(0..DICTIONARY.len())];
            let idx = rng.gen_range(0..=len);
            input.splice(idx..idx, token.iter().copied());
        }
        5 if !corpus.is_empty() => {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            if !other.is_empty() {
                let start = rng.gen_range(0..other.len());
                let end = (start + rng.gen_range(1..=64)).min(other.len());
                let idx = rng.gen_range(0..=len);
                input.splice(idx..idx, other[start..end].iter().copied());
            }
        }
        6 if len > 0 => input.truncate(rng.gen_range(0..len)),
        7 if len > 1 => {
            // Duplicate a slice: repeated structure (deep nesting, long lists, many keys).
            let start = rng.gen_range(0..len);
            let end = (start + rng.gen_range(1..=32)).min(len);
            let copy: Vec<u8> = input[start..end].to_vec();
            for _ in 0..rng.gen_range(1..=8) {
                input.splice(start..start, copy.iter().copied());
            }
        }
        8 if len > 0 => {
            // An interesting number where a digit was.
            let numbers: [&[u8]; 6] =
                [b"0", b"255", b"256", b"4294967296", b"9223372036854775808", b"-9223372036854775809"];
            let idx = rng.gen_range(0..len);
            let number = numbers[rng.gen_range(0..numbers.len())];
            input.splice(idx..(idx + 1).min(len), number.iter().copied());
        }
        _ => {
            let idx = rng.gen_range(0..=len);
            let specials = b"\x00\n :={}[]'\"\\%-";
            input.insert(idx, specials[rng.gen_range(0..specials.len())]);
        }
    }
    input.truncate(1 << 16);
}

/// What one target's run did.
struct Run {
    n_inputs: u64,
    elapsed: Duration,
}

/// Runs `name` on its seeds, then on mutations of them, until the time or the input budget runs out.
fn fuzz(name: &str, seed: u64, budget: Duration, max_inputs: u64) -> Run {
    let mut corpus = fuzz_targets::seeds(name);
    corpus.push(Vec::new());
    let mut rng = StdRng::seed_from_u64(seed ^ name.bytes().fold(0u64, |acc, b| acc.rotate_left(5) ^ u64::from(b)));
    let started = Instant::now();
    let mut n_inputs = 0u64;
    let check = |input: &[u8], n_inputs: &mut u64| {
        *n_inputs += 1;
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| fuzz_targets::run(name, input)));
        if res.is_err() {
            panic!(
                "fuzz target {name} panicked (RAFTGRES_FUZZ_SEED={seed}) on {} bytes: {:02x?}\nas text: {:?}",
                input.len(),
                input,
                String::from_utf8_lossy(input)
            );
        }
    };
    for input in &corpus {
        check(input, &mut n_inputs);
    }
    while n_inputs < max_inputs && started.elapsed() < budget {
        let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
        for _ in 0..rng.gen_range(1..=8) {
            mutate(&mut rng, &mut input, &corpus);
        }
        check(&input, &mut n_inputs);
        // Keep a few mutants so edits stack up over the run, bounded so the corpus stays small.
        if corpus.len() < 512 && rng.gen_range(0..64) == 0 {
            corpus.push(input);
        }
    }
    Run { n_inputs, elapsed: started.elapsed() }
}

#[test]
fn every_fuzz_target_survives_a_short_run() {
    let budget = Duration::from_secs(env_number("RAFTGRES_FUZZ_SECS", 5));
    let max_inputs = env_number("RAFTGRES_FUZZ_MAX_INPUTS", 200_000);
    let seed = fuzz_seed();
    println!("fuzz_short: RAFTGRES_FUZZ_SEED={seed}, {}s or {max_inputs} inputs per target", budget.as_secs());
    // The panics the targets catch would otherwise print one backtrace per input.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
        for name in fuzz_targets::TARGETS {
            let run = fuzz(name, seed, budget, max_inputs);
            report.push(format!("{name}: {} inputs in {:.1}s", run.n_inputs, run.elapsed.as_secs_f64()));
        }
    }));
    std::panic::set_hook(default_hook);
    for line in &report {
        println!("fuzz_short: {line}");
    }
    if let Err(payload) = res {
        // `resume_unwind` would skip the (restored) hook and lose the message.
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_else(|| "a fuzz target panicked".into());
        panic!("{message}");
    }
}

#[test]
fn seeds_exist_for_every_target_and_can_be_written() {
    let seed_dir = std::env::var("RAFTGRES_FUZZ_SEED_DIR").ok();
    for name in fuzz_targets::TARGETS {
        let seeds = fuzz_targets::seeds(name);
        assert!(!seeds.is_empty(), "{name} has seeds");
        if let Some(dir) = &seed_dir {
            let target_dir = std::path::Path::new(dir).join(name);
            std::fs::create_dir_all(&target_dir).expect("create the seed directory");
            for (idx, input) in seeds.iter().enumerate() {
                std::fs::write(target_dir.join(format!("seed-{idx:03}")), input).expect("write a seed");
            }
        }
    }
}
