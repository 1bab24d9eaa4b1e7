//! The `--parallelism` workers of an apply: a step holds one while it asks the engine for
//! changes, and gives it back while it waits for its container's gates, so that a slow
//! gate does not hold up the steps beside it.

use std::cell::RefCell;

use super::Run;

tokio::task_local! {
    /// The worker held by the step being polled (see [`Run::without_worker`]).
    pub(super) static WORKER: RefCell<Option<tokio::sync::OwnedSemaphorePermit>>;
}

impl Run<'_> {
    /// One of the `parallelism` workers, once one is free (none when the run's semaphore
    /// is closed, which it never is).
    pub(super) async fn worker(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.workers.clone().acquire_owned().await.ok()
    }

    /// Runs `wait` (a wait on the engine that asks it for nothing heavy: a gate) after
    /// giving back the step's worker, so that another step uses it meanwhile. The step
    /// finishes without one: what is left after a gate (a name switched, a proxy told) is
    /// short, and waiting behind the steps queued for a worker would hold the pod's
    /// verdict back until they had all started. Outside a step (undo, recover) it just
    /// waits.
    pub(super) async fn without_worker<T>(&self, wait: impl std::future::Future<Output = T>) -> T {
        let _ = WORKER.try_with(|w| w.borrow_mut().take());
        wait.await
    }
}
