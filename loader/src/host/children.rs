//! The loader's pager for a task's forked descendants.
//!
//! A child that a program forks is paged through its own userfaultfd (the
//! kernel's fork event gives one per parent uffd). The internal pager dies
//! with its task, so it hands each child's uffd to the loader (see the
//! stub's fork barrier); in external mode the loader reads the fork events
//! itself. Here one thread per child serves it with the same resolution as
//! the task's pager ([`l4pager::fault::resolve`] over the loader's copy of
//! the task's region map, which is the layout every child inherits at
//! fork, and the same uffd operations), for as long as the child's address
//! space exists: until the child and all its threads exited or called
//! `execve` ([`l4pager::host::uffd::Uffd::mm_alive`]). A child's own forks
//! come here too, so fork chains are served to any depth.
//!
//! `loader run` waits for the task and then for [`Children::wait`]: it ends
//! when the program and every descendant still paged by it are done.

use std::sync::{Arc, Condvar, Mutex, Weak};

use l4pager::host::uffd::Uffd;
use l4pager::host::{OnFork, Pager, block_signals};

/// The descendants being served.
pub struct Children {
    pager: Arc<Pager>,
    live: Mutex<usize>,
    done: Condvar,
    /// The uffd of every child handed over (gone once its thread ended),
    /// to see at once that a child's address space is gone ([`Self::wait`]).
    served: Mutex<Vec<Weak<Uffd>>>,
}

impl Children {
    /// Serves children with `pager` (made with
    /// [`Pager::for_children`]); the children's own forks are added here.
    pub fn new(pager: Pager) -> Arc<Children> {
        let c = Arc::new(Children {
            pager: Arc::new(pager),
            live: Mutex::new(0),
            done: Condvar::new(),
            served: Mutex::new(Vec::new()),
        });
        c.pager.set_on_fork(Self::handler(&c));
        c
    }

    /// A fork handler that adds the child here (for the task's pager in
    /// external mode, and for the children's own forks).
    pub fn handler(me: &Arc<Children>) -> OnFork {
        let w: Weak<Children> = Arc::downgrade(me);
        Box::new(move |u| {
            if let Some(c) = w.upgrade() {
                c.add(u);
            }
        })
    }

    /// The pager that serves the children.
    pub fn pager(&self) -> &Arc<Pager> {
        &self.pager
    }

    /// Serves one more child, on a thread of its own, until its address
    /// space is gone.
    pub fn add(self: &Arc<Self>, uffd: Uffd) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let uffd = Arc::new(uffd);
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&uffd));
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("child-pager".into())
            .spawn(move || {
                block_signals();
                me.pager.serve_child(uffd);
                let mut n = me.live.lock().unwrap_or_else(|p| p.into_inner());
                *n -= 1;
                me.done.notify_all();
            });
        if let Err(e) = spawned {
            eprintln!("loader: cannot serve a forked child: {e}");
            *self.live.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        }
    }

    /// How many children are being served.
    pub fn live(&self) -> usize {
        *self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no child is served any more, or every child's address
    /// space is gone.
    ///
    /// A child's pager thread notices that its child is gone only at its
    /// next poll ([`l4pager::host::CHILD_POLL_MS`]); the run need not wait
    /// for that: at once and every 100 µs this probes the children's uffds
    /// ([`Uffd::mm_alive`]), and once all are dead — and stay so for
    /// another 100 µs with no child handed over meanwhile (a fork
    /// event being handled) — there is nothing left to page.
    pub fn wait(&self) {
        let probe = self.pager.unregistered_page();
        let all_gone = || {
            let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            let gone = served
                .iter()
                .all(|w| w.upgrade().is_none_or(|u| !u.mm_alive(probe)));
            (gone, served.len())
        };
        let tick = std::time::Duration::from_micros(100);
        let mut n = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut quiet_since: Option<usize> = None;
        while *n > 0 {
            drop(n);
            let (gone, handed_over) = all_gone();
            match (gone, quiet_since) {
                (true, Some(before)) if before == handed_over => return,
                (true, _) => quiet_since = Some(handed_over),
                (false, _) => quiet_since = None,
            }
            n = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if *n == 0 {
                break;
            }
            n = self
                .done
                .wait_timeout(n, tick)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
