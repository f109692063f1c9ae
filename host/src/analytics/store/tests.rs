use std::sync::Mutex;

use super::*;

const SEC: i64 = 1000;

fn settings() -> StoreSettings {
    StoreSettings {
        interval_ms: SEC,
        retention_ms: 100 * SEC,
        rollup_after_ms: 20 * SEC,
        rollup_interval_ms: 10 * SEC,
    }
}

fn rec(route: &str, backend: Option<&str>, at: UnixMs, latency_us: u64, error: bool) -> Record {
    Record {
        route: route.into(),
        backend: backend.map(Into::into),
        pair: backend.is_some(),
        at,
        sample: Sample {
            error,
            latency_us,
            bytes_in: 1,
            bytes_out: 2,
        },
    }
}

fn route(name: &str) -> SeriesKey {
    SeriesKey::Route(name.into())
}

#[test]
fn requests_land_in_the_bucket_of_their_interval() {
    let s = MemoryStore::new(settings(), None);
    s.record(&[
        rec("/a", Some("b1"), 1_000, 100, false),
        rec("/a", Some("b1"), 1_999, 300, true),
        rec("/a", Some("b2"), 2_000, 500, false),
    ]);
    let b = s.buckets(&route("/a"), 0, 10 * SEC);
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].start, b[0].requests, b[0].errors), (1_000, 2, 1));
    assert_eq!((b[1].start, b[1].requests), (2_000, 1));
    assert_eq!(
        s.buckets(&SeriesKey::Backend("b1".into()), 0, 10 * SEC)[0].requests,
        2
    );
    assert_eq!(
        s.buckets(&SeriesKey::Backend("b2".into()), 0, 10 * SEC)[0].start,
        2_000
    );
    let mut names: Vec<_> = s
        .series(SeriesKind::Backend)
        .into_iter()
        .map(|(k, _)| k.name().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["b1", "b2"]);
    let pair = SeriesKey::Pair("/a".into(), "b1".into());
    assert_eq!(
        s.buckets(&pair, 0, 10 * SEC)[0].requests,
        2,
        "route x backend pairs too"
    );
    assert_eq!(s.series(SeriesKind::Pair).len(), 2);
    assert_eq!(
        s.series(SeriesKind::Route)[0].1,
        1_000,
        "first bucket dates the series"
    );
}

#[test]
fn a_route_with_one_backend_keeps_no_pair_and_counts_what_reached_it() {
    let s = MemoryStore::new(settings(), None);
    let one_backend = |backend: Option<&str>, error| Record {
        pair: false,
        ..rec("/a", backend, 1_500, 100, error)
    };
    s.record(&[
        one_backend(Some("b1"), false),
        one_backend(Some("b1"), true),
        one_backend(None, true), // turned away before a backend: a 503 of an open breaker
    ]);
    let b = &s.buckets(&route("/a"), 0, 10 * SEC)[0];
    assert_eq!((b.requests, b.errors), (3, 2));
    assert_eq!((b.backend_requests, b.backend_errors), (2, 1));
    assert!(s.series(SeriesKind::Pair).is_empty());
    let backend = &s.buckets(&SeriesKey::Backend("b1".into()), 0, 10 * SEC)[0];
    assert_eq!((backend.requests, backend.backend_requests), (2, 2));
}

#[test]
fn range_queries_are_half_open() {
    let s = MemoryStore::new(settings(), None);
    for t in [1_000, 2_000, 3_000] {
        s.record(&[rec("/a", None, t, 1, false)]);
    }
    let starts: Vec<_> = s
        .buckets(&route("/a"), 2_000, 3_000)
        .iter()
        .map(|b| b.start)
        .collect();
    assert_eq!(starts, [2_000]);
}

