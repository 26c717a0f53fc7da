//! A counting semaphore for blocking threads, with a close that frees
//! every waiter.

use std::sync::{Condvar, Mutex, MutexGuard};

/// `n` slots; a writer takes one per frame sent, the reader gives it back
/// per answer read.
#[derive(Debug)]
pub struct Slots {
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Threads blocked in `acquire`, so `release` makes no wake-up call
    /// (a system call) when nobody waits.
    waiting: usize,
    closed: bool,
}

impl Slots {
    /// `n` free slots.
    pub fn new(n: usize) -> Slots {
        Slots {
            state: Mutex::new(State {
                free: n,
                waiting: 0,
                closed: false,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot if one is free now; false if none is, or closed.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.lock();
        if state.closed || state.free == 0 {
            return false;
        }
        state.free -= 1;
        true
    }

    /// Takes a slot, waiting for one; false once closed.
    pub fn acquire(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.closed {
                return false;
            }
            if state.free > 0 {
                state.free -= 1;
                return true;
            }
            state.waiting += 1;
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
    }

    /// Gives a slot back.
    pub fn release(&self) {
        let mut state = self.lock();
        state.free += 1;
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.freed.notify_one();
        }
    }

    /// Frees every waiter for good: `acquire` returns false from now on.
    pub fn close(&self) {
        self.lock().closed = true;
        self.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_and_close() {
        let slots = Slots::new(1);
        assert!(slots.try_acquire());
        assert!(!slots.try_acquire());
        slots.release();
        assert!(slots.acquire());
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| slots.acquire());
            slots.release();
            assert!(waiter.join().unwrap());
            let waiter = scope.spawn(|| slots.acquire());
            slots.close();
            assert!(!waiter.join().unwrap());
        });
    }
}
