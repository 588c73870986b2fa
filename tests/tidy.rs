//! Tidy: the architecture rules of `ARCHITECTURE.md` that the compiler does not check by
//! itself, checked over the source tree and `Cargo.lock`. Each rule names the files that break
//! it; the failure message says what to do instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file outside tests and tables: longer ones hide their point.
const MAX_LINES: usize = 700;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file of the product (crates, root `src/`, `tests/`, `benches/`), relative paths.
fn rust_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(base).expect("under the root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    for top in ["crates", "src", "tests", "benches"] {
        walk(&root.join(top), &root, &mut files);
    }
    files.retain(|f| !f.contains("/target/"));
    files.sort();
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    files
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Test code: integration tests, benches, `tests.rs` modules and `tests/` folders.
fn is_test_file(rel: &str) -> bool {
    rel.starts_with("tests/")
        || rel.starts_with("benches/")
        || rel.contains("/tests/")
        || rel.ends_with("/tests.rs")
}

/// The code of a file without comments and without its `#[cfg(test)]` module (the rules are
/// about what ships, not about what tests build).
fn shipped_code(text: &str) -> String {
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn crate_of(rel: &str) -> &str {
    match rel.strip_prefix("crates/") {
        Some(rest) => rest.split('/').next().unwrap_or(""),
        None => "root",
    }
}

fn fail_if_any(rule: &str, offenders: &[String], advice: &str) {
    assert!(
        offenders.is_empty(),
        "{rule}:\n  {}\n{advice}",
        offenders.join("\n  ")
    );
}

#[test]
fn every_file_says_what_it_owns() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|f| !read(f).starts_with("//!"))
        .collect();
    fail_if_any(
        "files that do not start with a `//!` comment",
        &offenders,
        "Start each file with a `//!` line saying what it owns.",
    );
}

#[test]
fn no_file_needs_scrolling_to_find_its_point() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|f| !is_test_file(f))
        .filter_map(|f| {
            let lines = read(&f).lines().count();
            (lines > MAX_LINES).then(|| format!("{f}: {lines} lines"))
        })
        .collect();
    fail_if_any(
        &format!("files over {MAX_LINES} lines"),
        &offenders,
        "Split the file by what its parts own (tests and tables excepted).",
    );
}

/// `(file, needle)` pairs of shipped code that mention `needle`, outside `allowed_crates`.
fn mentions(needle: &str, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    rust_files()
        .into_iter()
        .filter(|f| !is_test_file(f) && !allowed(f))
        .filter(|f| shipped_code(&read(f)).contains(needle))
        .collect()
}

#[test]
fn only_the_store_crate_touches_sled() {
    let offenders = mentions("sled::", |f| crate_of(f) == "store");
    fail_if_any(
        "sled used outside crates/store",
        &offenders,
        "Add what you need to loyalty-store's API instead.",
    );
}

#[test]
fn the_core_protocol_and_store_do_not_use_tokio() {
    let offenders = mentions("tokio", |f| {
        !matches!(crate_of(f), "core" | "protocol" | "store")
    });
    fail_if_any(
        "tokio in crates/core, crates/protocol or crates/store",
        &offenders,
        "The core is pure and the store is blocking; the daemon owns the runtime.",
    );
}

#[test]
fn only_the_protocol_crate_writes_json_by_hand() {
    let offenders = mentions("json!", |f| crate_of(f) == "protocol");
    fail_if_any(
        "`json!` outside crates/protocol",
        &offenders,
        "Wire JSON is typed in loyalty-protocol; add a type or a function there.",
    );
}

