//! The HTML report in a real browser: a run against mosquitto writes `--report run.html` and a
//! JSON report; `report show --html` makes the same page from the JSON. Headless Chromium
//! (Debian's, installed by the test command) loads each with no console error, the plots are
//! in the page it renders, and its screenshot is taken in the test's temporary folder.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs headless Chromium on `page`: (rendered DOM, stderr with the console log).
fn chromium(page: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is installed (README's test command installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_page(page: &Path, dir: &Path, name: &str) {
    let html = std::fs::read_to_string(page).unwrap();
    assert!(!html.contains("<script"), "no script");
    let fetches: Vec<&str> = html
        .match_indices("http")
        .map(|(i, _)| &html[i..(i + 30).min(html.len())])
        .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
        .collect();
    assert!(fetches.is_empty(), "the page fetches nothing: {fetches:?}");
    let (dom, log) = chromium(page, &["--dump-dom"]);
    for heading in [
        "Summary",
        "Latency distribution",
        "Rate over time",
        "Latency over time",
        "Connections over time",
    ] {
        assert!(dom.contains(&format!("<h2>{heading}</h2>")), "{heading} missing");
    }
    assert_eq!(dom.matches("<svg").count(), 4, "four plots");
    assert!(dom.matches("<polyline").count() >= 9, "every curve drawn");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let shot = dir.join(format!("{name}.png"));
    chromium(
        page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,2200",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a screenshot of a drawn page"
    );
}

#[test]
fn the_html_report_opens_in_a_browser_with_its_plots() {
    let pki = Pki::new(4);
    let broker = Mosquitto::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("run.html");
    let mut a = certs_args(&pki, broker.port);
    a.extend(
        [
            "--rate",
            "40",
            "--duration",
            "4s",
            "--report",
            &page.display().to_string(),
        ]
        .map(String::from),
    );
    let (code, stderr, _) = run_to_end(&strs(&a), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    check_page(&page, dir.path(), "run");

    // The same page from a JSON report.
    let json = dir.path().join("run.json");
    let mut a = certs_args(&pki, broker.port);
    a.extend(
        [
            "--rate",
            "40",
            "--duration",
            "3s",
            "--report",
            &json.display().to_string(),
        ]
        .map(String::from),
    );
    let (code, stderr, _) = run_to_end(&strs(&a), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let from_json = dir.path().join("show.html");
    let (code, stderr, stdout) = run_to_end(
        &[
            "report",
            "show",
            &json.display().to_string(),
            "--html",
            &from_json.display().to_string(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("freezer-fleet summary"), "{stdout}");
    check_page(&from_json, dir.path(), "show");
}
