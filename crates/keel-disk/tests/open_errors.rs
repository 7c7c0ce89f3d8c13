//! Opening a data dir that is not this node's, is newer than this build, or is in use fails
//! with a message that says so.

mod common;

use common::*;
use keel_disk::{DiskError, DiskOptions, DiskStorage};

#[tokio::test]
async fn a_data_dir_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), options(), &[append(1..=1, 1)]).await;
    let message = open_error(dir.path(), DiskOptions::new(NODE + 1, CLUSTER)).await;
    assert_eq!(
        message,
        format!("data dir {} belongs to node 3, not 4", dir.path().display())
    );
}

#[tokio::test]
async fn a_data_dir_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), options(), &[append(1..=1, 1)]).await;
    let message = open_error(dir.path(), DiskOptions::new(NODE, 7)).await;
    assert_eq!(
        message,
        format!(
            "data dir {} belongs to cluster 42, not 7",
            dir.path().display()
        )
    );
}

#[tokio::test]
async fn a_newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), options(), &[append(1..=1, 1)]).await;

    let meta = copy_dir(dir.path());
    let path = meta.path().join("meta");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 5; // the version field
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(
        open_error(meta.path(), options()).await,
        format!(
            "{} was written in format version 5, but this build reads versions up to 4; run a \
             newer build of this node",
            path.display()
        )
    );

    let segment = copy_dir(dir.path());
    let path = last_segment(segment.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 6;
    std::fs::write(&path, bytes).unwrap();
    let message = open_error(segment.path(), options()).await;
    assert!(
        message.starts_with(&format!(
            "{} was written in format version 6",
            path.display()
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_until_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let first = DiskStorage::open(dir.path(), options()).unwrap();
    let error = DiskStorage::open(dir.path(), options()).unwrap_err();
    assert!(matches!(error, DiskError::Locked { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "data dir {0} is in use: another process holds its lock file {0}/LOCK; stop that \
             process, or give this node a data dir of its own",
            dir.path().display()
        )
    );
    close(&first).await;
    let second = DiskStorage::open(dir.path(), options()).unwrap();
    second.crash().await;
    // A crash releases the dir too, as the death of a process does.
    reopen(dir.path(), options()).await.unwrap();
}

#[tokio::test]
async fn log_files_without_a_meta_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), options(), &[append(1..=1, 1)]).await;
    std::fs::remove_file(dir.path().join("meta")).unwrap();
    let message = open_error(dir.path(), options()).await;
    assert!(
        message.starts_with(&format!(
            "data dir {} is damaged: its meta file is missing, but log segments or snapshots \
             are present",
            dir.path().display()
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_created_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a file");
    std::fs::write(&file, b"").unwrap();
    let message = open_error(&file.join("node"), options()).await;
    assert!(
        message.starts_with(&format!("cannot create data dir {}/node: ", file.display())),
        "{message}"
    );
}

#[test]
fn opening_outside_a_tokio_runtime_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = DiskStorage::open(dir.path(), options()).unwrap_err();
    assert!(matches!(error, DiskError::NoRuntime), "{error}");
}
