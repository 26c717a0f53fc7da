//! The command line, parsed by hand.

use std::ffi::OsString;

use drover_proto::codec::MESSAGE_OVERHEAD;
use drover_proto::DEFAULT_MAX_FRAME_LENGTH;

/// The help text, also shown after a usage error.
pub const USAGE: &str = "\
usage: drover-bench [--workers W] [--requests N] [--payload S] [--concurrency C] [--impl drover|raw|tokio] [--threads T] [--shared-memory B] [--answer echo|write|write-in-place|yield]
       drover-bench --memory
       drover-bench --queue pg|sqlite [--workers W] [--requests N] [--concurrency C]
       drover-bench --http drover|hyper|drover-listener [--workers W] [--port P]

  --workers W       worker processes (default 2)
  --requests N      requests to send (default 100000)
  --payload S       payload bytes per request (default 64)
  --concurrency C   requests in flight at most (default 256)
  --impl drover|raw|tokio
                    a drover pool, the raw socket ceiling, or the pool a user
                    would write with tokio alone (default drover)
  --threads T       the supervisor's tokio runtime threads; 1 is a
                    current-thread runtime (default 1)
  --shared-memory B bytes of each worker's two shared-memory arenas, 0 for
                    none: every payload through the socket (drover only;
                    default the library's, 64 MiB)
  --answer echo|write|write-in-place|yield
                    what a drover worker answers with: the request's own
                    bytes (echo, the default), or as many bytes it writes
                    itself, into a buffer of its own then sent (write) or
                    straight into Request::answer_buffer (write-in-place),
                    or the request's own bytes once the handler has
                    yielded to its runtime once, as a handler that awaits
                    something does (yield)
  --memory          measure an idle worker's RSS and the supervisor's
                    memory per queued request, instead of the echo run
  --queue pg|sqlite the job queue workload instead: N no-op jobs (default
                    20000) pushed one at a time, drained, pushed with
                    push_many, drained; then push-to-start latency; C is
                    the runner's max_running (default 256); pg reads
                    DROVER_BENCH_DATABASE_URL or DROVER_TEST_DATABASE_URL
  --http drover|hyper|drover-listener
                    serve HTTP on 127.0.0.1 for wrk to load, until stdin
                    ends or SIGTERM: drover passes each accepted connection
                    to one of W workers; hyper is the ceiling, W processes
                    accepting on one shared listener; drover-listener
                    passes the listener itself to each worker once, and
                    the workers accept on it; every request is answered
                    with 13 bytes; the JSON line gives the address
  --port P          the --http server's port (default 0: any free port)
  --help            this text

Prints one JSON line on stdout; everything else goes to stderr.";

/// The largest payload: what fits a drover frame of the default length.
pub const MAX_PAYLOAD: usize = DEFAULT_MAX_FRAME_LENGTH - MESSAGE_OVERHEAD;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The echo workload.
    Echo(EchoOptions),
    /// The memory measurements (`--memory`).
    Memory,
    /// The job queue workload (`--queue`).
    Queue(crate::queue::QueueOptions),
    /// The prefork HTTP server (`--http`).
    Http(crate::http::HttpOptions),
    /// Print the help text.
    Help,
}

/// Which side of the comparison runs the echo workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// A drover pool.
    Drover,
    /// Plain socket pairs and blocking threads: the ceiling.
    Raw,
    /// The pool a user would write by hand with tokio alone.
    Tokio,
}

impl Implementation {
    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Drover => "drover",
            Implementation::Raw => "raw",
            Implementation::Tokio => "tokio",
        }
    }
}

/// The echo workload's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoOptions {
    /// Worker processes, at least 1.
    pub workers: usize,
    /// Requests to send, at least 1.
    pub requests: usize,
    /// Payload bytes per request, at most [`MAX_PAYLOAD`].
    pub payload: usize,
    /// Requests in flight at most, at least 1.
    pub concurrency: usize,
    /// Drover or the raw ceiling.
    pub implementation: Implementation,
    /// Threads of the supervisor's runtime (drover only); 1 means a
    /// current-thread runtime.
    pub threads: usize,
    /// Bytes of each worker's shared-memory arenas (drover only); `None`
    /// for the library's default.
    pub shared_memory: Option<usize>,
    /// What a drover worker answers with.
    pub answer: Answer,
}

