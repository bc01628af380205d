//! A socket's event lane: events of one kind handled one at a time, in arrival order, by a
//! worker task that exists only while the lane has work.
//!
//! socketioxide runs each event in a task of its own, so a socket's events need a lane to
//! keep their order. A bounded channel drained by a task per socket did that, but an idle
//! socket then kept the task (its future is as large as the largest handler it awaits) and
//! the channel's first block of slots alive for its whole life: a few KiB for each of the
//! tens of thousands of sockets a node holds, most of them idle. Here an idle lane is a
//! mutex around an empty queue; a worker is spawned by the event that finds the lane idle
//! and ends when it has drained the queue.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio_util::task::TaskTracker;

/// What a lane does with each of its jobs.
pub(super) trait LaneWork<J>: Send + Sync + 'static {
    /// Handles one job; the next one waits until this one is done.
    fn handle(&self, job: J) -> impl Future<Output = ()> + Send;
}

/// One socket's lane for jobs `J`, handled by `W`.
pub(super) struct Lane<J, W> {
    work: W,
    /// Jobs queued at most (the socket's in-flight limit): past it [`Lane::push`] refuses.
    capacity: usize,
    tasks: TaskTracker,
    state: Mutex<LaneState<J>>,
}

struct LaneState<J> {
    queue: VecDeque<J>,
    /// Whether jobs may be handled yet (see [`Lane::open`]).
    open: bool,
    /// Whether a worker is draining the queue.
    working: bool,
}

impl<J: Send + 'static, W: LaneWork<J>> Lane<J, W> {
    /// A lane of at most `capacity` queued jobs (at least one) whose workers `tasks` tracks
    /// (so shutdown waits for them); `open`: whether jobs are handled from the start, or
    /// only once [`Lane::open`] is called.
    pub(super) fn new(work: W, capacity: usize, tasks: TaskTracker, open: bool) -> Arc<Self> {
        Arc::new(Self {
            work,
            capacity: capacity.max(1),
            tasks,
            state: Mutex::new(LaneState {
                queue: VecDeque::new(),
                open,
                working: false,
            }),
        })
    }

    /// Queues `job` behind the lane's earlier jobs; gives it back when the lane is full.
    pub(super) fn push(self: &Arc<Self>, job: J) -> Result<(), J> {
        let mut state = self.lock();
        if state.queue.len() >= self.capacity {
            return Err(job);
        }
        state.queue.push_back(job);
        self.start_worker(&mut state);
        Ok(())
    }

    /// Starts handling jobs, those queued so far first.
    pub(super) fn open(self: &Arc<Self>) {
        let mut state = self.lock();
        state.open = true;
        self.start_worker(&mut state);
    }

    /// Spawns a worker unless one runs, the lane is closed, or there is nothing to do.
    fn start_worker(self: &Arc<Self>, state: &mut LaneState<J>) {
        if state.working || !state.open || state.queue.is_empty() {
            return;
        }
        state.working = true;
        let lane = self.clone();
        self.tasks.spawn(async move {
            // Made in the task, not before it: a worker dropped before it first ran (the
            // runtime shutting down) must not spawn the next one, or shutdown would never end.
            let mut exit = WorkerExit {
                lane,
                drained: false,
            };
            while let Some(job) = exit.lane.next_job() {
                exit.lane.work.handle(job).await;
            }
            exit.drained = true;
        });
    }

    /// The next job, or `None` after marking the lane idle (under the same lock as a push
    /// that checks for a worker, so a job is never left without one).
    fn next_job(&self) -> Option<J> {
        let mut state = self.lock();
        let job = state.queue.pop_front();
        if job.is_none() {
            state.working = false;
            // The queue grew for a burst; an idle socket keeps none of it.
            state.queue = VecDeque::new();
        }
        job
    }

    fn lock(&self) -> MutexGuard<'_, LaneState<J>> {
        // A worker never panics while holding the lock (it holds it for queue operations
        // only), so a poisoned lock still guards a consistent queue.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends a worker: one that stops before draining its queue (its job panicked, or its task
/// was dropped) would otherwise leave `working` set, and the lane would wait forever for a
/// worker that is gone. Its drop marks the lane idle and hands what is still queued to a new
/// worker, so one bad event costs that event only, not the socket's every later one.
struct WorkerExit<J: Send + 'static, W: LaneWork<J>> {
    lane: Arc<Lane<J, W>>,
    /// Set when the worker found the queue empty (and so marked the lane idle itself).
    drained: bool,
}

