//! Module lifecycle: delivery through the runtime, restarts, shutdown.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Once;
use std::time::Duration;

use anyhow::Context as _;
use ke_bus::{
    BoxFuture, BusError, BusRuntime, Message, Module, ModuleContext, RestartPolicy, ShutdownReport,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a [`Scripted`] module does on each run.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Report every message until shutdown, then return Ok.
    Echo,
    /// First run: panic on the first message. Later runs: like `Echo`.
    PanicOnFirstMessage,
    /// Return an error with context immediately.
    FailImmediately,
    /// Return Ok immediately.
    ReturnImmediately,
    /// Never look at the context; only an abort stops it.
    IgnoreCancellation,
}

#[derive(Debug)]
enum Event {
    Started { run: usize, at: Instant },
    Received { run: usize, content: String },
}

struct Scripted {
    name: &'static str,
    policy: RestartPolicy,
    script: Script,
    runs: usize,
    events: mpsc::UnboundedSender<Event>,
}

impl Scripted {
    fn new(
        name: &'static str,
        script: Script,
        policy: RestartPolicy,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let module = Self {
            name,
            policy,
            script,
            runs: 0,
            events,
        };
        (module, rx)
    }

    fn report(&self, event: Event) {
        // The test may have stopped listening; that is not the module's concern.
        let _ = self.events.send(event);
    }
}

impl Module for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    fn group(&self) -> &str {
        "test"
    }

    fn restart_policy(&self) -> RestartPolicy {
        self.policy.clone()
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.runs += 1;
            let run = self.runs;
            self.report(Event::Started {
                run,
                at: Instant::now(),
            });
            match self.script {
                Script::FailImmediately => {
                    Err(anyhow::anyhow!("disk on fire")).context("opening database")
                }
                Script::ReturnImmediately => Ok(()),
                Script::IgnoreCancellation => loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                },
                Script::Echo | Script::PanicOnFirstMessage => {
                    while let Some(msg) = ctx.recv().await {
                        if matches!(self.script, Script::PanicOnFirstMessage) && run == 1 {
                            panic!("boom on first message");
                        }
                        let content = msg.content.as_str().unwrap_or_default().to_owned();
                        self.report(Event::Received { run, content });
                    }
                    Ok(())
                }
            }
        })
    }
}

fn msg(content: &str) -> Message {
    let mut m = Message::new();
    m.content = json!(content);
    m
}

thread_local! {
    static THREAD_LOGS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What the tests' current thread has logged since [`LogCapture::install`].
///
/// One global subscriber writes into a per-thread buffer. Per-test scoped
/// subscribers (`set_default`) are not used because tracing caches callsite
/// interest process-wide: a callsite first hit on a thread without a
/// subscriber can be disabled for every thread, which made log assertions
/// flaky under parallel tests. `#[tokio::test]` runs each test and its spawned
/// tasks on the test's own thread, so the buffer sees exactly that test's logs.
struct LogCapture;

#[derive(Clone, Copy)]
struct ThreadLocalWriter;

impl Write for ThreadLocalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        THREAD_LOGS.with(|logs| logs.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn install() -> Self {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadLocalWriter)
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("only this test binary installs a global subscriber");
        });
        THREAD_LOGS.with(|logs| logs.borrow_mut().clear());
        Self
    }

    fn text(&self) -> String {
        THREAD_LOGS.with(|logs| String::from_utf8_lossy(&logs.borrow()).into_owned())
    }
}

/// Every test builds its runtime through here so the global subscriber exists
/// before any tracing callsite in this binary is first hit.
fn runtime() -> BusRuntime {
    LogCapture::install();
    BusRuntime::new()
}

async fn next(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    events.recv().await.expect("module still reports")
}

const GRACE: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn messages_sent_before_start_are_delivered() {
    let (module, mut events) = Scripted::new("meta", Script::Echo, RestartPolicy::never());
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    let bus = rt.bus().clone();
    bus.send("meta", msg("early"))
        .await
        .expect("mailbox exists");

    rt.start();
    assert!(matches!(
        next(&mut events).await,
        Event::Started { run: 1, .. }
    ));
    assert!(matches!(
        next(&mut events).await,
        Event::Received { run: 1, content } if content == "early"
    ));
    assert!(rt.shutdown(GRACE).await.is_clean());
}

