//! The example's command line, without a window: `--help` and bad arguments are answered
//! before any window or socket is made. (This test also makes `cargo test` build the
//! example's binary, which `.ci/run` then runs under Xvfb.)

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kcpnet_inspector_example"))
        .args(args)
        .output()
        .expect("the example runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_options_and_keys() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for word in ["--bots", "--seconds", "--screenshot", "PageUp", "R "] {
        assert!(stdout.contains(word), "{word} missing from:\n{stdout}");
    }
}

#[test]
fn bad_arguments_exit_with_2_and_say_why() {
    let (code, _, stderr) = run(&["--bots", "0"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--bots: bad value \"0\""), "{stderr}");
    let (code, _, stderr) = run(&["--screenshot", "x.png"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("needs a timed run"), "{stderr}");
    let (code, _, stderr) = run(&["--fast"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown option"), "{stderr}");
}
