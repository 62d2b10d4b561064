//! What `cargo xtask cross` says at the end, per target: linted, built, tests run.

use std::fmt;
use std::time::Instant;

/// Passed, failed and ignored tests, summed over cargo's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
}

impl TestCounts {
    /// Reads libtest's closing line of one test binary:
    /// `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; …`.
    pub fn parse_result_line(line: &str) -> Option<Self> {
        let rest = line.trim().strip_prefix("test result: ")?;
        let (_, counts) = rest.split_once(". ")?;
        let mut result = Self::default();
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(number), Some(what)) = (words.next(), words.next()) else { continue };
            let Ok(number) = number.parse::<u32>() else { continue };
            match what {
                "passed" => result.passed = number,
                "failed" => result.failed = number,
                "ignored" => result.ignored = number,
                _ => {}
            }
        }
        Some(result)
    }

    /// Reads libtest's opening line of one test binary, `running 12 tests` (or `1 test`):
    /// how many it is about to run.
    pub fn parse_running_line(line: &str) -> Option<u32> {
        let rest = line.trim().strip_prefix("running ")?;
        let (number, what) = rest.split_once(' ')?;
        matches!(what, "tests" | "test").then_some(())?;
        number.parse().ok()
    }

    pub fn add(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

impl fmt::Display for TestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed, {} ignored", self.passed, self.failed, self.ignored)
    }
}

/// One target's part of the report.
#[derive(Debug)]
pub struct TargetReport {
    pub name: &'static str,
    triple: &'static str,
    /// What stands in the tests' line when none ran, and why.
    no_tests: &'static str,
    pub linted: Vec<String>,
    pub built: Vec<String>,
    pub tests: Option<TestCounts>,
    /// C sources that could not be compiled without the platform's SDK and stand empty.
    pub stand_ins: Vec<String>,
    error: Option<String>,
    seconds: u64,
}

impl TargetReport {
    pub fn new(name: &'static str, triple: &'static str, no_tests: &'static str) -> Self {
        Self {
            name,
            triple,
            no_tests,
            linted: Vec::new(),
            built: Vec::new(),
            tests: None,
            stand_ins: Vec::new(),
            error: None,
            seconds: 0,
        }
    }

    pub fn finish(&mut self, result: anyhow::Result<()>, started: Instant) {
        self.error = result.err().map(|e| format!("{e:#}"));
        self.seconds = started.elapsed().as_secs();
    }

    pub fn passed(&self) -> bool {
        self.error.is_none()
    }
}

impl fmt::Display for TargetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(f, "    {} ({}): {verdict} in {} s", self.name, self.triple, self.seconds)?;
        let list = |items: &[String]| if items.is_empty() { "nothing".to_string() } else { items.join(", ") };
        writeln!(f, "      linted (clippy -D warnings): {}", list(&self.linted))?;
        writeln!(f, "      built and linked: {}", list(&self.built))?;
        match (&self.tests, self.triple.contains("windows")) {
            (Some(counts), _) => writeln!(f, "      tests under wine: {counts}")?,
            (None, true) => writeln!(f, "      tests under wine: not run")?,
            (None, false) => writeln!(f, "      tests: {}", self.no_tests)?,
        }
        if !self.stand_ins.is_empty() {
            writeln!(
                f,
                "      empty objects for (need the SDK's frameworks): {}",
                self.stand_ins.join(", ")
            )?;
        }
        if let Some(error) = &self.error {
            writeln!(f, "      failed: {error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libtest_result_lines() {
        let ok =
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.52s";
        assert_eq!(TestCounts::parse_result_line(ok), Some(TestCounts { passed: 12, failed: 0, ignored: 1 }));
        let failed = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            TestCounts::parse_result_line(failed),
            Some(TestCounts { passed: 3, failed: 2, ignored: 0 })
        );
        assert_eq!(TestCounts::parse_result_line("running 12 tests"), None);
        assert_eq!(TestCounts::parse_running_line("running 12 tests"), Some(12));
        assert_eq!(TestCounts::parse_running_line("running 1 test"), Some(1));
        assert_eq!(TestCounts::parse_running_line("running the tests under wine"), None);
        assert_eq!(TestCounts::parse_result_line("test foo ... ok"), None);
    }

    #[test]
    fn sums_over_binaries() {
        let mut total = TestCounts::default();
        total.add(TestCounts { passed: 2, failed: 1, ignored: 0 });
        total.add(TestCounts { passed: 5, failed: 0, ignored: 3 });
        assert_eq!(total, TestCounts { passed: 7, failed: 1, ignored: 3 });
        assert_eq!(total.to_string(), "7 passed, 1 failed, 3 ignored");
    }

    #[test]
    fn a_failed_target_says_why() {
        let mut report =
            TargetReport::new("macOS", "aarch64-apple-darwin", "none, nothing can be linked here");
        report.linted.push("trellis-protocol (all targets)".into());
        report.finish(Err(anyhow::anyhow!("clippy found 2 errors")), Instant::now());
        let text = report.to_string();
        assert!(!report.passed());
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("failed: clippy found 2 errors"), "{text}");
        assert!(text.contains("tests: none, nothing can be linked here"), "{text}");
    }
}
