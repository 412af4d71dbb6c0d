//! A device's mailbox for the console's requests (`Poke`): a few may wait, and nothing is
//! allocated until one comes. A tokio channel allocates a block of 32 slots per device up front
//! (about 1 KB each, for a request most devices never get).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::Poke;

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<VecDeque<Poke>>,
    /// How many are queued, read without the lock on the device's every turn.
    len: AtomicUsize,
    notify: Notify,
    /// Console ends alive (the console holds clones).
    senders: AtomicUsize,
    receiver_gone: AtomicBool,
}

/// The console's end.
#[derive(Debug)]
pub struct PokeTx {
    shared: Arc<Shared>,
    cap: usize,
}

/// The device's end.
#[derive(Debug)]
pub struct PokeRx {
    shared: Arc<Shared>,
}

/// Why a request was not queued.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// `cap` requests are waiting already.
    Full,
    /// The device has stopped.
    Closed,
}

/// A mailbox holding at most `cap` waiting requests.
pub fn mailbox(cap: usize) -> (PokeTx, PokeRx) {
    let shared = Arc::new(Shared {
        senders: AtomicUsize::new(1),
        ..Shared::default()
    });
    (
        PokeTx {
            shared: shared.clone(),
            cap,
        },
        PokeRx { shared },
    )
}

fn lock(q: &Mutex<VecDeque<Poke>>) -> std::sync::MutexGuard<'_, VecDeque<Poke>> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

impl PokeTx {
    pub fn try_send(&self, poke: Poke) -> Result<(), Refused> {
        if self.is_closed() {
            return Err(Refused::Closed);
        }
        let mut q = lock(&self.shared.queue);
        if q.len() >= self.cap {
            return Err(Refused::Full);
        }
        q.push_back(poke);
        self.shared.len.store(q.len(), Ordering::Release);
        drop(q);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Whether the device has stopped.
    pub fn is_closed(&self) -> bool {
        self.shared.receiver_gone.load(Ordering::Acquire)
    }
}

impl Clone for PokeTx {
    fn clone(&self) -> PokeTx {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        PokeTx {
            shared: self.shared.clone(),
            cap: self.cap,
        }
    }
}

impl Drop for PokeTx {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.notify.notify_one();
        }
    }
}

impl PokeRx {
    fn pop(&self) -> Option<Poke> {
        if self.shared.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.shared.queue);
        let poke = q.pop_front();
        self.shared.len.store(q.len(), Ordering::Release);
        if q.is_empty() {
            // Give the memory back: requests are rare.
            *q = VecDeque::new();
        }
        poke
    }

    /// The next request; None once the console's end is gone and nothing is left. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Poke> {
        loop {
            if let Some(poke) = self.pop() {
                return Some(poke);
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return self.pop();
            }
            // A request queued after the check above leaves a permit: no wake-up is lost.
            self.shared.notify.notified().await;
        }
    }
}

impl Drop for PokeRx {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_come_in_order_up_to_the_cap_and_the_ends_see_each_other_go() {
        let (tx, mut rx) = mailbox(2);
        assert_eq!(tx.try_send(Poke::Inject), Ok(()));
        assert_eq!(tx.try_send(Poke::Act(crate::freezer::Action::Defrost)), Ok(()));
        assert_eq!(tx.try_send(Poke::Inject), Err(Refused::Full));
        assert_eq!(rx.recv().await, Some(Poke::Inject));
        assert_eq!(rx.recv().await, Some(Poke::Act(crate::freezer::Action::Defrost)));
        // A request from another task wakes a waiting device.
        let waiting = tokio::spawn(async move {
            let got = rx.recv().await;
            (got, rx)
        });
        tokio::task::yield_now().await;
        tx.try_send(Poke::Inject).unwrap();
        let (got, rx) = waiting.await.unwrap();
        assert_eq!(got, Some(Poke::Inject));
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(Poke::Inject), Err(Refused::Closed));
        let (tx, mut rx) = mailbox(4);
        let tx2 = tx.clone();
        tx.try_send(Poke::Inject).unwrap();
        drop(tx);
        tx2.try_send(Poke::Inject).unwrap();
        assert_eq!(rx.recv().await, Some(Poke::Inject));
        drop(tx2);
        assert_eq!(rx.recv().await, Some(Poke::Inject));
        assert_eq!(rx.recv().await, None);
    }
}