#[test]
fn maintain_closes_finished_buckets_and_persists_them() {
    #[derive(Default)]
    struct Saved(Mutex<Vec<(SeriesKey, UnixMs, u64)>>);
    impl Persist for Saved {
        fn write(&self, changes: Vec<Change>) {
            for c in changes {
                if let Change::Save(key, b) = c {
                    self.0.lock().unwrap().push((key, b.start, b.requests));
                }
            }
        }
    }
    let saved = Arc::new(Saved::default());
    let s = MemoryStore::new(settings(), Some(Box::new(saved.clone())));
    s.record(&[rec("/a", None, 5_500, 1, false)]);
    s.maintain(5_999);
    assert!(
        saved.0.lock().unwrap().is_empty(),
        "bucket still in progress"
    );
    s.maintain(6_000);
    assert_eq!(*saved.0.lock().unwrap(), [(route("/a"), 5_000, 1)]);
}

#[test]
fn one_call_hands_persistence_one_batch() {
    #[derive(Default)]
    struct Batches(Mutex<Vec<usize>>);
    impl Persist for Batches {
        fn write(&self, changes: Vec<Change>) {
            self.0.lock().unwrap().push(changes.len());
        }
    }
    let batches = Arc::new(Batches::default());
    let s = MemoryStore::new(settings(), Some(Box::new(batches.clone())));
    let routes: Vec<String> = (0..50).map(|i| format!("/r{i}")).collect();
    let at = |t| -> Vec<Record> {
        routes
            .iter()
            .map(|r| rec(r, Some("http://b"), t, 1, false))
            .collect()
    };
    s.record(&at(1_500));
    // The next interval's requests close 50 route, 50 pair and 1 backend bucket, in
    // several calls; they wait for the tick.
    for chunk in at(2_500).chunks(7) {
        s.record(chunk);
    }
    assert!(batches.0.lock().unwrap().is_empty());
    // The tick closes the 2 s buckets too: everything goes over in one batch.
    s.maintain(3_000);
    assert_eq!(*batches.0.lock().unwrap(), [202]);
    s.maintain(3_500);
    assert_eq!(
        *batches.0.lock().unwrap(),
        [202],
        "nothing new, nothing written"
    );
    // flush hands over what record closed since the tick along with the open buckets.
    s.record(&at(3_600));
    s.record(&at(4_600));
    s.flush();
    assert_eq!(*batches.0.lock().unwrap(), [202, 202]);
}

#[test]
fn old_buckets_expire_and_empty_series_disappear() {
    let s = MemoryStore::new(settings(), None);
    s.record(&[
        rec("/old", None, 1_000, 1, false),
        rec("/new", None, 150_000, 1, false),
    ]);
    s.maintain(150_500);
    assert!(s.buckets(&route("/old"), 0, i64::MAX).is_empty());
    assert_eq!(s.series(SeriesKind::Route).len(), 1);
}

#[test]
fn old_buckets_roll_up_and_keep_their_totals() {
    let s = MemoryStore::new(settings(), None);
    for t in (0..30).map(|i| i * SEC) {
        s.record(&[rec("/a", None, t, 1000 + t as u64, t % 2000 == 0)]);
    }
    // At t = 40 s, buckets before 20 s roll up into 10 s buckets.
    s.maintain(40 * SEC);
    let b = s.buckets(&route("/a"), 0, i64::MAX);
    let shape: Vec<_> = b
        .iter()
        .map(|b| (b.start, b.interval_ms, b.requests))
        .collect();
    let mut expected = vec![(0, 10 * SEC, 10), (10 * SEC, 10 * SEC, 10)];
    expected.extend((20..30).map(|i| (i * SEC, SEC, 1)));
    assert_eq!(shape, expected);
    assert_eq!(b[0].errors, 5);
    assert_eq!(b[0].latency.count(), 10);
    assert_eq!(b[0].latency_max_us, 10_000);
    // A second pass later merges more into the existing coarse bucket.
    s.maintain(45 * SEC);
    let b = s.buckets(&route("/a"), 0, i64::MAX);
    assert_eq!(b.iter().map(|b| b.requests).sum::<u64>(), 30);
    assert_eq!(b.iter().filter(|b| b.start == 20 * SEC).count(), 1);
}

