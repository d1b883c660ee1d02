//! What the link is doing now. One value per proxy, published through a
//! `tokio::sync::watch` so that every connection sees a change at once.

use crate::control::Command;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkState {
    /// Cut: no connection lives and none is accepted.
    pub cut: bool,
    /// No byte is forwarded before this instant.
    pub stalled_until: Option<Instant>,
    /// Bumped by every `reset` (and `cut`); a connection opened under an
    /// older generation must close.
    pub generation: u64,
}

impl LinkState {
    /// The state after `command`, given the time `now`.
    pub fn apply(self, command: Command, now: Instant) -> LinkState {
        match command {
            Command::Cut => LinkState {
                cut: true,
                stalled_until: self.stalled_until,
                generation: self.generation + 1,
            },
            Command::Reset => LinkState {
                generation: self.generation + 1,
                ..self
            },
            Command::Stall(duration) => LinkState {
                stalled_until: Some(now + duration),
                ..self
            },
            Command::Heal => LinkState {
                cut: false,
                stalled_until: None,
                generation: self.generation,
            },
        }
    }

    /// Whether a connection opened under `generation` must close now.
    pub fn ends(&self, generation: u64) -> bool {
        assert!(generation <= self.generation, "generations only grow");
        self.cut || generation != self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cut_and_reset_end_old_connections_and_heal_restores() {
        let now = Instant::now();
        let healthy = LinkState::default();
        assert!(!healthy.ends(0));
        let reset = healthy.apply(Command::Reset, now);
        assert!(reset.ends(0) && !reset.ends(1) && !reset.cut);
        let cut = reset.apply(Command::Cut, now);
        assert!(cut.cut && cut.ends(cut.generation));
        let stalled = cut.apply(Command::Stall(Duration::from_millis(5)), now);
        assert_eq!(stalled.stalled_until, Some(now + Duration::from_millis(5)));
        let healed = stalled.apply(Command::Heal, now);
        assert!(!healed.cut && healed.stalled_until.is_none());
        assert!(!healed.ends(healed.generation));
    }
}