/// What a drover worker answers each request with (`--answer`); always an
/// answer as long as the request's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// The request's own bytes.
    #[default]
    Echo,
    /// Bytes the worker writes into a `Vec`, then sends.
    Write,
    /// Bytes the worker writes into `Request::answer_buffer`.
    WriteInPlace,
    /// The request's own bytes, after one yield to the worker's runtime:
    /// a handler that does not answer the moment it is called.
    Yield,
}

impl Answer {
    /// The flag's value, as a worker reads it from [`ANSWER_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Answer::Echo => "echo",
            Answer::Write => "write",
            Answer::WriteInPlace => "write-in-place",
            Answer::Yield => "yield",
        }
    }

    /// The answer a flag value names.
    pub fn from_name(name: &str) -> Option<Answer> {
        [
            Answer::Echo,
            Answer::Write,
            Answer::WriteInPlace,
            Answer::Yield,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// Tells a drover worker of this binary what to answer with.
pub const ANSWER_ENV: &str = "DROVER_BENCH_ANSWER";

impl Default for EchoOptions {
    fn default() -> Self {
        EchoOptions {
            workers: 2,
            requests: 100_000,
            payload: 64,
            concurrency: 256,
            implementation: Implementation::Drover,
            threads: 1,
            shared_memory: None,
            answer: Answer::Echo,
        }
    }
}

impl EchoOptions {
    /// Requests in flight on one worker at most: `ceil(C / W)`, at least 1.
    pub fn per_worker(&self) -> usize {
        self.concurrency.div_ceil(self.workers).max(1)
    }
}

/// A command line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A flag this program does not know.
    #[error("unknown flag {0:?}")]
    UnknownFlag(String),
    /// A flag that needs a value came last.
    #[error("{flag} needs a value")]
    MissingValue {
        /// The flag.
        flag: &'static str,
    },
    /// A flag's value is out of range or not a number.
    #[error("bad value {value:?} for {flag}: {reason}")]
    BadValue {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What a good value looks like.
        reason: String,
    },
    /// An argument that is not valid UTF-8.
    #[error("argument {0:?} is not valid UTF-8")]
    NotUnicode(OsString),
    /// `--http` given with a flag it does not use.
    #[error("--http takes only --workers and --port (got {flag})")]
    HttpWithEchoFlag {
        /// The first such flag.
        flag: &'static str,
    },
    /// `--port` given without `--http`.
    #[error("--port is a setting of --http")]
    PortWithoutHttp,
    /// `--memory` given with echo flags, which it does not use.
    #[error("--memory takes no other flag (got {flag}); it uses 1 worker and 1,000,000 queued requests of 64 bytes")]
    MemoryWithEchoFlag {
        /// The first echo flag given with `--memory`.
        flag: &'static str,
    },
}

/// The flags that take a value.
#[derive(Debug, Clone, Copy)]
enum Flag {
    Workers,
    Requests,
    Payload,
    Concurrency,
    Impl,
    Threads,
    SharedMemory,
    Answer,
    Queue,
    Http,
    Port,
}

impl Flag {
    fn from_name(name: &str) -> Option<Flag> {
        Some(match name {
            "--workers" => Flag::Workers,
            "--requests" => Flag::Requests,
            "--payload" => Flag::Payload,
            "--concurrency" => Flag::Concurrency,
            "--impl" => Flag::Impl,
            "--threads" => Flag::Threads,
            "--shared-memory" => Flag::SharedMemory,
            "--answer" => Flag::Answer,
            "--queue" => Flag::Queue,
            "--http" => Flag::Http,
            "--port" => Flag::Port,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Flag::Workers => "--workers",
            Flag::Requests => "--requests",
            Flag::Payload => "--payload",
            Flag::Concurrency => "--concurrency",
            Flag::Impl => "--impl",
            Flag::Threads => "--threads",
            Flag::SharedMemory => "--shared-memory",
            Flag::Answer => "--answer",
            Flag::Queue => "--queue",
            Flag::Http => "--http",
            Flag::Port => "--port",
        }
    }
}

/// Parses the arguments after the program name. Flags take their value as
/// the next argument or after `=` (`--workers 4`, `--workers=4`).
///
/// # Errors
///
/// A [`UsageError`] naming the first bad argument.
pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut options = EchoOptions::default();
    let mut memory = false;
    let mut first_echo_flag: Option<Flag> = None;
    let mut queue = None;
    let mut http = None;
    let mut port = None;
    let mut first_non_http_flag: Option<Flag> = None;
    let (mut jobs_given, mut running_given) = (false, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(UsageError::NotUnicode)?;
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        match name {
            "--help" | "-h" => return Ok(Command::Help),
            "--memory" if inline.is_none() => {
                memory = true;
                continue;
            }
            _ => {}
        }
        let Some(flag) = Flag::from_name(name) else {
            return Err(UsageError::UnknownFlag(arg));
        };
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or(UsageError::MissingValue { flag: flag.name() })?
                .into_string()
                .map_err(UsageError::NotUnicode)?,
        };
        if !matches!(flag, Flag::Http | Flag::Port) {
            first_echo_flag.get_or_insert(flag);
        }
        if !matches!(flag, Flag::Http | Flag::Port | Flag::Workers) {
            first_non_http_flag.get_or_insert(flag);
        }
        jobs_given |= matches!(flag, Flag::Requests);
        running_given |= matches!(flag, Flag::Concurrency);
        match flag {
            Flag::Queue => {
                use crate::queue::QueueStore;
                queue = Some(match value.as_str() {
                    "pg" => QueueStore::Postgres,
                    "sqlite" => QueueStore::Sqlite,
                    _ => {
                        return Err(UsageError::BadValue {
                            flag: flag.name(),
                            value,
                            reason: "expected pg or sqlite".to_owned(),
                        })
                    }
                })
            }
            Flag::Http => {
                use crate::http::HttpImpl;
                http = Some(match value.as_str() {
                    "drover" => HttpImpl::Drover,
                    "hyper" => HttpImpl::Hyper,
                    "drover-listener" => HttpImpl::DroverListener,
                    _ => {
                        return Err(UsageError::BadValue {
                            flag: flag.name(),
                            value,
                            reason: "expected drover, hyper or drover-listener".to_owned(),
                        })
                    }
                })
            }
            Flag::Port => port = Some(count(flag, &value, 0, u16::MAX as usize)? as u16),
            Flag::Workers => options.workers = count(flag, &value, 1, 1024)?,
            Flag::Requests => options.requests = count(flag, &value, 1, u32::MAX as usize)?,
            Flag::Payload => options.payload = count(flag, &value, 0, MAX_PAYLOAD)?,
            Flag::Concurrency => options.concurrency = count(flag, &value, 1, 1_000_000)?,
            Flag::Threads => options.threads = count(flag, &value, 1, 256)?,
            Flag::SharedMemory => {
                options.shared_memory = Some(count(flag, &value, 0, 1 << 40)?);
            }
            Flag::Answer => {
                options.answer = Answer::from_name(&value).ok_or_else(|| UsageError::BadValue {
                    flag: flag.name(),
                    value: value.clone(),
                    reason: "expected echo, write, write-in-place or yield".to_owned(),
                })?;
            }
            Flag::Impl => {
                options.implementation = match value.as_str() {
                    "drover" => Implementation::Drover,
                    "raw" => Implementation::Raw,
                    "tokio" => Implementation::Tokio,
                    _ => {
                        return Err(UsageError::BadValue {
                            flag: flag.name(),
                            value,
                            reason: "expected drover, raw or tokio".to_owned(),
                        })
                    }
                }
            }
        }
    }
    if let Some(implementation) = http {
        if let Some(flag) = first_non_http_flag {
            return Err(UsageError::HttpWithEchoFlag { flag: flag.name() });
        }
        if memory {
            return Err(UsageError::HttpWithEchoFlag { flag: "--memory" });
        }
        return Ok(Command::Http(crate::http::HttpOptions {
            implementation,
            workers: options.workers,
            port: port.unwrap_or(0),
        }));
    }
    if port.is_some() {
        return Err(UsageError::PortWithoutHttp);
    }
    if let (Some(store), false) = (queue, memory) {
        return Ok(Command::Queue(crate::queue::QueueOptions {
            store,
            workers: options.workers,
            jobs: if jobs_given { options.requests } else { 20_000 },
            max_running: if running_given {
                options.concurrency
            } else {
                256
            },
            samples: 200,
        }));
    }
    match (memory, first_echo_flag) {
        (true, Some(flag)) => Err(UsageError::MemoryWithEchoFlag { flag: flag.name() }),
        (true, None) => Ok(Command::Memory),
        (false, _) => Ok(Command::Echo(options)),
    }
}

