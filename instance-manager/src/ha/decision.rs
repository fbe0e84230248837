//! The decision of one tick in words, as `/status` publishes it (`lease.last_decision`):
//! `renew`, `follow pg-1`, `wait: the lease is held by pg-1`, several joined by `; `.

use std::fmt;

use super::decide::Action;

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Fence { reason } => write!(f, "fence: {reason}"),
            Action::Renew => f.write_str("renew"),
            Action::Acquire { create: true } => f.write_str("acquire (create the lease)"),
            Action::Acquire { create: false } => f.write_str("acquire"),
            Action::Promote => f.write_str("promote"),
            Action::Release => f.write_str("release the lease"),
            Action::Follow { holder } => write!(f, "follow {holder}"),
            Action::Wait { reason } => write!(f, "wait: {reason}"),
        }
    }
}

/// The actions of one tick, in words.
pub struct Decision<'a>(pub &'a [Action]);

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing to do");
        }
        for (i, action) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{action}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reads_as_words() {
        let actions = [Action::Acquire { create: true }, Action::Promote];
        assert_eq!(Decision(&actions).to_string(), "acquire (create the lease); promote");
        assert_eq!(Decision(&[Action::Renew]).to_string(), "renew");
        assert_eq!(Decision(&[Action::Release]).to_string(), "release the lease");
        assert_eq!(Decision(&[Action::Follow { holder: "pg-1".into() }]).to_string(), "follow pg-1");
        let wait = [Action::Wait { reason: "paused".into() }];
        assert_eq!(Decision(&wait).to_string(), "wait: paused");
        assert_eq!(
            Decision(&[Action::Fence { reason: "renew deadline passed".into() }]).to_string(),
            "fence: renew deadline passed"
        );
        assert_eq!(Decision(&[]).to_string(), "nothing to do");
    }
}
