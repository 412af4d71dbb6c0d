//! Prometheus metrics while running: a real Prometheus (Debian's package) scrapes `--metrics`
//! on loopback, and PromQL agrees with the run's report.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A real Prometheus scraping `target` every second, on loopback, with its own storage.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        write(
            &config,
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: freezer-fleet\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        );
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (README's test command installs it)");
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up.is_some(), "prometheus did not listen on {port}");
        Prometheus {
            port,
            child,
            _dir: dir,
        }
    }

    /// The result of an instant PromQL query.
    fn query(&self, promql: &str) -> serde_json::Value {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut url = reqwest::Url::parse(&format!("http://127.0.0.1:{}/api/v1/query", self.port)).unwrap();
        url.query_pairs_mut().append_pair("query", promql);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            let body = client.get(url).send().await.unwrap().text().await.unwrap();
            serde_json::from_str(&body).unwrap()
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_fleet_and_promql_agrees_with_the_report() {
    let Setup { pki, broker, .. } = Setup::new(5);
    let metrics_port = free_port();
    let prometheus = Prometheus::start(metrics_port);
    let mut args = certs_args(&pki, broker.port);
    let metrics = format!("127.0.0.1:{metrics_port}");
    args.extend(["--metrics", &metrics, "--interval", "100ms", "--duration", "8s"].map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let acked = num(&report, "/messages/acknowledged") as f64;
    let answer = prometheus.query("max_over_time(freezer_fleet_events_acknowledged_total[1m])");
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["shard"], "0/1", "{answer}");
    assert_eq!(result["metric"]["sink"], "mqtt", "{answer}");
    let scraped: f64 = result["value"][1].as_str().unwrap().parse().unwrap();
    // The last scrape came at most one scrape interval (1 s, at ~50 events/s) before the end.
    assert!(
        scraped <= acked && acked - scraped <= 75.0,
        "Prometheus {scraped}, report {acked}"
    );
    let p99 =
        prometheus.query("histogram_quantile(0.99, max_over_time(freezer_fleet_ack_seconds_bucket[1m]))");
    let p99: f64 = p99["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(p99 > 0.0 && p99 < 5.0, "p99 {p99} s");
    let connected = prometheus.query("max_over_time(freezer_fleet_devices_connected[1m])");
    assert_eq!(connected["data"]["result"][0]["value"][1], "5", "{connected}");
}

#[test]
fn each_stage_has_its_own_series_and_a_finished_stage_agrees_with_the_report() {
    let Setup { pki, broker, .. } = Setup::new(5);
    let metrics_port = free_port();
    let prometheus = Prometheus::start(metrics_port);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("stages.toml");
    write(
        &scenario,
        "[[stage]]\nname = \"calm\"\nduration = \"4s\"\nrate = 10\n\n\
         [[stage]]\nname = \"busy\"\nduration = \"4s\"\nrate = 40\n\n\
         [[stage]]\nname = \"drain\"\n",
    );
    let mut args = certs_args(&pki, broker.port);
    let metrics = format!("127.0.0.1:{metrics_port}");
    args.extend(
        [
            "--metrics",
            &metrics,
            "--scenario",
            &scenario.display().to_string(),
        ]
        .map(String::from),
    );
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let scraped = |stage: &str| -> f64 {
        let q =
            format!("max_over_time(freezer_fleet_stage_events_acknowledged_total{{stage=\"{stage}\"}}[1m])");
        let answer = prometheus.query(&q);
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or_else(|| panic!("{q}: {answer}"))
            .parse()
            .unwrap()
    };
    // The calm stage was over seconds before the last scrape: its series had stopped moving.
    let calm = num(&report, "/stages/calm/messages/acknowledged") as f64;
    assert_eq!(scraped("calm"), calm, "{report:#}");
    let busy = num(&report, "/stages/busy/messages/acknowledged") as f64;
    let seen = scraped("busy");
    assert!(
        seen <= busy && busy - seen <= 60.0,
        "busy: Prometheus {seen}, report {busy}"
    );
    assert!(busy > 2.5 * calm, "calm {calm}, busy {busy}");
    let p99 = prometheus.query(
        "histogram_quantile(0.99, max_over_time(freezer_fleet_stage_ack_seconds_bucket{stage=\"busy\"}[1m]))",
    );
    let p99: f64 = p99["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(p99 > 0.0 && p99 < 5.0, "busy p99 {p99} s");
}
