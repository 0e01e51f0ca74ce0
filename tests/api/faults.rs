//! Faults under test: a [`FaultProxy`] between nodes and PostgreSQL or
//! Redis cuts, blackholes or slows the network mid-test. While a
//! dependency is gone the hub answers the contract's 503 `unavailable` in
//! bounded time, `/readyz` says so, open streams stay open; once it
//! returns, streams catch up with the exact set, in order, once, and the
//! stored rows are exactly what was answered 201.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fault_proxy::{Fault, FaultProxy},
    helpers::{EventStream, POSTGRES_ENV, REDIS_ENV, TestApp, TestDatabase, data, into_json, required_env, spawn_app_in, until_ready},
};

/// `TIDINGS_DATABASE_TIMEOUT_SECS` of the nodes under test: how long they
/// wait for PostgreSQL before answering 503.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a request may take to be refused while a dependency is gone:
/// the database timeout, and a margin.
const BOUNDED: Duration = Duration::from_secs(5);

/// The address a service URL points at.
fn address_of(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let host = url.host_str().unwrap();
    let port = url.port_or_known_default().unwrap_or(if url.scheme() == "redis" { 6379 } else { 5432 });
    format!("{host}:{port}").parse().unwrap()
}

/// `url` with its host and port replaced by the proxy's.
fn through(proxy: &FaultProxy, url: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    url.to_string()
}

/// Two nodes on one fresh database and one Redis namespace; node 0 reaches
/// PostgreSQL and Redis through the proxies given, node 1 directly unless
/// `both` is set. Each node waits at most [`DATABASE_TIMEOUT`] for
/// PostgreSQL, unless `configure` says otherwise.
async fn two_nodes(
    database_proxy: Option<&FaultProxy>,
    redis_proxy: Option<&FaultProxy>,
    both: bool,
    configure: impl Fn(&mut tidings::Settings),
) -> (Arc<TestDatabase>, Vec<TestApp>) {
    let why = "fault tests need PostgreSQL and Redis";
    required_env(POSTGRES_ENV, why);
    let redis = required_env(REDIS_ENV, why);
    let database = TestDatabase::create().await;
    let namespace = format!("tidings-test-{}", rand::random::<u64>());
    let mut nodes = Vec::new();
    for n in 0..2 {
        let proxied = n == 0 || both;
        let database_url = match database_proxy {
            Some(proxy) if proxied => through(proxy, &database.url),
            _ => database.url.clone(),
        };
        let redis_url = match redis_proxy {
            Some(proxy) if proxied => through(proxy, &redis),
            _ => redis.clone(),
        };
        let namespace = namespace.clone();
        nodes.push(
            spawn_app_in(database.clone(), |settings| {
                settings.database_url = database_url.into();
                settings.redis_url = Some(redis_url.into());
                settings.redis_namespace = namespace;
                settings.tail_poll = Duration::from_millis(200);
                settings.database_timeout = DATABASE_TIMEOUT;
                configure(settings);
            })
            .await,
        );
    }
    for node in &nodes {
        until_ready(node).await;
    }
    (database, nodes)
}

/// `POST /v1/notifications` to alice titled `title`: the status, the body
/// and how long the answer took.
async fn publish(node: &TestApp, title: &str) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (status, body) = into_json(node.publish_raw(&json!({"user_id": "alice", "type": "t", "title": title})).await).await;
    (status, body, started.elapsed())
}

/// `/readyz`'s status, and how long it took to say it.
async fn readiness(node: &TestApp) -> (StatusCode, Duration) {
    let started = Instant::now();
    let response = node.http.get(format!("{}/readyz", node.base)).send().await.unwrap();
    (response.status(), started.elapsed())
}

