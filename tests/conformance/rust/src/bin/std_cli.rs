//! std's view of the command line: arguments, environment, stdin, time, sleeping,
//! random-seeded hashing, and the exit status std::process::exit gives.
// run: status=1 env=GREETING=hello stdin='from stdin\n' -- exit 3
// run ok: -- exit 0
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let mut failures = 0;
    let mut check = |label: &str, ok: bool, seen: String| {
        println!("{label}: {seen}");
        if !ok {
            println!("FAIL {label}");
            failures += 1;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    check("args", args.len() == 2 && args[0] == "exit", format!("{args:?}"));
    let vars: Vec<(String, String)> = std::env::vars().collect();
    check("vars", vars.len() <= 1, format!("{vars:?}"));
    let mut input = String::new();
    let read = std::io::stdin().read_to_string(&mut input);
    check("stdin", read.is_ok(), format!("{input:?}"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    check("system time after 2024", now > 1_704_067_200, "checked".to_string());
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    check("slept 20ms", start.elapsed() >= Duration::from_millis(20), "checked".to_string());
    let mut map = HashMap::new();
    map.insert("k", 1);
    check("hashmap (random keys)", map.get("k") == Some(&1), "checked".to_string());
    check("current_dir", true, format!("{:?}", std::env::current_dir().map_err(|e| e.kind())));
    std::io::stdout().flush().ok();
    eprintln!("to stderr");
    let code: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if failures > 0 {
        std::process::exit(1);
    }
    std::process::exit(code);
}
