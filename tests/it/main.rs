//! berth's integration tests: one test binary (linked once), a module per subject. Tests
//! that need the Docker engine skip without one, unless `BERTH_REQUIRE_DOCKER=1` (set by
//! `.ci/run`), when a missing engine is a failure. Each test works on its own project (a
//! unique name, removed when the scene drops), so the tests run in parallel.

mod common;

mod apply;
mod architecture;
mod backup;
mod backup_auth;
mod cli;
mod crash;
mod drill;
mod example_stacks;
mod examples;
mod exec;
mod fuzz_loader;
mod init;
mod invalid_specs;
mod jobs;
mod live;
mod logs;
mod nginx_image;
mod notify;
mod offsite;
mod plan_cases;
mod profiles;
mod proxy;
mod proxy_tls;
mod quickstart;
mod region_backups;
mod region_crash;
mod region_loss;
mod regions;
mod restart;
mod restore;
mod restore_elsewhere;
mod rollout;
mod secrets;
mod state;
mod status;
