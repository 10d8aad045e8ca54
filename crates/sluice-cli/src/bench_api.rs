//! `sluice bench api`: the REST API and portal over a big box, as an
//! operator meets them. It fills a box in a fresh directory (messages held
//! for a stopped send port, each with its own promoted `order.id`;
//! suspended entries at four ports with five errors; one big message),
//! starts a real node on it (`sluice serve`, the API on a free port, `[box]
//! index = ["order.id"]`), and times over HTTP, one request at a time:
//! the suspended list filtered by port and error, the suspended groups, a
//! message search by `order.id` (indexed) and by an unindexed property, the
//! dashboard page. The big body is downloaded first, and the node's peak
//! RSS read after it (VmHWM: the figure `/usr/bin/time -v` gives). When
//! chromedriver is there, the dashboard is rendered in headless Chromium
//! and its navigation timing read.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice_model::{Context, Filter, MessageId};
use sluice_msgbox::{Clock as _, Failure, MessageBox, NewMessage, Part, Subscription, UnitKind};
use tokio::task::JoinSet;

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Messages held in the box for a stopped send port, each with its own
    /// promoted `order.id`.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Suspended entries (four send ports, five errors).
    #[arg(long, default_value_t = 100_000)]
    suspended: u64,
    /// Size of the big message downloaded through the API, in MiB (0: none).
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    /// Requests timed per figure (one at a time).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Where to make the temporary directory (default: the system's).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// chromedriver for the dashboard in a real browser (skipped, and said
    /// so, when it cannot be run).
    #[arg(long, default_value = "chromedriver")]
    chromedriver: PathBuf,
}

const USER: &str = "bench";
const PASSWORD: &str = "bench-password-not-secret";
const ERRORS: [&str; 5] = [
    "timeout after 30s waiting for the partner",
    "connection refused by 10.0.0.7:443",
    "HTTP 503 Service Unavailable from the partner",
    "disk full writing to /mnt/out",
    "certificate expired for partner.example",
];
const PORTS: usize = 4;

