//! A bounded traffic generator for the adaptive tests: each second it sends a random number
//! of requests (in a range, so the baseline has some natural spread), spaced evenly, without
//! waiting for earlier answers. It stops by itself after the given number of seconds.

use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

/// What came back for one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `X-Backend` of the echo backend that served it.
    pub backend: Option<String>,
    /// `X-RateLimit-Limit`, if any.
    pub limit: Option<f64>,
}

/// Sends `per_second` requests a second to `url` for `seconds` seconds.
pub async fn load(
    http: &reqwest::Client,
    url: &str,
    per_second: RangeInclusive<u32>,
    seconds: u32,
) -> Vec<Answer> {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for s in 0..seconds {
        let n = fastrand::u32(per_second.clone()).max(1);
        for i in 0..n {
            let at = start + Duration::from_secs(u64::from(s)) + Duration::from_secs(1) * i / n;
            let (http, url) = (http.clone(), url.to_owned());
            tasks.spawn(async move {
                sleep_until(at).await;
                let res = http.get(&url).send().await.ok()?;
                let header = |name: &str| {
                    res.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let answer = Answer {
                    status: res.status().as_u16(),
                    backend: header("x-backend"),
                    limit: header("x-ratelimit-limit").and_then(|v| v.parse().ok()),
                };
                let _ = res.bytes().await;
                Some(answer)
            });
        }
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(a)) = done {
            answers.push(a);
        }
    }
    answers
}

/// How many answers have `status`.
pub fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}
