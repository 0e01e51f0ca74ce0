//! The page in a real browser: headless Chromium driven by playwright-core
//! (`tests/browser/*.mjs`) against the real server.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    http::header,
    response::Html,
    routing::get,
};

use crate::helpers::{spawn_app, spawn_app_with};

/// Runs one browser script with `env` and answers its output. Panics when
/// Chromium or the node packages are missing: the browser tests are
/// `#[ignore]`d, so only a run that asks for them (`--include-ignored`, as
/// `bash .ci/run` does) gets here.
async fn run_browser_script(script: &str, env: &[(&str, String)]) -> String {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = folder.join("node_modules/playwright-core").exists() && PathBuf::from(&chromium).exists();
    if !ready {
        panic!("the browser tests need Chromium ({chromium}) and `npm ci` in tests/browser; `bash .ci/run` installs both");
    }
    let screenshots = std::env::var("TIDINGS_SCREENSHOT_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let mut command = tokio::process::Command::new("node");
    command
        .arg(folder.join(script))
        .current_dir(&folder)
        .env("TIDINGS_SCREENSHOT_DIR", screenshots)
        .env("CHROMIUM_PATH", chromium)
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser test finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in tests/browser (bash .ci/run installs both)"]
async fn the_page_shows_a_live_notification_bumps_the_badge_and_mark_all_read_clears_it() {
    // Email is configured (the SMTP sink is never reached: emails fall due
    // after the default five minutes), so the page offers its toggle and
    // marks unread notifications whose email is pending.
    let sink = crate::email::SmtpSink::start().await;
    let smtp_url = sink.url();
    let app = spawn_app_with(move |settings| {
        settings.email = Some(tidings::email::EmailSettings { smtp_url: smtp_url.into(), from: "hub@tidings.test".into(), link_secret: None });
    })
    .await;
    let env = [
        ("TIDINGS_EXPECT_EMAIL", "1".to_owned()),
        ("TIDINGS_URL", app.base.clone()),
        ("TIDINGS_USER_ID", "browser-user".to_owned()),
        ("TIDINGS_USER_TOKEN", app.token("browser-user")),
        ("TIDINGS_PUBLISH_TOKEN", app.publisher_token()),
    ];
    let stdout = run_browser_script("notification_center.mjs", &env).await;
    assert!(stdout.contains("browser test passed"), "{stdout}");
}

/// Two users in two browsers: typing shows, the message arrives, the read
/// tick comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in tests/browser (bash .ci/run installs both)"]
async fn two_users_chat_in_two_browsers_with_typing_and_read_ticks() {
    let app = spawn_app().await;
    let env = [
        ("TIDINGS_URL", app.base.clone()),
        ("TIDINGS_ALICE_ID", "alice".to_owned()),
        ("TIDINGS_BOB_ID", "bob".to_owned()),
        ("TIDINGS_ALICE_TOKEN", app.token("alice")),
        ("TIDINGS_BOB_TOKEN", app.token("bob")),
    ];
    let stdout = run_browser_script("chat.mjs", &env).await;
    assert!(stdout.contains("chat browser test passed"), "{stdout}");
}

/// The "Hub status" panel: live figures from `tidings:status` on a server
/// that publishes them every second, and hidden (the page otherwise live)
/// on one that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in tests/browser (bash .ci/run installs both)"]
async fn the_hub_status_panel_shows_the_hubs_figures_live() {
    let on = spawn_app_with(|settings| settings.status_topic_every = Some(Duration::from_secs(1))).await;
    let off = spawn_app().await;
    let env = [
        ("TIDINGS_URL", on.base.clone()),
        ("TIDINGS_USER_TOKEN", on.token("status-watcher")),
        ("TIDINGS_OFF_URL", off.base.clone()),
        ("TIDINGS_OFF_TOKEN", off.token("status-watcher")),
    ];
    let stdout = run_browser_script("hub_status.mjs", &env).await;
    assert!(stdout.contains("hub status browser test passed"), "{stdout}");
}

/// Another app's page using `/tidings.js` from the hub's origin, with
/// tokens that live a few seconds: its `getToken` fetches fresh ones from
/// the app's backend (played here by a small server the test starts, which
/// also serves the page), and notifications published without pause across
/// the refreshes all arrive, in order, none twice. The hub's own page,
/// which cannot get a new token, signs out when its token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in tests/browser (bash .ci/run installs both)"]
async fn an_app_using_tidings_js_refreshes_expiring_tokens_and_misses_nothing_and_repeats_nothing() {
    const TTL: Duration = Duration::from_secs(6);
    let hub = spawn_app_with(|settings| settings.cors_origins = vec!["*".to_owned()]).await;
    let keys = hub.keys();
    let minted = Arc::new(AtomicUsize::new(0));
    let backend = {
        let minted = minted.clone();
        axum::Router::new()
            .route("/", get(|| async { Html(include_str!("../browser/token_refresh.html")) }))
            .route(
                "/token",
                get({
                    let keys = keys.clone();
                    move || {
                        minted.fetch_add(1, Ordering::SeqCst);
                        let token = keys.mint("refreshing-user", None, TTL).expect("a token");
                        async move { ([(header::CACHE_CONTROL, "no-store")], token) }
                    }
                }),
            )
            // For the hub's own page, which cannot refresh: it must go live first.
            .route(
                "/short-token",
                get(move || {
                    let token = keys.mint("short-lived", None, Duration::from_secs(5)).expect("a token");
                    async move { ([(header::CACHE_CONTROL, "no-store")], token) }
                }),
            )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, backend).await });
    let env = [
        ("TIDINGS_URL", hub.base.clone()),
        ("TIDINGS_APP_URL", app_url),
        ("TIDINGS_USER_ID", "refreshing-user".to_owned()),
        ("TIDINGS_PUBLISH_TOKEN", hub.publisher_token()),
        ("TIDINGS_TOKEN_TTL_SECS", TTL.as_secs().to_string()),
    ];
    let stdout = run_browser_script("token_refresh.mjs", &env).await;
    server.abort();
    println!("{stdout}");
    assert!(stdout.contains("token refresh browser test passed"), "{stdout}");
    assert!(minted.load(Ordering::SeqCst) >= 3, "the app's backend minted the first token and at least two refreshes");
}
