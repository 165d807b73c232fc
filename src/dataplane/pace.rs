//! Pacing: an upstream's "slow down" holds every request to it, not one.
//!
//! A 429 (with or without `Retry-After`) says the *client* is over the
//! upstream's limit. If only the item that got it waited, the stage's other
//! work would keep the request rate where it was: with slots given back
//! while waiting (`retry::Retry::holding`) each slot would go on drawing
//! 429s. A [`Pace`] is shared by all the requests to one upstream (the
//! search provider, the remote renderer): a rate-limited answer sets a
//! not-before instant, and every attempt, first or retry, waits for it
//! before it is sent, without holding a stage slot.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One upstream's not-before instant.
#[derive(Debug, Default)]
pub struct Pace {
    until: Mutex<Option<Instant>>,
}

impl Pace {
    /// An upstream with no pause in force.
    pub fn new() -> Pace {
        Pace::default()
    }

    /// The upstream asked for a pause of `pause` from now; an existing
    /// later pause stands.
    pub fn hold_for(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut slot = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none_or(|u| u < until) {
            *slot = Some(until);
        }
    }

    /// How long requests must still wait (None: send now).
    pub fn remaining(&self) -> Option<Duration> {
        let mut slot = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let until = (*slot)?;
        let now = Instant::now();
        if until <= now {
            *slot = None;
            return None;
        }
        Some(until - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_until_it_ends_and_a_shorter_one_does_not_cut_it() {
        let pace = Pace::new();
        assert_eq!(pace.remaining(), None);
        pace.hold_for(Duration::from_secs(2));
        pace.hold_for(Duration::from_millis(500));
        assert_eq!(pace.remaining(), Some(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(pace.remaining(), Some(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(pace.remaining(), None);
        pace.hold_for(Duration::from_secs(1));
        assert_eq!(pace.remaining(), Some(Duration::from_secs(1)));
    }
}
