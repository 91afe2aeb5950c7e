//! Gathering queued work into groups: the shared step of the committer
//! (appends into one batch) and the idempotency lookups (keys into one query).

use tokio::sync::mpsc;

/// A queue read in groups, carrying over an item that did not fit.
#[derive(Debug)]
pub(super) struct Gather<T> {
    rx: mpsc::Receiver<T>,
    carried: Option<T>,
}

impl<T> Gather<T> {
    pub(super) fn new(rx: mpsc::Receiver<T>) -> Self {
        Self { rx, carried: None }
    }

    /// The next item: the carried one, or the next to arrive (`None` once
    /// every sender is gone).
    pub(super) async fn first(&mut self) -> Option<T> {
        match self.carried.take() {
            Some(t) => Some(t),
            None => self.rx.recv().await,
        }
    }

    /// `first` plus whatever is queued already, up to `max` by `size`; an
    /// item that would pass `max` waits for the next group.
    pub(super) fn fill(&mut self, first: T, max: usize, size: impl Fn(&T) -> usize) -> Vec<T> {
        let mut total = size(&first);
        self.fill_while(first, |t| {
            if total >= max || total + size(t) > max {
                return false;
            }
            total += size(t);
            true
        })
    }

    /// `first` plus whatever is queued already while `admit` takes each
    /// (it keeps its own totals); the first it refuses waits for the next
    /// group.
    pub(super) fn fill_while(&mut self, first: T, mut admit: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut group = vec![first];
        loop {
            match self.rx.try_recv() {
                Ok(t) if admit(&t) => group.push(t),
                Ok(t) => {
                    self.carried = Some(t);
                    break;
                }
                Err(_) => break,
            }
        }
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn groups_fill_to_the_limit_and_carry_the_rest() {
        let (tx, rx) = mpsc::channel(16);
        for n in [3usize, 4, 5, 1] {
            tx.send(n).await.unwrap();
        }
        drop(tx);
        let mut g = Gather::new(rx);
        let first = g.first().await.unwrap();
        assert_eq!(g.fill(first, 8, |n| *n), vec![3, 4]);
        let first = g.first().await.unwrap();
        assert_eq!(g.fill(first, 8, |n| *n), vec![5, 1]);
        assert_eq!(g.first().await, None);
    }
}
