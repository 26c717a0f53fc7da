//! Choosing the worker for a request.

/// How the pool chooses a worker for each request. Only workers that are
/// ready (not starting, not [`busy`](crate::WorkerState::Busy), not
/// stopping) and below their concurrency cap are candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Routing {
    /// The worker with the fewest requests in flight; among those, the one
    /// with the lowest resident memory (RSS). This is the default: the
    /// in-flight count reacts at once, between two memory samples, so a
    /// burst spreads over the pool instead of landing on the one worker that
    /// was lightest at the last sample.
    #[default]
    LeastLoaded,
    /// The worker with the lowest RSS, whatever it holds: the rule of the
    /// load-process-manager package that drover grows from. Between two
    /// samples every request goes to the same worker, up to its cap.
    LowestRss,
    /// Each candidate in turn.
    RoundRobin,
}

/// What routing needs to know of one worker.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Candidate {
    /// Whether it may take a request now (ready and below its cap).
    pub(crate) eligible: bool,
    pub(crate) in_flight: usize,
    /// Passed sockets it holds open.
    pub(crate) sockets: usize,
    /// Last sampled RSS in bytes; `None` before the first sample.
    pub(crate) rss: Option<u64>,
}

/// Two RSS readings closer than this (or than a tenth of the smaller one)
/// count as equal, so that small differences in memory do not send every
/// request to one worker.
pub(crate) const RSS_TOLERANCE: u64 = 1024 * 1024;

/// Picks a candidate; `cursor` rotates among equals so ties share the load.
///
/// A request that carries a socket goes, whatever the policy, to the
/// candidate holding the fewest passed sockets open, then the lowest RSS:
/// sockets outlive their requests, so in-flight counts say little of the
/// load they bring.
pub(crate) fn pick(
    policy: Routing,
    with_socket: bool,
    candidates: &[Candidate],
    cursor: &mut usize,
) -> Option<usize> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let start = *cursor % n;
    // The eligible candidates in turn from the cursor: ties go to the
    // first of them.
    let mut order = (start..n)
        .chain(0..start)
        .filter(|&i| candidates[i].eligible);
    // What the policy ranks by before RSS, if anything.
    let rank = match policy {
        _ if with_socket => Rank::Sockets,
        Routing::RoundRobin => {
            let chosen = order.next();
            if let Some(i) = chosen {
                *cursor = i + 1;
            }
            return chosen;
        }
        Routing::LeastLoaded => Rank::InFlight,
        Routing::LowestRss => Rank::Nothing,
    };
    // One pass: the lowest rank among the eligible, and the lowest RSS
    // among those of that rank.
    let mut best: Option<(usize, u64)> = None;
    for c in candidates.iter().filter(|c| c.eligible) {
        let (key, rss) = (rank.of(c), rss_of(c));
        best = match best {
            Some((least, floor)) if key > least => Some((least, floor)),
            Some((least, floor)) if key == least => Some((least, floor.min(rss))),
            _ => Some((key, rss)),
        };
    }
    let (least, floor) = best?;
    let chosen = order.find(|&i| {
        let c = &candidates[i];
        rank.of(c) == least && close(rss_of(c), floor)
    });
    if let Some(i) = chosen {
        *cursor = i + 1;
    }
    chosen
}

/// What a policy ranks candidates by before their RSS.
#[derive(Clone, Copy)]
enum Rank {
    /// Passed sockets held open (a request that carries one).
    Sockets,
    /// Requests in flight (`LeastLoaded`).
    InFlight,
    /// Nothing: RSS alone (`LowestRss`).
    Nothing,
}

impl Rank {
    fn of(self, c: &Candidate) -> usize {
        match self {
            Rank::Sockets => c.sockets,
            Rank::InFlight => c.in_flight,
            Rank::Nothing => 0,
        }
    }
}

/// A worker not sampled yet counts as the lightest: it has just started.
fn rss_of(c: &Candidate) -> u64 {
    c.rss.unwrap_or(0)
}

fn close(rss: u64, floor: u64) -> bool {
    rss <= floor + RSS_TOLERANCE.max(floor / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(in_flight: usize, rss_mb: u64) -> Candidate {
        Candidate {
            eligible: true,
            in_flight,
            sockets: 0,
            rss: Some(rss_mb * 1024 * 1024),
        }
    }

    #[test]
    fn least_loaded_prefers_fewest_in_flight_then_lowest_rss() {
        let mut cursor = 0;
        let cands = [c(2, 10), c(1, 50), c(1, 20), c(3, 5)];
        assert_eq!(
            pick(Routing::LeastLoaded, false, &cands, &mut cursor),
            Some(2)
        );
    }

    #[test]
    fn equal_workers_share_the_load() {
        let mut cursor = 0;
        let cands = [c(0, 10), c(0, 10), c(0, 10)];
        let picks: Vec<_> = (0..6)
            .map(|_| pick(Routing::LeastLoaded, false, &cands, &mut cursor).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn heavy_worker_is_avoided_while_others_are_free() {
        let mut cursor = 0;
        let cands = [c(0, 210), c(0, 10), c(0, 10)];
        for _ in 0..10 {
            assert_ne!(
                pick(Routing::LeastLoaded, false, &cands, &mut cursor),
                Some(0)
            );
        }
        let mut cursor = 0;
        for _ in 0..10 {
            assert_ne!(
                pick(Routing::LowestRss, false, &cands, &mut cursor),
                Some(0)
            );
        }
    }

    #[test]
    fn ineligible_workers_are_skipped() {
        let mut cursor = 0;
        let mut cands = [c(0, 1), c(5, 100)];
        cands[0].eligible = false;
        assert_eq!(
            pick(Routing::LeastLoaded, false, &cands, &mut cursor),
            Some(1)
        );
        assert_eq!(
            pick(Routing::RoundRobin, false, &cands, &mut cursor),
            Some(1)
        );
        cands[1].eligible = false;
        assert_eq!(pick(Routing::LowestRss, false, &cands, &mut cursor), None);
    }

    #[test]
    fn sockets_go_to_the_worker_holding_the_fewest() {
        let mut cursor = 0;
        let mut cands = [c(0, 10), c(3, 10), c(0, 50)];
        cands[0].sockets = 5;
        cands[1].sockets = 1;
        cands[2].sockets = 1;
        assert_eq!(
            pick(Routing::LeastLoaded, true, &cands, &mut cursor),
            Some(1)
        );
    }

    #[test]
    fn unsampled_worker_counts_as_lightest() {
        let mut cursor = 0;
        let cands = [
            c(0, 30),
            Candidate {
                eligible: true,
                in_flight: 0,
                sockets: 0,
                rss: None,
            },
        ];
        assert_eq!(
            pick(Routing::LowestRss, false, &cands, &mut cursor),
            Some(1)
        );
    }
}
