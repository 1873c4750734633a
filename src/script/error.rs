//! The errors of scripts: one that does not compile, a run that did not
//! finish. A leaf (the error responses of the server build on it).

/// A script that does not compile: the position and the parser's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct CompileError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a run did not finish normally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// It ran past the channel's timeout and was stopped.
    #[error("timed out")]
    Timeout,
    /// It threw, failed or does not compile; message with position.
    #[error("{0}")]
    Failed(String),
    /// The script called `fail(message)`: a job ends `failed` with no further retry.
    #[error("{0}")]
    Fail(String),
    /// It failed because a store write found no space (answered `507`).
    #[error("no space left for the store: {0}")]
    StoreFull(String),
    /// It failed because the cluster's shared state was unreachable (`503`).
    #[error("the cluster is unavailable: {0}")]
    ClusterUnavailable(String),
}