#[test]
fn a_window_inside_a_long_history_holds_exactly_its_buckets() {
    let s = MemoryStore::new(settings(), None);
    for t in (0..60).map(|i| i * SEC) {
        s.record(&[rec("/a", None, t, 1, false)]);
    }
    // Coarse buckets 0-30 s, fine ones 30-59 s, one in progress at 59 s.
    s.maintain(50 * SEC);
    let starts = |from, to| -> Vec<(UnixMs, i64)> {
        s.buckets(&route("/a"), from, to)
            .iter()
            .map(|b| (b.start, b.interval_ms))
            .collect()
    };
    assert_eq!(
        starts(10 * SEC, 33 * SEC),
        [
            (10 * SEC, 10 * SEC),
            (20 * SEC, 10 * SEC),
            (30 * SEC, SEC),
            (31 * SEC, SEC),
            (32 * SEC, SEC)
        ]
    );
    // Starts inside a coarse bucket: it began before the window, so it is not in it.
    assert_eq!(starts(15 * SEC, 21 * SEC), [(20 * SEC, 10 * SEC)]);
    assert_eq!(
        starts(57 * SEC, i64::MAX),
        [(57 * SEC, SEC), (58 * SEC, SEC), (59 * SEC, SEC)]
    );
    assert!(starts(60 * SEC, i64::MAX).is_empty());
    assert_eq!(starts(i64::MIN, SEC), [(0, 10 * SEC)]);
}

#[test]
fn a_request_filed_after_its_bucket_closed_still_lands_in_order() {
    let s = MemoryStore::new(settings(), None);
    s.record(&[rec("/a", None, 5 * SEC, 1, false)]);
    s.maintain(6 * SEC + 1);
    // Filed late: its interval's bucket is gone, and a later one is already closed.
    s.record(&[rec("/a", None, 3 * SEC, 1, false)]);
    s.maintain(7 * SEC);
    let starts: Vec<_> = s
        .buckets(&route("/a"), 0, i64::MAX)
        .iter()
        .map(|b| b.start)
        .collect();
    assert_eq!(starts, [3 * SEC, 5 * SEC]);
    assert_eq!(s.buckets(&route("/a"), 3 * SEC, 4 * SEC).len(), 1);
}

/// Passes look for roll-ups only when the roll-up boundary moved or a bucket older than it
/// was closed since; the late bucket still ends up rolled up.
#[test]
fn a_bucket_closed_after_its_span_was_rolled_up_joins_it() {
    let s = MemoryStore::new(settings(), None);
    let shape = || -> Vec<_> {
        s.buckets(&route("/a"), 0, i64::MAX)
            .iter()
            .map(|b| (b.start, b.interval_ms, b.requests))
            .collect()
    };
    for t in (0..4).map(|i| i * SEC) {
        s.record(&[rec("/a", None, t, 1000, false)]);
    }
    s.maintain(35 * SEC); // the boundary is 10 s: the first four buckets roll up
    assert_eq!(shape(), [(0, 10 * SEC, 4)]);
    s.record(&[rec("/a", None, 5 * SEC, 1000, false)]); // late: its span is rolled up
    s.maintain(36 * SEC); // closes it (same boundary)
    s.maintain(37 * SEC); // still the same boundary: rolls it up as it closed late
    assert_eq!(shape(), [(0, 10 * SEC, 5)]);
    // Nothing left to do: passes at the same boundary change nothing.
    s.maintain(38 * SEC);
    assert_eq!(shape(), [(0, 10 * SEC, 5)]);
}

