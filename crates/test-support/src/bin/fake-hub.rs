//! `fake-hub [PORT]`: serves the fake hub's demo repositories
//! ([`unicorn_test_support::fake_hub::demo_repos`]) on 127.0.0.1:PORT (default: a
//! free port) and prints its URL on the first line, so scripts can start it and set
//! `HF_ENDPOINT`. Runs until killed; each request is printed to standard error.

use unicorn_test_support::fake_hub::{demo_repos, FakeHub, Faults};

fn main() {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 0,
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("error: fake-hub [PORT]: {e}");
            std::process::exit(2);
        }
    };
    let hub = FakeHub::start_on(demo_repos(), Faults::default(), port);
    println!("{}", hub.url);
    let mut seen = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let log = hub.requests();
        for r in &log[seen..] {
            eprintln!("fake-hub: {r}");
        }
        seen = log.len();
    }
}
