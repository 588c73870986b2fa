//! Blocking calls (the store's sled API) from async code: the one helper that keeps them from
//! stalling the async threads, and the one mapping of a task that died into an error.

use loyalty_store::StoreError;

/// A blocking call whose task did not finish (it panicked, or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("storage task failed: {0}")]
pub struct TaskFailed(String);

/// Runs a blocking call without stalling the async threads. On the multi-threaded runtime (the
/// daemon's) it runs in place, on the calling task's thread, while the runtime moves the other
/// tasks to another thread: no hand-off on the lanes' path, each of which costs a thread
/// wake-up. Elsewhere (single-threaded test runtimes) it goes to the blocking pool.
pub async fn blocking<T, E>(call: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<TaskFailed> + Send + 'static,
{
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(call);
    }
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(err) => Err(TaskFailed(err.to_string()).into()),
    }
}

impl From<TaskFailed> for StoreError {
    fn from(err: TaskFailed) -> Self {
        StoreError::Failed(loyalty_store::Failure::Io {
            context: "storage task failed".into(),
            source: std::io::Error::other(err.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_call_becomes_an_error_on_the_blocking_pool() {
        let result: Result<(), StoreError> = blocking(|| panic!("boom")).await;
        let message = result.expect_err("a dead task is an error").to_string();
        assert!(message.contains("storage task failed"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_run_and_return_on_both_runtimes() {
        let value: Result<u32, StoreError> = blocking(|| Ok(7)).await;
        assert_eq!(value.expect("runs"), 7);
        let inner = tokio::task::spawn(async { blocking::<_, StoreError>(|| Ok(8)).await })
            .await
            .expect("task");
        assert_eq!(inner.expect("runs"), 8);
    }
}
