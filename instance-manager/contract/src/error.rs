//! `ErrorBody`: the body of every HTTP error answer.

use serde::{Deserialize, Serialize};

/// The body of every HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What failed, lower-case, naming the object it failed on.
    pub error: String,
    /// What the caller can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}
