//! The load driver's HTTP side: one keep-alive client, timed requests, and a closed loop of
//! concurrent requests whose latencies and rate are measured the same way whatever serves them
//! (the gateway or the static reference server).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{self, StreamExt};

#[derive(Clone)]
pub struct Http {
    pub base: String,
    client: reqwest::Client,
}

/// A response's status and body, and how long it took.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub took: Duration,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(256)
                // Below actix-web's 5 s keep-alive, so a POST never goes out on a connection
                // the server is closing.
                .pool_idle_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Reply> {
        let started = Instant::now();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.with_context(|| path.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        Ok(Reply {
            status,
            body,
            took: started.elapsed(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(reqwest::Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: String) -> anyhow::Result<Reply> {
        self.request(reqwest::Method::POST, path, Some(body), None)
            .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(reqwest::Method::DELETE, path, None, None)
            .await
    }

    /// POSTs every body to `path`, `concurrency` at a time; each must answer 2xx. A POST refused
    /// because there was no leader (502, 503) is sent again until it is accepted (409 on a retry:
    /// the first attempt did get through), for up to two minutes, as a client of a failing-over
    /// Marathon would. The latencies are of the accepted attempts; also how many attempts were
    /// refused.
    pub async fn post_all_retrying(
        &self,
        path: &str,
        bodies: Vec<String>,
        concurrency: usize,
    ) -> anyhow::Result<(Vec<f64>, usize)> {
        let refused = std::sync::atomic::AtomicUsize::new(0);
        let refused_ref = &refused;
        let results: Vec<anyhow::Result<f64>> = stream::iter(bodies)
            .map(|b| async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut retried = false;
                loop {
                    let r = self.post(path, b.clone()).await;
                    match r {
                        Ok(r) if (200..300).contains(&r.status) || (retried && r.status == 409) => {
                            return Ok(r.took.as_secs_f64() * 1000.0)
                        }
                        Ok(r)
                            if (r.status == 502 || r.status == 503)
                                && Instant::now() < deadline =>
                        {
                            refused_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(r) => anyhow::bail!(
                            "POST {path} answered {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        Err(_) if Instant::now() < deadline => {
                            refused_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let latencies = results.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
        Ok((latencies, refused.into_inner()))
    }
}

/// What a closed loop measured.
#[derive(Debug, Clone)]
pub struct LoopResult {
    pub errors: usize,
    pub per_second: f64,
    pub latencies_ms: Vec<f64>,
}

/// `concurrency` workers each sending `GET path` back to back for `duration` (after `warmup`).
pub async fn closed_loop(
    http: &Http,
    paths: &[String],
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> LoopResult {
    let run = |window: Duration| async move {
        let started = Instant::now();
        let workers = (0..concurrency).map(|w| async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut n = w;
            while started.elapsed() < window {
                let path = &paths[n % paths.len()];
                n += concurrency;
                match http.get(path).await {
                    Ok(r) if r.status == 200 => lat.push(r.took.as_secs_f64() * 1000.0),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        });
        let done = futures::future::join_all(workers).await;
        let elapsed = started.elapsed().as_secs_f64();
        let mut latencies_ms = Vec::new();
        let mut errors = 0;
        for (l, e) in done {
            latencies_ms.extend(l);
            errors += e;
        }
        LoopResult {
            errors,
            per_second: latencies_ms.len() as f64 / elapsed,
            latencies_ms,
        }
    };
    if !warmup.is_zero() {
        run(warmup).await;
    }
    run(duration).await
}

/// The `q`-quantile (0..=1) by the nearest-rank method; 0 for no samples.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