#[test]
fn only_mqtt_knows_topic_names() {
    let offenders: Vec<String> = ["lane/", "gateway/status"]
        .iter()
        .flat_map(|topic| {
            let quoted = format!("\"{topic}");
            let inner = format!("/{topic}");
            rust_files()
                .into_iter()
                .filter(|f| !is_test_file(f) && !f.starts_with("crates/daemon/src/mqtt"))
                .filter(move |f| {
                    let code = shipped_code(&read(f));
                    code.contains(&quoted) || code.contains(&inner)
                })
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    fail_if_any(
        "MQTT topic names outside crates/daemon/src/mqtt",
        &offenders,
        "Use loyalty_daemon::mqtt's topic functions.",
    );
}

/// Every package each package depends on in what it ships, directly or not: a workspace
/// crate's `[dependencies]` (not its dev-dependencies), then everything `Cargo.lock` says
/// those depend on.
fn shipped_closure() -> BTreeMap<String, BTreeSet<String>> {
    let lock: toml::Table = toml::from_str(&read("Cargo.lock")).expect("Cargo.lock parses");
    let mut direct: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock["package"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_string();
        let deps = package
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(|d| -> Vec<String> {
                d.iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| s.split(' ').next().unwrap_or(s).to_string())
                    .collect()
            })
            .unwrap_or_default();
        direct.entry(name).or_default().extend(deps);
    }
    for member in ["core", "protocol", "store", "daemon", "tools", "hub"] {
        let manifest: toml::Table =
            toml::from_str(&read(&format!("crates/{member}/Cargo.toml"))).expect("manifest parses");
        let name = manifest["package"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        direct.insert(name, deps);
    }
    let mut closure = BTreeMap::new();
    for name in direct.keys() {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.clone()];
        while let Some(next) = todo.pop() {
            for dep in direct.get(&next).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        closure.insert(name.clone(), seen);
    }
    closure
}

#[test]
fn crate_boundaries_hold_in_the_dependency_graph() {
    let closure = shipped_closure();
    // The graph is read right: the daemon does reach tokio and, through the store, sled.
    for reached in ["tokio", "sled", "loyalty-core"] {
        assert!(closure["loyalty-daemon"].contains(reached), "{reached}");
    }
    let rules: &[(&str, &[&str], &str)] = &[
        (
            "loyalty-core",
            &[
                "tokio",
                "sled",
                "mio",
                "hyper",
                "rumqttc",
                "serialport",
                "loyalty-protocol",
                "loyalty-store",
                "loyalty-daemon",
                "loyalty-tools",
                "loyalty-hub",
            ],
            "the core does no I/O and knows no wire format",
        ),
        (
            "loyalty-protocol",
            &[
                "tokio",
                "sled",
                "loyalty-store",
                "loyalty-daemon",
                "loyalty-tools",
                "loyalty-hub",
            ],
            "wire types are plain data",
        ),
        (
            "loyalty-store",
            &[
                "tokio",
                "hyper",
                "rumqttc",
                "loyalty-daemon",
                "loyalty-tools",
            ],
            "the store is blocking and knows nothing of the edges",
        ),
        (
            "loyalty-daemon",
            &["rcgen", "loyalty-tools", "loyalty-hub", "tokio-postgres"],
            "the daemon ships to the Pi: no test PKI, no tools, no hub or PostgreSQL code",
        ),
        (
            "loyalty-hub",
            &[
                "sled",
                "loyalty-store",
                "loyalty-daemon",
                "loyalty-tools",
                "rcgen",
            ],
            "the hub is the central side: no store database, no gateway, no test tools",
        ),
    ];
    let mut offenders = Vec::new();
    for (package, forbidden, why) in rules {
        let deps = closure
            .get(*package)
            .unwrap_or_else(|| panic!("{package} is not in Cargo.lock"));
        for name in *forbidden {
            if deps.contains(*name) {
                offenders.push(format!("{package} depends on {name} ({why})"));
            }
        }
    }
    fail_if_any(
        "crate boundaries broken",
        &offenders,
        "See ARCHITECTURE.md: move the code to the crate that may depend on it.",
    );
}

/// The README's first command (`cargo run --release -- demo`) must run the gateway: the hub is a
/// second binary of the workspace's default members, so without `default-run` cargo refuses to
/// choose.
#[test]
fn cargo_run_at_the_root_runs_the_gateway() {
    let manifest = read("Cargo.toml");
    let package = manifest
        .split("\n[package]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or("");
    assert!(
        package
            .lines()
            .any(|line| line.trim() == "default-run = \"loyalty-gateway\""),
        "the root [package] must say default-run = \"loyalty-gateway\" (README: cargo run --release -- demo)"
    );
    assert!(read("README.md").contains("cargo run --release -- demo"));
}
