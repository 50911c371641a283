//! `todo-load`: the load generators of scripts/bench that wrk cannot be (NATS request/
//! reply, JetStream commands, the live change feed). Every subcommand prints one
//! machine-readable line on stdout, `BENCH key=value …`, which scripts/bench parses;
//! progress and problems go to stderr. The exit status is non-zero only when the tool
//! itself cannot do its job (bad arguments, nothing to connect to, a stream missing);
//! what the service gets wrong (error replies, lost events) is counted in the line.
//!
//! ```sh
//! todo-load nats-rr --url nats://127.0.0.1:4222 --prefix todo --op create --seconds 10
//! todo-load nats-rr --url … --prefix todo --op get --ids-file ids.txt --seconds 10
//! todo-load js-commands --url … --prefix todo --count 20000 --database-url postgres://…/db
//! todo-load feed --http http://127.0.0.1:8080 --streams 1000 --changes 2000 --rate 200
//! todo-load nats-check --url …           # JetStream reachable?
//! todo-load nats-cleanup --url … --prefix todo   # delete the prefix's three streams
//! todo-load --threads 1 otlp-sink --addr 127.0.0.1:4318 --report-file sink.txt   # until SIGTERM
//! ```
//!
//! CPU figures (`load_cpu_us*`) are this process's own user + system time
//! (`getrusage(RUSAGE_SELF)`, the same counters as `/proc/self/stat` utime + stime, in µs)
//! over the measured window, divided by the requests: the load tool's share of the cost
//! model. (`otlp-sink` is the exception: a server, not a load generator; it counts the
//! spans the service exports and prints its line when it is stopped.)

mod feed;
mod js;
mod nats_rr;
mod otlp_sink;

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Load generators for scripts/bench (NATS request/reply, JetStream commands, change \
             feed) and an OTLP trace sink"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Tokio worker threads of the load tool (wrk runs with 2 threads).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop NATS request/reply on `<prefix>.create` or `<prefix>.get`.
    NatsRr(nats_rr::Args),
    /// N durable commands on JetStream `<prefix>.cmd.create`, then wait until PostgreSQL has
    /// them all.
    JsCommands(js::Args),
    /// Many live change-feed streams (one owner each) and changes at a fixed rate: the
    /// latency from a POST's 201 to the event on its owner's stream.
    Feed(feed::Args),
    /// Connect to NATS and ask JetStream for the account's limits (exit 1 when it cannot).
    NatsCheck(js::CheckArgs),
    /// Delete `<PREFIX>_COMMANDS`, `<PREFIX>_EVENTS` and `<PREFIX>_DLQ`.
    NatsCleanup(js::CleanupArgs),
    /// An OTLP/HTTP trace receiver: answers `POST /v1/traces` with 200, counts requests,
    /// bytes and spans; prints its line at SIGTERM.
    OtlpSink(otlp_sink::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("todo-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::NatsRr(a) => nats_rr::run(a).await,
            Command::JsCommands(a) => js::run(a).await,
            Command::Feed(a) => feed::run(a).await,
            Command::NatsCheck(a) => js::check(a).await,
            Command::NatsCleanup(a) => js::cleanup(a).await,
            Command::OtlpSink(a) => otlp_sink::run(a).await,
        }
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("todo-load: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `BENCH …` line.
#[derive(Default)]
pub struct Line(String);

impl Line {
    pub fn new() -> Self {
        Self("BENCH".to_owned())
    }

    pub fn kv(mut self, k: &str, v: impl std::fmt::Display) -> Self {
        let _ = write!(self.0, " {k}={v}");
        self
    }

    pub fn f(self, k: &str, v: f64) -> Self {
        self.kv(k, format!("{v:.1}"))
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// This process's user + system CPU so far, in µs.
pub fn cpu_us() -> u64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    if rc != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(u.ru_utime) + us(u.ru_stime)
}

/// `todo` → `TODO`, as the service names its streams (`TODO_COMMANDS`).
pub fn stream_stem(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A small, fast, per-task pseudo-random sequence (xorshift64*): no shared state.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t) | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    }
}

/// A latency histogram in µs (1 µs .. 1 h, 3 significant digits).
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}
