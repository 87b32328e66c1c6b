//! Stress scenarios (bounded). Temporary on branch `idem`: the real file is
//! owned elsewhere and calls the same modules.

mod common;
mod stress {
    pub mod retries;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_batches_are_stored_once() {
    stress::retries::retried_batches_are_stored_once(8, 40).await;
}
