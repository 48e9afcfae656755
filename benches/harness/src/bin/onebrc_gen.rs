//! `onebrc-gen`: writes the One Billion Row Challenge input (`station;temperature`, 413
//! stations, fixed seed), the same bytes the criterion bench reads.
//!
//! `cargo run --release -p ferris-bench --bin onebrc-gen -- --rows 100000000 --out measurements.txt`

use clap::Parser;

#[derive(Parser)]
#[command(about = "One Billion Row Challenge input generator")]
struct Args {
    /// Lines to write.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Output file.
    #[arg(long, default_value = "target/bench-data/measurements.txt")]
    out: std::path::PathBuf,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    ferris_bench::write_onebrc(&a.out, a.rows)?;
    println!("{{\"rows\":{},\"out\":\"{}\"}}", a.rows, a.out.display());
    Ok(())
}