#[tokio::test]
async fn registering_a_duplicate_module_name_fails() {
    let (a, _ea) = Scripted::new("edged", Script::Echo, RestartPolicy::never());
    let (b, _eb) = Scripted::new("edged", Script::Echo, RestartPolicy::never());
    let mut rt = runtime();
    rt.register(a).expect("first registration");
    assert_eq!(
        rt.register(b).unwrap_err(),
        BusError::DuplicateModule {
            module: "edged".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_module_is_restarted_with_backoff_and_keeps_queued_messages() {
    let logs = LogCapture::install();
    let (module, mut events) = Scripted::new(
        "edgehub",
        Script::PanicOnFirstMessage,
        RestartPolicy::on_failure(),
    );
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    let bus = rt.bus().clone();
    rt.start();

    let Event::Started { run: 1, at: first } = next(&mut events).await else {
        panic!("expected first start");
    };
    bus.send("edgehub", msg("trigger")).await.expect("mailbox");
    // Queued while the module is dead and backing off.
    bus.send("edgehub", msg("survivor")).await.expect("mailbox");

    let Event::Started { run: 2, at: second } = next(&mut events).await else {
        panic!("expected a restart");
    };
    assert_eq!(
        second - first,
        Duration::from_secs(1),
        "initial backoff is 1 s"
    );
    assert!(matches!(
        next(&mut events).await,
        Event::Received { run: 2, content } if content == "survivor"
    ));

    let text = logs.text();
    assert!(text.contains("module panicked"), "{text}");
    assert!(text.contains("boom on first message"), "{text}");
    assert!(text.contains("edgehub"), "log names the module: {text}");
    assert!(rt.shutdown(GRACE).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn failing_module_backs_off_exponentially_until_retries_run_out() {
    let logs = LogCapture::install();
    let policy = RestartPolicy::on_failure().with_max_retries(3);
    let (module, mut events) = Scripted::new("metamanager", Script::FailImmediately, policy);
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    let bus = rt.bus().clone();
    let t0 = Instant::now();
    rt.start();

    let mut starts = Vec::new();
    while let Some(Event::Started { at, .. }) = events.recv().await {
        starts.push((at - t0).as_secs());
    }
    // The module value (and with it the event sender) is dropped once the
    // supervisor gives up, which ends the loop above.
    assert_eq!(starts, [0, 1, 3, 7]);

    let text = logs.text();
    assert!(
        text.contains("opening database: disk on fire"),
        "error chain is logged: {text}"
    );
    assert!(text.contains("will not be restarted"), "{text}");
    assert_eq!(
        bus.send("metamanager", msg("x")).await.unwrap_err(),
        BusError::MailboxClosed {
            module: "metamanager".into()
        },
        "a module that stopped for good closes its mailbox"
    );
    assert!(rt.shutdown(GRACE).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn never_policy_does_not_restart() {
    let (module, mut events) =
        Scripted::new("twin", Script::FailImmediately, RestartPolicy::never());
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    rt.start();
    assert!(matches!(
        next(&mut events).await,
        Event::Started { run: 1, .. }
    ));
    assert!(events.recv().await.is_none(), "no second run");
    assert!(rt.shutdown(GRACE).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn on_failure_module_returning_ok_is_not_restarted() {
    let (module, mut events) = Scripted::new(
        "eventbus",
        Script::ReturnImmediately,
        RestartPolicy::on_failure(),
    );
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    rt.start();
    assert!(matches!(
        next(&mut events).await,
        Event::Started { run: 1, .. }
    ));
    assert!(events.recv().await.is_none(), "no second run");
    assert!(rt.shutdown(GRACE).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn always_policy_restarts_after_a_clean_return() {
    let policy = RestartPolicy::always().with_max_retries(1);
    let (module, mut events) = Scripted::new("servicebus", Script::ReturnImmediately, policy);
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    rt.start();
    assert!(matches!(
        next(&mut events).await,
        Event::Started { run: 1, .. }
    ));
    assert!(matches!(
        next(&mut events).await,
        Event::Started { run: 2, .. }
    ));
    assert!(events.recv().await.is_none());
    assert!(rt.shutdown(GRACE).await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_modules_and_returns_within_grace() {
    let (a, mut ea) = Scripted::new("a", Script::Echo, RestartPolicy::on_failure());
    let (b, mut eb) = Scripted::new("b", Script::Echo, RestartPolicy::always());
    let mut rt = runtime();
    rt.register(a).expect("first registration");
    rt.register(b).expect("first registration");
    rt.start();
    next(&mut ea).await;
    next(&mut eb).await;

    let t0 = Instant::now();
    let report = rt.shutdown(GRACE).await;
    assert_eq!(report, ShutdownReport::default());
    assert!(t0.elapsed() < GRACE);
    // Cancellation is not a reason to restart, even under `Always`.
    assert!(ea.recv().await.is_none());
    assert!(eb.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn shutdown_interrupts_a_pending_restart() {
    let (module, mut events) = Scripted::new(
        "flaky",
        Script::FailImmediately,
        RestartPolicy::on_failure().with_backoff(
            Duration::from_secs(600),
            2.0,
            Duration::from_secs(600),
        ),
    );
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    rt.start();
    next(&mut events).await;

    let t0 = Instant::now();
    assert!(rt.shutdown(GRACE).await.is_clean());
    assert!(
        t0.elapsed() < GRACE,
        "backoff sleep must not delay shutdown"
    );
    assert!(events.recv().await.is_none(), "no restart after shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_a_module_that_ignores_cancellation() {
    let logs = LogCapture::install();
    let (stubborn, mut es) = Scripted::new(
        "stubborn",
        Script::IgnoreCancellation,
        RestartPolicy::never(),
    );
    let (polite, mut ep) = Scripted::new("polite", Script::Echo, RestartPolicy::never());
    let mut rt = runtime();
    rt.register(stubborn).expect("first registration");
    rt.register(polite).expect("first registration");
    rt.start();
    next(&mut es).await;
    next(&mut ep).await;

    let grace = Duration::from_millis(500);
    let t0 = Instant::now();
    let report = rt.shutdown(grace).await;
    assert_eq!(t0.elapsed(), grace);
    assert_eq!(report.unfinished, ["stubborn"]);
    assert!(!report.is_clean());
    assert!(logs.text().contains("stubborn"), "{}", logs.text());
    // The stubborn task was aborted, which drops the module.
    assert!(es.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn run_until_signal_returns_when_the_shutdown_token_fires() {
    let (module, mut events) = Scripted::new("edged", Script::Echo, RestartPolicy::never());
    let mut rt = runtime();
    rt.register(module).expect("first registration");
    let token = rt.shutdown_token();
    let runner = tokio::spawn(rt.run_until_signal(GRACE));
    assert!(matches!(
        next(&mut events).await,
        Event::Started { run: 1, .. }
    ));
    token.cancel();
    let report = runner
        .await
        .expect("runner task")
        .expect("signal handlers installed");
    assert!(report.is_clean());
}

#[tokio::test(start_paused = true)]
async fn modules_talk_to_each_other_through_the_context() {
    struct Echo;
    impl Module for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn group(&self) -> &str {
            "meta"
        }
        fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async move {
                while let Some(req) = ctx.recv().await {
                    let mut resp = Message::new();
                    resp.header.parent_id = req.header.id.clone();
                    resp.content = req.content.clone();
                    ctx.bus().send_resp(resp);
                }
                Ok(())
            })
        }
    }

    let mut rt = runtime();
    rt.register(Echo).expect("first registration");
    let bus = rt.bus().clone();
    rt.start();
    let reply = bus
        .send_sync("echo", msg("ping"), Duration::from_secs(1))
        .await
        .expect("echo replies");
    assert_eq!(reply.content, json!("ping"));
    assert!(rt.shutdown(GRACE).await.is_clean());
}
