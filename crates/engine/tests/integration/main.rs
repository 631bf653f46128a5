//! The engine's integration tests: one test binary (one link, which dominates a cold
//! CI build) with a module per area. Fixtures come from `tests/golden` in this
//! repository and the real test models from `scripts/fetch-test-models`
//! ([`unicorn_test_support`]).

mod architectures;
mod batch;
mod common;
mod context;
mod convert_real;
mod corpus;
mod generation;
mod golden_real;
mod golden_tiny_gguf;
mod golden_tiny_hf;
mod load_progress;
mod nf4;
mod nf4_bnb_numerics;
mod quantize;
mod synth;
mod tokenizer;
mod vision;
