//! `scheduler ui`: the monitoring web UI and JSON API, until SIGTERM/Ctrl-C.

use crate::cli::Global;
use crate::connect;
use anyhow::Context;
use std::net::SocketAddr;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

pub async fn ui(g: &Global, bind: SocketAddr, token: Option<String>) -> anyhow::Result<ExitCode> {
    let config = scheduler_ui::UiConfig {
        bind,
        token,
        queue: g.queue.clone(),
    };
    config.check()?;
    let project = connect::project(g)?;
    let store = connect::store(g, 8).await?;
    let transport = connect::transport(g, &format!("scheduler ui {}", std::process::id())).await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let shutdown = CancellationToken::new();
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let token = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        token.cancel();
    });
    eprintln!("scheduler ui: serving http://{bind}/");
    scheduler_ui::serve(listener, store, transport.clone(), project, config, shutdown).await?;
    transport.close().await;
    Ok(ExitCode::SUCCESS)
}
