//! Integration tests: one binary, every test against real PostgreSQL (a fresh database
//! per test). `scripts/test` prepares the servers; run alone, set TEST_PG_SERVER_URL.

mod auth;
mod chaos;
mod contract;
mod database;
mod feed;
mod health;
mod helpers;
mod hostile;
mod lifecycle;
mod nats;
mod openapi;
mod proxy;
mod replicas;
mod service;
mod store;
mod telemetry;
mod todobackend;
mod todos;