pub async fn api(args: ApiArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.requests >= 1, "--requests must be at least 1");
    let tmp = match &args.dir {
        Some(d) => tempfile::Builder::new().prefix("sluice-bench-api-").tempdir_in(d),
        None => tempfile::Builder::new().prefix("sluice-bench-api-").tempdir(),
    }
    .context("creating a temporary directory")?;
    let port = free_port()?;
    let config = write_config(tmp.path(), port)?;
    let loaded = sluice_host::Config::load(&config).context("the bench's configuration")?;
    eprintln!(
        "bench api: filling a box with {} held messages, {} suspended entries and a {} MiB message ({})",
        args.messages,
        args.suspended,
        args.big_mib,
        tmp.path().display()
    );
    let started = Instant::now();
    let (big, token) = fill(&loaded, &args).await?;
    eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());

    let exe = std::env::current_exe().context("finding the sluice binary")?;
    let log = std::fs::File::create(tmp.path().join("node.log")).context("the node's log file")?;
    let mut node = tokio::process::Command::new(exe)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the node")?;
    let pid = node.id().context("the node's pid")?;
    let base = format!("127.0.0.1:{port}");
    let opened = Instant::now();
    wait_ready(&base).await?;
    eprintln!("node ready in {:.1} s", opened.elapsed().as_secs_f64());
    let client = Client {
        addr: base.clone(),
        token,
    };
    let mut report = Vec::new();
    // The download first, on the node as it started: its peak RSS then is
    // the node's start plus the download, what `/usr/bin/time -v` would
    // report for a node that did only that.
    let (at_ready, peak_at_ready) = (rss_kib(pid), peak_kib(pid));
    if let Some(id) = big {
        let t = Instant::now();
        let got = client.download(&format!("/api/v1/messages/{id}/parts/0")).await?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            got == args.big_mib << 20,
            "the download gave {got} bytes, not {}",
            args.big_mib << 20
        );
        let line = format!(
            "download of a {} MiB body: {:.0} MiB/s; the node's peak RSS (VmHWM) from its start to the download's end: {:.1} MiB (when it was ready: RSS {:.1} MiB, peak so far {:.1} MiB)",
            args.big_mib,
            args.big_mib as f64 / secs,
            peak_kib(pid) as f64 / 1024.0,
            at_ready as f64 / 1024.0,
            peak_at_ready as f64 / 1024.0
        );
        eprintln!("{line}");
        report.push(line);
    }
    let mut time = async |name: &str, paths: &mut dyn FnMut(usize) -> String| -> anyhow::Result<()> {
        let mut took = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for i in 0..args.requests + 3 {
            let t = Instant::now();
            let (status, body) = client.get(&paths(i)).await?;
            anyhow::ensure!(
                status.is_success(),
                "{name}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
            // The first three warm the caches.
            if i >= 3 {
                took.push(t.elapsed());
                bytes = body.len();
            }
        }
        took.sort();
        let pct = |p: f64| took[((took.len() as f64 * p).ceil() as usize).clamp(1, took.len()) - 1];
        let line = format!(
            "{name}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} requests, {bytes} bytes each)",
            ms(pct(0.50)),
            ms(pct(0.95)),
            ms(pct(1.0)),
            took.len()
        );
        eprintln!("{line}");
        report.push(line);
        Ok(())
    };
    time("suspended list, port and error, first page of 50", &mut |i| {
        format!(
            "/api/v1/suspended?port=p{}&error={}&limit=50",
            i % PORTS,
            enc(ERRORS[i % ERRORS.len()])
        )
    })
    .await?;
    time("suspended groups by port and error", &mut |_| {
        "/api/v1/suspended/groups".into()
    })
    .await?;
    let n = args.messages.max(1);
    time("message search, order.id (indexed), first page", &mut |i| {
        let id = (i as u64).wrapping_mul(7_919_993) % n;
        format!(
            "/api/v1/messages?where={}&limit=50",
            enc(&format!("order.id == \"O{id:08}\""))
        )
    })
    .await?;
    // The search finds what it is asked for: one message.
    let (_, one) = client
        .get(&format!("/api/v1/messages?where={}", enc("order.id == \"O00000007\"")))
        .await?;
    let one: serde_json::Value = serde_json::from_slice(&one)?;
    anyhow::ensure!(
        one["items"].as_array().map(Vec::len) == Some(1) || args.messages <= 7,
        "the search for order O00000007 found {one}"
    );
    time("message search, an unindexed property, first page of 50", &mut |_| {
        format!("/api/v1/messages?where={}&limit=50", enc("bench.kind == \"held\""))
    })
    .await?;
    time("message search, an unindexed rare value (one scan budget)", &mut |_| {
        format!("/api/v1/messages?where={}&limit=50", enc("bench.n == -1"))
    })
    .await?;
    let cookie = client.log_in().await?;
    let mut dashboard_bytes = 0;
    let mut took = Vec::new();
    for i in 0..args.requests.min(20) + 1 {
        let t = Instant::now();
        let (status, body) = client.page("/", &cookie).await?;
        anyhow::ensure!(status.is_success(), "dashboard: {status}");
        if i > 0 {
            took.push(t.elapsed());
        }
        dashboard_bytes = body.len();
    }
    took.sort();
    let statics: usize = [
        client.page("/static/portal.css", &cookie).await?.1.len(),
        client.page("/static/portal.js", &cookie).await?.1.len(),
    ]
    .iter()
    .sum();
    let line = format!(
        "dashboard page over HTTP: {} bytes of HTML + {statics} bytes of style and script, median {:.1} ms to answer",
        dashboard_bytes,
        ms(took[took.len() / 2])
    );
    eprintln!("{line}");
    report.push(line);
    match browser(&args.chromedriver, &base).await {
        Ok(line) => {
            eprintln!("{line}");
            report.push(line);
        }
        Err(e) => {
            let line = format!("dashboard in Chromium: not measured: {e:#}");
            eprintln!("{line}");
            report.push(line);
        }
    }
    report.push(format!(
        "the node's peak RSS (VmHWM) over the whole run: {:.1} MiB",
        peak_kib(pid) as f64 / 1024.0
    ));
    // SIGTERM: the node stops cleanly.
    // SAFETY: kill(2) on the child's pid, which is ours until it is reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(30), node.wait()).await;
    println!(
        "bench api: {} held messages, {} suspended entries",
        args.messages, args.suspended
    );
    for line in report {
        println!("  {line}");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn write_config(dir: &Path, port: u16) -> anyhow::Result<PathBuf> {
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "data"

[box]
index = ["order.id"]

[api]
address = "127.0.0.1:{port}"

# The held messages wait for this port, stopped by an operator.
[send_ports.held]
filter = 'bench.kind == "held"'
adapter = {{ type = "file", path = "out", create_folder = true }}
"#
        ),
    )
    .context("writing the bench's configuration")?;
    Ok(path)
}

