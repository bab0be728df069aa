//! What users see for each kind of input, pinned: `outcomes.txt` holds one case a line,
//! `<entry> <helper protocol> <environment> <options> => <outcome>`, where entry is `resolve`
//! (`ConfigHelper`, strict) or `from` (constructors and `NewServe`, lenient), and the outcome is
//! `err <key>: <message>` (shown to JavaScript as `ERR_INVALID_CONFIG: <key>: <message>`) or `ok`
//! with the resolved options (`resolve`) or the engine settings (`from`).
//!
//! After an intended change, rewrite the file with
//! `OUTCOMES_WRITE=1 cargo test -p koatty_serve_core config::outcome_tests` and review the diff.

use super::*;
use serde_json::Value;

const OUTCOMES: &str = include_str!("outcomes.txt");

fn outcome(entry: &str, protocol: &str, env: &Value, input: &Value) -> String {
    let text = |k: &str| env.get(k).and_then(Value::as_str).map(String::from);
    let env = Environment {
        ip: text("ip"),
        port: text("port"),
        app_port: text("app_port"),
        node_env: text("node_env"),
    };
    let result = match entry {
        "resolve" => {
            let protocol = Protocol::parse(protocol).expect("helper protocol");
            resolve_options(protocol, input, &env).map(|v| v.to_string())
        }
        "from" => ServerConfig::from_options(input).map(|c| format!("{c:?}")),
        other => panic!("unknown entry {other}"),
    };
    match result {
        Ok(text) => format!("ok {text}"),
        Err(e) => format!("err {e}"),
    }
}

/// `(case, expected outcome)` per line; the case is `entry protocol env options`.
fn cases() -> Vec<(String, Option<String>)> {
    OUTCOMES
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(" => ") {
            Some((case, expected)) => (case.to_string(), Some(expected.to_string())),
            None => (l.to_string(), None),
        })
        .collect()
}

fn run(case: &str) -> String {
    let mut parts = case.splitn(3, ' ');
    let (entry, protocol, rest) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    let env = values
        .next()
        .expect("environment")
        .expect("environment JSON");
    let input = values.next().expect("options").expect("options JSON");
    outcome(entry, protocol, &env, &input)
}

#[test]
fn outcomes_are_as_pinned() {
    let mut lines = vec![];
    let mut wrong = vec![];
    for (case, expected) in cases() {
        let got = run(&case);
        if expected.as_deref() != Some(got.as_str()) {
            wrong.push(format!("{case}\n  expected {expected:?}\n  got      {got}"));
        }
        lines.push(format!("{case} => {got}"));
    }
    if std::env::var_os("OUTCOMES_WRITE").is_some() {
        let header: String = OUTCOMES
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/outcomes.txt");
        std::fs::write(path, format!("{header}{}\n", lines.join("\n"))).unwrap();
        return;
    }
    assert!(
        wrong.is_empty(),
        "{} case(s) differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
