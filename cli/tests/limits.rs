//! `kfcache analyze` on hostile input: every parser limit (file size, YAML nesting, alias
//! expansion, loop fan-out, placeholder substitution) ends the command with exit code 2 and an
//! error that names the file (and the line where it is known), before anything is printed or
//! written to the database. The inputs are generated into a temporary directory.

use std::path::Path;

mod common;

use common::kfcache;

/// Runs `kfcache analyze FILE` with a fresh database and checks the invalid-input contract;
/// returns the error output.
fn refused(file: &Path, expected: &str) -> String {
    let db = tempfile::tempdir().expect("tempdir");
    let out = kfcache(db.path())
        .arg("analyze")
        .arg(file)
        .output()
        .expect("kfcache runs");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(out.status.code(), Some(2), "exit code: {stderr}");
    let name = file.display().to_string();
    assert!(
        stderr.contains(&name),
        "the error does not name {name}: {stderr}"
    );
    assert!(stderr.contains(expected), "`{expected}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "printed output despite the error");
    assert!(
        !db.path().join("kfcache.db").exists(),
        "database written: {stderr}"
    );
    stderr
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write input");
    path
}

/// A file over the size limit (sparse: nothing is written) is refused by its size.
#[test]
fn a_file_over_the_size_limit_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(kfcache_parser::limits::MAX_FILE_BYTES + 1)
        .expect("sparse file");
    let stderr = refused(&path, "over the limit of 67108864 bytes");
    assert!(stderr.contains("file is 67108865 bytes"), "{stderr}");
}

/// YAML nested 100 000 deep is refused at the line where it goes past 128 levels.
#[test]
fn yaml_nested_too_deeply_is_exit_2_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: deep}}\nspec:\n  \
         entrypoint: main\n  arguments: {}\n",
        "[".repeat(100_000)
    );
    let path = write(dir.path(), "deep.yaml", &text);
    let stderr = refused(&path, "YAML nested too deeply");
    assert!(
        stderr.contains(&format!("{}:6:", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("128 levels"), "{stderr}");
}

/// A "billion laughs" alias bomb is refused, not expanded.
#[test]
fn an_alias_bomb_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let aliases = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
    }
    let path = write(dir.path(), "laughs.yaml", &text);
    refused(&path, "YAML aliases");
}

/// A `withSequence` of a trillion items is refused at the looping task's line.
#[test]
fn a_loop_of_a_trillion_items_is_exit_2_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text =
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: wide}\nspec:\n  \
                entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      \
                - name: fan\n        template: leaf\n        withSequence: {count: \"1e12\"}\n  \
                - name: leaf\n    container: {image: busybox}\n";
    let path = write(dir.path(), "trillion.yaml", text);
    let stderr = refused(&path, "fans out to 1000000000000 instances");
    assert!(
        stderr.contains(&format!("{}:10:", path.display())),
        "{stderr}"
    );
}

/// A parameter doubled through 40 nested templates is refused once it passes 1 MiB.
#[test]
fn placeholder_substitution_that_doubles_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: doubling}\nspec:\n  \
         entrypoint: t0\n  arguments:\n    parameters: [{name: seed, value: 0123456789abcdef}]\n  \
         templates:\n",
    );
    text.push_str(
        "  - name: t0\n    dag: {tasks: [{name: n, template: t1, arguments: {parameters: [{name: \
         p, value: \"{{workflow.parameters.seed}}\"}]}}]}\n",
    );
    for i in 1..40 {
        text.push_str(&format!(
            "  - name: t{i}\n    inputs: {{parameters: [{{name: p}}]}}\n    dag: {{tasks: [{{name: \
             n, template: t{}, arguments: {{parameters: [{{name: p, value: \
             \"{{{{inputs.parameters.p}}}}{{{{inputs.parameters.p}}}}\"}}]}}}}]}}\n",
            i + 1
        ));
    }
    text.push_str(
        "  - name: t40\n    inputs: {parameters: [{name: p}]}\n    container: {image: busybox}\n",
    );
    let path = write(dir.path(), "doubling.yaml", &text);
    refused(&path, "too long after placeholder substitution");
}