/// Passes after the first look only past the last roll-up boundary. Over a long run with
/// requests filed late (into buckets of their own, closed after their span's boundary has
/// passed), every request still ends up in its span: one rolled-up bucket per span before
/// the boundary, fine buckets after it, in start order.
#[test]
fn roll_ups_over_a_long_run_with_late_buckets_keep_every_request_in_its_span() {
    let s = MemoryStore::new(
        StoreSettings {
            retention_ms: i64::MAX / 4,
            ..settings()
        },
        None,
    );
    let mut rng = fastrand::Rng::with_seed(5);
    let mut filed: Vec<UnixMs> = Vec::new();
    let mut lates = 0;
    for second in 0..400 {
        let at = second * SEC;
        s.record(&[rec("/a", None, at, 1, false)]);
        filed.push(at);
        let now = at + SEC;
        // The second pass at the same boundary rolls up what the first found closed late.
        s.maintain(now);
        s.maintain(now);
        let boundary = align(now - 20 * SEC, 10 * SEC);
        let mut expected: Vec<(UnixMs, i64, u64)> = Vec::new();
        for &t in &filed {
            let (start, width) = if t < boundary {
                (align(t, 10 * SEC), 10 * SEC)
            } else {
                (align(t, SEC), SEC)
            };
            match expected.iter_mut().find(|e| e.0 == start && e.1 == width) {
                Some(e) => e.2 += 1,
                None => expected.push((start, width, 1)),
            }
        }
        expected.sort();
        let buckets = s.buckets(&route("/a"), i64::MIN, i64::MAX);
        assert!(
            buckets.windows(2).all(|w| w[0].start < w[1].start),
            "one bucket per start at {now}"
        );
        assert_eq!(
            buckets
                .iter()
                .filter(|b| b.start < boundary && b.interval_ms == SEC)
                .count(),
            0,
            "a fine bucket before the boundary at {now}"
        );
        let got: Vec<(UnixMs, i64, u64)> = buckets
            .iter()
            .map(|b| (b.start, b.interval_ms, b.requests))
            .collect();
        assert_eq!(got, expected, "at {now}");
        // Now and then a request filed late, alone: it reopens its interval's bucket, or
        // one rolled up already opens a bucket of its own, closed by the next request and
        // rolled up after.
        if second > 40 && rng.u8(..) < 60 {
            let late = at - rng.i64(1..40) * SEC;
            s.record(&[rec("/a", None, late, 1, false)]);
            filed.push(late);
            lates += 1;
        }
    }
    assert!(lates > 50, "{lates}");
}

#[test]
fn loaded_fine_buckets_due_for_a_roll_up_are_rolled_up_on_the_first_pass() {
    let s = MemoryStore::new(settings(), None);
    let fine = |start| Bucket {
        start,
        interval_ms: SEC,
        requests: 1,
        ..Default::default()
    };
    s.load(
        vec![(route("/a"), fine(0)), (route("/a"), fine(SEC))],
        35 * SEC,
    );
    s.maintain(35 * SEC);
    let b = s.buckets(&route("/a"), 0, i64::MAX);
    assert_eq!(
        b.iter()
            .map(|b| (b.start, b.interval_ms, b.requests))
            .collect::<Vec<_>>(),
        [(0, 10 * SEC, 2)]
    );
}

#[test]
fn filing_without_waiting_files_nothing_while_another_thread_holds_the_store() {
    let s = MemoryStore::new(settings(), None);
    let reading = s.read();
    assert!(!s.try_record(&[rec("/a", None, 0, 1, false)]));
    drop(reading);
    assert!(s.buckets(&route("/a"), 0, i64::MAX).is_empty());
    assert!(s.try_record(&[rec("/a", None, 0, 1, false)]));
    assert_eq!(s.buckets(&route("/a"), 0, i64::MAX)[0].requests, 1);
}

#[test]
fn a_key_and_its_borrowed_form_hash_alike() {
    use std::hash::BuildHasher;
    let hasher = foldhash::fast::RandomState::default();
    let (r, b): (Arc<str>, Arc<str>) = ("/a".into(), "http://b:1".into());
    for key in [
        SeriesKey::Route(r.clone()),
        SeriesKey::Backend(b.clone()),
        SeriesKey::Pair(r.clone(), b.clone()),
    ] {
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(key.as_ref()));
        assert!(hashbrown::Equivalent::equivalent(&key.as_ref(), &key));
        assert_eq!(key.as_ref().to_owned(), key);
    }
    // The same name as a route and as a backend are two series.
    let (route, backend) = (SeriesKey::Route(r.clone()), SeriesKey::Backend(r.clone()));
    assert!(!hashbrown::Equivalent::equivalent(
        &route.as_ref(),
        &backend
    ));
    // Names match by content, not only when they share an allocation.
    let (copy, other): (Arc<str>, Arc<str>) = ("/a".into(), "/b".into());
    let equivalent = |k: KeyRef<'_>, key: &SeriesKey| hashbrown::Equivalent::equivalent(&k, key);
    assert!(equivalent(KeyRef::Route(&copy), &route));
    assert!(!equivalent(KeyRef::Route(&other), &route));
    let pair = SeriesKey::Pair(r.clone(), b.clone());
    assert!(equivalent(KeyRef::Pair(&copy, &b), &pair));
    assert!(!equivalent(KeyRef::Pair(&r, &other), &pair));
}

