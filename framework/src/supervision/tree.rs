//! What a supervision tree looks like from outside (`status`, `status
//! --json`, the SIGUSR1 dump, [`GetTree`](super::GetTree)).

use serde::{Deserialize, Serialize};

/// A supervisor and its children, as `status --json` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TreeStats {
    /// The supervisor's name.
    pub name: String,
    /// `one_for_one`, `one_for_all` or `rest_for_one`.
    pub strategy: String,
    /// `starting`, `running`, `restarting`, `stopping`, `stopped` or `failed`
    /// (it gave up and escalated).
    pub state: String,
    /// At most this many restarts …
    pub intensity: usize,
    /// … within this many seconds (JSON: `period_seconds`).
    #[serde(rename = "period_seconds", with = "crate::json::seconds")]
    pub period: std::time::Duration,
    /// Restarts within the current period.
    pub recent_restarts: usize,
    /// Its children, in start order.
    pub children: Vec<ChildStats>,
}

/// One child of a supervisor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChildStats {
    /// The child's name.
    pub name: String,
    /// `pool`, `actor` or `supervisor`.
    pub kind: String,
    /// `permanent`, `transient` or `temporary`.
    pub restart: String,
    /// `starting`, `running`, `failed` (awaiting its supervisor's decision),
    /// `stopping`, `stopped` or `terminated` (not restarted).
    pub state: String,
    /// Times its supervisor restarted it.
    pub restarts: u64,
    /// Why it last failed.
    pub last_failure: Option<String>,
    /// A nested supervisor's own tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Box<TreeStats>>,
}

impl TreeStats {
    /// The tree as indented text lines (`status`, the SIGUSR1 dump).
    ///
    /// ```
    /// use daemonic::supervision::{ChildStats, TreeStats};
    ///
    /// let tree = TreeStats {
    ///     name: "media".into(),
    ///     strategy: "rest_for_one".into(),
    ///     state: "running".into(),
    ///     intensity: 5,
    ///     period: std::time::Duration::from_secs(30),
    ///     recent_restarts: 1,
    ///     children: vec![ChildStats {
    ///         name: "decoder".into(),
    ///         kind: "pool".into(),
    ///         restart: "permanent".into(),
    ///         state: "running".into(),
    ///         restarts: 1,
    ///         last_failure: Some("11 restarts within 10s".into()),
    ///         tree: None,
    ///     }],
    /// };
    /// assert_eq!(
    ///     tree.lines(),
    ///     [
    ///         "media (rest_for_one, running, 1/5 restarts in 30s)",
    ///         "  decoder: pool permanent running, 1 restart(s), last failure: 11 restarts within 10s",
    ///     ]
    /// );
    /// ```
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        self.push_lines(0, &mut lines);
        lines
    }

    fn push_lines(&self, depth: usize, lines: &mut Vec<String>) {
        let pad = "  ".repeat(depth);
        lines.push(format!(
            "{pad}{} ({}, {}, {}/{} restarts in {})",
            self.name,
            self.strategy,
            self.state,
            self.recent_restarts,
            self.intensity,
            humantime::format_duration(self.period)
        ));
        for child in &self.children {
            let mut line = format!(
                "{pad}  {}: {} {} {}, {} restart(s)",
                child.name, child.kind, child.restart, child.state, child.restarts
            );
            if let Some(why) = &child.last_failure {
                line.push_str(&format!(", last failure: {why}"));
            }
            lines.push(line);
            if let Some(tree) = &child.tree {
                tree.push_lines(depth + 2, lines);
            }
        }
    }
}
