//! Pure decisions of the pool: which worker takes the next call, how many
//! workers to start, and what becomes of the calls a dead worker held.

/// What the scheduler sees of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    /// Takes new calls (ready, active, not retiring or killed).
    pub open: bool,
    /// Calls it holds.
    pub held: usize,
}

/// The worker for the next call: the open one holding the fewest calls,
/// below `max_in_flight`; the first such in order on a tie.
pub(super) fn pick(
    workers: impl IntoIterator<Item = Candidate>,
    max_in_flight: usize,
) -> Option<usize> {
    workers
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.open && c.held < max_in_flight)
        .min_by_key(|(_, c)| c.held)
        .map(|(i, _)| i)
}

/// What the pool has, for [`plan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Census {
    /// Active workers, starting or ready, that take calls now or soon.
    pub active: usize,
    /// Spares that are ready.
    pub spares_ready: usize,
    /// Spares still starting.
    pub spares_starting: usize,
    /// Spawns on their way (no process yet) for an active place.
    pub spawning_active: usize,
    /// Spawns on their way for a spare place.
    pub spawning_spares: usize,
}

/// How to get back to `size` active workers and `spares` spares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Ready spares to make active at once.
    pub promote_ready: usize,
    /// Starting spares to make active (they take calls once ready).
    pub promote_starting: usize,
    /// New workers to spawn for active places now.
    pub spawn_active: usize,
    /// New spares to spawn (off the critical path).
    pub spawn_spares: usize,
}

pub(super) fn plan(census: Census, size: usize, spares: usize) -> Plan {
    let mut missing = size.saturating_sub(census.active + census.spawning_active);
    let promote_ready = missing.min(census.spares_ready);
    missing -= promote_ready;
    let promote_starting = missing.min(census.spares_starting);
    missing -= promote_starting;
    let spares_left =
        census.spares_ready + census.spares_starting - promote_ready - promote_starting
            + census.spawning_spares;
    Plan {
        promote_ready,
        promote_starting,
        spawn_active: missing,
        spawn_spares: spares.saturating_sub(spares_left),
    }
}

/// The calls a worker held when it ended, in the order they were sent
/// (1-based sequence numbers), split by the worker's progress word: the
/// first `started` had begun (they resolve `Died`); the rest never started
/// and are run elsewhere.
pub(super) fn settle<T>(
    held: impl IntoIterator<Item = (u64, T)>,
    started: u64,
) -> (Vec<T>, Vec<T>) {
    let mut died = Vec::new();
    let mut requeue = Vec::new();
    for (seq, call) in held {
        if seq <= started {
            died.push(call);
        } else {
            requeue.push(call);
        }
    }
    (died, requeue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(open: bool, held: usize) -> Candidate {
        Candidate { open, held }
    }

    #[test]
    fn the_least_loaded_open_worker_takes_the_call() {
        assert_eq!(pick([c(true, 2), c(true, 1), c(true, 1)], 4), Some(1));
        assert_eq!(pick([c(false, 0), c(true, 3)], 4), Some(1));
        assert_eq!(pick([c(true, 4), c(false, 0)], 4), None, "full or closed");
        assert_eq!(pick([], 1), None);
    }

    #[test]
    fn plans_promote_spares_before_spawning() {
        let census = Census {
            active: 1,
            spares_ready: 1,
            ..Census::default()
        };
        assert_eq!(
            plan(census, 2, 1),
            Plan {
                promote_ready: 1,
                spawn_spares: 1,
                ..Plan::default()
            }
        );
        // Spawns already on their way count.
        let census = Census {
            active: 0,
            spawning_active: 2,
            spawning_spares: 1,
            ..Census::default()
        };
        assert_eq!(plan(census, 2, 1), Plan::default());
        // Nothing at all: spawn everything.
        assert_eq!(
            plan(Census::default(), 3, 2),
            Plan {
                spawn_active: 3,
                spawn_spares: 2,
                ..Plan::default()
            }
        );
        // A starting spare is promoted when no ready one exists.
        let census = Census {
            active: 1,
            spares_starting: 1,
            ..Census::default()
        };
        assert_eq!(
            plan(census, 2, 0),
            Plan {
                promote_starting: 1,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn calls_split_by_progress() {
        let held = vec![(3, 'c'), (4, 'd'), (5, 'e')];
        assert_eq!(settle(held.clone(), 3), (vec!['c'], vec!['d', 'e']));
        assert_eq!(
            settle(held.clone(), 2),
            (vec![], vec!['c', 'd', 'e']),
            "none started"
        );
        assert_eq!(settle(held, 5), (vec!['c', 'd', 'e'], vec![]));
    }
}