#[test]
fn loading_resumes_the_bucket_in_progress() {
    let s = MemoryStore::new(settings(), None);
    let saved = |start, requests| Bucket {
        start,
        interval_ms: SEC,
        requests,
        ..Default::default()
    };
    s.load(
        vec![
            (route("/a"), saved(3_000, 4)),
            (route("/a"), saved(1_000, 2)),
        ],
        3_500,
    );
    s.record(&[rec("/a", None, 3_600, 1, false)]);
    let b = s.buckets(&route("/a"), 0, i64::MAX);
    let shape: Vec<_> = b.iter().map(|b| (b.start, b.requests)).collect();
    assert_eq!(shape, [(1_000, 2), (3_000, 5)]);
}

#[test]
fn pairs_count_requests_and_errors_but_keep_no_latency_histogram() {
    let s = MemoryStore::new(settings(), None);
    s.record(&[
        rec("/a", Some("b1"), 1_000, 100, false),
        rec("/a", Some("b1"), 1_500, 300, true),
    ]);
    s.maintain(3 * SEC);
    let pair = &s.buckets(&SeriesKey::Pair("/a".into(), "b1".into()), 0, 10 * SEC)[0];
    assert_eq!((pair.requests, pair.errors), (2, 1));
    assert_eq!(pair.latency_total_us, 400);
    assert_eq!(pair.latency.count(), 0);
    assert_eq!(pair.latency_quantile_ms(0.99), None);
    for key in [route("/a"), SeriesKey::Backend("b1".into())] {
        let b = &s.buckets(&key, 0, 10 * SEC)[0];
        assert_eq!(b.latency.count(), 2, "{key:?} keeps latencies");
    }
}

/// A batch is filed in groups of `READ_AHEAD`, each read before it is written: every
/// record lands once, across group boundaries, whether its series exists already, is
/// created in the same group, or closes a bucket there.
#[test]
fn a_large_batch_files_every_record_once_across_read_ahead_groups() {
    let s = MemoryStore::new(settings(), None);
    let n = READ_AHEAD * 5 + 3;
    // Seven routes, so a group holds repeats and routes seen in earlier groups.
    let batch = |at: UnixMs| -> Vec<Record> {
        (0..n)
            .map(|i| {
                rec(
                    &format!("/r{}", i % 7),
                    Some("b"),
                    at,
                    100 + i as u64,
                    false,
                )
            })
            .collect()
    };
    s.record(&batch(1_000));
    s.record(&batch(1_000));
    // The next interval: the first record of each route closes its bucket mid-batch.
    s.record(&batch(2_000));
    let mut filed = 0;
    for r in 0..7 {
        let k = (0..n).filter(|i| i % 7 == r).count() as u64;
        let buckets = s.buckets(&route(&format!("/r{r}")), 0, 10 * SEC);
        let got: Vec<(i64, u64)> = buckets.iter().map(|b| (b.start, b.requests)).collect();
        assert_eq!(got, [(1_000, 2 * k), (2_000, k)], "/r{r}");
        for b in &buckets {
            assert_eq!(b.latency.count(), b.requests, "/r{r}");
            filed += b.requests;
        }
    }
    assert_eq!(filed, 3 * n as u64);
    let backend = s.buckets(&SeriesKey::Backend("b".into()), 0, 10 * SEC);
    let got: Vec<u64> = backend.iter().map(|b| b.requests).collect();
    assert_eq!(got, [2 * n as u64, n as u64]);
}
