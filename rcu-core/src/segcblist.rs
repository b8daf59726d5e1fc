//! `SegCbList`: one FIFO callback queue cut into segments by the grace period each waits for.
//!
//! After the kernel's `rcu_segcblist` (include/linux/rcu_segcblist.h, which draws the same
//! picture): callbacks enter at the tail and leave at the head, never reordered; the segments
//! only move boundaries.
//!
//! ```text
//!   head                                                              tail
//!    | DONE            | WAIT            | NEXT_READY      | NEXT       |
//!    | grace period    | waits for       | waits for a     | posted,    |
//!    | elapsed: invoke | gp[WAIT]        | later gp[NR]    | no GP yet  |
//! ```
//!
//! * `accelerate(snap)` gives the NEXT callbacks the first grace period that starts after this
//!   moment (the snapshot must be taken after they were enqueued), merging into the newest
//!   segment when that one waits for the same (or a later) grace period.
//! * `advance(completed)` moves every segment whose grace period completed into DONE.
//! * `take_done(max)` extracts callbacks to invoke; they stay counted (`in_flight`) until the
//!   invoker calls `finish`, so that a barrier arriving meanwhile still sees the queue as
//!   non-empty and entrains behind them.
//! * `entrain(sentinel)` appends a barrier sentinel to the last non-empty segment, so it waits
//!   for exactly the grace period the last callback waits for — never an extra one
//!   (`rcu_segcblist_entrain`).
//!
//! All operations are O(1) except `take_done`, which walks the callbacks it extracts.

use crate::callback::RcuHead;
use crate::seq::GpSeq;
use std::ptr;

/// A singly linked FIFO of heads.
#[derive(Debug)]
pub(crate) struct CbList {
    head: *mut RcuHead,
    tail: *mut RcuHead,
    len: usize,
}

