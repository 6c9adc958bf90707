//! Addressing, fan-out, back-pressure and sync request/reply on a bare `Bus`.

use std::time::Duration;

use ke_bus::{Bus, BusError, Message};
use serde_json::json;
use tokio::sync::mpsc;

fn msg(content: &str) -> Message {
    let mut m = Message::new();
    m.content = json!(content);
    m
}

fn reply_to(request: &Message, content: &str) -> Message {
    let mut r = msg(content);
    r.header.parent_id = request.header.id.clone();
    r
}

fn content(m: &Message) -> &str {
    m.content.as_str().unwrap_or("<not a string>")
}

fn mailbox(bus: &Bus, name: &str, group: &str) -> mpsc::Receiver<Message> {
    bus.register_mailbox(name, group, 8)
        .expect("test names are unique")
}

#[tokio::test]
async fn send_reaches_only_the_named_module() {
    let bus = Bus::new();
    let mut a = mailbox(&bus, "a", "g");
    let mut b = mailbox(&bus, "b", "g");

    bus.send("a", msg("hello")).await.expect("a is registered");

    assert_eq!(content(&a.recv().await.expect("delivered")), "hello");
    assert!(b.try_recv().is_err(), "b must not see a's message");
}

#[tokio::test]
async fn send_to_unknown_module_names_it() {
    let bus = Bus::new();
    let err = bus.send("ghost", msg("x")).await.unwrap_err();
    assert_eq!(
        err,
        BusError::UnknownModule {
            module: "ghost".into()
        }
    );
    assert_eq!(err.to_string(), r#"unknown module "ghost""#);
}

#[tokio::test]
async fn registering_a_name_twice_or_with_zero_capacity_fails() {
    let bus = Bus::new();
    let _a = mailbox(&bus, "a", "g");
    assert_eq!(
        bus.register_mailbox("a", "other", 8).unwrap_err(),
        BusError::DuplicateModule { module: "a".into() }
    );
    assert_eq!(
        bus.register_mailbox("z", "g", 0).unwrap_err(),
        BusError::ZeroCapacity { module: "z".into() }
    );
    assert_eq!(bus.group_members("g"), Some(vec!["a".to_owned()]));
}

#[tokio::test]
async fn group_fan_out_reaches_every_member_and_only_them() {
    let bus = Bus::new();
    let mut twin = mailbox(&bus, "twin", "twin");
    let mut eventbus = mailbox(&bus, "eventbus", "bus");
    let mut servicebus = mailbox(&bus, "servicebus", "bus");

    let delivered = bus
        .send_to_group("bus", msg("cloud_connected"))
        .await
        .expect("group exists");

    assert_eq!(delivered, 2);
    let e = eventbus.recv().await.expect("eventbus gets a copy");
    let s = servicebus.recv().await.expect("servicebus gets a copy");
    assert_eq!(content(&e), "cloud_connected");
    assert_eq!(
        e.header.id, s.header.id,
        "members get clones of one message"
    );
    assert!(twin.try_recv().is_err(), "other groups are not addressed");
}

#[tokio::test]
async fn group_send_to_unknown_group_fails_and_skips_closed_members() {
    let bus = Bus::new();
    assert_eq!(
        bus.send_to_group("nobody", msg("x")).await.unwrap_err(),
        BusError::UnknownGroup {
            group: "nobody".into()
        }
    );

    let mut alive = mailbox(&bus, "alive", "g");
    drop(mailbox(&bus, "gone", "g"));
    assert_eq!(bus.send_to_group("g", msg("x")).await, Ok(1));
    assert!(alive.try_recv().is_ok());
}

#[tokio::test]
async fn send_to_a_closed_mailbox_is_an_error_naming_the_module() {
    let bus = Bus::new();
    drop(mailbox(&bus, "gone", "g"));
    assert_eq!(
        bus.send("gone", msg("x")).await.unwrap_err(),
        BusError::MailboxClosed {
            module: "gone".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_applies_back_pressure() {
    let bus = Bus::new();
    let mut slow = bus.register_mailbox("slow", "g", 2).expect("fresh bus");
    bus.send("slow", msg("1")).await.expect("room");
    bus.send("slow", msg("2")).await.expect("room");

    assert_eq!(
        bus.try_send("slow", msg("x")).unwrap_err(),
        BusError::MailboxFull {
            module: "slow".into()
        }
    );

    let producer = tokio::spawn({
        let bus = bus.clone();
        async move { bus.send("slow", msg("3")).await }
    });
    // With the clock paused, a whole minute passes without the send finishing:
    // it is waiting for room, not dropping.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !producer.is_finished(),
        "send must wait while the mailbox is full"
    );

    assert_eq!(content(&slow.recv().await.expect("queued")), "1");
    producer
        .await
        .expect("producer task")
        .expect("send completes once there is room");
    assert_eq!(content(&slow.recv().await.expect("queued")), "2");
    assert_eq!(content(&slow.recv().await.expect("queued")), "3");
}

#[tokio::test]
async fn send_sync_gets_the_reply_matched_by_parent_id() {
    let bus = Bus::new();
    let mut meta = mailbox(&bus, "metamanager", "meta");

    let first = msg("first");
    let second = msg("second");
    let first_id = first.header.id.clone();
    let call_first = tokio::spawn({
        let bus = bus.clone();
        async move {
            bus.send_sync("metamanager", first, Duration::from_secs(5))
                .await
        }
    });
    let call_second = tokio::spawn({
        let bus = bus.clone();
        async move {
            bus.send_sync("metamanager", second, Duration::from_secs(5))
                .await
        }
    });

    let mut requests = vec![
        meta.recv().await.expect("request"),
        meta.recv().await.expect("request"),
    ];
    assert!(requests.iter().all(|r| r.header.sync), "sync flag is set");
    requests.sort_by_key(|r| r.header.id != first_id);
    let [req_first, req_second] = <[Message; 2]>::try_from(requests).expect("two requests");

    // Replies arrive out of order, plus one nobody asked for.
    assert!(!bus.send_resp(reply_to(&msg("stray"), "stray")));
    assert!(bus.send_resp(reply_to(&req_second, "for second")));
    assert!(bus.send_resp(reply_to(&req_first, "for first")));

    let got_first = call_first.await.expect("task").expect("reply");
    let got_second = call_second.await.expect("task").expect("reply");
    assert_eq!(content(&got_first), "for first");
    assert_eq!(content(&got_second), "for second");
    assert_eq!(bus.pending_sync(), 0);
}

#[tokio::test]
async fn a_reply_sent_before_send_returns_is_not_lost() {
    // The responder answers from inside the mailbox's capacity window, i.e.
    // potentially before the caller's `send` has returned: the waiter must
    // already be registered.
    let bus = Bus::new();
    let mut echo = mailbox(&bus, "echo", "g");
    let responder = tokio::spawn({
        let bus = bus.clone();
        async move {
            let req = echo.recv().await.expect("request");
            bus.send_resp(reply_to(&req, "pong"))
        }
    });
    let reply = bus
        .send_sync("echo", msg("ping"), Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(content(&reply), "pong");
    assert!(responder.await.expect("task"));
}

#[tokio::test(start_paused = true)]
async fn send_sync_times_out_and_leaves_no_waiter() {
    let bus = Bus::new();
    let mut silent = mailbox(&bus, "silent", "g");
    let request = msg("anyone?");
    let id = request.header.id.clone();

    let started = tokio::time::Instant::now();
    let err = bus
        .send_sync("silent", request, Duration::from_secs(30))
        .await
        .unwrap_err();

    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(
        err,
        BusError::Timeout {
            module: "silent".into(),
            msg_id: id.clone(),
            timeout: Duration::from_secs(30),
        }
    );
    assert!(err.to_string().contains(&id) && err.to_string().contains("silent"));
    assert_eq!(bus.pending_sync(), 0, "timed-out waiter must be removed");

    // A late reply finds nobody and is dropped.
    let req = silent.recv().await.expect("request was delivered");
    assert!(!bus.send_resp(reply_to(&req, "too late")));
}

#[tokio::test(start_paused = true)]
async fn abandoned_send_sync_leaves_no_waiter() {
    let bus = Bus::new();
    let _silent = mailbox(&bus, "silent", "g");
    let call = bus.send_sync("silent", msg("x"), Duration::from_secs(30));
    let outer = tokio::time::timeout(Duration::from_secs(1), call).await;
    assert!(outer.is_err(), "outer timeout fires first");
    assert_eq!(bus.pending_sync(), 0);
}

#[tokio::test(start_paused = true)]
async fn send_sync_timeout_covers_a_full_mailbox() {
    let bus = Bus::new();
    let _full = bus.register_mailbox("full", "g", 1).expect("fresh bus");
    bus.send("full", msg("occupying")).await.expect("room");
    let err = bus
        .send_sync("full", msg("x"), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    assert_eq!(bus.pending_sync(), 0);
}

#[tokio::test]
async fn send_sync_to_unknown_module_fails_fast_without_leaking() {
    let bus = Bus::new();
    let err = bus
        .send_sync("ghost", msg("x"), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BusError::UnknownModule {
            module: "ghost".into()
        }
    );
    assert_eq!(bus.pending_sync(), 0);
}

#[tokio::test]
async fn reusing_a_pending_message_id_is_rejected() {
    let bus = Bus::new();
    let _m = mailbox(&bus, "m", "g");
    let request = msg("x");
    let duplicate = request.clone();
    let first = tokio::spawn({
        let bus = bus.clone();
        async move { bus.send_sync("m", request, Duration::from_secs(5)).await }
    });
    while bus.pending_sync() == 0 {
        tokio::task::yield_now().await;
    }
    let err = bus
        .send_sync("m", duplicate.clone(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BusError::DuplicateWaiter {
            msg_id: duplicate.header.id.clone()
        }
    );
    // The rejected call must not have removed the first call's waiter.
    assert_eq!(bus.pending_sync(), 1);
    assert!(bus.send_resp(reply_to(&duplicate, "ok")));
    assert_eq!(content(&first.await.expect("task").expect("reply")), "ok");
}

#[tokio::test]
async fn send_resp_without_a_waiter_returns_false() {
    let bus = Bus::new();
    assert!(!bus.send_resp(msg("no parent id")));
    assert!(!bus.send_resp(reply_to(&msg("never sent"), "orphan")));
}
