//! Integration tests: the real server on a random port, spoken to over HTTP; the real
//! binary for the CLI, restarts and TLS. One test binary, so the workspace links once.

mod accounts;
mod attacks;
mod authorizer;
mod bounds;
mod bypass;
mod cli;
mod clients;
mod common;
mod cors;
mod edge;
mod errors;
mod faults;
mod feed;
mod first_contact;
mod flow;
mod gateway;
mod interop;
mod issuers;
mod keys;
mod lambda;
mod limits;
mod management;
mod metrics;
mod oidc;
mod openapi;
mod postgres;
mod refresh;
mod roles;
