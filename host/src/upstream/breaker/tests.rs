use super::*;

fn settings() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        error_rate: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        open_duration: Duration::from_secs(30),
        half_open_probes: 2,
        adaptive: Default::default(),
    }
}

fn ok(b: &Breaker, now: Instant) -> Option<Transition> {
    let (permit, _) = b.try_acquire(now);
    b.record(permit.expect("admitted"), true, now, None)
}

fn fail(b: &Breaker, now: Instant) -> Option<Transition> {
    let (permit, _) = b.try_acquire(now);
    b.record(permit.expect("admitted"), false, now, None)
}

const fn t(from: BreakerState, to: BreakerState) -> Option<Transition> {
    Some(Transition { from, to })
}

use BreakerState::*;

#[test]
fn trips_after_consecutive_failures() {
    let t0 = Instant::now();
    let b = Breaker::new(settings(), t0, 2);
    assert_eq!(fail(&b, t0), None);
    assert_eq!(fail(&b, t0), None);
    assert_eq!(fail(&b, t0), t(Closed, Open));
    assert_eq!(b.state(), Open);
    assert_eq!(b.try_acquire(t0).0, None);
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let t0 = Instant::now();
    let mut s = settings();
    s.error_rate = 0.0;
    let b = Breaker::new(s, t0, 2);
    for _ in 0..10 {
        fail(&b, t0);
        fail(&b, t0);
        ok(&b, t0);
    }
    assert_eq!(b.state(), Closed);
}

#[test]
fn trips_on_error_rate_only_with_enough_volume() {
    let t0 = Instant::now();
    let mut s = settings();
    s.consecutive_failures = 0;
    let b = Breaker::new(s, t0, 2);
    // 4 failures out of 8: 50%, but below min_requests (10).
    for _ in 0..4 {
        ok(&b, t0);
        assert_eq!(fail(&b, t0), None);
    }
    assert_eq!(ok(&b, t0), None);
    // 10th request: 5 of 10 failed → 50% ≥ 50%.
    assert_eq!(fail(&b, t0), t(Closed, Open));
}

#[test]
fn old_failures_leave_the_window() {
    let t0 = Instant::now();
    let mut s = settings();
    s.consecutive_failures = 0;
    let b = Breaker::new(s, t0, 2);
    for _ in 0..9 {
        fail(&b, t0);
    }
    // 11 s later those 9 failures are outside the 10 s window.
    let later = t0 + Duration::from_secs(11);
    for _ in 0..9 {
        assert_eq!(ok(&b, later), None);
    }
    assert_eq!(fail(&b, later), None, "1 failure in 10 is below 50%");
    assert_eq!(b.state(), Closed);
}

#[test]
fn open_then_half_open_then_closed() {
    let t0 = Instant::now();
    let b = Breaker::new(settings(), t0, 2);
    for _ in 0..3 {
        fail(&b, t0);
    }
    assert_eq!(b.try_acquire(t0 + Duration::from_secs(29)).0, None);

    let t1 = t0 + Duration::from_secs(30);
    let (p1, tr) = b.try_acquire(t1);
    assert_eq!((p1, tr), (Some(Permit::Probe), t(Open, HalfOpen)));
    let (p2, _) = b.try_acquire(t1);
    assert_eq!(p2, Some(Permit::Probe));
    // Only two probes may be in flight.
    assert_eq!(b.try_acquire(t1).0, None);

    assert_eq!(b.record(Permit::Probe, true, t1, None), None);
    assert_eq!(b.state(), HalfOpen);
    assert_eq!(b.record(Permit::Probe, true, t1, None), t(HalfOpen, Closed));
    assert_eq!(b.try_acquire(t1).0, Some(Permit::Normal));
}

#[test]
fn a_failed_probe_reopens() {
    let t0 = Instant::now();
    let b = Breaker::new(settings(), t0, 2);
    for _ in 0..3 {
        fail(&b, t0);
    }
    let t1 = t0 + Duration::from_secs(30);
    let (p, _) = b.try_acquire(t1);
    assert_eq!(b.record(p.unwrap(), false, t1, None), t(HalfOpen, Open));
    assert_eq!(b.try_acquire(t1 + Duration::from_secs(29)).0, None);
    assert_eq!(
        b.try_acquire(t1 + Duration::from_secs(30)).0,
        Some(Permit::Probe)
    );
}

#[test]
fn a_released_probe_frees_its_slot() {
    let t0 = Instant::now();
    let mut s = settings();
    s.half_open_probes = 1;
    let b = Breaker::new(s, t0, 2);
    for _ in 0..3 {
        fail(&b, t0);
    }
    let t1 = t0 + Duration::from_secs(30);
    let (p, _) = b.try_acquire(t1);
    assert_eq!(b.try_acquire(t1).0, None);
    b.release(p.unwrap());
    assert_eq!(b.try_acquire(t1).0, Some(Permit::Probe));
}

#[test]
fn late_outcomes_from_before_the_trip_are_ignored() {
    let t0 = Instant::now();
    let b = Breaker::new(settings(), t0, 2);
    let (slow, _) = b.try_acquire(t0);
    for _ in 0..3 {
        fail(&b, t0);
    }
    // The slow request admitted while closed finishes while open.
    assert_eq!(b.record(slow.unwrap(), true, t0, None), None);
    assert_eq!(b.state(), Open);
}

#[test]
fn a_learned_threshold_replaces_the_static_error_rate() {
    let t0 = Instant::now();
    let mut s = settings();
    s.consecutive_failures = 0;
    let b = Breaker::new(s, t0, 2);
    assert_eq!(b.threshold(), 0.5);
    b.set_threshold(Some(0.2));
    assert_eq!(b.threshold(), 0.2);
    // 2 failures in 10 requests: 20 % ≥ 20 %.
    for _ in 0..8 {
        ok(&b, t0);
    }
    assert_eq!(fail(&b, t0), None);
    assert_eq!(fail(&b, t0), t(Closed, Open));
}

#[test]
fn each_route_is_held_to_its_own_threshold() {
    let t0 = Instant::now();
    let mut s = settings();
    s.consecutive_failures = 0;
    s.error_rate = 0.0; // backend-wide rule off
    let b = Breaker::new(s, t0, 2);
    b.set_route_threshold(0, Some(0.5)); // a route that normally fails often
    b.set_route_threshold(1, Some(0.05)); // a route that normally never fails
    let send = |slot, success| {
        let (p, _) = b.try_acquire(t0);
        b.record(p.unwrap(), success, t0, Some(slot))
    };
    // Slot 0 at 20 % errors stays below its 50 % threshold.
    for i in 0..20 {
        assert_eq!(send(0, i % 5 != 0), None);
    }
    // Slot 1: 1 failure in 10 (10 %) is over its 5 % threshold.
    for _ in 0..9 {
        assert_eq!(send(1, true), None);
    }
    assert_eq!(send(1, false), t(Closed, Open));
    assert_eq!(b.route_threshold(1), Some(0.05));
    assert_eq!(b.route_threshold(7), None);
}
