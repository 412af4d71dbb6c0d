//! Where the fleet is in its life, as every device sees it (after mini-redis' `Shutdown`).

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stop producing events; deliver what is in flight until the drain timeout.
    Draining,
    /// Stop now.
    Stop,
}

/// A device's view of the fleet's phase.
#[derive(Debug)]
pub struct PhaseWatch {
    rx: watch::Receiver<Phase>,
    current: Phase,
}

impl PhaseWatch {
    pub fn new(rx: watch::Receiver<Phase>) -> PhaseWatch {
        let current = *rx.borrow();
        PhaseWatch { rx, current }
    }

    pub fn current(&self) -> Phase {
        self.current
    }

    pub fn running(&self) -> bool {
        self.current == Phase::Running
    }

    /// Waits for the next change and returns the new phase; a fleet that went away means Stop.
    pub async fn changed(&mut self) -> Phase {
        self.current = match self.rx.changed().await {
            Ok(()) => *self.rx.borrow_and_update(),
            Err(_) => Phase::Stop,
        };
        self.current
    }
}