/// Waits until `/readyz` answers `want`, each answer in bounded time.
async fn until_readiness(node: &TestApp, want: StatusCode) {
    let deadline = Instant::now() + crate::helpers::PATIENCE;
    loop {
        let (status, took) = readiness(node).await;
        assert!(took < BOUNDED, "/readyz answers in bounded time ({took:?})");
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz comes to say {want} (still {status})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads notifications from `stream` until `titles.len()` arrived: they
/// must be exactly `titles`, in order, with growing ids, and the stream
/// must never reset or end.
async fn expect_titles(stream: &mut EventStream, titles: &[String]) {
    let mut received = Vec::new();
    let mut last_id = 0i64;
    while received.len() < titles.len() {
        let event = stream.next().await.expect("the stream stays open");
        assert_ne!(event.event, "reset", "no reset: the stream catches up");
        if event.event == "notification" {
            let id: i64 = event.id.parse().unwrap();
            assert!(id > last_id, "ids grow: {id} after {last_id}");
            last_id = id;
            received.push(data(&event)["title"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(received, titles, "the exact set, in order, once");
}

/// alice's stored notifications, read through `node`: their titles, oldest first.
async fn stored_titles(node: &TestApp) -> Vec<String> {
    let (status, page) = node.get_json("/v1/notifications?limit=100", &node.token("alice")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut titles: Vec<String> = page["items"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap().to_owned()).collect();
    titles.reverse();
    titles
}

/// The database behind node 0 fails with `fault` while node 1 keeps
/// publishing; node 0 refuses writes in bounded time with the contract's
/// 503, says it is not ready, keeps its stream open, and catches it up.
async fn survive_a_database_fault(fault: Fault) {
    let database_url = required_env(POSTGRES_ENV, "fault tests need PostgreSQL");
    let proxy = FaultProxy::start(address_of(&database_url)).await;
    let (_database, nodes) = two_nodes(Some(&proxy), None, false, |_| {}).await;
    let (faulty, healthy) = (&nodes[0], &nodes[1]);
    let mut stream = faulty.open_stream(&faulty.token("alice"), None).await;
    stream.until_unread_count().await;
    let mut answered_201 = Vec::new();
    let (status, _, _) = publish(faulty, "before").await;
    assert_eq!(status, StatusCode::CREATED);
    answered_201.push("before".to_owned());
    expect_titles(&mut stream, &answered_201).await;

    proxy.set(fault);
    for i in 0..3 {
        let title = format!("refused {i}");
        let (status, body, took) = publish(faulty, &title).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{title}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "the contract's body: {body}");
        assert!(body["error"]["message"].is_string());
        assert!(took < BOUNDED, "refused in bounded time ({took:?})");
    }
    until_readiness(faulty, StatusCode::SERVICE_UNAVAILABLE).await;
    let mut during = Vec::new();
    for i in 0..5 {
        let title = format!("during {i}");
        let (status, body, _) = publish(healthy, &title).await;
        assert_eq!(status, StatusCode::CREATED, "the other node still writes: {body}");
        during.push(title);
    }
    let (status, _) = readiness(faulty).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "still not ready while the database is gone");

    proxy.set(Fault::Pass);
    until_readiness(faulty, StatusCode::OK).await;
    let (status, body, _) = publish(faulty, "after").await;
    assert_eq!(status, StatusCode::CREATED, "writes work again: {body}");
    let mut caught_up = during.clone();
    caught_up.push("after".to_owned());
    expect_titles(&mut stream, &caught_up).await;
    answered_201.extend(caught_up);

    assert_eq!(stored_titles(healthy).await, answered_201, "stored: exactly what was answered 201, nothing half-written");
    let (_, count) = healthy.get_json("/v1/notifications/unread_count", &healthy.token("alice")).await;
    assert_eq!(count["count"], answered_201.len(), "the unread counter agrees with the rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and Redis: set TIDINGS_TEST_POSTGRES and TIDINGS_TEST_REDIS (bash .ci/run does)"]
async fn while_the_database_is_cut_writes_answer_unavailable_and_streams_catch_up_once_it_returns() {
    survive_a_database_fault(Fault::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and Redis: set TIDINGS_TEST_POSTGRES and TIDINGS_TEST_REDIS (bash .ci/run does)"]
async fn while_the_database_is_blackholed_writes_answer_unavailable_in_bounded_time_and_streams_catch_up() {
    survive_a_database_fault(Fault::Blackhole).await;
}

/// Redis behind both nodes fails with `fault` while node 1 publishes:
/// every write still lands (the log is the truth, Redis only the doorbell),
/// node 0's subscriber gets it by polling the log, `/readyz` says the bus
/// is down, and fan-out resumes through Redis once it returns.
async fn survive_a_redis_fault(fault: Fault) {
    let redis_url = required_env(REDIS_ENV, "fault tests need Redis");
    let proxy = FaultProxy::start(address_of(&redis_url)).await;
    let (_database, nodes) = two_nodes(None, Some(&proxy), true, |_| {}).await;
    let mut stream = nodes[0].open_stream(&nodes[0].token("alice"), None).await;
    stream.until_unread_count().await;
    let mut answered_201 = Vec::new();
    let (status, _, _) = publish(&nodes[1], "before").await;
    assert_eq!(status, StatusCode::CREATED);
    answered_201.push("before".to_owned());
    expect_titles(&mut stream, &answered_201).await;

    proxy.set(fault);
    for node in &nodes {
        until_readiness(node, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    let mut during = Vec::new();
    for i in 0..5 {
        let title = format!("during {i}");
        let (status, body, took) = publish(&nodes[1], &title).await;
        assert_eq!(status, StatusCode::CREATED, "writes do not need Redis: {body}");
        assert!(took < BOUNDED, "and do not wait for it ({took:?})");
        during.push(title);
    }
    expect_titles(&mut stream, &during).await;
    answered_201.extend(during);

    proxy.set(Fault::Pass);
    for node in &nodes {
        until_readiness(node, StatusCode::OK).await;
    }
    let mut after = Vec::new();
    for i in 0..5 {
        let title = format!("after {i}");
        let (status, body, _) = publish(&nodes[i % 2], &title).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        after.push(title);
    }
    expect_titles(&mut stream, &after).await;
    answered_201.extend(after);
    assert_eq!(stored_titles(&nodes[1]).await, answered_201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and Redis: set TIDINGS_TEST_POSTGRES and TIDINGS_TEST_REDIS (bash .ci/run does)"]
async fn while_redis_is_cut_nothing_is_lost_or_doubled_and_fan_out_resumes_once_it_returns() {
    survive_a_redis_fault(Fault::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and Redis: set TIDINGS_TEST_POSTGRES and TIDINGS_TEST_REDIS (bash .ci/run does)"]
async fn while_redis_is_blackholed_writes_do_not_hang_and_readiness_notices() {
    survive_a_redis_fault(Fault::Blackhole).await;
}

/// 500 ms added to every chunk both ways, to PostgreSQL and Redis, on both
/// nodes: slower, and exactly as correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and Redis: set TIDINGS_TEST_POSTGRES and TIDINGS_TEST_REDIS (bash .ci/run does)"]
async fn with_500_ms_of_latency_to_postgresql_and_redis_everything_is_still_correct() {
    const PER_NODE: usize = 2;
    let database_proxy = FaultProxy::start(address_of(&required_env(POSTGRES_ENV, "fault tests need PostgreSQL"))).await;
    let redis_proxy = FaultProxy::start(address_of(&required_env(REDIS_ENV, "fault tests need Redis"))).await;
    // A publish takes some fifteen round trips to PostgreSQL (acquire, BEGIN,
    // the log lock, ids, three inserts, COMMIT, its reads), a second each
    // here, and two may queue behind each other: an operator with so distant
    // a database raises both deadlines, as this does.
    let (_database, nodes) = two_nodes(Some(&database_proxy), Some(&redis_proxy), true, |settings| {
        settings.database_timeout = Duration::from_secs(60);
        settings.limits.request_timeout = Duration::from_secs(120);
    })
    .await;
    let nodes = Arc::new(nodes);
    let mut stream = nodes[0].open_stream(&nodes[0].token("alice"), None).await;
    stream.until_unread_count().await;

    let latency = Fault::Latency(Duration::from_millis(500));
    database_proxy.set(latency);
    redis_proxy.set(latency);
    // One publisher per node, each in order; concurrently, so that the
    // slow round trips overlap as real traffic's would. A publish takes some
    // ten round trips of a second each: wait for them, then read.
    let started = Instant::now();
    let publishers: Vec<_> = (0..2)
        .map(|n| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                for i in 0..PER_NODE {
                    let (status, body, _) = publish(&nodes[n], &format!("{n}:{i}")).await;
                    assert_eq!(status, StatusCode::CREATED, "slow, not failed: {body}");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    eprintln!("with 500 ms each way: {} publishes in {:?}", 2 * PER_NODE, started.elapsed());
    let mut received: Vec<(i64, String)> = Vec::new();
    while received.len() < 2 * PER_NODE {
        let event = stream.next().await.expect("the stream stays open");
        assert_ne!(event.event, "reset");
        if event.event == "notification" {
            received.push((event.id.parse().unwrap(), data(&event)["title"].as_str().unwrap().to_owned()));
        }
    }
    assert!(received.windows(2).all(|w| w[0].0 < w[1].0), "ids grow: {received:?}");
    for n in 0..2 {
        let mine: Vec<&str> = received.iter().map(|(_, t)| t.as_str()).filter(|t| t.starts_with(&format!("{n}:"))).collect();
        assert_eq!(mine, (0..PER_NODE).map(|i| format!("{n}:{i}")).collect::<Vec<_>>(), "each publisher's, all, in order, once");
    }
    until_readiness(&nodes[0], StatusCode::OK).await;
    let stored = stored_titles(&nodes[1]).await;
    assert_eq!(stored, received.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>());
}
