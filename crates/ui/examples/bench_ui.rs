//! `cargo run --release -p scheduler-ui --example bench_ui`: the UI
//! benchmark with its defaults (its own database, `scheduler_ui_bench`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    scheduler_ui::bench::bench(scheduler_ui::bench::BenchUiArgs::default()).await
}