impl<J: Send + 'static, W: LaneWork<J>> Drop for WorkerExit<J, W> {
    fn drop(&mut self) {
        if self.drained {
            return;
        }
        let mut state = self.lane.lock();
        state.working = false;
        if std::thread::panicking() {
            tracing::warn!(
                queued = state.queue.len(),
                "an event handler panicked; its socket's lane carries on with the next event"
            );
        }
        // Spawning needs a runtime; without one (the runtime itself is being dropped) the
        // lane is just left idle, and a later push starts a worker.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.lane.start_worker(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::{mpsc, Semaphore};

    use super::*;

    /// A job whose handling panics (a handler bug).
    const PANICS: u32 = u32::MAX;

    /// Records each job, after waiting for a permit when the job is 0 (to hold the worker);
    /// panics on [`PANICS`].
    struct Record {
        seen: mpsc::UnboundedSender<u32>,
        gate: Arc<Semaphore>,
    }

    impl LaneWork<u32> for Record {
        async fn handle(&self, job: u32) {
            if job == 0 {
                let _ = self.gate.acquire().await.map(|p| p.forget());
            }
            assert_ne!(job, PANICS, "a handler that panics");
            let _ = self.seen.send(job);
        }
    }

    /// A lane under test, what its work saw, the gate holding job 0, and its tasks.
    struct Rig {
        lane: Arc<Lane<u32, Record>>,
        seen: mpsc::UnboundedReceiver<u32>,
        gate: Arc<Semaphore>,
        tasks: TaskTracker,
    }

    fn rig(open: bool, capacity: usize) -> Rig {
        let (seen, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let tasks = TaskTracker::new();
        let work = Record {
            seen,
            gate: gate.clone(),
        };
        Rig {
            lane: Lane::new(work, capacity, tasks.clone(), open),
            seen: rx,
            gate,
            tasks,
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<u32>) -> u32 {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a job was handled")
            .expect("the lane's work is alive")
    }

    #[tokio::test]
    async fn jobs_are_handled_in_order_one_at_a_time_and_past_capacity_refused() {
        let Rig {
            lane,
            seen: mut rx,
            gate,
            ..
        } = rig(true, 3);
        lane.push(0).expect("room");
        lane.push(1).expect("room");
        lane.push(2).expect("room");
        // Three jobs not yet taken by the worker fill the lane.
        assert_eq!(lane.push(3), Err(3));
        // Job 0 holds the worker until the gate opens; the others wait their turn.
        gate.add_permits(1);
        for expected in 0..3 {
            assert_eq!(next(&mut rx).await, expected);
        }
    }

    #[tokio::test]
    async fn an_idle_lane_holds_no_worker_and_the_next_job_starts_one() {
        let Rig {
            lane,
            seen: mut rx,
            tasks,
            ..
        } = rig(true, 8);
        lane.push(1).expect("room");
        assert_eq!(next(&mut rx).await, 1);
        // The worker ends once the queue is empty.
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("the worker ended");
        tasks.reopen();
        lane.push(2).expect("room");
        assert_eq!(next(&mut rx).await, 2);
        assert_eq!(lane.lock().queue.capacity(), 0);
    }

    #[tokio::test]
    async fn a_lane_opened_later_handles_what_queued_before_in_order() {
        let Rig {
            lane, seen: mut rx, ..
        } = rig(false, 8);
        lane.push(5).expect("room");
        lane.push(6).expect("room");
        assert!(
            rx.try_recv().is_err(),
            "nothing handled before the lane opens"
        );
        lane.open();
        assert_eq!(next(&mut rx).await, 5);
        assert_eq!(next(&mut rx).await, 6);
    }

    #[tokio::test]
    async fn a_panicking_job_costs_that_job_only_and_the_lane_carries_on() {
        let Rig {
            lane,
            seen: mut rx,
            gate,
            ..
        } = rig(true, 8);
        // Job 0 holds the worker so the panicking job and the one behind it queue up.
        lane.push(0).expect("room");
        lane.push(PANICS).expect("room");
        lane.push(2).expect("room");
        gate.add_permits(1);
        assert_eq!(next(&mut rx).await, 0);
        assert_eq!(next(&mut rx).await, 2, "the job queued behind the panic");
        // A panic with nothing queued behind it leaves the lane idle, not stuck "working"...
        lane.push(PANICS).expect("room");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let idle = {
                let state = lane.lock();
                !state.working && state.queue.is_empty()
            };
            if idle {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the lane went idle");
            tokio::task::yield_now().await;
        }
        // ...so the next job starts a worker as usual.
        lane.push(3).expect("room");
        assert_eq!(next(&mut rx).await, 3);
    }
}
