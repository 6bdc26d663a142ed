//! Runs the MPSD simulator until Ctrl-C.
//!
//! ```text
//! cargo run -p mpsd-sim --example serve -- [ADDR]
//! ```
//!
//! `ADDR` defaults to `127.0.0.1:7878`. The simulator has MPSD's default
//! rate limits and the templates `LobbySession` and `GameSession`.

use std::net::SocketAddr;

use mpsd_sim::Simulator;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:7878")
        .parse()?;
    let sim = Simulator::builder().bind(addr).await?;
    println!("MPSD simulator listening on {}", sim.base_uri());
    println!(
        "try: curl -i -X PUT -H 'Authorization: XBL3.0 x=1234;token' -d '{{\"members\":{{\"me\":{{}}}}}}' {}",
        sim.session_uri("00000000-0000-0000-0000-000000000001", "LobbySession", "lobby")
    );
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    sim.shutdown().await;
    Ok(())
}
