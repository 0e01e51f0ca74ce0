//! The page in a real browser: headless Chromium driven by playwright-core
//! (`tests/browser/notification_center.mjs`) against the real server.

use std::{path::PathBuf, time::Duration};

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_live_notification_bumps_the_badge_and_mark_all_read_clears_it() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = folder.join("node_modules/playwright-core").exists() && PathBuf::from(&chromium).exists();
    if !ready {
        let why = "the browser test needs Chromium and `npm ci` in tests/browser; `bash .ci/run` installs both";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let app = spawn_app().await;
    let screenshots = std::env::var("TIDINGS_SCREENSHOT_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let run = tokio::process::Command::new("node")
        .arg(folder.join("notification_center.mjs"))
        .current_dir(&folder)
        .env("TIDINGS_URL", &app.base)
        .env("TIDINGS_USER_ID", "browser-user")
        .env("TIDINGS_USER_TOKEN", app.token("browser-user"))
        .env("TIDINGS_PUBLISH_TOKEN", app.publisher_token())
        .env("TIDINGS_SCREENSHOT_DIR", screenshots)
        .env("CHROMIUM_PATH", chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the browser test finishes").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser test failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("browser test passed"), "{stdout}");
}