/// Fill the box; the big message's id and an operator's API token.
async fn fill(config: &sluice_host::Config, args: &ApiArgs) -> anyhow::Result<(Option<MessageId>, String)> {
    let opts = sluice_store::StoreOptions {
        sync: false,
        tracking: false,
        ..config.box_options("bench")
    };
    let b = sluice_store::open(&config.store_url(), sluice_store::Role::Node, &opts)?;
    b.subscribe(Subscription {
        subscriber: "held".into(),
        filter: Filter::parse(r#"bench.kind == "held""#)?,
    })
    .await?;
    for p in 0..PORTS {
        b.subscribe(Subscription {
            subscriber: format!("p{p}"),
            filter: Filter::parse(&format!(r#"bench.kind == "fail" and bench.port == "p{p}""#))?,
        })
        .await?;
    }
    let message = |kind: &str, n: u64, port: Option<usize>| {
        let mut context = Context::new();
        context.promote("bench", "kind", kind);
        context.promote("bench", "n", n as i64);
        context.promote("order", "id", format!("O{n:08}"));
        if let Some(p) = port {
            context.promote("bench", "port", format!("p{p}"));
        }
        NewMessage {
            id: MessageId::new(),
            context,
            parts: vec![Part::inline("body", vec![b'x'; 256])],
        }
    };
    publish_all(&b, (0..args.messages).map(|n| message("held", n, None))).await?;
    publish_all(
        &b,
        (0..args.suspended).map(|n| message("fail", args.messages + n, Some(n as usize % PORTS))),
    )
    .await?;
    let mut n = 0;
    for p in 0..PORTS {
        loop {
            let leased = b.lease(&format!("p{p}"), 1000, 600_000).await?;
            if leased.is_empty() {
                break;
            }
            let mut suspends = JoinSet::new();
            for l in leased {
                let b = b.clone();
                let error = ERRORS[n % ERRORS.len()];
                n += 1;
                suspends.spawn(async move {
                    b.suspend(l.token, &Failure::new(sluice_msgbox::stage::TRANSMIT, "bench", error))
                        .await
                        .map(|_| ())
                });
            }
            while let Some(done) = suspends.join_next().await {
                done??;
            }
        }
    }
    let big = if args.big_mib > 0 {
        let mut body = tokio::io::AsyncReadExt::take(tokio::io::repeat(b'b'), args.big_mib << 20);
        let part = sluice_content::write_part(&*b.content(), "body", &mut body, Default::default()).await?;
        let mut m = message("held", u64::MAX >> 1, None);
        m.parts = vec![part];
        let id = m.id;
        b.publish(m).await?;
        Some(id)
    } else {
        None
    };
    b.set_unit_stopped(UnitKind::SendPort, "held", true).await?;
    let now = sluice_msgbox::SystemClock.now_ms();
    sluice_ops::access::add_user(&*b, USER, sluice_msgbox::Role::Operator, PASSWORD, now).await?;
    let token = sluice_ops::access::create_token(&*b, USER, now).await?.token;
    b.close().await?;
    Ok((big, token))
}

async fn publish_all(
    b: &std::sync::Arc<dyn MessageBox>,
    messages: impl Iterator<Item = NewMessage>,
) -> anyhow::Result<()> {
    let mut publishes = JoinSet::new();
    for m in messages {
        if publishes.len() >= 2048
            && let Some(done) = publishes.join_next().await
        {
            done??;
        }
        let b = b.clone();
        publishes.spawn(async move { b.publish(m).await.map(|_| ()) });
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    Ok(())
}

async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok((status, _)) = request(addr, hyper::Request::get("/readyz"), Full::default()).await
            && status.is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the node did not become ready in 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One request on a new connection; the answer, its body still to read.
async fn send(
    addr: &str,
    builder: hyper::http::request::Builder,
    body: Full<Bytes>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(builder.header("host", addr).body(body)?).await?)
}

/// One request on a new connection; the answer's status and whole body.
async fn request(
    addr: &str,
    builder: hyper::http::request::Builder,
    body: Full<Bytes>,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let response = send(addr, builder, body).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

struct Client {
    addr: String,
    token: String,
}

impl Client {
    async fn get(&self, path: &str) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let req = hyper::Request::get(path).header("authorization", format!("Bearer {}", self.token));
        request(&self.addr, req, Full::default()).await
    }

    async fn page(&self, path: &str, cookie: &str) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        request(
            &self.addr,
            hyper::Request::get(path).header("cookie", cookie),
            Full::default(),
        )
        .await
    }

    /// A browser session's cookie (`name=value`).
    async fn log_in(&self) -> anyhow::Result<String> {
        let req = hyper::Request::post("/login")
            .header("origin", format!("http://{}", self.addr))
            .header("content-type", "application/x-www-form-urlencoded");
        let form = format!("username={USER}&password={}", enc(PASSWORD));
        let response = send(&self.addr, req, Full::new(Bytes::from(form))).await?;
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .with_context(|| format!("logging in: {} without a session cookie", response.status()))?;
        Ok(cookie)
    }

    /// Stream a body to nowhere; its length.
    async fn download(&self, path: &str) -> anyhow::Result<u64> {
        let req = hyper::Request::get(path).header("authorization", format!("Bearer {}", self.token));
        let response = send(&self.addr, req, Full::default()).await?;
        anyhow::ensure!(response.status().is_success(), "download: {}", response.status());
        let mut body = response.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len() as u64;
            }
        }
        Ok(n)
    }
}