impl CbList {
    pub(crate) const fn new() -> CbList {
        CbList {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A list made of an existing chain.
    ///
    /// # Safety
    ///
    /// `head`..`tail` are `len` valid heads in no list, linked through `next` from `head` to
    /// `tail`, whose `next` is null (all null and 0 for an empty list).
    pub(crate) unsafe fn from_chain(head: *mut RcuHead, tail: *mut RcuHead, len: usize) -> CbList {
        CbList { head, tail, len }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one head.
    ///
    /// # Safety
    ///
    /// `h` is a valid head that is in no list.
    pub(crate) unsafe fn push(&mut self, h: *mut RcuHead) {
        // SAFETY: the caller guarantees `h` is valid and unlinked; `tail`, when non-null, is
        // the last node of this list, which the list owns.
        unsafe {
            (*h).next = ptr::null_mut();
            if self.tail.is_null() {
                self.head = h;
            } else {
                (*self.tail).next = h;
            }
        }
        self.tail = h;
        self.len += 1;
    }

    /// Move all of `other` to the end of `self`.
    pub(crate) fn append(&mut self, other: &mut CbList) {
        if other.is_empty() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is this list's last node.
            unsafe { (*self.tail).next = other.head };
        }
        self.tail = other.tail;
        self.len += other.len;
        *other = CbList::new();
    }

    /// Move all of `other` to the front of `self`.
    pub(crate) fn prepend(&mut self, other: &mut CbList) {
        let mut rest = std::mem::replace(self, std::mem::replace(other, CbList::new()));
        self.append(&mut rest);
    }

    /// Remove and return the first head.
    pub(crate) fn pop(&mut self) -> Option<*mut RcuHead> {
        if self.head.is_null() {
            return None;
        }
        let h = self.head;
        // SAFETY: `h` is a node of this list.
        self.head = unsafe { (*h).next };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        self.len -= 1;
        Some(h)
    }

    /// Split off the first `max` heads (all if fewer).
    ///
    /// Walks the `max` heads reading their links and cuts the chain once: the invoker touches
    /// each head once more when it pops it, and nothing is written back but the cut.
    pub(crate) fn take_front(&mut self, max: usize) -> CbList {
        if max >= self.len {
            return std::mem::replace(self, CbList::new());
        }
        if max == 0 {
            return CbList::new();
        }
        let head = self.head;
        let mut last = head;
        for _ in 1..max {
            // SAFETY: fewer than `len` nodes were walked, so `last` is a node of this list
            // with a successor.
            last = unsafe { (*last).next };
        }
        // SAFETY: `last` is the `max`-th node; `max < len`, so it has a successor.
        self.head = unsafe { std::mem::replace(&mut (*last).next, ptr::null_mut()) };
        self.len -= max;
        CbList {
            head,
            tail: last,
            len: max,
        }
    }
}

pub(crate) const DONE: usize = 0;
pub(crate) const WAIT: usize = 1;
pub(crate) const NEXT_READY: usize = 2;
pub(crate) const NEXT: usize = 3;

/// The segmented queue. Invariant: NEXT_READY non-empty ⇒ WAIT non-empty, and
/// gp[WAIT] ≤ gp[NEXT_READY].
#[derive(Debug)]
pub(crate) struct SegCbList {
    seg: [CbList; 4],
    gp: [GpSeq; 4],
    in_flight: usize,
}

// SAFETY: the list owns the heads linked into it; heads are posted with the promise that the
// domain may invoke them on any thread (closures are `Send`, raw callbacks by contract).
unsafe impl Send for SegCbList {}

impl SegCbList {
    pub(crate) const fn new() -> SegCbList {
        SegCbList {
            seg: [CbList::new(), CbList::new(), CbList::new(), CbList::new()],
            gp: [GpSeq(0); 4],
            in_flight: 0,
        }
    }

    /// Callbacks queued or being invoked.
    pub(crate) fn len(&self) -> usize {
        self.seg.iter().map(CbList::len).sum::<usize>() + self.in_flight
    }

    /// Post a callback (posting goes through [`enqueue_list`](SegCbList::enqueue_list); the
    /// tests post one at a time).
    ///
    /// # Safety
    ///
    /// `h` is a valid head in no list, that stays valid until invoked.
    #[cfg(test)]
    pub(crate) unsafe fn enqueue(&mut self, h: *mut RcuHead) {
        // SAFETY: forwarded from the caller.
        unsafe { self.seg[NEXT].push(h) };
    }

    /// Post a whole list of callbacks, in its order.
    pub(crate) fn enqueue_list(&mut self, list: &mut CbList) {
        self.seg[NEXT].append(list);
    }

    /// Assign the NEXT callbacks to grace period `snap` (a snapshot taken after they were
    /// enqueued).
    pub(crate) fn accelerate(&mut self, snap: GpSeq) {
        if self.seg[NEXT].is_empty() {
            return;
        }
        let mut next = std::mem::replace(&mut self.seg[NEXT], CbList::new());
        if !self.seg[NEXT_READY].is_empty() {
            // Merging into a segment that waits for a later grace period is conservative;
            // one that waits for an earlier one is extended to ours.
            if !self.gp[NEXT_READY].done(snap) {
                self.gp[NEXT_READY] = snap;
            }
            self.seg[NEXT_READY].append(&mut next);
        } else if self.seg[WAIT].is_empty() {
            self.seg[WAIT] = next;
            self.gp[WAIT] = snap;
        } else if snap.done(self.gp[WAIT]) {
            // WAIT already waits for `snap` or later.
            self.seg[WAIT].append(&mut next);
        } else {
            self.seg[NEXT_READY] = next;
            self.gp[NEXT_READY] = snap;
        }
    }

    /// Move segments whose grace period has completed into DONE.
    pub(crate) fn advance(&mut self, completed: GpSeq) {
        if !self.seg[WAIT].is_empty() && self.gp[WAIT].done(completed) {
            let mut w = std::mem::replace(&mut self.seg[WAIT], CbList::new());
            self.seg[DONE].append(&mut w);
            if !self.seg[NEXT_READY].is_empty() {
                if self.gp[NEXT_READY].done(completed) {
                    let mut nr = std::mem::replace(&mut self.seg[NEXT_READY], CbList::new());
                    self.seg[DONE].append(&mut nr);
                } else {
                    self.seg[WAIT] = std::mem::replace(&mut self.seg[NEXT_READY], CbList::new());
                    self.gp[WAIT] = self.gp[NEXT_READY];
                }
            }
        }
    }

    /// The latest grace period some queued callback waits for (after `accelerate`).
    pub(crate) fn needed(&self) -> Option<GpSeq> {
        if !self.seg[NEXT_READY].is_empty() {
            Some(self.gp[NEXT_READY])
        } else if !self.seg[WAIT].is_empty() {
            Some(self.gp[WAIT])
        } else {
            None
        }
    }

    /// Are there unassigned (NEXT) callbacks?
    pub(crate) fn has_next(&self) -> bool {
        !self.seg[NEXT].is_empty()
    }

    /// Extract up to `max` ready callbacks for invocation; they count as in flight until
    /// [`finish`](SegCbList::finish).
    pub(crate) fn take_done(&mut self, max: usize) -> CbList {
        let batch = self.seg[DONE].take_front(max);
        self.in_flight += batch.len();
        batch
    }

    /// `invoked` extracted callbacks ran; `rest` (extracted, not run) go back to the front.
    pub(crate) fn finish(&mut self, invoked: usize, rest: &mut CbList) {
        self.in_flight -= invoked + rest.len();
        self.seg[DONE].prepend(rest);
    }

    /// Append a barrier sentinel behind the last callback, in the segment of the last
    /// callback. Returns false (and does nothing) if the queue is empty.
    ///
    /// # Safety
    ///
    /// As [`enqueue`](SegCbList::enqueue).
    pub(crate) unsafe fn entrain(&mut self, h: *mut RcuHead) -> bool {
        if self.len() == 0 {
            return false;
        }
        // The last non-empty segment; if only in-flight callbacks remain, DONE: the invoker
        // finishes its batch before it extracts again, so the sentinel runs after them.
        let i = (DONE..=NEXT)
            .rev()
            .find(|&i| !self.seg[i].is_empty())
            .unwrap_or(DONE);
        // SAFETY: forwarded from the caller.
        unsafe { self.seg[i].push(h) };
        true
    }

    /// Unlink every queued head whose function is `func` (fork: abandoned barrier sentinels).
    pub(crate) fn remove_func(&mut self, func: crate::callback::RcuCallback) -> Vec<*mut RcuHead> {
        let mut removed = Vec::new();
        for s in &mut self.seg {
            let mut kept = CbList::new();
            while let Some(h) = s.pop() {
                // SAFETY: `h` was a node of this list; heads stay valid while queued.
                if unsafe { (*h).func }.is_some_and(|f| f as usize == func as usize) {
                    removed.push(h);
                } else {
                    // SAFETY: just unlinked.
                    unsafe { kept.push(h) };
                }
            }
            *s = kept;
        }
        removed
    }

    /// fork child: callbacks a parent thread was invoking are not ours to account for.
    pub(crate) fn forget_in_flight(&mut self) {
        self.in_flight = 0;
    }

    /// Remove every queued callback, in order (for adoption by another queue).
    pub(crate) fn take_all(&mut self) -> CbList {
        let mut all = CbList::new();
        for s in &mut self.seg {
            all.append(s);
        }
        all
    }

    /// Adopt an orphaned queue's callbacks at our tail. They wait for a fresh grace period,
    /// even those that were ready: conservative, and order is preserved.
    pub(crate) fn adopt(&mut self, orphans: &mut CbList) {
        self.seg[NEXT].append(orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::GP_INC;

    /// Heads at fixed addresses (the Vec is never resized), and a pointer to each.
    fn heads(
        n: usize,
    ) -> (
        Vec<RcuHead>,
        impl Fn(&mut Vec<RcuHead>, usize) -> *mut RcuHead,
    ) {
        let hs = (0..n).map(|_| RcuHead::new()).collect();
        (hs, |hs: &mut Vec<RcuHead>, i: usize| {
            &mut hs[i] as *mut RcuHead
        })
    }

    fn order(list: &mut CbList, hs: &[RcuHead]) -> Vec<usize> {
        let mut v = Vec::new();
        while let Some(h) = list.pop() {
            v.push(hs.iter().position(|b| ptr::eq(b, h)).unwrap());
        }
        v
    }

    fn g(n: u64) -> GpSeq {
        GpSeq(n * GP_INC + 1)
    }

    #[test]
    fn fifo_across_segments() {
        let (mut hs, p) = heads(6);
        let mut q = SegCbList::new();
        // SAFETY: boxed heads outlive the list and are posted once.
        unsafe {
            q.enqueue(p(&mut hs, 0));
            q.enqueue(p(&mut hs, 1));
            q.accelerate(g(2));
            q.enqueue(p(&mut hs, 2));
            q.accelerate(g(3));
            q.enqueue(p(&mut hs, 3));
            q.accelerate(g(3)); // merges into NEXT_READY
            q.enqueue(p(&mut hs, 4));
        }
        assert_eq!(q.needed(), Some(g(3)));
        q.advance(g(1));
        assert_eq!(q.take_done(usize::MAX).len(), 0, "nothing completed yet");
        q.advance(g(2));
        let mut b = q.take_done(usize::MAX);
        assert_eq!(order(&mut b, &hs), [0, 1]);
        q.finish(2, &mut CbList::new());
        // SAFETY: as above.
        let entrained = unsafe { q.entrain(p(&mut hs, 5)) };
        assert!(entrained, "non-empty queue entrains");
        q.accelerate(g(4));
        q.advance(g(3));
        let mut b = q.take_done(usize::MAX);
        assert_eq!(order(&mut b, &hs), [2, 3]);
        q.finish(2, &mut CbList::new());
        q.advance(g(4));
        let mut b = q.take_done(usize::MAX);
        // The sentinel waited behind callback 4, in callback 4's segment: no extra grace period.
        assert_eq!(order(&mut b, &hs), [4, 5]);
        q.finish(2, &mut CbList::new());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn take_front_cuts_in_order_and_keeps_counts() {
        let (mut hs, p) = heads(5);
        let mut l = CbList::new();
        for i in 0..5 {
            // SAFETY: heads outlive the list and are pushed once.
            unsafe { l.push(p(&mut hs, i)) };
        }
        assert_eq!(l.take_front(0).len(), 0);
        let mut front = l.take_front(3);
        assert_eq!((front.len(), l.len()), (3, 2));
        assert_eq!(order(&mut front, &hs), [0, 1, 2]);
        // The rest is still a well-formed list: appending after it lands behind 4.
        let mut more = CbList::new();
        // SAFETY: head 0 was popped above and is in no list now.
        unsafe { more.push(p(&mut hs, 0)) };
        l.append(&mut more);
        let mut all = l.take_front(usize::MAX);
        assert_eq!(order(&mut all, &hs), [3, 4, 0]);
    }

    #[test]
    fn entrain_behind_in_flight_and_refuse_empty() {
        let (mut hs, p) = heads(4);
        let mut q = SegCbList::new();
        // SAFETY: boxed heads outlive the list and are posted once.
        unsafe {
            assert!(
                !q.entrain(p(&mut hs, 3)),
                "an empty queue needs no sentinel"
            );
            q.enqueue(p(&mut hs, 0));
            q.enqueue(p(&mut hs, 1));
        }
        q.accelerate(g(2));
        q.advance(g(2));
        let mut batch = q.take_done(1);
        assert_eq!(q.len(), 2, "in-flight callbacks still count");
        // SAFETY: as above.
        assert!(unsafe { q.entrain(p(&mut hs, 2)) });
        let first = batch.pop().unwrap();
        q.finish(1, &mut batch);
        let mut rest = q.take_done(usize::MAX);
        assert!(ptr::eq(first, &hs[0]));
        assert_eq!(order(&mut rest, &hs), [1, 2]);
    }

    #[test]
    fn unfinished_batch_goes_back_to_the_front() {
        let (mut hs, p) = heads(3);
        let mut q = SegCbList::new();
        // SAFETY: boxed heads outlive the list and are posted once.
        unsafe {
            for i in 0..3 {
                q.enqueue(p(&mut hs, i));
            }
        }
        q.accelerate(g(2));
        q.advance(g(2));
        let mut batch = q.take_done(3);
        batch.pop();
        q.finish(1, &mut batch);
        let mut rest = q.take_done(usize::MAX);
        assert_eq!(order(&mut rest, &hs), [1, 2]);
    }

    #[test]
    fn adoption_preserves_order() {
        let (mut hs, p) = heads(4);
        let (mut a, mut b) = (SegCbList::new(), SegCbList::new());
        // SAFETY: boxed heads outlive the lists and are posted once.
        unsafe {
            a.enqueue(p(&mut hs, 0));
            b.enqueue(p(&mut hs, 1));
            b.accelerate(g(2));
            b.advance(g(2));
            b.enqueue(p(&mut hs, 2));
            b.enqueue(p(&mut hs, 3));
        }
        let mut orphans = b.take_all();
        a.adopt(&mut orphans);
        assert_eq!(b.len(), 0);
        a.accelerate(g(3));
        a.advance(g(3));
        let mut all = a.take_done(usize::MAX);
        assert_eq!(order(&mut all, &hs), [0, 1, 2, 3]);
    }
}
