//! Integration tests: one binary, every test against real PostgreSQL (a fresh database
//! per test). `scripts/test` prepares the servers; run alone, set TEST_PG_SERVER_URL.

mod auth;
mod chaos;
mod contract;
mod health;
mod helpers;
mod lifecycle;
mod openapi;
mod store;
mod todobackend;
mod todos;