/// The process's peak RSS (VmHWM), KiB.
fn peak_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// The process's RSS now, KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The dashboard in headless Chromium through chromedriver: log in, open
/// `/`, read the navigation timing and bytes transferred.
async fn browser(chromedriver: &Path, base: &str) -> anyhow::Result<String> {
    let port = free_port()?;
    let mut driver = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", chromedriver.display()))?;
    let wd = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(&wd, hyper::Request::get("/status"), Full::default())
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "chromedriver did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = async |method: &str, path: &str, body: serde_json::Value| -> anyhow::Result<serde_json::Value> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        let (status, answer) = request(&wd, req, Full::new(Bytes::from(body.to_string()))).await?;
        let json: serde_json::Value = serde_json::from_slice(&answer)?;
        anyhow::ensure!(status.is_success(), "WebDriver {path}: {status}: {json}");
        Ok(json["value"].clone())
    };
    let session = call(
        "POST",
        "/session",
        serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }}}}),
    )
    .await?;
    let sid = session["sessionId"].as_str().context("no session id")?.to_string();
    let s = |p: &str| format!("/session/{sid}{p}");
    let run = async |script: &str| {
        call(
            "POST",
            &s("/execute/sync"),
            serde_json::json!({"script": script, "args": []}),
        )
        .await
    };
    call(
        "POST",
        &s("/url"),
        serde_json::json!({"url": format!("http://{base}/login")}),
    )
    .await?;
    run(&format!(
        "document.querySelector('input[name=username]').value = '{USER}';
         document.querySelector('input[name=password]').value = '{PASSWORD}';
         document.querySelector('form').submit();"
    ))
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut loads: Vec<f64> = Vec::new();
    let mut transferred = 0.0;
    for _ in 0..5 {
        call(
            "POST",
            &s("/url"),
            serde_json::json!({"url": format!("http://{base}/")}),
        )
        .await?;
        let t = run("const n = performance.getEntriesByType('navigation')[0];
             const r = performance.getEntriesByType('resource');
             return [n.loadEventEnd - n.startTime, n.transferSize + r.reduce((a, e) => a + e.transferSize, 0)];")
        .await?;
        loads.push(t[0].as_f64().unwrap_or(f64::NAN));
        transferred = t[1].as_f64().unwrap_or(f64::NAN);
    }
    let _ = call("DELETE", &s(""), serde_json::Value::Null).await;
    let _ = driver.kill().await;
    let first = loads[0];
    loads.sort_by(f64::total_cmp);
    Ok(format!(
        "dashboard in headless Chromium: load event {:.0} ms (median of 5; the first {first:.0} ms), {:.1} KiB transferred",
        loads[loads.len() / 2],
        transferred / 1024.0
    ))
}