/// A whole number in `min..=max`; `_` separators are allowed (`100_000`).
fn count(flag: Flag, value: &str, min: usize, max: usize) -> Result<usize, UsageError> {
    let bad = |reason: String| UsageError::BadValue {
        flag: flag.name(),
        value: value.to_owned(),
        reason,
    };
    let n: usize = value
        .replace('_', "")
        .parse()
        .map_err(|_| bad(format!("expected a whole number from {min} to {max}")))?;
    if !(min..=max).contains(&n) {
        return Err(bad(format!("must be from {min} to {max}")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_flags_gives_the_defaults() {
        assert_eq!(parse_strs(&[]), Ok(Command::Echo(EchoOptions::default())));
    }

    #[test]
    fn every_flag_in_both_forms() {
        let got = parse_strs(&[
            "--workers",
            "4",
            "--requests=2_000",
            "--payload",
            "1048576",
            "--concurrency=16",
            "--impl",
            "raw",
            "--threads=2",
            "--shared-memory",
            "0",
            "--answer=write-in-place",
        ]);
        assert_eq!(
            got,
            Ok(Command::Echo(EchoOptions {
                workers: 4,
                requests: 2000,
                payload: 1 << 20,
                concurrency: 16,
                implementation: Implementation::Raw,
                threads: 2,
                shared_memory: Some(0),
                answer: Answer::WriteInPlace,
            }))
        );
    }

    #[test]
    fn every_answer_is_named_by_its_flag_value() {
        for answer in [
            Answer::Echo,
            Answer::Write,
            Answer::WriteInPlace,
            Answer::Yield,
        ] {
            assert_eq!(Answer::from_name(answer.name()), Some(answer));
            let flag = format!("--answer={}", answer.name());
            let Ok(Command::Echo(options)) = parse_strs(&[flag.as_str()]) else {
                panic!("{flag} did not parse");
            };
            assert_eq!(options.answer, answer);
        }
    }

    #[test]
    fn bad_command_lines_name_the_problem() {
        assert_eq!(
            parse_strs(&["--wrokers", "2"]),
            Err(UsageError::UnknownFlag("--wrokers".into()))
        );
        assert_eq!(
            parse_strs(&["--payload"]),
            Err(UsageError::MissingValue { flag: "--payload" })
        );
        assert!(matches!(
            parse_strs(&["--answer", "copy"]),
            Err(UsageError::BadValue {
                flag: "--answer",
                ..
            })
        ));
        assert!(matches!(
            parse_strs(&["--workers", "0"]),
            Err(UsageError::BadValue {
                flag: "--workers",
                ..
            })
        ));
        assert!(matches!(
            parse_strs(&["--concurrency", "many"]),
            Err(UsageError::BadValue {
                flag: "--concurrency",
                ..
            })
        ));
        assert!(matches!(
            parse_strs(&["--impl", "fast"]),
            Err(UsageError::BadValue { flag: "--impl", .. })
        ));
        assert_eq!(
            parse_strs(&["--memory", "--impl", "raw"]),
            Err(UsageError::MemoryWithEchoFlag { flag: "--impl" })
        );
    }

    #[test]
    fn http_takes_workers_and_port_only() {
        use crate::http::{HttpImpl, HttpOptions};
        assert_eq!(
            parse_strs(&["--http", "hyper", "--workers=3", "--port", "8080"]),
            Ok(Command::Http(HttpOptions {
                implementation: HttpImpl::Hyper,
                workers: 3,
                port: 8080,
            }))
        );
        assert_eq!(
            parse_strs(&["--http=drover"]),
            Ok(Command::Http(HttpOptions {
                implementation: HttpImpl::Drover,
                workers: 2,
                port: 0,
            }))
        );
        assert_eq!(
            parse_strs(&["--http", "drover", "--payload", "64"]),
            Err(UsageError::HttpWithEchoFlag { flag: "--payload" })
        );
        assert!(matches!(
            parse_strs(&["--http", "nginx"]),
            Err(UsageError::BadValue { flag: "--http", .. })
        ));
        assert!(matches!(
            parse_strs(&["--http", "hyper", "--port", "70000"]),
            Err(UsageError::BadValue { flag: "--port", .. })
        ));
        assert_eq!(
            parse_strs(&["--port", "8080"]),
            Err(UsageError::PortWithoutHttp)
        );
    }

    #[test]
    fn memory_and_help() {
        assert_eq!(parse_strs(&["--memory"]), Ok(Command::Memory));
        assert_eq!(parse_strs(&["--workers", "2", "--help"]), Ok(Command::Help));
    }

    #[test]
    fn per_worker_cap_rounds_up() {
        let options = |workers, concurrency| EchoOptions {
            workers,
            concurrency,
            ..EchoOptions::default()
        };
        assert_eq!(options(2, 1).per_worker(), 1);
        assert_eq!(options(2, 256).per_worker(), 128);
        assert_eq!(options(3, 16).per_worker(), 6);
    }
}
