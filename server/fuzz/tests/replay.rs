//! Runs the fuzz targets' checks without libFuzzer: over the seed corpus and
//! any saved crash artifacts, and over a bounded number of pseudo-random
//! inputs (env `FUZZ_REPLAY_CASES`, default 2000), so `cargo test` here is a
//! quick regression run and a fallback where cargo-fuzz cannot build.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use wormhole_mailbox_fuzz::{decode_and_handle, sequence};

fn files(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn cases() -> usize {
    std::env::var("FUZZ_REPLAY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn random_inputs(seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..cases()).map(move |_| {
        let len = rng.gen_range(0..1024);
        (0..len).map(|_| rng.gen()).collect()
    })
}

#[test]
fn decode_corpus_and_edge_cases() {
    let mut inputs = files("corpus/decode");
    inputs.extend(files("artifacts/decode"));
    let deep = format!(
        "{{\"type\":\"ping\",\"ping\":{}1{}}}",
        "[".repeat(126),
        "]".repeat(126)
    );
    let too_deep = format!(
        "{{\"type\":\"ping\",\"ping\":{}1{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    for edge in [
        &b"{\"type\":\"bind\",\"appid\":\"a\",\"side\":\"s\"}"[..],
        b"{\"type\":\"claim\",\"nameplate\":\"1\",\"id\":{\"x\":[1]}}",
        b"{\"type\":\"open\",\"mailbox\":\"mb\"}",
        b"{\"type\":\"add\",\"phase\":[1],\"body\":{}}",
        b"{\"type\":\"close\",\"mailbox\":5,\"mood\":null}",
        b"{\"type\":\"release\",\"nameplate\":\"99\"}",
        b"{\"nope\":1}",
        b"\xff\xfe",
        b"[1,2]",
        deep.as_bytes(),
        too_deep.as_bytes(),
    ] {
        inputs.push(edge.to_vec());
    }
    for input in &inputs {
        decode_and_handle(input);
    }
    for input in random_inputs(1) {
        decode_and_handle(&input);
    }
}

#[test]
fn core_sequence_random_plans() {
    let mut stats = sequence::Stats::default();
    let corpus = files("corpus/core_sequence");
    let inputs = corpus.len();
    for input in corpus
        .into_iter()
        .chain(files("artifacts/core_sequence"))
        .chain(random_inputs(2))
    {
        stats += sequence::run_bytes(&input);
    }
    println!(
        "core_sequence: {inputs} corpus inputs + {} random: {stats:?}",
        cases()
    );
}
