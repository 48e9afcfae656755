//! Generators shared by the benchmark harness and the criterion benches.

pub mod nexmark_files;

use std::io::Write;
use std::path::Path;

/// A small deterministic generator (xorshift): every run writes the same bytes.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes the One Billion Row Challenge input to `path`: `rows` lines of
/// `station;temperature`, 413 stations, one decimal, fixed seed.
pub fn write_onebrc(path: &Path, rows: usize) -> std::io::Result<()> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let stations: Vec<(String, f64)> =
        (0..413).map(|i| (format!("Station {i:03} {}", ["Ab", "Cd", "Ef", "Gh", "Ij"][i % 5]), (rng.next_u64() % 400) as f64 / 10.0 - 10.0)).collect();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for _ in 0..rows {
        let (name, mean) = &stations[(rng.next_u64() % stations.len() as u64) as usize];
        let t = mean + ((rng.next_u64() % 200) as f64 - 100.0) / 10.0;
        writeln!(w, "{name};{t:.1}")?;
    }
    w.flush()
}

/// Runs a future to completion on this thread: the Kafka admin client's, in benchmark binaries
/// that have no async runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Thread(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(10));
    }
}
