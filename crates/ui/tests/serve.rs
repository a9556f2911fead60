//! `serve` on a real socket: it refuses to expose the UI without a token,
//! and a graceful shutdown does not wait for open live pages.

mod common;

use scheduler_producer::Project;
use scheduler_ui::UiConfig;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn deps(app: &common::TestApp) -> (std::sync::Arc<dyn scheduler_broker::Transport>, Project) {
    (app.transport.clone(), Project::new(&app.project).unwrap())
}

#[tokio::test]
async fn a_non_loopback_bind_without_a_token_is_refused() {
    let app = common::TestApp::new().await;
    let (broker, project) = deps(&app);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = UiConfig {
        bind: listener.local_addr().unwrap(),
        token: None,
        queue: app.queue.clone(),
    };
    let err = scheduler_ui::serve(
        listener,
        app.store.clone(),
        broker,
        project,
        config,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("without an access token"), "{err}");
    app.finish().await;
}

#[tokio::test]
async fn shutdown_ends_open_event_streams_so_serve_returns() {
    let app = common::TestApp::new().await;
    let (broker, project) = deps(&app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = UiConfig {
        bind: addr,
        token: None,
        queue: app.queue.clone(),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(scheduler_ui::serve(
        listener,
        app.store.clone(),
        broker,
        project,
        config,
        shutdown.clone(),
    ));
    let mut live = tokio::net::TcpStream::connect(addr).await.unwrap();
    live.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = live.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).contains("text/event-stream"));

    shutdown.cancel();
    let served = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve waited on an open event stream");
    served.unwrap().unwrap();
    app.finish().await;
}
