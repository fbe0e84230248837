//! `synchronous_standby_names` as pgwarden writes it (the HA loop decides the set; the run
//! loop renders it into Postgres' configuration).

/// `synchronous_standby_names` as pgwarden writes it: `ANY k (names…)`, or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncNames {
    /// How many of `names` must acknowledge (0: asynchronous).
    pub k: usize,
    /// The standbys, sorted.
    pub names: Vec<String>,
}

impl SyncNames {
    /// `ANY k (names)`.
    pub fn any(k: usize, mut names: Vec<String>) -> Self {
        names.sort();
        names.dedup();
        Self { k: k.min(names.len()), names }
    }

    /// The setting's text.
    pub fn render(&self) -> String {
        if self.k == 0 || self.names.is_empty() {
            return String::new();
        }
        let quoted: Vec<String> = self.names.iter().map(|n| format!("\"{n}\"")).collect();
        format!("ANY {} ({})", self.k, quoted.join(", "))
    }

    /// Parses what [`render`](Self::render) wrote (as `SHOW synchronous_standby_names` shows it).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Some(Self::default());
        }
        let rest = s.strip_prefix("ANY ")?;
        let (k, list) = rest.split_once(' ')?;
        let list = list.trim().strip_prefix('(')?.strip_suffix(')')?;
        let names = list.split(',').map(|n| n.trim().trim_matches('"').to_string()).filter(|n| !n.is_empty()).collect();
        Some(Self::any(k.parse().ok()?, names))
    }
}
