//! `alertflow demo`, the embedded default: no service, no network, and it can be run again.

use alertflow_tests::{Scratch, bin};

#[test]
fn demo_runs_twice_and_shows_its_queries() {
    let dir = Scratch::new("demo");
    for _ in 0..2 {
        let out = std::process::Command::new(bin())
            .args(["demo", "--dir", dir.join("d").to_str().unwrap(), "--points", "100000", "--series", "500"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        for want in [
            "records in     100,025",
            "Hosts with the highest average CPU",
            "Points per tenant and metric",
            "Dead letters by reason",
            "missing field `value`",
        ] {
            assert!(stdout.contains(want), "no `{want}` in\n{stdout}");
        }
    }
    // A second run replaced the first one's files instead of adding to them.
    let files = std::fs::read_dir(dir.join("d/out/per_minute")).unwrap().count();
    assert!(files >= 2);
    let total = alertflow_tests::query_csv(&dir.join("d/out"), "SELECT sum(count) AS n FROM per_minute");
    assert_eq!(total, "n\n100000\n");
}
