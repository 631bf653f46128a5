//! The `unicorn` command end to end, as a user runs it: on the real test models
//! ([`models`], [`cli`]) and against a fake hub on 127.0.0.1 ([`hub`]).

mod bad_inputs;
mod cli;
mod crash;
mod hub;
mod models;
mod server;
mod vision;
